"""Pool usage and per-model pool views from plain Node/Pod dicts (the sample cluster of hack/cluster/nodes.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec_operator.api.models import ComputePool, parse_pool, parse_rmd
from hybridrec_operator.core.capacity import (
    matches,
    node_ready,
    pod_gpus,
    pool_usage,
    stuck_pools,
    unschedulable_since,
    views_for_model,
)
from hybridrec_operator.core.placement import plan_placement

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def sample_pools() -> list[ComputePool]:
    return [parse_pool(d) for d in yaml.safe_load_all((REPO / "manifests/samples/pools.yaml").read_text()) if d]


def ready(node: dict[str, Any]) -> dict[str, Any]:
    node.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


def sample_nodes() -> list[dict[str, Any]]:
    """The fake nodes the local cluster registers (kwok reports them Ready)."""
    return [ready(n) for n in yaml.safe_load_all((REPO / "hack/cluster/nodes.yaml").read_text()) if n and n.get("kind") == "Node"]


def pod(name: str, model: str | None, pool: str | None, gpus: int, node: str | None = None, *, namespace: str = "default",
        phase: str = "Running", conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = {}
    if model:
        labels["hybridrec.io/model"] = model
    if pool:
        labels["hybridrec.io/pool"] = pool
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
        "status": {"phase": phase if node else "Pending", "conditions": conditions or []},
    }


def test_empty_cluster_usage_matches_the_sample_nodes() -> None:
    usage = pool_usage(sample_pools(), sample_nodes(), [])
    assert {name: (u.nodes, u.ready_nodes, u.allocatable_gpus, u.used_gpus, u.free_gpus) for name, u in usage.items()} == {
        "onprem-a100": (2, 2, 8, 0, 8),
        "onprem-t4": (2, 2, 4, 0, 4),
        "aws-spot-l4": (3, 3, 12, 0, 12),
        "gcp-ondemand-a100": (2, 2, 16, 0, 16),
    }


def test_quota_caps_free_gpus_below_node_room() -> None:
    pools = sample_pools()
    pools[0] = ComputePool.model_validate({**pools[0].model_dump(by_alias=True), "spec": {**pools[0].spec.to_wire(), "maxGpus": 3}})
    usage = pool_usage(pools, sample_nodes(), [])
    assert usage["onprem-a100"].allocatable_gpus == 8 and usage["onprem-a100"].free_gpus == 3
    assert usage["onprem-a100"].replica_slots(2) == 1


def test_bound_pending_and_foreign_pods_take_room() -> None:
    pods = [
        pod("a-1", "a", "onprem-t4", 1, "onprem-t4-0"),
        pod("b-1", "b", "onprem-t4", 1),  # pending claim: labelled with the pool, bound to no node
        pod("foreign", None, None, 1, "onprem-t4-1"),  # not ours: takes node room, not quota
        pod("done", "a", "onprem-t4", 2, "onprem-t4-1", phase="Succeeded"),  # finished: holds nothing
    ]
    usage = pool_usage(sample_pools(), sample_nodes(), pods)["onprem-t4"]
    assert usage.used_gpus == 2
    assert usage.free_gpus == 1
    assert usage.node_free == (1, 0)


def test_unready_and_cordoned_nodes_offer_nothing() -> None:
    nodes = sample_nodes()
    for node in nodes:
        if node["metadata"]["name"] == "onprem-a100-0":
            node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        if node["metadata"]["name"] == "onprem-a100-1":
            node["spec"] = {"unschedulable": True}
    usage = pool_usage(sample_pools(), nodes, [])["onprem-a100"]
    assert (usage.nodes, usage.ready_nodes, usage.allocatable_gpus, usage.free_gpus) == (2, 0, 0, 0)


def test_views_count_own_pods_as_available_and_others_as_claims() -> None:
    pods = [
        pod("mine-1", "homepage-recs", "onprem-t4", 1, "onprem-t4-0"),
        pod("mine-2", "homepage-recs", "onprem-t4", 1, "onprem-t4-1"),
        pod("other-1", "trending", "onprem-t4", 1, "onprem-t4-0"),
        pod("other-2", "trending", "onprem-t4", 1),  # pending, still a claim
        pod("same-name-other-ns", "homepage-recs", "onprem-t4", 0, namespace="team-b"),
    ]
    views = {v.name: v for v in views_for_model("default/homepage-recs", 1, sample_pools(), sample_nodes(), pods)}
    assert views["onprem-t4"].free_gpus == 2
    assert views["onprem-t4"].replica_slots == 2
    assert views["onprem-a100"].free_gpus == 8
    other = {v.name: v for v in views_for_model("default/trending", 1, sample_pools(), sample_nodes(), pods)}
    assert other["onprem-t4"].free_gpus == 2


def test_per_node_packing_limits_multi_gpu_replicas() -> None:
    # One GPU taken on each t4 node: 2 GPUs are free, but no node has 2 free for a 2-GPU replica.
    pods = [pod("x", "x", "onprem-t4", 1, "onprem-t4-0"), pod("y", "y", "onprem-t4", 1, "onprem-t4-1")]
    views = {v.name: v for v in views_for_model("default/m", 2, sample_pools(), sample_nodes(), pods)}
    assert views["onprem-t4"].free_gpus == 2
    assert views["onprem-t4"].replica_slots == 0
    assert views["onprem-t4"].capacity(2) == 0


def unschedulable(since: datetime) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")}]


def test_stuck_pools_after_the_grace_period() -> None:
    pods = [
        pod("p1", "m", "aws-spot-l4", 1, conditions=unschedulable(NOW - timedelta(seconds=120))),
        pod("p2", "m", "onprem-t4", 1, conditions=unschedulable(NOW - timedelta(seconds=30))),
        pod("p3", "m", "onprem-a100", 1, "onprem-a100-0"),
        pod("p4", "m", "gcp-ondemand-a100", 1, conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulerError"}]),
    ]
    assert stuck_pools(pods, NOW) == {"aws-spot-l4"}
    assert stuck_pools(pods, NOW, grace_seconds=10) == {"aws-spot-l4", "onprem-t4"}
    assert unschedulable_since(pods[2]) is None
    assert stuck_pools(pods, NOW.replace(tzinfo=None)) == {"aws-spot-l4"}


def test_stuck_pool_view_offers_only_what_runs_so_the_plan_moves_on() -> None:
    pods = [
        pod("run", "homepage-recs", "onprem-t4", 1, "onprem-t4-0"),
        pod("wait", "homepage-recs", "onprem-t4", 1, conditions=unschedulable(NOW - timedelta(minutes=5))),
    ]
    stuck = stuck_pools(pods, NOW)
    assert stuck == {"onprem-t4"}
    views = views_for_model("default/homepage-recs", 1, sample_pools(), sample_nodes(), pods, stuck=stuck)
    t4 = next(v for v in views if v.name == "onprem-t4")
    assert (t4.free_gpus, t4.replica_slots) == (1, 1)
    rmd = parse_rmd(next(d for d in yaml.safe_load_all((REPO / "manifests/samples/models.yaml").read_text())
                         if d["metadata"]["name"] == "homepage-recs"))
    plan = plan_placement(rmd.spec, views, 2, current={"onprem-t4": 2})
    assert plan.replicas_by_pool() == {"onprem-t4": 1, "onprem-a100": 1}


def test_helpers() -> None:
    assert matches({}, {"a": "b"}) and matches({"a": "b"}, {"a": "b", "c": "d"}) and not matches({"a": "x"}, {"a": "b"})
    assert not node_ready({"status": {}})
    init = {"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": 1}}}],
                     "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}
    assert pod_gpus(init, "nvidia.com/gpu") == 2
    assert pod_gpus({"spec": {"containers": [{}]}}, "nvidia.com/gpu") == 0


@pytest.mark.parametrize("quantity", ["1", 1, "1.0"])
def test_quantities(quantity: Any) -> None:
    assert pod_gpus({"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": quantity}}}]}}, "nvidia.com/gpu") == 1


# ------------------------------------------------------------------------------------------ properties

NODE_NAMES = [n["metadata"]["name"] for n in sample_nodes()]
POOL_NAMES = [p.name for p in sample_pools()]
MODELS = ["a", "b", "c"]


NODE_GPUS = {n["metadata"]["name"]: int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in sample_nodes()}
POOLS, NODES = sample_pools(), sample_nodes()


@st.composite
def pods_strategy(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Pods as a scheduler leaves them: bound only to a node of their pool with room, else Pending."""
    room = dict(NODE_GPUS)
    pods = []
    for i in range(draw(st.integers(0, 14))):
        model = draw(st.sampled_from(MODELS + [None]))
        pool = draw(st.sampled_from(POOL_NAMES)) if model else None
        gpus = draw(st.integers(1, 4))
        node = None
        if draw(st.booleans()):
            fits = [n for n in NODE_NAMES if (pool is None or n.startswith(pool + "-")) and room[n] >= gpus]
            node = draw(st.sampled_from(fits)) if fits else None
        phase = draw(st.sampled_from(["Running", "Running", "Succeeded"]))
        if node and phase == "Running":
            room[node] -= gpus
        pods.append(pod(f"p{i}", model, pool, gpus, node, phase=phase))
    return pods


@settings(max_examples=150, deadline=None)
@given(pods=pods_strategy(), model=st.sampled_from(MODELS), gpus=st.integers(1, 4))
def test_views_never_offer_more_than_quota_or_nodes(pods: list[dict[str, Any]], model: str, gpus: int) -> None:
    pools, nodes = POOLS, NODES
    mine = f"default/{model}"
    others = [p for p in pods if (p["metadata"]["labels"].get("hybridrec.io/model") != model) and p["status"]["phase"] != "Succeeded"]
    for view in views_for_model(mine, gpus, pools, nodes, pods):
        pool = next(p for p in pools if p.name == view.name)
        quota_used = sum(pod_gpus(p, "nvidia.com/gpu") for p in others if p["metadata"]["labels"].get("hybridrec.io/pool") == pool.name)
        on_nodes = sum(pod_gpus(p, "nvidia.com/gpu") for p in others if str(p["spec"].get("nodeName", "")).startswith(pool.name + "-"))
        allocatable = pool_usage([pool], nodes, [])[pool.name].allocatable_gpus
        assert 0 <= view.free_gpus <= max(0, pool.spec.max_gpus - quota_used)
        assert view.free_gpus <= max(0, allocatable - on_nodes)
        assert view.replica_slots is not None and 0 <= view.replica_slots * gpus <= view.free_gpus
