"""Simulator v2: trace validation with line numbers, noise, the latency model, spot reclaims, per-pool capacity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from cost_builders import SAMPLES
from typer.testing import CliRunner

from hybridrec_operator.cli.cost import simulate_command
from hybridrec_operator.sim import latency
from hybridrec_operator.sim.simulate import Reclaims, Trace, TraceError, parse_objects, parse_trace_csv, simulate, tick_demand

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "benchmarks" / "traces" / "scenarios"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("minute,a\n0,1\n1,2\n3,2\n", 4, "gap"),
        ("minute,a\n0,1\n1,-2\n", 3, "non-negative"),
        ("minute,a\n0,1\n1,lots\n", 3, "not a number"),
        ("minute,a\n0,1\n1,\n", 3, "not a number"),
        ("minute,a,b\n0,1,2\n1,2\n", 3, "expected 3"),
        ("minute,a\n0,1\n0,2\n", 3, "out of order"),
        ("minute,a\n0,1\n1,nan\n", 3, "finite"),
        ("when,a\n0,1\n", 1, "minute"),
    ],
)
def test_a_bad_trace_is_refused_with_its_line_number(text: str, line: int, what: str) -> None:
    with pytest.raises(TraceError, match=rf"line {line}:.*{what}"):
        parse_trace_csv(text)


def test_the_cli_names_the_line_of_a_bad_trace(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)
    bad = tmp_path / "bad.csv"
    bad.write_text("minute,trending\n0,100\n1,120\n2,-5\n")
    result = CliRunner().invoke(app, ["simulate", "-t", str(bad), "-f", str(SAMPLES / "pools.yaml"), "-f", str(SAMPLES / "models.yaml")], terminal_width=200)
    words = " ".join(result.output.replace("│", " ").split())  # the error box wraps long lines
    assert result.exit_code != 0 and "line 4: trending = -5" in words
    help_text = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "240"}).output
    for option in ("--keda-threshold", "--spot-reclaims-per-hour", "--noise", "capacityHints"):
        assert option in help_text


def test_noise_comes_from_the_trace_and_is_the_same_for_every_run() -> None:
    rng = np.random.default_rng(3)
    smooth = Trace(np.arange(200), {"a": np.full(200, 1000.0)})
    rough = Trace(np.arange(200), {"a": 1000.0 * (1 + rng.normal(0, 0.1, 200))})
    assert np.allclose(tick_demand(smooth, 15.0)["a"], 1000.0)  # a flat trace stays flat
    one, two = tick_demand(rough, 15.0, seed=1)["a"], tick_demand(rough, 15.0, seed=1)["a"]
    assert np.array_equal(one, two) and not np.array_equal(one, np.repeat(rough.demand["a"], 4))
    assert 0.05 < np.std(one / np.repeat(rough.demand["a"], 4) - 1) < 0.3


def test_p95_meets_the_slo_exactly_at_capacity_and_queues_beyond() -> None:
    slo = 50.0
    assert latency.step(500.0, 1000.0, 0.0, slo, 15.0).p95_ms < 0.5 * slo
    assert latency.step(1000.0, 1000.0, 0.0, slo, 15.0).p95_ms == pytest.approx(slo)
    assert latency.step(1050.0, 1000.0, 0.0, slo, 15.0).p95_ms > slo
    over = latency.step(1500.0, 1000.0, 0.0, slo, 15.0)
    assert over.backlog > 0 and over.p95_ms > 10 * slo
    # Once capacity is back the backlog drains; a timeout bounds what was waiting.
    assert over.backlog <= 1.1 * 1000.0 * latency.TIMEOUT_SECONDS
    after = latency.step(500.0, 2000.0, over.backlog, slo, 15.0)
    assert after.backlog == 0 and after.p95_ms < slo


def test_reclaims_are_replaced_on_notice_by_hybridrec_only() -> None:
    pools, models = parse_objects([(SCENARIOS / "spot.yaml").read_text()])
    minutes = np.arange(240)
    trace = Trace(minutes, {"trending": np.full(240, 4000.0)})
    reclaims = Reclaims(6.0, seed=3)
    assert reclaims.schedule(pools, trace.duration_seconds) == reclaims.schedule(pools, trace.duration_seconds)
    assert all(p == "aws-spot-l4" and 30 <= notice <= 120 for _, p, notice in reclaims.schedule(pools, trace.duration_seconds))
    results = simulate(trace, pools, models, ["hybridrec", "hpa", "keda", "oracle"], reclaims=reclaims)
    assert results["hybridrec"].reclaims > 10 and results["hpa"].reclaims > 10
    # The HPA learns of a reclaim when the pod dies and waits 90 s for its replacement; hybridrec starts it on notice.
    assert results["hybridrec"].slo_violation_minutes < results["hpa"].slo_violation_minutes
    assert results["hybridrec"].slo_violation_minutes < results["keda"].slo_violation_minutes
    assert results["oracle"].cost <= results["hybridrec"].cost


def test_heterogeneous_capacities_the_oracle_and_hybridrec_buy_requests_not_gpus() -> None:
    pools, models = parse_objects([(SCENARIOS / "hetero.yaml").read_text()])
    trace = Trace(np.arange(120), {"ranker": np.full(120, 3000.0)})
    results = simulate(trace, pools, models, ["hybridrec", "hpa", "oracle"])
    # 3,000 RPS: 3 A100 replicas (7.50/h) beat 30 T4s (10.50/h, and only 8 fit) or 10 L4s (8.00/h).
    assert results["oracle"].cost == pytest.approx(7.5 * 2, rel=1e-6)
    assert results["hybridrec"].cost < results["hpa"].cost
    assert results["hybridrec"].cost_by_pool["cloud-a100"] > 0.8 * results["hybridrec"].cost
    assert results["hybridrec"].slo_violation_minutes == 0


def test_sample_objects_fit_the_heterogeneous_scenario() -> None:
    pools, models = parse_objects([(SCENARIOS / "hetero.yaml").read_text()])
    hints = {h.gpu_model: h.rps_per_replica for h in models[0].spec.scaling.capacity_hints}
    assert {p.spec.gpu.model for p in pools} == set(hints)
