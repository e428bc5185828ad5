"""The global allocator: replicas per (model, pool) for every RecModelDeployment at once.

Models compete for the same private GPUs, so one problem is solved for all of them each control interval:

    minimise   sum cost(m, p) x[m, p]                      (replicas x GPUs x price per GPU-hour, + spot risk)
             + sum penalty(m) unmet[m]                      (sensitive models' shortfall weighs more)
             + small costs for moving replicas between pools
    subject to sum_p w[m, p] x[m, p] + unmet[m] >= wanted[m] (demand x (1 + headroom) / RPS per replica, min replicas)
               sum_p x[m, p] + unmet[m] >= minReplicas        (a count: a fast GPU does not waive the minimum)
               sum_p x[m, p] <= maxReplicas (or the pinned count)
               sum_m gpus[m] x[m, p] <= capacity[p]            (quota and free GPUs of the pool)
               sum_p cost(m, p) x[m, p] <= budget.maxPerHour   (hard cap)
               anti-flap limits on decreases and moves (below)

Capacity per (model, pool): ``w[m, p]`` is the RPS one replica of model m serves on pool p (``rps_per_pool``, from
``capacity_model.resolve``: measured > GPU hint > targetRpsPerReplica) divided by the model's reference
``rps_per_replica``; ``wanted`` is in reference replicas. So the optimum fills the pool with the lowest cost per
served request, not per GPU-hour: a T4 at 0.35/h serving 100 RPS costs 0.97 per 1,000 requests-per-second-hour, an
A100 at 2.50/h serving 1,000 RPS 0.25, and the A100 wins. Spot pools carry their expected reclaim cost
(``PoolState.reclaim_rate_per_hour``, see ``spot_risk_per_hour``) so a cheap pool that keeps losing nodes is priced
as what it costs. When a model's demand jumps (``ModelState.urgent``), start-up time is priced far above any price
difference and moves are frozen: new replicas go to the allowed pool that is ready soonest, and the ordinary cost
ranking migrates them to the cheapest pool once calm (dwell and make-before-break as below).

Hard sensitivity rule: a forbidden (model, pool) pair has no variable at all, so no solver and no bug in a penalty
can place data where ``sensitivity.pool_admits`` says it may not run.

Anti-flapping: scale-up is immediate; a model's wanted count is the maximum of its recommendations over
``spec.scaling.scaleDownStabilizationSeconds`` (like the HPA), so it scales down only once demand stayed low for the
whole window; replicas move between pools only after a minimum dwell (per model since its last move, and per pool
since replicas were last added there; only a shortfall of another model may cut the dwell short, never a saving), at
most ``max_moves_per_interval`` per round across all models (hard), and
make-before-break: a moved replica's source stays until the destination's start-up time has passed (or its pods are
ready) when capacity and budget allow the overlap. Decreases beyond those limits happen only when a hard limit
(capacity, budget, a pool that stopped admitting the model) leaves no alternative: they carry the largest penalty.

Solver: ``scipy.optimize.milp`` (HiGHS) with a time limit (default 0.1 s: one round for 50 models x 8 pools has
~1,000 variables, and HiGHS finds the optimum in milliseconds but may spend seconds proving it); at the limit the best
feasible allocation found is used, and a greedy allocator takes over only if HiGHS fails or found nothing feasible. Everything here is pure: state in, allocation and new state out.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import Literal

from hybridrec_operator.api.models import Sensitivity, Tenancy
from hybridrec_operator.core.allocator_solvers import clear_solution_cache, solve_greedy, solve_milp
from hybridrec_operator.core.allocator_types import (
    SENSITIVITY_WEIGHT, Allocation, AllocatorMemory, Direction, ModelAllocation, ModelState, PoolState,
    Problem, SolverFailed, SolverName, admitted_pools, cost_per_1k_requests, moved_replicas,
)
from hybridrec_operator.core.allocator_report import describe
from hybridrec_operator.core.costing import CurrencyMismatchError
from hybridrec_operator.core.placement import spot_risk_per_hour as placement_spot_risk

# Re-exported: callers import the allocator's data and entry points from here.
__all__ = [
    "DEFAULT_HEADROOM", "SENSITIVITY_WEIGHT", "Allocation", "AllocatorMemory", "Direction", "ModelAllocation",
    "ModelState", "PoolState", "SolverFailed", "SolverName", "admitted_pools", "allocate", "clear_solution_cache",
    "cost_per_1k_requests", "spot_risk_per_hour", "wanted_replicas",
]

DEFAULT_HEADROOM = 0.05
# Tie-breaks far below any real price difference: equal prices -> private first, then preferred pools, then stay put.
_PUBLIC_TIE = 1e-4
_PREFERRED_TIE = 5e-5
# An urgent model's slowest pool costs this fraction of the shortfall penalty more per unit of capacity than its
# fastest one.
_URGENT = 0.49


def wanted_replicas(demand_rps: float, rps_per_replica: float, headroom: float, min_replicas: int, max_replicas: int) -> int:
    """ceil(demand x (1 + headroom) / RPS per replica), within [min, max]."""
    need = math.ceil(max(demand_rps, 0.0) * (1.0 + headroom) / rps_per_replica - 1e-9) if rps_per_replica > 0 else max_replicas
    return int(min(max(need, min_replicas), max_replicas))


def _wanted_units(demand_rps: float, rps_per_replica: float, headroom: float, min_replicas: int, max_replicas: int) -> float:
    """Demand x (1 + headroom) in reference replicas, not rounded: with equal capacities the integer replica counts
    round it up exactly like ``wanted_replicas``; with unequal ones, rounding first would buy a slow replica too many."""
    need = max(demand_rps, 0.0) * (1.0 + headroom) / rps_per_replica if rps_per_replica > 0 else float(max_replicas)
    return float(min(max(need, min_replicas), max_replicas))


def spot_risk_per_hour(pool: PoolState, gpus: int) -> float:
    """Expected extra cost per replica-hour of running on a pool that loses nodes: ``placement.spot_risk_per_hour``
    at the pool's observed reclaim rate (the spot prior until one is observed), so the per-model placement and the
    allocator price spot with one rule."""
    return placement_spot_risk(pool.spec, gpus, pool.reclaim_rate_per_hour)


def _currency(pools: Sequence[PoolState], models: Sequence[ModelState]) -> str:
    currencies = {p.spec.pricing.currency for p in pools}
    if len(currencies) > 1:
        raise CurrencyMismatchError(f"pools are priced in several currencies ({', '.join(sorted(currencies))}); no exchange rates")
    currency = currencies.pop() if currencies else "USD"
    for m in models:
        if m.spec.budget and m.spec.budget.max_per_hour is not None and m.spec.budget.currency != currency:
            raise CurrencyMismatchError(f"{m.key}: budget in {m.spec.budget.currency}, pools priced in {currency}")
    return currency


def _stabilised_wanted(
    m: ModelState, raw: float | None, now: float, memory: AllocatorMemory
) -> tuple[float, int, int]:
    """(wanted, upper, down): the target total, the hard maximum and the decrease allowed this round."""
    scaling = m.spec.scaling
    cur_total = sum(m.current.values())
    if m.pinned is not None:
        return m.pinned, m.pinned, max(0, cur_total - m.pinned)
    if raw is None:  # no fresh data: hold, never scale toward the minimum on missing metrics
        hold = min(cur_total, scaling.max_replicas)
        return hold, scaling.max_replicas, max(0, cur_total - hold)
    hold = scaling.scale_down_stabilization_seconds
    if m.stabilization_seconds is not None:
        hold = min(hold, m.stabilization_seconds)
    window = [(t, r) for t, r in memory.recommendations.get(m.key, []) if now - t < hold]
    window.append((now, raw))
    memory.recommendations[m.key] = window
    wanted = max(r for _, r in window)
    return wanted, scaling.max_replicas, max(0, cur_total - math.ceil(wanted - 1e-9))


def _build(
    models: Sequence[ModelState],
    pools: Sequence[PoolState],
    now: float,
    memory: AllocatorMemory,
    headroom: float,
    max_moves: int,
    min_dwell: float,
    min_move_saving: float,
) -> Problem:
    pairs: list[tuple[int, int]] = []
    cost: list[float] = []
    cur: list[int] = []
    move_cost: list[float | None] = []
    raws: list[int | None] = []
    tie: list[float] = []
    wanted: list[float] = []
    upper: list[int] = []
    down: list[int] = []
    budget: list[float | None] = []
    ws: list[float] = []
    price: list[float] = []
    urgency: list[float] = []
    min_count: list[int] = []
    pool_index = {p.name: j for j, p in enumerate(pools)}
    for i, m in enumerate(models):
        g = m.spec.resources.gpus
        allowed = {p.name for p in admitted_pools(m.spec, pools)}
        scaling = m.spec.scaling
        h = m.headroom if m.headroom is not None else headroom
        raw = None if m.demand_rps is None else _wanted_units(m.demand_rps, m.rps_per_replica, h, scaling.min_replicas, scaling.max_replicas)
        if raw is not None and m.demand_rps is not None:
            raw = min(raw + _reclaim_spare(m, pools, allowed, h), float(scaling.max_replicas))
        # Replicas on pools that no longer admit the model are not "current" for anti-flap: they must go.
        admitted_current = {p: n for p, n in m.current.items() if p in allowed and p in pool_index}
        w, up, dn = _stabilised_wanted(
            ModelState(m.key, m.spec, m.demand_rps, m.rps_per_replica, admitted_current, m.pinned, stabilization_seconds=m.stabilization_seconds),
            raw, now, memory,
        )
        # Capacity per pool in reference replicas; a pinned total is a count, whatever the GPUs.
        weight = {n: 1.0 if m.pinned is not None else m.capacity_on(n) / m.rps_per_replica for n in allowed}
        if m.pinned is None and m.demand_rps is None:
            w = int(math.floor(sum(weight[p] * n for p, n in admitted_current.items()) + 1e-9))  # hold what runs
        if m.pinned is None and m.demand_rps is not None:
            dn = _down_allowance(admitted_current, weight, w)
        pending = _break_pending(m, now, memory)
        # Held models and moves in flight are hard no-moves. Dwell is soft: only another model's shortfall (a penalty
        # larger than any saving) justifies moving replicas early, so cost alone never makes replicas ping-pong.
        # An urgent model does not move either: this round is for adding capacity where it is ready soonest.
        can_move = m.demand_rps is not None and not pending and not m.urgent
        settled = now - memory.last_move.get(m.key, -math.inf) >= min_dwell
        startups = [pools[pool_index[n]].spec.startup_seconds for n in allowed]
        fastest, slowest = min(startups, default=0), max(startups, default=0)
        for name in sorted(allowed, key=lambda n: pool_index[n]):
            j = pool_index[name]
            spec = pools[j].spec
            pairs.append((i, j))
            ws.append(weight[name])
            price.append(spec.pricing.price_per_gpu_hour * g)
            cost.append(price[-1] + spot_risk_per_hour(pools[j], g))
            cur.append(int(admitted_current.get(name, 0)))
            young = now - memory.placed_at.get((m.key, name), -math.inf) < min_dwell
            move_cost.append(None if not can_move else min_move_saving if settled and not young else math.inf)
            t = _PUBLIC_TIE if spec.tenancy == Tenancy.PUBLIC else 0.0
            t -= _PREFERRED_TIE if name in m.spec.placement.preferred_pools else 0.0
            tie.append(t)
            urgency.append(weight[name] * (spec.startup_seconds - fastest) / (slowest - fastest) if m.urgent and slowest > fastest else 0.0)
        wanted.append(w)
        min_count.append(m.pinned if m.pinned is not None else min(scaling.min_replicas, up))
        raws.append(raw)
        upper.append(up)
        down.append(0 if pending else dn)
        b = m.spec.budget.max_per_hour if m.spec.budget else None
        budget.append(b)
    # Per replica and per reference replica of capacity: one unmet unit stands for either (coverage, minReplicas).
    unit = _unit([c / min(w, 1.0) for c, w in zip(cost, ws)])
    # Urgency per unit of capacity: up to half the shortfall penalty, so above any price difference per unit of
    # capacity (all below unit / 2) yet below covering demand (cost + urgency < unit): slow pools still fill up when
    # the fast ones are full.
    tie = [t + _URGENT * unit * u for t, u in zip(tie, urgency)]
    return Problem(
        w=ws,
        price=price,
        min_count=min_count,
        unit=unit,
        models=models,
        pools=pools,
        pairs=pairs,
        cost=cost,
        wanted=wanted,
        raw=raws,
        upper=upper,
        cur=cur,
        down=down,
        move_cost=[unit if mc == math.inf else mc for mc in move_cost],
        max_moves=max_moves,
        budget=budget,
        gpus=[m.spec.resources.gpus for m in models],
        weight=[SENSITIVITY_WEIGHT[Sensitivity(m.spec.data_sensitivity)] for m in models],
        tie=tie,
    )


# The margin is a 95% quantile: it leaves out the rises seen in 5% of lead times. A reclaim is held to the same
# standard: a spare replica is bought only when losing one within a lead time is likelier than that.
SPARE_RISK = 0.05


def _reclaim_spare(m: ModelState, pools: Sequence[PoolState], allowed: set[str], headroom: float) -> float:
    """Capacity (reference replicas) held for a reclaim on a pool that loses nodes (an observed rate, not the prior):
    one replica of the largest there, less what the headroom already holds, and only when a reclaim of one of the
    model's replicas there within one lead time (``lead_seconds``: until a replacement could serve) is likelier than
    ``SPARE_RISK``, the share of lead times the margin leaves uncovered anyway.

    At 0.3 reclaims per node-hour and a 150 s lead, 2 replicas on spot run a 2.5% risk (no spare: it would cost 50%
    more, and the reclaim is met at its notice, replacements started at once where they are ready soonest); 10
    replicas run 12% (a spare, 10% more, unless the margin already holds one)."""
    if m.demand_rps is None or not m.lead_seconds:
        return 0.0
    lossy = [p for p in pools if p.name in allowed and (p.reclaim_rate_per_hour or 0.0) > 0 and m.current.get(p.name, 0) > 0]
    if not lossy:
        return 0.0
    expected = sum((p.reclaim_rate_per_hour or 0.0) * m.current[p.name] for p in lossy) * m.lead_seconds / 3600.0
    if 1.0 - math.exp(-expected) <= SPARE_RISK:
        return 0.0
    spare = max(m.capacity_on(p.name) / m.rps_per_replica for p in lossy)
    padding = max(m.demand_rps, 0.0) * headroom / m.rps_per_replica
    return max(0.0, spare - padding)


def _down_allowance(current: Mapping[str, int], weight: Mapping[str, float], wanted: float) -> int:
    """Replicas that may go as a plain scale-down: those not needed to cover ``wanted`` when the replicas with the most
    capacity are kept. Anything more that leaves is a move (dwell time, per-round cap). Equal capacities give the
    classic ``current - wanted``."""
    kept, units = 0, 0.0
    for p in sorted(current, key=lambda p: -weight.get(p, 1.0)):
        for _ in range(current[p]):
            if units >= wanted - 1e-9:
                break
            units += weight.get(p, 1.0)
            kept += 1
    return max(0, sum(current.values()) - kept)


def _unit(cost: Sequence[float]) -> float:
    """More than any one replica costs per reference replica of capacity, so covering demand always beats saving
    money (and breaking the dwell time is worth it only to cover another model's demand)."""
    return 2.0 * max(cost, default=1.0) + 1.0


def _break_pending(m: ModelState, now: float, memory: AllocatorMemory) -> bool:
    """A move is in flight: keep its source replicas until the destination is up (time passed or pods ready)."""
    until = memory.break_after.get(m.key)
    if until is None or now >= until:
        return False
    if m.ready is not None and all(m.ready.get(p, 0) >= n for p, n in m.current.items()):
        return False
    return True


# ------------------------------------------------------------------------------------------ the allocator


def allocate(
    models: Sequence[ModelState],
    pools: Sequence[PoolState],
    now: float,
    memory: AllocatorMemory,
    *,
    headroom: float = DEFAULT_HEADROOM,
    time_limit: float = 0.1,
    max_moves_per_interval: int = 2,
    min_dwell_seconds: float = 120,
    min_move_saving_per_hour: float = 0.05,
    solver: Literal["auto", "greedy"] = "auto",
) -> tuple[Allocation, AllocatorMemory]:
    """One round of the global allocator; returns the allocation and the memory for the next round.

    ``memory`` is not modified. Raises ``CurrencyMismatchError`` when pools (or a budget) use different currencies.
    ``solver="greedy"`` skips the MILP (used to exercise the fallback and in tests).
    """
    _currency(pools, models)
    memory = copy.deepcopy(memory)
    problem = _build(models, pools, now, memory, headroom, max_moves_per_interval, min_dwell_seconds, min_move_saving_per_hour)
    started = time.perf_counter()
    used_solver: SolverName = "milp"
    try:
        if solver == "greedy":
            raise SolverFailed("greedy requested")
        x = solve_milp(problem, time_limit)
    except SolverFailed:
        used_solver = "greedy"
        x = solve_greedy(problem)
    elapsed = time.perf_counter() - started
    targets = _targets(problem, x)
    final = _make_before_break(problem, targets, now, memory)
    used = {p.name: 0 for p in problem.pools}
    for i, replicas in enumerate(final):
        for name, n in replicas.items():
            used[name] += n * problem.gpus[i]
    result = {m.key: describe(problem, i, targets[i], final[i], used, now, memory) for i, m in enumerate(problem.models)}
    return Allocation(models=result, solver=used_solver, solve_seconds=elapsed), memory


def _targets(problem: Problem, x: Sequence[int]) -> list[dict[str, int]]:
    targets: list[dict[str, int]] = [{} for _ in problem.models]
    for k, (i, j) in enumerate(problem.pairs):
        targets[i][problem.pools[j].name] = int(x[k])
    return targets


def _make_before_break(problem: Problem, targets: list[dict[str, int]], now: float, memory: AllocatorMemory) -> list[dict[str, int]]:
    """Keep moved replicas on their source pools until the destination is up, where capacity, budget and
    maxReplicas allow.

    Cheapest sources are kept first. When the freed GPUs are what a more sensitive model was given, the overlap does
    not fit and the source goes at once: the model with nowhere else to go wins.
    """
    final = [dict(t) for t in targets]
    pool_by_name = {p.name: p for p in problem.pools}
    used = {p.name: 0 for p in problem.pools}
    for i, t in enumerate(targets):
        for name, n in t.items():
            used[name] += n * problem.gpus[i]
    for i, m in enumerate(problem.models):
        cur = {name: n for name, n in m.current.items() if name in targets[i]}
        if moved_replicas(cur, targets[i]) <= 0:
            continue
        # In capacity, not replicas: 3 L4s leaving for 1 A100 leave 3 L4s' worth of capacity to bridge.
        weight = {problem.pools[j].name: problem.w[k] for k, (mi, j) in enumerate(problem.pairs) if mi == i}
        moved = _moved_capacity(cur, targets[i], weight)
        g = problem.gpus[i]
        price = {problem.pools[j].name: problem.price[k] for k, (mi, j) in enumerate(problem.pairs) if mi == i}
        spend = sum(price[p] * n for p, n in final[i].items())
        budget = problem.budget[i]
        kept = 0.0
        for p in sorted((p for p in cur if cur[p] > targets[i].get(p, 0)), key=lambda p: price[p]):
            while kept < moved - 1e-9 and final[i][p] < cur[p]:
                fits = used[p] + g <= pool_by_name[p].capacity_gpus
                affordable = budget is None or spend + price[p] <= budget + 1e-9
                within_max = sum(final[i].values()) < problem.upper[i]  # maxReplicas (or the pinned count) holds mid-move
                if not (fits and affordable and within_max):
                    break
                final[i][p] += 1
                used[p] += g
                spend += price[p]
                kept += weight.get(p, 1.0)
        if kept:
            destinations = [p for p in targets[i] if targets[i][p] > cur.get(p, 0)]
            startup = max((pool_by_name[p].spec.startup_seconds for p in destinations), default=0)
            memory.break_after[m.key] = now + startup
    return final


def _moved_capacity(current: Mapping[str, int], target: Mapping[str, int], weight: Mapping[str, float]) -> float:
    """``moved_replicas`` in capacity: removed capacity beyond the drop in total capacity."""
    removed = sum(weight.get(p, 1.0) * max(0, n - target.get(p, 0)) for p, n in current.items())
    before = sum(weight.get(p, 1.0) * n for p, n in current.items())
    after = sum(weight.get(p, 1.0) * n for p, n in target.items())
    return removed - max(0.0, before - after)
