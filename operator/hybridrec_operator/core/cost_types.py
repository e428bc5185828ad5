"""The cost controller's data (pure, no I/O): its knobs, the cluster snapshot a round reads, the memory it carries
from round to round, and what it decides per model. The round itself is ``core/cost_round.py``; the loop that
reads the cluster and Prometheus and acts is ``controller/cost_controller.py``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_rmd
from hybridrec_operator.core.capacity import DISRUPTION_TAINT, matches
from hybridrec_operator.core.capacity_model import CapacityModel, CapacitySource
from hybridrec_operator.core.costing import SpendTracker
from hybridrec_operator.core.decide import CONTROLLER_TRIGGER, ControllerVerdict
from hybridrec_operator.core.forecast import Sample, Variability
from hybridrec_operator.core.objects import MODEL_LABEL, POOL_LABEL
from hybridrec_operator.core.planner import AllocatorMemory

TRIGGER = CONTROLLER_TRIGGER  # "cost-controller": the re-plans it asks for name it in status.lastDecision
# A new server's counters need two scrapes before rate() answers, so a model whose metrics were fresh may miss one
# round while a replica starts. It holds that round; Observed turns False only when the gap lasts longer.
MISSING_GRACE_ROUNDS = 2
OBSERVED = "Observed"


# --------------------------------------------------------------------------------------------- configuration


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class ControllerConfig:
    """Knobs, from ``HYBRIDREC_*`` environment variables."""

    prometheus_url: str | None = None
    interval_s: float = 30.0  # HYBRIDREC_CONTROL_INTERVAL_SECONDS
    window_s: float = 60.0  # HYBRIDREC_OBSERVE_WINDOW_SECONDS: rate()/histogram window
    max_age_s: float = 60.0  # HYBRIDREC_METRICS_MAX_AGE_SECONDS: older samples are stale
    history_s: float = 300.0  # HYBRIDREC_DEMAND_HISTORY_SECONDS: demand history the trend is fitted on
    max_moves_per_interval: int = 2  # HYBRIDREC_MAX_MOVES_PER_INTERVAL
    min_dwell_s: float = 120.0  # HYBRIDREC_MIN_DWELL_SECONDS
    # The allocator's measured p99 is ~0.1-0.2 s for 50 models x 8 pools; at the limit HiGHS returns its best
    # feasible allocation, so a longer limit only delays the round (benchmarks/results/cost_policies.md).
    solver_time_limit_s: float = 0.2  # HYBRIDREC_SOLVER_TIME_LIMIT_SECONDS
    # HYBRIDREC_OVERLOAD_PROBE_SECONDS: between rounds, how often to check for overload (p95 above the SLO, demand
    # above the planned capacity) and run a round at once; 0 disables the probe.
    overload_probe_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.prometheus_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ControllerConfig:
        """Read from an environment mapping (the loop passes ``os.environ``)."""
        interval = _env_float(env, "HYBRIDREC_CONTROL_INTERVAL_SECONDS", 30.0)
        if interval <= 0:
            raise ValueError("HYBRIDREC_CONTROL_INTERVAL_SECONDS must be > 0")
        return cls(
            prometheus_url=(env.get("HYBRIDREC_PROMETHEUS_URL") or "").strip() or None,
            interval_s=interval,
            # Two intervals (at least 10 s) smooth scrape jitter without lagging a ramp by much.
            window_s=_env_float(env, "HYBRIDREC_OBSERVE_WINDOW_SECONDS", max(10.0, 2 * interval)),
            max_age_s=_env_float(env, "HYBRIDREC_METRICS_MAX_AGE_SECONDS", 60.0),
            # Ten intervals: long enough for a robust trend, short enough that a collapse in demand (more than ~30%
            # of the window for Theil-Sen) is believed within a few rounds rather than after many minutes.
            history_s=_env_float(env, "HYBRIDREC_DEMAND_HISTORY_SECONDS", max(60.0, 10 * interval)),
            max_moves_per_interval=int(_env_float(env, "HYBRIDREC_MAX_MOVES_PER_INTERVAL", 2)),
            min_dwell_s=_env_float(env, "HYBRIDREC_MIN_DWELL_SECONDS", 120.0),
            solver_time_limit_s=_env_float(env, "HYBRIDREC_SOLVER_TIME_LIMIT_SECONDS", 0.2),
            # A third of the interval (at least 2 s): an overload waits at most that long for a round, at the price
            # of one Prometheus query set per probe.
            overload_probe_s=_env_float(env, "HYBRIDREC_OVERLOAD_PROBE_SECONDS", max(2.0, interval / 3)),
        )


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelSnapshot:
    """One RecModelDeployment as the cluster has it now."""

    rmd: RecModelDeployment
    current: Mapping[str, int]  # replicas its Deployments ask for, per pool
    ready: Mapping[str, int] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)  # the API object (events, status patches)

    @property
    def key(self) -> str:
        return f"{self.rmd.namespace}/{self.rmd.name}"


@dataclass(frozen=True)
class ClusterSnapshot:
    models: Sequence[ModelSnapshot]
    pools: Sequence[ComputePool]
    capacity_gpus: Mapping[str, int]  # per pool: GPUs hybridrec may use now, all models together
    # Spot reclaims: the nodes of each pool, and those about to go (see ``doomed``); a pool's node that was healthy
    # and is now doomed or gone counts as one reclaim.
    pool_nodes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    doomed_nodes: frozenset[str] = frozenset()
    doomed_pods: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # model -> pool -> pods on doomed nodes

    def expected_pools(self) -> dict[tuple[str, str], list[str]]:
        """Where the cluster says each model runs: freshness is judged only there."""
        return {(s.rmd.namespace, s.rmd.name): sorted(p for p, n in s.current.items() if n > 0) for s in self.models}


def build_snapshot(
    rmd_bodies: Iterable[Mapping[str, Any]],
    pools: Sequence[ComputePool],
    deployments: Iterable[Mapping[str, Any]],
    capacity_gpus: Mapping[str, int],
    nodes: Iterable[Mapping[str, Any]] = (),
    pods: Iterable[Mapping[str, Any]] = (),
) -> ClusterSnapshot:
    """Pure: API objects -> snapshot. Current replicas per pool come from the model's Deployments (``spec.replicas``),
    which is what runs or is starting; invalid or deleting models are left out (the reconcile reports them)."""
    current: dict[str, dict[str, int]] = {}
    ready: dict[str, dict[str, int]] = {}
    for dep in deployments:
        meta = dep.get("metadata") or {}
        labels = meta.get("labels") or {}
        model, pool = labels.get(MODEL_LABEL), labels.get(POOL_LABEL)
        if not model or not pool or meta.get("deletionTimestamp"):
            continue
        key = f"{meta.get('namespace', 'default')}/{model}"
        current.setdefault(key, {})[pool] = int((dep.get("spec") or {}).get("replicas") or 0)
        ready.setdefault(key, {})[pool] = int((dep.get("status") or {}).get("readyReplicas") or 0)
    models = []
    for body in rmd_bodies:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            rmd = parse_rmd(dict(body))
        except ValidationError:
            continue
        key = f"{rmd.namespace}/{rmd.name}"
        models.append(ModelSnapshot(rmd=rmd, current=current.get(key, {}), ready=ready.get(key, {}), body=body))
    models.sort(key=lambda s: s.key)
    pool_nodes, doomed_nodes, doomed_pods = reclaim_view(pools, nodes, pods)
    return ClusterSnapshot(models=models, pools=sorted(pools, key=lambda p: p.name), capacity_gpus=dict(capacity_gpus),
                           pool_nodes=pool_nodes, doomed_nodes=doomed_nodes, doomed_pods=doomed_pods)




def doomed(node: Mapping[str, Any]) -> bool:
    """A node about to lose its pods: tainted for disruption, being deleted, or reported NotReady (Ready False or
    Unknown). A node without a Ready condition yet is not judged."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    if meta.get("deletionTimestamp"):
        return True
    if any(t.get("key") == DISRUPTION_TAINT for t in spec.get("taints") or []):
        return True
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    return ready is not None and ready.get("status") != "True"


def reclaim_view(pools: Sequence[ComputePool], nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
                 ) -> tuple[dict[str, frozenset[str]], frozenset[str], dict[str, dict[str, int]]]:
    """Pure: (nodes per pool, doomed nodes, pods of each model per pool on doomed nodes)."""
    nodes = list(nodes)
    names = {str((n.get("metadata") or {}).get("name", "")): n for n in nodes}
    gone = frozenset(name for name, n in names.items() if doomed(n))
    per_pool = {p.name: frozenset(name for name, n in names.items()
                                  if matches(p.spec.node_selector, (n.get("metadata") or {}).get("labels") or {}))
                for p in pools}
    on_doomed: dict[str, dict[str, int]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        model, pool = labels.get(MODEL_LABEL), labels.get(POOL_LABEL)
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if model and pool and node in gone and not meta.get("deletionTimestamp"):
            key = f"{meta.get('namespace', 'default')}/{model}"
            on_doomed.setdefault(key, {})[pool] = on_doomed.setdefault(key, {}).get(pool, 0) + 1
    return per_pool, gone, on_doomed


# --------------------------------------------------------------------------------------------- state


@dataclass
class ModelMemory:
    capacity: CapacityModel
    spend: SpendTracker
    # One capacity learner per pool: a replica's RPS at the SLO depends on the pool's GPU, and the server metrics
    # carry the pool label. Created on first sight of the (model, pool) pair, from the spec's hint for that GPU.
    pool_capacity: dict[str, CapacityModel] = field(default_factory=dict)
    overridden: set[str] = field(default_factory=set)  # pools whose hint a measurement contradicts (event posted)
    variability: Variability | None = None  # residuals of the outlook over one lead time: the margin's evidence
    history: deque[Sample] = field(default_factory=deque)
    observed: bool | None = None  # the last round's reported verdict (None: never judged)
    missing_rounds: int = 0  # consecutive rounds held for MetricsMissing while still reported as observed


RECLAIM_WINDOW_S = 6 * 3600.0  # reclaims older than this no longer price a pool
MIN_EXPOSURE_NODE_HOURS = 1.0  # one reclaim in the first minutes is not a rate of 60 per hour


@dataclass
class ReclaimMemory:
    """Observed reclaims per pool: a node seen healthy that became doomed or disappeared."""

    healthy: dict[str, str] = field(default_factory=dict)  # node -> pool, healthy at the last round
    events: dict[str, deque[float]] = field(default_factory=dict)  # pool -> times of reclaims
    exposure: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)  # pool -> (t, node-hours that round)
    last: float | None = None

    def observe(self, now: float, pool_nodes: Mapping[str, frozenset[str]], doomed_nodes: frozenset[str]) -> None:
        healthy_now = {n: p for p, ns in pool_nodes.items() for n in ns if n not in doomed_nodes}
        lost: dict[str, int] = {}
        for node, pool in self.healthy.items():
            if node not in healthy_now:
                lost[pool] = lost.get(pool, 0) + 1
        exposed = {pool: sum(1 for p in self.healthy.values() if p == pool) for pool in pool_nodes}
        self.record(now, exposed, lost)
        self.healthy = healthy_now

    def record(self, now: float, exposed: Mapping[str, int], reclaimed: Mapping[str, int]) -> None:
        """One observation by counts: ``exposed`` healthy nodes per pool since the last one, ``reclaimed`` of them
        lost (doomed or gone) now. ``observe`` feeds it from node names; the simulator from its pods and notices."""
        for pool, n in reclaimed.items():
            self.events.setdefault(pool, deque()).extend([now] * n)
        if self.last is not None:
            hours = max(0.0, now - self.last) / 3600.0
            for pool, count in exposed.items():
                self.exposure.setdefault(pool, deque()).append((now, count * hours))
        for table in (self.events, self.exposure):
            for q in table.values():
                while q and (q[0] if isinstance(q[0], float) else q[0][0]) < now - RECLAIM_WINDOW_S:
                    q.popleft()
        self.last = now

    def rate_per_hour(self, pool: str) -> float:
        """Reclaims per node-hour over the window (one replica per node is the conservative reading)."""
        count = len(self.events.get(pool, ()))
        if not count:
            return 0.0
        exposure = sum(h for _, h in self.exposure.get(pool, ()))
        return count / max(exposure, MIN_EXPOSURE_NODE_HOURS)


@dataclass
class ControllerState:
    """Everything a round carries to the next one. Lost on restart and re-derived from the cluster."""

    allocator: AllocatorMemory = field(default_factory=AllocatorMemory)
    models: dict[str, ModelMemory] = field(default_factory=dict)
    rounds: int = 0
    reclaims: ReclaimMemory = field(default_factory=lambda: ReclaimMemory())


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Accounting:
    """Money for one model this round, all in ``currency``."""

    currency: str
    cost_per_hour: float
    spend_delta: float  # accrued since the previous round
    projected_month: float
    hour_utilization: float | None = None
    month_utilization: float | None = None
    cost_per_1k: float | None = None
    roi: float | None = None


@dataclass(frozen=True)
class PoolEconomics:
    """One (model, pool) pair as the allocator priced it this round."""

    rps_per_replica: float  # one replica's capacity at the SLO there
    source: CapacitySource  # measured | hint | default
    capacity_rps: float = 0.0  # RPS the replicas planned there serve
    cost_per_1k: float | None = None  # cost of 1,000 requests served by a fully loaded replica there

    def status_fields(self) -> dict[str, float | str]:
        """The fields of status.placements[] for this pool (camelCase, as the CRD has them)."""
        fields: dict[str, float | str] = {"capacityRps": round(self.capacity_rps, 3),
                                          "rpsPerReplica": round(self.rps_per_replica, 3), "capacitySource": self.source}
        if self.cost_per_1k is not None and math.isfinite(self.cost_per_1k):
            fields["costPer1kRequests"] = round(self.cost_per_1k, 6)
        return fields


@dataclass(frozen=True)
class ModelOutcome:
    """What one round decided for one model."""

    key: str
    namespace: str
    name: str
    targets: Mapping[str, int]  # replicas per pool to run now (every pool the model had or gets)
    changed: bool
    direction: str  # up | down | move | hold
    reason: str  # low-cardinality category (decisions metric)
    message: str  # the event text
    observed: bool
    observed_reason: str
    observed_message: str
    accounting: Accounting
    demand_rps: float | None = None
    forecast_rps: float | None = None
    p95_seconds: float | None = None
    rps_per_replica: float | None = None
    wanted: int | None = None
    shortfall: int = 0
    slo_at_risk: bool | None = None  # None: unknown (no fresh metrics)
    budget_limited: bool = False
    newly_unobserved: bool = False
    newly_observed: bool = False
    pools: Mapping[str, PoolEconomics] = field(default_factory=dict)  # per admitted pool (last known when held)
    hint_overridden: tuple[tuple[str, float, float], ...] = ()  # (pool, measured, hint) newly contradicting the hint

    def slo_status(self) -> tuple[bool | None, str, str] | None:
        """The SLOAtRisk verdict for the seam; None keeps the last one (no fresh data)."""
        if not self.observed or self.slo_at_risk is None:
            return None
        if self.slo_at_risk:
            return True, "CapacityBelowDemand", self.message
        p95 = f"p95 {self.p95_seconds * 1000:.0f} ms, " if self.p95_seconds is not None else ""
        return False, "CapacityMeetsDemand", f"{p95}capacity covers {_rps(self.demand_rps)}"

    def verdict(self) -> ControllerVerdict | None:
        """What the reconcile needs besides the target to report the model truthfully; None when the allocator did
        not decide this model this round (held: the last verdict stays)."""
        if not self.observed or self.wanted is None:
            return None
        return ControllerVerdict(wanted=self.wanted, shortfall=self.shortfall, budget_limited=self.budget_limited,
                                 message=self.message,
                                 pools=tuple((p, tuple(sorted(e.status_fields().items()))) for p, e in sorted(self.pools.items())))


@dataclass(frozen=True)
class RoundResult:
    time: float
    outcomes: Mapping[str, ModelOutcome]
    solver: str | None  # None when the allocator did not run (Prometheus unavailable, no models)
    solve_seconds: float
    prometheus_error: str | None = None


def _rps(value: float | None) -> str:
    return "no traffic data" if value is None else f"{value:,.1f} RPS"
