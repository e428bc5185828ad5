"""kubectl as a person types it, and hybridrec's cluster-wide install (CRDs, sample pools, admission policies) awaited
until the policies really judge requests."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.localcluster import LocalCluster
from support.cleanup import delete_namespace
from support.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
POLICY_DIR = ROOT / "manifests" / "policy"


class Kube:
    """kubectl-based helpers for the tests (what a person would type)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, selector: str | None = None) -> Any:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        proc = self(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def items(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        return (self.get(kind, namespace=namespace, selector=selector) or {}).get("items", [])

    def apply(self, docs: list[dict[str, Any]] | str, namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self(*args, input=text, check=check)

    def condition(self, rmd: dict[str, Any] | None, type_: str) -> dict[str, Any]:
        for cond in ((rmd or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return {}


@contextlib.contextmanager
def fresh_namespace(kube: Kube, prefix: str) -> Iterator[str]:
    """A new namespace ``<prefix>-<random>`` whose default ServiceAccount exists (pods can be created in it);
    afterwards it is deleted with its models and pods and awaited gone, so the next test finds the GPUs free."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", name)
    wait_for(lambda: kube.get("serviceaccount", "default", name), 30, "the namespace's default ServiceAccount")
    try:
        yield name
    finally:
        delete_namespace(kube, name)


def sample_docs(file: str) -> list[dict[str, Any]]:
    """The documents of ``manifests/samples/<file>``."""
    return [d for d in yaml.safe_load_all((SAMPLES / file).read_text()) if d]


def sample_pool_copy(name: str, sample: str = "onprem-t4") -> dict[str, Any]:
    """The sample pool ``sample`` (manifests/samples/pools.yaml) under another name, so a test's pool never collides
    with another test's (same nodes, same spec)."""
    pools = [d for d in yaml.safe_load_all((SAMPLES / "pools.yaml").read_text()) if d]
    pool = next(p for p in pools if p["metadata"]["name"] == sample)
    return {"apiVersion": pool["apiVersion"], "kind": "ComputePool", "metadata": {"name": name}, "spec": pool["spec"]}


def sample_internal_model_on(pool: str, name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """The internal sample model (manifests/samples/models.yaml) as ``namespace/name``, preferring ``pool`` with no
    public burst and at least one replica; ``spec`` adds or overrides top-level fields."""
    models = [d for d in yaml.safe_load_all((SAMPLES / "models.yaml").read_text()) if d]
    model = next(m for m in models if m["spec"]["dataSensitivity"] == "internal")
    merged = {**model["spec"], **spec, "placement": {"preferredPools": [pool], "allowPublicBurst": False}}
    merged["scaling"] = {**merged.get("scaling", {}), "minReplicas": 1}
    return {"apiVersion": model["apiVersion"], "kind": "RecModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": merged}


def install_hybridrec(kube: Kube) -> Kube:
    """CRDs, the sample pools and the admission policies; returns once the policies judge requests as installed.

    A ValidatingAdmissionPolicy is active a moment after it is created, and one whose paramKind is a fresh CRD first
    refuses everything it matches with "failed to configure policy" until the API server watches that kind. Tests that
    read a refusal's message must not meet that transient refusal, so this waits until a probe model's well-formed
    Deployment passes (server-side dry run) and a public-tenancy one is refused by a placement rule.
    """
    kube("apply", "-f", str(ROOT / "manifests" / "crds"))
    kube("wait", "--for=condition=Established", "--timeout=60s", "crd/computepools.hybridrec.io",
         "crd/recmodeldeployments.hybridrec.io")
    kube("apply", "-f", str(SAMPLES / "pools.yaml"))
    kube("apply", "-f", str(POLICY_DIR))
    _await_policies_judging(kube)
    return kube


def _probe_deployment(namespace: str, tenancy: str) -> dict[str, Any]:
    labels = {"hybridrec.io/model": "probe", "hybridrec.io/sensitivity": "restricted"}
    term = {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": [tenancy]}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "probe", "namespace": namespace, "labels": labels},
            "spec": {"selector": {"matchLabels": {"hybridrec.io/model": "probe"}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                                          {"nodeSelectorTerms": [term]}}},
                                           "containers": [{"name": "server", "image": "probe"}]}}}}


def _await_policies_judging(kube: Kube, timeout: float = 60.0) -> None:
    namespace = f"policy-probe-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", namespace)
    try:
        kube.apply([{"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
                     "metadata": {"name": "probe", "namespace": namespace},
                     "spec": {"model": {"uri": "s3://probe/", "architecture": "two-tower"},
                              "dataSensitivity": "restricted"}}])

        def dry_run(tenancy: str) -> subprocess.CompletedProcess[str]:
            return kube("create", "--dry-run=server", "-f", "-", input=json.dumps(_probe_deployment(namespace, tenancy)),
                        check=False)

        def judging() -> bool:
            allowed, refused = dry_run("private"), dry_run("public")
            return allowed.returncode == 0 and refused.returncode != 0 and "data never runs on public nodes" in refused.stderr

        wait_for(judging, timeout, "the admission policies to judge requests (not 'failed to configure policy')",
                 interval=0.5)
    finally:
        delete_namespace(kube, namespace)
