"""``hybridrec demo run``: the main job in one command, on the embedded local cluster.

It starts a real control plane (kwok fake GPU nodes, no Docker), an S3-compatible store (moto_server) holding models
trained on MovieLens 100K, a real Prometheus, the operator with its cost controller and the pod runner (one real
model server per Running pod), applies the sample ComputePools and three RecModelDeployments, then plays a compressed
day of traffic with a flash sale while a live terminal view shows where replicas run, p95 against the SLO and what it
costs. It ends with an HTML report (see :mod:`hybridrec_local.report`).

Layout of this module: the scenario and traffic curve (pure), the demo's manifests (pure), the load generator, the
observer that turns API objects and Prometheus answers into timeline samples (pure conversion + thin I/O), the live
view (pure rendering), and the orchestration with its clean-up guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.report import (
    DecisionRecord,
    FlashSale,
    ModelInfo,
    ModelSample,
    PoolInfo,
    Sample,
    Timeline,
    clock,
    money,
    summary_lines,
    tenancy_replicas,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
SCENARIO_FILE = MANIFESTS / "samples" / "demo-traffic.yaml"
POOLS_FILE = MANIFESTS / "samples" / "pools.yaml"
MODELS_FILE = MANIFESTS / "samples" / "models.yaml"
CRDS_DIR = MANIFESTS / "crds"
POLICY_DIR = MANIFESTS / "policy"
DEFAULT_WORKDIR = Path.home() / ".cache" / "hybridrec" / "demo"
DEFAULT_OUTPUT = Path("demo-output")
ARTIFACT_BUCKET = "hybridrec-demo"
# moto accepts any credentials; fixed ones keep boto3 from searching the machine for real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "hybridrec-demo", "AWS_SECRET_ACCESS_KEY": "hybridrec-demo", "AWS_DEFAULT_REGION": "us-east-1"}
ML100K_USERS = 943
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=hybridrec"
log = logging.getLogger("hybridrec.demo")


class DemoError(RuntimeError):
    """The demo cannot go on. ``step`` names where it stopped, ``hint`` what the person can do about it."""

    def __init__(self, step: str, problem: str, hint: str = "") -> None:
        super().__init__(f"{step}: {problem}" + (f"\n  what to do: {hint}" if hint else ""))
        self.step = step
        self.problem = problem
        self.hint = hint


# --------------------------------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class ModelTraffic:
    """Demand for one model: ``night_rps`` at the quietest hour, ``peak_rps`` at the evening peak."""

    name: str
    night_rps: float
    peak_rps: float
    target_rps_per_replica: float | None = None
    budget_per_hour: float | None = None  # USD; becomes spec.budget.maxPerHour
    max_replicas: int | None = None  # becomes spec.scaling.maxReplicas


@dataclass(frozen=True)
class SaleSpec:
    """A flash sale: ``model``'s demand is ``multiplier`` x its curve in [start_hour, end_hour) of the simulated day."""

    model: str
    name: str
    start_hour: float
    end_hour: float
    multiplier: float


@dataclass(frozen=True)
class Scenario:
    real_seconds: float
    start_hour: float
    sample_seconds: float
    control_interval_s: float
    pool_startup_seconds: int
    max_inflight: int
    request_timeout_s: float
    models: tuple[ModelTraffic, ...]
    sale: SaleSpec | None
    pool_max_gpus: Mapping[str, int] = field(default_factory=dict)
    scale_down_stabilization_s: int | None = None
    operator_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def seconds_per_sim_hour(self) -> float:
        return self.real_seconds / 24.0

    def sim_hour(self, t: float) -> float:
        """Simulated hour (start_hour .. start_hour + 24) at ``t`` real seconds after the traffic started."""
        return self.start_hour + t / self.seconds_per_sim_hour

    def real_offset(self, sim_hour: float) -> float:
        """Real seconds after the traffic start at which the simulated clock shows ``sim_hour``."""
        return (sim_hour - self.start_hour) * self.seconds_per_sim_hour

    def model(self, name: str) -> ModelTraffic:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_duration(self, real_seconds: float) -> Scenario:
        """The same day played in ``real_seconds``: the controller's time constants (which the scenario sets for its
        own speed) shrink or grow with it, within floors the control interval and process start-up need."""
        f = float(real_seconds) / self.real_seconds
        env = dict(self.operator_env)
        for key, floor in SCALED_OPERATOR_ENV.items():
            if key in env:
                env[key] = f"{max(floor, float(env[key]) * f):g}"
        stabilization = self.scale_down_stabilization_s
        if stabilization is not None:
            stabilization = max(MIN_STABILIZATION_SECONDS, round(stabilization * f))
        return _replace(self, real_seconds=float(real_seconds), operator_env=env, scale_down_stabilization_s=stabilization)


# Operator settings in real seconds that follow the speed of the simulated day, with their floors.
SCALED_OPERATOR_ENV = {"HYBRIDREC_MIN_DWELL_SECONDS": 5.0, "HYBRIDREC_DEMAND_HISTORY_SECONDS": 20.0}
MIN_STABILIZATION_SECONDS = 5


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


class ScenarioError(ValueError):
    """The scenario file is not usable; the message names the field."""


def _num(doc: Mapping[str, Any], key: str, where: str, default: float | None = None, *, minimum: float = 0.0) -> float:
    value = doc.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}.{key} is required")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ScenarioError(f"{where}.{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_scenario(doc: Mapping[str, Any]) -> Scenario:
    """A :class:`Scenario` from the YAML document (see ``manifests/samples/demo-traffic.yaml``)."""
    if doc.get("kind") != "DemoScenario":
        raise ScenarioError("kind must be DemoScenario")
    day, control, load = doc.get("day") or {}, doc.get("control") or {}, doc.get("load") or {}
    start_hour = _num(day, "startHour", "day", 4)
    if start_hour >= 24:
        raise ScenarioError("day.startHour must be below 24")
    models = []
    for name, m in (doc.get("models") or {}).items():
        where = f"models.{name}"
        night, peak = _num(m, "nightRps", where), _num(m, "peakRps", where)
        if peak < night:
            raise ScenarioError(f"{where}.peakRps must be >= nightRps")
        target = _num(m, "targetRpsPerReplica", where, minimum=0.01) if m.get("targetRpsPerReplica") is not None else None
        budget = _num(m, "budgetPerHour", where) if m.get("budgetPerHour") is not None else None
        max_replicas = int(_num(m, "maxReplicas", where, minimum=1)) if m.get("maxReplicas") is not None else None
        models.append(ModelTraffic(name, night, peak, target, budget, max_replicas))
    if not models:
        raise ScenarioError("models must list at least one model")
    sale = None
    if doc.get("flashSale"):
        s = doc["flashSale"]
        start, end = _num(s, "startHour", "flashSale"), _num(s, "endHour", "flashSale")
        if not (start < end <= 24):
            raise ScenarioError("flashSale needs startHour < endHour <= 24")
        if s.get("model") not in {m.name for m in models}:
            raise ScenarioError(f"flashSale.model {s.get('model')!r} is not one of the scenario's models")
        # Hours before the day's start belong to the next calendar day of the simulation.
        shift = 24.0 if start < start_hour else 0.0
        sale = SaleSpec(str(s["model"]), str(s.get("name", "flash-sale")), start + shift, end + shift,
                        _num(s, "multiplier", "flashSale", minimum=1.0))
    return Scenario(
        real_seconds=_num(day, "realSeconds", "day", 240, minimum=10),
        start_hour=start_hour,
        sample_seconds=_num(day, "sampleSeconds", "day", 2, minimum=0.5),
        control_interval_s=_num(control, "intervalSeconds", "control", 5, minimum=1),
        pool_startup_seconds=int(_num(control, "poolStartupSeconds", "control", 10)),
        max_inflight=int(_num(load, "maxInflightPerModel", "load", 64, minimum=1)),
        request_timeout_s=_num(load, "requestTimeoutSeconds", "load", 2, minimum=0.1),
        models=tuple(models),
        sale=sale,
        pool_max_gpus={str(k): int(_num((doc.get("pools") or {}).get("maxGpus") or {}, k, "pools.maxGpus"))
                       for k in ((doc.get("pools") or {}).get("maxGpus") or {})},
        scale_down_stabilization_s=(int(_num(control, "scaleDownStabilizationSeconds", "control"))
                                    if control.get("scaleDownStabilizationSeconds") is not None else None),
        operator_env=_operator_env(control.get("operatorEnv") or {}),
    )


def _operator_env(env: Mapping[str, Any]) -> dict[str, str]:
    """``control.operatorEnv``: only HYBRIDREC_* settings, as strings."""
    out = {}
    for key, value in env.items():
        if not str(key).startswith("HYBRIDREC_"):
            raise ScenarioError(f"control.operatorEnv.{key}: only HYBRIDREC_* settings belong here")
        out[str(key)] = str(value)
    return out


def load_scenario(path: Path = SCENARIO_FILE) -> Scenario:
    try:
        return parse_scenario(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc


def _bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump on the 24-hour circle."""
    d = abs((hour - centre + 12.0) % 24.0 - 12.0)
    return math.exp(-0.5 * (d / width) ** 2)


def _raw_shape(hour: float) -> float:
    return 0.35 * _bump(hour, 9.5, 2.5) + 0.4 * _bump(hour, 12.75, 1.5) + 1.0 * _bump(hour, 20.5, 2.3)


_SHAPE_MIN = min(_raw_shape(i / 60.0) for i in range(24 * 60))
_SHAPE_MAX = max(_raw_shape(i / 60.0) for i in range(24 * 60))


def diurnal_shape(hour: float) -> float:
    """Relative demand in [0, 1] at a time of day: trough before dawn, morning rise, lunch bump, evening peak ~20:30."""
    return (_raw_shape(hour % 24.0) - _SHAPE_MIN) / (_SHAPE_MAX - _SHAPE_MIN)


def in_sale(sale: SaleSpec | None, model: str, sim_hour: float) -> bool:
    return sale is not None and sale.model == model and sale.start_hour <= sim_hour < sale.end_hour


def offered_rps(scenario: Scenario, model: str, sim_hour: float) -> float:
    """Requests per second the load generator sends to ``model`` at ``sim_hour`` (curve x sale multiplier)."""
    m = scenario.model(model)
    rps = m.night_rps + (m.peak_rps - m.night_rps) * diurnal_shape(sim_hour)
    if in_sale(scenario.sale, model, sim_hour):
        rps *= scenario.sale.multiplier  # type: ignore[union-attr]
    return rps


def traffic_curve(scenario: Scenario, model: str, step_s: float = 1.0) -> list[tuple[float, float]]:
    """(real seconds, offered rps) over the whole run, every ``step_s``: what the load generator will send."""
    n = int(scenario.real_seconds / step_s)
    return [(i * step_s, offered_rps(scenario, model, scenario.sim_hour(i * step_s))) for i in range(n + 1)]


def arrival_times(rate: Callable[[float], float], start: float, end: float, rng: random.Random,
                  idle_step: float = 0.1) -> Iterator[float]:
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


def expected_requests(scenario: Scenario, model: str, step_s: float = 0.5) -> float:
    """Integral of the offered rate over the run (what the load generator should send on average)."""
    n = int(scenario.real_seconds / step_s)
    return sum(offered_rps(scenario, model, scenario.sim_hour((i + 0.5) * step_s)) * step_s for i in range(n))


# --------------------------------------------------------------------------------------------------- manifests


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render_pools(pools: Sequence[Mapping[str, Any]], scenario: Scenario) -> list[dict[str, Any]]:
    """The sample ComputePools with the demo's start-up time (a local server is ready in seconds) and quotas."""
    out = []
    for pool in pools:
        doc = copy.deepcopy(dict(pool))
        spec = doc.setdefault("spec", {})
        spec["startupSeconds"] = scenario.pool_startup_seconds
        name = doc.get("metadata", {}).get("name", "")
        if name in scenario.pool_max_gpus:
            spec["maxGpus"] = scenario.pool_max_gpus[name]
        out.append(doc)
    return out


def sale_event(scenario: Scenario, traffic_start: dt.datetime) -> dict[str, Any] | None:
    """The flash sale as a ``spec.scaling.schedule`` entry in wall-clock time, given when the traffic starts."""
    sale = scenario.sale
    if sale is None:
        return None
    start = traffic_start + dt.timedelta(seconds=scenario.real_offset(sale.start_hour))
    end = traffic_start + dt.timedelta(seconds=scenario.real_offset(sale.end_hour))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"name": sale.name, "start": start.astimezone(dt.timezone.utc).strftime(fmt),
            "end": end.astimezone(dt.timezone.utc).strftime(fmt), "multiplier": sale.multiplier}


@dataclass(frozen=True)
class Artifact:
    """A model pushed to the demo's S3 store."""

    uri: str
    sha256: str
    architecture: str
    version: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


def render_models(models: Sequence[Mapping[str, Any]], scenario: Scenario,
                  artifacts: Mapping[str, Artifact]) -> list[dict[str, Any]]:
    """The sample RecModelDeployments pointed at the demo's artifacts, with the scenario's per-replica rate.

    ``artifacts`` maps an architecture to its artifact. The flash sale is declared later (:func:`sale_event`), when
    the traffic start time is known.
    """
    out = []
    for model in models:
        doc = copy.deepcopy(dict(model))
        spec = doc.setdefault("spec", {})
        arch = spec.get("model", {}).get("architecture", "two-tower")
        art = artifacts.get(arch)
        if art is None:
            raise DemoError("preparing the manifests", f"no {arch} artifact for {doc['metadata']['name']}")
        spec["model"] = {**spec.get("model", {}), "uri": art.uri, "sha256": art.sha256, "version": art.version}
        name = doc["metadata"]["name"]
        scaling = spec.setdefault("scaling", {})
        if scenario.scale_down_stabilization_s is not None:
            scaling["scaleDownStabilizationSeconds"] = scenario.scale_down_stabilization_s
        traffic = next((m for m in scenario.models if m.name == name), None)
        if traffic is not None and traffic.target_rps_per_replica is not None:
            scaling["targetRpsPerReplica"] = traffic.target_rps_per_replica
        if traffic is not None and traffic.max_replicas is not None:
            scaling["maxReplicas"] = traffic.max_replicas
            scaling["minReplicas"] = min(int(scaling.get("minReplicas", 1)), traffic.max_replicas)
        if traffic is not None and traffic.budget_per_hour is not None:
            spec["budget"] = {**(spec.get("budget") or {}), "maxPerHour": traffic.budget_per_hour, "currency": "USD"}
        spec.setdefault("scaling", {}).pop("schedule", None)
        out.append(doc)
    return out


def pool_infos(pools: Sequence[Mapping[str, Any]]) -> list[PoolInfo]:
    from hybridrec_operator.api.models import parse_pool

    out = []
    for raw in pools:
        p = parse_pool(raw)
        out.append(PoolInfo(name=p.name, tenancy=p.spec.tenancy.value, price_per_gpu_hour=p.spec.pricing.price_per_gpu_hour,
                            currency=p.spec.pricing.currency, capacity_type=p.spec.pricing.capacity_type.value,
                            spec=p.spec.to_wire()))
    return out


def model_infos(models: Sequence[Mapping[str, Any]]) -> list[ModelInfo]:
    from hybridrec_operator.api.models import parse_rmd

    out = []
    for raw in models:
        m = parse_rmd(raw)
        budget = m.spec.budget
        out.append(ModelInfo(
            name=m.name, namespace=m.namespace, sensitivity=m.spec.data_sensitivity.value,
            slo_p95_ms=float(m.spec.slo.p95_latency_ms), allow_public_burst=m.spec.placement.allow_public_burst,
            budget_per_hour=budget.max_per_hour if budget else None, budget_currency=budget.currency if budget else "USD",
            gpus_per_replica=m.spec.resources.gpus))
    return out


# --------------------------------------------------------------------------------------------- load generator


@dataclass
class _ModelStats:
    done: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=20000))  # (t, seconds, ok)
    sent: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0  # not sent: too many in flight, or no ready server


def loopback_only(servers: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The servers.json entries whose URL is on 127.0.0.1: the demo never sends load anywhere else."""
    return {key: [u for u in urls if urllib.parse.urlparse(u).hostname == "127.0.0.1"] for key, urls in servers.items()}


@dataclass(frozen=True)
class LoadSnapshot:
    offered_rps: float
    served_rps: float
    error_rps: float
    client_p95_ms: float | None


def window_stats(done: Sequence[tuple[float, float, bool]], now: float, window_s: float) -> tuple[float, float, float | None]:
    """(ok/s, failed/s, p95 ms of ok requests) over the last ``window_s`` seconds of completions."""
    recent = [(lat, ok) for t, lat, ok in done if now - window_s <= t <= now]
    ok_lat = sorted(lat for lat, ok in recent if ok)
    failed = sum(1 for _, ok in recent if not ok)
    p95 = None
    if ok_lat:
        p95 = ok_lat[min(len(ok_lat) - 1, math.ceil(0.95 * len(ok_lat)) - 1)] * 1000.0
    return len(ok_lat) / window_s, failed / window_s, p95


class LoadGenerator:
    """Open-loop, paced load against the model servers the pod runner lists in ``servers.json``.

    One asyncio task per model sends Poisson arrivals following the scenario's curve to that model's ready servers
    (round robin, as a Service would), 127.0.0.1 only. Bounded: it stops by itself after ``scenario.real_seconds``
    and never has more than ``max_inflight`` requests open per model.
    """

    def __init__(self, scenario: Scenario, servers_file: Path, namespaces: Mapping[str, str], seed: int = 7) -> None:
        self.scenario = scenario
        self.servers_file = servers_file
        self.namespaces = dict(namespaces)
        self.stats = {m.name: _ModelStats() for m in scenario.models}
        self._rng = random.Random(seed)
        self._servers: dict[str, list[str]] = {}
        self._servers_mtime = 0.0
        self._rr: dict[str, int] = {}
        self._start = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start if self._start else 0.0

    def start(self) -> None:
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="demo-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.scenario.request_timeout_s + 5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self, window_s: float) -> dict[str, LoadSnapshot]:
        now = self.elapsed
        out = {}
        with self._lock:
            for name, st in self.stats.items():
                served, failed, p95 = window_stats(list(st.done), now, window_s)
                out[name] = LoadSnapshot(offered_rps(self.scenario, name, self.scenario.sim_hour(min(now, self.scenario.real_seconds))),
                                         served, failed, p95)
        return out

    def _refresh_servers(self) -> None:
        try:
            mtime = self.servers_file.stat().st_mtime
            if mtime != self._servers_mtime:
                self._servers = loopback_only(json.loads(self.servers_file.read_text()))
                self._servers_mtime = mtime
        except (OSError, ValueError):
            pass  # written atomically by the pod runner; a missing file means no ready server yet

    def _pick(self, model: str) -> str | None:
        urls = self._servers.get(f"{self.namespaces.get(model, 'default')}/{model}") or []
        if not urls:
            return None
        i = self._rr.get(model, 0)
        self._rr[model] = i + 1
        return urls[i % len(urls)]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by the orchestrator, which stops the demo
            self.error = exc

    async def _main(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.scenario.max_inflight * len(self.stats), max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.scenario.request_timeout_s, limits=limits, trust_env=False) as client:
            refresher = asyncio.create_task(self._refresher())
            try:
                await asyncio.gather(*(self._drive(client, m.name) for m in self.scenario.models))
            finally:
                refresher.cancel()

    async def _refresher(self) -> None:
        while True:
            self._refresh_servers()
            await asyncio.sleep(0.5)

    async def _drive(self, client: Any, model: str) -> None:
        sc = self.scenario
        st = self.stats[model]
        rng = random.Random(self._rng.random())
        inflight: set[asyncio.Task[None]] = set()
        for at in arrival_times(lambda t: offered_rps(sc, model, sc.sim_hour(t)), 0.0, sc.real_seconds, rng):
            delay = at - self.elapsed
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stop.is_set():
                break
            url = self._pick(model)
            if url is None or len(inflight) >= sc.max_inflight:
                with self._lock:
                    st.dropped += 1
                    st.done.append((self.elapsed, 0.0, False))
                continue
            task = asyncio.create_task(self._one(client, model, url, rng.randint(1, ML100K_USERS)))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=sc.request_timeout_s + 1)

    async def _one(self, client: Any, model: str, url: str, user: int) -> None:
        st = self.stats[model]
        t0 = time.monotonic()
        ok = False
        try:
            resp = await client.post(f"{url}/v1/recommend", json={"user_id": str(user), "k": 10})
            ok = resp.status_code == 200
        except Exception:  # noqa: BLE001 - a refused or timed-out request is a failed request, counted below
            ok = False
        with self._lock:
            st.sent += 1
            if ok:
                st.ok += 1
            else:
                st.failed += 1
            st.done.append((self.elapsed, time.monotonic() - t0, ok))


# ------------------------------------------------------------------------------------------------ observation


PROM_P95 = ('histogram_quantile(0.95, sum by (namespace, model, le) '
            '(rate(hybridrec_server_request_duration_seconds_bucket{{endpoint="recommend"}}[{w}])))')
PROM_COST = "sum by (namespace, model, pool) (hybridrec_cost_per_hour)"


def prom_vector(payload: Mapping[str, Any], labels: Sequence[str]) -> dict[tuple[str, ...], float]:
    """An instant-vector answer as {label values: value}; NaN (no traffic in the window) is left out."""
    out: dict[tuple[str, ...], float] = {}
    for item in payload.get("data", {}).get("result", []) or []:
        value = float(item["value"][1])
        if math.isfinite(value):
            out[tuple(item["metric"].get(k, "") for k in labels)] = value
    return out


def running_replicas(pods: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """{(namespace, model): {pool: running pods}} from hybridrec's pods (phase Running, not being deleted)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
            continue
        model, pool = labels.get("hybridrec.io/model"), labels.get("hybridrec.io/pool")
        if model and pool:
            per = out.setdefault((meta.get("namespace", "default"), model), {})
            per[pool] = per.get(pool, 0) + 1
    return out


def placements_of(rmd: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, float], float]:
    """(desired per pool, $/h per pool, $/h total) from a RecModelDeployment's status."""
    status = rmd.get("status") or {}
    desired: dict[str, int] = {}
    cost: dict[str, float] = {}
    for p in status.get("placements") or []:
        pool = p.get("pool")
        if pool:
            desired[pool] = int(p.get("desired", 0))
            cost[pool] = float(p.get("pricePerHour", 0.0))
    total = float(status.get("costPerHour", sum(cost.values())))
    return desired, cost, total


def build_sample(t: float, sim_hour: float, models: Sequence[ModelInfo], rmds: Sequence[Mapping[str, Any]],
                 pods: Sequence[Mapping[str, Any]], p95: Mapping[tuple[str, ...], float],
                 prom_cost: Mapping[tuple[str, ...], float], load: Mapping[str, LoadSnapshot]) -> Sample:
    """One timeline sample from what the API server, Prometheus and the load generator said at one instant.

    Replicas are the pods the API server reports Running; cost per pool comes from the operator's
    ``hybridrec_cost_per_hour`` in Prometheus, or the RMD status when Prometheus has none yet.
    """
    by_name = {(r["metadata"].get("namespace", "default"), r["metadata"]["name"]): r for r in rmds}
    running = running_replicas(pods)
    sample = Sample(t=round(t, 3), sim_hour=round(sim_hour, 4))
    for m in models:
        key = (m.namespace, m.name)
        desired, status_cost, status_total = placements_of(by_name.get(key, {}))
        cost = {pool: v for (ns, name, pool), v in prom_cost.items() if (ns, name) == key}
        if not cost:
            cost = status_cost
        total = sum(cost.values()) if cost else status_total
        snap = load.get(m.name)
        sample.models[m.name] = ModelSample(
            offered_rps=round(snap.offered_rps, 3) if snap else 0.0,
            served_rps=round(snap.served_rps, 3) if snap else 0.0,
            error_rps=round(snap.error_rps, 3) if snap else 0.0,
            p95_ms=round(p95[key] * 1000.0, 3) if key in p95 else None,
            client_p95_ms=round(snap.client_p95_ms, 3) if snap and snap.client_p95_ms is not None else None,
            replicas_by_pool=running.get(key, {}),
            desired_by_pool=desired,
            cost_per_hour=round(total, 6),
            cost_by_pool={k: round(v, 6) for k, v in cost.items()},
        )
    return sample


def new_decisions(t: float, sim_hour: float, rmds: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                  seen: set[str]) -> list[DecisionRecord]:
    """Decisions not seen before: Kubernetes Events about RecModelDeployments and changes of ``status.lastDecision``.

    ``seen`` (event uid+count, or lastDecision time+message) is updated in place.
    """
    out: list[DecisionRecord] = []
    for ev in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        if obj.get("kind") != "RecModelDeployment":
            continue
        key = f"event:{ev.get('metadata', {}).get('uid')}:{ev.get('count', 1)}"
        if key in seen:
            continue
        seen.add(key)
        out.append(DecisionRecord(t=round(t, 3), sim_hour=round(sim_hour, 4), model=obj.get("name", ""), source="event",
                                  trigger=ev.get("reason", ""), message=ev.get("message") or ev.get("note") or ""))
    for rmd in rmds:
        last = (rmd.get("status") or {}).get("lastDecision")
        if not last:
            continue
        key = f"status:{rmd['metadata']['name']}:{last.get('time')}:{last.get('message')}"
        if key in seen:
            continue
        seen.add(key)
        # The same decision is usually also an Event; keep the status copy only when no event said the same thing.
        if any(d.model == rmd["metadata"]["name"] and d.message == last.get("message") for d in out):
            continue
        out.append(DecisionRecord(t=round(t, 3), sim_hour=round(sim_hour, 4), model=rmd["metadata"]["name"], source="status",
                                  trigger=str(last.get("trigger", "")), message=str(last.get("message", ""))))
    return out


# -------------------------------------------------------------------------------------------------- live view


def _p95_cell(ms: ModelSample, slo_ms: float) -> str:
    p95 = ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms
    if p95 is None:
        return "[dim]-[/dim]"
    mark = "[green]ok[/green]" if p95 <= slo_ms else "[red]over[/red]"
    src = "" if ms.p95_ms is not None else "[dim]c[/dim]"
    return f"{p95:5.1f}{src} / {slo_ms:g} ms {mark}"


def render_live(timeline: Timeline, scenario: Scenario, elapsed: float) -> Any:
    """The live terminal view for the latest sample (a rich renderable; pure, so it is tested by rendering it)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    cur = timeline.currency
    sample = timeline.samples[-1] if timeline.samples else Sample(t=0.0, sim_hour=scenario.start_hour)
    sim_hour = scenario.sim_hour(min(elapsed, scenario.real_seconds))
    sale = scenario.sale
    header = Table.grid(expand=True, padding=(0, 1))
    header.add_column(ratio=2)
    header.add_column(ratio=3)
    header.add_column(justify="right", ratio=2)
    sale_text = ""
    if sale is not None:
        if sale.start_hour <= sim_hour < sale.end_hour:
            sale_text = f"[bold black on yellow] FLASH SALE on {sale.model} x{sale.multiplier:g} [/]"
        elif sim_hour < sale.start_hour:
            sale_text = f"flash sale on {sale.model} at {clock(sale.start_hour)} (declared in its schedule)"
        else:
            sale_text = f"[dim]flash sale over ({clock(sale.start_hour)}-{clock(sale.end_hour)})[/dim]"
    header.add_row(f"[bold]simulated {clock(sim_hour)}[/bold]  [dim]real +{elapsed:4.0f}s / {scenario.real_seconds:.0f}s[/dim]",
                   ProgressBar(total=scenario.real_seconds, completed=min(elapsed, scenario.real_seconds)), sale_text)

    models = Table(title="Models", title_justify="left", expand=True, pad_edge=False)
    for col, kw in (("model", {}), ("data", {}), ("rps offered/served", {"justify": "right"}),
                    ("p95 / SLO", {"justify": "right"}), ("replicas priv/pub", {"justify": "center"}),
                    ("placement (running)", {}), (f"{cur}/h (budget)", {"justify": "right"})):
        models.add_column(col, **kw)
    for m in timeline.models:
        ms = sample.models.get(m.name, ModelSample())
        priv, pub = tenancy_replicas(timeline, sample, m.name)
        placement = escape(", ".join(f"{p}:{n}" for p, n in sorted(ms.replicas_by_pool.items()) if n)) or "[dim]none yet[/dim]"
        budget = f" ({m.budget_per_hour:.2f})" if m.budget_per_hour is not None else ""
        color = {"restricted": "red", "confidential": "magenta", "internal": "yellow"}.get(m.sensitivity, "green")
        models.add_row(escape(m.name), f"[{color}]{m.sensitivity}[/{color}]", f"{ms.offered_rps:5.1f} / {ms.served_rps:5.1f}",
                       _p95_cell(ms, m.slo_p95_ms), f"{priv} / {'[bold]' if pub else ''}{pub}{'[/bold]' if pub else ''}",
                       placement, f"{ms.cost_per_hour:.2f}{budget}")

    pools = Table(title="Pools", title_justify="left", expand=True, pad_edge=False)
    for col, kw in (("pool", {}), ("tenancy", {}), ("price", {"justify": "right"}), ("replicas", {"justify": "right"}),
                    (f"{cur}/h", {"justify": "right"})):
        pools.add_column(col, **kw)
    for p in timeline.pools:
        replicas = sum(ms.replicas_by_pool.get(p.name, 0) for ms in sample.models.values())
        cost = sum(ms.cost_by_pool.get(p.name, 0.0) for ms in sample.models.values())
        tenancy = f"[cyan]{p.tenancy}[/cyan]" if p.tenancy == "private" else f"[orange3]{p.tenancy} {p.capacity_type}[/orange3]"
        pools.add_row(p.name, tenancy, f"{p.price_per_gpu_hour:.2f} {p.currency}/GPU-h", str(replicas), f"{cost:.2f}")

    decisions = Table(title="Latest decisions", title_justify="left", expand=True, pad_edge=False, show_header=False)
    decisions.add_column("when", width=6)
    decisions.add_column("model", width=14)
    decisions.add_column("what", ratio=1, overflow="fold")
    for d in timeline.decisions[-5:]:
        decisions.add_row(clock(d.sim_hour), escape(d.model), f"[dim]{escape(d.trigger)}[/dim] {escape(d.message)}")
    if not timeline.decisions:
        decisions.add_row("", "", "[dim]none yet[/dim]")

    spent = sum(
        ms.cost_per_hour * max(0.0, nxt.sim_hour - cur_s.sim_hour)
        for cur_s, nxt in zip(timeline.samples, timeline.samples[1:]) for ms in cur_s.models.values()
    )
    now_cost = sum(ms.cost_per_hour for ms in sample.models.values())
    footer = Text.from_markup(
        f"[bold]{money(now_cost, cur)}/h now[/bold] · {money(spent, cur)} spent so far this simulated day · "
        "[dim]replicas = Running pods; p95 from Prometheus (c = client-side while Prometheus has none)[/dim]")
    return Group(header, models, pools, decisions, footer)


# ---------------------------------------------------------------------------------------------- orchestration

EXPLAIN = {
    "cluster": (
        "A real Kubernetes control plane is running on 127.0.0.1 (etcd, kube-apiserver, scheduler, controllers) with "
        "9 fake GPU nodes (kwok) in 4 pools: onprem-a100 and onprem-t4 are [cyan]private[/cyan] (reserved, cheap, "
        "limited), aws-spot-l4 and gcp-ondemand-a100 are [orange3]public[/orange3] cloud (elastic, pricier, tainted "
        "so only workloads allowed there land on them)."
    ),
    "models": (
        "Three models, three data classes:\n"
        "  [red]account-recs[/red] is [red]restricted[/red] (built from account data): it may only run on private "
        "pools that list `restricted` (onprem-a100). No price or load changes that: the operator never places it "
        "elsewhere, and the admission policy would refuse such a pod at the API server anyway.\n"
        "  [yellow]homepage-recs[/yellow] is [yellow]internal[/yellow] with allowPublicBurst: private pools first, "
        "public spot capacity only when the private pools are full.\n"
        "  [green]trending[/green] is [green]public[/green]: it goes wherever it is cheapest."
    ),
    "sale": (
        "The flash sale is declared in homepage-recs' spec.scaling.schedule ({window}, x{mult:g}). The cost "
        "controller (every {interval:g} s) forecasts demand from Prometheus, multiplies in the declared event and "
        "provisions ahead by the pools' start-up time, so the extra replicas are serving when the sale starts. When "
        "private capacity runs out, homepage-recs bursts to aws-spot-l4 (public spot: the cheapest public GPU), "
        "while account-recs stays private."
    ),
}


@dataclass
class DemoOptions:
    """What ``hybridrec demo run`` was asked to do."""

    workdir: Path = DEFAULT_WORKDIR
    output: Path = DEFAULT_OUTPUT
    scenario_file: Path = SCENARIO_FILE
    duration_seconds: float | None = None
    train: bool = True
    epochs: int = 4
    s3_port: int = 0
    prometheus_port: int = 0
    keep: bool = True
    live: bool | None = None  # None: a live view when stdout is a terminal
    seed: int = 7


@dataclass
class _Services:
    s3_url: str = ""
    prometheus_url: str = ""
    operator_metrics: str = ""
    runner_dir: Path = Path()
    names: dict[str, str] = field(default_factory=dict)  # service -> log path


class StepHandle:
    """Lets a step update its progress line; the last note is printed when the step is done."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task
        self.info = ""

    def note(self, text: str) -> None:
        self.info = text
        self._progress.update(self._task, info=text)

    def total(self, total: float) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, n: float = 1.0) -> None:
        self._progress.advance(self._task, n)

    def completed(self, n: float) -> None:
        self._progress.update(self._task, completed=n)



class _EpochHandler(logging.Handler):
    """Advances the training progress bar on the trainer's per-epoch log line."""

    def __init__(self, on_epoch: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._on_epoch = on_epoch

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("epoch "):
            self._on_epoch(msg)


class _Training(threading.Thread):
    """Trains (or builds) one artifact per architecture in the background; the demo joins it before pushing."""

    def __init__(self, archs: Sequence[str], out_dir: Path, train: bool, epochs: int) -> None:
        super().__init__(name="demo-training", daemon=True)
        self.archs, self.out_dir, self.train, self.epochs = list(archs), out_dir, train, epochs
        self.results: dict[str, tuple[Path, Mapping[str, Any]]] = {}
        self.messages: list[str] = []  # printed when the demo reaches the training step, to keep the story in order
        self.epochs_done = 0
        self.last_line = ""
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.seconds = 0.0

    @property
    def total_epochs(self) -> int:
        return self.epochs * len(self.archs)

    def run(self) -> None:
        started = time.monotonic()
        try:
            for arch in self.archs:
                self.results[arch] = self._one(arch)
                self.epochs_done = self.epochs * (self.archs.index(arch) + 1)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by the training step
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started
            self.done.set()

    def _on_epoch(self, arch: str, msg: str) -> None:
        self.epochs_done += 1
        self.last_line = f"{arch}: {msg}"

    def _one(self, arch: str) -> tuple[Path, Mapping[str, Any]]:
        from hybridrec_server.data import DatasetNotFoundError
        from hybridrec_server.testing import make_small_artifact

        out = self.out_dir / arch
        shutil.rmtree(out, ignore_errors=True)
        if not self.train:
            self.messages.append(f"  --no-train: serving a small random-initialised {arch} model (MovieLens 100K shape)")
            return make_small_artifact(out, arch, version=f"{arch}-small-demo"), {}
        try:
            return self._train(arch, out)
        except DatasetNotFoundError as exc:
            self.messages.append(f"[yellow]  MovieLens 100K is not installed ({exc}); serving a small random-initialised "
                                 f"{arch} model instead. `make install` installs the dataset.[/yellow]")
            return make_small_artifact(out, arch, version=f"{arch}-small-demo"), {}

    def _train(self, arch: str, out: Path) -> tuple[Path, Mapping[str, Any]]:
        import torch

        from hybridrec_server.train import format_report, train_and_evaluate

        handler = _EpochHandler(lambda msg: self._on_epoch(arch, msg))
        train_log = logging.getLogger("hybridrec_server.train")
        train_log.addHandler(handler)
        old_level = train_log.level
        train_log.setLevel(logging.INFO)
        threads = torch.get_num_threads()
        # The control plane and Prometheus share the cores: one CPU thread trains ~5x faster here than OpenMP
        # threads spinning against them (a GPU, when present, is picked by the trainer regardless).
        torch.set_num_threads(1)
        try:
            path, metrics = train_and_evaluate(arch, epochs=self.epochs, out_dir=out, seed=0, version=f"{arch}-ml100k-demo")
        finally:
            torch.set_num_threads(threads)
            train_log.removeHandler(handler)
            train_log.setLevel(old_level)
        self.messages.append(f"  trained {format_report(metrics)}")
        return path, metrics


class _Terminate(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so every ``finally`` cleans up."""


def _free_port() -> int:
    from hybridrec_local.localcluster import free_ports

    return free_ports(1)[0]


def _executable(name: str) -> str | None:
    """A console script of this virtualenv, else one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if os.access(local, os.X_OK) else shutil.which(name)


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code < 500
    except httpx.HTTPError:
        return False


class Demo:
    """Runs the demo; every process it starts is recorded in the local cluster's state, so :func:`demo_down`
    (or the clean-up on Ctrl-C, SIGTERM and failure) stops all of them."""

    def __init__(self, options: DemoOptions, console: Any | None = None) -> None:
        from rich.console import Console

        from hybridrec_local.localcluster import LocalCluster

        self.opts = options
        self.console = console or Console()
        self.scenario = load_scenario(options.scenario_file)
        if options.duration_seconds is not None:
            self.scenario = self.scenario.with_duration(options.duration_seconds)
        self.workdir = options.workdir.expanduser().resolve()
        self.cluster = LocalCluster(self.workdir / "cluster", die_with_parent=False, progress=self._cluster_progress)
        self.services = _Services(runner_dir=self.workdir / "podrunner")
        self._cluster_step: StepHandle | None = None
        self._training: _Training | None = None
        self.artifacts: dict[str, Artifact] = {}
        self.timeline: Timeline | None = None
        self.load: LoadGenerator | None = None

    # ---- entry point ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        """The whole demo; returns the report path. On any failure or interrupt everything started is stopped."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        ok = False
        try:
            report = self._run()
            ok = True
            return report
        except (DemoError, KeyboardInterrupt, _Terminate):
            raise
        except Exception as exc:
            raise DemoError("the demo", f"unexpected {type(exc).__name__}: {exc}",
                            f"logs are in {self.workdir / 'logs'} and {self.cluster.log_dir}; please report this") from exc
        finally:
            signal.signal(signal.SIGTERM, previous)
            if self.load is not None:
                self.load.stop()
            if not ok or not self.opts.keep:
                self._stop_everything(reason="the demo stopped early" if not ok else "--no-keep")

    def _on_sigterm(self, *_: Any) -> None:
        raise _Terminate()

    def _stop_everything(self, reason: str) -> None:
        self.console.print(f"[dim]Stopping everything the demo started ({reason})...[/dim]")
        stopped = self.cluster.down(quiet=True)
        self.console.print(f"[dim]Stopped {len(stopped)} process(es).[/dim]")

    def _run(self) -> Path:
        c = self.console
        c.rule("[bold]hybridrec demo[/bold]")
        c.print("hybridrec places PyTorch recommendation models on private and public GPU pools by [bold]data "
                "sensitivity[/bold] and [bold]price[/bold], and a cost controller steers replicas by demand, SLO and "
                "budget. This demo runs all of it on this machine and plays one compressed day of traffic.\n")
        self._step_checks()
        self._start_training()
        self._step_cluster()
        c.print(EXPLAIN["cluster"])
        self._step_s3()
        self._step_prometheus()
        self._step_install()
        self._step_operator()
        self._step_pod_runner()
        self._step_models()
        self._step_apply()
        c.print(EXPLAIN["models"])
        self._step_first_replicas()
        sale = self.scenario.sale
        if sale is not None:
            c.print(EXPLAIN["sale"].format(window=f"{clock(sale.start_hour)}-{clock(sale.end_hour)}",
                                           mult=sale.multiplier, interval=self.scenario.control_interval_s))
        sc = self.scenario
        settings = [f"pool start-up {sc.pool_startup_seconds} s"]
        if sc.scale_down_stabilization_s is not None:
            settings.append(f"scale-down stabilization {sc.scale_down_stabilization_s} s")
        settings += [f"{k.removeprefix('HYBRIDREC_').removesuffix('_SECONDS').lower().replace('_', ' ')} {v} s"
                     for k, v in sorted(sc.operator_env.items()) if k.endswith("_SECONDS")]
        c.print(f"[dim]{sc.seconds_per_sim_hour:.1f} real seconds are one simulated hour, so the controller's time "
                f"constants are shortened to match: {', '.join(settings)}.[/dim]")
        self._traffic()
        return self._finish()

    # ---- steps ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, title: str, hint: str = "", total: float | None = None) -> Iterator[StepHandle]:
        """A progress line while a long step runs, then one line saying it is done (so the output reads in order);
        any error becomes a DemoError naming the step and what to do."""
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        started = time.monotonic()
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                      TextColumn("[dim]{task.fields[info]}[/dim]"), TimeElapsedColumn(), console=self.console,
                      transient=True, disable=not self.console.is_terminal) as progress:
            task = progress.add_task(title, total=total, info="")
            handle = StepHandle(progress, task)
            try:
                yield handle
            except (DemoError, KeyboardInterrupt, _Terminate):
                progress.stop()
                self.console.print(f"[red]✗ {title}[/red]")
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is reported with the step's name and a hint
                progress.stop()
                self.console.print(f"[red]✗ {title}[/red]")
                raise DemoError(title, f"{type(exc).__name__}: {exc}", hint) from exc
        from rich.markup import escape

        info = handle.info
        self.console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f} s)"
                           f"{' ' + escape(info) if info else ''}[/dim]")

    def _wait(self, step: str, what: str, check: Callable[[], bool], timeout: float, hint: str,
              alive: Callable[[], None] | None = None) -> None:
        """Poll ``check`` until true; a timeout is a DemoError that names the step and says what to look at."""
        deadline = time.monotonic() + timeout
        while not check():
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise DemoError(step, f"timed out after {timeout:.0f} s waiting for {what}", hint)
            time.sleep(0.5)

    def _step_checks(self) -> None:
        title = "Checking what the demo needs"
        with self.step(title, total=5) as h:
            problems: list[str] = []
            missing = self.cluster.missing_binaries()
            if missing:
                problems.append(f"control-plane binaries missing in {self.cluster.bin_dir}: {', '.join(missing)} "
                                "(run `make install`, or `bash hack/build-binaries.sh`)")
            h.advance()
            if shutil.which("prometheus") is None:
                problems.append("the `prometheus` binary is not on PATH (run `make install`, or `apt-get install prometheus`)")
            if _executable("moto_server") is None:
                problems.append("`moto_server` is missing (run `make install`, or `pip install 'moto[server]'`)")
            h.advance()
            for mod, fix in (("matplotlib", "pip install matplotlib"), ("jinja2", "pip install jinja2"),
                             ("hybridrec_server.train", "pip install -e '.[server]'")):
                try:
                    __import__(mod)
                except ImportError:
                    problems.append(f"Python module {mod} is missing ({fix}, or `make install`)")
            h.advance()
            from hybridrec_local.localcluster import port_in_use

            for name, port, flag in (("S3 store", self.opts.s3_port, "--s3-port"),
                                     ("Prometheus", self.opts.prometheus_port, "--prometheus-port")):
                if port and port_in_use(port):
                    problems.append(f"{name}: port 127.0.0.1:{port} is already in use; stop what listens there "
                                    f"or pass {flag} 0 to use a free port")
            h.advance()
            for needed in (CRDS_DIR, POLICY_DIR, POOLS_FILE, MODELS_FILE):
                if not needed.exists() or (needed.is_dir() and not any(needed.glob("*.yaml"))):
                    problems.append(f"{needed} is missing (a fresh clone has it; `make crds` regenerates the CRDs)")
            h.advance()
            if problems:
                raise DemoError(title, "\n  - " + "\n  - ".join(problems), "fix the items above and run `make demo` again")
            if self.cluster.status().processes:
                self.console.print("A previous demo was still running: stopping it first.")
                self.cluster.down(quiet=True)

    def _cluster_progress(self, message: str) -> None:
        if self._cluster_step is not None:
            self._cluster_step.note(message)
            self._cluster_step.advance()

    def _step_cluster(self) -> None:
        from hybridrec_local.localcluster import ClusterError

        title = "Starting the local Kubernetes control plane (no Docker)"
        hint = f"look at the logs in {self.cluster.log_dir}; `make demo-down` clears leftovers"
        with self.step(title, hint, total=10) as h:
            self._cluster_step = h
            try:
                self.cluster.up(timeout=240)
            except ClusterError as exc:
                raise DemoError(title, str(exc), hint) from exc
            finally:
                self._cluster_step = None

    def _start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Any:
        log_path = self.workdir / "logs" / f"{name}.log"
        self.services.names[name] = str(log_path)
        return self.cluster.start_process(name, argv, env={**S3_ENV, **(env or {})}, log_path=log_path,
                                          die_with_parent=False)

    def _alive(self, step: str, *names: str, control_plane: bool = False) -> Callable[[], None]:
        """A check that raises a DemoError with the log tail when a named service (or the control plane) exited."""
        from hybridrec_local.localcluster import CONTROL_PLANE, tail

        def check() -> None:
            status = self.cluster.status()
            latest = {p.name: p for p in status.processes}  # the last record of a name wins
            for name in names:
                proc = latest.get(name)
                if proc is None or not proc.alive:
                    log_path = self.services.names.get(name, "")
                    raise DemoError(step, f"{name} exited. Last lines of {log_path}:\n{tail(log_path, 15)}",
                                    f"read {log_path}")
            # Process liveness only: a slow /readyz on a busy machine is not a reason to stop the demo.
            down = [n for n in CONTROL_PLANE if control_plane and (n not in latest or not latest[n].alive)]
            if down:
                raise DemoError(step, f"the local control plane stopped: {', '.join(down)} exited",
                                f"look at the logs in {self.cluster.log_dir}")
        return check

    def _step_s3(self) -> None:
        title = "Starting the S3-compatible store (moto_server)"
        with self.step(title, "run `pip install 'moto[server]'` (make install does)") as h:
            port = self.opts.s3_port or _free_port()
            self.services.s3_url = f"http://127.0.0.1:{port}"
            self._start("s3", [_executable("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)])
            self._wait(title, f"moto_server on {self.services.s3_url}", lambda: _http_ok(self.services.s3_url), 45,
                       f"read {self.services.names['s3']}", self._alive(title, "s3"))
            os.environ.update(S3_ENV)  # boto3 in this process (artifact push) uses the same throwaway credentials
            from hybridrec_server.artifacts import s3_client

            s3_client(self.services.s3_url).create_bucket(Bucket=ARTIFACT_BUCKET)
            h.note(self.services.s3_url)

    def _architectures(self) -> list[str]:
        return sorted({(d.get("spec", {}).get("model", {}) or {}).get("architecture", "two-tower") for d in _docs(MODELS_FILE)})

    def _start_training(self) -> None:
        """Train in a background thread while the cluster and services start (they mostly wait; training computes)."""
        self._training = _Training(self._architectures(), self.workdir / "artifacts", self.opts.train, self.opts.epochs)
        self._training.start()

    def _step_models(self) -> None:
        from hybridrec_server.artifacts import push

        training = self._training
        assert training is not None
        what = " and ".join(training.archs)
        title = (f"Training {what} on MovieLens 100K ({self.opts.epochs} epoch{'s' if self.opts.epochs > 1 else ''} max)"
                 if self.opts.train else f"Building small {what} models")
        with self.step(title, "`make install` installs torch and the dataset", total=training.total_epochs) as h:
            while not training.done.wait(0.2):
                h.completed(training.epochs_done)
                h.note(training.last_line)
            h.completed(training.total_epochs)
            if training.error is not None:
                raise training.error
            for line in training.messages:
                self.console.print(line, highlight=False)
            for arch, (path, metrics) in training.results.items():
                uri = f"s3://{ARTIFACT_BUCKET}/{arch}/"
                sha = push(path, uri, endpoint_url=self.services.s3_url)
                version = json.loads((path / "config.json").read_text()).get("version", "") if (path / "config.json").exists() else ""
                self.artifacts[arch] = Artifact(uri=uri, sha256=sha, architecture=arch, version=str(version)[:63], metrics=metrics)
            h.note(f"{training.seconds:.0f} s in the background while the services started; pushed to "
                   + ", ".join(a.uri for a in self.artifacts.values()))

    def _step_prometheus(self) -> None:
        from hybridrec_local.promlocal import OPERATOR_TARGETS, write_json_atomically

        title = "Starting Prometheus"
        with self.step(title, "run `apt-get install prometheus` (make install does)") as h:
            port = self.opts.prometheus_port or _free_port()
            self.services.prometheus_url = f"http://127.0.0.1:{port}"
            metrics_port = _free_port()
            self.services.operator_metrics = f"127.0.0.1:{metrics_port}"
            sd_dir = self.services.runner_dir
            sd_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(sd_dir / OPERATOR_TARGETS, [{"targets": [self.services.operator_metrics], "labels": {}}])
            prom_dir = self.workdir / "prometheus"
            shutil.rmtree(prom_dir, ignore_errors=True)
            self._start("prometheus", [sys.executable, "-m", "hybridrec_local.promlocal", str(prom_dir), "--sd-dir",
                                       str(sd_dir), "--port", str(port), "--scrape-interval", "2"])
            self._wait(title, f"Prometheus on {self.services.prometheus_url}",
                       lambda: _http_ok(f"{self.services.prometheus_url}/-/ready"), 60,
                       f"read {self.services.names['prometheus']} and {prom_dir / 'prometheus.log'}",
                       self._alive(title, "prometheus"))
            h.note(self.services.prometheus_url)

    def _step_install(self) -> None:
        title = "Installing the CRDs and the admission policy"
        with self.step(title, "`make crds` regenerates manifests/crds") as h:
            self.cluster.kubectl("apply", "-f", str(CRDS_DIR))
            self.cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=90)
            h.note("CRDs established")
            self.cluster.kubectl("apply", "-f", str(POLICY_DIR))
            h.note("ValidatingAdmissionPolicy applied; checking that the API server enforces it")
            refusal = self._policy_refusal()
        if refusal:
            self.console.print("Admission check: a hand-made pod of restricted data aimed at a public node is refused "
                               f"by the API server itself:\n  [red]{refusal}[/red]", highlight=False)
        else:
            self.console.print("[yellow]The admission policy did not refuse a restricted pod on a public node within "
                               "20 s; the operator's placement rule still applies.[/yellow]")

    def _policy_refusal(self, timeout: float = 20.0) -> str | None:
        """Dry-run (server side) a restricted pod pinned to public nodes; the policy's message, or None if admitted.

        Policies take a moment to load after they are created, hence the retries.
        """
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "restricted-on-public", "namespace": "default",
                            "labels": {"hybridrec.io/model": "account-recs", "hybridrec.io/sensitivity": "restricted"}},
               "spec": {"nodeSelector": {"hybridrec.io/tenancy": "public"},
                        "tolerations": [{"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public",
                                         "effect": "NoSchedule"}],
                        "containers": [{"name": "server", "image": "ghcr.io/hybridrec/server:0.1.0"}]}}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
            if res.returncode != 0:
                return " ".join(res.stderr.split())[:400]
            time.sleep(1.0)
        return None

    def _step_operator(self) -> None:
        title = f"Starting the operator (cost controller every {self.scenario.control_interval_s:g} s)"
        with self.step(title) as h:
            port = self.services.operator_metrics.rsplit(":", 1)[1]
            self._start("operator", [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", "--standalone",
                                     "--all-namespaces", "--metrics-port", port, "--metrics-address", "127.0.0.1"],
                        env={**self.cluster.env(), **self.scenario.operator_env,
                             "HYBRIDREC_PROMETHEUS_URL": self.services.prometheus_url,
                             "HYBRIDREC_CONTROL_INTERVAL_SECONDS": f"{self.scenario.control_interval_s:g}",
                             "AWS_ENDPOINT_URL": self.services.s3_url})
            self._wait(title, f"operator metrics on {self.services.operator_metrics}",
                       lambda: _http_ok(f"http://{self.services.operator_metrics}/metrics"), 90,
                       f"read {self.services.names['operator']}", self._alive(title, "operator"))
            h.note(f"metrics on {self.services.operator_metrics}")

    def _step_pod_runner(self) -> None:
        title = "Starting the pod runner (one real model server per Running pod)"
        with self.step(title) as h:
            self._start("pod-runner", [sys.executable, "-m", "hybridrec_local.podrunner", "--kubeconfig",
                                       str(self.cluster.kubeconfig), "--state-dir", str(self.services.runner_dir),
                                       "--s3", self.services.s3_url],
                        env={"AWS_ENDPOINT_URL": self.services.s3_url})
            from hybridrec_local.podrunner import SERVERS_FILE

            self._wait(title, "the pod runner's first servers.json", lambda: (self.services.runner_dir / SERVERS_FILE).exists(),
                       60, f"read {self.services.names['pod-runner']}", self._alive(title, "pod-runner"))
            h.note(str(self.services.runner_dir))

    def _step_apply(self) -> None:
        title = "Applying 4 ComputePools and 3 RecModelDeployments"
        with self.step(title, "the CRDs refuse invalid objects; the message above says which field") as h:
            pools = render_pools(_docs(POOLS_FILE), self.scenario)
            models = render_models(_docs(MODELS_FILE), self.scenario, self.artifacts)
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pools))
            self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(models))
            self.timeline = Timeline(
                started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                real_seconds=self.scenario.real_seconds, start_hour=self.scenario.start_hour, currency="USD",
                pools=pool_infos(pools), models=model_infos(models),
                sale=FlashSale(self.scenario.sale.model, self.scenario.sale.start_hour, self.scenario.sale.end_hour,
                               self.scenario.sale.multiplier) if self.scenario.sale else None)
            h.note(", ".join(m.name for m in self.timeline.models))

    def _ready_servers(self) -> dict[str, list[str]]:
        from hybridrec_local.podrunner import SERVERS_FILE

        try:
            return json.loads((self.services.runner_dir / SERVERS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _step_first_replicas(self) -> None:
        assert self.timeline is not None
        title = "Waiting for the first replicas to load their model and serve"
        models = self.timeline.models
        with self.step(title, "the operator and pod runner logs are in " + str(self.workdir / "logs"),
                       total=len(models)) as h:
            def check() -> bool:
                ready = self._ready_servers()
                n = sum(1 for m in models if ready.get(f"{m.namespace}/{m.name}"))
                h.note(f"{n}/{len(models)} models serving")
                h.completed(n)
                return n == len(models)

            self._wait(title, "one ready server per model", check, 240,
                       f"look at {self.workdir / 'logs'} and {self.services.runner_dir / 'logs'}",
                       self._alive(title, "operator", "pod-runner", "prometheus", "s3", control_plane=True))

    # ---- traffic -------------------------------------------------------------------------------------------
    def _declare_sale(self, traffic_start: dt.datetime) -> None:
        event = sale_event(self.scenario, traffic_start)
        if event is None or self.timeline is None:
            return
        sale_model = next(m for m in self.timeline.models if m.name == self.scenario.sale.model)  # type: ignore[union-attr]
        patch = {"spec": {"scaling": {"schedule": [event]}}}
        self.cluster.kubectl("patch", "rmd", sale_model.name, "-n", sale_model.namespace, "--type=merge",
                             "-p", json.dumps(patch))

    def _query(self, client: Any, expr: str) -> Mapping[str, Any]:
        try:
            resp = client.get(f"{self.services.prometheus_url}/api/v1/query", params={"query": expr})
            return resp.json() if resp.status_code == 200 else {}
        except Exception:  # noqa: BLE001 - a missed scrape shows as "-" in the view; the demo goes on
            return {}

    def _observe(self, client: Any, seen: set[str]) -> None:
        assert self.timeline is not None and self.load is not None
        sc = self.scenario
        t = min(self.load.elapsed, sc.real_seconds)
        sim = sc.sim_hour(t)
        sel = urllib.parse.quote(MANAGED_SELECTOR)
        rmds = self.cluster.api_get("/apis/hybridrec.io/v1alpha1/recmodeldeployments")["items"]
        pods = self.cluster.api_get(f"/api/v1/pods?labelSelector={sel}")["items"]
        events = self.cluster.api_get("/api/v1/events?fieldSelector="
                                      + urllib.parse.quote("involvedObject.kind=RecModelDeployment"))["items"]
        window = f"{max(10, int(4 * 2))}s"
        p95 = prom_vector(self._query(client, PROM_P95.format(w=window)), ("namespace", "model"))
        cost = prom_vector(self._query(client, PROM_COST), ("namespace", "model", "pool"))
        # Served rate over about half a simulated hour: short enough to follow the curve, long enough to be smooth.
        load = self.load.snapshot(window_s=min(5.0, max(2.0, 0.5 * sc.seconds_per_sim_hour)))
        self.timeline.samples.append(build_sample(t, sim, self.timeline.models, rmds, pods, p95, cost, load))
        self.timeline.decisions.extend(new_decisions(t, sim, rmds, events, seen))

    def _traffic(self) -> None:
        import httpx
        from rich.live import Live

        assert self.timeline is not None
        sc = self.scenario
        c = self.console
        traffic_start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        self._declare_sale(traffic_start)
        from hybridrec_local.podrunner import SERVERS_FILE

        self.load = LoadGenerator(sc, self.services.runner_dir / SERVERS_FILE,
                                  {m.name: m.namespace for m in self.timeline.models}, seed=self.opts.seed)
        time.sleep(max(0.0, (traffic_start - dt.datetime.now(dt.timezone.utc)).total_seconds()))
        c.rule(f"[bold]One simulated day in {sc.real_seconds:.0f} s[/bold]")
        self.load.start()
        seen: set[str] = set()
        live_mode = self.opts.live if self.opts.live is not None else c.is_terminal
        step = "playing the day of traffic"
        alive = self._alive(step, "operator", "pod-runner", "prometheus", "s3", control_plane=True)
        last_line = -1.0
        failures = 0
        with httpx.Client(timeout=3.0, trust_env=False) as client, contextlib.ExitStack() as stack:
            live = stack.enter_context(Live(render_live(self.timeline, sc, 0.0), console=c, refresh_per_second=2,
                                            transient=False)) if live_mode else None
            while True:
                tick = time.monotonic()
                alive()
                if self.load.error is not None:
                    raise DemoError(step, f"the load generator failed: {self.load.error!r}")
                try:
                    self._observe(client, seen)
                    failures = 0
                except (OSError, ValueError, KeyError) as exc:  # urllib errors are OSErrors
                    failures += 1
                    if failures >= 5:
                        raise DemoError(step, f"cannot read the cluster any more: {exc}",
                                        f"look at {self.cluster.log_dir}") from exc
                elapsed = self.load.elapsed
                if live is not None:
                    live.update(render_live(self.timeline, sc, elapsed))
                elif elapsed - last_line >= 10 or not self.load.running:
                    last_line = elapsed
                    c.print(_status_line(self.timeline, sc, elapsed))
                if not self.load.running:
                    break
                time.sleep(max(0.0, sc.sample_seconds - (time.monotonic() - tick)))

    # ---- the end -------------------------------------------------------------------------------------------
    def _finish(self) -> Path:
        from hybridrec_local.report import write_report

        assert self.timeline is not None
        c = self.console
        rmd = self.cluster.kubectl("get", "rmd", "-A", check=False)
        self.timeline.kubectl_get_rmd = (rmd.stdout or rmd.stderr).rstrip()
        if not self.opts.train:
            self.timeline.notes.append("Models were small random-initialised artifacts (--no-train).")
        for arch, art in self.artifacts.items():
            if art.metrics:
                self.timeline.notes.append(
                    f"{arch} trained on MovieLens 100K: HR@10 {art.metrics.get('hr@10', 0):.3f} vs popularity "
                    f"{art.metrics.get('popularity_hr@10', 0):.3f}; served from {art.uri}.")
        out = self.opts.output.expanduser().resolve()
        report = write_report(self.timeline, out)
        c.rule("[bold]What happened[/bold]")
        for line in summary_lines(self.timeline):
            c.print(f"  • {line}")
        c.print("\n[bold]kubectl get rmd -A[/bold]")
        c.print(self.timeline.kubectl_get_rmd, markup=False, highlight=False)
        c.print(f"\n[bold green]Report:[/bold green] {report}  (open it in a browser; plots and timeline.json next to it)")
        if self.opts.keep:
            c.print(f"Everything is still running, so you can look around:\n"
                    f"  export KUBECONFIG={self.cluster.kubeconfig}\n"
                    f"  {self.cluster.binary('kubectl')} get rmd,cpool,pods -A\n"
                    f"  Prometheus: {self.services.prometheus_url}\n"
                    f"Stop it all with [bold]make demo-down[/bold] (or `hybridrec demo down`).")
        return report


def _status_line(timeline: Timeline, scenario: Scenario, elapsed: float) -> str:
    """One plain line per model for logs and CI (the live view needs a terminal)."""
    sample = timeline.samples[-1] if timeline.samples else None
    parts = [f"[{clock(scenario.sim_hour(min(elapsed, scenario.real_seconds)))}]"]
    if sample is not None:
        for m in timeline.models:
            ms = sample.models.get(m.name, ModelSample())
            priv, pub = tenancy_replicas(timeline, sample, m.name)
            p95 = ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms
            parts.append(f"{m.name}: {ms.served_rps:.1f}/{ms.offered_rps:.1f} rps, p95 "
                         f"{'-' if p95 is None else f'{p95:.0f}'}/{m.slo_p95_ms:g} ms, {priv} private + {pub} public, "
                         f"{ms.cost_per_hour:.2f} {timeline.currency}/h")
    return " | ".join(parts)


def demo_down(workdir: Path = DEFAULT_WORKDIR) -> list[str]:
    """Stop every process a demo recorded in ``workdir`` (control plane, S3, Prometheus, operator, pod runner and the
    model servers under it). Returns the names of those that were running."""
    from hybridrec_local.localcluster import LocalCluster

    return LocalCluster(Path(workdir).expanduser() / "cluster").down(quiet=True)
