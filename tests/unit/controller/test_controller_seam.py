"""The seam between the cost controller and the reconciler, without a cluster: one startup builds both around one
ControlSeam and stops the controller first, a round's targets and verdicts are handed over (and re-planned only when
something the reconcile shows changed), and the reconcile then reports what the controller held back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf._core.intents.causes import Activity

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.controller import app, handlers
from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.leader import AlwaysLeader
from hybridrec_operator.controller.observe import DataState, ModelObservation, Observation, PoolObservation, Reading
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.core import decide
from hybridrec_operator.core.cost_handover import verdict_counts
from hybridrec_operator.core.cost_round import plan_round
from hybridrec_operator.core.cost_types import ClusterSnapshot, ControllerConfig, ControllerState, ModelSnapshot, RoundResult

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


class Seam(ControlSeam):
    """The seam the reconcile reads, handing a round over for the one model of these tests."""

    def hand_over(self, result: RoundResult, live: set[str] | None = None) -> list[str]:
        return self.publish(result.outcomes, {KEY} if live is None else live)


def test_one_startup_builds_both_sides_and_stopping_ends_the_controller_loop_first() -> None:
    registry = kopf.get_default_registry()
    startup = [h.id for h in registry._activities.get_handlers(activity=Activity.STARTUP)]  # noqa: SLF001
    cleanup = [h.id for h in registry._activities.get_handlers(activity=Activity.CLEANUP)]  # noqa: SLF001
    # One startup builds the seam, the runtime and the controller (the seam is handed to both); one cleanup stops them.
    assert (startup, cleanup) == (["startup"], ["cleanup"]) and handlers.startup and handlers.cleanup

    # The controller's loop stops before the runtime it reads is torn down.
    async def scenario() -> list[str]:
        stopped: list[str] = []

        async def forever(name: str) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                stopped.append(name)

        seam = ControlSeam()
        rt = Runtime(config=OperatorConfig(), kube=None, indices={}, loop=asyncio.get_running_loop(),  # type: ignore[arg-type]
                     executor=concurrent.futures.ThreadPoolExecutor(1), seam=seam, leader=AlwaysLeader(), identity="unit")
        seam.install(rt.request_replan)
        rt.tasks = [asyncio.create_task(forever("worker")), asyncio.create_task(forever("resync"))]
        op = app.Operator(runtime=rt, seam=seam, leader=AlwaysLeader(), cost_task=asyncio.create_task(forever("cost")))
        await asyncio.sleep(0)
        await op.stop()
        assert not seam.request_replan(KEY)  # nothing queues into a stopped runtime
        return stopped

    assert asyncio.run(scenario()) == ["cost", "worker", "resync"]


def test_the_controller_stays_off_without_a_prometheus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDREC_PROMETHEUS_URL", raising=False)
    seam = ControlSeam()
    task = asyncio.run(app._start_cost_controller(None, seam, AlwaysLeader()))  # type: ignore[arg-type]  # noqa: SLF001
    assert task is None and seam.targets == {}


def test_a_budget_cut_round_reaches_the_reconcile_as_a_verdict_and_the_conditions_tell_it() -> None:
    seam = Seam()
    result, state = plan_round(cluster({"onprem-t4": 2}), busy(70, {"onprem-t4": 2}), ControllerState(), T0, CONFIG)
    out = result.outcomes[KEY]
    assert out.budget_limited and out.shortfall > 0 and out.wanted == 2 + out.shortfall
    assert seam.hand_over(result) == [KEY]  # first verdict: re-plan so the conditions change now
    assert seam.targets[KEY] == {"onprem-t4": 2}
    assert seam.verdicts[KEY] == decide.ControllerVerdict(out.wanted, out.shortfall, True, out.message)
    assert "forecast 70 RPS" in out.message  # the planner words the demand it plans for as a forecast

    snap = decide.ModelSnapshot(key=KEY, body=CAPPED, pools=POOLS, nodes=NODES, pods=[], own_pods=[], children={},
                                  target=seam.targets[KEY], verdict=seam.verdicts[KEY])
    decision = decide.decide(snap, now=datetime(2025, 1, 1, tzinfo=UTC), trigger=decide.CONTROLLER_TRIGGER, grace_seconds=60)
    assert decision.status is not None
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    assert conditions["BudgetLimited"]["status"] == "True" and conditions["Placed"]["reason"] == "BudgetLimited"
    assert conditions["CapacityShortfall"]["status"] == "False"
    assert decision.status["lastDecision"]["trigger"] == "cost-controller"
    assert decision.status["lastDecision"]["message"] == out.message

    # Same counts next round (the message's numbers move): stored, but nothing to re-plan. (The forecast's level is
    # the median of the last minute, so the rise must move it by more than a rounding step: 70 -> 74 gives 72.)
    result, state = plan_round(cluster({"onprem-t4": 2}), busy(74, {"onprem-t4": 2}), state, T0 + 5, CONFIG)
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
    assert seam.hand_over(RoundResult(T0 + 40, {}, None, 0.0), live=set()) == []
    assert seam.targets == {} and seam.verdicts == {} and seam.slo == {}


def test_a_changed_target_is_re_planned_even_when_the_verdict_is_the_same() -> None:
    seam = Seam()
    result, state = plan_round(cluster({"onprem-t4": 1}), busy(30, {"onprem-t4": 1}), ControllerState(), T0, CONFIG)
    assert result.outcomes[KEY].changed
    assert seam.hand_over(result) == [KEY] and seam.targets[KEY] == {"onprem-t4": 2}
    seam.verdicts[KEY] = result.outcomes[KEY].verdict()  # type: ignore[assignment]
    seam.targets[KEY] = {"onprem-t4": 1}  # e.g. seeded from what ran at start-up
    assert seam.hand_over(result) == [KEY]
