"""DRA pools (``gpu.dra``), pure: what is rendered for a model on one, how free devices become whole replicas, what
the DevicesReady condition says about bad input, and how the decision applies and removes ResourceClaimTemplates."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_pool, parse_rmd
from hybridrec_operator.core import capacity, dra
from hybridrec_operator.core.decide import ModelSnapshot, decide
from hybridrec_operator.core.objects import compact_pod
from hybridrec_operator.core.placement import PlacementPlan, plan_placement
from hybridrec_operator.core.render import build_children, build_claim_template, build_deployment

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RESOURCE = "dra.hybridrec.io/gpu.nvidia.com"
CLASS = {"metadata": {"name": "gpu.nvidia.com"},
         "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]}}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "manifests" / "samples" / name).read_text()) if d]


def dra_pool() -> ComputePool:
    [doc] = docs("dra-pool.yaml")
    return parse_pool(doc)


def public_dra_pool() -> ComputePool:
    doc = copy.deepcopy(docs("dra-pool.yaml")[0])
    doc["metadata"]["name"] = "cloud-dra-l4"
    doc["spec"].update(tenancy="public", provider="aws", nodeSelector={"hybridrec.io/pool": "cloud-dra-l4"},
                       allowedSensitivity=["public", "internal"],
                       tolerations=[{"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public",
                                     "effect": "NoSchedule"}])
    doc["spec"]["pricing"]["pricePerGpuHour"] = 0.5
    return parse_pool(doc)


def model(name: str, **spec: Any) -> RecModelDeployment:
    doc = copy.deepcopy(next(d for d in docs("models.yaml") if d.get("metadata", {}).get("name") == name))
    doc["spec"].update(spec)
    return parse_rmd(doc)


def node(name: str, pool: str, tenancy: str = "private") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"hybridrec.io/pool": pool, "hybridrec.io/tenancy": tenancy}},
            "spec": {}, "status": {"allocatable": {"cpu": 64}, "conditions": [{"type": "Ready", "status": "True"}]}}


def resource_slice(node_name: str, devices: int, driver: str = "gpu.nvidia.com") -> dict[str, Any]:
    return dra.compact_slice({"metadata": {"name": f"{node_name}-{driver}"}, "spec": {
        "driver": driver, "nodeName": node_name, "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
        "devices": [{"name": f"gpu-{i}"} for i in range(devices)]}})


def claim(node_name: str, device: str, *, ours: bool = False) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "hybridrec"} if ours else {}
    return dra.compact_claim({"metadata": {"name": f"c-{node_name}-{device}", "namespace": "ml", "labels": labels},
                              "status": {"allocation": {"devices": {"results": [
                                  {"request": "gpu", "driver": "gpu.nvidia.com", "pool": node_name, "device": device}]}}}})


NODES = [node("dra-1", "onprem-dra-a100"), node("dra-2", "onprem-dra-a100")]
INVENTORY = dra.Inventory(classes={"gpu.nvidia.com": dra.compact_class(CLASS)},
                          slices=[resource_slice("dra-1", 2), resource_slice("dra-2", 2)])


# --------------------------------------------------------------------------------------------------- render


def test_a_dra_pool_claims_its_gpus_through_a_template_not_an_extended_resource() -> None:
    rmd, pool = model("account-recs"), dra_pool()  # restricted: private pools only
    deployment = build_deployment(rmd, pool, 2)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["claims"] == [{"name": "gpu"}]
    template = build_claim_template(rmd, pool)
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    assert template["metadata"]["name"].startswith("account-recs-onprem-dra-a100-")
    assert template["apiVersion"] == "resource.k8s.io/v1" and template["kind"] == "ResourceClaimTemplate"
    assert template["metadata"]["namespace"] == rmd.namespace
    # Labelled as the Deployment is (a hybridrec child of this model and pool), and so is every claim made from it.
    assert template["metadata"]["labels"] == deployment["metadata"]["labels"] == template["spec"]["metadata"]["labels"]
    [request] = template["spec"]["spec"]["devices"]["requests"]
    assert request == {"name": "gpu", "exactly": {
        "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": rmd.spec.resources.gpus,
        "selectors": [{"cel": {"expression": 'device.attributes["gpu.nvidia.com"].productName == "NVIDIA A100-SXM4-80GB"'}}]}}
    # Placement rules unchanged: the pool's nodeSelector, the required tenancy affinity, the sensitivity label.
    assert pod["nodeSelector"] == {"hybridrec.io/pool": "onprem-dra-a100"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]
    assert deployment["metadata"]["labels"]["hybridrec.io/sensitivity"] == "restricted"
    # Capacity reads the device count from the pod (its claim is a separate object).
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert dra.pod_requests(annotations) == {RESOURCE: rmd.spec.resources.gpus}


def test_a_sensitive_model_is_never_rendered_onto_a_public_dra_pool() -> None:
    with pytest.raises(ValueError, match="cannot run on public pool"):
        build_deployment(model("account-recs"), public_dra_pool(), 1)
    public = build_deployment(model("trending"), public_dra_pool(), 1)["spec"]["template"]["spec"]
    assert {"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public", "effect": "NoSchedule"} in public["tolerations"]


def test_a_changed_claim_spec_is_a_new_template_name() -> None:
    pool = dra_pool()
    one, two = build_claim_template(model("trending"), pool), build_claim_template(model("trending", resources={
        "cpu": "2", "memory": "8Gi", "gpus": 2}), pool)
    assert one["metadata"]["name"] != two["metadata"]["name"]  # the spec is immutable: a new object, not an update
    assert build_claim_template(model("trending"), pool) == one  # stable otherwise


def test_children_carry_one_template_per_dra_pool_and_none_for_extended_resource_pools() -> None:
    pools = {p.name: p for p in [dra_pool(), *map(parse_pool, docs("pools.yaml"))]}
    rmd = model("trending")
    plan = plan_placement(rmd.spec, [capacity_view(pools["onprem-dra-a100"], 1), capacity_view(pools["onprem-t4"], 1)], 2)
    assert {a.pool for a in plan.assignments if a.replicas} == {"onprem-dra-a100", "onprem-t4"}
    children = build_children(rmd, plan, pools)
    templates = [c for c in children if c["kind"] == "ResourceClaimTemplate"]
    assert [t["metadata"]["labels"]["hybridrec.io/pool"] for t in templates] == ["onprem-dra-a100"]
    t4 = next(c for c in children if c["metadata"]["name"] == "trending-onprem-t4")
    assert "resourceClaims" not in t4["spec"]["template"]["spec"]
    assert t4["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def capacity_view(pool: ComputePool, slots: int) -> Any:
    from hybridrec_operator.core.placement import PoolView
    return PoolView(name=pool.name, spec=pool.spec, free_gpus=slots, replica_slots=slots)


# ------------------------------------------------------------------------------------------------- capacity


def ours(name: str, node_name: str, model_name: str = "other-model", devices: int = 1) -> dict[str, Any]:
    """A hybridrec pod on the DRA pool as the pod index compacts it."""
    return compact_pod({"metadata": {"name": name, "namespace": "ml", "labels": {
        "hybridrec.io/model": model_name, "hybridrec.io/pool": "onprem-dra-a100", "app.kubernetes.io/managed-by": "hybridrec"},
        "annotations": dra.pod_annotations("gpu.nvidia.com", devices)},
        "spec": {"nodeName": node_name, "containers": [{"name": "server", "resources": {"claims": [{"name": "gpu"}]}}]},
        "status": {"phase": "Running"}})


def test_free_devices_are_the_class_devices_minus_others_allocations_and_our_pods() -> None:
    pool = dra_pool()
    # Someone else's claim holds one device on dra-1; hybridrec's claims are counted through hybridrec's pods.
    inventory = dra.Inventory(classes=INVENTORY.classes, slices=INVENTORY.slices,
                              claims=[claim("dra-1", "gpu-0"), claim("dra-2", "gpu-0", ours=True)])
    pods = [ours("p1", "dra-2")]
    nodes = dra.with_devices(NODES, [pool], inventory, dra.held_by_pods(pods))
    assert [n["status"]["allocatable"][RESOURCE] for n in nodes] == [1, 2]
    usage = capacity.pool_usage([pool], nodes, pods)[pool.name]
    assert (usage.allocatable_gpus, usage.used_gpus, usage.free_gpus, usage.node_free) == (3, 1, 2, (1, 1))
    assert usage.replica_slots(1) == 2 and usage.replica_slots(2) == 0  # whole replicas per node, as for any pool
    # The model owning p1 sees its own device as room it may keep.
    [view] = capacity.views_for_model("ml/other-model", 1, [pool], nodes, pods)
    assert view.replica_slots == 3


def test_a_full_dra_pool_is_a_shortfall_exactly_as_with_extended_resources() -> None:
    pool, rmd = dra_pool(), model("trending", replicas=6, placement={"preferredPools": ["onprem-dra-a100"]})
    nodes = dra.with_devices(NODES, [pool], INVENTORY, {})
    views = capacity.views_for_model("default/trending", 1, [pool], nodes, [])
    plan: PlacementPlan = plan_placement(rmd.spec, views, 6)
    assert plan.replicas_by_pool() == {"onprem-dra-a100": 4} and plan.shortfall == 2


def test_nodes_are_untouched_without_a_dra_pool() -> None:
    plain = parse_pool(docs("pools.yaml")[0])
    assert dra.with_devices(NODES, [plain], INVENTORY, {}) == NODES


def test_a_missing_class_or_no_slices_offers_no_new_room_but_keeps_what_runs() -> None:
    pool = dra_pool()
    running = [ours("p1", "dra-1", devices=1)]
    for inventory in (dra.Inventory(classes={}, slices=INVENTORY.slices), dra.Inventory(classes=INVENTORY.classes)):
        nodes = dra.with_devices(NODES, [pool], inventory, dra.held_by_pods(running))
        assert [n["status"]["allocatable"][RESOURCE] for n in nodes] == [1, 0]
        usage = capacity.pool_usage([pool], nodes, running)[pool.name]
        assert usage.free_gpus == 0  # nothing new goes there
        [view] = capacity.views_for_model("ml/other-model", 1, [pool], nodes, running)
        assert view.replica_slots == 1  # the running replica keeps its place


def test_devices_ready_condition_names_the_problem() -> None:
    pool = dra_pool()
    status, reason, message = dra.devices_condition(pool, NODES, dra.Inventory(classes={}, slices=INVENTORY.slices))
    assert (status, reason) == (False, "DeviceClassNotFound") and "DeviceClass gpu.nvidia.com does not exist" in message
    status, reason, message = dra.devices_condition(pool, NODES, dra.Inventory(classes=INVENTORY.classes))
    assert (status, reason) == (False, "NoResourceSlices")
    assert "driver gpu.nvidia.com" in message and "dra-1, dra-2" in message
    other_driver = dra.Inventory(classes=INVENTORY.classes, slices=[resource_slice("dra-1", 2, "gpu.amd.com")])
    assert dra.devices_condition(pool, NODES, other_driver)[1] == "NoResourceSlices"
    assert dra.devices_condition(pool, NODES, INVENTORY) == (
        True, "DevicesPublished", "4 device(s) of driver gpu.nvidia.com on 2 of 2 node(s)")
    assert dra.devices_condition(parse_pool(docs("pools.yaml")[0]), NODES, INVENTORY) is None
    conds = dra.set_devices_condition(pool, NODES, INVENTORY, [], 1, NOW)
    assert [(c["type"], c["status"]) for c in conds] == [("DevicesReady", "True")]
    assert dra.set_devices_condition(parse_pool(docs("pools.yaml")[0]), NODES, INVENTORY, conds, 1, NOW) == []


@pytest.mark.parametrize(("expression", "driver"), [
    ("device.driver == 'gpu.nvidia.com'", "gpu.nvidia.com"),
    ('device.driver == "gpu.example.com" && device.attributes["x"].y', "gpu.example.com"),
    ("device.capacity['memory'] > quantity('1Gi')", None),
])
def test_the_class_driver_is_read_from_its_selector(expression: str, driver: str | None) -> None:
    assert dra.class_driver({"spec": {"selectors": [{"cel": {"expression": expression}}]}}) == driver


def test_an_unreadable_annotation_is_no_request() -> None:
    assert dra.pod_requests({dra.DEVICE_CLASS_ANNOTATION: "gpu.nvidia.com", dra.DEVICES_ANNOTATION: "two"}) == {}
    assert dra.pod_requests(None) == {}


# ------------------------------------------------------------------------------------------------- decision


def body(name: str = "trending", **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(next(d for d in docs("models.yaml") if d.get("metadata", {}).get("name") == name))
    doc["metadata"].update(namespace="default", uid=f"uid-{name}", generation=1)
    doc["spec"].update(replicas=2, placement={"preferredPools": ["onprem-dra-a100"]}, **spec)
    doc["spec"].pop("budget", None)
    doc["spec"].pop("scaling", None)
    return doc


def snap(model_body: dict[str, Any], children: dict | None = None) -> ModelSnapshot:
    pool = dra_pool()
    nodes = dra.with_devices(NODES, [pool], INVENTORY, {})
    return ModelSnapshot(key="default/trending", body=model_body, pools=[pool], nodes=nodes, pods=[], own_pods=[],
                         children=children or {})


def live(decision: Any) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for child in decision.applies:
        copied = copy.deepcopy(child)
        copied["metadata"]["uid"] = f"uid-{child['metadata']['name']}"
        out[(child["kind"], child["metadata"]["name"])] = copied
    return out


def test_the_template_is_applied_before_the_deployment_and_looked_up_first() -> None:
    decision = decide(snap(body()), now=NOW, trigger="created", grace_seconds=60)
    kinds = [c["kind"] for c in decision.applies]
    assert kinds.index("ResourceClaimTemplate") < kinds.index("Deployment")
    template = next(c for c in decision.applies if c["kind"] == "ResourceClaimTemplate")
    assert ("ResourceClaimTemplate", template["metadata"]["name"]) in decision.unseen
    assert template["metadata"]["ownerReferences"][0]["uid"] == "uid-trending"  # garbage-collected with the model
    assert decision.plan is not None and decision.plan.replicas_by_pool() == {"onprem-dra-a100": 2}


def test_a_foreign_template_of_the_same_name_is_a_conflict_never_applied_nor_deleted() -> None:
    first = decide(snap(body()), now=NOW, trigger="created", grace_seconds=60)
    children = live(first)
    ref = next(r for r in children if r[0] == "ResourceClaimTemplate")
    children[ref]["metadata"]["ownerReferences"] = [{"kind": "ConfigMap", "name": "x", "uid": "uid-x", "controller": True}]
    children[ref]["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] = 8
    second = decide(snap(body(), children), now=NOW, trigger="resync", grace_seconds=60)
    assert not [c for c in second.applies if c["kind"] == "ResourceClaimTemplate"]
    assert not [d for d in second.deletes if d[1] == "ResourceClaimTemplate"]
    assert [f.reason for f in second.conflicts] == ["ChildConflict"] and ref[1] in second.conflicts[0].message


def test_an_old_template_goes_only_once_no_live_deployment_references_it() -> None:
    first = decide(snap(body()), now=NOW, trigger="created", grace_seconds=60)
    children = live(first)
    old = next(name for kind, name in children if kind == "ResourceClaimTemplate")
    # Two GPUs per replica: a new template; the live Deployment still references the old one.
    changed = body(resources={"cpu": "2", "memory": "8Gi", "gpus": 2})
    second = decide(snap(changed, children), now=NOW, trigger="spec changed", grace_seconds=60)
    new = next(c["metadata"]["name"] for c in second.applies if c["kind"] == "ResourceClaimTemplate")
    assert new != old and not [d for d in second.deletes if d[3] == old]
    children.update(live(second))  # the Deployment now references the new template
    third = decide(snap(changed, children), now=NOW, trigger="resync", grace_seconds=60)
    assert ("resource.k8s.io/v1", "ResourceClaimTemplate", "default", old, f"uid-{old}") in third.deletes
    assert not [d for d in third.deletes if d[3] == new]
