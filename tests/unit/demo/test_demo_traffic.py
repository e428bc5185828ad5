"""The demo's scenario and traffic curve (pure)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import yaml

from hybridrec_operator.api.models import ScheduledEvent, parse_pool, parse_rmd
from hybridrec_local.demo.errors import DemoError
from hybridrec_local.demo.files import MODELS_FILE, POOLS_FILE, SCENARIO_FILE
from hybridrec_local.demo.manifests import Artifact, render_models, render_pools, sale_event
from hybridrec_local.demo.scenario import (
    ScenarioError,
    diurnal_shape,
    expected_requests,
    load_scenario,
    offered_rps,
    parse_scenario,
    traffic_curve,
)
from hybridrec_local.loadgen import arrival_times


def scenario_doc(**overrides: object) -> dict:
    doc = {
        "kind": "DemoScenario",
        "day": {"realSeconds": 240, "startHour": 4, "sampleSeconds": 2},
        "control": {"intervalSeconds": 5, "poolStartupSeconds": 10},
        "models": {"a": {"nightRps": 1, "peakRps": 9}, "b": {"nightRps": 2, "peakRps": 4, "targetRpsPerReplica": 3}},
        "flashSale": {"model": "b", "name": "sale", "startHour": 12, "endHour": 15, "multiplier": 3},
    }
    doc.update(overrides)
    return doc


def test_shipped_scenario_parses_and_covers_the_sample_models() -> None:
    sc = load_scenario(SCENARIO_FILE)
    sample_names = {d["metadata"]["name"] for d in yaml.safe_load_all(MODELS_FILE.read_text()) if d}
    assert {m.name for m in sc.models} == sample_names
    assert sc.sale is not None and sc.sale.model in sample_names
    # Target: the whole demo in under ~8 minutes, so the simulated day must stay well below that.
    assert 60 <= sc.real_seconds <= 300


def test_diurnal_shape_is_normalised_with_night_trough_and_evening_peak() -> None:
    values = {h: diurnal_shape(h) for h in [x / 4 for x in range(96)]}
    assert min(values.values()) >= 0.0 and max(values.values()) <= 1.0 + 1e-9
    assert max(values, key=values.get) == pytest.approx(20.5, abs=0.5)
    assert min(values, key=values.get) in [h for h in values if 2 <= h <= 6]
    assert diurnal_shape(20.5) > diurnal_shape(12.75) > diurnal_shape(4)
    assert diurnal_shape(0.0) == pytest.approx(diurnal_shape(24.0))  # periodic


def test_offered_rps_follows_the_curve_and_multiplies_only_the_sale_model_inside_the_window() -> None:
    sc = parse_scenario(scenario_doc())
    assert offered_rps(sc, "a", 20.5) == pytest.approx(9.0, rel=0.02)
    assert offered_rps(sc, "a", 4.0) == pytest.approx(1.0, abs=0.2)
    inside, before, after = offered_rps(sc, "b", 13.0), offered_rps(sc, "b", 11.99), offered_rps(sc, "b", 15.0)
    base = 2 + 2 * diurnal_shape(13.0)
    assert inside == pytest.approx(3 * base)
    assert before == pytest.approx(2 + 2 * diurnal_shape(11.99))
    assert after == pytest.approx(2 + 2 * diurnal_shape(15.0))
    assert offered_rps(sc, "a", 13.0) == pytest.approx(1 + 8 * diurnal_shape(13.0))  # other models: no sale


def test_time_mapping_compresses_one_day_into_real_seconds() -> None:
    sc = parse_scenario(scenario_doc())
    assert sc.sim_hour(0) == 4
    assert sc.sim_hour(240) == 28
    assert sc.real_offset(12) == pytest.approx(80.0)
    curve = traffic_curve(sc, "b", step_s=10)
    assert curve[0][0] == 0 and curve[-1][0] == 240
    sale_points = [rps for t, rps in curve if 80 <= t < 110]
    assert sale_points and min(sale_points) > max(rps for t, rps in curve if t < 70)


def test_sale_before_the_start_hour_belongs_to_the_next_day() -> None:
    sc = parse_scenario(scenario_doc(flashSale={"model": "b", "startHour": 1, "endHour": 2, "multiplier": 2}))
    assert sc.sale is not None and (sc.sale.start_hour, sc.sale.end_hour) == (25, 26)
    assert offered_rps(sc, "b", 25.5) == pytest.approx(2 * (2 + 2 * diurnal_shape(1.5)))


def test_with_duration_changes_the_compression_and_the_controller_time_constants() -> None:
    doc = scenario_doc(control={"intervalSeconds": 5, "poolStartupSeconds": 10, "scaleDownStabilizationSeconds": 40,
                                "operatorEnv": {"HYBRIDREC_MIN_DWELL_SECONDS": "16", "HYBRIDREC_DEMAND_HISTORY_SECONDS": "40",
                                                "HYBRIDREC_OBSERVE_WINDOW_SECONDS": "10"}})
    sc = parse_scenario(doc).with_duration(60)
    assert sc.real_seconds == 60 and sc.sim_hour(60) == 28 and sc.real_offset(12) == pytest.approx(20)
    assert sc.scale_down_stabilization_s == 10  # 40 s at 240 s/day is 10 s at 60 s/day
    assert sc.operator_env["HYBRIDREC_MIN_DWELL_SECONDS"] == "5"  # 4 s would be below the floor
    assert sc.operator_env["HYBRIDREC_DEMAND_HISTORY_SECONDS"] == "20"
    assert sc.operator_env["HYBRIDREC_OBSERVE_WINDOW_SECONDS"] == "10"  # tied to the scrape interval, not the day
    assert sc.pool_startup_seconds == 10 and sc.control_interval_s == 5  # real process start-up does not speed up
    slower = parse_scenario(doc).with_duration(480)
    assert slower.scale_down_stabilization_s == 80 and slower.operator_env["HYBRIDREC_DEMAND_HISTORY_SECONDS"] == "80"


def test_operator_env_takes_only_hybridrec_settings() -> None:
    with pytest.raises(ScenarioError, match="control.operatorEnv.PATH"):
        parse_scenario(scenario_doc(control={"operatorEnv": {"PATH": "/tmp"}}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "Other"}, "kind"),
        ({"models": {}}, "at least one model"),
        ({"models": {"a": {"nightRps": 5, "peakRps": 1}}}, "peakRps"),
        ({"models": {"a": {"nightRps": "x", "peakRps": 1}}}, "models.a.nightRps"),
        ({"flashSale": {"model": "zzz", "startHour": 1, "endHour": 2, "multiplier": 2}}, "flashSale.model"),
        ({"flashSale": {"model": "a", "startHour": 5, "endHour": 2, "multiplier": 2}}, "startHour < endHour"),
        ({"flashSale": {"model": "a", "startHour": 5, "endHour": 6, "multiplier": 0.5}}, "multiplier"),
        ({"day": {"realSeconds": 1}}, "realSeconds"),
    ],
)
def test_bad_scenarios_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(scenario_doc(**change))


def test_arrivals_are_open_loop_poisson_with_the_requested_rate() -> None:
    rng = random.Random(1)
    times = list(arrival_times(lambda t: 50.0 if t < 10 else 5.0, 0.0, 20.0, rng))
    first, second = sum(1 for t in times if t < 10), sum(1 for t in times if t >= 10)
    assert 430 <= first <= 570  # 500 expected; Poisson sd ~22
    assert 30 <= second <= 75  # 50 expected
    assert times == sorted(times) and all(0 <= t < 20 for t in times)


def test_arrivals_skip_idle_periods_and_are_reproducible() -> None:
    rate = lambda t: 0.0 if t < 5 else 20.0  # noqa: E731
    a = list(arrival_times(rate, 0.0, 10.0, random.Random(3)))
    b = list(arrival_times(rate, 0.0, 10.0, random.Random(3)))
    assert a == b and a and min(a) >= 5.0


def test_expected_requests_integrates_the_curve() -> None:
    sc = parse_scenario(scenario_doc(models={"a": {"nightRps": 2, "peakRps": 2}}, flashSale=None))
    assert expected_requests(sc, "a") == pytest.approx(2 * 240)


def test_sale_event_is_a_valid_schedule_entry_in_wall_clock_time() -> None:
    sc = parse_scenario(scenario_doc())
    start = dt.datetime(2030, 5, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
    event = sale_event(sc, start)
    assert event is not None
    parsed = ScheduledEvent.model_validate(event)
    assert parsed.start == start + dt.timedelta(seconds=80)
    assert parsed.end == start + dt.timedelta(seconds=110)
    assert parsed.multiplier == 3


def test_rendered_samples_are_valid_resources_with_the_demo_overrides() -> None:
    sc = load_scenario(SCENARIO_FILE)
    pools = render_pools([d for d in yaml.safe_load_all(POOLS_FILE.read_text()) if d], sc)
    for raw in pools:
        pool = parse_pool(raw)
        assert pool.spec.startup_seconds == sc.pool_startup_seconds
        if pool.name in sc.pool_max_gpus:
            assert pool.spec.max_gpus == sc.pool_max_gpus[pool.name]
    art = {a: Artifact(uri=f"s3://hybridrec-demo/{a}/", sha256="a" * 64, architecture=a, version="v1")
           for a in ("two-tower", "matrix-factorization")}
    models = render_models([d for d in yaml.safe_load_all(MODELS_FILE.read_text()) if d], sc, art)
    for raw in models:
        rmd = parse_rmd(raw)
        assert rmd.spec.model.uri == art[rmd.spec.model.architecture.value].uri
        assert rmd.spec.model.sha256 == "a" * 64
        traffic = sc.model(rmd.name)
        if traffic.target_rps_per_replica is not None:
            assert rmd.spec.scaling.target_rps_per_replica == traffic.target_rps_per_replica
        if traffic.budget_per_hour is not None:
            assert rmd.spec.budget is not None and rmd.spec.budget.max_per_hour == traffic.budget_per_hour
        if traffic.max_replicas is not None:
            assert rmd.spec.scaling.max_replicas == traffic.max_replicas
        assert rmd.spec.scaling.scale_down_stabilization_seconds == sc.scale_down_stabilization_s
        assert rmd.spec.scaling.schedule == []  # declared when the traffic starts


def test_render_models_refuses_a_missing_architecture() -> None:

    sc = load_scenario(SCENARIO_FILE)
    with pytest.raises(DemoError, match="no matrix-factorization artifact"):
        render_models([d for d in yaml.safe_load_all(MODELS_FILE.read_text()) if d], sc,
                      {"two-tower": Artifact("s3://b/x/", "a" * 64, "two-tower", "v")})
