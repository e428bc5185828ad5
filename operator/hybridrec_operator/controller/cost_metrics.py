"""The cost controller's per-model metrics: values computed from a round's outcome, published every round, and
removed when they no longer apply (a reason that changed, a budget that was removed, a deleted model), so
dashboards never show a value that is no longer true."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from hybridrec_operator.api.models import RecModelDeployment
from hybridrec_operator.controller import metrics as m
from hybridrec_operator.core.cost_types import ClusterSnapshot, ModelOutcome, RoundResult


# Replicas, cost per hour and shortfall per pool are published by the reconcile (runtime.py) from the plan it
# applies (the same path as placement); publishing them here too would give two writers to one series.
MODEL_GAUGES = (m.PROJECTED_MONTH_SPEND, m.BUDGET, m.BUDGET_UTILIZATION, m.COST_PER_1K_REQUESTS, m.ROI, m.SLO_TARGET,
                m.SLO_ATTAINED, m.DEMAND, m.FORECAST, m.WANTED, m.OBSERVED, m.POOL_CAPACITY, m.POOL_RPS_PER_REPLICA,
                m.POOL_COST_PER_1K_REQUESTS)


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
    if out.observed and out.wanted is not None:
        values[m.WANTED][(ns, name)] = out.wanted
    values[m.OBSERVED][(ns, name, out.observed_reason)] = 1.0 if out.observed else 0.0
    # Per admitted pool: what one replica serves there and where that figure comes from, what the planned replicas
    # serve, and the price of 1,000 requests there (the allocator's ranking, shown).
    for pool, econ in out.pools.items():
        values[m.POOL_RPS_PER_REPLICA][(ns, name, pool, econ.source)] = econ.rps_per_replica
        values[m.POOL_CAPACITY][(ns, name, pool, econ.source)] = econ.capacity_rps
        if econ.cost_per_1k is not None and math.isfinite(econ.cost_per_1k):
            values[m.POOL_COST_PER_1K_REQUESTS][(ns, name, pool, acc.currency)] = econ.cost_per_1k
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
