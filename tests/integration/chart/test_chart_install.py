"""The Helm chart installed into the real local control plane, and the operator running under the chart's RBAC.

Pods cannot really run here (kwok nodes), so the operator runs as a local process whose kubeconfig holds ONLY a
token of the chart's ServiceAccount (TokenRequest API): if the chart's ClusterRole (or the Role for its Lease)
missed a permission the operator needs, electing a leader or reconciling the sample model would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster
from support.kube import sample_internal_model_on, sample_pool_copy
from support.stack import eventually, log_tail, start_logged, stop_process

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "hybridrec"
RELEASE = "hybridrec-it"
NAMESPACE = "hybridrec-chart-it"
WORKLOAD_NS = "chart-it-models"
LEASE = "hybridrec-chart-it"
POOL = "chart-it-t4"
SA = f"{RELEASE}-operator"
POLICY = "hybridrec-sensitive-placement"


def _helm_bin() -> str:
    path = Path(os.environ.get("HYBRIDREC_BIN", Path.home() / ".cache" / "hybridrec" / "bin")) / "helm"
    if not path.is_file():
        pytest.fail(f"helm not found at {path}: run `bash hack/build-binaries.sh`", pytrace=False)
    return str(path)


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([_helm_bin(), f"--kubeconfig={cluster.kubeconfig}", *args], capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _exists(cluster: LocalCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, "--ignore-not-found", "-o", "name", check=False).stdout.strip() != ""


@pytest.fixture(scope="module")
def release(cluster: LocalCluster) -> Iterator[subprocess.CompletedProcess[str]]:
    """`helm install` of the chart; uninstalled (and checked gone) afterwards."""
    # Another test may have applied manifests/policy already; helm cannot adopt an object it does not own.
    policy = "false" if _exists(cluster, "validatingadmissionpolicy", POLICY) else "true"
    installed = helm(
        cluster, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--set", f"leaderElection.leaseName={LEASE}", "--set", f"admissionPolicy.enabled={policy}",
        "--set", "operator.prometheusUrl=http://127.0.0.1:1",
    )
    try:
        yield installed
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "120s", check=False)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)


def test_install_succeeds_and_creates_the_operator(cluster: LocalCluster, release: subprocess.CompletedProcess[str]) -> None:
    assert "STATUS: deployed" in release.stdout
    assert "kubectl get rmd" in release.stdout and "No ServiceMonitor was created" in release.stdout  # NOTES
    status = json.loads(helm(cluster, "status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    dep = json.loads(cluster.kubectl("get", "deployment", f"{RELEASE}-operator", "-n", NAMESPACE, "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 2
    assert _exists(cluster, "clusterrole", f"{RELEASE}-operator")
    assert _exists(cluster, "role", f"{RELEASE}-operator-leader-election", "-n", NAMESPACE)
    for crd in ("computepools.hybridrec.io", "recmodeldeployments.hybridrec.io"):
        assert _exists(cluster, "crd", crd)
    assert not _exists(cluster, "crd", "clusterkopfpeerings.kopf.dev")  # leader election needs no third-party CRD
    configmaps = cluster.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "grafana_dashboard=1", "-o", "name").stdout.split()
    assert len(configmaps) == 3


def test_schema_refuses_zero_replicas_at_install(cluster: LocalCluster, release: subprocess.CompletedProcess[str]) -> None:
    proc = helm(cluster, "install", "hybridrec-bad", str(CHART), "-n", NAMESPACE, "--set", "replicaCount=0", check=False)
    assert proc.returncode != 0
    assert "replicaCount" in proc.stderr and "schema" in proc.stderr
    assert helm(cluster, "status", "hybridrec-bad", "-n", NAMESPACE, check=False).returncode != 0


ALLOWED = [
    ("list", "recmodeldeployments.hybridrec.io", "--all-namespaces"),
    ("watch", "computepools.hybridrec.io", ""),
    ("patch", "recmodeldeployments.hybridrec.io", "--subresource=status", "-n", "default"),
    ("patch", "computepools.hybridrec.io", "--subresource=status"),
    ("create", "deployments.apps", "-n", "default"),
    ("delete", "deployments.apps", "-n", "default"),
    ("create", "services", "-n", "default"),
    ("create", "poddisruptionbudgets.policy", "-n", "default"),
    ("watch", "nodes", ""),
    ("list", "pods", "--all-namespaces"),
    ("create", "events", "-n", "default"),
    ("get", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("create", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("update", "leases.coordination.k8s.io", "-n", NAMESPACE),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
]
DENIED = [
    ("get", "secrets", "-n", "default"),
    ("list", "secrets", "--all-namespaces"),
    ("create", "pods", "-n", "default"),
    ("delete", "nodes", ""),
    ("patch", "nodes", ""),
    ("update", "recmodeldeployments.hybridrec.io", "-n", "default"),
    ("delete", "recmodeldeployments.hybridrec.io", "-n", "default"),
    ("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("impersonate", "serviceaccounts", "-n", "default"),
    ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE),
    ("delete", "namespaces", ""),
    ("update", "leases.coordination.k8s.io", "-n", "default"),  # its own namespace's Leases only
    ("delete", "leases.coordination.k8s.io", "-n", NAMESPACE),
]


def _can_i(cluster: LocalCluster, verb: str, resource: str, *extra: str) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{NAMESPACE}:{SA}", *[e for e in extra if e]]
    proc = cluster.kubectl(*args, check=False)
    assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


@pytest.mark.parametrize("check", ALLOWED, ids=lambda c: f"{c[0]}-{c[1]}")
def test_service_account_may(cluster: LocalCluster, release: Any, check: tuple[str, ...]) -> None:
    assert _can_i(cluster, *check), f"the chart's ServiceAccount should be allowed to {' '.join(check)}"


@pytest.mark.parametrize("check", DENIED, ids=lambda c: f"{c[0]}-{c[1]}")
def test_service_account_may_not(cluster: LocalCluster, release: Any, check: tuple[str, ...]) -> None:
    assert not _can_i(cluster, *check), f"the chart's ServiceAccount must not {' '.join(check)}"


def _token_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    """A kubeconfig whose only credential is a TokenRequest token of the chart's ServiceAccount."""
    token = cluster.kubectl("create", "token", SA, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cl = admin["clusters"][0]
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cl],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": cl["name"], "user": SA}}],
        "current-context": SA,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _placed(cluster: LocalCluster) -> dict[str, Any] | None:
    obj = json.loads(cluster.kubectl("get", "rmd", "chart-it-recs", "-n", WORKLOAD_NS, "-o", "json").stdout)
    conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
    placed = conditions.get("Placed")
    return obj if placed and placed["status"] == "True" else None


def test_operator_with_the_chart_identity_reconciles_a_sample(cluster: LocalCluster, release: Any, tmp_path: Path) -> None:
    kubeconfig = _token_kubeconfig(cluster, tmp_path / "sa.kubeconfig")
    env = {
        "KUBECONFIG": str(kubeconfig),
        "HYBRIDREC_PROMETHEUS_URL": "http://127.0.0.1:1",
        "HYBRIDREC_RESYNC_SECONDS": "5",
    }
    log = tmp_path / "operator.log"
    # Leader election on, on the chart's Lease in the release namespace, as the chart's pods run it.
    argv = [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", "--all-namespaces", f"--lease-name={LEASE}",
            f"--lease-namespace={NAMESPACE}", "--metrics-port=0"]
    cluster.kubectl("create", "namespace", WORKLOAD_NS, check=False)
    operator = start_logged(argv, log, env=env)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(sample_pool_copy(POOL)))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(sample_internal_model_on(POOL, "chart-it-recs", WORKLOAD_NS, replicas=1)))
        try:
            obj = eventually(lambda: _placed(cluster), timeout_s=120, interval_s=1, what="RecModelDeployment Placed=True")
        except AssertionError:
            raise AssertionError(f"operator log:\n{log_tail(log, 60)}") from None
        placements = obj["status"]["placements"]
        assert [p["pool"] for p in placements] == [POOL]
        assert obj["status"]["privateReplicas"] >= 1 and obj["status"]["publicReplicas"] == 0
        assert _exists(cluster, "deployment", "-n", WORKLOAD_NS, "-l", "hybridrec.io/model=chart-it-recs")
        # Every API call went through the ServiceAccount: no Forbidden in the operator's log.
        assert "Forbidden" not in log.read_text(), log_tail(log, 60)
        lease = json.loads(cluster.kubectl("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json").stdout)
        assert lease["spec"].get("holderIdentity"), "the operator does not hold the chart's Lease"
    finally:
        cluster.kubectl("delete", "rmd", "chart-it-recs", "-n", WORKLOAD_NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
        stop_process(operator)
        cluster.kubectl("delete", "namespace", WORKLOAD_NS, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)
        cluster.kubectl("delete", "computepool", POOL, "--ignore-not-found", check=False)
    # GPUs are free again for the other tests: no pod of this model is left anywhere.
    eventually(
        lambda: cluster.kubectl("get", "pods", "-A", "-l", "hybridrec.io/model=chart-it-recs", "-o", "name").stdout.strip() == "",
        timeout_s=120, what="the test model's pods to be gone",
    )


def test_uninstall_leaves_no_cluster_role(cluster: LocalCluster, release: Any) -> None:
    """Runs last in this module (pytest keeps file order): uninstall, then the cluster-scoped objects are gone."""
    helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "120s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_exists(cluster, "clusterrole", f"{RELEASE}-operator") or _exists(cluster, "clusterrolebinding", f"{RELEASE}-operator")):
        time.sleep(1)
    assert not _exists(cluster, "clusterrole", f"{RELEASE}-operator")
    assert not _exists(cluster, "clusterrolebinding", f"{RELEASE}-operator")
    assert not cluster.kubectl("get", "clusterroles", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.strip()
