"""Status conditions: transition times, and what each plan means for Ready/Placed/CapacityShortfall/BudgetLimited/SLOAtRisk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hybridrec_operator.api.models import Condition, RecModelDeploymentSpec
from hybridrec_operator.core.conditions import RMD_CONDITION_TYPES, as_status, get_condition, rmd_conditions, set_condition, timestamp
from hybridrec_operator.core.placement import PoolView, plan_placement

from test_placement_plan import model_spec, sample_views

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def by_type(conditions: list[dict]) -> dict[str, dict]:
    return {c["type"]: c for c in conditions}


def test_timestamp_format() -> None:
    assert timestamp(T0) == "2030-01-01T12:00:00Z"
    assert timestamp(datetime(2030, 1, 1, 13, 0, 0, 123456)) == "2030-01-01T13:00:00Z"
    assert timestamp("2030-01-01T00:00:00Z") == "2030-01-01T00:00:00Z"


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = set_condition([], "Ready", True, "ReplicasReady", "All ready.", 1, T0)
    assert first == [{"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "All ready.",
                      "lastTransitionTime": "2030-01-01T12:00:00Z", "observedGeneration": 1}]
    same = set_condition(first, "Ready", "True", "ReplicasReady", "Still ready.", 2, T1)
    assert same[0]["lastTransitionTime"] == "2030-01-01T12:00:00Z"
    assert same[0]["message"] == "Still ready." and same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Ready", False, "ReplicasNotReady", "1 of 2.", 2, T1)
    assert flipped[0]["lastTransitionTime"] == "2030-01-01T12:05:00Z"
    assert first[0]["message"] == "All ready."  # inputs are not mutated


def test_set_condition_keeps_others_in_place() -> None:
    conditions = set_condition([], "A", True, "R", "m", None, T0)
    conditions = set_condition(conditions, "B", None, "R", "m", None, T0)
    conditions = set_condition(conditions, "A", False, "R", "m", None, T1)
    assert [(c["type"], c["status"]) for c in conditions] == [("A", "False"), ("B", "Unknown")]
    assert "observedGeneration" not in conditions[0]


def test_as_status_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        as_status("yes")


def conditions_for(spec: RecModelDeploymentSpec, views: list[PoolView], wanted: int, ready: int, **kw: object) -> dict[str, dict]:
    plan = plan_placement(spec, views, wanted)
    result = rmd_conditions(plan, ready, 3, T0, [], **kw)  # type: ignore[arg-type]
    assert [c["type"] for c in result] == list(RMD_CONDITION_TYPES)
    for condition in result:
        Condition.model_validate(condition)  # CamelCase reasons, valid statuses: what the CRD accepts
        assert condition["message"].endswith(".") and not condition["message"][0].islower()
        assert condition["observedGeneration"] == 3
    return by_type(result)


def test_all_placed_and_ready() -> None:
    c = conditions_for(model_spec("internal", burst=True), sample_views(), 2, 2)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "ReplicasReady")
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("True", "AllReplicasPlaced")
    assert "2 on onprem-t4" in c["Placed"]["message"]
    assert (c["CapacityShortfall"]["status"], c["BudgetLimited"]["status"]) == ("False", "False")
    assert c["BudgetLimited"]["reason"] == "NoBudget"
    assert (c["SLOAtRisk"]["status"], c["SLOAtRisk"]["reason"]) == ("Unknown", "AwaitingMetrics")


def test_not_all_ready() -> None:
    c = conditions_for(model_spec("public"), sample_views(), 3, 1)
    assert (c["Ready"]["status"], c["Ready"]["reason"], c["Ready"]["message"]) == ("False", "ReplicasNotReady", "1 of 3 placed replicas are ready.")


def test_capacity_shortfall() -> None:
    c = conditions_for(model_spec("restricted"), sample_views(), 10, 8)
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "CapacityShortfall")
    assert (c["CapacityShortfall"]["status"], c["CapacityShortfall"]["reason"]) == ("True", "InsufficientCapacity")
    assert "2 replicas of 10 cannot be placed" in c["CapacityShortfall"]["message"]
    assert c["Ready"]["status"] == "True" and "(10 wanted)" in c["Ready"]["message"]


def test_budget_limited() -> None:
    c = conditions_for(model_spec("internal", burst=True, budget={"maxPerHour": 1.0}), sample_views(), 4, 2)
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "BudgetLimited")
    assert (c["BudgetLimited"]["status"], c["BudgetLimited"]["reason"]) == ("True", "MaxPerHourReached")
    assert "1.00 USD/h" in c["BudgetLimited"]["message"] and "holds back 2 replicas" in c["BudgetLimited"]["message"]
    assert c["CapacityShortfall"]["status"] == "False"


def test_within_budget() -> None:
    c = conditions_for(model_spec("public", budget={"maxPerHour": 5.0}), sample_views(), 1, 1)
    assert (c["BudgetLimited"]["status"], c["BudgetLimited"]["reason"]) == ("False", "WithinBudget")
    assert "0.35 USD/h of a 5.00 USD/h budget" in c["BudgetLimited"]["message"]


def test_no_allowed_pool() -> None:
    views = [v for v in sample_views() if v.spec.tenancy == "public"]
    c = conditions_for(model_spec("restricted"), views, 1, 0)
    assert (c["Placed"]["reason"], c["CapacityShortfall"]["reason"], c["Ready"]["reason"]) == (
        "NoAllowedPool", "NoAllowedPool", "NoReplicasPlaced",
    )
    assert "aws-spot-l4: restricted data never runs on a public pool" in c["CapacityShortfall"]["message"] or \
        "aws-spot-l4: pool does not allow restricted data" in c["CapacityShortfall"]["message"]


def test_preferred_pool_not_found() -> None:
    c = conditions_for(model_spec("public", preferred=["typo-pool"]), sample_views(), 1, 1)
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "PreferredPoolNotFound")
    assert c["Placed"]["message"].startswith("Preferred pool typo-pool does not exist.")


def test_scaled_to_zero() -> None:
    c = conditions_for(model_spec("public"), sample_views(), 0, 0)
    assert (c["Ready"]["reason"], c["Placed"]["reason"]) == ("ScaledToZero", "NothingToPlace")


def test_slo_reported_by_the_cost_controller() -> None:
    c = conditions_for(model_spec("public"), sample_views(), 1, 1, slo_at_risk=(True, "P95AboveTarget", "p95 is 130 ms, above 100 ms."))
    assert (c["SLOAtRisk"]["status"], c["SLOAtRisk"]["reason"]) == ("True", "P95AboveTarget")


def test_spec_error() -> None:
    result = by_type(rmd_conditions(None, 2, 4, T0, [], spec_error="Preferred pools overlap."))
    assert (result["Placed"]["status"], result["Placed"]["reason"], result["Placed"]["message"]) == (
        "False", "InvalidSpec", "Preferred pools overlap.",
    )
    assert result["Ready"]["status"] == "Unknown"


def test_previous_conditions_keep_times_and_foreign_types() -> None:
    spec = model_spec("public")
    plan = plan_placement(spec, sample_views(), 1)
    previous = rmd_conditions(plan, 1, 1, T0, None) + [{"type": "Custom", "status": "True", "reason": "X", "message": "x"}]
    again = rmd_conditions(plan, 0, 2, T1, previous)
    assert get_condition(again, "Placed")["lastTransitionTime"] == "2030-01-01T12:00:00Z"  # type: ignore[index]
    assert get_condition(again, "Ready")["lastTransitionTime"] == "2030-01-01T12:05:00Z"  # type: ignore[index]
    assert again[-1]["type"] == "Custom" and get_condition(again, "Missing") is None
