"""The global allocator's data: pool and model state in, allocations out, and the problem handed to the solvers.

Pure data, shared by the allocator (``planner``) and its solvers (``allocator_solvers``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hybridrec_operator.api.models import ComputePoolSpec, RecModelDeploymentSpec, Sensitivity
from hybridrec_operator.core.sensitivity import pool_admits

Direction = Literal["up", "down", "move", "hold"]
SolverName = Literal["milp", "greedy"]

# Unmet demand of a more sensitive model weighs more: it has nowhere else to go, so it gets private capacity first.
SENSITIVITY_WEIGHT: Mapping[Sensitivity, int] = {
    Sensitivity.PUBLIC: 1,
    Sensitivity.INTERNAL: 2,
    Sensitivity.CONFIDENTIAL: 4,
    Sensitivity.RESTRICTED: 8,
}
# Tie-break on decreases beyond the stabilised allowance: far below any real price difference.
DECREASE_TIE = 1e-6


@dataclass(frozen=True)
class PoolState:
    name: str
    spec: ComputePoolSpec
    capacity_gpus: int  # GPUs hybridrec may use there now (min(quota, node allocatable)), all models together
    # Observed reclaims per node-hour (one replica per node); None = none observed: spot pools carry the prior
    # (``placement.reclaim_rate``), others none.
    reclaim_rate_per_hour: float | None = None


@dataclass(frozen=True)
class ModelState:
    key: str
    spec: RecModelDeploymentSpec
    demand_rps: float | None  # demand to cover (forecast); None = no fresh data -> hold current
    rps_per_replica: float
    current: Mapping[str, int]  # desired replicas per pool now (starting pods included)
    pinned: int | None = None  # spec.replicas: the total is fixed by the user
    ready: Mapping[str, int] | None = None  # ready replicas per pool; lets make-before-break finish early
    p95_ms: float | None = None  # observed p95, only to phrase the decision
    headroom: float | None = None  # overrides allocate(headroom=...) for this model (e.g. from capacity_model)
    rps_per_pool: Mapping[str, float] | None = None  # per-pool capacity of one replica; absent pools: rps_per_replica
    urgent: bool = False  # demand jumped beyond what is ready: prefer the pool ready soonest, no moves this round
    stabilization_seconds: float | None = None  # overrides spec.scaling.scaleDownStabilizationSeconds (shorter only)
    lead_seconds: float | None = None  # time to get capacity back (slowest allowed start-up + interval): reclaim exposure

    def capacity_on(self, pool: str) -> float:
        """RPS one replica serves on ``pool`` within the SLO."""
        if self.rps_per_pool and pool in self.rps_per_pool and self.rps_per_pool[pool] > 0:
            return float(self.rps_per_pool[pool])
        return self.rps_per_replica


@dataclass
class AllocatorMemory:
    """Anti-flap memory, pure data: pass the returned copy to the next round."""

    recommendations: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # model -> (t, raw wanted)
    last_scale_up: dict[str, float] = field(default_factory=dict)
    last_move: dict[str, float] = field(default_factory=dict)
    placed_at: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, pool) -> replicas last added
    break_after: dict[str, float] = field(default_factory=dict)  # model -> no decreases before (make-before-break)


@dataclass(frozen=True)
class ModelAllocation:
    key: str
    replicas: dict[str, int]  # per pool; pools absent here get 0
    wanted: int
    placed: int
    shortfall: int
    budget_limited: bool
    slo_at_risk: bool
    direction: Direction
    reason: str  # the event text, one sentence
    capacity_rps: dict[str, float] = field(default_factory=dict)  # per pool: RPS the planned replicas serve there
    cost_per_1k_requests: dict[str, float] = field(default_factory=dict)  # per admitted pool, at full replica load


@dataclass(frozen=True)
class Allocation:
    models: dict[str, ModelAllocation]
    solver: SolverName
    solve_seconds: float


class SolverFailed(RuntimeError):
    """The MILP solver did not return a proven optimum in time."""


# ------------------------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class Problem:
    models: Sequence[ModelState]
    pools: Sequence[PoolState]
    pairs: list[tuple[int, int]]  # admitted (model index, pool index)
    cost: list[float]  # per pair: one replica per hour, spot risk included (what the optimum minimises)
    price: list[float]  # per pair: one replica per hour as billed (what budgets cap)
    wanted: list[float]  # per model, in reference replicas (not rounded: see _wanted_units)
    raw: list[float | None]  # per model: this round's recommendation before stabilisation
    upper: list[int]
    cur: list[int]  # per pair
    down: list[int]  # per model: decrease allowed without penalty (stabilised scale-down)
    move_cost: list[float | None]  # per pair: penalty per replica moved out this round; None = may not move
    max_moves: int
    budget: list[float | None]
    gpus: list[int]
    weight: list[int]
    tie: list[float]  # per pair
    w: list[float]  # per pair: capacity of one replica in the model's reference replicas
    min_count: list[int]  # per model: replicas at least (minReplicas or the pinned count)
    unit: float  # penalty of one unmet replica of a public model, see _unit


def admitted_pools(spec: RecModelDeploymentSpec, pools: Sequence[PoolState]) -> list[PoolState]:
    """Pools the model may run on: the hard sensitivity rule, then ``placement.forbiddenPools``."""
    allowed = []
    for pool in pools:
        ok, _ = pool_admits(spec.data_sensitivity, pool.spec, allow_public_burst=spec.placement.allow_public_burst)
        if ok and pool.name not in spec.placement.forbidden_pools:
            allowed.append(pool)
    return allowed


def cost_per_1k_requests(price_per_hour: float, rps_per_replica: float) -> float:
    """Cost of 1,000 requests served by one fully loaded replica: price per hour / requests per hour x 1,000."""
    return price_per_hour / (rps_per_replica * 3.6) if rps_per_replica > 0 else math.inf


def moved_replicas(current: Mapping[str, int], target: Mapping[str, int]) -> int:
    """Replicas that change pool: removals beyond the drop in the total."""
    removed = sum(max(0, n - target.get(p, 0)) for p, n in current.items())
    return removed - max(0, sum(current.values()) - sum(target.values()))
