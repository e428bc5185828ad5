"""The reconcile's decision step (core.decide.decide) without a cluster: what it would write, and that re-running
it against the result writes nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import parse_pool
from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.core.decide import ModelDecision, ModelSnapshot, decide, views_per_pool
from hybridrec_operator.core.objects import claim_pods, compact_pod, requests_accelerators

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


POOLS = [parse_pool(d) for d in docs("manifests/samples/pools.yaml") if d["kind"] == "ComputePool"]
MODELS = {d["metadata"]["name"]: d for d in docs("manifests/samples/models.yaml") if d["kind"] == "RecModelDeployment"}


def ready_node(doc: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(doc)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


NODES = [ready_node(d) for d in docs("hack/cluster/nodes.yaml") if d["kind"] == "Node"]


def rmd(name: str, **spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(MODELS[name])
    body["metadata"].update(uid=f"uid-{name}", generation=1, resourceVersion="10")
    body["spec"].update(spec_changes)
    body["status"] = {}
    return body


def snapshot(body: dict[str, Any], *, pods: list[dict[str, Any]] | None = None,
             children: dict | None = None, target: dict[str, int] | None = None) -> ModelSnapshot:
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    pods = pods or []
    own = [p for p in pods if p["metadata"].get("labels", {}).get("hybridrec.io/model") == body["metadata"]["name"]]
    return ModelSnapshot(key=key, body=body, pools=POOLS, nodes=NODES, pods=pods, own_pods=own,
                         children=children or {}, target=target)


def as_live(decision: ModelDecision, body: dict[str, Any]) -> tuple[dict, dict[str, Any]]:
    """The children and model as the API server would hold them after the decision was carried out."""
    children = {}
    for child in decision.applies:
        live = copy.deepcopy(child)
        live["metadata"]["uid"] = f"uid-{child['metadata']['name']}"
        children[(child["kind"], child["metadata"]["name"])] = live
    new_body = copy.deepcopy(body)
    new_body["status"] = {k: v for k, v in (decision.status or {}).items() if v is not None}
    return children, new_body


def gpu_pod(name: str, node: str, gpus: int, labels: dict[str, str] | None = None, namespace: str = "other") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"}}


def test_new_model_gets_children_status_and_one_event_then_rerun_writes_nothing() -> None:
    body = rmd("homepage-recs")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    kinds = sorted(c["kind"] for c in first.applies)
    assert kinds == ["Deployment", "PodDisruptionBudget", "Service"]
    deployment = next(c for c in first.applies if c["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "homepage-recs-onprem-t4"  # internal data: cheapest private pool
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-homepage-recs"
    status = first.status
    assert status is not None and status["replicas"] == 2 and status["privateReplicas"] == 2
    assert status["placements"][0]["pool"] == "onprem-t4" and status["placements"][0]["currency"] == "USD"
    assert status["costPerHour"] == pytest.approx(0.70)
    assert status["lastDecision"]["trigger"] == "created"
    assert [e[1] for e in first.events] == ["Placed"]

    children, placed = as_live(first, body)
    again = decide(snapshot(placed, children=children), now=NOW + timedelta(minutes=5), trigger="resync", grace_seconds=60)
    assert again.applies == [] and again.deletes == [] and again.status is None and again.events == []


def test_ready_replicas_flow_into_status_without_a_new_decision() -> None:
    body = rmd("homepage-recs")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    children, placed = as_live(first, body)
    children[("Deployment", "homepage-recs-onprem-t4")]["status"] = {"readyReplicas": 2}
    later = decide(snapshot(placed, children=children), now=NOW, trigger="deployment changed", grace_seconds=60)
    assert later.status is not None and later.status["readyReplicas"] == 2
    assert later.status["lastDecision"] == placed["status"]["lastDecision"]
    ready = next(c for c in later.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert later.events == [] and later.applies == []


def test_full_private_pools_make_internal_burst_to_public_and_restricted_fall_short() -> None:
    fillers = [gpu_pod(f"fill-{n['metadata']['name']}", n["metadata"]["name"], int(n["status"]["allocatable"]["nvidia.com/gpu"]))
               for n in NODES if n["metadata"]["labels"]["hybridrec.io/tenancy"] == "private"]
    burst = decide(snapshot(rmd("homepage-recs"), pods=fillers), now=NOW, trigger="created", grace_seconds=60)
    assert burst.status is not None and burst.status["publicReplicas"] == 2 and burst.status["privateReplicas"] == 0
    pools = {p["pool"] for p in burst.status["placements"]}
    assert pools == {"aws-spot-l4"}

    held = decide(snapshot(rmd("account-recs"), pods=fillers), now=NOW, trigger="created", grace_seconds=60)
    assert held.status is not None and held.status["replicas"] == 0 and held.status["publicReplicas"] == 0
    conds = {c["type"]: c for c in held.status["conditions"]}
    assert conds["CapacityShortfall"]["status"] == "True"
    assert not [c for c in held.applies if c["kind"] == "Deployment"]
    assert ("Warning", "CapacityShortfall") in [(t, r) for t, r, _ in held.events]


def test_raising_sensitivity_deletes_the_public_deployment() -> None:
    # One private GPU left: internal data takes it and bursts the second replica to public.
    fillers = [gpu_pod("fill-t4-0", "onprem-t4-0", 2), gpu_pod("fill-t4-1", "onprem-t4-1", 1),
               gpu_pod("fill-a100-0", "onprem-a100-0", 4), gpu_pod("fill-a100-1", "onprem-a100-1", 4)]
    body = rmd("homepage-recs")
    first = decide(snapshot(body, pods=fillers), now=NOW, trigger="created", grace_seconds=60)
    assert {p["pool"] for p in first.status["placements"]} == {"onprem-t4", "aws-spot-l4"}
    children, placed = as_live(first, body)
    placed["spec"]["dataSensitivity"] = "confidential"
    placed["spec"]["placement"]["allowPublicBurst"] = False
    placed["metadata"]["generation"] = 2
    second = decide(snapshot(placed, pods=fillers, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    assert [d[3] for d in second.deletes] == ["homepage-recs-aws-spot-l4"]
    assert second.deletes[0][4] == "uid-homepage-recs-aws-spot-l4"  # uid precondition
    assert second.status is not None and second.status["publicReplicas"] == 0
    assert [e[1] for e in second.events][:1] == ["Replanned"]


def test_unknown_preferred_pool_is_a_condition_and_a_warning_not_a_crash() -> None:
    body = rmd("trending", placement={"preferredPools": ["no-such-pool"], "forbiddenPools": [], "allowPublicBurst": False})
    decision = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    placed = next(c for c in decision.status["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False" and placed["reason"] == "PreferredPoolNotFound"
    assert "no-such-pool" in placed["message"]
    assert ("Warning", "PreferredPoolNotFound") in [(t, r) for t, r, _ in decision.events]
    _, again_body = as_live(decision, body)
    children, _ = as_live(decision, body)
    again = decide(snapshot(again_body, children=children), now=NOW, trigger="resync", grace_seconds=60)
    assert again.events == []  # the warning is posted once, on the transition


def test_invalid_spec_becomes_a_readable_condition_without_children() -> None:
    body = rmd("trending")
    body["spec"]["resources"]["gpus"] = -1
    decision = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    assert decision.error is not None and "resources.gpus" in decision.error
    assert decision.applies == [] and decision.plan is None
    placed = next(c for c in decision.status["conditions"] if c["type"] == "Placed")
    assert placed["reason"] == "InvalidSpec" and "Traceback" not in placed["message"]


def test_pinned_replicas_and_controller_targets() -> None:
    pinned = decide(snapshot(rmd("trending", replicas=3)), now=NOW, trigger="created", grace_seconds=60)
    assert pinned.status["replicas"] == 3
    target = decide(snapshot(rmd("trending"), target={"aws-spot-l4": 2}), now=NOW, trigger="controller", grace_seconds=60)
    assert {p["pool"]: p["desired"] for p in target.status["placements"]} == {"aws-spot-l4": 2}
    # A target naming a pool the model may not use is not followed: the hard rule is re-checked.
    unsafe = decide(snapshot(rmd("account-recs"), target={"gcp-ondemand-a100": 1}), now=NOW, trigger="controller", grace_seconds=60)
    assert unsafe.status["publicReplicas"] == 0


def test_pods_unschedulable_past_the_grace_period_move_the_model() -> None:
    body = rmd("trending")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    pool = first.status["placements"][0]["pool"]
    children, placed = as_live(first, body)
    stuck = {"metadata": {"name": "trending-x", "namespace": "default",
                          "labels": {"hybridrec.io/model": "trending", "hybridrec.io/pool": pool}},
             "spec": {"nodeName": "", "containers": [{"name": "server", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
             "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                            "lastTransitionTime": "2025-01-01T11:58:00Z"}]}}
    moved = decide(snapshot(placed, pods=[stuck], children=children), now=NOW, trigger="pods pending", grace_seconds=60)
    assert pool in moved.newly_stuck
    assert pool not in {p["pool"] for p in moved.status["placements"]}
    waiting = decide(snapshot(placed, pods=[stuck], children=children), now=NOW, trigger="pods pending", grace_seconds=600)
    assert waiting.requeue_after is not None and 400 < waiting.requeue_after < 600


def test_claims_stand_for_planned_replicas_whose_pods_are_not_seen_yet() -> None:
    claims = claim_pods({"ns/a": {"onprem-t4": 3}}, {"ns/a": 2}, {"onprem-t4": "nvidia.com/gpu"},
                        [gpu_pod("a-1", "onprem-t4-0", 2, {"hybridrec.io/model": "a", "hybridrec.io/pool": "onprem-t4"}, "ns")])
    assert len(claims) == 2
    assert claims[0]["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": 2}
    # Another model planned after "a" sees t4 taken even though a's pods do not exist yet.
    other = decide(snapshot(rmd("trending"), pods=claim_pods({"default/homepage-recs": {"onprem-t4": 4}},
                                                             {"default/homepage-recs": 1}, {"onprem-t4": "nvidia.com/gpu"}, [])),
                   now=NOW, trigger="created", grace_seconds=60)
    assert "onprem-t4" not in {p["pool"] for p in other.status["placements"]}


def test_compact_pods_carry_gpu_counts_as_ints() -> None:
    pod = compact_pod({"metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}, "managedFields": [{}]},
                                "spec": {"nodeName": "x", "containers": [{"name": "c", "image": "i", "resources": {
                                    "requests": {"cpu": "500m", "nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}}]},
                                "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"},
                                                                              {"type": "ContainersReady", "status": "True"}]}})
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "nvidia.com/gpu": 2}
    assert "managedFields" not in pod["metadata"] and [c["type"] for c in pod["status"]["conditions"]] == ["PodScheduled"]
    assert requests_accelerators({"containers": [{"resources": {"limits": {"amd.com/gpu": "1"}}}]})
    assert not requests_accelerators({"containers": [{"resources": {"requests": {"cpu": "1", "hugepages-2Mi": "1Gi"}}}]})


def test_config_from_environment() -> None:
    cfg = OperatorConfig.from_env({"HYBRIDREC_METRICS_PORT": "9100", "HYBRIDREC_RESYNC_SECONDS": "5"})
    assert cfg.metrics_port == 9100 and cfg.resync_seconds == 5.0 and cfg.workers == OperatorConfig().workers


def test_per_pool_views_equal_the_whole_cluster_views() -> None:
    from hybridrec_operator.core import capacity

    label = lambda model, pool: {"hybridrec.io/model": model, "hybridrec.io/pool": pool}  # noqa: E731
    pods = [gpu_pod("fill", "onprem-a100-0", 3), gpu_pod("x", "aws-spot-l4-1", 2, label("trending", "aws-spot-l4"), "default"),
            gpu_pod("y", "onprem-t4-0", 1, label("other", "onprem-t4"), "default"),
            gpu_pod("pending", "", 1, label("other", "onprem-a100"), "default")]
    pods[-1]["status"]["phase"] = "Pending"
    for stuck in (set(), {"aws-spot-l4"}):
        whole = capacity.views_for_model("default/trending", 1, POOLS, NODES, pods, stuck=stuck)
        split = views_per_pool("default/trending", 1, POOLS, NODES, pods, stuck)
        assert split == whole


def test_children_are_adopted_exactly_as_kopf_adopt_does() -> None:
    """core.objects.adopt keeps the decision pure (no kopf in core) and must write what kopf.adopt wrote before."""
    import kopf

    from hybridrec_operator.core.objects import adopt

    owner = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
             "metadata": {"name": "m", "namespace": "shop", "uid": "u-1", "labels": {"team": "recs", "tier": "gold"}}}
    children = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m-t4", "labels": {"tier": "own"}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m", "namespace": "elsewhere"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},  # unnamed: generateName from the owner
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": "m", "ownerReferences": [{"uid": "u-1", "name": "m"}]}},  # already owned: not twice
    ]
    ours, theirs = copy.deepcopy(children), copy.deepcopy(children)
    adopt(ours, owner)
    kopf.adopt(theirs, owner=owner)  # type: ignore[arg-type]
    assert ours == theirs
