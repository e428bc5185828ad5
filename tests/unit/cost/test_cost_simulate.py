"""The simulator on small synthetic traces: same allocator, baselines, accounting, plots and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from cost_builders import SAMPLES
from typer.testing import CliRunner

from hybridrec_operator.api.models import ComputePool, RecModelDeployment
from hybridrec_operator.cli.cost import simulate_command
from hybridrec_operator.sim.simulate import Trace, parse_objects, parse_trace_csv, simulate, summary_rows, trace_to_csv, write_plots


@pytest.fixture(scope="module")
def objects() -> tuple[list[ComputePool], list[RecModelDeployment]]:
    return parse_objects([(SAMPLES / "pools.yaml").read_text(), (SAMPLES / "models.yaml").read_text()])


def test_trace_csv_round_trip_and_errors() -> None:
    trace = Trace(np.arange(3), {"a": np.array([1.0, 2.0, 3.5])})
    again = parse_trace_csv(trace_to_csv(trace))
    assert list(again.minutes) == [0, 1, 2] and list(again.demand["a"]) == [1.0, 2.0, 3.5]
    with pytest.raises(ValueError, match="minute"):
        parse_trace_csv("t,a\n0,1\n")
    with pytest.raises(ValueError, match="consecutive"):
        parse_trace_csv("minute,a\n0,1\n2,1\n")
    with pytest.raises(ValueError, match="non-negative"):
        parse_trace_csv("minute,a\n0,-1\n")


def test_a_step_shows_start_up_delays_and_the_oracle_bound(objects: tuple[list[ComputePool], list[RecModelDeployment]]) -> None:
    pools, models = objects
    trending = [m for m in models if m.name == "trending"]  # 400 RPS per replica, public
    demand = np.where(np.arange(40) < 15, 800.0, 4000.0)  # a step at minute 15
    results = simulate(Trace(np.arange(40), {"trending": demand}), pools, trending, ["hybridrec", "keda", "oracle", "static-peak"])
    oracle, hybrid, keda, static = (results[k] for k in ("oracle", "hybridrec", "keda", "static-peak"))
    # The oracle: 2 replicas on onprem-t4 (0.35) for 15 min, then 10 (4 t4 + 6 a100) for 25 min.
    assert oracle.cost == pytest.approx((2 * 0.35 * 15 + (4 * 0.35 + 6 * 0.9) * 25) / 60)
    assert oracle.slo_violation_minutes == 0
    # A lower bound for policies that meet demand (an under-provisioning one may be cheaper, and pays in SLO minutes).
    assert hybrid.cost >= oracle.cost and static.cost >= oracle.cost
    # An unannounced step: pods take 60 s (private) to start, so reactive policies miss at least a minute or two.
    assert 1 <= hybrid.slo_violation_minutes <= 3
    assert keda.slo_violation_minutes >= hybrid.slo_violation_minutes
    assert static.slo_violation_minutes == 0 and static.cost > hybrid.cost
    assert hybrid.sensitive_violations == 0 and hybrid.solve_seconds


def test_a_declared_event_is_provisioned_ahead(objects: tuple[list[ComputePool], list[RecModelDeployment]]) -> None:
    from datetime import UTC, datetime

    pools, models = objects
    trending = [m for m in models if m.name == "trending"]  # declares 4x from 2026-01-05 12:00 to 12:40
    minutes = np.arange(60)
    demand = np.where((minutes >= 30) & (minutes < 50), 2000.0 * 4, 2000.0)
    trace = Trace(minutes, {"trending": demand})
    start = datetime(2026, 1, 5, 11, 30, tzinfo=UTC)  # minute 30 = 12:00
    results = simulate(trace, pools, trending, ["hybridrec", "hpa"], start=start)
    assert results["hybridrec"].slo_violation_minutes == 0
    assert results["hpa"].slo_violation_minutes >= 2


def test_three_models_sharing_a_private_pool(objects: tuple[list[ComputePool], list[RecModelDeployment]], tmp_path: Path) -> None:
    pools, models = objects
    minutes = np.arange(45)
    rise = np.clip(minutes / 20, 0, 1)
    trace = Trace(minutes, {"account-recs": 300 + 1000 * rise, "homepage-recs": 600 + 1200 * rise, "trending": 1000 + 2000 * rise})
    results = simulate(trace, pools, models, ["hybridrec", "hpa", "public-only", "private-only", "oracle"])
    rows = {r["policy"]: r for r in summary_rows(results)}
    assert rows["hybridrec"]["sensitive_violations"] == 0 and rows["hpa"]["sensitive_violations"] == 0
    # A cloud-only deployment puts the restricted model's data on public GPUs.
    assert rows["public-only"]["sensitive_violations"] > 0
    assert rows["hybridrec"]["x_oracle"] >= 1.0 and rows["oracle"]["x_oracle"] == 1.0
    # Per-model HPAs race for the private pool and starve the restricted model, which has nowhere else to go.
    assert results["hpa"].replicas["account-recs"].max() < results["hybridrec"].replicas["account-recs"].max()
    assert rows["hybridrec"]["slo_violation_minutes"] * 4 < rows["hpa"]["slo_violation_minutes"]
    assert rows["private-only"]["slo_violation_minutes"] > rows["hybridrec"]["slo_violation_minutes"]
    paths = write_plots(results, tmp_path, stem="mix")
    assert [p.name for p in paths] == ["mix_cost.png", "mix_replicas.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size < 150_000 for p in paths)


def test_simulate_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)
    trace = tmp_path / "short.csv"
    trace.write_text("\n".join((SAMPLES / "trace.csv").read_text().splitlines()[:31]) + "\n")  # 30 minutes
    args = ["simulate", "-t", str(trace), "-f", str(SAMPLES / "pools.yaml"), "-f", str(SAMPLES / "models.yaml"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "-p", "hybridrec", "-p", "hpa", "-p", "oracle"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "hybridrec" in result.output and "oracle" in result.output
    assert (tmp_path / "out" / "summary.json").exists() and (tmp_path / "out" / "short_cost.png").exists()
    bad = CliRunner().invoke(app, [*args, "-p", "magic"])
    assert bad.exit_code != 0 and "unknown policy" in bad.output
