"""The operator against the real control plane: placement, children, status, events, drift, admission."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from operator_harness import BAD_CRS, MANAGED, Kube, OperatorProcess, rmd_ready, sample_models, wait_for

pytestmark = pytest.mark.cluster

# Sample pools (manifests/samples/pools.yaml) over the kwok nodes (hack/cluster/nodes.yaml).
POOL_NODES = {"onprem-a100": (2, 8), "onprem-t4": (2, 4), "aws-spot-l4": (3, 12), "gcp-ondemand-a100": (2, 16)}
PRIVATE_NODES = {"onprem-a100-0": 4, "onprem-a100-1": 4, "onprem-t4-0": 2, "onprem-t4-1": 2}


def placements(rmd: dict[str, Any] | None) -> dict[str, int]:
    return {p["pool"]: p["desired"] for p in ((rmd or {}).get("status") or {}).get("placements") or []}


def deployments(kube: Kube, namespace: str, model: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in kube.items("deployments", namespace, f"hybridrec.io/model={model}")}


def node_pools(kube: Kube) -> dict[str, str]:
    return {n["metadata"]["name"]: n["metadata"]["labels"].get("hybridrec.io/pool", "") for n in kube.items("nodes")}


def fill_private_pools(kube: Kube, namespace: str) -> None:
    """Someone else's GPU pods take every private GPU (scheduled by the real scheduler, run by kwok)."""
    pods = []
    for node, gpus in PRIVATE_NODES.items():
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"filler-{node}", "namespace": namespace, "labels": {"app": "filler"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}}]},
        })
    kube.apply(pods)
    wait_for(lambda: all(p.get("status", {}).get("phase") == "Running" for p in kube.items("pods", namespace, "app=filler"))
             and len(kube.items("pods", namespace, "app=filler")) == 4, 60, "filler pods Running")


def test_crds_installed_and_pools_get_status(operator: OperatorProcess, kube: Kube) -> None:
    crds = {c["metadata"]["name"] for c in kube.items("crd")}
    assert {"computepools.hybridrec.io", "recmodeldeployments.hybridrec.io"} <= crds

    def pools_reported() -> dict[str, Any] | None:
        pools = {p["metadata"]["name"]: p.get("status") or {} for p in kube.items("computepools")}
        done = all(pools.get(n, {}).get("nodes") == nodes and pools[n].get("allocatableGpus") == gpus
                   for n, (nodes, gpus) in POOL_NODES.items())
        return pools if done else None

    pools = wait_for(pools_reported, 60, "ComputePool status")
    for name, (nodes, gpus) in POOL_NODES.items():
        status = pools[name]
        assert status["readyNodes"] == nodes
        assert status["freeGpus"] <= gpus
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
    assert 'hybridrec_pool_gpus{pool="onprem-a100",state="allocatable",tenancy="private"} 8.0' in operator.metrics()


def test_samples_become_ready_on_the_cheapest_allowed_pools(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace))
    # restricted -> only onprem-a100 allows it; internal and public data -> onprem-t4 (0.35 USD/GPU-h) has room for 3.
    expected = {"account-recs": {"onprem-a100": 1}, "homepage-recs": {"onprem-t4": 2}, "trending": {"onprem-t4": 1}}
    for name, pools in expected.items():
        rmd = wait_for(lambda name=name: rmd_ready(kube, namespace, name), 90, f"{name} Ready")
        assert placements(rmd) == pools, name
        assert kube.condition(rmd, "Placed")["status"] == "True"
        assert rmd["status"]["currency"] == "USD"
        assert rmd["status"]["readyReplicas"] == sum(pools.values())

    # Pods were placed by the real scheduler on nodes of the planned pools; private models never on public nodes.
    pools_of = node_pools(kube)
    pods = kube.items("pods", namespace, MANAGED)
    assert len(pods) == 4
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert pod["status"]["phase"] == "Running"
        assert pools_of[pod["spec"]["nodeName"]] == labels["hybridrec.io/pool"]
        assert labels["hybridrec.io/pool"] in expected[labels["hybridrec.io/model"]]

    # One Service and one PDB per model, every child owned by its model.
    for name in expected:
        assert kube.get("service", name, namespace)["metadata"]["ownerReferences"][0]["name"] == name
        assert kube.get("pdb", name, namespace)["metadata"]["ownerReferences"][0]["kind"] == "RecModelDeployment"

    # kubectl get rmd shows sensitivity, replicas by tenancy and price.
    table = kube("get", "rmd", "-n", namespace).stdout
    assert re.search(r"account-recs\s+restricted", table), table
    assert "0.7" in table  # homepage-recs: 2 x 0.35 USD/h

    # An event with the placement's reason.
    events = kube.items("events", namespace)
    placed = [e for e in events if e["reason"] == "Placed" and e["involvedObject"]["name"] == "homepage-recs"]
    assert placed and "onprem-t4" in placed[0]["message"]

    # Idempotent: nothing more is written while nothing changes (no new events, no status writes).
    rv = {n: kube.get("rmd", n, namespace)["metadata"]["resourceVersion"] for n in expected}
    deploy_rv = {n: d["metadata"]["resourceVersion"] for n, d in deployments(kube, namespace, "homepage-recs").items()}
    ours = lambda: sorted(e["metadata"]["name"] for e in kube.items("events", namespace)  # noqa: E731
                          if e.get("reportingComponent") == "hybridrec-operator")
    before = ours()
    time.sleep(17)  # longer than the resync period: every model is re-planned once meanwhile
    assert {n: kube.get("rmd", n, namespace)["metadata"]["resourceVersion"] for n in expected} == rv
    assert {n: d["metadata"]["resourceVersion"] for n, d in deployments(kube, namespace, "homepage-recs").items()} == deploy_rv
    assert ours() == before


def test_full_private_pools_burst_internal_to_public_and_keep_restricted_private(
        operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    fill_private_pools(kube, namespace)
    kube.apply(sample_models(namespace, "homepage-recs", "account-recs"))

    homepage = wait_for(lambda: rmd_ready(kube, namespace, "homepage-recs"), 90, "homepage-recs Ready on public")
    assert placements(homepage) == {"aws-spot-l4": 2}  # cheapest public pool that admits internal data
    assert homepage["status"]["publicReplicas"] == 2

    def short() -> dict[str, Any] | None:
        rmd = kube.get("rmd", "account-recs", namespace)
        return rmd if kube.condition(rmd, "CapacityShortfall").get("status") == "True" else None

    account = wait_for(short, 60, "account-recs CapacityShortfall")
    assert account["status"]["replicas"] == 0 and account["status"]["publicReplicas"] == 0
    assert kube.condition(account, "Placed")["status"] == "False"
    assert not deployments(kube, namespace, "account-recs")  # never rendered anywhere public
    warnings = [e for e in kube.items("events", namespace) if e["involvedObject"]["name"] == "account-recs"]
    assert any(e["type"] == "Warning" and e["reason"] == "CapacityShortfall" for e in warnings)

    # GPUs come free: the restricted model is placed on its private pool without anyone touching it.
    kube("delete", "pods", "-n", namespace, "-l", "app=filler", "--wait=false")
    account = wait_for(lambda: rmd_ready(kube, namespace, "account-recs"), 90, "account-recs placed once GPUs are free")
    assert placements(account) == {"onprem-a100": 1}


def test_raising_sensitivity_removes_the_public_deployment(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    [doc] = sample_models(namespace, "homepage-recs")
    doc["spec"]["placement"]["preferredPools"] = ["aws-spot-l4"]
    kube.apply([doc])
    rmd = wait_for(lambda: rmd_ready(kube, namespace, "homepage-recs"), 90, "homepage-recs on its preferred public pool")
    assert placements(rmd) == {"aws-spot-l4": 2}
    assert "homepage-recs-aws-spot-l4" in deployments(kube, namespace, "homepage-recs")

    patch = {"spec": {"dataSensitivity": "confidential", "placement": {"allowPublicBurst": False, "preferredPools": []}}}
    kube("patch", "rmd", "homepage-recs", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    rmd = wait_for(lambda: rmd_ready(kube, namespace, "homepage-recs"), 90, "homepage-recs re-placed as confidential")
    assert rmd["status"]["publicReplicas"] == 0 and set(placements(rmd)) <= {"onprem-t4", "onprem-a100"}
    wait_for(lambda: "homepage-recs-aws-spot-l4" not in deployments(kube, namespace, "homepage-recs"), 30,
             "the public Deployment to be deleted")
    pools_of = node_pools(kube)
    wait_for(lambda: all(pools_of[p["spec"]["nodeName"]].startswith("onprem")
                         for p in kube.items("pods", namespace, MANAGED) if p["spec"].get("nodeName")), 60,
             "no pod left on public nodes")
    replanned = [e for e in kube.items("events", namespace) if e["reason"] == "Replanned"]
    assert replanned and "onprem" in replanned[-1]["message"]


def test_deleting_the_model_garbage_collects_its_children(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace, "trending"))
    wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready")
    kube("delete", "rmd", "trending", "-n", namespace)
    # The garbage collector (controller-manager) does it; in a young cluster it first has to discover the CRD.
    for kind in ("deployments", "services", "pdb", "pods"):
        wait_for(lambda kind=kind: not kube.items(kind, namespace, "hybridrec.io/model=trending"), 120, f"{kind} gone")


def test_bad_crs_are_refused_at_apply_with_readable_messages(installed: Kube) -> None:
    files = sorted(BAD_CRS.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        expect = next(line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines()
                      if line.startswith("# expect:"))
        proc = installed("apply", "-f", str(path), check=False)
        assert proc.returncode != 0, f"{path.name} was accepted"
        assert expect in proc.stderr, f"{path.name}: {proc.stderr}"
        assert "Traceback" not in proc.stderr


def test_unknown_preferred_pool_is_reported_not_crashed_on(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    [doc] = sample_models(namespace, "trending")
    doc["spec"]["placement"] = {"preferredPools": ["no-such-pool"]}
    kube.apply([doc])

    def reported() -> dict[str, Any] | None:
        rmd = kube.get("rmd", "trending", namespace)
        return rmd if kube.condition(rmd, "Placed").get("reason") == "PreferredPoolNotFound" else None

    rmd = wait_for(reported, 60, "Placed=False PreferredPoolNotFound")
    placed = kube.condition(rmd, "Placed")
    assert placed["status"] == "False" and "no-such-pool" in placed["message"]
    assert "Traceback" not in json.dumps(rmd["status"])
    events = [e for e in kube.items("events", namespace) if e["reason"] == "PreferredPoolNotFound"]
    assert events and events[0]["type"] == "Warning" and "no-such-pool" in events[0]["message"]
    assert operator.running


def test_kubectl_scale_pins_the_replica_count(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace, "trending"))
    wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready")
    kube("scale", "rmd", "trending", "-n", namespace, "--replicas=3")
    rmd = wait_for(lambda: (r := rmd_ready(kube, namespace, "trending")) and r["status"]["replicas"] == 3 and r, 90,
                   "3 replicas")
    assert rmd["spec"]["replicas"] == 3
    assert sum(d["spec"]["replicas"] for d in deployments(kube, namespace, "trending").values()) == 3
    assert kube.get("rmd", "trending", namespace)["status"]["selector"]
    scale = json.loads(kube("get", "--raw", f"/apis/hybridrec.io/v1alpha1/namespaces/{namespace}/recmodeldeployments/trending/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3


def sensitive_pod(namespace: str, name: str, affinity: dict[str, Any] | None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"hybridrec.io/sensitivity": "restricted", "hybridrec.io/model": "account-recs"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    if affinity:
        pod["spec"]["affinity"] = affinity
    return pod


def test_admission_policy_refuses_sensitive_pods_that_could_reach_public_nodes(installed: Kube, namespace: str) -> None:
    def refused(pod: dict[str, Any]) -> str:
        def attempt() -> str | None:
            proc = installed.apply([pod], check=False)
            if proc.returncode == 0:
                installed("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false", check=False)
                return None  # the policy may take a moment to become active after install
            return proc.stderr
        return wait_for(attempt, 30, "the admission policy to refuse the pod")

    no_affinity = refused(sensitive_pod(namespace, "no-affinity", None))
    assert "restricted data never runs on public nodes" in no_affinity
    term = lambda v: {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": [v]}]}  # noqa: E731
    ored = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("private"), term("public")]}}}
    assert "every nodeSelectorTerm" in refused(sensitive_pod(namespace, "ored-public", ored))
    # The same pod with only the private term is admitted.
    ok = sensitive_pod(namespace, "private-only", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("private")]}}})
    installed.apply([ok])
    installed("delete", "pod", "private-only", "-n", namespace, "--wait=false")


def test_hand_edited_deployment_is_reverted(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace, "homepage-recs"))
    wait_for(lambda: rmd_ready(kube, namespace, "homepage-recs"), 90, "homepage-recs Ready")
    name = "homepage-recs-onprem-t4"
    original = deployments(kube, namespace, "homepage-recs")[name]["spec"]
    patch = {"spec": {"replicas": 5, "template": {"spec": {"nodeSelector": {"hybridrec.io/pool": "aws-spot-l4"}}}}}
    kube("patch", "deployment", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))

    def reverted() -> bool:
        spec = deployments(kube, namespace, "homepage-recs")[name]["spec"]
        return spec["replicas"] == original["replicas"] and \
            spec["template"]["spec"]["nodeSelector"] == original["template"]["spec"]["nodeSelector"]

    wait_for(reverted, 30, "the hand edit to be reverted")
    # The edit leaves no pod on the wrong pool once the rollout settles.
    pools_of = node_pools(kube)
    wait_for(lambda: all(pools_of.get(p["spec"].get("nodeName", ""), "onprem-t4") == "onprem-t4"
                         for p in kube.items("pods", namespace, MANAGED) if p["metadata"].get("deletionTimestamp") is None),
             60, "pods back on onprem-t4 only")


def test_metrics_are_served(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace, "trending"))
    wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready")
    text = wait_for(lambda: (m := operator.metrics()) and f'namespace="{namespace}"' in m and m, 30, "model metrics")
    assert re.search(rf'hybridrec_replicas\{{[^}}]*model="trending"[^}}]*namespace="{namespace}"[^}}]*state="desired"', text)
    assert re.search(rf'hybridrec_cost_per_hour\{{[^}}]*currency="USD"[^}}]*namespace="{namespace}"', text)
    assert re.search(rf'hybridrec_decisions_total\{{[^}}]*direction="up"[^}}]*namespace="{namespace}"[^}}]*reason="placement"', text)
    assert 'hybridrec_reconcile_duration_seconds_count{kind="RecModelDeployment"}' in text
    # A deleted model's series go away.
    kube("delete", "rmd", "trending", "-n", namespace)
    wait_for(lambda: f'namespace="{namespace}"' not in re.sub(r"hybridrec_decisions.*\n", "", operator.metrics()), 30,
             "series of the deleted model to disappear")
