"""Replay a demand trace through scaling policies in simulated time; the hybridrec policy runs the real ``allocate``.

Inputs are what a user has: a CSV trace (``minute``, then one RPS column per model, named like the model) and the
ComputePools and RecModelDeployments as YAML in the CRD schema. The simulated cluster has, per pool, a GPU quota
(``maxGpus``), a price and a pod start-up delay (``startupSeconds``: a pod costs money from creation and serves
only once ready); one ready replica serves ``targetRpsPerReplica`` within the SLO.

Policies: ``hybridrec`` (forecast + global allocator), ``static-peak``, ``hpa`` (Kubernetes HPA defaults on GPU
utilisation, target 70%), ``keda`` (HPA driven by an RPS-per-replica threshold), ``private-only`` (hybridrec's
allocator offered only private pools), ``public-only`` (HPA on public pools only, ignoring data classes as a
cloud-only deployment would) and ``oracle`` (perfect foresight: the cheapest integer allocation covering each minute's
demand, no start-up delay: a lower bound). Baselines place new pods on the cheapest pool that admits the model and
has room and remove pods like a ReplicaSet (not-ready first, then newest).

Measured per policy: total cost, SLO-violation minutes (a model-minute in which ready capacity was below demand at
some tick), sensitive-placement violations (replica-minutes on a pool that ``pool_admits`` refuses), replica moves.
Pure except ``write_plots`` and the loaders' file reading.
"""

from __future__ import annotations

import csv
import io
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, Tenancy, parse_pool, parse_rmd
from hybridrec_operator.core.forecast import ForecastErrors, Sample, demand_to_cover, lead_seconds
from hybridrec_operator.core.planner import (
    DEFAULT_HEADROOM,
    AllocatorMemory,
    ModelState,
    PoolState,
    _moved,
    admitted_pools,
    allocate,
    wanted_replicas,
)
from hybridrec_operator.core.sensitivity import pool_admits

POLICIES = ("hybridrec", "static-peak", "hpa", "keda", "private-only", "public-only", "oracle")
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Trace:
    """RPS per model per minute; minute ``k`` covers ``[start + 60k, start + 60(k+1))``."""

    minutes: np.ndarray
    demand: dict[str, np.ndarray]

    def at(self, model: str, t_rel: float) -> float:
        k = min(int(t_rel // 60), len(self.minutes) - 1)
        return float(self.demand[model][k])

    @property
    def duration_seconds(self) -> float:
        return float(len(self.minutes) * 60)


def parse_trace_csv(text: str) -> Trace:
    """A trace from CSV text: header ``minute,<model>,...``; rows sorted by minute, one per minute."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0][0].strip() != "minute":
        raise ValueError("trace CSV must start with a 'minute' column")
    names = [c.strip() for c in rows[0][1:]]
    body = [r for r in rows[1:] if r and any(c.strip() for c in r)]
    data = np.array([[float(c) for c in r] for r in body], dtype=float)
    if data.size == 0:
        raise ValueError("trace CSV has no rows")
    minutes = data[:, 0].astype(int)
    if np.any(np.diff(minutes) != 1):
        raise ValueError("trace minutes must be consecutive")
    if np.any(data[:, 1:] < 0) or not np.all(np.isfinite(data[:, 1:])):
        raise ValueError("trace RPS must be finite and non-negative")
    return Trace(minutes, {name: data[:, i + 1] for i, name in enumerate(names)})


def trace_to_csv(trace: Trace) -> str:
    out = io.StringIO()
    names = list(trace.demand)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["minute", *names])
    for k, minute in enumerate(trace.minutes):
        writer.writerow([int(minute), *(f"{trace.demand[n][k]:.3f}" for n in names)])
    return out.getvalue()


def parse_objects(texts: Iterable[str]) -> tuple[list[ComputePool], list[RecModelDeployment]]:
    """ComputePools and RecModelDeployments from YAML documents (multi-document or ``kind: List``)."""
    pools: list[ComputePool] = []
    models: list[RecModelDeployment] = []
    for text in texts:
        for doc in yaml.safe_load_all(text):
            for obj in (doc or {}).get("items", [doc]) if isinstance(doc, dict) else []:
                kind = obj.get("kind")
                if kind == "ComputePool":
                    pools.append(parse_pool(obj))
                elif kind == "RecModelDeployment":
                    models.append(parse_rmd(obj))
                else:
                    raise ValueError(f"unexpected kind {kind!r}: expected ComputePool or RecModelDeployment")
    return pools, models


# --------------------------------------------------------------------------------------- simulated cluster


@dataclass
class Pod:
    created: float
    ready_at: float


@dataclass
class Cluster:
    """Pods per (model, pool) with start-up delays and GPU quotas per pool."""

    pools: dict[str, ComputePool]
    gpus: dict[str, int]  # per model
    pods: dict[tuple[str, str], list[Pod]] = field(default_factory=dict)

    def count(self, model: str) -> dict[str, int]:
        return {p: len(v) for (m, p), v in self.pods.items() if m == model and v}

    def ready(self, model: str, t: float) -> dict[str, int]:
        return {p: sum(pod.ready_at <= t for pod in v) for (m, p), v in self.pods.items() if m == model and v}

    def used_gpus(self, pool: str) -> int:
        return sum(len(v) * self.gpus[m] for (m, p), v in self.pods.items() if p == pool)

    def apply(self, desired: Mapping[str, Mapping[str, int]], t: float, warm: bool = False) -> int:
        """Scale to ``desired`` (absent pools -> 0 for the models listed); returns pods refused for lack of quota."""
        for model, per_pool in desired.items():
            for pool in {p for (m, p) in self.pods if m == model} | set(per_pool):
                pods = self.pods.setdefault((model, pool), [])
                excess = len(pods) - per_pool.get(pool, 0)
                if excess > 0:
                    # Like a ReplicaSet: not-ready pods go first, then the newest.
                    pods.sort(key=lambda pod: (pod.ready_at <= t, pod.created))
                    del pods[:excess]
        refused = 0
        for model, per_pool in desired.items():
            for pool, n in per_pool.items():
                pods = self.pods.setdefault((model, pool), [])
                startup = 0.0 if warm else float(self.pools[pool].spec.startup_seconds)
                for _ in range(n - len(pods)):
                    if self.used_gpus(pool) + self.gpus[model] > self.pools[pool].spec.max_gpus:
                        refused += 1
                        continue
                    pods.append(Pod(t, t + startup))
        return refused


@dataclass(frozen=True)
class View:
    """What a policy sees at time ``t``: the observed demand (RPS) and the cluster."""

    t: float  # seconds since the simulation start
    epoch: float  # t as seconds since the Unix epoch (for schedules)
    demand: Mapping[str, float]
    cluster: Cluster


class Policy(Protocol):
    name: str

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        """Desired replicas per model and pool, or None to leave everything as it is."""


# ---------------------------------------------------------------------------------------------- policies


def _pool_states(pools: Sequence[ComputePool]) -> list[PoolState]:
    return [PoolState(p.name, p.spec, p.spec.max_gpus) for p in pools]


@dataclass
class AllocatorPolicy:
    """hybridrec: forecast each model's demand over its lead time and run the global allocator every interval."""

    name: str
    models: Sequence[RecModelDeployment]
    pools: Sequence[ComputePool]
    interval: float = 30.0
    headroom: float = DEFAULT_HEADROOM
    history_seconds: float = 600.0
    memory: AllocatorMemory = field(default_factory=AllocatorMemory)
    solve_seconds: list[float] = field(default_factory=list)
    history: dict[str, deque[Sample]] = field(default_factory=dict)
    errors: dict[str, ForecastErrors] = field(default_factory=dict)
    adaptive_headroom: bool = True

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        for rmd in self.models:
            h = self.history.setdefault(rmd.name, deque())
            h.append(Sample(view.epoch, view.demand[rmd.name]))
            while h and h[0].t < view.epoch - self.history_seconds:
                h.popleft()
        if view.t % self.interval:
            return None
        states = _pool_states(self.pools)
        models = []
        for rmd in self.models:
            allowed = admitted_pools(rmd.spec, states)
            lead = lead_seconds([p.spec.startup_seconds for p in allowed], self.interval)
            history = list(self.history[rmd.name])
            demand = demand_to_cover(history, rmd.spec.scaling.schedule, view.epoch, lead, self.interval)
            errors = self.errors.setdefault(rmd.name, ForecastErrors())
            errors.settle(history)
            errors.record(view.epoch, demand, lead)
            headroom = errors.headroom(self.headroom) if self.adaptive_headroom else self.headroom
            models.append(
                ModelState(
                    key=rmd.name,
                    spec=rmd.spec,
                    demand_rps=demand,
                    rps_per_replica=rmd.spec.scaling.target_rps_per_replica,
                    current=view.cluster.count(rmd.name),
                    pinned=rmd.spec.replicas,
                    ready=view.cluster.ready(rmd.name, view.t),
                    headroom=headroom,
                )
            )
        allocation, self.memory = allocate(models, states, view.epoch, self.memory, headroom=self.headroom)
        self.solve_seconds.append(allocation.solve_seconds)
        return {k: dict(a.replicas) for k, a in allocation.models.items()}


def _cheapest_first(rmd: RecModelDeployment, pools: Sequence[ComputePool], ignore_sensitivity: bool) -> list[ComputePool]:
    if ignore_sensitivity:
        allowed = list(pools)
    else:
        allowed = [
            p
            for p in pools
            if pool_admits(rmd.spec.data_sensitivity, p.spec, allow_public_burst=rmd.spec.placement.allow_public_burst)[0]
            and p.name not in rmd.spec.placement.forbidden_pools
        ]
    return sorted(allowed, key=lambda p: (p.spec.pricing.price_per_gpu_hour, p.spec.tenancy == Tenancy.PUBLIC, p.name))


def place_total(rmd: RecModelDeployment, total: int, pools: Sequence[ComputePool], cluster: Cluster, t: float) -> dict[str, int]:
    """Baseline placement of ``total`` replicas: keep existing pods, add on the cheapest pool with room, remove like a
    ReplicaSet (not-ready first, then newest). ``pools`` is already filtered and sorted cheapest first."""
    counts = {p.name: len(cluster.pods.get((rmd.name, p.name), [])) for p in pools}
    g = rmd.spec.resources.gpus
    have = sum(counts.values())
    if total > have:
        for p in pools:
            room = (p.spec.max_gpus - cluster.used_gpus(p.name)) // g
            add = max(0, min(room, total - have))
            counts[p.name] += add
            have += add
    elif total < have:
        pods = [(pool, pod) for pool in counts for pod in cluster.pods.get((rmd.name, pool), [])]
        pods.sort(key=lambda item: (item[1].ready_at <= t, -item[1].created))
        for pool, _ in pods[: have - total]:
            counts[pool] -= 1
    return counts


@dataclass
class HpaPolicy:
    """Kubernetes HPA defaults: tolerance 10%, scale-up by max(100%, 4 pods) per 15 s sync, 300 s scale-down
    stabilisation (max recommendation over the window), unready pods count as idle when scaling up.

    ``target_utilisation`` set: a resource metric (GPU utilisation = RPS per ready pod / capacity per replica).
    ``rps_threshold`` set instead: KEDA's external metric with an AverageValue target (RPS over all replicas).
    """

    name: str
    models: Sequence[RecModelDeployment]
    pools: Sequence[ComputePool]
    target_utilisation: float | None = 0.7
    rps_threshold: Callable[[RecModelDeployment], float] | None = None
    ignore_sensitivity: bool = False
    sync: float = 15.0
    tolerance: float = 0.1
    down_window: float = 300.0
    replicas: dict[str, int] = field(default_factory=dict)
    recommendations: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def _recommend(self, rmd: RecModelDeployment, view: View, current: int) -> int:
        demand = view.demand[rmd.name]
        cap = rmd.spec.scaling.target_rps_per_replica
        if self.rps_threshold is not None:
            ratio = demand / (self.rps_threshold(rmd) * max(current, 1))
            return current if abs(ratio - 1) <= self.tolerance else math.ceil(ratio * max(current, 1))
        assert self.target_utilisation is not None
        ready = sum(view.cluster.ready(rmd.name, view.t).values())
        unready = max(0, current - ready)
        if ready == 0:
            return current  # no metrics from any pod: the HPA does nothing
        ratio = demand / (ready * cap) / self.target_utilisation
        if unready and ratio > 1:
            ratio = demand / ((ready + unready) * cap) / self.target_utilisation
            if ratio <= 1 + self.tolerance:
                return current
            return math.ceil(ratio * (ready + unready))
        if abs(ratio - 1) <= self.tolerance:
            return current
        return math.ceil(ratio * ready)

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        if view.t % self.sync:
            return None
        out: dict[str, dict[str, int]] = {}
        for rmd in self.models:
            s = rmd.spec.scaling
            current = self.replicas.get(rmd.name, s.min_replicas)
            rec = min(max(self._recommend(rmd, view, current), s.min_replicas), s.max_replicas)
            window = self.recommendations.setdefault(rmd.name, deque())
            window.append((view.t, rec))
            while window and window[0][0] <= view.t - self.down_window:
                window.popleft()
            target = min(current, max(r for _, r in window)) if rec < current else rec
            target = min(target, max(2 * current, current + 4))
            self.replicas[rmd.name] = target
            pools = _cheapest_first(rmd, self.pools, self.ignore_sensitivity)
            out[rmd.name] = place_total(rmd, target, pools, view.cluster, view.t)
        return out


@dataclass
class StaticPolicy:
    """Provision for the trace's peak (plus headroom) all the time: what capacity planning without autoscaling does."""

    name: str
    models: Sequence[RecModelDeployment]
    pools: Sequence[ComputePool]
    peak: Mapping[str, float]
    headroom: float = DEFAULT_HEADROOM

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        out = {}
        for rmd in self.models:
            s = rmd.spec.scaling
            total = wanted_replicas(self.peak[rmd.name], s.target_rps_per_replica, self.headroom, s.min_replicas, s.max_replicas)
            out[rmd.name] = place_total(rmd, total, _cheapest_first(rmd, self.pools, False), view.cluster, view.t)
        return out


# ----------------------------------------------------------------------------------------------- results


@dataclass
class PolicyResult:
    policy: str
    currency: str
    cost: float
    slo_violation_minutes: int  # model-minutes with ready capacity below demand
    sensitive_violations: float  # replica-minutes on pools the data class forbids
    moves: int
    refused_pods: int
    solve_seconds: list[float]
    minutes: np.ndarray
    cost_per_hour: np.ndarray  # per minute
    replicas: dict[str, np.ndarray]  # per model, per minute (pods, starting included)
    slo_violation_by_model: dict[str, int] = field(default_factory=dict)


def _sensitive_ok(rmd: RecModelDeployment, pool: ComputePool) -> bool:
    return pool_admits(rmd.spec.data_sensitivity, pool.spec, allow_public_burst=rmd.spec.placement.allow_public_burst)[0]


def run_policy(
    policy: Policy,
    trace: Trace,
    pools: Sequence[ComputePool],
    models: Sequence[RecModelDeployment],
    *,
    start: datetime = DEFAULT_START,
    tick: float = 15.0,
) -> PolicyResult:
    """Simulate ``policy`` over ``trace``; the first decision is applied warm (pods ready at once) so every policy
    starts from its own steady state."""
    pool_by_name = {p.name: p for p in pools}
    rmd_by_name = {m.name: m for m in models}
    cluster = Cluster(pool_by_name, {m.name: m.spec.resources.gpus for m in models})
    currency = pools[0].spec.pricing.currency if pools else "USD"
    n_min = len(trace.minutes)
    cost_per_hour = np.zeros(n_min)
    replicas = {m.name: np.zeros(n_min) for m in models}
    violated = {m.name: np.zeros(n_min, dtype=bool) for m in models}
    total_cost = 0.0
    sensitive = 0.0
    moves = 0
    refused = 0
    ticks_per_minute = 60.0 / tick
    t0 = start.timestamp()
    for step in range(int(trace.duration_seconds // tick)):
        t = step * tick
        k = int(t // 60)
        demand = {m.name: trace.at(m.name, t) for m in models}
        before = {m.name: cluster.count(m.name) for m in models}
        desired = policy.decide(View(t, t0 + t, demand, cluster))
        if desired is not None:
            refused += cluster.apply(desired, t, warm=(step == 0))
        for name, per_pool in before.items():
            moves += max(0, _moved(per_pool, cluster.count(name)))
        rate = 0.0
        for (name, pool), pods in cluster.pods.items():
            if not pods:
                continue
            p = pool_by_name[pool]
            rate += len(pods) * rmd_by_name[name].spec.resources.gpus * p.spec.pricing.price_per_gpu_hour
            if not _sensitive_ok(rmd_by_name[name], p):
                sensitive += len(pods) / ticks_per_minute
        total_cost += rate * tick / 3600.0
        cost_per_hour[k] += rate / ticks_per_minute
        for m in models:
            ready = sum(cluster.ready(m.name, t).values())
            replicas[m.name][k] = sum(cluster.count(m.name).values())
            if ready * m.spec.scaling.target_rps_per_replica < demand[m.name] - 1e-9:
                violated[m.name][k] = True
    return PolicyResult(
        policy=policy.name,
        currency=currency,
        cost=total_cost,
        slo_violation_minutes=int(sum(v.sum() for v in violated.values())),
        sensitive_violations=sensitive,
        moves=moves,
        refused_pods=refused,
        solve_seconds=list(getattr(policy, "solve_seconds", [])),
        minutes=trace.minutes,
        cost_per_hour=cost_per_hour,
        replicas=replicas,
        slo_violation_by_model={name: int(v.sum()) for name, v in violated.items()},
    )


def run_oracle(trace: Trace, pools: Sequence[ComputePool], models: Sequence[RecModelDeployment]) -> PolicyResult:
    """Perfect foresight: each minute, the cheapest integer allocation (same MILP, no headroom, no anti-flap state)
    covering that minute's demand, with replicas ready exactly when needed. Minutes are independent, so solving
    them one by one is the optimum of the whole horizon: a lower bound for any policy."""
    states = _pool_states(pools)
    n_min = len(trace.minutes)
    cost_per_hour = np.zeros(n_min)
    replicas = {m.name: np.zeros(n_min) for m in models}
    violated = 0
    solve_seconds: list[float] = []
    cache: dict[tuple[int, ...], tuple[float, dict[str, int], int]] = {}
    for k in range(n_min):
        need = tuple(
            wanted_replicas(
                float(trace.demand[m.name][k]), m.spec.scaling.target_rps_per_replica, 0.0, m.spec.scaling.min_replicas, m.spec.scaling.max_replicas
            )
            for m in models
        )
        if need not in cache:
            ms = [
                ModelState(m.name, m.spec, float(n) * m.spec.scaling.target_rps_per_replica, m.spec.scaling.target_rps_per_replica, {})
                for m, n in zip(models, need)
            ]
            allocation, _ = allocate(ms, states, 0.0, AllocatorMemory(), headroom=0.0, max_moves_per_interval=0)
            solve_seconds.append(allocation.solve_seconds)
            rate = sum(
                n * m.spec.resources.gpus * next(p.spec.pricing.price_per_gpu_hour for p in pools if p.name == pool)
                for m in models
                for pool, n in allocation.models[m.name].replicas.items()
            )
            totals = {m.name: sum(allocation.models[m.name].replicas.values()) for m in models}
            short = sum(
                totals[m.name] * m.spec.scaling.target_rps_per_replica < float(trace.demand[m.name][k]) - 1e-9 for m in models
            )
            cache[need] = (rate, totals, short)
        rate, totals, short = cache[need]
        short = sum(
            totals[m.name] * m.spec.scaling.target_rps_per_replica < float(trace.demand[m.name][k]) - 1e-9 for m in models
        )
        cost_per_hour[k] = rate
        violated += short
        for m in models:
            replicas[m.name][k] = totals[m.name]
    return PolicyResult(
        policy="oracle",
        currency=pools[0].spec.pricing.currency if pools else "USD",
        cost=float(cost_per_hour.sum() / 60.0),
        slo_violation_minutes=violated,
        sensitive_violations=0.0,
        moves=0,
        refused_pods=0,
        solve_seconds=solve_seconds,
        minutes=trace.minutes,
        cost_per_hour=cost_per_hour,
        replicas=replicas,
    )


def make_policy(
    name: str,
    trace: Trace,
    pools: Sequence[ComputePool],
    models: Sequence[RecModelDeployment],
    *,
    interval: float = 30.0,
    headroom: float = DEFAULT_HEADROOM,
) -> Policy:
    """A fresh policy object by name (see ``POLICIES``; ``oracle`` is ``run_oracle``)."""
    private = [p for p in pools if p.spec.tenancy == Tenancy.PRIVATE]
    public = [p for p in pools if p.spec.tenancy == Tenancy.PUBLIC]
    if name == "hybridrec":
        return AllocatorPolicy(name, models, pools, interval=interval, headroom=headroom)
    if name == "private-only":
        return AllocatorPolicy(name, models, private, interval=interval, headroom=headroom)
    if name == "hpa":
        return HpaPolicy(name, models, pools, target_utilisation=0.7)
    if name == "keda":
        return HpaPolicy(name, models, pools, target_utilisation=None, rps_threshold=lambda m: m.spec.scaling.target_rps_per_replica)
    if name == "public-only":
        return HpaPolicy(name, models, public, target_utilisation=0.7, ignore_sensitivity=True)
    if name == "static-peak":
        return StaticPolicy(name, models, pools, {m.name: float(trace.demand[m.name].max()) for m in models}, headroom=headroom)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def simulate(
    trace: Trace,
    pools: Sequence[ComputePool],
    models: Sequence[RecModelDeployment],
    policies: Sequence[str] = POLICIES,
    *,
    start: datetime = DEFAULT_START,
    interval: float = 30.0,
    headroom: float = DEFAULT_HEADROOM,
    tick: float = 15.0,
) -> dict[str, PolicyResult]:
    """Run each named policy over the trace; every trace column must name a model and vice versa."""
    missing = {m.name for m in models} - set(trace.demand)
    if missing:
        raise ValueError(f"trace has no column for model(s) {', '.join(sorted(missing))}")
    models = [m for m in models if m.name in trace.demand]
    results: dict[str, PolicyResult] = {}
    for name in policies:
        if name == "oracle":
            results[name] = run_oracle(trace, pools, models)
        else:
            policy = make_policy(name, trace, pools, models, interval=interval, headroom=headroom)
            results[name] = run_policy(policy, trace, pools, models, start=start, tick=tick)
    return results


def summary_rows(results: Mapping[str, PolicyResult]) -> list[dict[str, Any]]:
    """One row per policy with the ratios to the oracle and to the HPA baseline when those ran."""
    oracle = results.get("oracle")
    hpa = results.get("hpa")
    rows = []
    for name, r in results.items():
        solves = np.array(r.solve_seconds) if r.solve_seconds else None
        rows.append(
            {
                "policy": name,
                "cost": r.cost,
                "currency": r.currency,
                "x_oracle": r.cost / oracle.cost if oracle and oracle.cost else None,
                "x_hpa": r.cost / hpa.cost if hpa and hpa.cost else None,
                "slo_violation_minutes": r.slo_violation_minutes,
                "sensitive_violations": r.sensitive_violations,
                "moves": r.moves,
                "refused_pods": r.refused_pods,
                "solve_ms_mean": float(solves.mean() * 1000) if solves is not None else None,
                "solve_ms_max": float(solves.max() * 1000) if solves is not None else None,
            }
        )
    return rows


def write_plots(results: Mapping[str, PolicyResult], out_dir: Path, stem: str = "simulation") -> list[Path]:
    """Cost per hour and total replicas over time, one line per policy (PNG, small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for what in ("cost", "replicas"):
        fig, ax = plt.subplots(figsize=(9, 3.2), dpi=80)
        for name, r in results.items():
            hours = r.minutes / 60.0
            y = r.cost_per_hour if what == "cost" else sum(r.replicas.values())
            ax.plot(hours, y, label=name, linewidth=0.8)
        ax.set_xlabel("hours")
        ax.set_ylabel(f"cost per hour ({next(iter(results.values())).currency})" if what == "cost" else "replicas (all models)")
        ax.legend(fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stem}_{what}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
