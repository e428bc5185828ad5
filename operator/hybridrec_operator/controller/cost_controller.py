"""The cost controller: every control interval, observe -> capacity model + forecast -> global allocator -> act.

One round, for ALL RecModelDeployments at once (they compete for the same private GPUs):

1. read the cluster (models, pools, GPUs per pool, the replicas each model's Deployments ask for now) from the
   operator's kopf indexes;
2. query Prometheus (``observe.py``). A model whose metrics are missing or stale keeps its allocation (and its GPUs:
   the allocator may not hand them to others); a Prometheus that cannot answer freezes every allocation. Never
   scale toward the minimum on missing data;
3. per model: learn RPS per replica (``capacity_model``), forecast the demand to cover until capacity started now
   is ready (``forecast``: trend, declared events, the slowest allowed pool's ``startupSeconds``);
4. ``planner.allocate`` over every model and pool;
5. hand per-pool targets and the verdict behind them to the handlers (``handlers.CONTROLLER_TARGETS``,
   ``handlers.CONTROLLER_VERDICTS`` + ``request_replan``: the same queue and render/apply path as placement; the
   verdict makes Placed/CapacityShortfall/BudgetLimited and the shortfall metric count what the controller held
   back, and its reason becomes ``status.lastDecision.message``), post an Event with the decision's reason, keep the
   ``Observed`` condition and feed ``SLOAtRisk`` (``handlers.SLO_STATUS``), and publish the operator metrics.

:func:`plan_round` is pure (cluster snapshot + observation + state in; outcomes + new state out);
:class:`CostController` does the I/O around it. Anti-flap memory is re-derived from the cluster after a restart or
a peering hand-over: the replicas that run are the starting target and count as a fresh recommendation, so the
operator waits a full stabilisation window before scaling down and does not burst into changes.

Loaded by ``handlers`` (so ``hybridrec operator run`` and ``kopf run -m hybridrec_operator.controller.handlers`` include it) and
enabled when ``HYBRIDREC_PROMETHEUS_URL`` is set. Standby replicas (kopf peering) skip rounds, following the same
:class:`handlers.PeeringGate` as the reconcile queue. ``handlers`` imports this module while loading, so this
module imports ``handlers`` only inside functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import kopf
from pydantic import ValidationError

from hybridrec_operator.controller import metrics as m
from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_rmd
from hybridrec_operator.core.capacity_model import CapacityModel, headroom_for
from hybridrec_operator.core.costing import Money, SpendTracker, cost_per_1k_requests, lifecycle
from hybridrec_operator.core.forecast import Sample, demand_to_cover, lead_seconds
from hybridrec_operator.controller.observe import DataState, HttpPromClient, ModelObservation, Observation, PrometheusUnavailable, observe
from hybridrec_operator.core.planner import AllocatorMemory, ModelAllocation, ModelState, PoolState, admitted_pools, allocate

if TYPE_CHECKING:
    from hybridrec_operator.controller.handlers import ControllerVerdict

log = logging.getLogger("hybridrec.cost_controller")

TRIGGER = "cost-controller"
# A new server's counters need two scrapes before rate() answers, so a model whose metrics were fresh may miss one
# round while a replica starts. It holds that round; Observed turns False only when the gap lasts longer.
MISSING_GRACE_ROUNDS = 2
OBSERVED = "Observed"
MODEL_LABEL = "hybridrec.io/model"
POOL_LABEL = "hybridrec.io/pool"


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
    solver_time_limit_s: float = 1.0  # HYBRIDREC_SOLVER_TIME_LIMIT_SECONDS

    @property
    def enabled(self) -> bool:
        return bool(self.prometheus_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControllerConfig:
        env = os.environ if env is None else env
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
            solver_time_limit_s=_env_float(env, "HYBRIDREC_SOLVER_TIME_LIMIT_SECONDS", 1.0),
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

    def expected_pools(self) -> dict[tuple[str, str], list[str]]:
        """Where the cluster says each model runs: freshness is judged only there."""
        return {(s.rmd.namespace, s.rmd.name): sorted(p for p, n in s.current.items() if n > 0) for s in self.models}


def build_snapshot(
    rmd_bodies: Iterable[Mapping[str, Any]],
    pools: Sequence[ComputePool],
    deployments: Iterable[Mapping[str, Any]],
    capacity_gpus: Mapping[str, int],
) -> ClusterSnapshot:
    """Pure: API objects -> snapshot. Current replicas per pool come from the model's Deployments (``spec.replicas``),
    which is what runs or is starting; invalid or deleting models are left out (the handlers report them)."""
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
    return ClusterSnapshot(models=models, pools=sorted(pools, key=lambda p: p.name), capacity_gpus=dict(capacity_gpus))


# --------------------------------------------------------------------------------------------- state


@dataclass
class ModelMemory:
    capacity: CapacityModel
    spend: SpendTracker
    history: deque[Sample] = field(default_factory=deque)
    observed: bool | None = None  # the last round's reported verdict (None: never judged)
    missing_rounds: int = 0  # consecutive rounds held for MetricsMissing while still reported as observed


@dataclass
class ControllerState:
    """Everything a round carries to the next one. Lost on restart and re-derived from the cluster."""

    allocator: AllocatorMemory = field(default_factory=AllocatorMemory)
    models: dict[str, ModelMemory] = field(default_factory=dict)
    rounds: int = 0


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

    def slo_status(self) -> tuple[bool | None, str, str] | None:
        """The SLOAtRisk verdict for the handlers' seam; None keeps the last one (no fresh data)."""
        if not self.observed or self.slo_at_risk is None:
            return None
        if self.slo_at_risk:
            return True, "CapacityBelowDemand", self.message
        p95 = f"p95 {self.p95_seconds * 1000:.0f} ms, " if self.p95_seconds is not None else ""
        return False, "CapacityMeetsDemand", f"{p95}capacity covers {_rps(self.demand_rps)}"

    def verdict(self) -> ControllerVerdict | None:
        """What the handlers need besides the target to report the model truthfully; None when the allocator did
        not decide this model this round (held: the last verdict stays)."""
        from hybridrec_operator.controller.handlers import ControllerVerdict

        if not self.observed or self.wanted is None:
            return None
        return ControllerVerdict(wanted=self.wanted, shortfall=self.shortfall, budget_limited=self.budget_limited,
                                 message=self.message)


@dataclass(frozen=True)
class RoundResult:
    time: float
    outcomes: Mapping[str, ModelOutcome]
    solver: str | None  # None when the allocator did not run (Prometheus unavailable, no models)
    solve_seconds: float
    prometheus_error: str | None = None


def _rps(value: float | None) -> str:
    return "no traffic data" if value is None else f"{value:,.1f} RPS"


# --------------------------------------------------------------------------------------------- the round (pure)


def _memory_for(state: ControllerState, snap: ModelSnapshot, currency: str) -> ModelMemory:
    mem = state.models.get(snap.key)
    if mem is None:
        mem = ModelMemory(capacity=CapacityModel.from_spec(snap.rmd.spec), spend=SpendTracker(currency))
        state.models[snap.key] = mem
    return mem


def seed_from_cluster(state: ControllerState, snapshot: ClusterSnapshot, now: float) -> list[str]:
    """First sight of a model (startup, restart, hand-over, new object): what runs is the starting target.

    Its total counts as a recommendation made now, so scale-down waits a full stabilisation window, and its pools
    count as just placed, so nothing moves before the dwell time. Returns the keys seeded.
    """
    alloc = state.allocator
    seeded = []
    for snap in snapshot.models:
        if snap.key in alloc.recommendations:
            continue
        alloc.recommendations[snap.key] = [(now, sum(snap.current.values()))]
        for pool, n in snap.current.items():
            if n > 0:
                alloc.placed_at.setdefault((snap.key, pool), now)
        seeded.append(snap.key)
    return seeded


def hold_recommendation(state: ControllerState, snap: ModelSnapshot, now: float) -> None:
    """A held round recommends what runs. After an outage longer than the stabilisation window, the first fresh
    (possibly partial) data must not find an empty window and shrink the model at once."""
    window = snap.rmd.spec.scaling.scale_down_stabilization_seconds
    recs = [(t, r) for t, r in state.allocator.recommendations.get(snap.key, []) if now - t < window]
    recs.append((now, sum(snap.current.values())))
    state.allocator.recommendations[snap.key] = recs


def _forget(state: ControllerState, live: set[str]) -> None:
    for gone in [k for k in state.models if k not in live]:
        del state.models[gone]
    alloc = state.allocator
    for table in (alloc.recommendations, alloc.last_scale_up, alloc.last_move, alloc.break_after):
        for gone in [k for k in table if k not in live]:
            del table[gone]
    alloc.placed_at = {k: v for k, v in alloc.placed_at.items() if k[0] in live}


def judge(obs: ModelObservation | None, error: str | None) -> tuple[bool, str, str]:
    """(observed, condition reason, message) of one model's metrics."""
    if error is not None:
        return False, "PrometheusUnavailable", f"Prometheus unavailable ({error}); holding the last allocation"
    if obs is None:
        return False, "MetricsMissing", "no metrics; holding the last allocation"
    if obs.state == DataState.OK:
        if obs.request_rate.value is None:
            return False, "MetricsMissing", "no request rate yet; holding the last allocation"
        starting = f" (not scraped yet: {', '.join(obs.starting_pools)})" if obs.starting_pools else ""
        return True, "MetricsFresh", f"fresh metrics: {_rps(obs.request_rate.value)}{starting}"
    reason = "MetricsStale" if obs.state == DataState.STALE else "MetricsMissing"
    return False, reason, f"{obs.reason}; holding the last allocation"


def _with_grace(verdict: tuple[bool, str, str], mem: ModelMemory) -> tuple[bool, str, str]:
    """The verdict to report: a short MetricsMissing gap after fresh rounds still counts as observed (the round
    holds all the same); Prometheus down or stale samples are reported at once."""
    ok, reason, message = verdict
    if ok:
        mem.missing_rounds = 0
        return verdict
    if reason == "MetricsMissing" and mem.observed and mem.missing_rounds < MISSING_GRACE_ROUNDS:
        mem.missing_rounds += 1
        return True, "MetricsFresh", f"holding this round: {message.split(';')[0]}"
    return verdict


def category(alloc: ModelAllocation, p95_ms: float | None, slo_ms: float, pinned: bool, observed: bool) -> str:
    """Low-cardinality reason label of the decisions metric."""
    if pinned:
        return "pinned"
    if not observed:
        return "no-data"
    if alloc.budget_limited:
        return "budget"
    if alloc.shortfall > 0:
        return "capacity"
    if alloc.direction == "move":
        return "cost"
    if alloc.direction == "up" and p95_ms is not None and p95_ms > slo_ms:
        return "slo"
    return "demand"


def account(mem: ModelMemory, snap: ModelSnapshot, targets: Mapping[str, int], pools: Mapping[str, ComputePool],
            now: float, demand_rps: float | None, currency: str) -> Accounting:
    """Advance the model's spend to ``now`` and price the replicas it runs from now on."""
    gpus = snap.rmd.spec.resources.gpus
    per_hour = sum(n * gpus * pools[p].spec.pricing.price_per_gpu_hour for p, n in targets.items() if n > 0 and p in pools)
    rate = Money.of(per_hour, currency)
    before = float(mem.spend.total or 0)  # as of the previous round
    mem.spend.observe(now, rate)  # accrues the previous rate up to now, then prices what runs from now on
    after = float(mem.spend.total or 0)
    budget = snap.rmd.spec.budget
    same_currency = budget is not None and budget.currency == currency
    per_1k = cost_per_1k_requests(rate, demand_rps)
    roi = lifecycle(snap.rmd.spec.economics).roi if snap.rmd.spec.economics is not None else None
    return Accounting(
        currency=currency,
        cost_per_hour=per_hour,
        spend_delta=max(0.0, after - before),
        projected_month=float(mem.spend.projected_month(now)),
        hour_utilization=mem.spend.hour_utilisation(budget) if same_currency else None,
        month_utilization=mem.spend.month_utilisation(now, budget) if same_currency else None,
        cost_per_1k=float(per_1k) if per_1k is not None else None,
        roi=float(roi) if roi is not None else None,
    )


def plan_round(
    snapshot: ClusterSnapshot,
    observation: Observation | None,
    state: ControllerState,
    now: float,
    config: ControllerConfig,
    *,
    prometheus_error: str | None = None,
) -> tuple[RoundResult, ControllerState]:
    """One control round, pure. ``observation`` is None exactly when Prometheus could not answer
    (``prometheus_error`` says why): then every model holds and the allocator does not run."""
    state = copy.deepcopy(state)
    state.rounds += 1
    _forget(state, {s.key for s in snapshot.models})
    seed_from_cluster(state, snapshot, now)
    currency = _currency(snapshot)
    pools_by_name = {p.name: p for p in snapshot.pools}

    if observation is None:
        error = prometheus_error or "no observation"
        held: dict[str, ModelOutcome] = {}
        for snap in snapshot.models:
            mem = _memory_for(state, snap, currency)
            hold_recommendation(state, snap, now)
            ok, reason, message = judge(None, error)
            held[snap.key] = ModelOutcome(
                key=snap.key, namespace=snap.rmd.namespace, name=snap.rmd.name, targets=dict(snap.current), changed=False,
                direction="hold", reason="no-data", message=message, observed=ok, observed_reason=reason,
                observed_message=message, accounting=account(mem, snap, snap.current, pools_by_name, now, None, currency),
                newly_unobserved=mem.observed is not False,
            )
            mem.observed = False
        return RoundResult(now, held, None, 0.0, prometheus_error=error), state

    pools = [PoolState(p.name, p.spec, int(snapshot.capacity_gpus.get(p.name, 0))) for p in snapshot.pools]
    model_states: list[ModelState] = []
    facts: dict[str, tuple[tuple[bool, str, str], float | None, float | None, float | None]] = {}
    for snap in snapshot.models:
        spec = snap.rmd.spec
        mem = _memory_for(state, snap, currency)
        obs = observation.get(snap.rmd.namespace, snap.rmd.name)
        verdict = judge(obs, None)
        demand = to_cover = p95_ms = None
        if verdict[0] and obs is not None and obs.request_rate.value is not None:
            demand = obs.request_rate.value
            p95_ms = obs.p95_seconds.value * 1000.0 if obs.p95_seconds.value is not None else None
            ready = int(obs.ready_servers.value or 0)
            mem.capacity.observe(now, demand / ready if ready > 0 else None, p95_ms, ready)
            mem.history.append(Sample(now, demand))
            while mem.history and mem.history[0].t < now - config.history_s:
                mem.history.popleft()
            startups = [p.spec.startup_seconds for p in admitted_pools(spec, pools)]
            to_cover = demand_to_cover(list(mem.history), spec.scaling.schedule, now,
                                       lead_seconds(startups, config.interval_s), config.interval_s)
        holding = not verdict[0]
        if holding:
            hold_recommendation(state, snap, now)
        verdict = _with_grace(verdict, mem)
        facts[snap.key] = (verdict, demand, to_cover, p95_ms)
        model_states.append(
            ModelState(
                key=snap.key,
                spec=spec,
                demand_rps=None if holding else to_cover,  # None: the allocator holds this model and its GPUs
                rps_per_replica=mem.capacity.rps_per_replica,
                current=dict(snap.current),
                pinned=spec.replicas,
                ready=dict(snap.ready),
                p95_ms=p95_ms,
                headroom=headroom_for(p95_ms, float(spec.slo.p95_latency_ms)),
            )
        )
    if not model_states:
        return RoundResult(now, {}, None, 0.0), state
    allocation, state.allocator = allocate(
        model_states, pools, now, state.allocator, time_limit=config.solver_time_limit_s,
        max_moves_per_interval=config.max_moves_per_interval, min_dwell_seconds=config.min_dwell_s,
    )
    outcomes: dict[str, ModelOutcome] = {}
    for snap, ms in zip(snapshot.models, model_states):
        alloc = allocation.models[snap.key]
        (observed, obs_reason, obs_message), demand, to_cover, p95_ms = facts[snap.key]
        mem = state.models[snap.key]
        targets = {p: int(n) for p, n in alloc.replicas.items()}
        for p in snap.current:
            targets.setdefault(p, 0)
        changed = any(targets.get(p, 0) != snap.current.get(p, 0) for p in set(targets) | set(snap.current))
        outcomes[snap.key] = ModelOutcome(
            key=snap.key,
            namespace=snap.rmd.namespace,
            name=snap.rmd.name,
            targets=targets,
            changed=changed,
            direction=alloc.direction if changed else "hold",
            reason=category(alloc, p95_ms, float(snap.rmd.spec.slo.p95_latency_ms), ms.pinned is not None, observed),
            message=alloc.reason,
            observed=observed,
            observed_reason=obs_reason,
            observed_message=obs_message,
            accounting=account(mem, snap, targets, pools_by_name, now, demand, currency),
            demand_rps=demand,
            forecast_rps=to_cover,
            p95_seconds=p95_ms / 1000.0 if p95_ms is not None else None,
            rps_per_replica=ms.rps_per_replica,
            wanted=alloc.wanted,
            shortfall=alloc.shortfall,
            slo_at_risk=alloc.slo_at_risk if demand is not None else None,
            budget_limited=alloc.budget_limited,
            newly_unobserved=(mem.observed is not False) and not observed,
            newly_observed=(mem.observed is False) and observed,
        )
        mem.observed = observed
    return RoundResult(now, outcomes, allocation.solver, allocation.solve_seconds), state


def _currency(snapshot: ClusterSnapshot) -> str:
    currencies = {p.spec.pricing.currency for p in snapshot.pools}
    return currencies.pop() if len(currencies) == 1 else "USD"


# --------------------------------------------------------------------------------------------- metrics

# Replicas, cost per hour and shortfall per pool are published by the handlers from the plan they apply (the same
# path as placement); publishing them here too would give two writers to one series.
MODEL_GAUGES = (m.PROJECTED_MONTH_SPEND, m.BUDGET, m.BUDGET_UTILIZATION, m.COST_PER_1K_REQUESTS, m.ROI, m.SLO_TARGET,
                m.SLO_ATTAINED, m.DEMAND, m.FORECAST, m.OBSERVED)


def metric_values(out: ModelOutcome, rmd: RecModelDeployment) -> dict[Any, dict[tuple[str, ...], float]]:
    """Pure: the gauge values of one model this round, {metric: {label values: value}}.

    What is unknown this round (no fresh data) is absent, never zero.
    """
    ns, name = out.namespace, out.name
    acc = out.accounting
    values: dict[Any, dict[tuple[str, ...], float]] = {g: {} for g in MODEL_GAUGES}
    values[m.PROJECTED_MONTH_SPEND][(ns, name, acc.currency)] = acc.projected_month
    budget = rmd.spec.budget
    if budget is not None:
        for window, limit, util in (("hour", budget.max_per_hour, acc.hour_utilization), ("month", budget.max_per_month, acc.month_utilization)):
            if limit is None:
                continue
            values[m.BUDGET][(ns, name, window, budget.currency)] = limit
            if util is not None and math.isfinite(util):
                values[m.BUDGET_UTILIZATION][(ns, name, window)] = util
    if out.observed and acc.cost_per_1k is not None:
        values[m.COST_PER_1K_REQUESTS][(ns, name, acc.currency)] = acc.cost_per_1k
    if acc.roi is not None:
        values[m.ROI][(ns, name)] = acc.roi
    slo_s = rmd.spec.slo.p95_latency_ms / 1000.0
    values[m.SLO_TARGET][(ns, name)] = slo_s
    if out.observed and out.p95_seconds is not None:
        values[m.SLO_ATTAINED][(ns, name)] = 1.0 if out.p95_seconds <= slo_s else 0.0
    if out.observed and out.demand_rps is not None:
        values[m.DEMAND][(ns, name)] = out.demand_rps
    if out.observed and out.forecast_rps is not None:
        values[m.FORECAST][(ns, name)] = out.forecast_rps
    values[m.OBSERVED][(ns, name, out.observed_reason)] = 1.0 if out.observed else 0.0
    return values


@dataclass
class MetricsPublisher:
    """Sets the operator metrics every round and removes label sets that no longer apply (a reason that changed,
    a budget that was removed, a deleted model), so dashboards never show a value that is no longer true."""

    _series: dict[str, dict[Any, set[tuple[str, ...]]]] = field(default_factory=dict)

    def publish(self, result: RoundResult, snapshot: ClusterSnapshot) -> None:
        if result.solver is not None:
            m.SOLVE_SECONDS.labels(result.solver).observe(result.solve_seconds)
        rmds = {s.key: s.rmd for s in snapshot.models}
        for key, out in result.outcomes.items():
            values = metric_values(out, rmds[key])
            for gauge, series in values.items():
                for labels, value in series.items():
                    gauge.labels(*labels).set(value)
            self._keep_only(key, {g: set(s) for g, s in values.items()})
            acc = out.accounting
            m.SPEND.labels(out.namespace, out.name, acc.currency).inc(acc.spend_delta)
            if out.changed:
                m.DECISIONS.labels(out.namespace, out.name, out.direction, out.reason).inc()
            elif out.newly_unobserved:
                m.DECISIONS.labels(out.namespace, out.name, "hold", "no-data").inc()
        for gone in [k for k in self._series if k not in result.outcomes]:
            namespace, name = gone.split("/", 1)
            self._keep_only(gone, {})
            forget_model_metrics(namespace, name)

    def _keep_only(self, key: str, keep: dict[Any, set[tuple[str, ...]]]) -> None:
        for gauge, label_sets in self._series.get(key, {}).items():
            for labels in label_sets - keep.get(gauge, set()):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        if keep:
            self._series[key] = keep
        else:
            self._series.pop(key, None)


def forget_model_metrics(namespace: str, name: str) -> None:
    """Remove the controller's series of a deleted model, counters included."""
    for metric in (*MODEL_GAUGES, m.SPEND, m.DECISIONS):
        for labels in _label_sets(metric):
            if labels[:2] == (namespace, name) and not (metric is m.DECISIONS and labels[3] == "placement"):
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)


def _label_sets(metric: Any) -> list[tuple[str, ...]]:
    # prometheus_client keeps children in a dict keyed by label values and has no public listing.
    with metric._lock:  # noqa: SLF001
        return list(metric._metrics.keys())  # noqa: SLF001


# --------------------------------------------------------------------------------------------- acting (I/O)


def verdict_counts(verdict: ControllerVerdict) -> tuple[int, int, bool]:
    """The part of a verdict the handlers' conditions depend on (the message is informative only)."""
    return verdict.wanted, verdict.shortfall, verdict.budget_limited


def observed_condition_patch(conditions_: Sequence[Mapping[str, Any]], out: ModelOutcome, generation: int | None,
                             now: datetime) -> list[dict[str, Any]] | None:
    """The new conditions list when the Observed condition changes (status, reason or message class); else None.

    The message of a fresh Observed condition carries the RPS, which changes every round: it is rewritten only when
    status or reason change, so a steady state costs no writes.
    """
    from hybridrec_operator.core.conditions import get_condition, set_condition

    old = get_condition(conditions_, OBSERVED)
    status = "True" if out.observed else "False"
    if old is not None and old.get("status") == status and old.get("reason") == out.observed_reason:
        return None
    return set_condition(conditions_, OBSERVED, out.observed, out.observed_reason, out.observed_message, generation, now)


def events_for(out: ModelOutcome) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events of one outcome."""
    events = []
    if out.changed:
        reason = "Rebalancing" if out.direction == "move" else "Scaling"
        events.append(("Normal", reason, out.message))
    if out.newly_unobserved:
        events.append(("Warning", "MetricsUnavailable", out.observed_message))
    elif out.newly_observed:
        events.append(("Normal", "MetricsRestored", out.observed_message))
    return events


def hand_over(
    outcomes: Mapping[str, ModelOutcome],
    live: set[str],
    targets: dict[str, dict[str, int]],
    verdicts: dict[str, ControllerVerdict],
    slo_status: dict[str, tuple[bool | None, str, str]],
) -> list[str]:
    """Publish one round into the handlers' seam (the three dicts, updated in place); returns the models to re-plan.

    Deleted models are dropped. A fresh decision sets the target, its verdict and the SLO verdict; a held one keeps
    the last target (or what runs, if there was none) and the last verdicts. Messages carry this round's numbers,
    so a change of message alone is stored without a re-plan: only changed replicas or counts/verdicts re-plan.
    """
    for gone in [k for k in targets if k not in live]:
        targets.pop(gone, None)
        verdicts.pop(gone, None)
        slo_status.pop(gone, None)
    replan: list[str] = []
    for key, out in outcomes.items():
        changed = out.changed
        running = {p: n for p, n in out.targets.items() if n > 0}
        if not out.observed:
            targets.setdefault(key, running)
        else:
            if targets.get(key) != running:
                targets[key] = running
                changed = True
            verdict, before = out.verdict(), verdicts.get(key)
            if verdict is not None and verdict != before:
                verdicts[key] = verdict
                changed = changed or before is None or verdict_counts(before) != verdict_counts(verdict)
            slo, slo_before = out.slo_status(), slo_status.get(key)
            if slo is not None and slo != slo_before:
                slo_status[key] = slo
                changed = changed or slo_before is None or slo_before[:2] != slo[:2]
        if changed:
            replan.append(key)
    return replan


class CostController:
    """Runs rounds inside the operator process; see the module docstring."""

    def __init__(self, config: ControllerConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.state = ControllerState()
        self.publisher = MetricsPublisher()
        self.prom = HttpPromClient(config.prometheus_url or "", timeout_s=min(5.0, max(1.0, config.interval_s / 2)))
        self.last_result: RoundResult | None = None
        self._active = False

    # ---- reading the cluster (event loop: the kopf indexes are not thread-safe)
    def snapshot(self, runtime: Any) -> ClusterSnapshot:
        from hybridrec_operator.core import capacity

        pools = runtime.pools()
        usage = capacity.pool_usage(pools, runtime.nodes(), runtime.pods())
        # All models together may use what they already use plus what is free (quota and node room).
        capacity_gpus = {name: u.used_gpus + u.free_gpus for name, u in usage.items()}
        bodies, deployments = [], []
        for (namespace, name) in list(runtime._index("hybridrec_rmds")):  # noqa: SLF001 - the handlers' index
            body = runtime.rmd_body(f"{namespace}/{name}")
            if body is None:
                continue
            bodies.append(body)
            deployments += [c for (kind, _), c in runtime.children(namespace, name).items() if kind == "Deployment"]
        return build_snapshot(bodies, pools, deployments, capacity_gpus)

    def observe(self, snapshot: ClusterSnapshot, now: float) -> tuple[Observation | None, str | None]:
        try:
            return observe(self.prom, snapshot.expected_pools(), now, self.config.window_s, self.config.max_age_s), None
        except PrometheusUnavailable as exc:
            return None, str(exc)

    # ---- one round
    async def run_round(self, runtime: Any) -> RoundResult:
        from hybridrec_operator.controller import handlers

        snapshot = self.snapshot(runtime)
        if not self._active:
            # Started, restarted or took over from a peer: forget what we knew, start from what runs.
            self.state = ControllerState()
            self.seed_targets(snapshot)
            self._active = True
        now = self.clock()
        observation, error = await asyncio.to_thread(self.observe, snapshot, now)
        result, self.state = await asyncio.to_thread(plan_round, snapshot, observation, self.state, now, self.config,
                                                     prometheus_error=error)
        self.publisher.publish(result, snapshot)
        bodies = {s.key: s.body for s in snapshot.models}
        written = await asyncio.to_thread(self.record, runtime.kube, result, bodies, getattr(runtime, "identity", ""))
        # The handlers read models from their watch cache plus their own writes: adding ours lets the re-plans below
        # patch status on top of the Observed condition just written instead of failing on a stale resourceVersion.
        for key, body in written.items():
            namespace, name = key.split("/", 1)
            ref = (handlers.RMD_KIND, namespace, name)
            runtime.written[ref] = handlers.fresher(runtime.written.get(ref), body)
        # No await from here to the last replan(): a worker cannot apply a target set here before its re-plan is
        # queued under this controller's trigger.
        live = {s.key for s in snapshot.models}
        for key in hand_over(result.outcomes, live, handlers.CONTROLLER_TARGETS, handlers.CONTROLLER_VERDICTS,
                             handlers.SLO_STATUS):
            self.replan(key)
        self.last_result = result
        self._log(result)
        return result

    def replan(self, key: str) -> None:
        """Queue the model's re-plan under this controller's trigger (the reconcile then names it in lastDecision).

        Through the handlers' queue, never a direct reconcile: the queue never runs two reconciles of one model at
        once (no self-made 409s), retries failures with backoff keeping the trigger, and keeps this trigger over
        weaker ones (resync, child events) that coalesce with it.
        """
        from hybridrec_operator.controller import handlers

        handlers.request_replan(key, trigger=TRIGGER)

    def seed_targets(self, snapshot: ClusterSnapshot) -> None:
        """Make what runs the controller's target, so the handlers keep it until the first decision. Verdicts from
        an earlier active spell are dropped: nothing is known about what the models want until then."""
        from hybridrec_operator.controller import handlers

        handlers.CONTROLLER_VERDICTS.clear()
        for snap in snapshot.models:
            running = {p: n for p, n in snap.current.items() if n > 0}
            if running:
                handlers.CONTROLLER_TARGETS[snap.key] = running

    def pause(self) -> None:
        self._active = False

    def record(self, kube: Any, result: RoundResult, bodies: Mapping[str, Mapping[str, Any]],
               identity: str) -> dict[str, Mapping[str, Any]]:
        """Events and the Observed condition (worker thread); returns the models written, by key.
        Failures are logged: the next round retries."""
        from kubernetes.client.exceptions import ApiException

        from hybridrec_operator.api.models import API_VERSION

        now = datetime.fromtimestamp(result.time, UTC)
        written: dict[str, Mapping[str, Any]] = {}
        for key, out in result.outcomes.items():
            body = bodies.get(key) or {}
            meta = body.get("metadata") or {}
            if not meta:
                continue
            involved = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": "RecModelDeployment", "metadata": meta}
            for type_, reason, message in events_for(out):
                try:
                    kube.post_event(involved, reason=reason, message=message, type_=type_, instance=identity)
                except ApiException as exc:
                    log.warning("%s: event %s not posted: %s", key, reason, exc.reason)
            try:
                new = self._patch_observed(kube, out, body, now)
            except ApiException as exc:
                log.warning("%s: Observed condition not written: %s", key, exc.reason)
                continue
            if new:
                written[key] = new
        return written

    def _patch_observed(self, kube: Any, out: ModelOutcome, body: Mapping[str, Any],
                        now: datetime) -> Mapping[str, Any] | None:
        """Write the Observed condition when it changed; the model as written, None when nothing was written."""
        meta = body.get("metadata") or {}
        path = f"/apis/hybridrec.io/v1alpha1/namespaces/{out.namespace}/recmodeldeployments/{out.name}"
        from kubernetes.client.exceptions import ApiException

        for attempt in range(3):
            status = body.get("status") or {}
            new = observed_condition_patch(status.get("conditions") or [], out, meta.get("generation"), now)
            if new is None:
                return None
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"conditions": new}}
            try:
                return kube.request("PATCH", f"{path}/status", body=patch, content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status != 409 or attempt == 2:
                    raise
                body = kube.request("GET", path)  # someone wrote in between: re-read and re-apply
                meta = body.get("metadata") or {}
        return None  # not reached: the last attempt returns or raises

    def _log(self, result: RoundResult) -> None:
        for out in result.outcomes.values():
            if out.changed or out.newly_unobserved or out.newly_observed:
                log.info("%s: %s%s", out.key, out.message, "" if out.observed else f" [{out.observed_reason}]")


# --------------------------------------------------------------------------------------------- kopf wiring

CONTROLLER: CostController | None = None


async def control_loop(controller: CostController) -> None:
    """Run a round every interval while this replica is the active one; never let one failure stop the loop."""
    from hybridrec_operator.controller import handlers

    while True:
        started = time.monotonic()
        runtime = handlers.RUNTIME
        if runtime is not None and runtime.gate.active:
            try:
                await controller.run_round(runtime)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("cost controller round failed")
        else:
            controller.pause()
        await asyncio.sleep(max(0.1, controller.config.interval_s - (time.monotonic() - started)))


def seed_from_api(kube: Any) -> dict[str, dict[str, int]]:
    """Targets = the replicas the model Deployments ask for now, listed from the API server (before the watchers
    start, so the handlers' first reconcile after a restart keeps them instead of falling back to minReplicas)."""
    deployments = kube.request("GET", "/apis/apps/v1/deployments", query={"labelSelector": "app.kubernetes.io/managed-by=hybridrec"})
    targets: dict[str, dict[str, int]] = {}
    for dep in deployments.get("items", []):
        meta = dep.get("metadata") or {}
        labels = meta.get("labels") or {}
        replicas = int((dep.get("spec") or {}).get("replicas") or 0)
        if labels.get(MODEL_LABEL) and labels.get(POOL_LABEL) and replicas > 0:
            targets.setdefault(f"{meta.get('namespace')}/{labels[MODEL_LABEL]}", {})[labels[POOL_LABEL]] = replicas
    return targets


@kopf.on.startup()
async def start_cost_controller(memo: kopf.Memo, **_: Any) -> None:
    global CONTROLLER
    config = ControllerConfig.from_env()
    if not config.enabled:
        log.info("cost controller off (set HYBRIDREC_PROMETHEUS_URL to enable it)")
        return
    from hybridrec_operator.controller import handlers
    from hybridrec_operator.controller.kube import Kube, new_api_client

    api = await asyncio.to_thread(new_api_client, None)
    try:
        seeded = await asyncio.to_thread(seed_from_api, Kube(api))
    except Exception as exc:  # noqa: BLE001 - without the seed the first round still starts from what runs
        log.warning("could not read current replicas at startup: %s", exc)
        seeded = {}
    finally:
        api.close()
    handlers.CONTROLLER_TARGETS.update(seeded)
    # httpx logs every request at INFO: a dozen Prometheus queries per round would drown the operator's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    CONTROLLER = CostController(config)
    memo["cost_controller_task"] = asyncio.create_task(control_loop(CONTROLLER), name="hybridrec-cost-controller")
    log.info("cost controller on: Prometheus %s, every %.0f s, %d models resumed from the cluster",
             config.prometheus_url, config.interval_s, len(seeded))


@kopf.on.cleanup()
async def stop_cost_controller(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("cost_controller_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
