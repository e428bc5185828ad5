"""Replay a demand trace through scaling policies in simulated time; the hybridrec policy runs the real ``allocate``.

Inputs are what a user has: a CSV trace (``minute``, then one RPS column per model, named like the model) and the
ComputePools and RecModelDeployments as YAML in the CRD schema. The simulated cluster (``cluster.py``) has, per
pool, a GPU quota (``maxGpus``), a price and a pod start-up delay (``startupSeconds``); one ready replica of model m
on pool p serves the capacity the spec gives for that pool's GPU (``scaling.capacityHints``, else
``targetRpsPerReplica``).

Each 15 s tick: demand with noise of the trace's own variability (``traces.tick_demand``), spot reclaims
(``cluster.Reclaims``), the policy's decision, then the latency model (``latency.step``): a model-minute is an
SLO violation when the model's p95 exceeded its target at some tick. Measured per policy: total cost, SLO-violation
minutes, sensitive-placement violations (replica-minutes on a pool ``pool_admits`` refuses), replica moves, reclaims.

The oracle has perfect foresight and no start-up delay: each minute, the cheapest integer allocation (same MILP,
per-pool capacities) covering the highest tick demand of that minute, so it never violates the SLO and is a lower
bound on the cost of any policy that does not either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import yaml

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_pool, parse_rmd
from hybridrec_operator.core.allocator_types import moved_replicas
from hybridrec_operator.core.planner import AllocatorMemory, ModelState, allocate
from hybridrec_operator.core.sensitivity import pool_admits
from hybridrec_operator.sim import latency
from hybridrec_operator.sim.cluster import Cluster, Reclaims, View, capacities
from hybridrec_operator.sim.policies import DEFAULT_KEDA_THRESHOLD, POLICIES, Policy, make_policy, pool_states
from hybridrec_operator.sim.traces import Trace, tick_demand

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
DEFAULT_HEADROOM = 0.05


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


@dataclass
class PolicyResult:
    policy: str
    currency: str
    cost: float
    slo_violation_minutes: int  # model-minutes with p95 above the SLO at some tick
    sensitive_violations: float  # replica-minutes on pools the data class forbids
    moves: int
    refused_pods: int
    solve_seconds: list[float]
    minutes: np.ndarray
    cost_per_hour: np.ndarray  # per minute
    replicas: dict[str, np.ndarray]  # per model, per minute (pods, starting included)
    slo_violation_by_model: dict[str, int] = field(default_factory=dict)
    reclaims: int = 0  # pods that received a reclaim notice
    cost_by_pool: dict[str, float] = field(default_factory=dict)
    served_by_pool: dict[str, float] = field(default_factory=dict)  # requests (capacity-weighted share of demand)


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
    demand: Mapping[str, np.ndarray] | None = None,
    reclaims: Reclaims = Reclaims(),
    capacity: Mapping[tuple[str, str], float] | None = None,
) -> PolicyResult:
    """Simulate ``policy`` over ``trace`` (``demand`` per tick, default: the minute values held); the first decision
    is applied warm (pods ready at once) so every policy starts from its own steady state."""
    pool_by_name = {p.name: p for p in pools}
    rmd_by_name = {m.name: m for m in models}
    capacity = dict(capacity or capacities(models, pools))
    cluster = Cluster(pool_by_name, {m.name: m.spec.resources.gpus for m in models}, capacity)
    ticks = demand or tick_demand(trace, tick, noise=False)
    events = reclaims.schedule(pools, trace.duration_seconds)
    rng = np.random.default_rng(reclaims.seed + 1)
    currency = pools[0].spec.pricing.currency if pools else "USD"
    n_min = len(trace.minutes)
    cost_per_hour = np.zeros(n_min)
    replicas = {m.name: np.zeros(n_min) for m in models}
    violated = {m.name: np.zeros(n_min, dtype=bool) for m in models}
    backlog = {m.name: 0.0 for m in models}
    p95: dict[str, float] = {}
    cost_by_pool = {p.name: 0.0 for p in pools}
    served_by_pool = {p.name: 0.0 for p in pools}
    total_cost = 0.0
    sensitive = 0.0
    moves = 0
    refused = 0
    noticed = 0
    ticks_per_minute = 60.0 / tick
    t0 = start.timestamp()
    live_only = getattr(policy, "sees_notices", False)
    for step in range(int(trace.duration_seconds // tick)):
        t = step * tick
        k = int(t // 60)
        cluster.expire(t)
        while events and events[0][0] <= t:
            _, pool, notice = events.pop(0)
            noticed += cluster.reclaim(pool, t, notice, rng)
        now = {m.name: float(ticks[m.name][min(step, len(ticks[m.name]) - 1)]) for m in models}
        before = {m.name: cluster.count(m.name) for m in models}
        desired = policy.decide(View(t, t0 + t, now, cluster, dict(p95)))
        if desired is not None:
            refused += cluster.apply(desired, t, warm=(step == 0), live_only=live_only)
        for name, per_pool in before.items():
            moves += max(0, moved_replicas(per_pool, cluster.count(name)))
        rate = 0.0
        for (name, pool), pods in cluster.pods.items():
            if not pods:
                continue
            p = pool_by_name[pool]
            r = len(pods) * rmd_by_name[name].spec.resources.gpus * p.spec.pricing.price_per_gpu_hour
            rate += r
            cost_by_pool[pool] += r * tick / 3600.0
            if not _sensitive_ok(rmd_by_name[name], p):
                sensitive += len(pods) / ticks_per_minute
        total_cost += rate * tick / 3600.0
        cost_per_hour[k] += rate / ticks_per_minute
        for m in models:
            ready = cluster.ready(m.name, t)
            cap = sum(n * capacity[(m.name, p)] for p, n in ready.items())
            for p, n in ready.items():
                if cap > 0:
                    served_by_pool[p] += min(now[m.name], cap) * n * capacity[(m.name, p)] / cap * tick
            replicas[m.name][k] = sum(cluster.count(m.name).values())
            state = latency.step(now[m.name], cap, backlog[m.name], float(m.spec.slo.p95_latency_ms), tick)
            backlog[m.name] = state.backlog
            p95[m.name] = state.p95_ms
            if state.p95_ms > m.spec.slo.p95_latency_ms * (1 + 1e-9):
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
        reclaims=noticed,
        cost_by_pool=cost_by_pool,
        served_by_pool=served_by_pool,
    )


def run_oracle(
    trace: Trace,
    pools: Sequence[ComputePool],
    models: Sequence[RecModelDeployment],
    *,
    demand: Mapping[str, np.ndarray] | None = None,
    tick: float = 15.0,
    capacity: Mapping[tuple[str, str], float] | None = None,
) -> PolicyResult:
    """Perfect foresight: each minute, the cheapest integer allocation (same MILP, per-pool capacities, no headroom,
    no anti-flap state) covering that minute's highest tick demand, ready exactly when needed. Minutes are
    independent, so solving them one by one is the optimum of the whole horizon: a lower bound for any policy that
    meets the SLO."""
    capacity = dict(capacity or capacities(models, pools))
    states = pool_states(pools)
    n_min = len(trace.minutes)
    per_minute = max(1, int(round(60.0 / tick)))
    ticks = demand or tick_demand(trace, tick, noise=False)
    peak = {m.name: np.asarray(ticks[m.name])[: n_min * per_minute].reshape(n_min, per_minute).max(axis=1) for m in models}
    cost_per_hour = np.zeros(n_min)
    replicas = {m.name: np.zeros(n_min) for m in models}
    cost_by_pool = {p.name: 0.0 for p in pools}
    violated = 0
    solve_seconds: list[float] = []
    price = {p.name: p.spec.pricing.price_per_gpu_hour for p in pools}
    cache: dict[tuple[float, ...], tuple[float, dict[str, dict[str, int]], int]] = {}
    for k in range(n_min):
        # Quantised to 0.1% of a reference replica so equal minutes share a solve.
        key = tuple(round(float(peak[m.name][k]) / m.spec.scaling.target_rps_per_replica, 3) for m in models)
        if key not in cache:
            ms = [
                ModelState(
                    m.name, m.spec, q * m.spec.scaling.target_rps_per_replica, m.spec.scaling.target_rps_per_replica, {},
                    rps_per_pool={p.name: capacity[(m.name, p.name)] for p in pools},
                )
                for m, q in zip(models, key)
            ]
            allocation, _ = allocate(ms, states, 0.0, AllocatorMemory(), headroom=0.0, max_moves_per_interval=0)
            solve_seconds.append(allocation.solve_seconds)
            placed = {m.name: {p: n for p, n in allocation.models[m.name].replicas.items() if n} for m in models}
            rate = sum(n * m.spec.resources.gpus * price[p] for m in models for p, n in placed[m.name].items())
            short = sum(sum(n * capacity[(m.name, p)] for p, n in placed[m.name].items()) < q * m.spec.scaling.target_rps_per_replica - 1e-6
                        for m, q in zip(models, key))
            cache[key] = (rate, placed, short)
        rate, placed, short = cache[key]
        cost_per_hour[k] = rate
        violated += short
        for m in models:
            replicas[m.name][k] = sum(placed[m.name].values())
            for p, n in placed[m.name].items():
                cost_by_pool[p] += n * m.spec.resources.gpus * price[p] / 60.0
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
        cost_by_pool=cost_by_pool,
    )


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
    noise: bool = False,
    seed: int = 0,
    keda_threshold: float = DEFAULT_KEDA_THRESHOLD,
    reclaims: Reclaims = Reclaims(),
    quantile: float = 0.95,
) -> dict[str, PolicyResult]:
    """Run each named policy over the trace; every model needs a trace column.

    ``noise``: tick-level noise of the trace's own variability (``traces.tick_demand``, seeded); ``reclaims``: spot
    reclaims on pools whose ``capacityType`` is spot. All policies meet the same demand and the same reclaims.
    """
    missing = {m.name for m in models} - set(trace.demand)
    if missing:
        raise ValueError(f"trace has no column for model(s) {', '.join(sorted(missing))}")
    models = [m for m in models if m.name in trace.demand]
    capacity = capacities(models, pools)
    demand = tick_demand(trace, tick, noise=noise, seed=seed)
    peak = {m.name: float(demand[m.name].max()) for m in models}
    results: dict[str, PolicyResult] = {}
    for name in policies:
        if name == "oracle":
            results[name] = run_oracle(trace, pools, models, demand=demand, tick=tick, capacity=capacity)
        else:
            policy = make_policy(
                name, peak, pools, models, capacity, interval=interval, headroom=headroom, keda_threshold=keda_threshold,
                quantile=quantile,
            )
            results[name] = run_policy(
                policy, trace, pools, models, start=start, tick=tick, demand=demand, reclaims=reclaims, capacity=capacity
            )
    return results


def summary_rows(results: Mapping[str, PolicyResult]) -> list[dict[str, Any]]:
    """One row per policy with the ratios to the oracle, HPA and KEDA baselines when those ran."""
    oracle = results.get("oracle")
    hpa = results.get("hpa")
    keda = results.get("keda")
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
                "x_keda": r.cost / keda.cost if keda and keda.cost else None,
                "slo_violation_minutes": r.slo_violation_minutes,
                "sensitive_violations": r.sensitive_violations,
                "moves": r.moves,
                "refused_pods": r.refused_pods,
                "reclaims": r.reclaims,
                "solve_ms_mean": float(solves.mean() * 1000) if solves is not None else None,
                "solve_ms_p99": float(np.quantile(solves, 0.99) * 1000) if solves is not None else None,
                "solve_ms_max": float(solves.max() * 1000) if solves is not None else None,
            }
        )
    return rows
