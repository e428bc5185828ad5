"""Serving benchmark, one run, for two models (two-tower and the SASRec transformer):

  (a) raw batched forward (``RecommenderModel.predict`` on prepared queries, in-process): the model ceiling;
  (b) a no-op model behind the same HTTP stack (same app, middleware, parsing, batcher; ``predict`` returns a canned
      answer): the transport ceiling, once, since it does not depend on the model;
  (c) hybridrec-server with dynamic batching (``/v1/recommend``; also the Open Inference Protocol ``/v2`` infer);
  (c') hybridrec-server with batching off;
  (d) KServe's Python ModelServer (``kserve`` on PyPI) serving the same artifact with the same predict code;
  (e) Ray Serve with ``@serve.batch`` serving the same artifact with the same predict code.

For each: throughput at p95 <= 50 ms (a geometric rate ramp until the SLO breaks, then bisection) and the latency
at a fixed offered load. Load comes from an open-loop, constant-arrival-rate generator in its own process(es): a
minimal asyncio HTTP/1.1 client with a connection pool; requests are sent on schedule whether or not earlier ones
finished and latency is measured from the scheduled send time, so queueing is never hidden. Everything binds
127.0.0.1 and every step is bounded in time.

    python benchmarks/serving.py                                   # CPU here; writes benchmarks/results/serving.md
    python benchmarks/serving.py --skip-ray --skip-kserve          # only what the base install has
    python benchmarks/serving.py --skip-ray --device cuda --out /tmp/serving-h200   # a GPU machine

``--out`` is a directory: ``serving.md`` (the report) and ``serving.json`` (every step) are written there.
``--kserve-site DIR`` puts a ``pip install --target DIR kserve`` directory in front of the KServe process's path
only (kserve pins pandas<3 and other versions the main environment does not use).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from machine import cpu_model, memory_gib

ROOT = Path(__file__).resolve().parent
OUT_DIR = ROOT / "results"
ARTIFACTS = Path.home() / ".cache" / "hybridrec" / "artifacts"
P95_SLO_S = 0.050
MAX_BATCH = 64
BATCH_DELAY_MS = 5.0
MODEL_NAME = "bench"
MODELS = ("two-tower", "sasrec")
SYSTEMS = ("noop", "noop-thread-parse", "batching", "v2", "no-batching", "kserve", "ray-serve")
LABELS = {
    "noop": "(b) no-op model, same HTTP stack (transport ceiling)",
    "noop-thread-parse": "(b') no-op model, every body parsed on a worker thread (the server before this change)",
    "batching": "(c) hybridrec-server, dynamic batching, /v1/recommend",
    "v2": "(c) hybridrec-server, dynamic batching, /v2 infer (Open Inference Protocol)",
    "no-batching": "(c') hybridrec-server, batching off",
    "kserve": "(d) KServe ModelServer (no in-process batching)",
    "ray-serve": "(e) Ray Serve `@serve.batch`",
}


# --------------------------------------------------------------------------- pure helpers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); inf for an empty list."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    # nearest rank: the smallest value with at least q% of the values at or below it
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered) - 1e-9) - 1))
    return ordered[rank]


def step_ok(step: dict[str, Any]) -> bool:
    """A rate step meets the SLO: p95 within 50 ms, < 1% errors, and the server kept up with the offered rate."""
    return step["p95_s"] <= P95_SLO_S and step["error_ratio"] < 0.01 and step["achieved_rps"] >= 0.95 * step["offered_rps"]


def best_ok_rate(steps: list[dict[str, Any]]) -> float:
    """Highest achieved throughput among steps that met the SLO (0 if none)."""
    return max((s["achieved_rps"] for s in steps if step_ok(s)), default=0.0)


def summarize(
    samples: Sequence[tuple[float, float, bool]], rate: float, measure_from: float, duration_s: float, sent: int,
    unfinished: int,
) -> dict[str, Any]:
    """Step statistics over the measured window; unanswered requests count as infinitely slow (pure)."""
    measured = [(lat, ok) for s, lat, ok in samples if s >= measure_from]
    good = [lat for lat, ok in measured if ok]
    errors = sent - len(good)
    lat_all = good + [float("inf")] * max(0, errors)
    return {
        "offered_rps": round(rate, 1),
        "achieved_rps": round(len(good) / duration_s, 1),
        "sent": sent,
        "errors": errors,
        "unfinished": unfinished,
        "error_ratio": errors / sent if sent else 1.0,
        "p50_s": percentile(lat_all, 50),
        "p95_s": percentile(lat_all, 95),
        "p99_s": percentile(lat_all, 99),
    }


def request_bodies(kind: str, users: list[str], n: int = 512, seed: int = 0) -> list[bytes]:
    """Request bodies for one API flavour, for random known users (pure)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user = rng.choice(users)
        if kind == "v1":
            doc: Any = {"user_id": user, "k": 10}
        elif kind == "v2":
            doc = {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": [user]}],
                   "parameters": {"k": 10}}
        elif kind == "kserve":
            doc = {"instances": [{"user_id": user, "k": 10}]}
        else:
            raise ValueError(kind)
        out.append(json.dumps(doc).encode())
    return out


def path_for(kind: str) -> str:
    return {"v1": "/v1/recommend", "v2": f"/v2/models/{MODEL_NAME}/infer", "kserve": f"/v1/models/{MODEL_NAME}:predict"}[kind]


def leaf_shares(
    collapsed: str, top: int = 25
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks ('f1;f2;leaf count' lines): share of samples by leaf function, by the
    package of the leaf frame (self time) and by package anywhere on the stack (inclusive time) (pure)."""
    by_leaf: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        by_leaf[frames[-1]] += n
        by_pkg[_package(frames[-1])] += n
        for pkg in {_package(f) for f in frames}:
            inclusive[pkg] += n
    if not total:
        return [], [], []
    return (
        [(k, v / total) for k, v in by_leaf.most_common(top)],
        [(k, v / total) for k, v in by_pkg.most_common(top)],
        [(k, v / total) for k, v in inclusive.most_common(top)],
    )


def _package(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:12)' -> 'pkg'; frames without a file (native, idle) by name."""
    if "(" not in frame:
        return frame.strip() or "?"
    where = frame.rsplit("(", 1)[1].rstrip(")")
    path = where.split(":", 1)[0]
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "hybridrec_server" in path:
        return "hybridrec_server/" + path.rsplit("/", 1)[-1]
    if "/lib/python" in path:
        return "stdlib/" + path.rsplit("/", 1)[-1]
    # py-spy shortens paths to the import root: 'uvicorn/protocols/http/httptools_impl.py' -> 'uvicorn'
    return path.split("/", 1)[0].removesuffix(".py") or "?"


# --------------------------------------------------------------------------- load generator (own processes)


class HttpConn:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for JSON POSTs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + body)
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        status = int(line.split()[1])
        length, chunked = 0, False
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status


class LoadGen:
    """Open-loop constant-rate load against one URL path, one share of the schedule per worker process."""

    def __init__(self, host: str, port: int, path: str, bodies: list[bytes], max_conns: int = 512) -> None:
        self.host, self.port, self.path = host, port, path
        self.requests = [self._head(b) + b for b in bodies]
        self.idle: list[HttpConn] = []
        # at most max_conns requests outstanding; more wait here (and their wait counts as latency)
        self.slots = asyncio.Semaphore(max_conns)

    def _head(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()

    async def _one(self, scheduled: float, out: list[tuple[float, float, bool]]) -> None:
        request = random.choice(self.requests)
        ok = False
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            try:
                if conn is None:
                    conn = HttpConn(*await asyncio.open_connection(self.host, self.port))
                ok = (await conn.post(request, b"")) == 200
                self.idle.append(conn)
            except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError):
                if conn is not None:
                    conn.writer.close()
        out.append((scheduled, time.perf_counter() - scheduled, ok))

    async def fire(
        self, rate: float, start: float, measure_from: float, end: float, offset: int, stride: int, grace_s: float
    ) -> tuple[list[tuple[float, float, bool]], int, int]:
        """Send requests ``offset, offset + stride, ...`` of a ``rate`` schedule from ``start`` to ``end``.

        Times are ``time.perf_counter`` (CLOCK_MONOTONIC on Linux, shared by the worker processes; uvloop's
        ``loop.time()`` has only millisecond resolution). Returns samples, requests sent in the measured window and
        requests left unanswered after the grace period.
        """
        loop = asyncio.get_running_loop()
        out: list[tuple[float, float, bool]] = []
        tasks: set[asyncio.Task[None]] = set()
        i, sent = offset, 0
        while True:
            scheduled = start + i / rate
            if scheduled >= end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(self._one(scheduled, out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += scheduled >= measure_from
            i += stride
        if tasks:
            await asyncio.wait(list(tasks), timeout=grace_s)
        unfinished = len(tasks)
        for task in list(tasks):
            task.cancel()
        for conn in self.idle:
            conn.writer.close()
        return out, sent, unfinished


def _worker_step(spec: dict[str, Any]) -> tuple[list[tuple[float, float, bool]], int, int]:
    """One worker's share of a step (runs in a worker process)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def go() -> tuple[list[tuple[float, float, bool]], int, int]:
        gen = LoadGen("127.0.0.1", spec["port"], spec["path"], spec["bodies"])
        return await gen.fire(spec["rate"], spec["start"], spec["measure_from"], spec["end"], spec["offset"],
                              spec["stride"], spec["grace_s"])

    return asyncio.run(go())


class Stepper:
    """Runs rate steps across ``procs`` load-generator processes (one suffices on a 2-core machine)."""

    def __init__(self, port: int, path: str, bodies: list[bytes], procs: int, duration: float, warmup: float) -> None:
        self.port, self.path, self.bodies = port, path, bodies
        self.procs, self.duration, self.warmup = procs, duration, warmup
        self.pool = concurrent.futures.ProcessPoolExecutor(procs) if procs > 1 else None

    def step(self, rate: float) -> dict[str, Any]:
        start = time.perf_counter() + (0.3 if self.pool else 0.05)
        measure_from = start + self.warmup
        end = measure_from + self.duration
        specs = [
            {"port": self.port, "path": self.path, "bodies": self.bodies, "rate": rate, "start": start,
             "measure_from": measure_from, "end": end, "offset": w, "stride": self.procs, "grace_s": 5.0}
            for w in range(self.procs)
        ]
        parts = list(self.pool.map(_worker_step, specs)) if self.pool else [_worker_step(specs[0])]
        samples = [s for out, _, _ in parts for s in out]
        return summarize(samples, rate, measure_from, self.duration, sum(p[1] for p in parts), sum(p[2] for p in parts))

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """The fixed-load step first (with at least 2 s of warm-up: after an overload step a server can hold a backlog
    for seconds, which would be measured instead of the fixed load), then a geometric rate ramp until the SLO
    breaks, then bisection."""
    bodies = [b.encode() for b in json.loads(Path(args.bodies_file).read_text())]
    fixed = None
    if args.fixed_rate > 0:
        warm = Stepper(args.port, args.path, bodies, args.procs, args.duration, max(args.warmup, 2.0))
        try:
            fixed = warm.step(args.fixed_rate)
            print(json.dumps({"fixed": fixed}), file=sys.stderr, flush=True)
        finally:
            warm.close()
        time.sleep(1.0)
    stepper = Stepper(args.port, args.path, bodies, args.procs, args.duration, args.warmup)
    try:
        steps: list[dict[str, Any]] = []
        deadline = time.monotonic() + args.budget_s
        rate, good, bad = args.start_rate, 0.0, None
        while rate <= args.max_rate and time.monotonic() < deadline:
            step = stepper.step(rate)
            if not step_ok(step):
                # the CPU is shared: retry a failed step once so one burst elsewhere does not end the ramp
                print(json.dumps({"retry": step}), file=sys.stderr, flush=True)
                time.sleep(1.0)
                step = stepper.step(rate)
                step["retried"] = True
            steps.append(step)
            print(json.dumps(step), file=sys.stderr, flush=True)
            if not step_ok(step):
                bad = rate
                break
            good = rate
            rate *= args.factor
        for _ in range(args.bisect):
            if bad is None or time.monotonic() >= deadline:
                break
            time.sleep(1.0)  # let the server drain the overload before probing again
            mid = (good + bad) / 2 if good else bad / 2
            step = stepper.step(mid)
            steps.append(step)
            print(json.dumps(step), file=sys.stderr, flush=True)
            if step_ok(step):
                good = mid
            else:
                bad = mid
    finally:
        stepper.close()
    return {"fixed": fixed, "steps": sorted(steps, key=lambda s: s["offered_rps"])}


def loadgen_main(args: argparse.Namespace) -> int:
    print(json.dumps(sweep(args)))
    return 0


# --------------------------------------------------------------------------- servers under test (own processes)


def _noop_model_class() -> type:
    from hybridrec_server.predictor import Query, Recommendation, RecommenderModel

    class NoopModel(RecommenderModel):
        """The real model's load, id maps and ``prepare``; ``predict`` returns a canned top-10 without torch."""

        def warmup(self, batch_size: int = 64) -> None:
            self._canned = [(self._item_ids[i], 1.0 - i / 100) for i in range(min(100, self.n_items))]
            self.ready = True

        def predict(self, queries: Sequence[Query]) -> list[Recommendation]:
            return [Recommendation(q.user_id, self._canned[: q.k], False) for q in queries]

    return NoopModel


def noop_main(args: argparse.Namespace) -> int:
    """(b): the hybridrec app and uvicorn exactly as ``python -m hybridrec_server`` runs them, with the no-op model."""
    import prometheus_client

    from hybridrec_server.__main__ import serve
    from hybridrec_server.app import create_app
    from hybridrec_server.settings import Settings

    settings = Settings(
        model_uri=args.artifact, model_name=MODEL_NAME, pool="bench", host="127.0.0.1", port=args.port,
        max_batch_size=MAX_BATCH, max_batch_delay_ms=BATCH_DELAY_MS, max_queue=4096, device="cpu", log_level="warning",
    )
    prometheus_client.disable_created_metrics()
    if args.inline_parse_bytes is not None:  # (b'): the A/B of parsing small bodies on the event loop
        import hybridrec_server.app as app_module

        app_module.INLINE_PARSE_BYTES = args.inline_parse_bytes
    model = _noop_model_class()(MODEL_NAME, args.artifact, device="cpu")
    serve(create_app(settings, model=model), settings)
    return 0


def _payload(rec: Any) -> dict[str, Any]:
    return {"user_id": rec.user_id, "items": [{"item_id": i, "score": s} for i, s in rec.items], "fallback": rec.fallback}


def kserve_main(args: argparse.Namespace) -> int:
    """(d): KServe's Python ModelServer with the same artifact and predict code (V1 protocol ``:predict``).

    KServe's Python server has no in-process dynamic batching (KServe batches in its Go agent sidecar, configured
    per InferenceService), so each request is one forward, as a KServe model author would write it.
    """
    import uvicorn

    # kserve hard-codes host 0.0.0.0 for its REST server; everything in this benchmark binds loopback only
    original = uvicorn.Config.__init__

    def loopback_only(self: Any, *a: Any, **kw: Any) -> None:
        kw["host"] = "127.0.0.1"
        original(self, *a, **kw)

    uvicorn.Config.__init__ = loopback_only  # type: ignore[method-assign]
    import kserve
    import torch

    from hybridrec_server.predictor import RecommenderModel

    if args.device == "cpu":
        torch.set_num_threads(1)

    class KServeRecommender(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(MODEL_NAME)
            self.rec = RecommenderModel(MODEL_NAME, args.artifact, device=args.device)

        def load(self) -> bool:
            self.rec.load()
            self.rec.warmup(MAX_BATCH)
            self.ready = True
            return True

        def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
            queries = [self.rec.prepare(i["user_id"], i.get("k", 10)) for i in payload["instances"]]
            return {"predictions": [_payload(r) for r in self.rec.predict(queries)]}

    model = KServeRecommender()
    model.load()
    server = kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False, enable_latency_logging=False)
    # per-request access and trace logs off, as in hybridrec-server and Ray Serve here: logging is not compared
    import logging

    for logger in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    server.start([model])
    return 0


def ray_main(args: argparse.Namespace) -> int:
    """(e): serve the artifact with Ray Serve + @serve.batch on 127.0.0.1:port until SIGTERM."""
    import ray
    from ray import serve
    from starlette.requests import Request

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, logging_level="ERROR")
    device = args.device

    # access logs off, as in hybridrec-server: per-request logging is not what is being compared
    @serve.deployment(
        max_ongoing_requests=1024, ray_actor_options={"num_cpus": 1, "num_gpus": 1 if device == "cuda" else 0},
        logging_config={"enable_access_log": False},
    )
    class RayRecommender:
        def __init__(self, artifact: str) -> None:
            import torch

            from hybridrec_server.predictor import RecommenderModel

            if device == "cpu":
                torch.set_num_threads(1)
            self.model = RecommenderModel("ray", artifact, device=device)
            self.model.load()
            self.model.warmup(MAX_BATCH)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_DELAY_MS / 1000)
        async def handle(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
            queries = [self.model.prepare(b["user_id"], b.get("k", 10)) for b in bodies]
            return [_payload(r) for r in self.model.predict(queries)]

        async def __call__(self, request: Request) -> dict[str, Any]:
            return await self.handle(await request.json())

    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(RayRecommender.bind(args.artifact), route_prefix="/v1/recommend", name="bench")
    print("RAY-READY", flush=True)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + args.max_lifetime_s
    while not stop and time.monotonic() < deadline:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()
    return 0


class Child:
    """A server under test in its own process, ready when ``ready_url`` answers 200 (or a line appears)."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def wait_http(self, url: str, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.log.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"not ready after {timeout_s:.0f}s: {self.log.read_text(errors='replace')[-1500:]}")

    def wait_line(self, needle: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"no {needle!r}: {self.log.read_text(errors='replace')[-1500:]}")

    def stop(self, timeout_s: float = 60) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


# --------------------------------------------------------------------------- measurements


def run_sweep(port: int, kind: str, users: list[str], work: Path, args: argparse.Namespace, start_rate: float) -> dict[str, Any]:
    """Run the load generator process against ``port`` and return its fixed step and sweep."""
    bodies_file = work / f"bodies-{kind}.json"
    bodies_file.write_text(json.dumps([b.decode() for b in request_bodies(kind, users)]))
    cmd = [
        sys.executable, __file__, "loadgen", "--port", str(port), "--path", path_for(kind), "--bodies-file",
        str(bodies_file), "--start-rate", str(start_rate), "--duration", str(args.duration), "--warmup",
        str(args.warmup), "--budget-s", str(args.budget_s), "--procs", str(args.loadgen_procs),
        "--fixed-rate", str(args.fixed_rate),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_s + 180)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_forward(
    artifact: Path, users: list[str], device: str, seconds_per_size: float = 1.5, precision: str = "auto"
) -> list[dict[str, Any]]:
    """(a) The ceiling: ``predict`` on prepared batches in-process (one torch thread on CPU, like the server)."""
    import torch

    from hybridrec_server.predictor import RecommenderModel

    if device == "cpu":
        torch.set_num_threads(1)
    model = RecommenderModel("raw", str(artifact), device=device, precision=precision)
    model.load()
    model.warmup(256)
    rows = []
    rng = random.Random(0)
    for size in (1, 4, 16, 32, 64, 128, 256):
        times: list[float] = []
        deadline = time.perf_counter() + seconds_per_size
        while time.perf_counter() < deadline or len(times) < 5:
            batch = [model.prepare(rng.choice(users), 10) for _ in range(size)]
            t0 = time.perf_counter()
            model.predict(batch)  # ends in .cpu().tolist(): includes the device sync
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({"batch_size": size, "median_batch_s": med, "p95_batch_s": percentile(times, 95),
                     "throughput_rps": size / med})
    return rows


def mean_batch_size(url: str) -> float | None:
    """Mean batch size over the server's life, from its own histogram."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = count = None
    for line in text.splitlines():
        if line.startswith("hybridrec_server_batch_size_sum{"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("hybridrec_server_batch_size_count{"):
            count = float(line.rsplit(" ", 1)[1])
    return total / count if total is not None and count else None


def server_env(batching: bool, device: str) -> dict[str, str]:
    return {
        "HYBRIDREC_BATCHING": "true" if batching else "false",
        "HYBRIDREC_MAX_BATCH_SIZE": str(MAX_BATCH),
        "HYBRIDREC_MAX_BATCH_DELAY_MS": str(BATCH_DELAY_MS),
        "HYBRIDREC_MAX_QUEUE": "4096",
        "HYBRIDREC_TORCH_THREADS": "1",
        "HYBRIDREC_LOG_LEVEL": "warning",
        "HYBRIDREC_DEVICE": device,
    }


def profile_transport(port: int, pid: int, users: list[str], work: Path, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """Sample the no-op server with py-spy while it serves ``rate`` req/s; shares by leaf function and package."""
    spy = shutil.which("py-spy")
    if not spy:
        return {"error": "py-spy not installed"}
    out = work / "noop.collapsed"
    seconds = max(4, int(args.duration + args.warmup))
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250", "--format", "raw",
           "--output", str(out), "--nonblocking"]
    prof = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    sub = argparse.Namespace(**{**vars(args), "fixed_rate": rate, "budget_s": 0.0})
    step = run_sweep(port, "v1", users, work, sub, rate)["fixed"]
    try:
        log = prof.communicate(timeout=seconds + 30)[0]
    except subprocess.TimeoutExpired:
        prof.kill()
        log = prof.communicate()[0]
    if prof.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed (exit {prof.returncode}): {log.strip()[-500:]}"}
    leaves, packages, inclusive = leaf_shares(out.read_text())
    return {"rate": rate, "step": step, "leaves": leaves, "packages": packages, "inclusive": inclusive,
            "seconds": seconds, "samples": sum(int(l.rpartition(" ")[2]) for l in out.read_text().splitlines()
                                               if l.rpartition(" ")[2].isdigit())}


# --------------------------------------------------------------------------- report


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "timeout" if seconds == float("inf") else f"{seconds * 1000:.1f}"


def raw_ceiling(raw: list[dict[str, Any]]) -> dict[str, Any]:
    return max((r for r in raw if r["p95_batch_s"] <= P95_SLO_S), key=lambda r: r["throughput_rps"], default=raw[0])


def render(results: dict[str, Any], command: str) -> str:
    """Markdown report (pure given the results)."""
    meta = results["meta"]
    noop = results.get("noop")
    transport = best_ok_rate(noop["steps"]) if noop and "steps" in noop else None
    lines = [
        "# Serving benchmark",
        "",
        f"One run, {meta['started']}: `{command}`.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']:.0f} GiB RAM; "
        f"{meta['gpu'] or 'no GPU'}; device used: **{meta['device']}**. Server, load generator "
        f"({meta['loadgen_procs']} process(es)) and, for (d)/(e), KServe's or Ray's processes share these cores.",
        f"- Other work on the machine: 1-minute load average {meta['load_start']:.1f} when the run started"
        + (" (other engineers' clusters and tests share the 2 cores: absolute numbers are noisy, +-30% between runs "
           "is usual)." if meta["cores"] <= 4 else "."),
        f"- Software: Python {meta['python']}, torch {meta['torch']}, uvicorn {meta['uvicorn']} with {meta['loop']} "
        f"loop / {meta['http']} parser, kserve {meta['kserve']}, Ray {meta['ray']}.",
        "- Request: one user, k = 10 (`{\"user_id\": <random known user>, \"k\": 10}` or its V2/KServe "
        "equivalent); SASRec scores the user's stored history (the most recent 50 items).",
        f"- Batching (c, e): max batch {MAX_BATCH}, max delay {BATCH_DELAY_MS:g} ms. Load: open loop, constant "
        f"arrival rate, {meta['duration']:g} s measured after {meta['warmup']:g} s warm-up per step; latency from the "
        "scheduled send time; a step passes when p95 <= 50 ms, errors < 1 % and achieved >= 95 % of offered. "
        f"Fixed load: {meta['fixed_rate']:g} req/s offered to every system.",
        "",
    ]
    for name in results["models"]:
        res = results["models"][name]
        ceil_row = raw_ceiling(res["raw"])
        a = ceil_row["throughput_rps"]
        lines += [f"## {name}", "", f"Model: {res['desc']}.", "",
                  f"| system | req/s at p95 <= 50 ms | p50 / p95 / p99 ms at {meta['fixed_rate']:g} req/s | notes |",
                  "|---|---:|---:|---|",
                  f"| (a) raw batched forward, batch {ceil_row['batch_size']} (model ceiling, in-process) | {a:,.0f} | "
                  f"{ceil_row['median_batch_s'] * 1000:.2f} ms per batch (median) | no HTTP |"]
        rows: dict[str, dict[str, Any]] = {k: results[k] for k in ("noop", "noop-thread-parse") if k in results}
        rows.update(res["http"])
        best: dict[str, float] = {}
        for key in SYSTEMS:
            if key not in rows:
                continue
            r = rows[key]
            if "error" in r:
                lines.append(f"| {LABELS[key]} | not run | - | {r['error']} |")
                continue
            best[key] = best_ok_rate(r["steps"])
            f = r.get("fixed")
            fixed = (f"{fmt_ms(f['p50_s'])} / {fmt_ms(f['p95_s'])} / {fmt_ms(f['p99_s'])}"
                     + ("" if step_ok(f) else " (miss)")) if f else "-"
            notes = []
            if r.get("mean_batch_size"):
                notes.append(f"mean batch {r['mean_batch_size']:.1f}")
            if key.startswith("noop"):
                notes.append("model-independent; measured once")
            lines.append(f"| {LABELS[key]} | {best[key]:,.0f} | {fixed} | {', '.join(notes)} |")
        c = best.get("batching")
        lines += ["", "Ratios:", ""]
        if c is not None and transport:
            ceiling = min(a, transport)
            lines.append(f"- (c)/min(a, b) = {c:,.0f} / {ceiling:,.0f} = {c / ceiling:.0%} (target >= 70% for the "
                         f"transformer): {'met' if c >= 0.7 * ceiling else 'MISSED'}; the binding ceiling is "
                         f"{'the model (a)' if a < transport else 'the transport (b)'}.")
        peers = {k: best[k] for k in ("kserve", "ray-serve") if best.get(k)}
        if c is not None and peers:
            top_key = max(peers, key=lambda k: peers[k])
            lines.append(f"- (c)/best(d, e) = {c:,.0f} / {peers[top_key]:,.0f} ({top_key}) = {c / peers[top_key]:.1f}x "
                         f"(target >= 2x): {'met' if c >= 2 * peers[top_key] else 'MISSED'}.")
        if c is not None and best.get("v2"):
            lines.append(f"- /v2 infer vs /v1: {best['v2'] / c:.0%} of the /v1 rate (same batcher; a larger, "
                         "tensor-shaped body to parse and render).")
        if best.get("noop") and best.get("noop-thread-parse") and name == results["models_order"][0]:
            lines.append(f"- parsing small bodies on the event loop (this change) vs on a worker thread: "
                         f"{best['noop'] / best['noop-thread-parse']:.2f}x the transport ceiling.")
        if c is not None and best.get("no-batching"):
            lines.append(f"- batching on / off = {c / best['no-batching']:.2f}x.")
        alt = res.get("raw_alt") or ({"label": "fp32", "rows": res["raw_fp32"]} if "raw_fp32" in res else None)
        main_label = res.get("raw_label", "fp32" if alt and alt["label"] != "fp32" else "default")
        alt_rows = {r["batch_size"]: r for r in alt["rows"]} if alt else {}
        head = f"| batch | median batch ms ({main_label}) | p95 ms | req/s |"
        lines += ["", f"### (a) raw batched forward, {name}", "",
                  head + (f" {alt['label']}: median ms | {alt['label']}: req/s |" if alt else ""),
                  "|---:|---:|---:|---:|" + ("---:|---:|" if alt else "")]
        for r in res["raw"]:
            extra = ""
            if r["batch_size"] in alt_rows:
                other = alt_rows[r["batch_size"]]
                extra = f" {other['median_batch_s'] * 1000:.2f} | {other['throughput_rps']:,.0f} |"
            lines.append(f"| {r['batch_size']} | {r['median_batch_s'] * 1000:.2f} | {r['p95_batch_s'] * 1000:.2f} | "
                         f"{r['throughput_rps']:,.0f} |{extra}")
        lines.append("")
    prof = results.get("profile")
    if prof:
        lines += ["## What the transport ceiling is made of (py-spy on the no-op server)", ""]
        if "error" in prof:
            lines += [f"Not profiled: {prof['error']}", ""]
        else:
            lines += [f"{prof['seconds']} s of samples ({prof.get('samples', '?')} non-idle) at {prof['rate']:,.0f} "
                      "req/s offered (about 70% of (b)). Share of the server process's non-idle samples with the "
                      "package anywhere on the stack (inclusive) and as the innermost frame (self):", "",
                      "| package | inclusive | self |", "|---|---:|---:|"]
            self_share = dict(prof["packages"])
            for k, v in prof.get("inclusive", prof["packages"])[:18]:
                lines.append(f"| {k} | {v:.1%} | {self_share.get(k, 0.0):.1%} |")
            lines += ["", "Top leaf functions:", "", "| function | share |", "|---|---:|"]
            lines += [f"| `{k[:110]}` | {v:.1%} |" for k, v in prof["leaves"][:15]]
            lines.append("")
    lines += ["## Latency curves", ""]
    for name in results["models"]:
        rows = {**{k: results[k] for k in ("noop", "noop-thread-parse") if k in results},
                **results["models"][name]["http"]}
        for key in SYSTEMS:
            r = rows.get(key)
            shared = key.startswith("noop")
            if not r or "steps" not in r or (shared and name != results["models_order"][0]):
                continue
            lines += [f"### {LABELS[key]}" if shared else f"### {name}: {LABELS[key]}", ""]
            if r.get("load"):
                lines += [f"1-minute load average before/after: {r['load'][0]:.1f} / {r['load'][1]:.1f}.", ""]
            lines += ["| offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | errors | SLO |",
                      "|---:|---:|---:|---:|---:|---:|:---:|"]
            for s in r["steps"]:
                lines.append(f"| {s['offered_rps']:,.0f} | {s['achieved_rps']:,.0f} | {fmt_ms(s['p50_s'])} | "
                             f"{fmt_ms(s['p95_s'])} | {fmt_ms(s['p99_s'])} | {s['errors']} | "
                             f"{'ok' if step_ok(s) else 'miss'}{' (2nd try)' if s.get('retried') else ''} |")
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- orchestration


def artifact_for(arch: str, work: Path) -> tuple[Path, str]:
    trained = ARTIFACTS / f"ml100k-{arch}-seed0"
    if (trained / "manifest.json").is_file():
        return trained, f"{arch} trained on MovieLens 100K ({trained.name})"
    from hybridrec_server.testing import make_small_artifact

    dims = {"embedding_dim": 64, "hidden_dim": 128}
    path = make_small_artifact(work / arch, arch, **dims)
    return path, (f"{arch} of MovieLens shape (943 users, 1,682 items, 64-d), random init: the same compute as the "
                  "trained one (run benchmarks/train_movielens.py first for trained weights)")


def version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def orchestrate(args: argparse.Namespace) -> int:
    import torch

    from hybridrec_server.models import pick_device
    from hybridrec_server.testing import ServerProcess, free_port

    device = pick_device(args.device or os.environ.get("HYBRIDREC_DEVICE") or None).type
    work = Path(tempfile.mkdtemp(prefix="hybridrec-bench-"))
    models = [m for m in args.models.split(",") if m]
    systems = [s for s in args.systems.split(",") if s]
    if args.skip_ray and "ray-serve" in systems:
        systems.remove("ray-serve")
    if args.skip_kserve and "kserve" in systems:
        systems.remove("kserve")
    meta = {
        "started": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        "cpu": cpu_model(), "cores": os.cpu_count() or 1, "memory_gib": memory_gib() or 0.0,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "device": device,
        "python": platform.python_version(), "torch": torch.__version__, "uvicorn": version("uvicorn"),
        "loop": "uvloop" if version("uvloop") != "not installed" else "asyncio",
        "http": "httptools" if version("httptools") != "not installed" else "h11",
        "kserve": "not run", "ray": "not run", "loadgen_procs": args.loadgen_procs, "duration": args.duration,
        "warmup": args.warmup, "fixed_rate": args.fixed_rate, "load_start": os.getloadavg()[0],
    }
    results: dict[str, Any] = {"meta": meta, "models": {}, "models_order": models}
    artifacts = {m: artifact_for(m, work) for m in models}
    users_of = {m: json.loads((p / "config.json").read_text())["user_ids"] for m, (p, _) in artifacts.items()}

    for key, extra in (("noop", []), ("noop-thread-parse", ["--inline-parse-bytes", "0"])):
        if key not in systems:
            continue
        print(f"{LABELS[key]} ...", flush=True)
        art = artifacts[models[0]][0]
        port = free_port()
        child = Child([sys.executable, __file__, "noop-server", "--artifact", str(art), "--port", str(port), *extra],
                      work / f"{key}.log")
        try:
            child.wait_http(f"http://127.0.0.1:{port}/readyz", 120)
            before = os.getloadavg()[0]
            res = run_sweep(port, "v1", users_of[models[0]], work, args, args.start_rate)
            res["load"] = (before, os.getloadavg()[0])
            results[key] = res
            print(f"  best {best_ok_rate(res['steps']):.0f} req/s", flush=True)
            if key == "noop" and args.profile and best_ok_rate(res["steps"]):
                print("  profiling the transport with py-spy ...", flush=True)
                results["profile"] = profile_transport(port, child.proc.pid, users_of[models[0]], work, args,
                                                       0.7 * best_ok_rate(res["steps"]))
        except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
            results[key] = {"error": str(exc)[-300:]}
        finally:
            child.stop()

    for name in models:
        artifact, desc = artifacts[name]
        users = users_of[name]
        print(f"== {name} on {device}\n(a) raw batched forward ...", flush=True)
        raw = raw_forward(artifact, users, device)
        for row in raw:
            print(f"  batch {row['batch_size']:4d}: {row['throughput_rps']:9.0f} req/s  p95 {row['p95_batch_s']*1000:.2f} ms")
        http: dict[str, Any] = {}
        results["models"][name] = {"desc": desc, "raw": raw, "http": http}
        if device == "cuda" and name == "sasrec":
            # does mixed precision help? the same forward under bf16 autocast (HYBRIDREC_PRECISION=bf16)
            results["models"][name]["raw_alt"] = {
                "label": "bf16 autocast", "rows": raw_forward(artifact, users, device, precision="bf16"),
            }
        for key, batching in (("batching", True), ("no-batching", False)):
            if key not in systems and not (key == "batching" and "v2" in systems):
                continue
            print(f"({key}) hybridrec-server ...", flush=True)
            srv = ServerProcess(str(artifact), model_name=MODEL_NAME, pool="bench", env=server_env(batching, device),
                                log_path=work / f"server-{name}-{key}.log")
            try:
                srv.start(timeout_s=180)
                kinds = [("batching", "v1")] if key == "batching" and "batching" in systems else []
                if key == "batching" and "v2" in systems:
                    kinds.append(("v2", "v2"))
                if key == "no-batching":
                    kinds = [("no-batching", "v1")]
                for label, kind in kinds:
                    before = os.getloadavg()[0]
                    res = run_sweep(srv.port, kind, users, work, args, args.start_rate)
                    res["load"] = (before, os.getloadavg()[0])
                    http[label] = res
                    print(f"  {label}: best {best_ok_rate(res['steps']):.0f} req/s", flush=True)
                if kinds:
                    http[kinds[0][0]]["mean_batch_size"] = mean_batch_size(srv.url)
            except Exception as exc:  # noqa: BLE001
                http[key] = {"error": str(exc)[-300:]}
            finally:
                srv.terminate(60)

        if "kserve" in systems:
            print("(d) KServe ModelServer ...", flush=True)
            env = {}
            if args.kserve_site:
                env["PYTHONPATH"] = os.pathsep.join([str(args.kserve_site), os.environ.get("PYTHONPATH", "")])
            probe = subprocess.run([sys.executable, "-c", "import kserve, importlib.metadata as m; print(m.version('kserve'))"],
                                   capture_output=True, text=True, env={**os.environ, **env})
            if probe.returncode != 0:
                http["kserve"] = {"error": "kserve not importable: " + probe.stderr.strip().splitlines()[-1][-200:]}
            else:
                meta["kserve"] = probe.stdout.strip()
                port = free_port()
                child = Child([sys.executable, __file__, "kserve-server", "--artifact", str(artifact), "--port",
                               str(port), "--device", device], work / f"kserve-{name}.log", env)
                try:
                    child.wait_http(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", 180)
                    before = os.getloadavg()[0]
                    res = run_sweep(port, "kserve", users, work, args, min(args.start_rate, 100.0))
                    res["load"] = (before, os.getloadavg()[0])
                    http["kserve"] = res
                    print(f"  best {best_ok_rate(res['steps']):.0f} req/s", flush=True)
                except Exception as exc:  # noqa: BLE001
                    http["kserve"] = {"error": str(exc)[-300:]}
                finally:
                    child.stop()

        if "ray-serve" in systems:
            print("(e) Ray Serve ...", flush=True)
            if version("ray") == "not installed":
                http["ray-serve"] = {"error": "ray[serve] not installed (bench extra)"}
            else:
                meta["ray"] = version("ray")
                port = free_port()
                child = Child([sys.executable, __file__, "ray-serve", "--artifact", str(artifact), "--port", str(port),
                               "--device", device], work / f"ray-{name}.log")
                try:
                    child.wait_line("RAY-READY", 240)
                    before = os.getloadavg()[0]
                    res = run_sweep(port, "v1", users, work, args, 50.0)
                    res["load"] = (before, os.getloadavg()[0])
                    http["ray-serve"] = res
                    print(f"  best {best_ok_rate(res['steps']):.0f} req/s", flush=True)
                except Exception as exc:  # noqa: BLE001
                    http["ray-serve"] = {"error": str(exc)[-300:]}
                finally:
                    child.stop()

    command = "python benchmarks/serving.py " + " ".join(args.argv)
    results["command"] = command.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(results, indent=1, default=str))
    report = render(results, results["command"])
    (args.out / "serving.md").write_text(report)
    print(report)
    print(f"results: {args.out / 'serving.md'}, {args.out / 'serving.json'}; logs: {work}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    lg = sub.add_parser("loadgen", help="(internal) run the open-loop load generator")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--path", default="/v1/recommend")
    lg.add_argument("--bodies-file", required=True)
    lg.add_argument("--start-rate", type=float, default=200.0)
    lg.add_argument("--factor", type=float, default=1.6)
    lg.add_argument("--max-rate", type=float, default=100_000.0)
    lg.add_argument("--bisect", type=int, default=2)
    lg.add_argument("--duration", type=float, default=3.0)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--budget-s", type=float, default=60.0)
    lg.add_argument("--procs", type=int, default=1)
    lg.add_argument("--fixed-rate", type=float, default=0.0)
    for name in ("noop-server", "kserve-server", "ray-serve"):
        sp = sub.add_parser(name, help="(internal) a server under test")
        sp.add_argument("--artifact", required=True)
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--max-lifetime-s", type=float, default=900.0)
        sp.add_argument("--inline-parse-bytes", type=int, default=None)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: HYBRIDREC_DEVICE, else cuda when present)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per rate step")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per rate step")
    parser.add_argument("--budget-s", type=float, default=45.0, help="max seconds of ramp per system")
    parser.add_argument("--start-rate", type=float, default=200.0)
    parser.add_argument("--fixed-rate", type=float, default=200.0, help="the fixed offered load for the p95 column")
    parser.add_argument("--loadgen-procs", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 4)))
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-kserve", action="store_true")
    parser.add_argument("--kserve-site", type=Path, help="a `pip install --target` directory holding kserve")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profile of (b)")
    parser.add_argument("--render-only", type=Path, help="re-render the report from a saved serving.json")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory for serving.md and serving.json")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.cmd == "loadgen":
        return loadgen_main(args)
    if args.cmd == "noop-server":
        return noop_main(args)
    if args.cmd == "kserve-server":
        return kserve_main(args)
    if args.cmd == "ray-serve":
        return ray_main(args)
    if args.render_only:
        results = json.loads(args.render_only.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serving.md").write_text(render(results, results.get("command", "(command not recorded)")))
        print((args.out / "serving.md").read_text())
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
