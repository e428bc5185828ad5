"""Scaling policies for the simulator: hybridrec (the operator's forecast + allocator) and the baselines users run.

* ``hybridrec``: every interval, ``forecast.outlook`` (level + trend over the lead time, margin from the measured
  rises over one lead time, a jump or an overload flagged urgent) and the real ``planner.allocate`` with
  per-(model, pool) capacities and spot risk. It watches reclaim notices (doomed pods are not counted) and learns
  each pool's reclaim rate from them like the controller does (``ReclaimMemory``), never from the simulator.
* ``hpa``: Kubernetes HPA defaults on GPU utilisation (target 70%, 10% tolerance, scale-up max(100%, 4 pods) per
  15 s sync, 300 s scale-down stabilisation, unready pods count as idle when scaling up).
* ``keda``: the same HPA machinery on KEDA's RPS-per-replica metric (AverageValue target) with the threshold users
  set, ``keda_threshold`` x ``targetRpsPerReplica`` (default 0.8).
* ``static-peak``: the trace's peak (plus headroom) all the time.
* ``private-only``: hybridrec offered private pools only; ``public-only``: the HPA on public pools, data classes
  ignored (what a cloud-only deployment does).

Baselines place new pods on the cheapest pool per GPU-hour that admits the model and has room (they know prices,
not capacities per GPU) and remove pods like a ReplicaSet; they learn of a reclaim when the pod dies.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, Tenancy
from hybridrec_operator.core.cost_types import ReclaimMemory
from hybridrec_operator.core.forecast import Sample, Variability, event_multiplier, lead_seconds, outlook
from hybridrec_operator.core.planner import DEFAULT_HEADROOM, AllocatorMemory, ModelState, PoolState, admitted_pools, allocate, wanted_replicas
from hybridrec_operator.core.sensitivity import pool_admits
from hybridrec_operator.sim.cluster import Cluster, View

POLICIES = ("hybridrec", "static-peak", "hpa", "keda", "private-only", "public-only", "oracle")
DEFAULT_KEDA_THRESHOLD = 0.8


class Policy(Protocol):
    name: str
    sees_notices: bool

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        """Desired replicas per model and pool, or None to leave everything as it is."""


def pool_states(pools: Sequence[ComputePool], reclaim_rate: Callable[[ComputePool], float | None] | None = None) -> list[PoolState]:
    """Pools at their quotas. ``reclaim_rate``: observed reclaims per node-hour (None: none observed, the spot
    prior); without it every pool is priced as never reclaimed (the oracle's view: no start-up, nothing to lose)."""
    return [PoolState(p.name, p.spec, p.spec.max_gpus, reclaim_rate(p) if reclaim_rate else 0.0) for p in pools]


@dataclass
class AllocatorPolicy:
    """hybridrec: outlook per model over its lead time, then the global allocator, every ``interval``.

    Scale-down stabilisation is what the trace justifies, not a constant: ``hold_leads`` lead times (the time it
    takes to get capacity back), capped by the spec's window; the margin already covers the rises seen over one lead.
    """

    name: str
    models: Sequence[RecModelDeployment]
    pools: Sequence[ComputePool]
    capacity: Mapping[tuple[str, str], float]
    interval: float = 30.0
    quantile: float = 0.95
    hold_leads: float = 1.0
    trend_seconds: float = 600.0
    memory: AllocatorMemory = field(default_factory=AllocatorMemory)
    reclaims: ReclaimMemory = field(default_factory=ReclaimMemory)
    solve_seconds: list[float] = field(default_factory=list)
    history: dict[str, deque[Sample]] = field(default_factory=dict)
    variability: dict[str, Variability] = field(default_factory=dict)
    sees_notices: bool = True

    def __post_init__(self) -> None:
        self._states = pool_states(self.pools, lambda p: None)
        self._noticed: set[int] = set()
        self._lead = {}
        for rmd in self.models:
            allowed = admitted_pools(rmd.spec, self._states)
            self._lead[rmd.name] = lead_seconds([p.spec.startup_seconds for p in allowed], self.interval)
            self.variability[rmd.name] = Variability(lead=self._lead[rmd.name], quantile=self.quantile)

    def _overloaded(self, view: View) -> bool:
        """Between rounds, an overload (demand above what every live replica, starting ones included, will serve, or
        p95 above the SLO) triggers a round at once: the controller is woken by the alert, not by the clock."""
        for rmd in self.models:
            live = view.cluster.count(rmd.name, live_only=True)
            planned = sum(n * self.capacity[(rmd.name, p)] for p, n in live.items())
            p95 = view.p95_ms.get(rmd.name)
            if view.demand[rmd.name] > planned or (p95 is not None and p95 > rmd.spec.slo.p95_latency_ms):
                return True
        return False

    def _observe_reclaims(self, view: View) -> None:
        """Reclaims per node-hour as the controller measures them (``ReclaimMemory``; one pod per node here): live
        pods are exposure, a notice not seen before is a reclaim. Learned, not told: the policy never sees the rate
        the simulator draws from."""
        exposed: dict[str, int] = {p.name: 0 for p in self.pools}
        reclaimed: dict[str, int] = {}
        doomed_now: set[int] = set()
        for (_, pool), pods in view.cluster.pods.items():
            if pool not in exposed:
                continue
            for pod in pods:
                if pod.doomed_at is None:
                    exposed[pool] += 1
                else:
                    doomed_now.add(id(pod))
                    if id(pod) not in self._noticed:
                        reclaimed[pool] = reclaimed.get(pool, 0) + 1
        self._noticed = doomed_now
        self.reclaims.record(view.t, exposed, reclaimed)

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        self._observe_reclaims(view)
        for rmd in self.models:
            h = self.history.setdefault(rmd.name, deque())
            h.append(Sample(view.epoch, view.demand[rmd.name]))
            while h and h[0].t < view.epoch - self.trend_seconds:
                h.popleft()
            factor = event_multiplier(rmd.spec.scaling.schedule, view.epoch)
            self.variability[rmd.name].observe(view.epoch, view.demand[rmd.name] / factor)
        if view.t % self.interval and not self._overloaded(view):
            return None
        models = []
        for rmd in self.models:
            lead = self._lead[rmd.name]
            ready = view.cluster.ready(rmd.name, view.t, live_only=True)
            served = sum(n * self.capacity[(rmd.name, p)] for p, n in ready.items())
            look = outlook(list(self.history[rmd.name]), self.variability[rmd.name], rmd.spec.scaling.schedule, view.epoch, lead, self.interval, served)
            p95 = view.p95_ms.get(rmd.name)
            overloaded = p95 is not None and p95 > rmd.spec.slo.p95_latency_ms
            models.append(
                ModelState(
                    key=rmd.name,
                    spec=rmd.spec,
                    # The outlook's margin travels as the headroom, so the allocator knows how much of the demand is padding.
                    demand_rps=None if look.demand is None else look.demand / (1.0 + look.margin),
                    rps_per_replica=rmd.spec.scaling.target_rps_per_replica,
                    current=view.cluster.count(rmd.name, live_only=True),
                    pinned=rmd.spec.replicas,
                    ready=ready,
                    headroom=look.margin,
                    rps_per_pool={p.name: self.capacity[(rmd.name, p.name)] for p in self.pools},
                    urgent=look.urgent or overloaded,
                    stabilization_seconds=self.hold_leads * lead,
                    lead_seconds=lead,
                )
            )
        states = [PoolState(p.name, p.spec, p.capacity_gpus, self.reclaims.rate_per_hour(p.name) or None) for p in self._states]
        allocation, self.memory = allocate(models, states, view.epoch, self.memory, headroom=0.0)
        self.solve_seconds.append(allocation.solve_seconds)
        return {k: dict(a.replicas) for k, a in allocation.models.items()}


def cheapest_first(rmd: RecModelDeployment, pools: Sequence[ComputePool], ignore_sensitivity: bool) -> list[ComputePool]:
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

    ``target_utilisation`` set: a resource metric (GPU utilisation = demand / capacity of the ready pods, each pod at
    its own pool's capacity). ``rps_threshold`` set instead: KEDA's external metric with an AverageValue target.
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
    sees_notices: bool = False

    def _recommend(self, rmd: RecModelDeployment, view: View, current: int) -> int:
        demand = view.demand[rmd.name]
        if self.rps_threshold is not None:
            ratio = demand / (self.rps_threshold(rmd) * max(current, 1))
            return current if abs(ratio - 1) <= self.tolerance else math.ceil(ratio * max(current, 1))
        assert self.target_utilisation is not None
        ready_by_pool = view.cluster.ready(rmd.name, view.t)
        ready = sum(ready_by_pool.values())
        unready = max(0, current - ready)
        if ready == 0:
            return current  # no metrics from any pod: the HPA does nothing
        capacity = view.cluster.ready_capacity(rmd.name, view.t)
        per_pod = capacity / ready  # mean capacity of a ready pod: utilisation averages over pods
        ratio = demand / capacity / self.target_utilisation
        if unready and ratio > 1:
            ratio = demand / ((ready + unready) * per_pod) / self.target_utilisation
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
            # A pod that died (reclaimed) is gone from the count; the Deployment recreates it on its own.
            current = self.replicas.get(rmd.name, s.min_replicas)
            rec = min(max(self._recommend(rmd, view, current), s.min_replicas), s.max_replicas)
            window = self.recommendations.setdefault(rmd.name, deque())
            window.append((view.t, rec))
            while window and window[0][0] <= view.t - self.down_window:
                window.popleft()
            target = min(current, max(r for _, r in window)) if rec < current else rec
            target = min(target, max(2 * current, current + 4))
            self.replicas[rmd.name] = target
            pools = cheapest_first(rmd, self.pools, self.ignore_sensitivity)
            out[rmd.name] = place_total(rmd, target, pools, view.cluster, view.t)
        return out


@dataclass
class StaticPolicy:
    """Provision for the trace's peak (plus headroom) all the time: what capacity planning without autoscaling does.
    Sized with ``targetRpsPerReplica`` (what the user knows), placed cheapest per GPU-hour."""

    name: str
    models: Sequence[RecModelDeployment]
    pools: Sequence[ComputePool]
    peak: Mapping[str, float]
    headroom: float = DEFAULT_HEADROOM
    sees_notices: bool = False

    def decide(self, view: View) -> dict[str, dict[str, int]] | None:
        out = {}
        for rmd in self.models:
            s = rmd.spec.scaling
            total = wanted_replicas(self.peak[rmd.name], s.target_rps_per_replica, self.headroom, s.min_replicas, s.max_replicas)
            out[rmd.name] = place_total(rmd, total, cheapest_first(rmd, self.pools, False), view.cluster, view.t)
        return out


def make_policy(
    name: str,
    peak: Mapping[str, float],
    pools: Sequence[ComputePool],
    models: Sequence[RecModelDeployment],
    capacity: Mapping[tuple[str, str], float],
    *,
    interval: float = 30.0,
    headroom: float = DEFAULT_HEADROOM,
    keda_threshold: float = DEFAULT_KEDA_THRESHOLD,
    quantile: float = 0.95,
) -> Policy:
    """A fresh policy object by name (see ``POLICIES``; ``oracle`` is ``engine.run_oracle``)."""
    private = [p for p in pools if p.spec.tenancy == Tenancy.PRIVATE]
    public = [p for p in pools if p.spec.tenancy == Tenancy.PUBLIC]
    if name in ("hybridrec", "private-only"):
        offered = pools if name == "hybridrec" else private
        return AllocatorPolicy(name, models, offered, capacity, interval=interval, quantile=quantile)
    if name == "hpa":
        return HpaPolicy(name, models, pools, target_utilisation=0.7)
    if name == "keda":
        return HpaPolicy(name, models, pools, target_utilisation=None, rps_threshold=lambda m: keda_threshold * m.spec.scaling.target_rps_per_replica)
    if name == "public-only":
        return HpaPolicy(name, models, public, target_utilisation=0.7, ignore_sensitivity=True)
    if name == "static-peak":
        return StaticPolicy(name, models, pools, peak, headroom=headroom)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
