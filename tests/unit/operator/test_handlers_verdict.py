"""The cost controller's verdict in the reconcile (core.decide.decide, Runtime.record), without a cluster.

A controller target that was already cut (budget cap, no room) must not read as "every wanted replica placed": the
verdict restores the wanted count, so the conditions, the shortfall metric and lastDecision tell the truth.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.controller import metrics
from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.leader import AlwaysLeader
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.core.decide import (
    CONTROLLER_TRIGGER,
    ControllerVerdict,
    ModelDecision,
    ModelSnapshot,
    apply_verdict,
    decide,
)

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
POOLS = [parse_pool(d) for d in yaml.safe_load_all((ROOT / "manifests/samples/pools.yaml").read_text())
         if d and d["kind"] == "ComputePool"]


def _ready(doc: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(doc)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


NODES = [_ready(d) for d in yaml.safe_load_all((ROOT / "hack/cluster/nodes.yaml").read_text()) if d and d["kind"] == "Node"]


def body(name: str, sensitivity: str, *, gpus: int, budget: float | None = None, **scaling: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": f"s3://models/{name}/", "architecture": "two-tower"},
        "dataSensitivity": sensitivity,
        "resources": {"gpus": gpus},
        "slo": {"p95LatencyMs": 50},
        "scaling": {"minReplicas": 1, "maxReplicas": 6, "targetRpsPerReplica": 20, **scaling},
        "placement": {"forbiddenPools": ["onprem-a100", "gcp-ondemand-a100"] if sensitivity == "public" else []},
    }
    if budget is not None:
        spec["budget"] = {"maxPerHour": budget, "currency": "USD"}
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1, "resourceVersion": "9"},
            "spec": spec, "status": {}}


# Two-GPU replicas at 0.70 USD/h on onprem-t4 and 2.40 on aws-spot-l4: a 3 USD/h budget funds the two t4 replicas only.
CAPPED = body("capped-recs", "public", gpus=2, budget=3.0)
# Restricted data runs on onprem-a100 only: 8 GPUs, so at most 8 one-GPU replicas.
RESTRICTED = body("account-recs", "restricted", gpus=1, maxReplicas=10)


def snap(rmd: dict[str, Any], target: dict[str, int] | None, verdict: ControllerVerdict | None,
         children: dict[tuple[str, str], Any] | None = None) -> ModelSnapshot:
    return ModelSnapshot(key=f"shop/{rmd['metadata']['name']}", body=rmd, pools=POOLS, nodes=NODES, pods=[], own_pods=[],
                         children=children or {}, target=target, verdict=verdict)


def conds(decision: ModelDecision) -> dict[str, dict[str, Any]]:
    assert decision.status is not None
    return {c["type"]: c for c in decision.status["conditions"]}


def shortfall_metric(name: str, sensitivity: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("hybridrec_capacity_shortfall_replicas",
                                             {"namespace": "shop", "model": name, "sensitivity": sensitivity})


@pytest.fixture
def runtime() -> Runtime:
    """A runtime for ``record`` only: no API server, no loop, no workers."""
    return Runtime(config=OperatorConfig(), kube=None, indices={}, loop=None, executor=None,  # type: ignore[arg-type]
                   seam=ControlSeam(), leader=AlwaysLeader(), identity="unit")


def test_budget_held_back_replicas_make_the_model_budget_limited_not_fully_placed(runtime: Runtime) -> None:
    verdict = ControllerVerdict(wanted=5, shortfall=3, budget_limited=True, message="budget 3.00 USD/h reached; 3 replicas short")
    decision = decide(snap(CAPPED, {"onprem-t4": 2}, verdict), now=NOW, trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    assert decision.status is not None and decision.status["replicas"] == 2
    assert {p["pool"]: p["desired"] for p in decision.status["placements"]} == {"onprem-t4": 2}  # the target, as given
    c = conds(decision)
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "BudgetLimited")
    assert "5 wanted" in c["Placed"]["message"] and "3 replicas held back for the budget of 3.00 USD/h" in c["Placed"]["message"]
    assert (c["BudgetLimited"]["status"], c["BudgetLimited"]["reason"]) == ("True", "MaxPerHourReached")
    assert "holds back 3 replicas" in c["BudgetLimited"]["message"]
    assert (c["CapacityShortfall"]["status"], c["CapacityShortfall"]["reason"]) == ("False", "CapacitySufficient")
    assert ("Warning", "BudgetLimited") in [(t, r) for t, r, _ in decision.events]
    assert decision.status["lastDecision"] == {"time": "2025-01-01T12:00:00Z", "trigger": CONTROLLER_TRIGGER,
                                               "message": verdict.message}
    runtime.record("shop/capped-recs", CAPPED, decision)
    assert shortfall_metric("capped-recs", "public") == 0  # held back by the budget: not a capacity shortfall
    assert "shop/capped-recs" not in runtime.shortfall


def test_replicas_held_back_for_room_are_a_capacity_shortfall_in_conditions_and_metric(runtime: Runtime) -> None:
    verdict = ControllerVerdict(wanted=10, shortfall=2, budget_limited=False, message="private pool onprem-a100 full; 2 replicas short")
    decision = decide(snap(RESTRICTED, {"onprem-a100": 8}, verdict), now=NOW, trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    assert decision.status is not None and decision.status["replicas"] == 8 and decision.status["publicReplicas"] == 0
    c = conds(decision)
    assert (c["CapacityShortfall"]["status"], c["CapacityShortfall"]["reason"]) == ("True", "InsufficientCapacity")
    assert c["CapacityShortfall"]["message"].startswith("2 replicas of 10 cannot be placed")
    assert (c["Placed"]["status"], c["Placed"]["reason"]) == ("False", "CapacityShortfall")
    assert c["BudgetLimited"]["reason"] == "NoBudget"
    runtime.record("shop/account-recs", RESTRICTED, decision)
    assert shortfall_metric("account-recs", "restricted") == 2
    assert "shop/account-recs" in runtime.shortfall

    # The next round finds room for all: the same writer brings the metric and the conditions back to zero.
    covered = ControllerVerdict(wanted=8, shortfall=0, budget_limited=False, message="demand covered")
    again = decide(snap(RESTRICTED, {"onprem-a100": 8}, covered), now=NOW, trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    assert conds(again)["CapacityShortfall"]["status"] == "False" and conds(again)["Placed"]["reason"] == "AllReplicasPlaced"
    runtime.record("shop/account-recs", RESTRICTED, again)
    assert shortfall_metric("account-recs", "restricted") == 0
    assert "shop/account-recs" not in runtime.shortfall


def test_without_a_verdict_the_target_is_taken_at_face_value() -> None:
    # Right after a restart the controller's target is what runs and it has not judged the model yet.
    decision = decide(snap(RESTRICTED, {"onprem-a100": 3}, None), now=NOW, trigger="operator start", grace_seconds=60)
    c = conds(decision)
    assert c["Placed"]["reason"] == "AllReplicasPlaced" and c["CapacityShortfall"]["status"] == "False"
    # A verdict without a target is not read: the greedy plan of minReplicas owes nothing to the controller.
    orphan = ControllerVerdict(wanted=6, shortfall=3, budget_limited=False, message="stale")
    plain = decide(snap(RESTRICTED, None, orphan), now=NOW, trigger="created", grace_seconds=60)
    assert conds(plain)["Placed"]["reason"] == "AllReplicasPlaced" and plain.status["lastDecision"]["message"] != "stale"


def test_a_spec_edited_after_the_round_bounds_the_wanted_count() -> None:
    verdict = ControllerVerdict(wanted=6, shortfall=2, budget_limited=False, message="2 replicas short")
    rmd = parse_rmd(RESTRICTED).spec
    plan = decide(snap(RESTRICTED, {"onprem-a100": 4}, None), now=NOW, trigger="x", grace_seconds=60).plan
    assert plan is not None and plan.placed == 4 and plan.shortfall == 0
    assert apply_verdict(plan, verdict, rmd).wanted == 6
    lowered = rmd.model_copy(update={"scaling": rmd.scaling.model_copy(update={"max_replicas": 5})})
    assert (apply_verdict(plan, verdict, lowered).wanted, apply_verdict(plan, verdict, lowered).shortfall) == (5, 1)
    pinned = rmd.model_copy(update={"replicas": 4})
    assert apply_verdict(plan, verdict, pinned) is plan  # pinned to what runs: nothing is held back
    assert apply_verdict(plan, ControllerVerdict(4, 0, False, "ok"), rmd) is plan


def test_what_the_placement_itself_misses_is_not_counted_twice() -> None:
    # The target asks for 9 a100 replicas but only 8 fit; the controller wanted 10: 2 short in all, not 3.
    rmd = parse_rmd(RESTRICTED).spec
    plan = decide(snap(RESTRICTED, {"onprem-a100": 9}, None), now=NOW, trigger="x", grace_seconds=60).plan
    assert plan is not None and (plan.wanted, plan.placed, plan.shortfall) == (9, 8, 1)
    merged = apply_verdict(plan, ControllerVerdict(10, 1, True, "budget"), rmd)
    assert (merged.wanted, merged.shortfall) == (10, 2)
    assert merged.budget_shortfall == 0 and not merged.budget_limited  # no budget in the spec: never budget-limited


def test_last_decision_names_the_controller_and_says_when_the_target_could_not_be_followed() -> None:
    verdict = ControllerVerdict(wanted=9, shortfall=0, budget_limited=False, message="forecast 180 RPS needs 9 replicas")
    short = decide(snap(RESTRICTED, {"onprem-a100": 9}, verdict), now=NOW, trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    message = short.status["lastDecision"]["message"]
    assert message.startswith(verdict.message + "; placed instead: ") and "8 on onprem-a100" in message
    other = decide(snap(RESTRICTED, {"onprem-a100": 9}, verdict), now=NOW, trigger="resync", grace_seconds=60)
    assert other.status["lastDecision"]["trigger"] == "resync" and other.status["lastDecision"]["message"] == other.plan.summary


def test_a_changed_verdict_alone_rewrites_status_and_an_unchanged_one_writes_nothing() -> None:
    first_verdict = ControllerVerdict(wanted=10, shortfall=2, budget_limited=False, message="2 short")
    first = decide(snap(RESTRICTED, {"onprem-a100": 8}, first_verdict), now=NOW, trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    live = copy.deepcopy(RESTRICTED)
    live["status"] = first.status
    children = {(c["kind"], c["metadata"]["name"]): c for c in first.applies}
    reworded = dataclasses.replace(first_verdict, message="2 short, still")
    same = decide(snap(live, {"onprem-a100": 8}, reworded, children), now=NOW, trigger="resync", grace_seconds=60)
    assert same.status is None and same.applies == [] and same.events == []
    fewer = decide(snap(live, {"onprem-a100": 8}, ControllerVerdict(9, 1, False, "1 short"), children), now=NOW,
                   trigger=CONTROLLER_TRIGGER, grace_seconds=60)
    assert fewer.applies == [] and fewer.status is not None  # same replicas, truer status
    assert conds(fewer)["CapacityShortfall"]["message"].startswith("1 replica of 9")
    assert fewer.status["lastDecision"] == first.status["lastDecision"]  # no placement change: no new decision
