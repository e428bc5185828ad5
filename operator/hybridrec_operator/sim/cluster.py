"""The simulated cluster: pods per (model, pool) with start-up delays, GPU quotas, per-(model, pool) capacity and
spot reclaims.

A pod costs money from creation and serves only once ready. A reclaimed pod gets a notice (30-120 s, like a spot
interruption or Karpenter's ``karpenter.sh/disrupted`` taint) and dies when it runs out; it serves and bills until
then. Policies that watch for notices (hybridrec's controller does) see doomed pods as already gone and start
replacements at once; the others find out when the pod dies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridrec_operator.api.models import CapacityType, ComputePool, RecModelDeployment
from hybridrec_operator.core.capacity_model import hint_for


@dataclass
class Pod:
    created: float
    ready_at: float
    doomed_at: float | None = None  # reclaim notice received: the pod dies at this time


@dataclass
class Cluster:
    """Pods per (model, pool) with start-up delays and GPU quotas per pool."""

    pools: dict[str, ComputePool]
    gpus: dict[str, int]  # per model
    capacity: dict[tuple[str, str], float] = field(default_factory=dict)  # (model, pool) -> RPS per ready replica
    pods: dict[tuple[str, str], list[Pod]] = field(default_factory=dict)

    def count(self, model: str, *, live_only: bool = False) -> dict[str, int]:
        """Pods per pool; ``live_only`` leaves out pods under a reclaim notice."""
        return {
            p: n for (m, p), v in self.pods.items() if m == model and (n := sum(not (live_only and pod.doomed_at is not None) for pod in v))
        }

    def ready(self, model: str, t: float, *, live_only: bool = False) -> dict[str, int]:
        return {
            p: sum(pod.ready_at <= t and not (live_only and pod.doomed_at is not None) for pod in v)
            for (m, p), v in self.pods.items()
            if m == model and v
        }

    def ready_capacity(self, model: str, t: float) -> float:
        """RPS the model's ready replicas serve within the SLO."""
        return sum(n * self.capacity.get((model, p), 0.0) for p, n in self.ready(model, t).items())

    def used_gpus(self, pool: str) -> int:
        return sum(len(v) * self.gpus[m] for (m, p), v in self.pods.items() if p == pool)

    def apply(self, desired: Mapping[str, Mapping[str, int]], t: float, warm: bool = False, *, live_only: bool = False) -> int:
        """Scale to ``desired`` (absent pools -> 0 for the models listed); returns pods refused for lack of quota.

        ``live_only``: ``desired`` counts live pods only (the policy saw the notices); doomed pods are left to die.
        """
        for model, per_pool in desired.items():
            for pool in {p for (m, p) in self.pods if m == model} | set(per_pool):
                pods = self.pods.setdefault((model, pool), [])
                counted = [pod for pod in pods if not (live_only and pod.doomed_at is not None)]
                excess = len(counted) - per_pool.get(pool, 0)
                if excess > 0:
                    # Like a ReplicaSet: not-ready pods go first, then the newest.
                    counted.sort(key=lambda pod: (pod.ready_at <= t, pod.created))
                    gone = {id(pod) for pod in counted[:excess]}
                    pods[:] = [pod for pod in pods if id(pod) not in gone]
        refused = 0
        for model, per_pool in desired.items():
            for pool, n in per_pool.items():
                pods = self.pods.setdefault((model, pool), [])
                have = sum(not (live_only and pod.doomed_at is not None) for pod in pods)
                startup = 0.0 if warm else float(self.pools[pool].spec.startup_seconds)
                for _ in range(n - have):
                    if self.used_gpus(pool) + self.gpus[model] > self.pools[pool].spec.max_gpus:
                        refused += 1
                        continue
                    pods.append(Pod(t, t + startup))
        return refused

    def reclaim(self, pool: str, t: float, notice: float, rng: np.random.Generator) -> bool:
        """A reclaim notice for one pod (one node) of ``pool``, picked at random; False if the pool runs none."""
        live = [pod for (m, p), v in sorted(self.pods.items()) if p == pool for pod in v if pod.doomed_at is None]
        if not live:
            return False
        live[int(rng.integers(len(live)))].doomed_at = t + notice
        return True

    def expire(self, t: float) -> int:
        """Remove pods whose notice ran out; returns how many died."""
        died = 0
        for key, pods in self.pods.items():
            keep = [pod for pod in pods if pod.doomed_at is None or pod.doomed_at > t]
            died += len(pods) - len(keep)
            self.pods[key] = keep
        return died


def capacities(models: Sequence[RecModelDeployment], pools: Sequence[ComputePool]) -> dict[tuple[str, str], float]:
    """The simulator's ground truth per (model, pool): the spec's hint for the pool's GPU (``capacity_model.hint_for``)."""
    return {(m.name, p.name): hint_for(m.spec, p.spec) for m in models for p in pools}


@dataclass(frozen=True)
class Reclaims:
    """Spot reclaims: ``rate_per_pool_hour`` events per hour on each spot pool, each taking one pod after a notice
    drawn uniformly from ``notice_seconds``. Seeded: every policy meets the same reclaim times."""

    rate_per_pool_hour: float = 0.0
    notice_seconds: tuple[float, float] = (30.0, 120.0)
    seed: int = 1

    def schedule(self, pools: Sequence[ComputePool], duration: float) -> list[tuple[float, str, float]]:
        """(time, pool, notice) for every reclaim over ``duration`` seconds, sorted by time."""
        if self.rate_per_pool_hour <= 0:
            return []
        rng = np.random.default_rng(self.seed)
        events = []
        for pool in sorted(pools, key=lambda p: p.name):
            if pool.spec.pricing.capacity_type != CapacityType.SPOT:
                continue
            t = 0.0
            while True:
                t += float(rng.exponential(3600.0 / self.rate_per_pool_hour))
                if t >= duration:
                    break
                events.append((t, pool.name, float(rng.uniform(*self.notice_seconds))))
        return sorted(events)

    def rate_for(self, pool: ComputePool) -> float:
        return self.rate_per_pool_hour if pool.spec.pricing.capacity_type == CapacityType.SPOT else 0.0


@dataclass(frozen=True)
class View:
    """What a policy sees at time ``t``: the observed demand (RPS), the p95 of the last tick, and the cluster."""

    t: float  # seconds since the simulation start
    epoch: float  # t as seconds since the Unix epoch (for schedules)
    demand: Mapping[str, float]
    cluster: Cluster
    p95_ms: Mapping[str, float] = field(default_factory=dict)
