"""One cost-control round, pure: cluster snapshot + observation + state in, outcomes + new state out.

Per model: learn RPS per replica per pool (``capacity_model``: one learner per (model, pool), fed from the pool's
server metrics, seeded from the spec's hint for the pool's GPU; ``resolve`` says whether measurement, hint or the
default won), forecast the demand to cover until capacity started now is ready (``forecast.outlook``: level + trend
over the slowest allowed pool's ``startupSeconds`` + one interval, declared events, a margin from the measured
residuals over that lead time; a jump, demand above what the ready replicas serve or p95 above the SLO is urgent:
the allocator adds capacity where it is ready soonest); then
``planner.allocate`` over every model and pool at once (they compete for the same private GPUs). A model whose
metrics are missing or stale keeps its allocation (and its GPUs: the allocator may not hand them to others); a
Prometheus that cannot answer freezes every allocation. Never scale toward the minimum on missing data.

Anti-flap memory is re-derived from the cluster after a restart or a leader hand-over: the replicas that run are
the starting target and count as a fresh recommendation, so the operator waits a full stabilisation window before
scaling down and does not burst into changes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from hybridrec_operator.api.models import ComputePool, ComputePoolSpec, RecModelDeploymentSpec
from hybridrec_operator.core.capacity_model import CapacityModel, PoolCapacity, contradicts_hint, headroom_for, hint_for, resolve
from hybridrec_operator.core.cost_types import (
    MISSING_GRACE_ROUNDS,
    Accounting,
    ClusterSnapshot,
    ControllerConfig,
    ControllerState,
    ModelMemory,
    ModelOutcome,
    ModelSnapshot,
    PoolEconomics,
    RoundResult,
    _rps,
)
from hybridrec_operator.core.costing import Money, SpendTracker, cost_per_1k_requests, model_lifecycle
from hybridrec_operator.core.forecast import Outlook, Sample, Variability, event_multiplier, lead_seconds, outlook
from hybridrec_operator.core.observation import DataState, ModelObservation, Observation
from hybridrec_operator.core.planner import ModelAllocation, ModelState, PoolState, admitted_pools, allocate


def _memory_for(state: ControllerState, snap: ModelSnapshot, currency: str) -> ModelMemory:
    mem = state.models.get(snap.key)
    if mem is None:
        mem = ModelMemory(capacity=CapacityModel.from_spec(snap.rmd.spec), spend=SpendTracker(currency))
        state.models[snap.key] = mem
    return mem


def learn_pool_capacities(mem: ModelMemory, spec: RecModelDeploymentSpec, obs: ModelObservation | None,
                          pools: Mapping[str, ComputePoolSpec], now: float) -> dict[str, PoolCapacity]:
    """Feed each (model, pool) learner the pool's own RPS per ready server and p95; resolve every pool's capacity.

    A learner whose hint no longer matches the spec (capacityHints or targetRpsPerReplica edited, the pool's GPU
    changed) starts again from the new hint: evidence gathered against the old one would be bounded by it.
    """
    for name, pool_spec in pools.items():
        learner = mem.pool_capacity.get(name)
        if learner is None or learner.hint != hint_for(spec, pool_spec) or learner.slo_ms != float(spec.slo.p95_latency_ms):
            learner = mem.pool_capacity[name] = CapacityModel.from_spec(spec, pool_spec)
        seen = obs.pools.get(name) if obs is not None else None
        if seen is None or seen.state != DataState.OK:
            continue
        ready = int(seen.ready_servers.value or 0)
        rate = seen.request_rate.value
        p95 = seen.p95_seconds.value * 1000.0 if seen.p95_seconds.value is not None else None
        learner.observe(now, rate / ready if ready > 0 and rate is not None else None, p95, ready)
    for gone in [p for p in mem.pool_capacity if p not in pools]:
        del mem.pool_capacity[gone]
    return {name: resolve(spec, pool_spec, mem.pool_capacity[name]) for name, pool_spec in pools.items()}


def newly_overridden(mem: ModelMemory, caps: Mapping[str, PoolCapacity]) -> tuple[tuple[str, float, float], ...]:
    """(pool, measured, hint) for pools whose measurement now contradicts the hint; each reported once until it
    agrees again (an event per transition, not per round)."""
    now_contradicted = {p for p, c in caps.items() if contradicts_hint(c)}
    new = tuple((p, caps[p].rps_per_replica, caps[p].hint) for p in sorted(now_contradicted - mem.overridden))
    mem.overridden = now_contradicted
    return new


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
    # Measured retraining spend (status.trainingSpend) counts into the lifecycle cost the ROI divides by.
    lifecycle = model_lifecycle(snap.rmd)
    roi = lifecycle.roi if lifecycle is not None else None
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
    state.reclaims.observe(now, snapshot.pool_nodes, snapshot.doomed_nodes)
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

    # Spot reclaims seen in the cluster price the pools that lose nodes (planner.spot_risk_per_hour); none seen:
    # None, so a spot pool carries the same prior as in the per-model placement.
    pools = [PoolState(p.name, p.spec, int(snapshot.capacity_gpus.get(p.name, 0)), state.reclaims.rate_per_hour(p.name) or None)
             for p in snapshot.pools]
    model_states: list[ModelState] = []
    facts: dict[str, tuple[tuple[bool, str, str], float | None, float | None, float | None]] = {}
    caps_of: dict[str, dict[str, PoolCapacity]] = {}
    overridden: dict[str, tuple[tuple[str, float, float], ...]] = {}
    doomed_of: dict[str, dict[str, int]] = {}
    for snap in snapshot.models:
        spec = snap.rmd.spec
        mem = _memory_for(state, snap, currency)
        obs = observation.get(snap.rmd.namespace, snap.rmd.name)
        admitted = {p.name: p.spec for p in admitted_pools(spec, pools)}
        caps = caps_of[snap.key] = learn_pool_capacities(mem, spec, obs, admitted, now)
        overridden[snap.key] = newly_overridden(mem, caps)
        verdict = judge(obs, None)
        demand = to_cover = p95_ms = None
        look: Outlook | None = None
        if verdict[0] and obs is not None and obs.request_rate.value is not None:
            demand = obs.request_rate.value
            p95_ms = obs.p95_seconds.value * 1000.0 if obs.p95_seconds.value is not None else None
            ready = int(obs.ready_servers.value or 0)
            mem.capacity.observe(now, demand / ready if ready > 0 else None, p95_ms, ready)
            mem.history.append(Sample(now, demand))
            while mem.history and mem.history[0].t < now - config.history_s:
                mem.history.popleft()
            lead = lead_seconds([p.startup_seconds for p in admitted.values()], config.interval_s)
            if mem.variability is None or mem.variability.lead != lead:
                mem.variability = Variability(lead=lead)  # a pool's start-up changed: rises over the old lead mislead
            # Declared events divided out: the margin measures the traffic's own noise, not the event the spec announced.
            mem.variability.observe(now, demand / event_multiplier(spec.scaling.schedule, now))
            # Doomed pods serve until they die, but not for long: a reclaim that leaves demand above what the others
            # serve is an overload now (urgent: the replacements go where they are ready soonest).
            live = _minus(snap.ready, snapshot.doomed_pods.get(snap.key, {}))
            served = sum(n * caps[p].rps_per_replica for p, n in live.items() if p in caps)
            look = outlook(list(mem.history), mem.variability, spec.scaling.schedule, now, lead, config.interval_s,
                           served_capacity=served)
            to_cover = look.demand
        holding = not verdict[0]
        if holding:
            hold_recommendation(state, snap, now)
        verdict = _with_grace(verdict, mem)
        facts[snap.key] = (verdict, demand, to_cover, p95_ms)
        # A held model keeps exactly what runs (no data, no decision), doomed pods included.
        doomed_of[snap.key] = {} if holding else dict(snapshot.doomed_pods.get(snap.key, {}))
        model_states.append(
            ModelState(
                key=snap.key,
                spec=spec,
                # None: the allocator holds this model and its GPUs. The outlook's margin travels as the headroom, so
                # the allocator knows how much of the demand is padding.
                demand_rps=None if holding or look is None or look.demand is None else look.demand / (1.0 + look.margin),
                # The reference is the spec's per-model figure; each pool's capacity is relative to it, so the
                # allocator fills the pool with the lowest cost per served request.
                rps_per_replica=spec.scaling.target_rps_per_replica,
                rps_per_pool={p: c.rps_per_replica for p, c in caps.items()},
                # Pods on nodes about to go do not count: their replacements start now, before they die.
                current=_minus(snap.current, doomed_of[snap.key]),
                pinned=spec.replicas,
                ready=_minus(snap.ready, doomed_of[snap.key]),
                p95_ms=p95_ms,
                headroom=look.margin if look is not None else headroom_for(p95_ms, float(spec.slo.p95_latency_ms)),
                # A jump beyond the margin, demand above what the ready replicas serve, or p95 above the SLO: add
                # capacity where it is ready soonest and move nothing this round.
                urgent=not holding and look is not None and (look.urgent or (p95_ms is not None and p95_ms > spec.slo.p95_latency_ms)),
                # stabilization_seconds stays None: the user's scaleDownStabilizationSeconds is honoured as declared.
                lead_seconds=lead_seconds([p.startup_seconds for p in admitted.values()], config.interval_s),
            )
        )
    if not model_states:
        return RoundResult(now, {}, None, 0.0), state
    # GPUs under doomed pods are no room for the replacements: they are on the nodes that go (the snapshot's
    # capacity counts every pod of ours as used-and-available). Without this, a replacement is planned on the very
    # pool that is being reclaimed and stays Pending while the pods it replaces die.
    lost = {p.name: 0 for p in snapshot.pools}
    for snap in snapshot.models:
        for p, n in doomed_of.get(snap.key, {}).items():
            if p in lost:
                lost[p] += n * snap.rmd.spec.resources.gpus
    pools = [PoolState(p.name, p.spec, max(0, p.capacity_gpus - lost[p.name]), p.reclaim_rate_per_hour) for p in pools]
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
        # The doomed pods stay in their Deployment's count until they die: lowering it now would let the ReplicaSet
        # pick a healthy pod to remove. The replacements come on top.
        doomed_here = doomed_of[snap.key]
        for p, n in doomed_here.items():
            if n > 0 and (targets.get(p, 0) > 0 or snap.current.get(p, 0) > 0):
                targets[p] = targets.get(p, 0) + min(n, snap.current.get(p, 0))
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
            message=alloc.reason + _doomed_note(doomed_here),
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
            pools={p: PoolEconomics(c.rps_per_replica, c.source, alloc.capacity_rps.get(p, 0.0),
                                    alloc.cost_per_1k_requests.get(p)) for p, c in caps_of[snap.key].items()},
            hint_overridden=overridden[snap.key],
        )
        mem.observed = observed
    return RoundResult(now, outcomes, allocation.solver, allocation.solve_seconds), state


def overloaded(snapshot: ClusterSnapshot, observation: Observation | None, last: RoundResult | None) -> list[str]:
    """Models overloaded now, judged between rounds (pure): p95 above the SLO, or demand above what the last round
    planned for them (the RPS its planned replicas serve). The loop runs a round at once when this is not empty,
    rather than waiting out the interval. Unknown is not overload: no data, no plan or a held model asks nothing."""
    if observation is None or last is None:
        return []
    hot = []
    for snap in snapshot.models:
        out = last.outcomes.get(snap.key)
        obs = observation.get(snap.rmd.namespace, snap.rmd.name)
        if out is None or not out.observed or obs is None or obs.state != DataState.OK:
            continue
        p95, demand = obs.p95_seconds.value, obs.request_rate.value
        planned = sum(e.capacity_rps for e in out.pools.values())
        if (p95 is not None and p95 * 1000.0 > snap.rmd.spec.slo.p95_latency_ms) or (
            demand is not None and planned > 0 and demand > planned
        ):
            hot.append(snap.key)
    return hot


def _minus(counts: Mapping[str, int], doomed: Mapping[str, int]) -> dict[str, int]:
    return {p: max(0, int(n) - int(doomed.get(p, 0))) for p, n in counts.items()}


def _doomed_note(doomed: Mapping[str, int]) -> str:
    gone = {p: n for p, n in sorted(doomed.items()) if n > 0}
    if not gone:
        return ""
    return "; replacing " + ", ".join(f"{n} on {p}" for p, n in gone.items()) + " (nodes reclaimed or NotReady)"


def _currency(snapshot: ClusterSnapshot) -> str:
    currencies = {p.spec.pricing.currency for p in snapshot.pools}
    return currencies.pop() if len(currencies) == 1 else "USD"
