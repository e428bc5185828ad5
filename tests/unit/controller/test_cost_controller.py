"""The cost controller's round, with the cluster and Prometheus replaced by plain data (the real planner runs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.controller import metrics as m
from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.controller.cost_metrics import MetricsPublisher, metric_values
from hybridrec_operator.core.cost_handover import events_for, observed_condition_patch
from hybridrec_operator.core.cost_round import plan_round
from hybridrec_operator.core.cost_types import (
    ClusterSnapshot,
    ControllerConfig,
    ControllerState,
    ModelSnapshot,
    RoundResult,
    build_snapshot,
)
from hybridrec_operator.controller.observe import MISSING, DataState, ModelObservation, Observation, PoolObservation, Reading

ROOT = Path(__file__).resolve().parents[3]
POOLS = [parse_pool(d) for d in yaml.safe_load_all((ROOT / "manifests/samples/pools.yaml").read_text()) if d]
CAPACITY = {"onprem-a100": 8, "onprem-t4": 4, "aws-spot-l4": 12, "gcp-ondemand-a100": 16}
CONFIG = ControllerConfig(prometheus_url="http://prom", interval_s=5, window_s=10, max_age_s=10)
T0 = 1_700_000_000.0


def rmd(name: str, sensitivity: str = "public", *, gpus: int = 2, forbid: tuple[str, ...] = ("onprem-a100", "gcp-ondemand-a100"),
        stabilisation: int = 20, **scaling: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1, "resourceVersion": "7"},
        "spec": {
            "model": {"uri": f"s3://models/{name}/", "architecture": "two-tower"},
            "dataSensitivity": sensitivity,
            "resources": {"gpus": gpus},
            "slo": {"p95LatencyMs": 50},
            "scaling": {"minReplicas": 1, "maxReplicas": 6, "targetRpsPerReplica": 20, "scaleDownStabilizationSeconds": stabilisation, **scaling},
            "placement": {"forbiddenPools": list(forbid)},
            "budget": {"maxPerHour": 50, "maxPerMonth": 10000, "currency": "USD"},
        },
    }


PUBLIC = rmd("public-recs")
RESTRICTED = rmd("account-recs", "restricted", gpus=1, forbid=())


def snapshot(*models: tuple[dict[str, Any], dict[str, int]], capacity: dict[str, int] | None = None) -> ClusterSnapshot:
    snaps = [ModelSnapshot(rmd=parse_rmd(body), current=current, ready=dict(current), body=body) for body, current in models]
    return ClusterSnapshot(models=snaps, pools=POOLS, capacity_gpus=capacity or CAPACITY)


def fresh(name: str, rps: float, pools: dict[str, int], p95_s: float = 0.02, state: DataState = DataState.OK) -> ModelObservation:
    pool_obs = {p: PoolObservation(pool=p, expected=True, state=state, request_rate=Reading.ok(rps / max(len(pools), 1)),
                                   ready_servers=Reading.ok(n), targets=n, targets_up=n, sample_age_seconds=1.0)
                for p, n in pools.items()}
    if state != DataState.OK:
        return ModelObservation("shop", name, state, f"metrics {state.value}", pools=pool_obs)
    return ModelObservation("shop", name, DataState.OK, "fresh", request_rate=Reading.ok(rps), p95_seconds=Reading.ok(p95_s),
                            ready_servers=Reading.ok(sum(pools.values())), pools=pool_obs)


def observation(*models: ModelObservation, at: float = T0) -> Observation:
    return Observation(time=at, models={(o.namespace, o.model): o for o in models})


def run(snap: ClusterSnapshot, obs: Observation | None, state: ControllerState, at: float, error: str | None = None) -> tuple[RoundResult, ControllerState]:
    return plan_round(snap, obs, state, at, CONFIG, prometheus_error=error)


def test_demand_fills_the_private_pool_first_then_bursts_to_public() -> None:
    state = ControllerState()
    res, state = run(snapshot((PUBLIC, {"onprem-t4": 1})), observation(fresh("public-recs", 30, {"onprem-t4": 1})), state, T0)
    out = res.outcomes["shop/public-recs"]
    assert out.targets == {"onprem-t4": 2, "aws-spot-l4": 0}
    assert out.changed and out.direction == "up" and out.reason == "demand"
    res, state = run(snapshot((PUBLIC, {"onprem-t4": 2})), observation(fresh("public-recs", 70, {"onprem-t4": 2})), state, T0 + 5)
    out = res.outcomes["shop/public-recs"]
    assert out.targets == {"onprem-t4": 2, "aws-spot-l4": 2}  # ceil(70 x 1.05 / 20) = 4; t4 holds 2 two-GPU replicas
    assert "aws-spot-l4" in out.message and "private pool onprem-t4 full" in out.message
    assert out.observed and out.observed_reason == "MetricsFresh"
    assert res.solver in ("milp", "greedy")


def test_restricted_model_never_gets_a_public_pool_even_under_pressure() -> None:
    state = ControllerState()
    snap = snapshot((RESTRICTED, {"onprem-a100": 1}), capacity={**CAPACITY, "onprem-a100": 2})
    res, _ = run(snap, observation(fresh("account-recs", 500, {"onprem-a100": 1})), state, T0)
    out = res.outcomes["shop/account-recs"]
    assert {p for p, n in out.targets.items() if n} == {"onprem-a100"}
    assert out.targets["onprem-a100"] == 2 and out.shortfall > 0 and out.reason == "capacity"


def test_prometheus_down_holds_everything_and_reports_it_once() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2, "aws-spot-l4": 2}), (RESTRICTED, {"onprem-a100": 1}))
    state = ControllerState()
    res, state = run(snap, None, state, T0, error="ConnectError: refused")
    for out in res.outcomes.values():
        assert not out.changed and out.direction == "hold"
        assert out.targets == dict(next(s.current for s in snap.models if s.key == out.key))
        assert out.observed_reason == "PrometheusUnavailable" and out.newly_unobserved
        assert out.slo_status() is None  # SLOAtRisk keeps its last verdict
    assert res.solver is None
    res, state = run(snap, None, state, T0 + 5, error="ConnectError: refused")
    assert not any(o.newly_unobserved for o in res.outcomes.values())
    # Back: fresh data resumes control; the first round after the outage says so.
    res, state = run(snap, observation(fresh("public-recs", 70, {"onprem-t4": 2, "aws-spot-l4": 2}),
                                       fresh("account-recs", 5, {"onprem-a100": 1})), state, T0 + 10)
    assert all(o.observed and o.newly_observed for o in res.outcomes.values())
    assert res.outcomes["shop/public-recs"].targets == {"onprem-t4": 2, "aws-spot-l4": 2}


def test_stale_model_keeps_its_gpus_even_when_a_more_sensitive_model_wants_them() -> None:
    private_only = rmd("internal-recs", "confidential", gpus=2, forbid=("onprem-a100",))
    snap = snapshot((PUBLIC, {"onprem-t4": 2}), (private_only, {"onprem-t4": 0}), capacity={**CAPACITY, "onprem-t4": 4})
    obs = observation(fresh("public-recs", 0, {"onprem-t4": 2}, state=DataState.STALE), fresh("internal-recs", 60, {}))
    res, _ = run(snap, obs, ControllerState(), T0)
    public = res.outcomes["shop/public-recs"]
    assert public.targets["onprem-t4"] == 2 and not public.changed
    assert not public.observed and public.observed_reason == "MetricsStale"
    assert res.outcomes["shop/internal-recs"].shortfall > 0  # it waits rather than taking held GPUs


def test_restart_starts_from_what_runs_and_waits_a_full_window_before_scaling_down() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2, "aws-spot-l4": 2}))
    idle = observation(fresh("public-recs", 1, {"onprem-t4": 2, "aws-spot-l4": 2}))
    state = ControllerState()  # a restarted operator knows nothing
    for t in (0, 5, 10, 15):
        res, state = run(snap, idle, state, T0 + t)
        assert not res.outcomes["shop/public-recs"].changed, t
    res, state = run(snap, idle, state, T0 + 21)  # stabilisation 20 s after the seeded recommendation
    out = res.outcomes["shop/public-recs"]
    assert out.direction == "down" and out.targets["aws-spot-l4"] == 0 and out.targets["onprem-t4"] == 1  # public first


def test_missing_request_rate_is_not_zero_demand() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2}))
    no_rate = ModelObservation("shop", "public-recs", DataState.MISSING, "no metrics yet", request_rate=MISSING)
    res, _ = run(snap, observation(no_rate), ControllerState(), T0 + 100)
    out = res.outcomes["shop/public-recs"]
    assert not out.changed and out.observed_reason == "MetricsMissing" and out.demand_rps is None


def test_spend_accrues_at_the_cost_of_what_runs() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2, "aws-spot-l4": 1}))
    obs = observation(fresh("public-recs", 50, {"onprem-t4": 2, "aws-spot-l4": 1}))
    res, state = run(snap, obs, ControllerState(), T0)
    acc = res.outcomes["shop/public-recs"].accounting
    assert acc.cost_per_hour == pytest.approx(2 * 2 * 0.35 + 1 * 2 * 1.20)
    assert acc.spend_delta == 0
    assert acc.hour_utilization == pytest.approx(acc.cost_per_hour / 50)
    assert acc.cost_per_1k == pytest.approx(acc.cost_per_hour / (50 * 3.6))
    res, state = run(snap, obs, state, T0 + 1800)
    assert res.outcomes["shop/public-recs"].accounting.spend_delta == pytest.approx(acc.cost_per_hour / 2)


def test_metrics_are_set_each_round_and_stale_label_sets_go() -> None:
    pub = MetricsPublisher()
    snap = snapshot((PUBLIC, {"onprem-t4": 2}))
    res, state = run(snap, observation(fresh("public-recs", 30, {"onprem-t4": 2})), ControllerState(), T0)
    pub.publish(res, snap)
    get = m.REGISTRY.get_sample_value
    assert get("hybridrec_observed", {"namespace": "shop", "model": "public-recs", "reason": "MetricsFresh"}) == 1
    assert get("hybridrec_demand_rps", {"namespace": "shop", "model": "public-recs"}) == pytest.approx(30)
    assert get("hybridrec_slo_p95_seconds", {"namespace": "shop", "model": "public-recs"}) == pytest.approx(0.05)
    assert get("hybridrec_slo_attained", {"namespace": "shop", "model": "public-recs"}) == 1
    assert get("hybridrec_budget", {"namespace": "shop", "model": "public-recs", "window": "hour", "currency": "USD"}) == 50
    solves = get("hybridrec_allocator_solve_seconds_count", {"solver": res.solver})
    assert solves and solves >= 1
    res, state = run(snap, None, state, T0 + 5, error="down")
    pub.publish(res, snap)
    assert get("hybridrec_observed", {"namespace": "shop", "model": "public-recs", "reason": "MetricsFresh"}) is None
    assert get("hybridrec_observed", {"namespace": "shop", "model": "public-recs", "reason": "PrometheusUnavailable"}) == 0
    assert get("hybridrec_demand_rps", {"namespace": "shop", "model": "public-recs"}) is None  # unknown, not 0
    held = get("hybridrec_decisions_total", {"namespace": "shop", "model": "public-recs", "direction": "hold", "reason": "no-data"})
    assert held == 1
    pub.publish(RoundResult(T0 + 10, {}, None, 0.0), snapshot())  # the model was deleted
    assert get("hybridrec_observed", {"namespace": "shop", "model": "public-recs", "reason": "PrometheusUnavailable"}) is None
    assert get("hybridrec_decisions_total", {"namespace": "shop", "model": "public-recs", "direction": "hold", "reason": "no-data"}) is None


def test_build_snapshot_reads_deployments_per_pool() -> None:
    deps = [
        {"metadata": {"namespace": "shop", "labels": {"hybridrec.io/model": "public-recs", "hybridrec.io/pool": "onprem-t4"}},
         "spec": {"replicas": 2}, "status": {"readyReplicas": 1}},
        {"metadata": {"namespace": "shop", "labels": {"hybridrec.io/model": "public-recs", "hybridrec.io/pool": "aws-spot-l4"}},
         "spec": {"replicas": 1}, "status": {}},
        {"metadata": {"namespace": "other", "labels": {"hybridrec.io/model": "public-recs", "hybridrec.io/pool": "onprem-t4"}},
         "spec": {"replicas": 5}},
    ]
    invalid = {"metadata": {"name": "bad", "namespace": "shop"}, "spec": {"dataSensitivity": "secret"}}
    snap = build_snapshot([PUBLIC, invalid], POOLS, deps, CAPACITY)
    assert [s.key for s in snap.models] == ["shop/public-recs"]
    assert snap.models[0].current == {"onprem-t4": 2, "aws-spot-l4": 1}
    assert snap.models[0].ready == {"onprem-t4": 1, "aws-spot-l4": 0}
    assert snap.expected_pools() == {("shop", "public-recs"): ["aws-spot-l4", "onprem-t4"]}


def test_events_and_observed_condition() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 1}))
    res, state = run(snap, observation(fresh("public-recs", 30, {"onprem-t4": 1})), ControllerState(), T0)
    out = res.outcomes["shop/public-recs"]
    assert events_for(out) == [("Normal", "Scaling", out.message)]
    conds = observed_condition_patch([], out, 1, __import__("datetime").datetime(2024, 1, 1))
    assert conds is not None and conds[0]["type"] == "Observed" and conds[0]["status"] == "True"
    assert observed_condition_patch(conds, out, 1, __import__("datetime").datetime(2024, 1, 2)) is None  # no write in steady state
    res, state = run(snap, None, state, T0 + 5, error="down")
    down = res.outcomes["shop/public-recs"]
    assert events_for(down) == [("Warning", "MetricsUnavailable", down.observed_message)]
    new = observed_condition_patch(conds, down, 1, __import__("datetime").datetime(2024, 1, 3))
    assert new is not None and new[0]["status"] == "False" and new[0]["reason"] == "PrometheusUnavailable"


def test_config_from_env() -> None:
    assert not ControllerConfig.from_env({}).enabled
    cfg = ControllerConfig.from_env({"HYBRIDREC_PROMETHEUS_URL": "http://127.0.0.1:9090", "HYBRIDREC_CONTROL_INTERVAL_SECONDS": "5"})
    assert cfg.enabled and cfg.interval_s == 5 and cfg.window_s == 10
    with pytest.raises(ValueError):
        ControllerConfig.from_env({"HYBRIDREC_CONTROL_INTERVAL_SECONDS": "soon"})


def test_a_short_gap_without_a_rate_holds_quietly_a_longer_one_is_reported() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2}))
    gap = ModelObservation("shop", "public-recs", DataState.MISSING, "request rate not computable yet for pool(s) aws-spot-l4")
    res, state = run(snap, observation(fresh("public-recs", 30, {"onprem-t4": 2})), ControllerState(), T0)
    res, state = run(snap, observation(gap), state, T0 + 5)
    out = res.outcomes["shop/public-recs"]
    assert out.observed and not out.changed and out.demand_rps is None  # held, but a new replica is no outage
    assert out.slo_status() is None and events_for(out) == []
    res, state = run(snap, observation(gap), state, T0 + 10)
    assert res.outcomes["shop/public-recs"].observed
    res, state = run(snap, observation(gap), state, T0 + 15)
    out = res.outcomes["shop/public-recs"]
    assert not out.observed and out.observed_reason == "MetricsMissing" and out.newly_unobserved


def test_after_an_outage_longer_than_the_window_the_first_fresh_round_does_not_shrink() -> None:
    snap = snapshot((PUBLIC, {"onprem-t4": 2, "aws-spot-l4": 3}))
    busy = observation(fresh("public-recs", 90, {"onprem-t4": 2, "aws-spot-l4": 3}))
    res, state = run(snap, busy, ControllerState(), T0)
    for t in range(5, 65, 5):  # a minute without Prometheus, three stabilisation windows
        res, state = run(snap, None, state, T0 + t, error="down")
    res, state = run(snap, observation(fresh("public-recs", 10, {"onprem-t4": 2, "aws-spot-l4": 3})), state, T0 + 65)
    assert not res.outcomes["shop/public-recs"].changed  # the held rounds count as recommendations of what runs
    res, state = run(snap, observation(fresh("public-recs", 10, {"onprem-t4": 2, "aws-spot-l4": 3})), state, T0 + 86)
    assert res.outcomes["shop/public-recs"].direction == "down"


# --------------------------------------------------------------------------------------------- per-pool capacity
# Learned from each pool's own server metrics, seeded from the spec's hint for the pool's GPU, shown per pool in
# outcomes, status fields, gauges and an override event.

KEY = "shop/public-recs"



def model(**scaling: Any) -> dict[str, Any]:
    return rmd("public-recs", **scaling)


def busy(rps_per_server: float, pools: dict[str, int], p95_ms: float) -> Observation:
    """Each pool's servers each answer ``rps_per_server`` with p95 ``p95_ms`` (what observe.py reads per pool)."""
    pool_obs = {p: PoolObservation(pool=p, expected=True, state=DataState.OK, request_rate=Reading.ok(rps_per_server * n),
                                   p95_seconds=Reading.ok(p95_ms / 1000), ready_servers=Reading.ok(n), targets=n,
                                   targets_up=n, sample_age_seconds=1.0)
                for p, n in pools.items()}
    total = sum(rps_per_server * n for n in pools.values())
    obs = ModelObservation("shop", "public-recs", DataState.OK, "fresh", request_rate=Reading.ok(total),
                           p95_seconds=Reading.ok(p95_ms / 1000), ready_servers=Reading.ok(sum(pools.values())), pools=pool_obs)
    return Observation(time=T0, models={("shop", "public-recs"): obs})


def rounds(body: dict[str, Any], current: dict[str, int], obs: Observation, n: int, step: float = 30.0,
           config: ControllerConfig = CONFIG) -> list[RoundResult]:
    state, results = ControllerState(), []
    for i in range(n):
        res, state = plan_round(snapshot((body, current)), obs, state, T0 + i * step, config)
        results.append(res)
    return results


def test_pools_are_priced_from_the_gpu_hint_until_measured() -> None:
    body = model(capacityHints=[{"gpuModel": "NVIDIA-L4", "rpsPerReplica": 60}])
    out = rounds(body, {"onprem-t4": 1}, busy(5, {"onprem-t4": 1}, 10), 1)[0].outcomes[KEY]
    assert out.pools["aws-spot-l4"].source == "hint" and out.pools["aws-spot-l4"].rps_per_replica == 60
    assert out.pools["onprem-t4"].source == "default" and out.pools["onprem-t4"].rps_per_replica == 20
    # The planned replica's capacity and the price of 1,000 requests there: 2 GPUs x 0.35/h / (20 RPS x 3.6).
    assert out.pools["onprem-t4"].capacity_rps == 20
    assert out.pools["onprem-t4"].cost_per_1k is not None and abs(out.pools["onprem-t4"].cost_per_1k - 0.7 / 72) < 1e-6
    fields = dict(dict(out.verdict().pools)["onprem-t4"])  # type: ignore[union-attr]
    assert fields["capacitySource"] == "default" and fields["capacityRps"] == 20


def test_a_pool_learns_its_own_capacity_from_its_server_metrics_and_the_event_says_it_overrides_the_hint() -> None:
    # Servers on the T4 pool hold p95 10 ms at 40 RPS each while the spec says 20: the measurement wins, per pool.
    results = rounds(model(), {"onprem-t4": 2}, busy(40, {"onprem-t4": 2}, 10), 20)
    last = results[-1].outcomes[KEY]
    t4 = last.pools["onprem-t4"]
    assert t4.source == "measured" and t4.rps_per_replica > 25
    assert last.pools["aws-spot-l4"].source == "default"  # no evidence there: its hint, never infinite
    overrides = [(i, o) for i, r in enumerate(results) for o in r.outcomes[KEY].hint_overridden]
    assert len(overrides) == 1 and overrides[0][1][0] == "onprem-t4"  # reported once, not every round
    i = overrides[0][0]
    events = events_for(results[i].outcomes[KEY])
    assert any(reason == "CapacityHintOverridden" and "onprem-t4" in msg for _, reason, msg in events)
    # The allocator used it: the T4 replicas count at their measured capacity, so fewer burst to public than the
    # hint alone would need (80 RPS + headroom at 20 RPS per replica: 2 on the full T4 pool + 3 on spot).
    assert last.pools["onprem-t4"].capacity_rps == 2 * t4.rps_per_replica
    assert last.targets.get("onprem-t4") == 2 and last.targets.get("aws-spot-l4", 0) < 3
    first = results[0].outcomes[KEY]
    assert first.targets.get("aws-spot-l4", 0) == 3


def test_overload_on_one_pool_lowers_that_pools_capacity_only() -> None:
    results = rounds(model(), {"onprem-t4": 2}, busy(20, {"onprem-t4": 2}, 200), 20)
    t4 = results[-1].outcomes[KEY].pools["onprem-t4"]
    assert t4.source == "measured" and t4.rps_per_replica < 20
    assert results[-1].outcomes[KEY].pools["aws-spot-l4"].rps_per_replica == 20


def test_gauges_per_pool_and_they_go_with_the_model() -> None:
    res = rounds(model(), {"onprem-t4": 1}, busy(5, {"onprem-t4": 1}, 10), 1)[0]
    snap = snapshot((model(), {"onprem-t4": 1}))
    values = metric_values(res.outcomes[KEY], snap.models[0].rmd)
    assert values[m.POOL_CAPACITY][("shop", "public-recs", "onprem-t4", "default")] == 20
    assert values[m.POOL_RPS_PER_REPLICA][("shop", "public-recs", "aws-spot-l4", "default")] == 20
    assert ("shop", "public-recs", "onprem-t4", "USD") in values[m.POOL_COST_PER_1K_REQUESTS]
    publisher = MetricsPublisher()
    publisher.publish(res, snap)
    assert m.REGISTRY.get_sample_value("hybridrec_pool_capacity_rps", {"namespace": "shop", "model": "public-recs",
                                                                       "pool": "onprem-t4", "source": "default"}) == 20
    publisher.publish(RoundResult(T0 + 60, {}, None, 0.0), snapshot())
    assert m.REGISTRY.get_sample_value("hybridrec_pool_capacity_rps", {"namespace": "shop", "model": "public-recs",
                                                                       "pool": "onprem-t4", "source": "default"}) is None


def test_wanted_replicas_gauge_shows_the_stabilised_want_and_only_with_fresh_data() -> None:
    res = rounds(model(), {"onprem-t4": 1}, busy(5, {"onprem-t4": 1}, 10), 1)[0]
    out = res.outcomes[KEY]
    rmd = snapshot((model(), {"onprem-t4": 1})).models[0].rmd
    assert out.wanted is not None and out.wanted >= 1
    assert metric_values(out, rmd)[m.WANTED] == {("shop", "public-recs"): out.wanted}
    assert metric_values(dataclasses.replace(out, observed=False, observed_reason="MetricsStale"), rmd)[m.WANTED] == {}


def test_roi_counts_the_measured_retraining_spend_in_status() -> None:
    economics = {"currency": "USD", "training": {"gpus": 32, "hours": 3, "pricePerGpuHour": 5},
                 "deployment": {"gpus": 1, "tps": 100, "unitCost": 0.1},
                 "maintenance": {"people": 2, "hours": 100, "ratePerHour": 0.5},
                 "businessValue": {"requests": 1e8, "clickThroughRate": 0.005, "conversionRate": 0.003,
                                   "valuePerConversion": 0.1}}
    typed = {**model(), "spec": {**model()["spec"], "economics": economics}}
    measured = {**typed, "status": {"trainingSpend": {"cost": {"USD": 70.0}, "gpuHours": 14.0, "runs": 2}}}
    roi = [rounds(body, {"onprem-t4": 1}, busy(5, {"onprem-t4": 1}, 10), 1)[0].outcomes[KEY].accounting.roi
           for body in (typed, measured)]
    # The worked example: 150 / 590 typed; two measured runs add 70 to the training cost: 150 / 660.
    assert roi[0] == pytest.approx(150 / 590) and roi[1] == pytest.approx(150 / 660)


def test_solver_limit_defaults_to_the_measured_p99() -> None:
    assert ControllerConfig.from_env({}).solver_time_limit_s == 0.2


# --------------------------------------------------------------------------------------------- forecast (outlook)


def test_the_margin_comes_from_measured_variability_and_travels_as_headroom() -> None:
    # Until enough rises over one lead time are measured the margin is Variability's default (10%): forecast = level x 1.1.
    out = rounds(model(), {"onprem-t4": 2}, busy(15, {"onprem-t4": 2}, 10), 1)[0].outcomes[KEY]
    assert out.forecast_rps is not None and abs(out.forecast_rps - 30 * 1.1) < 1e-6
    assert out.observed and out.wanted == 2  # 30 RPS planned at 20 RPS per replica with the 10% margin


def test_a_drop_waits_for_the_declared_stabilisation_even_when_the_lead_time_is_shorter() -> None:
    # Lead time here is ~ the slowest pool's start-up + 5 s; the user declared 300 s: the first decrease waits 300 s.
    body = model(stabilisation=300)
    state = ControllerState()
    res, state = plan_round(snapshot((body, {"onprem-t4": 2, "aws-spot-l4": 2})), busy(20, {"onprem-t4": 2, "aws-spot-l4": 2}, 10),
                            state, T0, CONFIG)
    current = {p: n for p, n in res.outcomes[KEY].targets.items() if n}
    first_down = None
    for t in range(5, 400, 5):
        res, state = plan_round(snapshot((body, current)), busy(1, current, 10), state, T0 + t, CONFIG)
        out = res.outcomes[KEY]
        if out.changed and out.direction == "down":
            first_down = t
            break
        current = {p: n for p, n in out.targets.items() if n}
    assert first_down is not None and first_down >= 300


# --------------------------------------------------------------------------------------------- overload trigger


def test_overload_between_rounds_is_p95_above_slo_or_demand_above_the_planned_capacity() -> None:
    from hybridrec_operator.core.cost_round import overloaded

    snap = snapshot((model(), {"onprem-t4": 2}))
    last = rounds(model(), {"onprem-t4": 2}, busy(10, {"onprem-t4": 2}, 10), 1)[0]
    planned = sum(e.capacity_rps for e in last.outcomes[KEY].pools.values())
    assert planned == 40
    assert overloaded(snap, busy(10, {"onprem-t4": 2}, 10), last) == []
    assert overloaded(snap, busy(10, {"onprem-t4": 2}, 80), last) == [KEY]  # p95 80 ms > SLO 50 ms
    assert overloaded(snap, busy(25, {"onprem-t4": 2}, 10), last) == [KEY]  # 50 RPS > 40 planned
    assert overloaded(snap, None, last) == [] and overloaded(snap, busy(25, {"onprem-t4": 2}, 10), None) == []


# --------------------------------------------------------------------------------------------- spot reclaims


def _node(name: str, pool_labels: dict[str, str], *, tainted: bool = False, ready: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": pool_labels},
            "spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}] if tainted else []},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def _pod(name: str, node: str, pool: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "labels": {"hybridrec.io/model": "public-recs", "hybridrec.io/pool": pool}},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def _spot_labels() -> dict[str, str]:
    return dict(next(p for p in POOLS if p.name == "aws-spot-l4").spec.node_selector)


def test_doomed_nodes_are_tainted_notready_or_deleted() -> None:
    from hybridrec_operator.core.cost_types import doomed

    assert doomed(_node("a", {}, tainted=True)) and doomed(_node("b", {}, ready="Unknown"))
    assert doomed({"metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not doomed(_node("d", {})) and not doomed({"metadata": {"name": "e"}})  # no Ready condition yet: not judged


def test_pods_on_a_reclaimed_node_are_replaced_before_they_die_and_the_pool_is_priced_by_its_reclaims() -> None:
    body = model()
    current = {"onprem-t4": 2, "aws-spot-l4": 2}
    deps = [{"metadata": {"namespace": "shop", "name": f"public-recs-{p}", "labels": {"hybridrec.io/model": "public-recs", "hybridrec.io/pool": p}},
             "spec": {"replicas": n}, "status": {"readyReplicas": n}} for p, n in current.items()]
    spot = _spot_labels()
    healthy = [_node("spot-1", spot), _node("spot-2", spot)]
    pods = [_pod("p1", "spot-1", "aws-spot-l4"), _pod("p2", "spot-2", "aws-spot-l4")]
    obs = busy(15, current, 10)  # 60 RPS on 4 replicas at 20 RPS each (with margin: 4 wanted)
    before = build_snapshot([body], POOLS, deps, CAPACITY, healthy, pods)
    res, state = plan_round(before, obs, ControllerState(), T0, CONFIG)
    assert res.outcomes[KEY].targets["aws-spot-l4"] == 2
    assert state.reclaims.rate_per_hour("aws-spot-l4") == 0.0

    reclaimed = [_node("spot-1", spot, tainted=True), _node("spot-2", spot)]
    after = build_snapshot([body], POOLS, deps, CAPACITY, reclaimed, pods)
    assert after.doomed_pods == {KEY: {"aws-spot-l4": 1}}
    res, state = plan_round(after, obs, state, T0 + 30, CONFIG)
    out = res.outcomes[KEY]
    # The doomed pod stays counted until it dies; a replacement starts now, on top of it.
    assert sum(out.targets.values()) == 5 and out.changed and "replacing 1 on aws-spot-l4" in out.message
    assert state.reclaims.rate_per_hour("aws-spot-l4") > 0  # one reclaim: the spot pool now carries its risk
    assert state.reclaims.rate_per_hour("onprem-t4") == 0.0


def test_the_status_fields_of_a_pool_are_in_the_crd_schema() -> None:
    """The API server prunes unknown status fields: every key the verdict carries must be in the CRD."""
    from hybridrec_operator.core.cost_types import PoolEconomics

    crd = yaml.safe_load((ROOT / "manifests/crds/hybridrec.io_recmodeldeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = schema["properties"]["status"]["properties"]["placements"]["items"]["properties"]
    fields = PoolEconomics(20.0, "measured", 40.0, 0.01).status_fields()
    assert set(fields) == {"capacityRps", "rpsPerReplica", "capacitySource", "costPer1kRequests"}
    assert set(fields) <= set(props), sorted(set(fields) - set(props))
