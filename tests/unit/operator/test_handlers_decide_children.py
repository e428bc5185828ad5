"""The decision's fail-safe side (issue 9 items 1, 2, 5, 7), pure: what a spec forbids is removed first and whatever
else fails, objects the model does not own are never applied over or deleted, failures become conditions and
events, and sensitive models get their NetworkPolicy (and lose it when they stop being sensitive)."""

from __future__ import annotations

import copy
from typing import Any

from test_handlers_decide import NOW, as_live, gpu_pod, rmd, snapshot

from hybridrec_operator.core import conditions
from hybridrec_operator.core.decide import ChildFailure, decide, failed_decision, settle_children


def cond(conds: list[dict[str, Any]] | None, type_: str) -> dict[str, Any]:
    return dict(conditions.get_condition(conds or [], type_) or {})


def settled(body: dict[str, Any], children: dict, **spec: Any) -> tuple[dict, dict[str, Any]]:
    """Children and model after one more reconcile with ``spec`` changes, every Deployment reported ready."""
    body = copy.deepcopy(body)
    body["spec"].update(spec)
    body["metadata"]["generation"] += 1
    decision = decide(snapshot(body, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    new_children, new_body = as_live(decision, body)
    merged = {**children, **new_children}
    for ref in [r for r in merged if any(d[1:4:2] == (r[0], r[1]) for d in decision.deletes)]:
        merged.pop(ref)
    for (kind, _), live in merged.items():
        if kind == "Deployment":
            live["status"] = {"readyReplicas": live["spec"]["replicas"]}
    return merged, new_body


def test_sensitive_model_gets_its_network_policy_first_and_loses_it_when_public() -> None:
    body = rmd("account-recs")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    assert first.applies[0]["kind"] == "NetworkPolicy"  # before the pods it fences
    assert {c["kind"] for c in first.applies} == {"NetworkPolicy", "Deployment", "Service", "PodDisruptionBudget"}
    assert first.unseen == {(c["kind"], c["metadata"]["name"]) for c in first.applies}  # looked up before applying
    children, live_body = as_live(first, body)
    lowered = copy.deepcopy(live_body)
    lowered["spec"]["dataSensitivity"] = "public"
    lowered["metadata"]["generation"] = 2
    second = decide(snapshot(lowered, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    assert ("networking.k8s.io/v1", "NetworkPolicy", "default", "account-recs", "uid-account-recs") in second.deletes


def test_a_child_name_held_by_an_object_the_model_does_not_own_is_a_conflict_never_applied_nor_deleted() -> None:
    body = rmd("trending")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    children, live_body = as_live(first, body)
    # Someone else's Service carrying our labels (a cluster without the admission policy): controlled by another uid.
    service = children[("Service", "trending")]
    service["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "theirs",
                                              "uid": "uid-theirs", "controller": True}]
    service["spec"]["selector"] = {"app": "theirs"}
    # And a stray Deployment of an older model of the same name, on a pool the plan no longer uses.
    stray = copy.deepcopy(children[("Deployment", "trending-onprem-t4")])
    stray["metadata"]["name"] = "trending-aws-spot-l4"
    stray["metadata"]["labels"]["hybridrec.io/pool"] = "aws-spot-l4"
    stray["metadata"]["ownerReferences"][0]["uid"] = "uid-of-an-older-trending"
    children[("Deployment", "trending-aws-spot-l4")] = stray
    second = decide(snapshot(live_body, children=children), now=NOW, trigger="resync", grace_seconds=60)
    assert not [c for c in second.applies if c["kind"] == "Service"]  # never applied over
    assert not [d for d in second.deletes if d[3] in ("trending", "trending-aws-spot-l4")]  # never deleted
    assert [f.reason for f in second.conflicts] == ["ChildConflict"]
    assert "Service default/trending" in second.conflicts[0].message
    conds = second.status["conditions"]
    assert cond(conds, "ChildConflict")["status"] == "True" and "Service default/trending" in cond(conds, "ChildConflict")["message"]
    assert cond(conds, "ChildrenApplied") | {} and cond(conds, "ChildrenApplied")["reason"] == "ChildConflict"
    assert [e[1] for e in second.events if e[0] == "Warning"] == ["ChildConflict"]  # one event, not two
    # Said once: the next reconcile writes nothing and posts nothing.
    _, again_body = as_live(second, live_body)
    third = decide(snapshot(again_body, children=children), now=NOW, trigger="resync", grace_seconds=60)
    assert third.status is None and third.events == []


def test_forbidden_deployments_go_first_even_when_the_spec_cannot_be_read() -> None:
    # internal data burst to a public pool; then the spec is raised to restricted AND made unreadable.
    fillers = [gpu_pod("f0", "onprem-t4-0", 2), gpu_pod("f1", "onprem-t4-1", 1),
               gpu_pod("f2", "onprem-a100-0", 4), gpu_pod("f3", "onprem-a100-1", 4)]
    body = rmd("homepage-recs")
    first = decide(snapshot(body, pods=fillers), now=NOW, trigger="created", grace_seconds=60)
    children, live_body = as_live(first, body)
    assert ("Deployment", "homepage-recs-aws-spot-l4") in children
    broken = copy.deepcopy(live_body)
    broken["spec"]["dataSensitivity"] = "confidential"  # onprem-t4 may keep it, aws-spot-l4 may not
    broken["spec"]["resources"]["gpus"] = "many"
    broken["metadata"]["generation"] = 2
    second = decide(snapshot(broken, pods=fillers, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    assert [d[3] for d in second.deletes] == ["homepage-recs-aws-spot-l4"]
    assert second.applies == []
    assert cond(second.status["conditions"], "Placed")["reason"] == "InvalidSpec"
    assert {e[1] for e in second.events} >= {"InvalidSpec", "ForbiddenDeploymentRemoved"}
    # A sensitivity nobody can read counts as restricted: onprem-t4 (no restricted data) goes too.
    broken["spec"]["dataSensitivity"] = "top-secret"
    third = failed_decision(snapshot(broken, pods=fillers, children=children), "boom", NOW, reason="ReconcileFailed")
    assert sorted(d[3] for d in third.deletes) == ["homepage-recs-aws-spot-l4", "homepage-recs-onprem-t4"]
    assert cond(third.status["conditions"], "Placed")["reason"] == "ReconcileFailed"
    assert ("Warning", "ReconcileFailed", "boom") in third.events


def test_moving_between_allowed_pools_is_make_before_break() -> None:
    body = rmd("trending")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    children, live_body = as_live(first, body)
    for (kind, _), live in children.items():
        if kind == "Deployment":
            live["status"] = {"readyReplicas": live["spec"]["replicas"]}
    old = next(name for kind, name in children if kind == "Deployment")
    moved = copy.deepcopy(live_body)
    moved["spec"]["placement"] = {"preferredPools": ["aws-spot-l4"], "allowPublicBurst": True}
    moved["metadata"]["generation"] = 2
    second = decide(snapshot(moved, children=children), now=NOW, trigger="spec changed", grace_seconds=60)
    new = {c["metadata"]["name"] for c in second.applies if c["kind"] == "Deployment"}
    assert new == {"trending-aws-spot-l4"} and old != "trending-aws-spot-l4"
    assert second.deletes == []  # the old pool is still allowed: it serves until the new replicas are ready
    more, _ = as_live(second, moved)
    children.update(more)
    third = decide(snapshot(moved, children=children), now=NOW, trigger="ready replicas changed", grace_seconds=60)
    assert third.deletes == []
    children[("Deployment", "trending-aws-spot-l4")]["status"] = {"readyReplicas": 1}
    fourth = decide(snapshot(moved, children=children), now=NOW, trigger="ready replicas changed", grace_seconds=60)
    assert [d[3] for d in fourth.deletes] == [old]


def test_apply_failures_become_conditions_and_events_once() -> None:
    message = "Service default/x could not be applied: exceeded quota: no-services, requested: services=1"
    conds = conditions.children_conditions([], [], 1, NOW)
    assert cond(conds, "ChildrenApplied")["status"] == "True"
    new, events = settle_children(conds, [ChildFailure("ApplyFailed", message)], 1, NOW)
    assert new is not None
    applied = cond(new, "ChildrenApplied")
    assert applied["status"] == "False" and applied["reason"] == "ApplyFailed" and "exceeded quota" in applied["message"]
    assert events == [("Warning", "ApplyFailed", applied["message"])]
    assert settle_children(new, [ChildFailure("ApplyFailed", message)], 1, NOW) == (None, [])
    # A forbidden Deployment that could not be deleted outranks the rest.
    worse, _ = settle_children(new, [ChildFailure("ApplyFailed", message), ChildFailure("DeleteFailed", "D: no")], 1, NOW)
    assert cond(worse, "ChildrenApplied")["reason"] == "DeleteFailed"
    healed, events = settle_children(new, [], 1, NOW)
    assert cond(healed, "ChildrenApplied")["status"] == "True" and events == []


def test_pending_writes_keep_the_previous_outcome_so_a_failing_child_does_not_flap() -> None:
    body = rmd("trending")
    first = decide(snapshot(body), now=NOW, trigger="created", grace_seconds=60)
    assert cond(first.status["conditions"], "ChildrenApplied")["status"] == "True"  # optimistic for a new model
    children, live_body = as_live(first, body)
    children.pop(("Service", "trending"))  # its apply failed
    failed, _ = settle_children(live_body["status"]["conditions"], [ChildFailure("ApplyFailed", "Service: no")], 1, NOW)
    live_body["status"]["conditions"] = failed
    again = decide(snapshot(live_body, children=children), now=NOW, trigger="resync", grace_seconds=60)
    assert [c["kind"] for c in again.applies] == ["Service"]
    assert again.status is None  # still ApplyFailed until the executor says otherwise
