"""Solvers of the global allocation problem: HiGHS MILP (memoised, LP rounding first) and a greedy fallback.

Pure: a ``Problem`` in, replicas per admitted (model, pool) pair out. ``planner.allocate`` builds the problem and
turns the answer into allocations; the formulation is documented there.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from hybridrec_operator.core.allocator_types import DECREASE_TIE, SENSITIVITY_WEIGHT, Problem, SolverFailed

# ----------------------------------------------------------------------------------------------- solvers


def _signature(problem: Problem) -> tuple[object, ...]:
    """Everything the MILP depends on, hashable: equal signatures have equal optimal solutions."""
    return (
        tuple(problem.pairs), tuple(problem.cost), tuple(problem.tie), tuple(problem.wanted), tuple(problem.upper),
        tuple(problem.cur), tuple(problem.down), tuple(problem.move_cost), problem.max_moves, tuple(problem.budget),
        tuple(problem.gpus), tuple(problem.weight), tuple(p.capacity_gpus for p in problem.pools), problem.unit,
        tuple(problem.w), tuple(problem.min_count), tuple(problem.price),
    )


# HiGHS has ~10 ms of fixed cost per call even for a dozen variables; a steady cluster poses the same problem round
# after round, so remember recent optima (the key is the whole problem, so this cannot change any answer).
_SOLUTIONS: OrderedDict[tuple[object, ...], list[int]] = OrderedDict()
_SOLUTIONS_MAX = 4096


def clear_solution_cache() -> None:
    """Forget memoised MILP solutions (tests that break the solver on purpose need this)."""
    _SOLUTIONS.clear()


def solve_milp(problem: Problem, time_limit: float) -> list[int]:
    """HiGHS: the optimum, or the best feasible point at ``time_limit``; raises ``SolverFailed`` without one."""
    key = _signature(problem)
    if key in _SOLUTIONS:
        _SOLUTIONS.move_to_end(key)
        return list(_SOLUTIONS[key])
    x = _solve_milp_uncached(problem, time_limit)
    _SOLUTIONS[key] = list(x)
    if len(_SOLUTIONS) > _SOLUTIONS_MAX:
        _SOLUTIONS.popitem(last=False)
    return x


def _solve_milp_uncached(problem: Problem, time_limit: float) -> list[int]:
    n_m, n_p, n_x = len(problem.models), len(problem.pools), len(problem.pairs)
    if n_x == 0:
        return []
    unit = problem.unit
    forced = 100.0 * unit * max(SENSITIVITY_WEIGHT.values())
    # Variables: x (n_x, integer) | unmet (n_m) | scale-down decrease (n_x) | moved-out (n_x) | forced decrease (n_m)
    ox, ou, od, om, of = 0, n_x, n_x + n_m, 2 * n_x + n_m, 3 * n_x + n_m
    n_var = 3 * n_x + 2 * n_m
    c = np.zeros(n_var)
    c[ox:ox + n_x] = np.array(problem.cost) + np.array(problem.tie)
    c[ou:ou + n_m] = [unit * w for w in problem.weight]
    c[od:od + n_x] = DECREASE_TIE
    c[om:om + n_x] = [mc or 0.0 for mc in problem.move_cost]
    c[of:of + n_m] = forced
    lb = np.zeros(n_var)
    ub = np.full(n_var, np.inf)
    for k, (i, j) in enumerate(problem.pairs):
        ub[ox + k] = min(problem.upper[i], problem.pools[j].capacity_gpus // problem.gpus[i])
        ub[od + k] = problem.cur[k]
        ub[om + k] = problem.cur[k] if problem.move_cost[k] is not None else 0
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def row() -> np.ndarray:
        r = np.zeros(n_var)
        rows.append(r)
        return r

    for i in range(n_m):
        ks = [k for k, (mi, _) in enumerate(problem.pairs) if mi == i]
        r = row()  # coverage in reference replicas (per-pool capacity), with unmet slack
        r[[ox + k for k in ks]] = [problem.w[k] for k in ks]
        r[ou + i] = 1
        lo.append(problem.wanted[i])
        hi.append(np.inf)
        if problem.min_count[i] > 0:
            r = row()  # minReplicas is a count of replicas
            r[[ox + k for k in ks]] = 1
            r[ou + i] = 1
            lo.append(problem.min_count[i])
            hi.append(np.inf)
        r = row()  # max replicas / pinned total
        r[[ox + k for k in ks]] = 1
        lo.append(0)
        hi.append(problem.upper[i])
        if problem.budget[i] is not None:
            r = row()
            r[[ox + k for k in ks]] = [problem.price[k] for k in ks]
            lo.append(0)
            hi.append(float(problem.budget[i]))  # type: ignore[arg-type]
        r = row()  # scale-down decreases limited to the stabilised allowance (forced ones penalised)
        r[[od + k for k in ks]] = 1
        r[of + i] = -1
        lo.append(-np.inf)
        hi.append(problem.down[i])
    for j in range(n_p):
        ks = [k for k, (_, pj) in enumerate(problem.pairs) if pj == j]
        if ks:
            r = row()
            r[[ox + k for k in ks]] = [problem.gpus[problem.pairs[k][0]] for k in ks]
            lo.append(-np.inf)
            hi.append(problem.pools[j].capacity_gpus)
    for k in range(n_x):
        if problem.cur[k]:
            r = row()  # x + decrease + moved-out >= current: every replica removed is accounted for
            r[ox + k] = 1
            r[od + k] = 1
            r[om + k] = 1
            lo.append(problem.cur[k])
            hi.append(np.inf)
    r = row()  # moves per round, counted in the model's largest replicas: 3 L4s consolidated into 1 A100 is one move
    best = {i: max(problem.w[k] for k, (mi, _) in enumerate(problem.pairs) if mi == i) for i in range(n_m) if any(mi == i for mi, _ in problem.pairs)}
    r[om:om + n_x] = [problem.w[k] / best[i] for k, (i, _) in enumerate(problem.pairs)]
    lo.append(-np.inf)
    hi.append(problem.max_moves)
    integrality = np.zeros(n_var)
    integrality[ox:ox + n_x] = 1
    integrality[ou:ou + n_m] = 1  # whole replicas short: a fraction of one must not be cheaper than buying it
    constraints = LinearConstraint(np.array(rows), lo, hi)
    started = time.perf_counter()
    rounded = _lp_round(problem, c, integrality, lb, ub, constraints, ox, n_x, time_limit)
    if rounded is not None and rounded[2] <= rounded[1] + _NEAR_OPTIMAL:
        return rounded[0]  # meets the LP bound: optimal, tie-breaks included
    left = max(time_limit - (time.perf_counter() - started), 1e-3)
    res = milp(
        c,
        integrality=integrality,
        bounds=Bounds(lb, ub),
        constraints=constraints,
        options={"time_limit": left, "mip_rel_gap": 1e-9, "presolve": True},
    )
    # Status 1 is the time limit: HiGHS keeps the best feasible allocation found so far (every constraint holds,
    # the hard rules included), so the round uses it, or the rounded LP answer when that is better; only a round
    # without any feasible point falls back to greedy.
    full = None if res.x is None or res.status not in (0, 1) else ([int(round(v)) for v in res.x[ox:ox + n_x]], float(res.fun))
    candidates = [cand for cand in (full, None if rounded is None else (rounded[0], rounded[2])) if cand is not None]
    if not candidates:
        raise SolverFailed(f"HiGHS status {res.status}: {res.message}")
    return min(candidates, key=lambda cand: cand[1])[0]


# A rounded LP answer within this (absolute) distance of the LP bound is optimal: below the smallest tie-break.
_NEAR_OPTIMAL = 1e-8


def _lp_round(
    problem: Problem, c: np.ndarray, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray, constraints: LinearConstraint,
    ox: int, n_x: int, time_limit: float,
) -> tuple[list[int], float, float] | None:
    """Round the LP relaxation and repair it: (replicas, LP bound, objective of the rounded answer), or None.

    Replica counts are rounded down (up where the LP keeps a running replica), then each model short of its demand
    gets replicas on the pool with room that is cheapest per request, most sensitive models first. The answer is
    then scored by the same problem with the replica counts fixed (an LP: unmet demand, decreases and moves at
    their best), which also proves every constraint holds; an answer that breaks one is dropped. Large rounds are
    usually settled here in a few tens of milliseconds; HiGHS's branch and bound only runs when this is not
    meets the bound.
    """
    relaxed = np.zeros_like(integrality)
    lp = milp(c, integrality=relaxed, bounds=Bounds(lb, ub), constraints=constraints, options={"time_limit": max(time_limit, 1e-3)})
    if lp.status != 0 or lp.x is None:
        return None
    xs = lp.x[ox:ox + n_x]
    x = [int(np.floor(v + 1e-6)) for v in xs]
    for k, v in enumerate(xs):
        if problem.cur[k] and v > problem.cur[k] - 1 + 1e-6:
            x[k] = max(x[k], min(problem.cur[k], int(np.ceil(v - 1e-6))))
    used = [0] * len(problem.pools)
    for k, (i, j) in enumerate(problem.pairs):
        used[j] += problem.gpus[i] * x[k]
    by_model: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(problem.pairs):
        by_model.setdefault(i, []).append(k)
    for i in sorted(by_model, key=lambda i: (-problem.weight[i], i)):
        ks = by_model[i]
        spend = sum(problem.price[k] * x[k] for k in ks)
        while (
            sum(problem.w[k] * x[k] for k in ks) < problem.wanted[i] - 1e-9 or sum(x[k] for k in ks) < problem.min_count[i]
        ) and sum(x[k] for k in ks) < problem.upper[i]:
            options = [
                k for k in ks
                if used[problem.pairs[k][1]] + problem.gpus[i] <= problem.pools[problem.pairs[k][1]].capacity_gpus
                and x[k] < ub[ox + k]
                and (problem.budget[i] is None or spend + problem.price[k] <= problem.budget[i] + 1e-9)  # type: ignore[operator]
            ]
            if not options:
                break
            k = min(options, key=lambda k: (problem.cost[k] + problem.tie[k]) / problem.w[k])
            x[k] += 1
            used[problem.pairs[k][1]] += problem.gpus[i]
            spend += problem.price[k]
    lb2, ub2 = lb.copy(), ub.copy()
    lb2[ox:ox + n_x] = x
    ub2[ox:ox + n_x] = x
    if np.any(lb2 > ub):
        return None
    # Scored with whole replicas short (the only integers left once the replica counts are fixed).
    scored = milp(c, integrality=integrality, bounds=Bounds(lb2, ub2), constraints=constraints, options={"time_limit": max(time_limit, 1e-3)})
    if scored.status != 0 or scored.x is None:
        return None
    return x, float(lp.fun), float(scored.fun)


def solve_greedy(problem: Problem) -> list[int]:
    """Fallback: keep what runs, shed what hard limits require, scale down within the allowance (most expensive
    first), then add replicas on the cheapest pool with room, most sensitive models first. Never moves replicas."""
    x = list(problem.cur)
    by_model: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(problem.pairs):
        by_model.setdefault(i, []).append(k)

    def used(j: int) -> int:
        return sum(problem.gpus[i] * x[k] for k, (i, pj) in enumerate(problem.pairs) if pj == j)

    def spend(i: int) -> float:
        return sum(problem.price[k] * x[k] for k in by_model.get(i, []))

    def remove(i: int, count: int) -> None:
        for k in sorted(by_model.get(i, []), key=lambda k: -(problem.cost[k] + problem.tie[k])):
            take = min(count, x[k])
            x[k] -= take
            count -= take

    for j in range(len(problem.pools)):  # a shrunken pool sheds the least sensitive models' replicas first
        ks = sorted((k for k, (_, pj) in enumerate(problem.pairs) if pj == j), key=lambda k: problem.weight[problem.pairs[k][0]])
        for k in ks:
            while x[k] > 0 and used(j) > problem.pools[j].capacity_gpus:
                x[k] -= 1
    for i in by_model:
        total = sum(x[k] for k in by_model[i])
        remove(i, max(0, min(problem.down[i], math.floor(total - problem.wanted[i] + 1e-9)), total - problem.upper[i]))
        if problem.budget[i] is not None:
            while spend(i) > problem.budget[i] + 1e-9:  # type: ignore[operator]
                remove(i, 1)
    order = sorted(by_model, key=lambda i: (-problem.weight[i], i))

    def short(i: int) -> bool:
        ks = by_model[i]
        return sum(problem.w[k] * x[k] for k in ks) < problem.wanted[i] - 1e-9 or sum(x[k] for k in ks) < problem.min_count[i]

    for i in order:
        while short(i) and sum(x[k] for k in by_model[i]) < problem.upper[i]:
            options = [
                k
                for k in by_model[i]
                if used(problem.pairs[k][1]) + problem.gpus[i] <= problem.pools[problem.pairs[k][1]].capacity_gpus
                and (problem.budget[i] is None or spend(i) + problem.price[k] <= problem.budget[i] + 1e-9)  # type: ignore[operator]
            ]
            if not options:
                break
            x[min(options, key=lambda k: (problem.cost[k] + problem.tie[k]) / problem.w[k])] += 1  # cheapest per request
    return x


