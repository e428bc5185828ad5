"""Turning API objects, Prometheus answers and load statistics into timeline samples; the live view."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from hybridrec_local.demo.files import SCENARIO_FILE
from hybridrec_local.demo.live import render_live, status_line
from hybridrec_local.demo.observe import (
    LoadSnapshot,
    build_sample,
    new_decisions,
    placements_of,
    prom_vector,
    running_replicas,
)
from hybridrec_local.demo.scenario import load_scenario
from hybridrec_local.loadgen import loopback_only, window_stats
from hybridrec_local.timeline import ModelInfo, Timeline

MODELS = [ModelInfo("account-recs", "default", "restricted", 50.0), ModelInfo("homepage-recs", "default", "internal", 80.0, True)]


def pod(model: str, pool: str, phase: str = "Running", deleting: bool = False, ns: str = "default") -> dict:
    meta: dict = {"namespace": ns, "name": f"{model}-{pool}-x", "labels": {"hybridrec.io/model": model, "hybridrec.io/pool": pool}}
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def rmd(name: str, placements: list[dict], cost: float | None = None, last: dict | None = None) -> dict:
    status: dict = {"placements": placements}
    if cost is not None:
        status["costPerHour"] = cost
    if last is not None:
        status["lastDecision"] = last
    return {"metadata": {"namespace": "default", "name": name}, "status": status}


def prom(result: list[tuple[dict, str]]) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, v]} for m, v in result]}}


def test_running_replicas_count_only_running_pods_not_being_deleted() -> None:
    pods = [pod("a", "p1"), pod("a", "p1"), pod("a", "p2", phase="Pending"), pod("a", "p2", deleting=True), pod("b", "p2"),
            {"metadata": {"namespace": "default", "labels": {}}, "status": {"phase": "Running"}}]
    assert running_replicas(pods) == {("default", "a"): {"p1": 2}, ("default", "b"): {"p2": 1}}


def test_prom_vector_drops_nan_and_keys_by_labels() -> None:
    payload = prom([({"namespace": "default", "model": "a"}, "0.012"), ({"namespace": "default", "model": "b"}, "NaN")])
    assert prom_vector(payload, ("namespace", "model")) == {("default", "a"): 0.012}
    assert prom_vector({}, ("namespace",)) == {}


def test_placements_of_reads_status() -> None:
    desired, cost, total = placements_of(rmd("a", [{"pool": "p1", "desired": 2, "pricePerHour": 1.8}], cost=1.8))
    assert (desired, cost, total) == ({"p1": 2}, {"p1": 1.8}, 1.8)
    assert placements_of({"metadata": {"name": "x"}}) == ({}, {}, 0.0)


def test_build_sample_prefers_prometheus_cost_and_falls_back_to_status() -> None:
    rmds = [rmd("account-recs", [{"pool": "onprem-a100", "desired": 1, "pricePerHour": 0.9}], cost=0.9),
            rmd("homepage-recs", [{"pool": "onprem-t4", "desired": 2, "pricePerHour": 0.7}], cost=0.7)]
    pods = [pod("account-recs", "onprem-a100"), pod("homepage-recs", "onprem-t4"), pod("homepage-recs", "aws-spot-l4")]
    p95 = {("default", "account-recs"): 0.0123}
    cost = {("default", "homepage-recs", "onprem-t4"): 0.7, ("default", "homepage-recs", "aws-spot-l4"): 1.2}
    load = {"account-recs": LoadSnapshot(5.0, 4.5, 0.5, 14.0), "homepage-recs": LoadSnapshot(8.0, 8.0, 0.0, None)}
    s = build_sample(10.0, 5.0, MODELS, rmds, pods, p95, cost, load)
    a, h = s.models["account-recs"], s.models["homepage-recs"]
    assert (a.p95_ms, a.client_p95_ms, a.served_rps, a.error_rps) == (12.3, 14.0, 4.5, 0.5)
    assert a.cost_by_pool == {"onprem-a100": 0.9} and a.cost_per_hour == 0.9  # from the status
    assert h.cost_by_pool == {"onprem-t4": 0.7, "aws-spot-l4": 1.2} and h.cost_per_hour == pytest.approx(1.9)  # Prometheus
    assert h.replicas_by_pool == {"onprem-t4": 1, "aws-spot-l4": 1} and h.desired_by_pool == {"onprem-t4": 2}
    assert h.p95_ms is None


def test_new_decisions_from_events_and_last_decision_without_duplicates() -> None:
    events = [
        {"metadata": {"uid": "e1"}, "involvedObject": {"kind": "RecModelDeployment", "name": "homepage-recs"},
         "reason": "Scaled", "message": "3 -> 6 replicas for lunch-flash-sale", "count": 1, "lastTimestamp": "2030-01-01T00:00:01Z"},
        {"metadata": {"uid": "e2"}, "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Scheduled", "message": "m"},
    ]
    rmds = [rmd("homepage-recs", [], last={"time": "t1", "trigger": "controller", "message": "3 -> 6 replicas for lunch-flash-sale"}),
            rmd("account-recs", [], last={"time": "t1", "trigger": "spec", "message": "1 replica on onprem-a100"})]
    seen: set[str] = set()
    first = new_decisions(1.0, 4.1, rmds, events, seen)
    assert [(d.model, d.source, d.trigger) for d in first] == [("homepage-recs", "event", "Scaled"), ("account-recs", "status", "spec")]
    assert new_decisions(2.0, 4.2, rmds, events, seen) == []
    events[0]["count"] = 2  # the same event fired again
    again = new_decisions(3.0, 4.3, rmds, events, seen)
    assert [(d.model, d.t) for d in again] == [("homepage-recs", 3.0)]


def test_window_stats_rates_and_p95() -> None:
    done = [(t / 10, 0.010 + (t % 20) / 1000, True) for t in range(100)] + [(9.5, 0.5, False)]
    ok, failed, p95 = window_stats(done, now=10.0, window_s=5.0)
    assert ok == pytest.approx(50 / 5) and failed == pytest.approx(1 / 5)
    assert p95 == pytest.approx(29.0)  # nearest rank: the 48th of 50 latencies (10..29 ms)
    assert window_stats([], 10.0, 5.0) == (0.0, 0.0, None)


def _timeline() -> Timeline:
    from hybridrec_local.timeline import FlashSale, PoolInfo

    pools = [PoolInfo("onprem-a100", "private", 0.9, "USD", "reserved"), PoolInfo("aws-spot-l4", "public", 1.2, "USD", "spot")]
    return Timeline(started_at="x", real_seconds=240, start_hour=4, currency="USD", pools=pools, models=list(MODELS),
                    sale=FlashSale("homepage-recs", 12, 15, 3))


def render(renderable: object) -> str:
    console = Console(file=io.StringIO(), record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_live_view_shows_placement_latency_cost_and_sale() -> None:
    sc = load_scenario(SCENARIO_FILE)
    tl = _timeline()
    rmds = [rmd("account-recs", [], cost=0.9), rmd("homepage-recs", [], cost=4.3)]
    pods = [pod("account-recs", "onprem-a100"), pod("homepage-recs", "onprem-a100"), pod("homepage-recs", "aws-spot-l4")]
    load = {"account-recs": LoadSnapshot(5.0, 5.0, 0.0, 12.0), "homepage-recs": LoadSnapshot(20.0, 19.0, 0.0, 90.0)}
    t = sc.real_offset(13.0)
    tl.samples.append(build_sample(t, 13.0, tl.models, rmds, pods, {("default", "homepage-recs"): 0.09}, {}, load))
    text = render(render_live(tl, sc, t))
    assert "simulated 13:00" in text and "FLASH SALE on homepage-recs" in text
    assert "account-recs" in text and "restricted" in text and "onprem-a100:1" in text
    assert "aws-spot-l4:1" in text and "over" in text  # 90 ms against an 80 ms SLO
    assert "4.30 (12.00)" not in text  # no budget declared in this timeline
    assert "USD/h now" in text
    before = render(render_live(tl, sc, sc.real_offset(8.0)))
    assert "flash sale on homepage-recs at 12:00" in before


def test_live_view_and_status_line_before_any_sample() -> None:
    sc = load_scenario(SCENARIO_FILE)
    tl = _timeline()
    assert "none yet" in render(render_live(tl, sc, 0.0))
    assert status_line(tl, sc, 0.0) == "[04:00]"


def test_live_view_shows_operator_text_literally() -> None:
    from hybridrec_local.timeline import DecisionRecord

    sc = load_scenario(SCENARIO_FILE)
    tl = _timeline()
    tl.decisions.append(DecisionRecord(1.0, 4.1, "homepage-recs", "event", "Scaled", "moved [bold]2[/bold] replicas"))
    assert "moved [bold]2[/bold] replicas" in render(render_live(tl, sc, 1.0))


def test_load_goes_only_to_loopback_servers() -> None:
    servers = {"default/a": ["http://127.0.0.1:8080", "http://10.0.0.5:8080", "http://localhost.evil:1"], "default/b": []}
    assert loopback_only(servers) == {"default/a": ["http://127.0.0.1:8080"], "default/b": []}
