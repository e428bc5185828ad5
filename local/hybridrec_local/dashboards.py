"""Grafana dashboards for hybridrec, built from code with Grafana Labs' ``grafana-foundation-sdk``.

Three dashboards (cost overview, performance, placement) are declared as data in
:mod:`hybridrec_local.dashboard_specs` and rendered here to JSON under ``helm/hybridrec/dashboards/``; the chart
ships each as a ConfigMap labelled ``grafana_dashboard: "1"``.

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
from pathlib import Path
from typing import Any

from hybridrec_local.dashboard_specs import DASHBOARDS, DashboardSpec, PanelSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / "helm" / "hybridrec" / "dashboards"

#: The dashboards' query variables, in display order; panels filter with ``label=~"$name"``.
TEMPLATE_VARIABLES: tuple[str, ...] = ("namespace", "model", "pool")

#: Values substituted for Grafana's built-in interval variables when a query runs outside Grafana.
BUILTIN_DEFAULTS: Mapping[str, str] = {"__rate_interval": "2m", "__interval": "30s", "__range": "1h"}

#: Metrics that only model servers running on CUDA export (see ``hybridrec_server.metrics.GPU_METRIC_NAMES``).
CUDA_ONLY_METRICS: frozenset[str] = frozenset({"hybridrec_server_gpu_utilization_ratio", "hybridrec_server_gpu_memory_used_bytes"})

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
