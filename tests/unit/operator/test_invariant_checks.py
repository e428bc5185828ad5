"""Pure checks behind issue 9 item 4 and findings 3/4: a node whose tenancy label contradicts its pool gives the pool
no capacity and is named for a pool condition; every sensitive pod on a node not labelled private is found."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_capacity_views import pod, sample_nodes, sample_pools

from hybridrec_operator.api.models import parse_rmd
from hybridrec_operator.core.capacity import pool_usage, tenancy_mismatch, views_for_model
from hybridrec_operator.core.conditions import pool_tenancy_condition, violation_condition
from hybridrec_operator.core.placement import plan_placement
from hybridrec_operator.core.sensitivity import placement_violations


def relabel(nodes: list[dict[str, Any]], name: str, tenancy: str) -> list[dict[str, Any]]:
    for node in nodes:
        if node["metadata"]["name"] == name:
            node["metadata"]["labels"]["hybridrec.io/tenancy"] = tenancy
    return nodes


def test_sample_nodes_agree_with_their_pools() -> None:
    for pool in sample_pools():
        assert tenancy_mismatch(pool, sample_nodes()) == ()
        assert pool_tenancy_condition(pool.spec.tenancy.value, ())[:2] == ("False", "NodesAgree")


def test_a_node_relabelled_public_leaves_its_private_pool() -> None:
    """Finding 3: the pool used to report all its nodes ready after a private node was relabelled public."""
    nodes = relabel(sample_nodes(), "onprem-a100-0", "public")
    usage = pool_usage(sample_pools(), nodes, [])["onprem-a100"]
    assert usage.tenancy_mismatch == ("onprem-a100-0",)
    assert (usage.nodes, usage.ready_nodes, usage.allocatable_gpus, usage.free_gpus) == (2, 1, 4, 4)
    status, reason, message = pool_tenancy_condition("private", usage.tenancy_mismatch)
    assert (status, reason) == ("True", "NodesDisagree") and "onprem-a100-0" in message


def test_a_private_pool_selecting_public_nodes_offers_them_to_nobody() -> None:
    """Finding 4: a 'private' pool whose nodeSelector selects public nodes drew every model, which then sat Pending."""
    pools = sample_pools()
    wrong = next(p for p in pools if p.name == "onprem-t4")
    wrong = wrong.model_copy(update={"spec": wrong.spec.model_copy(update={"node_selector": {"hybridrec.io/pool": "aws-spot-l4"}})})
    pools = [wrong if p.name == "onprem-t4" else p for p in pools]
    usage = pool_usage(pools, sample_nodes(), [])["onprem-t4"]
    assert usage.nodes == 3 and usage.ready_nodes == 0 and usage.free_gpus == 0 and len(usage.tenancy_mismatch) == 3
    rmd = parse_rmd({"metadata": {"name": "account-recs", "namespace": "default"},
                     "spec": {"model": {"uri": "s3://hybridrec-models/a/", "architecture": "two-tower"},
                              "dataSensitivity": "restricted"}})
    views = views_for_model("default/account-recs", 1, pools, sample_nodes(), [])
    plan = plan_placement(rmd.spec, views, 3)
    assert "onprem-t4" not in plan.replicas_by_pool()


def node(name: str, tenancy: str | None) -> dict[str, Any]:
    labels = {} if tenancy is None else {"hybridrec.io/tenancy": tenancy}
    return {"metadata": {"name": name, "labels": labels}}


@settings(max_examples=200, deadline=None)
@given(
    tenancies=st.lists(st.sampled_from(["private", "public", "", None]), min_size=1, max_size=5),
    placements=st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["m1", "m2"]),
                                  st.sampled_from(["public", "internal", "confidential", "restricted", None])), max_size=12),
    sensitive_models=st.sets(st.sampled_from(["ns/m1", "ns/m2"])),
)
def test_every_sensitive_pod_off_private_nodes_is_found(tenancies: list[str | None], placements: list[tuple[int, str, str | None]],
                                                        sensitive_models: set[str]) -> None:
    nodes = [node(f"n{i}", t) for i, t in enumerate(tenancies)]
    pods = []
    for i, (where, model, label) in enumerate(placements):
        p = pod(f"p{i}", model, "pool", 1, f"n{where}", namespace="ns")  # n5, n6 may not exist: unknown nodes
        if label is not None:
            p["metadata"]["labels"]["hybridrec.io/sensitivity"] = label
        pods.append(p)
    found = {v.pod for v in placement_violations(pods, nodes, sensitive_models)}
    tenancy = {f"n{i}": t for i, t in enumerate(tenancies)}
    for i, (where, model, label) in enumerate(placements):
        sensitive = f"ns/{model}" in sensitive_models or label in ("confidential", "restricted")
        off_private = tenancy.get(f"n{where}") != "private"
        assert (f"p{i}" in found) == (sensitive and off_private)


def test_violation_messages_name_pod_node_and_label() -> None:
    [v] = placement_violations([pod("p", "m", "pool", 1, "n1", namespace="ns")], [node("n1", "public")], ["ns/m"])
    assert "ns/p" in v.message and "n1" in v.message and "hybridrec.io/tenancy=public" in v.message
    assert violation_condition([v.message])[:2] == ("True", "PodOnNonPrivateNode")
    assert violation_condition([])[:2] == ("False", "NoViolation")
    # Pending pods (no node) and finished pods are not violations.
    assert placement_violations([pod("q", "m", "pool", 1, None, namespace="ns")], [], ["ns/m"]) == []


def test_retraining_pods_are_checked_like_inference_pods() -> None:
    """A retraining Job's pod names its model with hybridrec.io/trained-model: it reads the model's data, so it is a
    violation on a node not labelled private too (core/training.py defines the same label)."""
    from hybridrec_operator.core import training
    from hybridrec_operator.core.sensitivity import TRAINED_MODEL_LABEL

    assert TRAINED_MODEL_LABEL == training.TRAINED_MODEL_LABEL
    trainer = {"metadata": {"name": "t", "namespace": "ns", "labels": {TRAINED_MODEL_LABEL: "m"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    [v] = placement_violations([trainer], [node("n1", "public")], ["ns/m"])
    assert (v.pod, v.model, v.node) == ("t", "m", "n1")
    assert placement_violations([trainer], [node("n1", "private")], ["ns/m"]) == []
    assert placement_violations([trainer], [node("n1", "public")], []) == []  # a public model's trainer may
