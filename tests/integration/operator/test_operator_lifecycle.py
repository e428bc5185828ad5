"""Operator processes coming and going: kill -9 mid-reconcile, two replicas electing a leader on a Lease, plain
`kopf run`, running under its RBAC account."""

from __future__ import annotations

import base64
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster
from support.cleanup import delete_namespace

from operator_harness import (FAST_ENV, MANAGED, ROOT, Kube, OperatorProcess, load_docs, rmd_ready, sample_models,
                              wait_for)

pytestmark = pytest.mark.cluster

SA = "system:serviceaccount:hybridrec-system:hybridrec-operator"
EXPECTED = {"account-recs": {"onprem-a100": 1}, "homepage-recs": {"onprem-t4": 2}, "trending": {"onprem-t4": 1}}


def children_by_kind(kube: Kube, namespace: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for kind in ("deployments", "services", "pdb"):
        for obj in kube.items(kind, namespace, MANAGED):
            counts[(kind, obj["metadata"]["name"])] += 1
    return counts


def reconciles(op: OperatorProcess) -> float:
    match = re.search(r'hybridrec_reconcile_duration_seconds_count\{kind="RecModelDeployment"\} (\S+)', op.metrics())
    return float(match.group(1)) if match else 0.0


def test_kill9_mid_reconcile_and_restart_converges_without_duplicates_or_orphans(
        operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace))
    # Kill as soon as the first child exists: the other models (and this one's status) are mid-flight.
    wait_for(lambda: kube.items("deployments", namespace, MANAGED), 60, "a first Deployment", interval=0.05)
    operator.kill9()
    operator.start()
    for name, pools in EXPECTED.items():
        rmd = wait_for(lambda name=name: rmd_ready(kube, namespace, name), 90, f"{name} Ready after the restart")
        assert {p["pool"]: p["desired"] for p in rmd["status"]["placements"]} == pools
    wanted = {("deployments", f"{m}-{p}") for m, pools in EXPECTED.items() for p in pools}
    wanted |= {(k, m) for m in EXPECTED for k in ("services", "pdb")}
    counts = children_by_kind(kube, namespace)
    assert set(counts) == wanted and set(counts.values()) == {1}
    # Exactly the planned pods: no duplicate ReplicaSets or pods left from the killed run.
    wait_for(lambda: len(kube.items("pods", namespace, MANAGED)) == 4, 60, "exactly 4 pods")


def lease_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return (kube.get("lease", name, namespace) or {}).get("spec") or {}


def test_two_replicas_only_the_lease_holder_acts_and_the_other_takes_over(
        shared_operator: OperatorProcess, cluster: LocalCluster, kube: Kube, namespace: str,
        operator_log_dir: Path) -> None:
    shared_operator.stop()  # a standalone operator would act regardless of the Lease
    lease = f"ha-{namespace}"
    election = ["--lease-name", lease, "--lease-namespace", namespace]
    duration = float(FAST_ENV["HYBRIDREC_LEASE_DURATION_SECONDS"])
    retry = float(FAST_ENV["HYBRIDREC_LEASE_RETRY_SECONDS"])
    first = OperatorProcess(cluster, operator_log_dir, "leader-a", election).start()
    second = None
    try:
        # The first replica creates the Lease and holds it; the second starts as a standby.
        holder = wait_for(lambda: lease_of(kube, namespace, lease).get("holderIdentity"), 30, "leader-a to hold the lease")
        second = OperatorProcess(cluster, operator_log_dir, "leader-b", election).start()
        kube.apply(sample_models(namespace, "trending"))
        wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready")
        spec = lease_of(kube, namespace, lease)
        assert spec["holderIdentity"] == holder and spec.get("leaseTransitions", 0) == 0
        assert spec["leaseDurationSeconds"] == int(duration) and spec["renewTime"] != spec["acquireTime"]  # renewed
        assert reconciles(first) > 0
        assert reconciles(second) == 0, "the standby replica must not act"

        first.kill9()  # no release: the survivor waits out the lease duration
        killed = time.monotonic()
        taken = wait_for(lambda: (s := lease_of(kube, namespace, lease)).get("holderIdentity") not in (None, "", holder) and s,
                         3 * duration, "the standby to take the lease over", interval=0.2)
        took = time.monotonic() - killed
        # At most one lease duration after the last renewal it saw, plus one (jittered) retry period to notice.
        assert took <= duration + 1.2 * retry + 1.0, f"took over after {took:.1f} s"
        assert taken["leaseTransitions"] == 1 and taken["acquireTime"] != spec["acquireTime"]
        kube("scale", "rmd", "trending", "-n", namespace, "--replicas=2")
        rmd = wait_for(lambda: (r := rmd_ready(kube, namespace, "trending")) and r["status"]["replicas"] == 2 and r,
                       60, "the new leader to act")
        assert rmd["status"]["lastDecision"]["message"].startswith("2 replicas")
        assert reconciles(second) > 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_plain_kopf_run_serves_the_handlers(
        shared_operator: OperatorProcess, cluster: LocalCluster, kube: Kube, namespace: str, operator_log_dir: Path) -> None:
    shared_operator.stop()
    # Configured through the environment only, leader election included (on by default; kopf's own peering stays
    # off whatever kopf's flags say).
    env = {"HYBRIDREC_LEASE_NAME": f"kopf-run-{namespace}", "HYBRIDREC_LEASE_NAMESPACE": namespace}
    op = OperatorProcess(cluster, operator_log_dir, "kopf-run", [], env=env, via_kopf=True).start()
    try:
        kube.apply(sample_models(namespace, "trending"))
        rmd = wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready under `kopf run -m`")
        assert {p["pool"] for p in rmd["status"]["placements"]} == {"onprem-t4"}
        assert "hybridrec_replicas" in op.metrics()
        assert lease_of(kube, namespace, f"kopf-run-{namespace}").get("holderIdentity")
    finally:
        op.stop()


def serviceaccount_kubeconfig(kube: Kube, cluster: LocalCluster, path: Path) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount, obtained through the TokenRequest API."""
    token = kube("create", "token", "hybridrec-operator", "-n", "hybridrec-system", "--duration=1h").stdout.strip()
    ca = base64.b64encode((cluster.workdir / "pki" / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(kube: Kube, *args: str) -> bool:
    proc = kube("auth", "can-i", f"--as={SA}", *args, check=False)
    return proc.stdout.strip() == "yes"


@pytest.fixture
def operator_rbac(kube: Kube) -> Iterator[None]:
    """The operator's namespace, ServiceAccount and RBAC as deployed; deleted (and the namespace awaited gone)
    afterwards, as the cluster is shared with later modules."""
    namespace, rbac = ROOT / "manifests" / "operator" / "namespace.yaml", ROOT / "manifests" / "rbac" / "operator.yaml"
    kube("apply", "-f", str(namespace))
    kube("apply", "-f", str(rbac))
    yield
    kube("delete", "-f", str(rbac), "--ignore-not-found", "--wait=false", check=False)
    delete_namespace(kube, load_docs(namespace)[0]["metadata"]["name"])


def test_operator_works_with_only_its_rbac(
        shared_operator: OperatorProcess, cluster: LocalCluster, kube: Kube, namespace: str,
        operator_log_dir: Path, tmp_path: Path, operator_rbac: None) -> None:

    # What it may do, and what it may not.
    allowed = [("patch", "deployments"), ("create", "deployments"), ("delete", "deployments"), ("watch", "pods"),
               ("list", "nodes"), ("patch", "recmodeldeployments", "--subresource=status"),
               ("patch", "computepools", "--subresource=status"), ("create", "events"),
               ("create", "services"), ("create", "poddisruptionbudgets"), ("delete", "poddisruptionbudgets")]
    denied = [("get", "secrets"), ("create", "secrets"), ("delete", "nodes"), ("update", "recmodeldeployments"),
              ("patch", "recmodeldeployments"), ("delete", "recmodeldeployments"), ("create", "pods"),
              ("delete", "services"), ("patch", "computepools"), ("create", "clusterrolebindings"),
              ("impersonate", "serviceaccounts"), ("update", "leases"), ("*", "*")]
    for verb, *resource in allowed:
        assert can_i(kube, verb, *resource, "-A"), f"{verb} {resource} should be allowed"
    for verb, *resource in denied:
        assert not can_i(kube, verb, *resource, "-A"), f"{verb} {resource} should be denied"
    # Leader election: its Lease in its own namespace, nowhere else.
    for verb in ("get", "create", "update"):
        assert can_i(kube, verb, "leases", "-n", "hybridrec-system"), f"{verb} leases should be allowed"
    assert not can_i(kube, "update", "leases", "-n", "default") and not can_i(kube, "delete", "leases", "-n", "hybridrec-system")

    shared_operator.stop()
    kubeconfig = serviceaccount_kubeconfig(kube, cluster, tmp_path / "sa.kubeconfig")
    # Leader election on, as deployed: the Lease in its own namespace must be within its RBAC too.
    op = OperatorProcess(cluster, operator_log_dir, "operator-rbac", ["--lease-namespace", "hybridrec-system"],
                         env={"KUBECONFIG": str(kubeconfig)})
    op.start()
    try:
        kube.apply(sample_models(namespace, "account-recs"))
        rmd = wait_for(lambda: rmd_ready(kube, namespace, "account-recs"), 90, "account-recs Ready under the SA")
        assert {p["pool"] for p in rmd["status"]["placements"]} == {"onprem-a100"}
        # Scaling 1..4: it has a PDB. Pinned to one replica it no longer needs one (with one pod it protects
        # nothing): the operator deletes its own PDB, under its RBAC, and leaves the Deployment and Service.
        wait_for(lambda: kube.get("pdb", "account-recs", namespace), 30, "account-recs' PDB")
        kube("patch", "rmd", "account-recs", "-n", namespace, "--type", "merge", "-p", '{"spec": {"replicas": 1}}')
        wait_for(lambda: kube.get("pdb", "account-recs", namespace) is None, 60, "the PDB deleted")
        assert kube.get("service", "account-recs", namespace) and kube.get("deployment", "account-recs-onprem-a100", namespace)
        log = op.log_text()
        assert "403" not in log and "Forbidden" not in log, log[-3000:]
        event = [e for e in kube.items("events", namespace) if e["reason"] == "Placed"]
        assert event, "the event could not be posted under the SA"
        assert lease_of(kube, "hybridrec-system", "hybridrec").get("holderIdentity"), "no Lease held under the SA"
    finally:
        op.stop()  # the next test's `operator` fixture restarts the shared operator
