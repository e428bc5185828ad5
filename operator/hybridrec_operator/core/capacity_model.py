"""Per-(model, pool) capacity: the RPS one replica sustains while p95 stays within the SLO.

The capacity of a replica depends on the model AND the pool's GPU. ``hint_for`` gives the starting point of one
(model, pool) pair: ``spec.scaling.capacityHints`` entry whose ``gpuModel`` matches the pool's ``spec.gpu.model``,
else ``spec.scaling.targetRpsPerReplica``; ``resolve`` then prefers a measurement (a ``CapacityModel`` per pair that
has learned from evidence) and says which source won, so status and events can show it. A pool with no measurement
is priced from its hint, never assumed infinite.

A ``CapacityModel`` starts from its hint and learns online from observed (RPS per ready replica, p95)
pairs. Pure and small: the state is a bounded window of samples plus the current estimate.

Learning rule. A sample whose p95 is within the SLO proves one replica sustains at least that load; one above the
SLO proves it sustains less. The estimate moves toward the evidence: up to a high quantile of loads that met the
SLO, down to a low quantile of loads that missed it (scaled by SLO/p95, since latency grows with load), and between
the two when both exist. Quantiles over a window (not single samples) make it robust to noise; samples taken shortly
after a replica change are ignored (cold caches, unready pods sharing load) and each update moves only part way.
The estimate stays within ``[hint / bound, hint * bound]`` so a bad stretch of data cannot run away with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hybridrec_operator.api.models import ComputePoolSpec, RecModelDeploymentSpec

WARMUP_SECONDS = 120.0
WINDOW = 60
MIN_EVIDENCE = 3
SMOOTHING = 0.3
BOUND = 4.0


@dataclass
class CapacityModel:
    hint: float
    slo_ms: float
    estimate: float = 0.0
    warmup_seconds: float = WARMUP_SECONDS
    bound: float = BOUND
    last_replica_change: float | None = None
    last_replicas: int | None = None
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def __post_init__(self) -> None:
        if self.hint <= 0 or self.slo_ms <= 0:
            raise ValueError("hint and SLO must be positive")
        self.estimate = self.estimate or self.hint

    @classmethod
    def from_spec(cls, spec: RecModelDeploymentSpec, pool: ComputePoolSpec | None = None) -> CapacityModel:
        """One model per (model, pool): pass the pool to start from its GPU's hint."""
        return cls(hint=hint_for(spec, pool), slo_ms=float(spec.slo.p95_latency_ms))

    @property
    def rps_per_replica(self) -> float:
        return self.estimate

    @property
    def measured(self) -> bool:
        """True once evidence (not the hint) set the estimate: enough samples to have a target."""
        return self._target() is not None

    def observe(self, t: float, rps_per_ready_replica: float | None, p95_ms: float | None, ready_replicas: int) -> None:
        """Feed one observation; missing data (None) or an idle replica set teaches nothing."""
        if ready_replicas != self.last_replicas:
            self.last_replicas, self.last_replica_change = ready_replicas, t
            return
        if self.last_replica_change is not None and t - self.last_replica_change < self.warmup_seconds:
            return
        if rps_per_ready_replica is None or p95_ms is None or ready_replicas <= 0 or rps_per_ready_replica <= 0:
            return
        self.samples.append((float(rps_per_ready_replica), float(p95_ms)))
        target = self._target()
        if target is not None:
            moved = self.estimate + SMOOTHING * (target - self.estimate)
            self.estimate = float(np.clip(moved, self.hint / self.bound, self.hint * self.bound))

    def _target(self) -> float | None:
        met = [rps for rps, p95 in self.samples if p95 <= self.slo_ms]
        missed = [rps * self.slo_ms / p95 for rps, p95 in self.samples if p95 > self.slo_ms]
        lower = float(np.quantile(met, 0.8)) if len(met) >= MIN_EVIDENCE else None
        upper = float(np.quantile(missed, 0.2)) if len(missed) >= MIN_EVIDENCE else None
        if lower is not None and upper is not None:
            # Contradictory windows (noise around the knee) settle in the middle.
            return (lower + upper) / 2 if lower >= upper else min(max(self.estimate, lower), upper)
        if upper is not None:
            return min(self.estimate, upper)
        if lower is not None:
            return max(self.estimate, lower)
        return None


def headroom_for(p95_ms: float | None, slo_ms: float, base: float = 0.05, ceiling: float = 0.5) -> float:
    """Extra capacity over forecast demand: ``base`` while p95 is comfortably within the SLO, growing with p95/SLO
    above 0.8 (the capacity estimate is evidently optimistic) up to ``base + ceiling``."""
    if p95_ms is None or slo_ms <= 0:
        return base
    return base + float(np.clip(p95_ms / slo_ms - 0.8, 0.0, ceiling))


CapacitySource = Literal["measured", "hint", "default"]


@dataclass(frozen=True)
class PoolCapacity:
    """The capacity the allocator uses for one (model, pool) pair and where it came from."""

    rps_per_replica: float
    source: CapacitySource
    hint: float  # what the spec says, for the "measurement overrides hint" event


def hint_for(spec: RecModelDeploymentSpec, pool: ComputePoolSpec | None) -> float:
    """The spec's capacity for this pool: the matching ``capacityHints`` entry, else ``targetRpsPerReplica``."""
    if pool is not None and pool.gpu.model:
        for h in spec.scaling.capacity_hints:
            if h.gpu_model.casefold() == pool.gpu.model.casefold():
                return h.rps_per_replica
    return spec.scaling.target_rps_per_replica


def resolve(spec: RecModelDeploymentSpec, pool: ComputePoolSpec, learned: CapacityModel | None = None) -> PoolCapacity:
    """Measurement > GPU hint > per-model default. ``learned`` is the pair's ``CapacityModel`` if the controller has one."""
    hint = hint_for(spec, pool)
    if learned is not None and learned.measured:
        return PoolCapacity(learned.rps_per_replica, "measured", hint)
    default = hint == spec.scaling.target_rps_per_replica and not any(
        pool.gpu.model and h.gpu_model.casefold() == pool.gpu.model.casefold() for h in spec.scaling.capacity_hints
    )
    return PoolCapacity(hint, "default" if default else "hint", hint)


def contradicts_hint(capacity: PoolCapacity, tolerance: float = 0.25) -> bool:
    """A measurement more than ``tolerance`` away from the hint: worth an event saying the measurement wins."""
    return capacity.source == "measured" and abs(capacity.rps_per_replica / capacity.hint - 1.0) > tolerance


def capacities(
    spec: RecModelDeploymentSpec, pools: Mapping[str, ComputePoolSpec], learned: Mapping[str, CapacityModel] | None = None
) -> dict[str, PoolCapacity]:
    """``resolve`` for every pool by name; ``learned`` is keyed by pool name."""
    learned = learned or {}
    return {name: resolve(spec, pool, learned.get(name)) for name, pool in pools.items()}
