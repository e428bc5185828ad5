"""A PodDisruptionBudget only for a model that can run more than one replica (issue 11 item 4): with one pod,
``maxUnavailable: 1`` lets every eviction through, so the budget protects nothing and costs an object and a write per
model. A PDB the model no longer wants is deleted, and only when this model owns it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hybridrec_operator.api.models import parse_rmd
from hybridrec_operator.core.decide import decide, settle_children
from hybridrec_operator.core.render import build_children, max_replicas, wants_pdb
from test_handlers_decide import NOW, POOLS, as_live, rmd, snapshot


def scaling(min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {"minReplicas": min_replicas, "maxReplicas": max_replicas}


@pytest.mark.parametrize(("spec", "most", "pdb"), [
    ({"replicas": 1, "scaling": scaling(1, 4)}, 1, False),  # pinned: the controller never adds a second pod
    ({"replicas": 3, "scaling": scaling(1, 4)}, 3, True),
    ({"scaling": scaling(1, 1)}, 1, False),  # autoscaled, but never past one
    ({"scaling": scaling(0, 1)}, 1, False),
    ({"scaling": scaling(1, 2)}, 2, True),  # one now, maybe two later: no churn when it scales
])
def test_pdb_only_when_the_model_can_run_more_than_one_replica(spec: dict[str, Any], most: int, pdb: bool) -> None:
    body = rmd("trending")
    body["spec"].pop("replicas", None)
    body["spec"].update(spec)
    model = parse_rmd(body)
    assert max_replicas(model) == most
    assert wants_pdb(model) is pdb
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    assert ("PodDisruptionBudget" in {c["kind"] for c in first.applies}) is pdb
    assert ("PodDisruptionBudget" in {c["kind"] for c in first.desired}) is pdb


def test_build_children_leaves_the_pdb_out_for_a_one_replica_model() -> None:
    first = decide(snapshot(rmd("trending", replicas=1)), now=NOW, trigger="created", grace_seconds=60)
    assert first.plan is not None and first.plan.placed == 1
    model = parse_rmd(rmd("trending", replicas=1))
    kinds = [c["kind"] for c in build_children(model, first.plan, {p.name: p for p in POOLS})]
    assert kinds == ["Deployment", "Service"]


def test_a_pdb_no_longer_wanted_is_deleted_with_a_uid_precondition_then_nothing_more() -> None:
    body = rmd("trending")  # scaling 1..6: gets a PDB
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    children, live_body = as_live(first, body)
    assert ("PodDisruptionBudget", "trending") in children
    pinned = copy.deepcopy(live_body)
    pinned["spec"]["replicas"] = 1
    pinned["metadata"]["generation"] = 2
    second = decide(snapshot(pinned, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    assert ("policy/v1", "PodDisruptionBudget", "default", "trending", "uid-trending") in second.deletes
    assert not [c for c in second.applies if c["kind"] in ("PodDisruptionBudget", "Service")]
    # Once it is gone, the model is settled: no delete, no apply, no status write.
    after = {ref: live for ref, live in children.items() if ref != ("PodDisruptionBudget", "trending")}
    _, settled_body = as_live(second, pinned)
    # The executor settles ChildrenApplied after the writes (they were pending when the decision was made).
    conds, _ = settle_children(settled_body["status"]["conditions"], [], 2, NOW)
    settled_body["status"]["conditions"] = conds or settled_body["status"]["conditions"]
    third = decide(snapshot(settled_body, children=after), now=NOW, trigger="resync", grace_seconds=60)
    assert third.deletes == [] and third.applies == [] and third.status is None and third.events == []


def test_a_pdb_the_model_does_not_own_is_never_deleted() -> None:
    body = rmd("trending", replicas=1)
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    children, live_body = as_live(first, body)
    # A user's PDB of the model's name (carrying our labels, owned by something else), and one without any owner.
    for owner in ([{"apiVersion": "v1", "kind": "ConfigMap", "name": "theirs", "uid": "uid-theirs", "controller": True}], []):
        theirs = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": "trending", "namespace": "default", "uid": "uid-their-pdb",
                               "labels": {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/model": "trending"},
                               "ownerReferences": owner},
                  "spec": {"minAvailable": 1}}
        again = decide(snapshot(live_body, children={**children, ("PodDisruptionBudget", "trending"): theirs}),
                       now=NOW, trigger="resync", grace_seconds=60)
        assert again.deletes == [] and again.applies == [] and again.conflicts == []
