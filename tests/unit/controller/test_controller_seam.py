"""The seam between the cost controller and the kopf handlers, without a cluster: the handlers load the controller,
a round's targets and verdicts are handed over (and re-planned only when something the reconcile shows changed), and
the reconcile then reports what the controller held back."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._core.intents.causes import Activity

from hybridrec_operator.controller import cost_controller, handlers
from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.controller.cost_controller import (
    ClusterSnapshot,
    ControllerConfig,
    ControllerState,
    ModelSnapshot,
    hand_over,
    plan_round,
    verdict_counts,
)
from hybridrec_operator.controller.observe import DataState, ModelObservation, Observation, PoolObservation, Reading

ROOT = Path(__file__).resolve().parents[3]
POOLS = [parse_pool(d) for d in yaml.safe_load_all((ROOT / "manifests/samples/pools.yaml").read_text()) if d]
NODES = [{**d, "status": {**d["status"], "conditions": [{"type": "Ready", "status": "True"}]}}
         for d in yaml.safe_load_all((ROOT / "hack/cluster/nodes.yaml").read_text()) if d and d["kind"] == "Node"]
CAPACITY = {"onprem-a100": 8, "onprem-t4": 4, "aws-spot-l4": 12, "gcp-ondemand-a100": 16}
CONFIG = ControllerConfig(prometheus_url="http://prom", interval_s=5, window_s=10, max_age_s=10)
T0 = 1_700_000_000.0
KEY = "shop/capped-recs"

# Two-GPU public replicas: 0.70 USD/h each on onprem-t4 (room for two), 2.40 on aws-spot-l4. 3 USD/h funds the two.
CAPPED: dict[str, Any] = {
    "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
    "metadata": {"name": "capped-recs", "namespace": "shop", "uid": "uid-capped", "generation": 1, "resourceVersion": "7"},
    "spec": {
        "model": {"uri": "s3://models/capped/", "architecture": "two-tower"},
        "dataSensitivity": "public",
        "resources": {"gpus": 2},
        "slo": {"p95LatencyMs": 50},
        "scaling": {"minReplicas": 1, "maxReplicas": 6, "targetRpsPerReplica": 20, "scaleDownStabilizationSeconds": 20},
        "placement": {"forbiddenPools": ["onprem-a100", "gcp-ondemand-a100"]},
        "budget": {"maxPerHour": 3, "currency": "USD"},
    },
    "status": {},
}


def cluster(current: dict[str, int], *bodies: dict[str, Any]) -> ClusterSnapshot:
    models = [ModelSnapshot(rmd=parse_rmd(b), current=current, ready=dict(current), body=b) for b in bodies or (CAPPED,)]
    return ClusterSnapshot(models=models, pools=POOLS, capacity_gpus=CAPACITY)


def busy(rps: float, pools: dict[str, int]) -> Observation:
    per_pool = {p: PoolObservation(pool=p, expected=True, state=DataState.OK, request_rate=Reading.ok(rps / len(pools)),
                                   ready_servers=Reading.ok(n), targets=n, targets_up=n, sample_age_seconds=1.0)
                for p, n in pools.items()}
    model = ModelObservation("shop", "capped-recs", DataState.OK, "fresh", request_rate=Reading.ok(rps),
                             p95_seconds=Reading.ok(0.045), ready_servers=Reading.ok(sum(pools.values())), pools=per_pool)
    return Observation(time=T0, models={("shop", "capped-recs"): model})


class Seam:
    """The three dicts the handlers read, as plain data."""

    def __init__(self) -> None:
        self.targets: dict[str, dict[str, int]] = {}
        self.verdicts: dict[str, handlers.ControllerVerdict] = {}
        self.slo: dict[str, tuple[bool | None, str, str]] = {}

    def hand_over(self, result: cost_controller.RoundResult, live: set[str] | None = None) -> list[str]:
        return hand_over(result.outcomes, {KEY} if live is None else live, self.targets, self.verdicts, self.slo)


def test_the_handlers_module_loads_the_controller_and_stops_it_first() -> None:
    registry = kopf.get_default_registry()
    startup = [h.id for h in registry._activities.get_handlers(activity=Activity.STARTUP)]  # noqa: SLF001
    cleanup = [h.id for h in registry._activities.get_handlers(activity=Activity.CLEANUP)]  # noqa: SLF001
    # Registered before the handlers' own: its loop stops before the runtime it reads is torn down.
    assert startup.index("start_cost_controller") < startup.index("startup")
    assert cleanup.index("stop_cost_controller") < cleanup.index("cleanup")


def test_the_controller_stays_off_without_a_prometheus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDREC_PROMETHEUS_URL", raising=False)
    memo = kopf.Memo()
    asyncio.run(cost_controller.start_cost_controller(memo=memo))
    assert "cost_controller_task" not in memo and cost_controller.CONTROLLER is None


def test_a_budget_cut_round_reaches_the_reconcile_as_a_verdict_and_the_conditions_tell_it() -> None:
    seam = Seam()
    result, state = plan_round(cluster({"onprem-t4": 2}), busy(70, {"onprem-t4": 2}), ControllerState(), T0, CONFIG)
    out = result.outcomes[KEY]
    assert out.budget_limited and out.shortfall > 0 and out.wanted == 2 + out.shortfall
    assert seam.hand_over(result) == [KEY]  # first verdict: re-plan so the conditions change now
    assert seam.targets[KEY] == {"onprem-t4": 2}
    assert seam.verdicts[KEY] == handlers.ControllerVerdict(out.wanted, out.shortfall, True, out.message)
    assert "forecast 70 RPS" in out.message  # the planner words the demand it plans for as a forecast

    snap = handlers.ModelSnapshot(key=KEY, body=CAPPED, pools=POOLS, nodes=NODES, pods=[], own_pods=[], children={},
                                  target=seam.targets[KEY], verdict=seam.verdicts[KEY])
    decision = handlers.decide(snap, now=datetime(2025, 1, 1, tzinfo=UTC), trigger=handlers.CONTROLLER_TRIGGER, grace_seconds=60)
    assert decision.status is not None
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    assert conditions["BudgetLimited"]["status"] == "True" and conditions["Placed"]["reason"] == "BudgetLimited"
    assert conditions["CapacityShortfall"]["status"] == "False"
    assert decision.status["lastDecision"]["trigger"] == "cost-controller"
    assert decision.status["lastDecision"]["message"] == out.message

    # Same counts next round (the message's numbers move): stored, but nothing to re-plan.
    result, state = plan_round(cluster({"onprem-t4": 2}), busy(71, {"onprem-t4": 2}), state, T0 + 5, CONFIG)
    assert result.outcomes[KEY].verdict() != seam.verdicts[KEY]
    assert seam.hand_over(result) == []
    assert seam.verdicts[KEY].message == result.outcomes[KEY].message

    # Prometheus down: the round holds; target and verdict stay as they were, nothing is re-planned.
    kept = copy.deepcopy((seam.targets, seam.verdicts))
    result, state = plan_round(cluster({"onprem-t4": 2}), None, state, T0 + 10, CONFIG, prometheus_error="down")
    assert result.outcomes[KEY].verdict() is None
    assert seam.hand_over(result) == [] and (seam.targets, seam.verdicts) == kept

    # Demand falls to what the budget funds; the stabilisation window lowers the wanted count in steps. Exactly the
    # rounds that change what the conditions say (counts, or the SLOAtRisk verdict) re-plan; the target stays.
    def shown() -> tuple[object, ...]:
        return verdict_counts(seam.verdicts[KEY]), seam.slo[KEY][:2]

    before = shown()
    steps = 0
    for t in range(15, 50, 5):
        result, state = plan_round(cluster({"onprem-t4": 2}), busy(20, {"onprem-t4": 2}), state, T0 + t, CONFIG)
        replan = seam.hand_over(result)
        assert seam.targets[KEY] == {"onprem-t4": 2}
        assert replan == ([KEY] if shown() != before else []), (t, before, shown())
        steps += shown()[0] != before[0]
        before = shown()
    assert before[0] == (2, 0, False) and steps >= 1

    # The model is deleted: everything the handlers would read about it goes.
    seam.slo[KEY] = (False, "CapacityMeetsDemand", "fine")
    assert seam.hand_over(cost_controller.RoundResult(T0 + 40, {}, None, 0.0), live=set()) == []
    assert seam.targets == {} and seam.verdicts == {} and seam.slo == {}


def test_a_changed_target_is_re_planned_even_when_the_verdict_is_the_same() -> None:
    seam = Seam()
    result, state = plan_round(cluster({"onprem-t4": 1}), busy(30, {"onprem-t4": 1}), ControllerState(), T0, CONFIG)
    assert result.outcomes[KEY].changed
    assert seam.hand_over(result) == [KEY] and seam.targets[KEY] == {"onprem-t4": 2}
    seam.verdicts[KEY] = result.outcomes[KEY].verdict()  # type: ignore[assignment]
    seam.targets[KEY] = {"onprem-t4": 1}  # e.g. seeded from what ran at start-up
    assert seam.hand_over(result) == [KEY]
