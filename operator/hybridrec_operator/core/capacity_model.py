"""Per-model capacity: the RPS one replica sustains while p95 stays within the SLO.

Starts from ``spec.scaling.targetRpsPerReplica`` and learns online from observed (RPS per ready replica, p95)
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
from dataclasses import dataclass, field

import numpy as np

from hybridrec_operator.api.models import RecModelDeploymentSpec

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
    def from_spec(cls, spec: RecModelDeploymentSpec) -> CapacityModel:
        return cls(hint=spec.scaling.target_rps_per_replica, slo_ms=float(spec.slo.p95_latency_ms))

    @property
    def rps_per_replica(self) -> float:
        return self.estimate

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
