"""Grafana dashboards for hybridrec, built from code with Grafana Labs' ``grafana-foundation-sdk``.

Three dashboards (cost overview, performance, placement) are declared as data below and rendered to JSON under
``helm/hybridrec/dashboards/``; the chart ships each as a ConfigMap labelled ``grafana_dashboard: "1"``. Queries use
only the metric names defined in ``metrics.py`` (operator) and ``hybridrec_server.metrics`` (model servers).

Why the SDK instead of hand-written dicts: its typed builders refuse an option Grafana does not know at build time,
and it follows Grafana's schema (schemaVersion 41 for the pinned Grafana 11.6 build) as Grafana Labs changes it.
The package encodes the Grafana version in its PyPI version after an epoch, so it is pinned exactly
(``grafana-foundation-sdk==1769699379!11.6.0``); an unpinned install resolves to the Grafana 10.1 build.

``python -m hybridrec_local.dashboards [DIR]`` writes the JSON; ``--check`` exits 1 when the committed JSON
differs from what the code generates. :func:`all_panel_queries` and :func:`render_query` let a test evaluate every
panel query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / "helm" / "hybridrec" / "dashboards"

#: The dashboards' query variables, in display order; panels filter with ``label=~"$name"``.
TEMPLATE_VARIABLES: tuple[str, ...] = ("namespace", "model", "pool")

#: Values substituted for Grafana's built-in interval variables when a query runs outside Grafana.
BUILTIN_DEFAULTS: Mapping[str, str] = {"__rate_interval": "2m", "__interval": "30s", "__range": "1h"}

#: Metrics that only model servers running on CUDA export (see ``hybridrec_server.metrics.GPU_METRIC_NAMES``).
CUDA_ONLY_METRICS: frozenset[str] = frozenset({"hybridrec_server_gpu_utilization_ratio", "hybridrec_server_gpu_memory_used_bytes"})

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


# --------------------------------------------------------------------------------------------------- dashboards

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


# ------------------------------------------------------------------------------------------------ pure helpers

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def render_query(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana variables (``$x``, ``${x}``, ``${x:fmt}``) replaced, so Prometheus can run it.

    Grafana's built-in intervals default to :data:`BUILTIN_DEFAULTS`; an unknown variable raises ``KeyError``.
    """
    values = {**BUILTIN_DEFAULTS, **variables}

    def substitute(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return _VAR.sub(substitute, expr)


def metric_names(expr: str) -> set[str]:
    """hybridrec metric names a PromQL expression reads (series names, not labels or functions)."""
    return set(re.findall(r"\b(hybridrec_[a-z0-9_]+)\b", expr))


def all_panel_queries(*, cuda: bool = False) -> list[tuple[str, str, str]]:
    """``(dashboard name, panel title, expr)`` for every panel query; ``cuda=False`` leaves out CUDA-only metrics."""
    return [
        (dash.name, panel.title, query.expr)
        for dash in DASHBOARDS
        for panel in dash.panels
        for query in panel.queries
        if cuda or not query.cuda_only
    ]


def _layout(panels: Sequence[PanelSpec]) -> list[tuple[int, int]]:
    """Top-left (x, y) of each panel, filling 24-unit rows left to right."""
    positions, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        positions.append((x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return positions


# ---------------------------------------------------------------------------------------------------- building


def _panel(spec: PanelSpec, position: tuple[int, int], panel_id: int) -> Any:
    """The SDK builder of one panel."""
    from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, timeseries
    from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm

    builder: Any
    if spec.kind == "stat":
        builder = stat.Panel().reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])).graph_mode(cm.BigValueGraphMode.AREA)
    elif spec.kind == "bargauge":
        builder = (
            bargauge.Panel()
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
            .orientation(cm.VizOrientation.HORIZONTAL)
        )
    else:
        builder = (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(25 if spec.stacked or spec.bars else 10)
            .legend(common.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE).placement(cm.LegendPlacement.BOTTOM)
                    .show_legend(True).calcs(["lastNotNull", "max"]))
            .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
        )
        if spec.stacked:
            builder = builder.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        if spec.bars:
            builder = builder.draw_style(cm.GraphDrawStyle.BARS).stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        if spec.dashed:
            builder = builder.override_by_regexp(
                spec.dashed,
                [dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                 dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                 dm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"})],
            )
    steps = [dm.Threshold(value=None, color=_base_color(spec.thresholds))]
    steps += [dm.Threshold(value=value, color=color) for value, color in spec.thresholds]
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(_datasource())
        .unit(spec.unit)
        .height(spec.height)
        .span(spec.width)
        .grid_pos(dm.GridPos(h=spec.height, w=spec.width, x=position[0], y=position[1]))
        .thresholds(ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps))
    )
    if spec.minimum is not None:
        builder = builder.min(spec.minimum)
    for index, query in enumerate(spec.queries):
        builder = builder.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + index)).range().datasource(_datasource())
        )
    return builder


def _base_color(thresholds: Sequence[tuple[float, str]]) -> str:
    """Colour below the first threshold: red under a "good from here" step, green under a warning step."""
    if not thresholds:
        return "text"
    return "red" if thresholds[0][1] == "green" else "green"


def _datasource() -> Any:
    """The datasource every panel and variable uses: the dashboard's ``$datasource`` variable, never a fixed uid."""
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid="${datasource}")


def _variables() -> list[Any]:
    """Datasource picker and the namespace/model/pool query variables (multi-select, "All" = ``.*``)."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

    queries = {
        "namespace": ("Namespace", "label_values(hybridrec_replicas, namespace)"),
        "model": ("Model", 'label_values(hybridrec_replicas{namespace=~"$namespace"}, model)'),
        "pool": ("Pool", "label_values(hybridrec_pool_gpus, pool)"),
    }
    out: list[Any] = [dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")]
    for name in TEMPLATE_VARIABLES:
        label, query = queries[name]
        out.append(
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(_datasource())
            .query(query)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .sort(VariableSort.ALPHABETICAL_ASC)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    return out


def build(spec: DashboardSpec) -> dict[str, Any]:
    """One dashboard as Grafana JSON (a dict)."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

    builder = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["hybridrec"])
        .editable()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    # Grafana's built-in annotation query; without an annotations list the dashboard fails to load in some versions.
    builder = builder.annotation(
        dashboard.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )
    for variable in _variables():
        builder = builder.with_variable(variable)
    for other in DASHBOARDS:
        if other.uid != spec.uid:
            builder = builder.link(dashboard.DashboardLink(other.title).type("link").url(f"/d/{other.uid}").keep_time(True).include_vars(True))
    for index, (panel, position) in enumerate(zip(spec.panels, _layout(spec.panels), strict=True), start=1):
        builder = builder.with_panel(_panel(panel, position, index))
    result: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    return result


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard (stable: sorted keys, 2-space indent, trailing newline)."""
    return {f"{spec.name}.json": json.dumps(build(spec), indent=2, sort_keys=True) + "\n" for spec in DASHBOARDS}


def drift(directory: Path) -> list[str]:
    """Names of dashboard files in ``directory`` that are missing or differ from the generated JSON."""
    return [name for name, text in render_all().items() if not (directory / name).is_file() or (directory / name).read_text() != text]


def write(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``[--check] [DIR]``: write the dashboards, or with ``--check`` report drift and exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    directory = Path(args[0]) if args else DEFAULT_DIR
    if check:
        stale = drift(directory)
        if stale:
            print(f"dashboards out of date in {directory}: {', '.join(stale)}; run `python -m hybridrec_local.dashboards`", file=sys.stderr)
            return 1
        return 0
    for path in write(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
