"""The namespaced install (manifests/rbac/operator-namespaced.yaml, the chart's rbac.scope=namespaced) on the real
control plane: the operator runs with ONLY that account's token and ``--namespace`` for one namespace, reconciles a
restricted model there (Deployment, Service, PDB and NetworkPolicy), and may not create a Deployment in kube-system or
any other namespace (issue 9 item 7). It cannot read the admission policies there, and says so (AdmissionGuarded
Unknown) rather than reporting them missing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster
from support.cleanup import delete_namespaces
from support.stack import eventually, log_tail, start_logged, stop_process

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[3]
SUFFIX = "nsit"
OP_NS = f"hybridrec-{SUFFIX}"
MODELS_NS = f"{SUFFIX}-models"
SA = f"hybridrec-operator-{SUFFIX}"
POOL = f"{SUFFIX}-a100"
MODEL = f"{SUFFIX}-recs"


def _rbac_docs() -> list[dict[str, Any]]:
    """The manifest's objects renamed for this test (so no other test's binding can lend it a permission)."""
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac" / "operator-namespaced.yaml").read_text()) if d]
    for doc in docs:
        meta = doc["metadata"]
        meta["name"] = SA if doc["kind"] == "ServiceAccount" else f"{meta['name']}-{SUFFIX}"
        if meta.get("namespace") == "hybridrec-system":
            meta["namespace"] = OP_NS
        elif meta.get("namespace") == "hybridrec-models":
            meta["namespace"] = MODELS_NS
        if "roleRef" in doc:
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{SUFFIX}"
            doc["subjects"] = [{"kind": "ServiceAccount", "name": SA, "namespace": OP_NS}]
    return docs


def _kubectl(cluster: LocalCluster, *args: str, input: str | None = None, check: bool = True) -> str:
    return cluster.kubectl(*args, input=input, check=check).stdout


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster) -> Iterator[list[dict[str, Any]]]:
    _kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "crds"))
    _kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", "crd/computepools.hybridrec.io",
             "crd/recmodeldeployments.hybridrec.io")
    for ns in (OP_NS, MODELS_NS):
        _kubectl(cluster, "create", "namespace", ns, check=False)
    docs = _rbac_docs()
    _kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    try:
        yield docs
    finally:
        _kubectl(cluster, "delete", "rmd", "--all", "-n", MODELS_NS, "--wait=true", "--timeout=60s", check=False)
        _kubectl(cluster, "delete", "deployments,pods", "--all", "-n", MODELS_NS, "--wait=false", check=False)
        eventually(lambda: not _kubectl(cluster, "get", "pods", "-n", MODELS_NS, "-o", "name").strip(), 120,
                   what="the test model's pods to be gone")
        _kubectl(cluster, "delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)
        _kubectl(cluster, "delete", "computepool", POOL, "--ignore-not-found", check=False)
        delete_namespaces(cluster.kubectl, [MODELS_NS, OP_NS])


def _can_i(cluster: LocalCluster, verb: str, resource: str, *extra: str) -> bool:
    out = _kubectl(cluster, "auth", "can-i", verb, resource, f"--as=system:serviceaccount:{OP_NS}:{SA}", *extra, check=False)
    assert out.strip() in {"yes", "no"}, out
    return out.strip() == "yes"


ALLOWED = [
    ("create", "deployments.apps", "-n", MODELS_NS), ("delete", "deployments.apps", "-n", MODELS_NS),
    ("patch", "services", "-n", MODELS_NS), ("create", "networkpolicies.networking.k8s.io", "-n", MODELS_NS),
    ("delete", "networkpolicies.networking.k8s.io", "-n", MODELS_NS), ("watch", "pods", "-n", MODELS_NS),
    ("patch", "recmodeldeployments.hybridrec.io", "--subresource=status", "-n", MODELS_NS),
    ("create", "recmodeldeployments.hybridrec.io", "--subresource=children", "-n", MODELS_NS),
    ("watch", "computepools.hybridrec.io"), ("patch", "computepools.hybridrec.io", "--subresource=status"),
    ("list", "nodes"), ("create", "events", "-n", MODELS_NS), ("create", "events", "-n", "default"),
    ("update", "leases.coordination.k8s.io", "-n", OP_NS),
]
DENIED = [
    ("create", "deployments.apps", "-n", "kube-system"), ("patch", "deployments.apps", "-n", "kube-system"),
    ("delete", "deployments.apps", "-n", "kube-system"), ("create", "deployments.apps", "-n", "default"),
    ("create", "services", "-n", "kube-system"), ("delete", "pods", "-n", "kube-system"),
    ("list", "pods", "--all-namespaces"), ("list", "recmodeldeployments.hybridrec.io", "--all-namespaces"),
    ("create", "recmodeldeployments.hybridrec.io", "--subresource=children", "-n", "default"),
    ("patch", "computepools.hybridrec.io"), ("get", "secrets", "-n", MODELS_NS), ("patch", "nodes"),
    ("create", "events", "-n", "kube-system"),
]


def test_namespaced_rbac_grants_the_served_namespace_and_nothing_else(cluster: LocalCluster,
                                                                      installed: list[dict[str, Any]]) -> None:
    for check in ALLOWED:
        assert _can_i(cluster, *check), f"should be allowed: {' '.join(check)}"
    for check in DENIED:
        assert not _can_i(cluster, *check), f"must be denied: {' '.join(check)}"


def _token_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    token = _kubectl(cluster, "create", "token", SA, "-n", OP_NS, "--duration=1h").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cl = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cl],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": cl["name"], "user": SA}}], "current-context": SA,
    }))
    path.chmod(0o600)
    return path


def _pool_and_model() -> list[dict[str, Any]]:
    pools = [d for d in yaml.safe_load_all((ROOT / "manifests" / "samples" / "pools.yaml").read_text()) if d]
    pool = next(p for p in pools if p["metadata"]["name"] == "onprem-a100")
    models = [d for d in yaml.safe_load_all((ROOT / "manifests" / "samples" / "models.yaml").read_text()) if d]
    model = next(m for m in models if m["spec"]["dataSensitivity"] == "restricted")
    spec = {**model["spec"], "placement": {"preferredPools": [POOL], "allowPublicBurst": False}}
    return [{"apiVersion": pool["apiVersion"], "kind": "ComputePool", "metadata": {"name": POOL}, "spec": pool["spec"]},
            {"apiVersion": model["apiVersion"], "kind": "RecModelDeployment",
             "metadata": {"name": MODEL, "namespace": MODELS_NS}, "spec": spec}]


def _condition(cluster: LocalCluster, type_: str) -> dict[str, Any] | None:
    obj = json.loads(_kubectl(cluster, "get", "rmd", MODEL, "-n", MODELS_NS, "-o", "json"))
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def _placed(cluster: LocalCluster) -> dict[str, Any] | None:
    obj = json.loads(_kubectl(cluster, "get", "rmd", MODEL, "-n", MODELS_NS, "-o", "json"))
    conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
    ok = conditions.get("Placed", {}).get("status") == "True" and conditions.get("ChildrenApplied", {}).get("status") == "True"
    return obj if ok else None


def test_operator_with_only_the_namespaced_rbac_reconciles_its_namespace(cluster: LocalCluster,
                                                                          installed: list[dict[str, Any]],
                                                                          tmp_path: Path) -> None:
    kubeconfig = _token_kubeconfig(cluster, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    argv = [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", "--namespace", MODELS_NS,
            f"--lease-name=hybridrec-{SUFFIX}", f"--lease-namespace={OP_NS}", "--metrics-port=0"]
    operator = start_logged(argv, log, env={"KUBECONFIG": str(kubeconfig), "HYBRIDREC_PROMETHEUS_URL": "",
                                            "HYBRIDREC_RESYNC_SECONDS": "5"})
    try:
        _kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all(_pool_and_model()))
        try:
            obj = eventually(lambda: _placed(cluster), timeout_s=120, interval_s=1, what="Placed=True, ChildrenApplied=True")
        except AssertionError:
            raise AssertionError(f"operator log:\n{log_tail(log, 60)}") from None
        assert obj["status"]["privateReplicas"] >= 1 and obj["status"]["publicReplicas"] == 0
        for kind in ("deployment", "service", "poddisruptionbudget", "networkpolicy"):
            names = _kubectl(cluster, "get", kind, "-n", MODELS_NS, "-l", f"hybridrec.io/model={MODEL}", "-o", "name")
            assert names.strip(), f"no {kind} of the model"
        # It may not read the admission policies: it says it cannot tell (never "missing"), without a 403.
        guarded = eventually(lambda: _condition(cluster, "AdmissionGuarded"), timeout_s=30, interval_s=1,
                             what="AdmissionGuarded on the restricted model")
        assert (guarded["status"], guarded["reason"]) == ("Unknown", "AdmissionPoliciesUnreadable"), guarded
        text = log.read_text()
        assert "Forbidden" not in text and "403" not in text, log_tail(log, 60)
        lease = json.loads(_kubectl(cluster, "get", "lease", f"hybridrec-{SUFFIX}", "-n", OP_NS, "-o", "json"))
        assert lease["spec"].get("holderIdentity"), "the operator does not hold its Lease"
    finally:
        _kubectl(cluster, "delete", "rmd", MODEL, "-n", MODELS_NS, "--ignore-not-found", "--wait=true", "--timeout=60s",
                 check=False)
        stop_process(operator)
