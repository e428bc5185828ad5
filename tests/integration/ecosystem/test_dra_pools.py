"""DRA pools on the real local control plane: a DeviceClass and ResourceSlices (2 devices on each of 2 private kwok
nodes, 2 on a public one) published as a DRA driver would; the sample pool of manifests/samples/dra-pool.yaml and a
public DRA pool select them. A confidential model wanting more replicas than the private devices gets them allocated
by the real kube-scheduler (ResourceClaims made from hybridrec's ResourceClaimTemplate, each allocated on its pod's
node) and reports CapacityShortfall for the rest, exactly as with extended resources, while the public pool's free
devices stay untouched. Bad input (a pool without ResourceSlices, then the DeviceClass deleted) is named in the pools'
DevicesReady condition and an event, and the running replicas stay where they are.

The nodes, slices, class and pools are this module's own: it deletes them afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from hybridrec_local.localcluster import LocalCluster
from hybridrec_operator.controller.kube import Kube as KubeClient
from hybridrec_operator.controller.training import TrainingController
from support.kube import Kube, fresh_namespace, sample_docs
from support.operator import OperatorProcess
from support.stack import wait_for

pytestmark = pytest.mark.cluster

KWOK = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
DRIVER = "gpu.nvidia.com"
PRIVATE, PUBLIC = "onprem-dra-a100", "cloud-dra-l4"
NODES = {"dra-a100-1": (PRIVATE, "private"), "dra-a100-2": (PRIVATE, "private"), "dra-l4-1": (PUBLIC, "public")}
PUBLIC_TAINT = {"key": "hybridrec.io/tenancy", "value": "public", "effect": "NoSchedule"}
FAST_ENV = {"HYBRIDREC_RESYNC_SECONDS": "15", "HYBRIDREC_PENDING_GRACE_SECONDS": "5", "HYBRIDREC_POOL_STATUS_DELAY": "0.3"}
DEVICE_CLASS = {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRIVER},
                "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]}}


def kwok_node(name: str, pool: str, tenancy: str) -> dict[str, Any]:
    """A node without any extended GPU resource: its GPUs exist only as DRA devices."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": dict(KWOK), "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok",
            "hybridrec.io/pool": pool, "hybridrec.io/tenancy": tenancy}},
        "spec": {"taints": [PUBLIC_TAINT] if tenancy == "public" else []},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}},
    }


def resource_slice(node: str, product: str) -> dict[str, Any]:
    """What a DRA driver's kubelet plugin publishes for one node: two GPUs."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"{node}-{DRIVER}"},
            "spec": {"driver": DRIVER, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": f"gpu-{i}", "attributes": {"productName": {"string": product}}}
                                 for i in range(2)]}}



def pools() -> list[dict[str, Any]]:
    private = sample_docs("dra-pool.yaml")[0]
    public = copy.deepcopy(private)
    public["metadata"]["name"] = PUBLIC
    public["spec"].update(tenancy="public", provider="aws", nodeSelector={"hybridrec.io/pool": PUBLIC},
                          allowedSensitivity=["public", "internal"], tolerations=[{**PUBLIC_TAINT, "operator": "Equal"}])
    public["spec"]["gpu"] = {"dra": {"deviceClassName": DRIVER}}
    public["spec"]["pricing"] = {"pricePerGpuHour": 0.10, "capacityType": "spot"}  # cheaper: tempting, and forbidden
    # A private pool whose nodes (the sample onprem-t4 nodes) publish no ResourceSlice: bad input.
    empty = copy.deepcopy(private)
    empty["metadata"]["name"] = "dra-no-slices"
    empty["spec"]["nodeSelector"] = {"hybridrec.io/pool": "onprem-t4"}
    return [private, public, empty]


def pool_condition(kube: Kube, pool: str, type_: str = "DevicesReady") -> dict[str, Any]:
    body = kube.get("computepools.hybridrec.io", pool) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def pool_events(kube: Kube, pool: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("events", "default")
            if e.get("involvedObject", {}).get("name") == pool and e.get("reason") == reason]


@pytest.fixture(scope="module")
def dra(installed: Kube, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    kube = installed
    kube.apply([kwok_node(n, *NODES[n]) for n in NODES])
    wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "True" for c in (kube.get("node", n) or {})
                             .get("status", {}).get("conditions", [])) for n in NODES), 60, "the DRA nodes Ready")
    kube.apply([DEVICE_CLASS, *(resource_slice(n, "NVIDIA A100-SXM4-80GB" if NODES[n][0] == PRIVATE else "NVIDIA L4")
                                for n in NODES)])
    kube.apply(pools())
    op = OperatorProcess(cluster, Path(tmp_path_factory.mktemp("dra-operator")), "operator-dra", ["--standalone"], FAST_ENV)
    op.start()
    try:
        yield kube
    finally:
        op.stop()
        kube("delete", "computepools.hybridrec.io", *(p["metadata"]["name"] for p in pools()), "--ignore-not-found",
             "--wait=true")
        kube("delete", "resourceslices.resource.k8s.io", *(f"{n}-{DRIVER}" for n in NODES), "--ignore-not-found")
        kube("delete", "deviceclasses.resource.k8s.io", DRIVER, "--ignore-not-found")
        kube("delete", "node", *NODES, "--ignore-not-found", "--wait=true")


@pytest.fixture
def namespace(dra: Kube) -> Iterator[str]:
    with fresh_namespace(dra, "dra") as name:
        yield name


def test_the_api_server_refuses_dra_with_another_resource_name(installed: Kube) -> None:
    pool = copy.deepcopy(sample_docs("dra-pool.yaml")[0])
    pool["metadata"]["name"] = "dra-and-extended"
    pool["spec"]["gpu"]["resourceName"] = "amd.com/gpu"
    refused = installed.apply([pool], check=False)
    assert refused.returncode != 0 and "gpu.dra and gpu.resourceName are alternatives" in refused.stderr


def test_the_scheduler_allocates_devices_and_a_full_dra_pool_falls_short(dra: Kube, namespace: str) -> None:
    kube = dra
    cond = wait_for(lambda: (c := pool_condition(kube, PRIVATE)).get("status") == "True" and c, 60,
                    f"{PRIVATE} DevicesReady")
    assert cond["message"] == f"4 device(s) of driver {DRIVER} on 2 of 2 node(s)"
    status = kube.get("computepools.hybridrec.io", PRIVATE)["status"]
    assert (status["readyNodes"], status["allocatableGpus"], status["freeGpus"]) == (2, 4, 4)
    missing = wait_for(lambda: (c := pool_condition(kube, "dra-no-slices")).get("status") == "False" and c, 60,
                       "dra-no-slices DevicesReady=False")
    assert missing["reason"] == "NoResourceSlices" and f"driver {DRIVER}" in missing["message"]
    assert wait_for(lambda: pool_events(kube, "dra-no-slices", "NoResourceSlices"), 30, "the NoResourceSlices event")

    # A confidential model wanting 6 replicas of 1 GPU, only DRA pools allowed: 4 private devices, and a cheaper
    # public DRA pool with 2 free devices it must never use.
    others = [p["metadata"]["name"] for p in kube.items("computepools.hybridrec.io")
              if p["metadata"]["name"] not in (PRIVATE, PUBLIC)]
    doc = copy.deepcopy(next(d for d in sample_docs("models.yaml") if d.get("metadata", {}).get("name") == "trending"))
    doc["metadata"] = {"name": "dra-recs", "namespace": namespace}
    doc["spec"].update(dataSensitivity="confidential", replicas=6,
                       placement={"preferredPools": [PRIVATE], "forbiddenPools": others})
    doc["spec"]["resources"]["gpus"] = 1
    doc["spec"].pop("budget", None)
    kube.apply([doc])

    def running() -> list[dict[str, Any]] | None:
        pods = [p for p in kube.items("pods", namespace, "hybridrec.io/model=dra-recs")
                if not p["metadata"].get("deletionTimestamp")]
        ok = [p for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")]
        return ok if len(ok) == 4 and len(pods) == 4 else None

    pods = wait_for(running, 90, "4 pods of the confidential model Running")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["dra-a100-1", "dra-a100-1", "dra-a100-2", "dra-a100-2"]
    claims = {c["metadata"]["name"]: c for c in kube.items("resourceclaims.resource.k8s.io", namespace)}
    template = kube.items("resourceclaimtemplates.resource.k8s.io", namespace)
    assert [t["metadata"]["ownerReferences"][0]["name"] for t in template] == ["dra-recs"]
    for pod in pods:
        # Each pod's claim was made from hybridrec's template and allocated on the pod's own node.
        assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
        [status] = pod["status"]["resourceClaimStatuses"]
        claim = claims[status["resourceClaimName"]]
        assert claim["metadata"]["labels"]["hybridrec.io/model"] == "dra-recs"
        [result] = claim["status"]["allocation"]["devices"]["results"]
        assert (result["driver"], result["pool"]) == (DRIVER, pod["spec"]["nodeName"])
        terms = claim["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"]
        assert pod["spec"]["nodeName"] in str(terms)
        assert [r["name"] for r in claim["status"]["reservedFor"]] == [pod["metadata"]["name"]]
    devices = {(c["status"]["allocation"]["devices"]["results"][0]["pool"],
                c["status"]["allocation"]["devices"]["results"][0]["device"]) for c in claims.values()}
    assert len(devices) == 4  # four distinct devices

    def short() -> dict[str, Any] | None:
        rmd = kube.get("rmd", "dra-recs", namespace) or {}
        placed = kube.condition(rmd, "Placed")
        return rmd if placed.get("reason") == "CapacityShortfall" and rmd["status"].get("replicas") == 4 else None

    rmd = wait_for(short, 60, "dra-recs Placed=False CapacityShortfall with 4 replicas")
    assert {p["pool"]: p["desired"] for p in rmd["status"]["placements"] if p["desired"]} == {PRIVATE: 4}
    assert "2" in kube.condition(rmd, "Placed")["message"]
    assert not kube.items("pods", namespace, f"hybridrec.io/pool={PUBLIC}")  # never on the public DRA pool
    wait_for(lambda: kube.get("computepools.hybridrec.io", PRIVATE)["status"].get("freeGpus") == 0, 30,
             f"{PRIVATE} freeGpus 0")
    assert kube.get("computepools.hybridrec.io", PUBLIC)["status"]["freeGpus"] == 2  # free, and not for this model

    # A public model may use the public DRA pool: its pods tolerate the public taint and get the L4 devices.
    public = copy.deepcopy(doc)
    public["metadata"]["name"] = "dra-public"
    public["spec"].update(dataSensitivity="public", replicas=2, placement={"preferredPools": [PUBLIC], "forbiddenPools": others})
    kube.apply([public])
    on_public = wait_for(lambda: (ps := [p for p in kube.items("pods", namespace, "hybridrec.io/model=dra-public")
                                         if p["status"].get("phase") == "Running"]) and len(ps) == 2 and ps,
                         60, "the public model's 2 pods Running")
    assert {p["spec"]["nodeName"] for p in on_public} == {"dra-l4-1"}

    # The DeviceClass disappears (a driver uninstalled): named on the pool, and nothing running is disturbed.
    kube("delete", "deviceclasses.resource.k8s.io", DRIVER)
    gone = wait_for(lambda: (c := pool_condition(kube, PRIVATE)).get("reason") == "DeviceClassNotFound" and c, 60,
                    f"{PRIVATE} DevicesReady=False DeviceClassNotFound")
    assert gone["status"] == "False" and DRIVER in gone["message"]
    assert wait_for(lambda: pool_events(kube, PRIVATE, "DeviceClassNotFound"), 30, "the DeviceClassNotFound event")
    after = wait_for(running, 30, "the 4 pods still Running")
    assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in pods}
    rmd = kube.get("rmd", "dra-recs", namespace)
    assert {p["pool"]: p["desired"] for p in rmd["status"]["placements"] if p["desired"]} == {PRIVATE: 4}
    kube.apply([DEVICE_CLASS])
    wait_for(lambda: pool_condition(kube, PRIVATE).get("status") == "True", 60, f"{PRIVATE} DevicesReady again")


def test_a_restricted_models_training_run_claims_devices_of_the_private_dra_pool(dra: Kube, namespace: str,
                                                                                kube_api: ApiClient) -> None:
    """Retraining on a DRA pool: the run's Job claims its GPU from a ResourceClaimTemplate owned by the run, and the
    real scheduler allocates a device on a node of the private pool, never the cheaper public one it prefers."""
    kube = dra
    wait_for(lambda: (kube.get("computepools.hybridrec.io", PRIVATE)["status"].get("freeGpus") or 0) >= 1, 90,
             f"a free device on {PRIVATE}")
    others = [p["metadata"]["name"] for p in kube.items("computepools.hybridrec.io")
              if p["metadata"]["name"] not in (PRIVATE, PUBLIC)]
    kube.apply([{
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": "dra-trained", "namespace": namespace},
        "spec": {"model": {"uri": "s3://hybridrec-models/dra-trained/v1/", "architecture": "two-tower"},
                 "dataSensitivity": "restricted", "replicas": 0,
                 "placement": {"preferredPools": [PUBLIC], "forbiddenPools": others},
                 "training": {"schedule": "0 3 * * *", "dataUri": "s3://hybridrec-data/interactions.csv",
                              "outputUri": "s3://hybridrec-models/dra-trained/versions"}}}])
    kube.apply([{"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun",
                 "metadata": {"name": "dra-trained-now", "namespace": namespace},
                 "spec": {"model": "dra-trained", "trigger": "manual"}}])
    TrainingController(KubeClient(kube_api), namespaces=[namespace], identity="test").sync()

    def scheduled() -> dict[str, Any] | None:
        pods = kube.items("pods", namespace, "hybridrec.io/training-run=dra-trained-now")
        return next((p for p in pods if p["spec"].get("nodeName") and p["status"].get("resourceClaimStatuses")), None)

    pod = wait_for(scheduled, 60, "the training pod scheduled with its claim")
    assert pod["spec"]["nodeName"] in ("dra-a100-1", "dra-a100-2")
    assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
    [template] = kube.items("resourceclaimtemplates.resource.k8s.io", namespace)
    assert [(o["kind"], o["name"]) for o in template["metadata"]["ownerReferences"]] == [
        ("RecModelTrainingRun", "dra-trained-now")]
    [claim_status] = pod["status"]["resourceClaimStatuses"]
    claim = kube.get("resourceclaims.resource.k8s.io", claim_status["resourceClaimName"], namespace)
    [result] = claim["status"]["allocation"]["devices"]["results"]
    assert (result["driver"], result["pool"]) == (DRIVER, pod["spec"]["nodeName"])
