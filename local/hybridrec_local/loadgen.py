"""Open-loop, paced load against model servers on 127.0.0.1: one implementation for the demo and the tests.

Open loop: requests leave on a schedule set by the target rate, whether or not earlier ones have answered (as real
users do), so an overloaded server shows up as latency and errors rather than as a politely slower client.
Bounded: a run stops by itself after ``duration_s`` and never has more than ``max_inflight`` requests outstanding
per stream (sends that would exceed it, or that find no ready server, are counted as ``dropped``, not queued).

A *stream* is one model's traffic: where its servers are (usually the pod runner's ``servers.json``, re-read every
half second), a rate profile ``rate(t)`` in requests/s, and which users to ask for. Arrivals are either evenly paced
(the tests: reproducible counts) or Poisson (the demo: what real users look like). Only 127.0.0.1 URLs are used.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

RateFn = Callable[[float], float]
ServersFn = Callable[[], list[str]]
ML100K_USERS = 943
# How often a stream re-reads where its servers are.
SERVERS_REFRESH_S = 0.5
# Completions kept per stream for windowed rates (the demo's live view); enough for minutes at the demo's rates.
WINDOW_RECORDS = 20_000


# ----------------------------------------------------------------------------------------------- rate profiles


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


def arrival_times(rate: RateFn, start: float, end: float, rng: random.Random, idle_step: float = 0.1) -> Iterator[float]:
    """Open-loop Poisson arrivals in [start, end) for a time-varying ``rate`` (requests/s); lazy, so pacing is cheap.

    The rate is read at each arrival (piecewise-constant between arrivals); while it is 0 time advances in ``idle_step``.
    """
    t = start
    while True:
        r = rate(t)
        t += rng.expovariate(r) if r > 0 else idle_step
        if t >= end:
            return
        if r > 0:
            yield t


def paced_times(rate: RateFn, start: float, end: float, idle_step: float = 0.1) -> Iterator[float]:
    """Evenly paced arrivals in [start, end): the next one ``1 / rate(t)`` after the last; lazy like
    :func:`arrival_times`."""
    t = start
    while t < end:
        r = rate(t)
        if r > 0:
            yield t
            step = 1.0 / r
        else:
            step = idle_step
        # Rounded to the nanosecond so that ten steps of 0.1 s end at 1.0, not just below it.
        t = round(t + step, 9)


# ----------------------------------------------------------------------------------------------- targets


def loopback_only(servers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The servers.json entries whose URL is on 127.0.0.1: load is never sent anywhere else."""
    return {key: [u for u in urls if urlparse(u).hostname == "127.0.0.1"] for key, urls in servers.items()}


def read_servers(path: Path, model_key: str) -> list[str]:
    """Ready server URLs of ``<namespace>/<model>`` from the pod runner's servers.json (empty when absent).

    The pod runner replaces the file atomically, so a reader never sees half of it.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return loopback_only({model_key: data.get(model_key, [])})[model_key]


# ----------------------------------------------------------------------------------------------- statistics


def window_stats(done: Sequence[tuple[float, float, bool]], now: float, window_s: float) -> tuple[float, float, float | None]:
    """(ok/s, failed/s, p95 ms of ok requests) over the last ``window_s`` seconds of completions."""
    recent = [(lat, ok) for t, lat, ok in done if now - window_s <= t <= now]
    ok_lat = sorted(lat for lat, ok in recent if ok)
    failed = sum(1 for _, ok in recent if not ok)
    p95 = None
    if ok_lat:
        p95 = ok_lat[min(len(ok_lat) - 1, math.ceil(0.95 * len(ok_lat)) - 1)] * 1000.0
    return len(ok_lat) / window_s, failed / window_s, p95


@dataclass
class LoadStats:
    """What one stream did. ``sent`` counts requests put on the wire (``ok`` + ``errors`` once they finish);
    ``dropped`` the arrivals that were not sent (``max_inflight`` reached or no ready server)."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    ok_by_url: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # status code, or the exception's name
    latencies_s: list[float] = field(default_factory=list)  # of ok requests
    # (seconds since start, latency s, ok) per completion or drop; a drop counts as a failure in a window.
    done: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=WINDOW_RECORDS))

    def p95(self) -> float | None:
        """p95 latency in seconds of every ok request so far."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


# ----------------------------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Stream:
    """One model's traffic. ``key`` names its statistics; ``servers()`` lists its ready servers now."""

    key: str
    servers: ServersFn
    rate: RateFn
    n_users: int = ML100K_USERS
    k: int = 10
    # Every Nth request asks for a user the model has never seen (served from popular items: a fallback).
    unknown_user_every: int = 0

    def user(self, i: int) -> str:
        if self.unknown_user_every > 0 and i % self.unknown_user_every == 0:
            return f"new-visitor-{i}"
        return str(1 + i % self.n_users)


class OpenLoopLoad:
    """Run several streams at once in a background thread (one asyncio task per stream), for ``duration_s``.

    ``poisson`` draws arrivals from a Poisson process (seeded by ``seed``), else they are evenly paced. An arrival
    more than ``max_lag_s`` late (a stalled loop) is skipped rather than sent in a burst.
    """

    def __init__(self, streams: Sequence[Stream], duration_s: float, *, max_inflight: int = 64,
                 timeout_s: float = 2.0, poisson: bool = False, seed: int = 7, max_lag_s: float = 1.0) -> None:
        keys = [s.key for s in streams]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stream keys must be unique: {keys}")
        self.streams = list(streams)
        self.duration_s = duration_s
        self.max_inflight = max_inflight
        self.timeout_s = timeout_s
        self.poisson = poisson
        self.max_lag_s = max_lag_s
        self.by_stream: dict[str, LoadStats] = {s.key: LoadStats() for s in streams}
        self.error: BaseException | None = None  # what stopped the load thread, if anything did
        self.started_at: float | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> OpenLoopLoad:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="open-loop-load", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop sending and wait for outstanding requests (bounded by their timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.timeout_s + 5)

    def wait(self) -> None:
        """Block until the profiles have run their course."""
        if self._thread is not None:
            self._thread.join(self.duration_s + self.timeout_s + 10)

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def window(self, key: str, window_s: float) -> tuple[float, float, float | None]:
        """(ok/s, failed/s, p95 ms) of stream ``key`` over the last ``window_s`` seconds."""
        now = self.elapsed_s
        with self._lock:
            done = list(self.by_stream[key].done)
        return window_stats(done, now, window_s)

    # ---- the loop
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - kept for the owner, which decides whether to go on
            self.error = exc

    async def _main(self) -> None:
        n = max(1, len(self.streams))
        limits = httpx.Limits(max_connections=self.max_inflight * n, max_keepalive_connections=self.max_inflight * n)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, trust_env=False) as client:
            await asyncio.gather(*(self._drive(client, s, random.Random(self._rng.random())) for s in self.streams))

    async def _drive(self, client: httpx.AsyncClient, stream: Stream, rng: random.Random) -> None:
        stats = self.by_stream[stream.key]
        times = (arrival_times(stream.rate, 0.0, self.duration_s, rng) if self.poisson
                 else paced_times(stream.rate, 0.0, self.duration_s))
        inflight: set[asyncio.Task[None]] = set()
        urls: list[str] = []
        urls_at = -math.inf
        i = 0
        for at in times:
            # Sleep in short slices so stop() is honoured within 0.1 s even at low rates.
            while (delay := at - self.elapsed_s) > 0 and not self._stop.is_set():
                await asyncio.sleep(min(delay, 0.1))
            if self._stop.is_set():
                break
            now = self.elapsed_s
            if now - at > self.max_lag_s:
                continue  # the loop stalled: do not make up for it with a burst
            if now - urls_at >= SERVERS_REFRESH_S:
                urls, urls_at = stream.servers(), now
            i += 1
            if not urls or len(inflight) >= self.max_inflight:
                with self._lock:
                    stats.dropped += 1
                    stats.done.append((now, 0.0, False))
                continue
            task = asyncio.create_task(self._one(client, stream, stats, urls[i % len(urls)], stream.user(i)))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=self.timeout_s + 1)

    async def _one(self, client: httpx.AsyncClient, stream: Stream, stats: LoadStats, url: str, user: str) -> None:
        began = time.monotonic()
        try:
            resp = await client.post(f"{url}/v1/recommend", json={"user_id": user, "k": stream.k})
            code = str(resp.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        elapsed = time.monotonic() - began
        ok = code == "200"
        with self._lock:
            stats.sent += 1
            stats.codes[code] += 1
            if ok:
                stats.ok += 1
                stats.ok_by_url[url] += 1
                stats.latencies_s.append(elapsed)
            else:
                stats.errors += 1
            stats.done.append((self.elapsed_s, elapsed, ok))


class PacedLoad(OpenLoopLoad):
    """One model's evenly paced load (the tests' shape): ``rate(t)`` requests/s for ``duration_s`` seconds against
    the servers of ``model_key`` in ``servers`` (a servers.json path, or a function returning URLs).

    ``stats`` is that one stream's :class:`LoadStats`; :meth:`stop` and :meth:`wait` return it.
    """

    def __init__(self, servers: Path | str | ServersFn, model_key: str, rate: RateFn, duration_s: float, *,
                 max_inflight: int = 64, timeout_s: float = 2.0, n_users: int = ML100K_USERS, k: int = 10,
                 unknown_user_every: int = 0) -> None:
        if isinstance(servers, (str, Path)):
            path = Path(servers)
            servers_fn: ServersFn = lambda: read_servers(path, model_key)  # noqa: E731
        else:
            servers_fn = servers
        self.model_key = model_key
        super().__init__([Stream(model_key, servers_fn, rate, n_users, k, unknown_user_every)], duration_s,
                         max_inflight=max_inflight, timeout_s=timeout_s)
        self.stats = self.by_stream[model_key]

    def start(self) -> PacedLoad:
        super().start()
        return self

    def stop(self, timeout_s: float | None = None) -> LoadStats:  # type: ignore[override]
        super().stop(timeout_s)
        return self.stats

    def wait(self) -> LoadStats:  # type: ignore[override]
        super().wait()
        return self.stats

    def __enter__(self) -> PacedLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
