"""A paced, open-loop load generator for the closed-loop test and the demo.

Open loop: requests leave on a schedule set by the target rate, whether or not earlier ones have answered
(as real users do), so an overloaded server shows up as latency and errors rather than as a politely
slower client. Bounded: it stops by itself after ``duration_s`` and never has more than ``max_inflight``
requests outstanding (sends that would exceed it are counted as ``dropped``, not queued).

Targets come from the pod runner's ``servers.json`` (re-read every half second) and are used round-robin.
Only 127.0.0.1 URLs are accepted.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import httpx

RateFn = Callable[[float], float]


def ramp(start_rps: float, end_rps: float, ramp_s: float, hold_s: float = float("inf")) -> RateFn:
    """Linear ramp from ``start_rps`` to ``end_rps`` over ``ramp_s`` seconds, then hold, then 0 after ``hold_s``."""

    def rate(t: float) -> float:
        if t < ramp_s:
            return start_rps + (end_rps - start_rps) * t / ramp_s
        return end_rps if t < ramp_s + hold_s else 0.0

    return rate


def steps(*pairs: tuple[float, float]) -> RateFn:
    """Piecewise constant: ``(until_s, rps)`` pairs in order; 0 after the last."""

    def rate(t: float) -> float:
        for until, rps in pairs:
            if t < until:
                return rps
        return 0.0

    return rate


def read_servers(path: Path, model_key: str) -> list[str]:
    """Ready server URLs of ``<namespace>/<model>`` from the pod runner's servers.json (empty when absent)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    urls = [u for u in data.get(model_key, []) if urlparse(u).hostname == "127.0.0.1"]
    return urls


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0  # not sent: max_inflight reached or no server known
    ok_by_url: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def p95(self) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class PacedLoad:
    """Run a rate profile against one model's servers in a background thread.

    ``rate(t)`` gives the target requests/s at ``t`` seconds after start; ``duration_s`` bounds the run.
    """

    def __init__(
        self,
        servers: Path | Callable[[], list[str]],
        model_key: str,
        rate: RateFn,
        duration_s: float,
        *,
        max_inflight: int = 64,
        timeout_s: float = 2.0,
        n_users: int = 943,
        k: int = 10,
        unknown_user_every: int = 0,
    ) -> None:
        if isinstance(servers, (str, Path)):
            path = Path(servers)
            self._servers: Callable[[], list[str]] = lambda: read_servers(path, model_key)
        else:
            self._servers = servers
        self.model_key = model_key
        self.rate = rate
        self.duration_s = duration_s
        self.max_inflight = max_inflight
        self.timeout_s = timeout_s
        self.n_users = n_users
        self.k = k
        # Every Nth request asks for a user the model has never seen (served from popular items: a fallback).
        self.unknown_user_every = unknown_user_every
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started_at: float | None = None

    # ---- lifecycle
    def start(self) -> "PacedLoad":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="paced-load", daemon=True)
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> LoadStats:
        """Stop sending and wait for outstanding requests (bounded by their timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.timeout_s + 5)
        return self.stats

    def wait(self) -> LoadStats:
        """Block until the profile has run its course."""
        if self._thread is not None:
            self._thread.join(self.duration_s + self.timeout_s + 10)
        return self.stats

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "PacedLoad":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the loop
    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.max_inflight, max_keepalive_connections=self.max_inflight)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            inflight: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            urls: list[str] = []
            urls_at = -1.0
            next_at = 0.0
            i = 0
            while not self._stop.is_set():
                t = time.monotonic() - start
                if t >= self.duration_s:
                    break
                if t - urls_at >= 0.5:
                    urls, urls_at = self._servers(), t
                rps = max(self.rate(t), 0.0)
                if rps <= 0:
                    next_at = t + 0.1
                    await asyncio.sleep(0.1)
                    continue
                if t < next_at:
                    await asyncio.sleep(min(next_at - t, 0.05))
                    continue
                # Schedule from the plan, not from now: a late loop catches up instead of silently sending less.
                next_at = max(next_at, t - 1.0) + 1.0 / rps
                with self._lock:
                    self.stats.sent += 1
                if not urls or len(inflight) >= self.max_inflight:
                    with self._lock:
                        self.stats.dropped += 1
                    continue
                url = urls[i % len(urls)]
                i += 1
                unknown = self.unknown_user_every > 0 and i % self.unknown_user_every == 0
                user = f"new-visitor-{i}" if unknown else str(1 + i % self.n_users)
                task = asyncio.create_task(self._one(client, url, user))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.wait(inflight, timeout=self.timeout_s + 1)

    async def _one(self, client: httpx.AsyncClient, url: str, user: str) -> None:
        began = time.monotonic()
        try:
            resp = await client.post(f"{url}/v1/recommend", json={"user_id": user, "k": self.k})
            code = str(resp.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        elapsed = time.monotonic() - began
        with self._lock:
            self.stats.codes[code] += 1
            if code == "200":
                self.stats.ok += 1
                self.stats.ok_by_url[url] += 1
                self.stats.latencies_s.append(elapsed)
            else:
                self.stats.errors += 1
