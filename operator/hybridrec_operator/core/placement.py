"""Where one model's replicas go: the pure per-model placement planner (no I/O).

Hard rules come from ``sensitivity.pool_admits`` only; everything else is preference. Allowed pools are ordered
preferred first (in the order listed), then by effective price per served request: the effective price per GPU-hour
(spot carries its expected reclaim cost, ``spot_risk_per_hour``, the allocator's rule) divided by what one replica of this model serves on the pool's GPU
(``capacity_model.hint_for``: the matching ``scaling.capacityHints`` entry, else ``targetRpsPerReplica``), the same
per-pool capacity the global allocator weighs, so both agree on which pool is cheapest; ties broken private first; replicas fill that order in whole replicas within each pool's free capacity, and a
``budget.maxPerHour`` caps the spend. What cannot be placed is reported as a shortfall: a rule is never relaxed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

from hybridrec_operator.api.models import CapacityType, ComputePoolSpec, RecModelDeploymentSpec, Tenancy
from hybridrec_operator.core.capacity_model import hint_for
from hybridrec_operator.core.sensitivity import pool_admits

# Reclaims per node-hour a spot pool is assumed to have until its own record says (``ReclaimMemory`` in the
# controller, the simulator's count of notices): conservative, one per node-hour, which at a 90 s start-up is the
# 5% premium spot used to carry here. It ranks a spot pool behind an on-demand one a few percent dearer; observed
# reclaims replace it, in both the per-model placement and the global allocator.
SPOT_PRIOR_RECLAIMS_PER_HOUR = 1.0
DEFAULT_CURRENCY = "USD"
_PRICE_TIE = 1e-9


class NamedPool(Protocol):
    """Anything with a pool name and a ComputePoolSpec: ``ComputePool``, ``PoolView``."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> ComputePoolSpec: ...


@dataclass(frozen=True)
class PoolView:
    """One pool as one model sees it right now."""

    name: str
    spec: ComputePoolSpec
    free_gpus: int  # GPUs this model may take: min(quota left, free node room); its own pods count as available
    replica_slots: int | None = None  # whole replicas that fit on the nodes; None: free_gpus // gpus_per_replica

    def capacity(self, gpus_per_replica: int) -> int:
        """Whole replicas of ``gpus_per_replica`` GPUs this pool can take for the model."""
        by_gpus = max(0, self.free_gpus) // max(1, gpus_per_replica)
        return by_gpus if self.replica_slots is None else max(0, min(self.replica_slots, by_gpus))


@dataclass(frozen=True)
class PoolAssignment:
    pool: str
    tenancy: Tenancy
    replicas: int
    cost_per_hour: float
    currency: str
    reason: str
    price_per_gpu_hour: float = 0.0
    capacity_type: CapacityType = CapacityType.ON_DEMAND


@dataclass(frozen=True)
class PlacementPlan:
    assignments: tuple[PoolAssignment, ...]  # only pools with replicas > 0, in fill order (preferred, then cheapest)
    wanted: int
    placed: int
    shortfall: int
    budget_limited: bool
    excluded: Mapping[str, str]  # pool -> why the model may not run there
    problems: tuple[str, ...]  # spec problems only the operator can see (a preferred pool that does not exist)
    summary: str
    budget_shortfall: int = 0  # replicas the capacity would take but the budget does not
    currency: str = DEFAULT_CURRENCY
    allowed: tuple[str, ...] = ()  # pools the model may run on, in fill order
    budget_per_hour: float | None = None  # budget.maxPerHour the plan was capped by, in ``currency``

    def replicas_by_pool(self) -> dict[str, int]:
        return {a.pool: a.replicas for a in self.assignments}

    @property
    def cost_per_hour(self) -> float:
        """Spend per hour of the whole plan, in ``currency`` (every assigned pool is priced in it)."""
        return round(sum(a.cost_per_hour for a in self.assignments), 6)

    @property
    def private_replicas(self) -> int:
        return sum(a.replicas for a in self.assignments if a.tenancy == Tenancy.PRIVATE)

    @property
    def public_replicas(self) -> int:
        return sum(a.replicas for a in self.assignments if a.tenancy == Tenancy.PUBLIC)


def model_currency(spec: RecModelDeploymentSpec) -> str:
    """The currency a model accounts in: its budget's, else its economics', else USD."""
    if spec.budget is not None:
        return spec.budget.currency
    if spec.economics is not None:
        return spec.economics.currency
    return DEFAULT_CURRENCY


def reclaim_rate(pool_spec: ComputePoolSpec, observed_per_hour: float | None = None) -> float:
    """Reclaims per node-hour expected on a pool: the observed rate when there is one, else the spot prior (0 for
    pools that are not spot: a reserved or on-demand node that goes NotReady is observed, never assumed)."""
    if observed_per_hour is not None:
        return max(0.0, observed_per_hour)
    return SPOT_PRIOR_RECLAIMS_PER_HOUR if pool_spec.pricing.capacity_type == CapacityType.SPOT else 0.0


def spot_risk_per_hour(pool_spec: ComputePoolSpec, gpus: int, observed_per_hour: float | None = None) -> float:
    """Expected extra cost per replica-hour of running on a pool that loses nodes: the one rule both the per-model
    placement (``effective_price``) and the global allocator (``planner``) price spot with.

    Each reclaim pays the replacement's start-up twice (the doomed replica and its successor overlap; the successor
    bills from creation) and, when the notice is shorter than the start-up, serves nothing for the difference; both
    are charged at the pool's price, a conservative stand-in for the SLO cost.
    """
    rate = reclaim_rate(pool_spec, observed_per_hour)
    if rate <= 0:
        return 0.0
    return rate * pool_spec.pricing.price_per_gpu_hour * gpus * 2.0 * pool_spec.startup_seconds / 3600.0


def effective_price(pool_spec: ComputePoolSpec, observed_reclaims_per_hour: float | None = None) -> float:
    """Price per GPU-hour used to rank pools: the list price plus the expected reclaim cost (``spot_risk_per_hour``)."""
    return pool_spec.pricing.price_per_gpu_hour + spot_risk_per_hour(pool_spec, 1, observed_reclaims_per_hour)


def price_per_capacity(spec: RecModelDeploymentSpec, pool_spec: ComputePoolSpec) -> float:
    """Rank key of a pool for one model: effective price per GPU-hour per RPS one replica serves there.

    A T4 at 0.35/h serving 100 RPS (0.0035) ranks after an A100 at 2.50/h serving 1,000 RPS (0.0025): the cheapest
    pool per GPU-hour is not the cheapest per request. Without capacity hints every pool has the model's
    ``targetRpsPerReplica`` and the order is the price order, as before."""
    return effective_price(pool_spec) / hint_for(spec, pool_spec)


def desired_replicas(spec: RecModelDeploymentSpec, controller_target: int | None) -> int:
    """Replicas to place: the pinned ``spec.replicas``, else the controller's target clamped to [min, max], else min."""
    if spec.replicas is not None:
        return spec.replicas
    if controller_target is None:
        return spec.scaling.min_replicas
    return max(spec.scaling.min_replicas, min(spec.scaling.max_replicas, int(controller_target)))


P = TypeVar("P", bound=NamedPool)


def allowed_pools(spec: RecModelDeploymentSpec, pools: Sequence[P]) -> tuple[list[P], dict[str, str]]:
    """Pools the model may run on (input order kept) and, for the others, why not."""
    allowed: list[P] = []
    excluded: dict[str, str] = {}
    forbidden = set(spec.placement.forbidden_pools)
    currency = model_currency(spec)
    for pool in pools:
        if pool.name in forbidden:
            excluded[pool.name] = "listed in placement.forbiddenPools"
            continue
        ok, why = pool_admits(spec.data_sensitivity, pool.spec, allow_public_burst=spec.placement.allow_public_burst)
        if not ok:
            excluded[pool.name] = why
            continue
        if pool.spec.pricing.currency != currency:
            excluded[pool.name] = f"priced in {pool.spec.pricing.currency} but the model accounts in {currency} (budget.currency)"
            continue
        allowed.append(pool)
    return allowed, excluded


def _tenancy_rank(view: PoolView) -> int:
    return 0 if view.spec.tenancy == Tenancy.PRIVATE else 1


def _tiers(spec: RecModelDeploymentSpec, views: Iterable[PoolView]) -> list[list[PoolView]]:
    """Allowed pools grouped into tiers of equal rank (preferred position, price per served request), best first."""
    preferred = {name: i for i, name in enumerate(spec.placement.preferred_pools)}
    keyed = sorted(
        views,
        key=lambda v: (preferred.get(v.name, len(preferred)), price_per_capacity(spec, v.spec), _tenancy_rank(v), v.name),
    )
    tiers: list[list[PoolView]] = []
    last: tuple[int, float] | None = None
    for view in keyed:
        rank = (preferred.get(view.name, len(preferred)), price_per_capacity(spec, view.spec))
        # Relative tie: per-request prices are small numbers (price / RPS), an absolute epsilon would be meaningless.
        if last is not None and rank[0] == last[0] and abs(rank[1] - last[1]) <= _PRICE_TIE * max(1.0, abs(last[1])):
            tiers[-1].append(view)
        else:
            tiers.append([view])
        last = rank
    return tiers


@dataclass
class _Fill:
    counts: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # replicas left where they run on a price tie
    notes: dict[str, str] = field(default_factory=dict)  # pool -> why it took no more ("full", "budget")

    @property
    def placed(self) -> int:
        return sum(self.counts.values())


def _affordable(left: float | None, replica_cost: float) -> float:
    """Whole replicas ``left`` (budget per hour) pays for; ``inf`` when unbounded. Total: a tiny price against a
    large budget makes the ratio overflow to ``inf`` rather than raising in ``math.floor``."""
    if left is None or replica_cost <= 0:
        return math.inf
    ratio = (max(0.0, left) + 1e-9) / replica_cost
    return float(math.floor(ratio)) if math.isfinite(ratio) else math.inf


def _fill(tiers: list[list[PoolView]], wanted: int, gpus: int, budget: float | None, current: Mapping[str, int]) -> _Fill:
    """Greedy fill in tier order; inside a tier, replicas that already run stay put before anything new is added."""
    fill = _Fill()
    remaining = wanted
    left = budget

    def take(view: PoolView, limit: int) -> int:
        nonlocal remaining, left
        asked = min(limit, remaining)
        room = view.capacity(gpus) - fill.counts.get(view.name, 0)
        replica_cost = gpus * view.spec.pricing.price_per_gpu_hour
        affordable = _affordable(left, replica_cost)
        n = int(max(0, min(asked, room, affordable)))
        if n < asked:
            fill.notes[view.name] = "budget" if affordable < min(asked, room) else "full"
        if n:
            fill.counts[view.name] = fill.counts.get(view.name, 0) + n
            remaining -= n
            if left is not None:
                left -= n * replica_cost
        return n

    for tier in tiers:
        if not remaining:
            break
        if len(tier) > 1:
            for view in tier:
                if current.get(view.name, 0) > 0:
                    kept = take(view, current[view.name])
                    if kept:
                        fill.kept[view.name] = kept
                    fill.notes.pop(view.name, None)
        for view in sorted(tier, key=lambda v: (_tenancy_rank(v), -current.get(v.name, 0), v.name)):
            if not remaining:
                break
            take(view, remaining)
    return fill


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def plan_placement(
    spec: RecModelDeploymentSpec,
    pools: Sequence[PoolView],
    wanted: int,
    *,
    current: Mapping[str, int] | None = None,
) -> PlacementPlan:
    """Place ``wanted`` replicas of one model on ``pools`` (views of free capacity for this model)."""
    current = dict(current or {})
    wanted = max(0, int(wanted))
    gpus = spec.resources.gpus
    currency = model_currency(spec)
    names = {p.name for p in pools}
    problems = tuple(f"preferred pool {p} does not exist" for p in spec.placement.preferred_pools if p not in names)
    allowed, excluded = allowed_pools(spec, pools)
    tiers = _tiers(spec, allowed)
    budget = spec.budget.max_per_hour if spec.budget is not None else None
    fill = _fill(tiers, wanted, gpus, budget, current)
    budget_shortfall = 0
    if budget is not None and fill.placed < wanted:
        budget_shortfall = _fill(tiers, wanted, gpus, None, current).placed - fill.placed

    preferred = set(spec.placement.preferred_pools)
    order = [view for tier in tiers for view in tier]
    assignments: list[PoolAssignment] = []
    passed: list[str] = []  # why earlier pools in the order took no more, e.g. "private pool onprem-t4 full"
    for view in order:
        n = fill.counts.get(view.name, 0)
        if n:
            if view.name in preferred:
                reason = "preferred pool"
            elif not assignments and not passed:
                reason = "cheapest allowed pool"
            else:
                reason = "next cheapest allowed pool"
            if view.name in fill.kept:
                reason += ", kept where it runs (price tie)"
            if passed:
                reason += ": " + ", ".join(passed)
            price = view.spec.pricing.price_per_gpu_hour
            assignments.append(
                PoolAssignment(
                    pool=view.name,
                    tenancy=view.spec.tenancy,
                    replicas=n,
                    cost_per_hour=round(n * gpus * price, 6),
                    currency=view.spec.pricing.currency,
                    reason=reason,
                    price_per_gpu_hour=price,
                    capacity_type=view.spec.pricing.capacity_type,
                )
            )
        note = fill.notes.get(view.name)
        if note == "full":
            passed.append(f"{view.spec.tenancy.value} pool {view.name} full")
        elif note == "budget":
            passed.append(f"budget {budget:.2f} {currency}/h reached at {view.name}")

    placed = fill.placed
    shortfall = wanted - placed
    summary = _summary(spec, wanted, placed, assignments, passed, excluded, problems, order, budget_shortfall, currency)
    return PlacementPlan(
        assignments=tuple(assignments),
        wanted=wanted,
        placed=placed,
        shortfall=shortfall,
        budget_limited=budget_shortfall > 0,
        excluded=MappingProxyType(dict(excluded)),
        problems=problems,
        summary=summary,
        budget_shortfall=budget_shortfall,
        currency=currency,
        allowed=tuple(view.name for view in order),
        budget_per_hour=budget,
    )


def _summary(
    spec: RecModelDeploymentSpec,
    wanted: int,
    placed: int,
    assignments: list[PoolAssignment],
    passed: list[str],
    excluded: Mapping[str, str],
    problems: tuple[str, ...],
    order: list[PoolView],
    budget_shortfall: int,
    currency: str,
) -> str:
    """One sentence a person understands."""
    if wanted == 0:
        head = "0 replicas wanted: nothing to place"
    else:
        parts = [
            f"{a.replicas} on {a.pool} ({_kind_of(a)}, {a.price_per_gpu_hour:.2f} {a.currency}/GPU-h)" for a in assignments
        ]
        head = f"{_replicas(placed)}" if placed == wanted else f"{placed} of {_replicas(wanted)} placed"
        if parts:
            head += ": " + ", ".join(parts)
    notes = list(passed)
    shortfall = wanted - placed
    if shortfall:
        if not order:
            notes.append(
                f"no pool admits {spec.data_sensitivity.value} data"
                + (" (" + "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items())) + ")" if excluded else "")
            )
        elif budget_shortfall:
            notes.append(f"{_replicas(shortfall)} short, {budget_shortfall} of them for the budget of "
                         f"{spec.budget.max_per_hour:.2f} {currency}/h")  # type: ignore[union-attr]
        elif passed:
            notes.append(f"{_replicas(shortfall)} short")
        else:
            notes.append(f"{_replicas(shortfall)} short: allowed pools are full ({', '.join(v.name for v in order)})")
    notes.extend(problems)
    return head + (": " + "; ".join(notes) if notes else "")


def _kind_of(assignment: PoolAssignment) -> str:
    if assignment.tenancy == Tenancy.PRIVATE and assignment.capacity_type != CapacityType.SPOT:
        return "private"
    return f"{assignment.tenancy.value} {assignment.capacity_type.value}"
