"""Serving benchmark: throughput at p95 <= 50 ms and latency curves for

  (a) the raw batched forward (``RecommenderModel.predict``) at each batch size, in-process: the ceiling;
  (b) hybridrec-server with dynamic batching;
  (c) hybridrec-server with batching off;
  (d) Ray Serve with ``@serve.batch`` serving the same model (same artifact, same predict code).

Load comes from an open-loop, constant-arrival-rate generator in its own process (a minimal asyncio
HTTP/1.1 client with a connection pool: requests are sent on schedule whether or not earlier ones
finished, and latency is measured from the scheduled send time, so queueing is never hidden).
Each system is swept over increasing rates until p95 > 50 ms or errors appear, then bisected.
Everything binds 127.0.0.1 and every step is bounded in time.

    ~/.cache/hybridrec/venv/bin/python benchmarks/serving.py            # writes benchmarks/results/serving.md
    ~/.cache/hybridrec/venv/bin/python benchmarks/serving.py --skip-ray # when ray[serve] is not installed
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "serving.md"
TRAINED = Path.home() / ".cache" / "hybridrec" / "artifacts" / "ml100k-two-tower-seed0"
P95_SLO_S = 0.050
MAX_BATCH = 64
BATCH_DELAY_MS = 5.0


# --------------------------------------------------------------------------- pure helpers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); inf for an empty list."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def step_ok(step: dict[str, Any]) -> bool:
    """A rate step meets the SLO: p95 within 50 ms, < 1% errors, and the server kept up with the offered rate."""
    return step["p95_s"] <= P95_SLO_S and step["error_ratio"] < 0.01 and step["achieved_rps"] >= 0.95 * step["offered_rps"]


def best_ok_rate(steps: list[dict[str, Any]]) -> float:
    """Highest achieved throughput among steps that met the SLO (0 if none)."""
    return max((s["achieved_rps"] for s in steps if step_ok(s)), default=0.0)


# --------------------------------------------------------------------------- load generator (own process)


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
    """Open-loop constant-rate load against one URL path."""

    def __init__(self, host: str, port: int, path: str, users: list[str], max_conns: int = 512) -> None:
        self.host, self.port, self.path = host, port, path
        self.users = users
        self.idle: list[HttpConn] = []
        # at most max_conns requests outstanding; more wait here (and their wait counts as latency)
        self.slots = asyncio.Semaphore(max_conns)

    def _head(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()

    async def _one(self, scheduled: float, out: list[tuple[float, float, bool]]) -> None:
        body = json.dumps({"user_id": random.choice(self.users), "k": 10}).encode()
        ok = False
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            try:
                if conn is None:
                    conn = HttpConn(*await asyncio.open_connection(self.host, self.port))
                ok = (await conn.post(self._head(body), body)) == 200
                self.idle.append(conn)
            except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError):
                if conn is not None:
                    conn.writer.close()
        out.append((scheduled, time.perf_counter() - scheduled, ok))

    async def run_rate(self, rate: float, duration_s: float, warmup_s: float, grace_s: float = 5.0) -> dict[str, Any]:
        """Offer ``rate`` req/s for warmup + duration; stats over the measured window only.

        Times use ``time.perf_counter``: uvloop's ``loop.time()`` has only millisecond resolution.
        """
        loop = asyncio.get_running_loop()
        out: list[tuple[float, float, bool]] = []
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        measure_from = start + warmup_s
        end = measure_from + duration_s
        i = 0
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
            i += 1
        if tasks:
            await asyncio.wait(list(tasks), timeout=grace_s)
        unfinished = len(tasks)
        for task in list(tasks):
            task.cancel()
        measured = [(lat, ok) for s, lat, ok in out if s >= measure_from]
        sent = sum(1 for k in range(i) if start + k / rate >= measure_from)
        good = [lat for lat, ok in measured if ok]
        errors = sent - len(good)
        # unanswered requests count as infinitely slow for the percentiles
        lat_all = good + [float("inf")] * errors
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

    async def close(self) -> None:
        for conn in self.idle:
            conn.writer.close()
        self.idle.clear()


async def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Geometric rate ramp until the SLO breaks, then bisect between the last good and first bad rate."""
    users = json.loads(Path(args.users_file).read_text())
    gen = LoadGen("127.0.0.1", args.port, args.path, users)
    steps: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.budget_s
    rate, good, bad = args.start_rate, 0.0, None
    while rate <= args.max_rate and time.monotonic() < deadline:
        step = await gen.run_rate(rate, args.duration, args.warmup)
        if not step_ok(step):
            # the CPU is shared: retry a failed step once so one burst elsewhere does not end the ramp
            print(json.dumps({"retry": step}), file=sys.stderr, flush=True)
            await gen.close()
            gen = LoadGen("127.0.0.1", args.port, args.path, users)
            await asyncio.sleep(1.0)
            step = await gen.run_rate(rate, args.duration, args.warmup)
            step["retried"] = True
        steps.append(step)
        print(json.dumps(step), file=sys.stderr, flush=True)
        if not step_ok(step):
            bad = rate
            break
        good = rate
        rate *= args.factor
        await gen.close()
        gen = LoadGen("127.0.0.1", args.port, args.path, users)
    for _ in range(args.bisect):
        if bad is None or time.monotonic() >= deadline:
            break
        await gen.close()
        gen = LoadGen("127.0.0.1", args.port, args.path, users)
        await asyncio.sleep(1.0)  # let the server drain the overload before probing again
        mid = (good + bad) / 2 if good else bad / 2
        step = await gen.run_rate(mid, args.duration, args.warmup)
        steps.append(step)
        print(json.dumps(step), file=sys.stderr, flush=True)
        if step_ok(step):
            good = mid
        else:
            bad = mid
    await gen.close()
    return sorted(steps, key=lambda s: s["offered_rps"])


def loadgen_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    steps = asyncio.run(sweep(args))
    print(json.dumps(steps))
    return 0


# --------------------------------------------------------------------------- Ray Serve (own process)


def ray_main(args: argparse.Namespace) -> int:
    """Serve the artifact with Ray Serve + @serve.batch on 127.0.0.1:port until SIGTERM."""
    import ray
    from ray import serve
    from starlette.requests import Request

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, logging_level="ERROR")

    # access logs off, as in hybridrec-server: per-request logging is not what is being compared
    @serve.deployment(
        max_ongoing_requests=1024, ray_actor_options={"num_cpus": 1}, logging_config={"enable_access_log": False}
    )
    class RayRecommender:
        def __init__(self, artifact: str) -> None:
            import torch

            from hybridrec_server.predictor import RecommenderModel

            torch.set_num_threads(1)
            self.model = RecommenderModel("ray", artifact, device="cpu")
            self.model.load()
            self.model.warmup(MAX_BATCH)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_DELAY_MS / 1000)
        async def handle(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
            queries = [self.model.prepare(b["user_id"], b.get("k", 10)) for b in bodies]
            recs = self.model.predict(queries)
            return [
                {"user_id": r.user_id, "items": [{"item_id": i, "score": s} for i, s in r.items], "fallback": r.fallback}
                for r in recs
            ]

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


# --------------------------------------------------------------------------- orchestration


def run_sweep(port: int, users_file: Path, args: argparse.Namespace, start_rate: float) -> list[dict[str, Any]]:
    """Run the load generator process against ``port`` and return its steps."""
    cmd = [
        sys.executable, __file__, "loadgen", "--port", str(port), "--users-file", str(users_file),
        "--start-rate", str(start_rate), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--budget-s", str(args.budget_s),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget_s + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_forward(artifact: Path, users: list[str], seconds_per_size: float = 1.5) -> list[dict[str, Any]]:
    """(a) The ceiling: ``predict`` on prepared batches in-process, one torch thread like the server."""
    import torch

    from hybridrec_server.predictor import RecommenderModel

    torch.set_num_threads(1)
    model = RecommenderModel("raw", str(artifact), device="cpu")
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
            model.predict(batch)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({
            "batch_size": size,
            "median_batch_s": med,
            "p95_batch_s": percentile(times, 95),
            "throughput_rps": size / med,
        })
    return rows


def start_server(artifact: Path, batching: bool) -> Any:
    from hybridrec_server.testing import ServerProcess

    srv = ServerProcess(
        str(artifact),
        model_name="bench",
        pool="bench",
        env={
            "HYBRIDREC_BATCHING": "true" if batching else "false",
            "HYBRIDREC_MAX_BATCH_SIZE": str(MAX_BATCH),
            "HYBRIDREC_MAX_BATCH_DELAY_MS": str(BATCH_DELAY_MS),
            "HYBRIDREC_MAX_QUEUE": "4096",
            "HYBRIDREC_TORCH_THREADS": "1",
            "HYBRIDREC_LOG_LEVEL": "warning",
        },
    )
    return srv.start(timeout_s=90)


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


def fmt_ms(seconds: float) -> str:
    return "timeout" if seconds == float("inf") else f"{seconds * 1000:.1f}"


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """Markdown report (pure given the results)."""
    raw = results["raw"]
    ceiling_row = max((r for r in raw if r["p95_batch_s"] <= P95_SLO_S), key=lambda r: r["throughput_rps"])
    ceiling = ceiling_row["throughput_rps"]
    best = {k: best_ok_rate(v["steps"]) for k, v in results["http"].items()}
    b, c, d = best.get("batching"), best.get("no-batching"), best.get("ray-serve")
    lines = [
        "# Serving benchmark",
        "",
        f"One run, {results['meta']['started']}: "
        f"`python benchmarks/serving.py --duration {args.duration} --warmup {args.warmup}`.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores (shared by server, load generator and, for (d), Ray's "
        f"proxy/replica processes), {results['meta']['memory_gib']:.0f} GiB RAM, no GPU.",
        f"- Software: Python {platform.python_version()}, torch {results['meta']['torch']} (device cpu, 1 intra-op "
        f"thread), uvicorn {results['meta']['uvicorn']} with {results['meta']['loop']} loop / "
        f"{results['meta']['http']} parser, Ray {results['meta'].get('ray', 'n/a')}.",
        f"- Other work on the machine: 1-minute load average {results['meta']['load_start']:.1f} when the run "
        "started (other engineers' clusters and tests share these 2 cores, so absolute numbers are noisy).",
        f"- Model: {results['meta']['model']}. Request: `{{\"user_id\": <random known user>, \"k\": 10}}`.",
        f"- Batching (b, d): max batch {MAX_BATCH}, max delay {BATCH_DELAY_MS:g} ms. Load: open loop, constant "
        f"arrival rate, {args.duration:g} s measured after {args.warmup:g} s warm-up per step; latency from the "
        "scheduled send time; a step passes when p95 <= 50 ms, errors < 1 % and achieved >= 95 % of offered.",
        "",
        "## Throughput at p95 <= 50 ms",
        "",
        "| system | req/s at p95 <= 50 ms |",
        "|---|---:|",
        f"| (a) raw batched forward, batch {ceiling_row['batch_size']} (ceiling, in-process, no HTTP) | {ceiling:,.0f} |",
    ]
    names = {"batching": "(b) hybridrec-server, dynamic batching", "no-batching": "(c) hybridrec-server, batching off",
             "ray-serve": "(d) Ray Serve `@serve.batch`"}
    for key, label in names.items():
        if key in best:
            extra = ""
            mbs = results["http"][key].get("mean_batch_size")
            if mbs:
                extra = f" (mean batch {mbs:.1f})"
            lines.append(f"| {label}{extra} | {best[key]:,.0f} |")
    lines += ["", "Ratios:", ""]
    if b is not None:
        lines.append(f"- (b)/(a) = {b / ceiling:.1%} (target >= 70%)")
    if b is not None and c:
        lines.append(f"- (b)/(c) = {b / c:.2f}x")
    if b is not None and d:
        lines.append(f"- (b)/(d) = {b / d:.2f}x (target >= 2x)")
    lines += ["", "## Reading the numbers", ""]
    if b:
        lines += [
            f"- At its best batch size the model needs {1e6 / ceiling:.0f} us of CPU per request; at its best "
            f"passing rate hybridrec-server completes one request every {1e6 / b:.0f} us. The difference is the "
            "Python HTTP path (uvicorn parsing, the ASGI/FastAPI middleware stack, pydantic validation, JSON "
            "encoding, asyncio futures), paid once per request whatever the batch size, on cores shared with "
            "the load generator. Dynamic batching amortises only the model's share, so with a model this small "
            "(two-tower, 64-d, 1,682 items) (b)/(a) cannot approach 70% here; the ratio is meaningful for "
            "models whose forward pass dominates (GPU pools, larger towers).",
        ]
    if b and c:
        if b / c >= 1.1:
            lines.append(
                f"- Batching pays: (b) sustains {b / c:.2f}x the rate of (c): one forward pass and one executor "
                "hand-off serve a whole batch, which leaves the event loop free to parse the next requests."
            )
        else:
            lines.append(
                f"- (b)/(c) = {b / c:.2f}x: at this load the server is bound by the per-request HTTP path (and the "
                "other work on the CPU), not by the model, so batching shows no gain in this run."
            )
    if b and d:
        lines.append(
            "- Ray Serve (d) runs the same `predict` behind its HTTP proxy actor and a replica actor, so every "
            "request crosses two extra process hops (proxy -> replica over Ray RPC) plus Ray's controller/GCS "
            f"processes on the same 2 cores; hybridrec-server does {b / d:.1f}x its rate at the same p95 bound."
        )
    lines += [
        "- p50 at low rates is ~max_batch_delay (5 ms) by design: a lone request waits for company; "
        "set `HYBRIDREC_MAX_BATCH_DELAY_MS` lower for latency-bound pools.",
        "- The 2 cores are shared with other work (see load averages per sweep), so a single step can miss "
        "the SLO on a burst elsewhere; failed steps are retried once before the ramp stops.",
    ]
    lines += ["", "## (a) Raw batched forward (`RecommenderModel.predict`, prepared queries)", "",
              "| batch | median batch latency ms | p95 ms | req/s |", "|---:|---:|---:|---:|"]
    for r in raw:
        lines.append(f"| {r['batch_size']} | {r['median_batch_s'] * 1000:.2f} | {r['p95_batch_s'] * 1000:.2f} | "
                     f"{r['throughput_rps']:,.0f} |")
    for key, label in names.items():
        if key not in results["http"]:
            continue
        load = results["http"][key].get("load")
        lines += ["", f"## {label}: latency curve", ""]
        if load:
            lines += [f"1-minute load average before/after this sweep: {load[0]:.1f} / {load[1]:.1f}.", ""]
        lines += [
                  "| offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | errors | SLO |",
                  "|---:|---:|---:|---:|---:|---:|:---:|"]
        for s in results["http"][key]["steps"]:
            lines.append(
                f"| {s['offered_rps']:,.0f} | {s['achieved_rps']:,.0f} | {fmt_ms(s['p50_s'])} | {fmt_ms(s['p95_s'])} | "
                f"{fmt_ms(s['p99_s'])} | {s['errors']} | {'ok' if step_ok(s) else 'miss'}"
                f"{' (2nd try)' if s.get('retried') else ''} |"
            )
    lines.append("")
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import torch

    from hybridrec_server.testing import free_port, make_small_artifact

    work = Path(tempfile.mkdtemp(prefix="hybridrec-bench-"))
    if TRAINED.is_dir():
        artifact, model_desc = TRAINED, f"two-tower trained on MovieLens 100K ({TRAINED})"
    else:
        artifact = make_small_artifact(work / "model", embedding_dim=64, hidden_dim=128)
        model_desc = "two-tower of MovieLens shape, random init (run benchmarks/train_movielens.py first for the trained one)"
    users = json.loads((artifact / "config.json").read_text())["user_ids"]
    users_file = work / "users.json"
    users_file.write_text(json.dumps(users))

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    meta = {
        "started": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        "torch": torch.__version__,
        "uvicorn": version("uvicorn"),
        "loop": "uvloop" if version("uvloop") != "not installed" else "asyncio",
        "http": "httptools" if version("httptools") != "not installed" else "h11",
        "model": model_desc,
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
    }
    results: dict[str, Any] = {"meta": meta, "http": {}}
    print("(a) raw batched forward ...", flush=True)
    meta["load_start"] = os.getloadavg()[0]
    results["raw"] = raw_forward(artifact, users)
    for row in results["raw"]:
        print(f"  batch {row['batch_size']:4d}: {row['throughput_rps']:9.0f} req/s  p95 {row['p95_batch_s']*1000:.2f} ms")

    for key, batching, start_rate in (("batching", True, 400.0), ("no-batching", False, 200.0)):
        print(f"({'b' if batching else 'c'}) hybridrec-server {key} ...", flush=True)
        srv = start_server(artifact, batching)
        try:
            load_before = os.getloadavg()[0]
            steps = run_sweep(srv.port, users_file, args, start_rate)
            results["http"][key] = {
                "steps": steps,
                "mean_batch_size": mean_batch_size(srv.url),
                "load": (load_before, os.getloadavg()[0]),
            }
        finally:
            code = srv.terminate(60)
        print(f"  best {best_ok_rate(steps):.0f} req/s (server exit {code})", flush=True)

    if not args.skip_ray:
        print("(d) Ray Serve ...", flush=True)
        meta["ray"] = version("ray")
        port = free_port()
        log = open(work / "ray.log", "w")
        proc = subprocess.Popen(
            [sys.executable, __file__, "ray-serve", "--artifact", str(artifact), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 240
            ready = False
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
                if "RAY-READY" in line:
                    ready = True
                    break
            if not ready:
                raise RuntimeError(f"Ray Serve did not start; see {work / 'ray.log'}")
            load_before = os.getloadavg()[0]
            steps = run_sweep(port, users_file, args, 50.0)
            results["http"]["ray-serve"] = {"steps": steps, "load": (load_before, os.getloadavg()[0])}
            print(f"  best {best_ok_rate(steps):.0f} req/s", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    report = render(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    print(f"raw results: {work / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    lg = sub.add_parser("loadgen", help="(internal) run the open-loop load generator")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--path", default="/v1/recommend")
    lg.add_argument("--users-file", required=True)
    lg.add_argument("--start-rate", type=float, default=200.0)
    lg.add_argument("--factor", type=float, default=1.6)
    lg.add_argument("--max-rate", type=float, default=50_000.0)
    lg.add_argument("--bisect", type=int, default=2)
    lg.add_argument("--duration", type=float, default=3.0)
    lg.add_argument("--warmup", type=float, default=1.0)
    lg.add_argument("--budget-s", type=float, default=90.0)
    rs = sub.add_parser("ray-serve", help="(internal) serve the artifact with Ray Serve")
    rs.add_argument("--artifact", required=True)
    rs.add_argument("--port", type=int, required=True)
    rs.add_argument("--max-lifetime-s", type=float, default=600.0)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per rate step")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per rate step")
    parser.add_argument("--budget-s", type=float, default=90.0, help="max seconds of load per system")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--render-only", type=Path, help="re-render the report from a saved results.json")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.cmd == "loadgen":
        return loadgen_main(args)
    if args.cmd == "ray-serve":
        return ray_main(args)
    if args.render_only:
        results = json.loads(args.render_only.read_text())
        results["meta"].setdefault("started", "(time not recorded)")
        args.out.write_text(render(results, args))
        print(args.out.read_text())
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
