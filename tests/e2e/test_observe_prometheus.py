"""observe() against a real Prometheus scraping a real exporter of the server metric names.

No cluster needed: an in-process prometheus_client exporter stands in for two model-server replicas, so the
numbers Prometheus computes can be compared with what was recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server
from support import eventually

from hybridrec_operator.controller.observe import DataState, HttpPromClient, PrometheusUnavailable, observe
from hybridrec_local.promlocal import SERVER_TARGETS, LocalPrometheus, free_port, write_json_atomically

pytestmark = pytest.mark.e2e

LABELS = ("namespace", "model", "pool")


class FakeServer:
    """The server's metric families (same names and labels), served on 127.0.0.1."""

    def __init__(self, pool: str) -> None:
        self.registry = CollectorRegistry()
        self.base = {"namespace": "shop", "model": "recs", "pool": pool}
        self.requests = Counter("hybridrec_server_requests", "", (*LABELS, "endpoint", "code"), registry=self.registry)
        self.duration = Histogram("hybridrec_server_request_duration_seconds", "", (*LABELS, "endpoint"),
                                  buckets=(0.01, 0.02, 0.05, 0.1), registry=self.registry)
        Gauge("hybridrec_server_ready", "", LABELS, registry=self.registry).labels(**self.base).set(1)
        Gauge("hybridrec_server_inflight_requests", "", LABELS, registry=self.registry).labels(**self.base).set(3)
        Gauge("hybridrec_server_queue_depth", "", LABELS, registry=self.registry).labels(**self.base).set(0)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def serve(self, n: int, seconds: float, code: str = "200") -> None:
        self.requests.labels(**self.base, endpoint="recommend", code=code).inc(n)
        for _ in range(n):
            self.duration.labels(**self.base, endpoint="recommend").observe(seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_observe_reads_rates_latency_and_freshness_from_real_prometheus(tmp_path: Path) -> None:
    t4, l4 = FakeServer("onprem-t4"), FakeServer("aws-spot-l4")
    write_json_atomically(tmp_path / "sd" / SERVER_TARGETS, [
        {"targets": [f"127.0.0.1:{s.port}"], "labels": {**s.base, "tenancy": "x", "sensitivity": "public", "pod": s.base["pool"]}}
        for s in (t4, l4)
    ])
    prom = LocalPrometheus(tmp_path, sd_dir=tmp_path / "sd", scrape_interval_s=1.0)
    prom.start()
    client = HttpPromClient(prom.url)
    expected = {("shop", "recs"): ["onprem-t4", "aws-spot-l4"]}
    try:
        # ~20 req/s on t4 at 15 ms, ~10 req/s on l4 at 40 ms (5% errors), for long enough for a 10 s rate
        stop_at = time.monotonic() + 14
        while time.monotonic() < stop_at:
            t4.serve(4, 0.015)
            l4.serve(2, 0.04)
            if int(time.monotonic() * 5) % 20 == 0:
                l4.serve(1, 0.04, code="503")
            time.sleep(0.2)
        obs = observe(client, expected, at=time.time(), window_s=10, max_age_s=5)
        m = obs.models[("shop", "recs")]
        assert m.state == DataState.OK, m.reason
        assert m.request_rate.value == pytest.approx(30.0, rel=0.3)
        assert m.pools["onprem-t4"].request_rate.value == pytest.approx(20.0, rel=0.3)
        assert m.pools["onprem-t4"].p95_seconds.value is not None and 0.01 < m.pools["onprem-t4"].p95_seconds.value <= 0.02
        assert m.pools["aws-spot-l4"].p95_seconds.value is not None and 0.02 < m.pools["aws-spot-l4"].p95_seconds.value <= 0.05
        assert m.p95_seconds.value is not None and 0.02 < m.p95_seconds.value <= 0.05
        assert 0 < (m.error_ratio.value or 0) < 0.2
        assert m.inflight.value == 6 and m.ready_servers.value == 2
        assert m.gpu_utilization.state == DataState.MISSING

        # One replica dies but stays in service discovery: Prometheus says so with a fresh up == 0.
        l4.close()
        def l4_down() -> bool:
            mo = observe(client, expected, at=time.time(), window_s=10, max_age_s=5).models[("shop", "recs")]
            return mo.pools["aws-spot-l4"].targets == 1 and mo.pools["aws-spot-l4"].targets_up == 0
        eventually(l4_down, 20, 0.5, "l4 reported down")

        prom.stop()
        with pytest.raises(PrometheusUnavailable):
            observe(client, expected, at=time.time())

        # Back with no targets: only the samples from before the outage remain (5-minute lookback). They are
        # stale, which is not the same as no demand.
        write_json_atomically(tmp_path / "sd" / SERVER_TARGETS, [])
        time.sleep(6)
        prom.start()
        m = observe(client, expected, at=time.time(), window_s=10, max_age_s=5).models[("shop", "recs")]
        assert m.state == DataState.STALE, m
        assert m.request_rate.value is None
    finally:
        prom.stop()
        t4.close()
        client.close()
