"""The shared open-loop load generator (hybridrec_local.loadgen) against a real HTTP server on loopback."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hybridrec_local.loadgen import OpenLoopLoad, PacedLoad, Stream, arrival_times, paced_times, read_servers, steps


class _Recommend(BaseHTTPRequestHandler):
    """Answers POST /v1/recommend with 200 (500 while the server's ``fail`` is set) and records the bodies it saw."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        ok = self.path == "/v1/recommend" and not self.server.fail  # type: ignore[attr-defined]
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"items": []}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[tuple[str, list[dict[str, object]]]]]:
    """Two real HTTP servers on 127.0.0.1, the second answering 500: (url, bodies received) each."""
    started = []
    for fail in (False, True):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recommend)
        httpd.seen = []  # type: ignore[attr-defined]
        httpd.fail = fail  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
    try:
        yield [(f"http://127.0.0.1:{s.server_address[1]}", s.seen) for s in started]  # type: ignore[attr-defined]
    finally:
        for s in started:
            s.shutdown()
            s.server_close()


def test_paced_times_follow_the_rate_and_skip_idle_time() -> None:
    times = list(paced_times(steps((1.0, 10.0), (2.0, 0.0), (3.0, 4.0)), 0.0, 3.0))
    assert len([t for t in times if t < 1.0]) == 10
    assert not [t for t in times if 1.0 <= t < 2.0]
    assert len([t for t in times if t >= 2.0]) == 4


def test_poisson_arrivals_average_the_rate() -> None:
    n = sum(1 for _ in arrival_times(lambda t: 50.0, 0.0, 20.0, random.Random(1)))
    assert 900 < n < 1100


def test_read_servers_keeps_loopback_urls_only(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    assert read_servers(path, "ns/m") == []  # no file yet: no server
    path.write_text(json.dumps({"ns/m": ["http://127.0.0.1:1", "http://10.0.0.1:2"], "ns/other": ["http://127.0.0.1:3"]}))
    assert read_servers(path, "ns/m") == ["http://127.0.0.1:1"]


def test_paced_load_sends_the_profile_round_robin_and_counts_what_came_back(servers: list) -> None:
    urls = [u for u, _ in servers]
    stats = PacedLoad(lambda: urls, "ns/m", steps((2.0, 20.0)), 2.0, unknown_user_every=5).start().wait()
    assert 30 <= stats.sent <= 41 and stats.dropped == 0, stats  # 40 planned; a stalled loop skips, never bursts
    # Round robin over both servers; the second answers 500, counted as errors by code.
    assert abs(stats.ok - stats.errors) <= 1 and stats.ok + stats.errors == stats.sent
    assert stats.codes["500"] == stats.errors and set(stats.ok_by_url) == {urls[0]}
    bodies = [b for _, seen in servers for b in seen]
    assert len(bodies) == stats.sent
    assert sum(1 for b in bodies if str(b["user_id"]).startswith("new-visitor-")) == stats.sent // 5
    assert all(b["k"] == 10 for b in bodies)
    assert stats.p95() is not None and len(stats.latencies_s) == stats.ok


def test_no_server_means_dropped_not_sent() -> None:
    stats = PacedLoad(lambda: [], "ns/m", steps((1.0, 10.0)), 1.0).start().wait()
    assert stats.sent == 0 and stats.dropped == 10


def test_stop_ends_the_load_early(servers: list) -> None:
    url = servers[0][0]
    load = PacedLoad(lambda: [url], "ns/m", steps((60.0, 5.0)), 60.0).start()
    threading.Event().wait(0.5)
    stats = load.stop()
    assert not load.running and 1 <= stats.sent <= 5


def test_several_streams_and_windowed_rates(servers: list) -> None:
    url = servers[0][0]
    load = OpenLoopLoad([Stream("a", lambda: [url], steps((1.5, 20.0))), Stream("b", lambda: [], steps((1.5, 10.0)))],
                        1.5, poisson=True, seed=3).start()
    load.wait()
    a_ok, a_failed, a_p95 = load.window("a", 1.5)
    b_ok, b_failed, b_p95 = load.window("b", 1.5)
    assert a_ok > 5 and a_failed == 0 and a_p95 is not None
    assert b_ok == 0 and b_failed > 2 and b_p95 is None  # no server: every arrival is a drop, a failure in the window
    with pytest.raises(ValueError, match="unique"):
        OpenLoopLoad([Stream("a", lambda: [], steps()), Stream("a", lambda: [], steps())], 1.0)
