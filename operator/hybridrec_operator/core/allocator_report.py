"""What the allocator tells people: per model, the allocation it made (direction, shortfall, budget and SLO flags,
cost per 1,000 requests per pool) and one sentence saying what changed and why.

Pure; ``planner.allocate`` calls ``describe`` once per model after solving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hybridrec_operator.api.models import Tenancy
from hybridrec_operator.core.allocator_types import (
    AllocatorMemory, Direction, ModelAllocation, ModelState, PoolState, Problem, admitted_pools, cost_per_1k_requests,
    moved_replicas,
)


def describe(
    problem: Problem,
    i: int,
    target: dict[str, int],
    final: dict[str, int],
    used: Mapping[str, int],
    now: float,
    memory: AllocatorMemory,
) -> ModelAllocation:
    """``target`` is the plan; ``final`` adds make-before-break overlap and is what should run now."""
    m = problem.models[i]
    cur = {p: n for p, n in m.current.items() if n}
    total_cur = sum(cur.values())
    placed = sum(target.values())
    for p, n in final.items():
        if n > cur.get(p, 0):
            memory.placed_at[(m.key, p)] = now
    if placed > total_cur:
        direction: Direction = "up"
        memory.last_scale_up[m.key] = now
    elif placed < total_cur:
        direction = "down"
    elif any(target.get(p, 0) != n for p, n in cur.items()):
        direction = "move"
    else:
        direction = "hold"
    if moved_replicas({p: n for p, n in cur.items() if p in target}, target) > 0:
        memory.last_move[m.key] = now
    wanted = math.ceil(problem.wanted[i] - 1e-9)
    weight = {problem.pools[j].name: problem.w[k] for k, (mi, j) in enumerate(problem.pairs) if mi == i}
    placed_units = sum(weight.get(p, 1.0) * n for p, n in target.items())
    shortfall = max(0, math.ceil(problem.wanted[i] - placed_units - 1e-9), problem.min_count[i] - placed)
    pools = {p.name: p for p in problem.pools}
    spend = sum(replica_cost(pools[p], m) * n for p, n in target.items())
    budget = problem.budget[i]
    room = [
        replica_cost(p, m) for p in admitted_pools(m.spec, problem.pools) if p.capacity_gpus - used[p.name] >= m.spec.resources.gpus
    ]
    budget_limited = bool(budget is not None and shortfall > 0 and room and spend + min(room) > budget + 1e-9)
    capacity = {p: n * m.capacity_on(p) for p, n in target.items() if n}
    slo_at_risk = m.demand_rps is not None and sum(capacity.values()) < m.demand_rps
    reason = allocation_reason(problem, i, target, cur, used, direction, shortfall, budget_limited, slo_at_risk)
    per_1k = {p.name: cost_per_1k_requests(replica_cost(p, m), m.capacity_on(p.name)) for p in admitted_pools(m.spec, problem.pools)}
    return ModelAllocation(
        key=m.key,
        replicas={**{p: 0 for p in cur}, **final},
        wanted=wanted,
        placed=placed,
        shortfall=shortfall,
        budget_limited=budget_limited,
        slo_at_risk=slo_at_risk,
        direction=direction,
        reason=reason,
        capacity_rps=capacity,
        cost_per_1k_requests=per_1k,
    )


def replica_cost(pool: PoolState, m: ModelState) -> float:
    return pool.spec.pricing.price_per_gpu_hour * m.spec.resources.gpus


# --------------------------------------------------------------------------------------------- wording


def pool_words(pool: PoolState | None, name: str) -> str:
    if pool is None:
        return f"{name} (no longer admitted)"
    price = pool.spec.pricing
    return f"{name} ({pool.spec.tenancy.value}, {price.price_per_gpu_hour:.2f} {price.currency}/GPU-h)"


def plural(n: int, word: str = "replica") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def allocation_reason(
    problem: Problem,
    i: int,
    target: Mapping[str, int],
    current: Mapping[str, int],
    used: Mapping[str, int],
    direction: Direction,
    shortfall: int,
    budget_limited: bool,
    slo_at_risk: bool,
) -> str:
    """One sentence saying what changed and why, e.g.
    "p95 71 ms > SLO 50 ms, forecast 3,900 RPS: +2 replicas on aws-spot-l4 (public, 1.20 USD/GPU-h); private pool onprem-a100 full".

    The RPS named is ``demand_rps``, the demand to cover (the forecast until new capacity is ready), not the rate
    observed now: it is worded as a forecast.
    """
    m = problem.models[i]
    pools = {p.name: p for p in problem.pools}
    slo = m.spec.slo.p95_latency_ms
    if m.pinned is not None:
        cause = f"pinned to {plural(m.pinned)}"
    elif m.demand_rps is None:
        cause = "no fresh metrics, holding the last allocation"
    elif m.p95_ms is not None:
        cause = f"p95 {m.p95_ms:.0f} ms {'>' if m.p95_ms > slo else '<='} SLO {slo} ms, forecast {m.demand_rps:,.0f} RPS"
    else:
        raw = math.ceil((problem.raw[i] if problem.raw[i] is not None else problem.wanted[i]) - 1e-9)
        cause = f"forecast {m.demand_rps:,.0f} RPS needs {plural(raw)} at {m.rps_per_replica:,.0f} RPS each"
        if math.ceil(problem.wanted[i] - 1e-9) > raw:
            window = m.spec.scaling.scale_down_stabilization_seconds
            cause += f" ({math.ceil(problem.wanted[i] - 1e-9)} wanted within the {window} s stabilisation window)"
    ups = {p: n - current.get(p, 0) for p, n in target.items() if n > current.get(p, 0)}
    downs = {p: n - target.get(p, 0) for p, n in current.items() if n > target.get(p, 0)}
    if direction == "hold":
        text = f"{cause}: {plural(sum(target.values()))} unchanged"
    elif direction == "move":
        before = sum(replica_cost(pools[p], m) * n for p, n in current.items() if p in pools)
        after = sum(replica_cost(pools[p], m) * n for p, n in target.items())
        src = ", ".join(f"{n} from {pool_words(pools.get(p), p)}" for p, n in downs.items())
        dst = ", ".join(f"{pool_words(pools[p], p)}" for p in ups)
        currency = problem.pools[0].spec.pricing.currency if problem.pools else "USD"
        gain = f"saves {before - after:.2f} {currency}/h" if after < before else "frees capacity for more sensitive data"
        text = f"moved {src} to {dst}: {gain}"
    else:
        changes = [f"+{plural(n)} on {pool_words(pools[p], p)}" for p, n in ups.items()]
        changes += [f"-{plural(n)} on {pool_words(pools.get(p), p)}" for p, n in downs.items()]
        text = f"{cause}: " + ", ".join(changes)
    notes = []
    if any(pools[p].spec.tenancy == Tenancy.PUBLIC for p in ups) or shortfall:
        notes += [
            f"private pool {p.name} full"
            for p in admitted_pools(m.spec, problem.pools)
            if p.spec.tenancy == Tenancy.PRIVATE and p.capacity_gpus - used[p.name] < m.spec.resources.gpus
        ]
    if budget_limited and m.spec.budget is not None:
        notes.append(f"budget {m.spec.budget.max_per_hour:.2f} {m.spec.budget.currency}/h reached")
    if shortfall:
        notes.append(f"{plural(shortfall)} short" + (", SLO at risk" if slo_at_risk else ""))
    return "; ".join([text, *notes])
