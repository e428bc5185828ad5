"""The demo report: summary numbers from a recorded timeline, and HTML + PNGs written into a temp dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hybridrec_local.demo.files import POOLS_FILE
from hybridrec_local.demo.manifests import pool_infos
from hybridrec_local.report import PLOTS, render_html, write_report
from hybridrec_local.summary import (
    clock,
    max_public_replicas,
    money,
    peak_provisioning_spend,
    placement_violations,
    slo_attainment,
    spend_by_model,
    spend_by_pool,
    summary_lines,
)
from hybridrec_local.timeline import DecisionRecord, FlashSale, ModelInfo, ModelSample, Sample, Timeline

def _models() -> list[ModelInfo]:
    return [
        ModelInfo("account-recs", "default", "restricted", 50.0, False, 4.0),
        ModelInfo("homepage-recs", "default", "internal", 80.0, True, 12.0),
        ModelInfo("trending", "default", "public", 100.0, False, None),
    ]


def _pools() -> list:
    return pool_infos([d for d in yaml.safe_load_all(POOLS_FILE.read_text()) if d])


def make_timeline(hours: int = 24, *, restricted_on: str = "onprem-a100") -> Timeline:
    """One sample per simulated hour from 04:00; homepage bursts to spot during a 12:00-15:00 sale."""
    samples = []
    for i in range(hours + 1):
        h = 4.0 + i
        sale = 12 <= h < 15
        home = {"onprem-t4": 2, "aws-spot-l4": 3} if sale else {"onprem-t4": 2}
        samples.append(Sample(t=i * 10.0, sim_hour=h, models={
            "account-recs": ModelSample(offered_rps=5, served_rps=5, p95_ms=20 + i, client_p95_ms=25,
                                        replicas_by_pool={restricted_on: 1}, desired_by_pool={restricted_on: 1},
                                        cost_per_hour=0.9, cost_by_pool={restricted_on: 0.9}),
            "homepage-recs": ModelSample(offered_rps=30 if sale else 8, served_rps=29 if sale else 8,
                                         p95_ms=95.0 if sale else 30.0, replicas_by_pool=home,
                                         cost_per_hour=0.7 + (3.6 if sale else 0.0),
                                         cost_by_pool={"onprem-t4": 0.7, **({"aws-spot-l4": 3.6} if sale else {})}),
            "trending": ModelSample(offered_rps=3, served_rps=0, p95_ms=None, client_p95_ms=None,
                                    replicas_by_pool={"onprem-a100": 1}, cost_per_hour=0.9, cost_by_pool={"onprem-a100": 0.9}),
        }))
    return Timeline(
        started_at="2030-01-01T00:00:00+00:00", real_seconds=hours * 10.0, start_hour=4.0, currency="USD",
        pools=_pools(), models=_models(), sale=FlashSale("homepage-recs", 12.0, 15.0, 3.0), samples=samples,
        decisions=[DecisionRecord(t=70.0, sim_hour=11.0, model="homepage-recs", source="event", trigger="ScaledUp",
                                  message="5 replicas: 2 on onprem-t4, 3 on aws-spot-l4 <b>for</b> lunch-flash-sale")],
        kubectl_get_rmd="NAMESPACE   NAME\ndefault     account-recs",
    )


def test_spend_integrates_cost_over_simulated_hours() -> None:
    tl = make_timeline()
    spend = spend_by_model(tl)
    assert spend["account-recs"] == pytest.approx(0.9 * 24)
    assert spend["homepage-recs"] == pytest.approx(0.7 * 24 + 3.6 * 3)  # three sale hours on spot
    pools = spend_by_pool(tl)
    assert pools["aws-spot-l4"] == pytest.approx(3.6 * 3)
    assert pools["gcp-ondemand-a100"] == 0.0
    assert sum(pools.values()) == pytest.approx(sum(spend.values()))
    assert peak_provisioning_spend(tl)["homepage-recs"] == pytest.approx(4.3 * 24)


def test_no_violation_when_restricted_stays_private() -> None:
    tl = make_timeline()
    assert placement_violations(tl) == []
    assert any("account-recs never ran on a public pool" in line for line in summary_lines(tl))


def test_restricted_on_a_public_pool_is_reported_by_the_sensitivity_rule() -> None:
    tl = make_timeline(restricted_on="aws-spot-l4")
    violations = placement_violations(tl)
    assert len(violations) == len(tl.samples)
    assert {v.model for v in violations} == {"account-recs"}
    assert "restricted" in violations[0].reason
    assert any(line.startswith("PLACEMENT VIOLATION") for line in summary_lines(tl))


def test_internal_without_burst_on_public_is_a_violation() -> None:
    tl = make_timeline()
    tl.models[1].allow_public_burst = False
    assert {v.model for v in placement_violations(tl)} == {"homepage-recs"}


def test_public_replicas_inside_and_outside_the_sale() -> None:
    tl = make_timeline()
    assert max_public_replicas(tl, "homepage-recs", during_sale=True) == 3
    assert max_public_replicas(tl, "homepage-recs", during_sale=False) == 0
    line = next(line for line in summary_lines(tl) if line.startswith("Flash sale"))
    assert "up to 3 public replica(s) during the sale, 0 outside it" in line and "12:00" in line


def test_slo_attainment_counts_misses_and_skips_samples_without_traffic_or_data() -> None:
    att = slo_attainment(make_timeline())
    assert att["account-recs"] == (25, 25)  # p95 20..44 ms within 50
    assert att["homepage-recs"] == (22, 25)  # 95 ms during the three sale hours exceeds 80
    assert att["trending"] == (0, 0)  # nothing served, no p95


def test_slo_attainment_falls_back_to_the_client_p95() -> None:
    tl = make_timeline()
    for s in tl.samples:
        s.models["account-recs"].p95_ms = None
        s.models["account-recs"].client_p95_ms = 60.0  # over the 50 ms SLO
    assert slo_attainment(tl)["account-recs"] == (0, 25)


def test_money_and_clock_format() -> None:
    assert money(1234.5, "EUR") == "1,234.50 EUR"
    assert clock(4.0) == "04:00" and clock(27.5) == "03:30" and clock(12.999) == "13:00"


def test_timeline_round_trips_through_json() -> None:
    tl = make_timeline(3)
    assert Timeline.from_json(tl.to_json()) == tl


def test_html_escapes_operator_messages() -> None:
    html = render_html(make_timeline(), dict(PLOTS))
    assert "&lt;b&gt;for&lt;/b&gt;" in html and "<b>for</b>" not in html


def test_write_report_writes_html_that_references_existing_small_pngs(tmp_path: Path) -> None:
    tl = make_timeline()
    html_path = write_report(tl, tmp_path / "out")
    html = html_path.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(images) == sorted(PLOTS.values())
    for name in images:
        png = html_path.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 5_000 < png.stat().st_size < 150_000
    assert Timeline.from_json((html_path.parent / "timeline.json").read_text()) == tl
    # The decisions table and the kubectl output are in the page.
    assert "lunch-flash-sale" in html and "ScaledUp" in html and "kubectl get rmd -A" in html
    assert "no replica ever ran on a pool its data class forbids" in html
    assert money(0.9 * 24, "USD") in html


def test_write_report_handles_a_timeline_without_samples(tmp_path: Path) -> None:
    tl = make_timeline()
    tl.samples, tl.decisions = [], []
    html = write_report(tl, tmp_path).read_text()
    assert "The operator recorded no decisions" in html
    assert all((tmp_path / p).exists() for p in PLOTS.values())


def test_summary_says_how_long_before_the_sale_public_capacity_was_there() -> None:
    tl = make_timeline()
    assert "public replicas from 12:00 to 14:00" in next(line for line in summary_lines(tl) if line.startswith("Flash sale"))
    pre = next(s for s in tl.samples if s.sim_hour == 11.0)  # pre-scaled one simulated hour ahead
    pre.models["homepage-recs"].replicas_by_pool["aws-spot-l4"] = 2
    line = next(line for line in summary_lines(tl) if line.startswith("Flash sale"))
    assert "public replicas from 11:00 (60 simulated minutes before the sale) to 14:00" in line
    assert "2 outside it" in line
