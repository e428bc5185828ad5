"""What hybridrec's three Grafana dashboards show (cost overview, performance, placement), declared as data: each
panel's PromQL, unit, layout and tooltip. :mod:`hybridrec_local.dashboards` turns them into Grafana JSON.

Queries use only the metric names defined in ``hybridrec_operator/controller/metrics.py`` (operator) and
``hybridrec_server.metrics`` (model servers); ``tests/e2e/test_dashboard_queries.py`` runs every one against a real
Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Selectors, written once: every panel filters by the variables its metric carries.
_M = 'namespace=~"$namespace", model=~"$model"'
_MP = f'{_M}, pool=~"$pool"'
_REC = f'{_MP}, endpoint="recommend"'
_P = 'pool=~"$pool"'
_RATE = "$__rate_interval"

PanelKind = Literal["timeseries", "stat", "bargauge"]


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel; ``legend`` uses Grafana's ``{{label}}`` syntax."""

    expr: str
    legend: str
    cuda_only: bool = False


@dataclass(frozen=True)
class PanelSpec:
    """A panel: what it shows (queries), how (kind, unit, stacking) and a description shown in Grafana's tooltip."""

    title: str
    description: str
    queries: tuple[Query, ...]
    kind: PanelKind = "timeseries"
    unit: str = "short"
    stacked: bool = False
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    dashed: str = ""  # legend regex of series drawn dashed (targets such as the SLO or a budget)
    bars: bool = False
    minimum: float | None = None


@dataclass(frozen=True)
class DashboardSpec:
    """A dashboard: file name stem, stable uid (links and bookmarks survive upgrades), title and panels."""

    name: str
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...] = field(default_factory=tuple)


COST = DashboardSpec(
    name="cost-overview",
    uid="hybridrec-cost-overview",
    title="hybridrec / Cost overview",
    description="What hybridrec's models cost, by pool and tenancy, against their budgets and the value they bring.",
    panels=(
        PanelSpec(
            "Cost per hour by pool and tenancy",
            "Current cost rate of model replicas, stacked by pool; private (reserved) and public (spot, on-demand) pools "
            "side by side. Money is never summed across currencies.",
            (Query(f"sum by (pool, tenancy, currency) (hybridrec_cost_per_hour{{{_MP}}})", "{{pool}} ({{tenancy}}) {{currency}}/h"),),
            stacked=True,
            width=16,
        ),
        PanelSpec(
            "Cost per hour by tenancy",
            "Private versus public spend rate right now.",
            (Query(f"sum by (tenancy, currency) (hybridrec_cost_per_hour{{{_MP}}})", "{{tenancy}} {{currency}}/h"),),
            kind="stat",
            width=8,
        ),
        PanelSpec(
            "Budget used",
            "Hourly cost and projected month spend as a share of each model's budget (spec.budget). Above 100% the "
            "HybridRecBudgetExceeded / HybridRecBudgetProjectedOverrun alerts fire.",
            (Query(f"max by (namespace, model, window) (hybridrec_budget_utilization_ratio{{{_M}}})", "{{model}} ({{window}})"),),
            kind="bargauge",
            unit="percentunit",
            thresholds=((0.8, "orange"), (1.0, "red")),
            minimum=0,
        ),
        PanelSpec(
            "Spend vs budget",
            "Projected spend for the calendar month at the current rate (solid) against each model's budget (dashed).",
            (
                Query(f"sum by (namespace, model, currency) (hybridrec_projected_month_spend{{{_M}}})", "{{model}} projected ({{currency}})"),
                Query(f"max by (namespace, model, window, currency) (hybridrec_budget{{{_M}}})", "budget {{model}} per {{window}} ({{currency}})"),
            ),
            dashed="^budget .*",
        ),
        PanelSpec(
            "Projected month spend",
            "Spend projected for the calendar month at the current rate, per model.",
            (Query(f"sum by (namespace, model, currency) (hybridrec_projected_month_spend{{{_M}}})", "{{model}} ({{currency}})"),),
            kind="stat",
            width=8,
        ),
        PanelSpec(
            "Cost per 1k recommendations",
            "Serving cost of 1,000 recommendations at the current rate: falls as replicas fill up, rises when demand drops "
            "below the replicas' capacity.",
            (Query(f"max by (namespace, model, currency) (hybridrec_cost_per_1k_requests{{{_M}}})", "{{model}} ({{currency}})"),),
            width=8,
        ),
        PanelSpec(
            "ROI per model",
            "Lifecycle return on investment: business value (requests x CTR x CVR x value per conversion) divided by "
            "training + deployment + maintenance cost (spec.economics). Below 1 the model costs more than it returns.",
            (Query(f"max by (namespace, model) (hybridrec_roi_ratio{{{_M}}})", "{{model}}"),),
            kind="bargauge",
            unit="none",
            thresholds=((1.0, "green"),),
            width=8,
        ),
        PanelSpec(
            "Spend since operator start",
            "Money spent on each model's GPUs, integrated from the cost per hour since the operator started.",
            (Query(f"sum by (namespace, model, currency) (hybridrec_spend_total{{{_M}}})", "{{model}} ({{currency}})"),),
            width=24,
        ),
        PanelSpec(
            "Training vs serving spend",
            "What retraining cost (dashed: each kept run's measured GPU-hours x its pool's price, summed per model; "
            "docs/training.md) next to what serving cost since the operator started (solid). The model's lifetime "
            "training spend, pruned runs included, is its status.trainingSpend.",
            (
                Query(f"sum by (namespace, model, currency) (hybridrec_spend_total{{{_M}}})", "{{model}} serving ({{currency}})"),
                Query(f"sum by (namespace, model, currency) (hybridrec_training_cost{{{_M}}})", "{{model}} training ({{currency}})"),
            ),
            dashed=".* training .*",
            width=24,
        ),
    ),
)

PERFORMANCE = DashboardSpec(
    name="performance",
    uid="hybridrec-performance",
    title="hybridrec / Performance",
    description="Latency against the SLO, traffic, replicas and batching of the model servers.",
    panels=(
        PanelSpec(
            "p95 latency vs SLO",
            "p95 of /v1/recommend as the servers measure it (solid) against spec.slo.p95LatencyMs (dashed).",
            (
                Query(
                    f"histogram_quantile(0.95, sum by (namespace, model, le) "
                    f"(rate(hybridrec_server_request_duration_seconds_bucket{{{_REC}}}[{_RATE}])))",
                    "{{model}} p95",
                ),
                Query(f"max by (namespace, model) (hybridrec_slo_p95_seconds{{{_M}}})", "SLO {{model}}"),
            ),
            unit="s",
            dashed="^SLO .*",
            width=16,
        ),
        PanelSpec(
            "SLO attained",
            "1 when the controller sees p95 within the SLO, 0 when not.",
            (Query(f"min by (namespace, model) (hybridrec_slo_attained{{{_M}}})", "{{model}}"),),
            kind="stat",
            unit="bool_yes_no",
            thresholds=((1.0, "green"),),
            width=8,
        ),
        PanelSpec(
            "Requests per second",
            "Served recommendation requests per second (solid) and the demand the allocator provisions for, forecast "
            "and declared events included (dashed).",
            (
                Query(f"sum by (namespace, model) (rate(hybridrec_server_requests_total{{{_REC}}}[{_RATE}]))", "{{model}}"),
                Query(f"max by (namespace, model) (hybridrec_forecast_rps{{{_M}}})", "forecast {{model}}"),
            ),
            unit="reqps",
            dashed="^forecast .*",
        ),
        PanelSpec(
            "Error ratio",
            "Share of /v1/recommend requests not answered with 2xx (shed with 429, or failed with 5xx).",
            (
                Query(
                    f"1 - sum by (namespace, model) (rate(hybridrec_server_requests_total{{{_REC}, code=~\"2..\"}}[{_RATE}])) "
                    f"/ sum by (namespace, model) (rate(hybridrec_server_requests_total{{{_REC}}}[{_RATE}]))",
                    "{{model}}",
                ),
            ),
            unit="percentunit",
            minimum=0,
        ),
        PanelSpec(
            "Ready replicas by pool",
            "Model server pods that are loaded, warmed up and not draining, stacked by pool.",
            (Query(f"sum by (pool, model) (hybridrec_server_ready{{{_MP}}})", "{{model}} on {{pool}}"),),
            stacked=True,
        ),
        PanelSpec(
            "Batch size",
            "Requests per forward pass (dynamic batching): median and p95. Larger batches use the GPU better but wait "
            "longer (serving.maxBatchDelayMs).",
            (
                Query(
                    f"histogram_quantile(0.5, sum by (namespace, model, le) (rate(hybridrec_server_batch_size_bucket{{{_MP}}}[{_RATE}])))",
                    "{{model}} median",
                ),
                Query(
                    f"histogram_quantile(0.95, sum by (namespace, model, le) (rate(hybridrec_server_batch_size_bucket{{{_MP}}}[{_RATE}])))",
                    "{{model}} p95",
                ),
            ),
        ),
        PanelSpec(
            "Queue depth and in-flight requests",
            "Requests waiting for a batch slot and requests being handled; a growing queue precedes SLO misses.",
            (
                Query(f"sum by (namespace, model) (hybridrec_server_queue_depth{{{_MP}}})", "{{model}} queued"),
                Query(f"sum by (namespace, model) (hybridrec_server_inflight_requests{{{_MP}}})", "{{model}} in flight"),
            ),
        ),
        PanelSpec(
            "GPU utilisation",
            "Device busy fraction reported by servers on CUDA (absent on CPU-only servers) and the share of each "
            "pool's allocatable GPUs that hybridrec pods request.",
            (
                Query(f"avg by (model, pool) (hybridrec_server_gpu_utilization_ratio{{{_MP}}})", "{{model}} on {{pool}} busy", cuda_only=True),
                Query(
                    f'sum by (pool) (hybridrec_pool_gpus{{{_P}, state="used"}}) / sum by (pool) (hybridrec_pool_gpus{{{_P}, state="allocatable"}})',
                    "{{pool}} allocated",
                ),
            ),
            unit="percentunit",
            minimum=0,
        ),
        PanelSpec(
            "Popular-items fallback rate",
            "Responses served from popular items because the user is unknown to the model.",
            (Query(f"sum by (namespace, model) (rate(hybridrec_server_fallback_total{{{_MP}}}[{_RATE}]))", "{{model}}"),),
            unit="reqps",
            width=24,
        ),
    ),
)

PLACEMENT = DashboardSpec(
    name="placement",
    uid="hybridrec-placement",
    title="hybridrec / Placement",
    description="Where replicas run by tenancy and data sensitivity, what could not be placed, and why it changed.",
    panels=(
        PanelSpec(
            "Replicas by tenancy and sensitivity",
            "Desired replicas stacked by pool tenancy and data class: confidential and restricted data only ever "
            "appears on private pools.",
            (Query(f'sum by (tenancy, sensitivity) (hybridrec_replicas{{{_MP}, state="desired"}})', "{{sensitivity}} on {{tenancy}}"),),
            stacked=True,
        ),
        PanelSpec(
            "Replicas by model and pool",
            "Desired and ready replicas of each model per pool.",
            (Query(f"sum by (model, pool, state) (hybridrec_replicas{{{_MP}}})", "{{model}} on {{pool}} ({{state}})"),),
        ),
        PanelSpec(
            "Capacity shortfall",
            "Replicas a model wants but that no allowed pool can place. For confidential and restricted data this pages "
            "(HybridRecSensitiveCapacityShortfall): it cannot burst to public pools.",
            (Query(f"max by (namespace, model, sensitivity) (hybridrec_capacity_shortfall_replicas{{{_M}}})", "{{model}} ({{sensitivity}})"),),
            thresholds=((1.0, "red"),),
            minimum=0,
        ),
        PanelSpec(
            "Pool GPUs",
            "GPUs per pool: used by hybridrec pods, free, and the quota (spec.maxGpus, dashed).",
            (
                Query(f'sum by (pool, state) (hybridrec_pool_gpus{{{_P}, state=~"used|free"}})', "{{pool}} {{state}}"),
                Query(f'sum by (pool) (hybridrec_pool_gpus{{{_P}, state="quota"}})', "quota {{pool}}"),
            ),
            dashed="^quota .*",
        ),
        PanelSpec(
            "Decisions timeline",
            "Scaling and placement decisions per interval, by direction and reason (demand, SLO, budget, capacity, "
            "scheduled events).",
            (
                Query(
                    f"sum by (model, direction, reason) (increase(hybridrec_decisions_total{{{_M}}}[{_RATE}]))",
                    "{{model}} {{direction}} ({{reason}})",
                ),
            ),
            bars=True,
            width=24,
        ),
        PanelSpec(
            "Controller data freshness",
            "1 when the cost controller has fresh Prometheus metrics for the model; 0 means it holds replicas as they "
            "are (HybridRecControllerDataStale).",
            (Query(f"min by (namespace, model, reason) (hybridrec_observed{{{_M}}})", "{{model}} ({{reason}})"),),
            minimum=0,
        ),
        PanelSpec(
            "Reconciles",
            "Reconcile p95 duration by kind; failures are in HybridRecReconcileErrors.",
            (
                Query(
                    f"histogram_quantile(0.95, sum by (kind, le) (rate(hybridrec_reconcile_duration_seconds_bucket[{_RATE}])))",
                    "{{kind}} p95",
                ),
            ),
            unit="s",
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (COST, PERFORMANCE, PLACEMENT)
