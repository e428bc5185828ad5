"""The demo report: a recorded timeline in, an HTML page with PNG plots out.

:func:`write_report` writes ``index.html`` + PNGs + ``timeline.json`` (+ ``retraining.json``). The figures it shows
come from :mod:`hybridrec_local.summary`; the data from :mod:`hybridrec_local.timeline`; the Retraining section from
:mod:`hybridrec_local.report_retraining`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hybridrec_local.report_retraining import RETRAINING_FILE, RetrainingRecord, render_section
from hybridrec_local.report_retraining import summary_line as retraining_line
from hybridrec_local.summary import (
    clock,
    money,
    peak_provisioning_spend,
    placement_violations,
    simulated_hours,
    slo_attainment,
    spend_by_model,
    spend_by_pool,
    summary_lines,
)
from hybridrec_local.timeline import TIMELINE_FILE, Timeline

HTML_FILE = "index.html"
PLOTS = {
    "cost": "cost_by_pool.png",
    "replicas": "replicas_by_pool.png",
    "latency": "p95_vs_slo.png",
    "traffic": "traffic.png",
}
# Keep PNGs small (they are looked at in a browser, never committed): ~40-90 KB each at this size.
PLOT_DPI = 80


# ------------------------------------------------------------------------------------------------- series


def pool_cost_series(timeline: Timeline) -> dict[str, list[float]]:
    """$/h per pool at each sample (summed over models)."""
    return {
        p.name: [sum(ms.cost_by_pool.get(p.name, 0.0) for ms in s.models.values()) for s in timeline.samples]
        for p in timeline.pools
    }


def model_pool_replicas(timeline: Timeline, model: str) -> dict[str, list[int]]:
    """Running replicas of ``model`` per pool at each sample."""
    return {
        p.name: [s.models[model].replicas_by_pool.get(p.name, 0) if model in s.models else 0 for s in timeline.samples]
        for p in timeline.pools
    }


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


# ------------------------------------------------------------------------------------------------- plotting


def _pool_colors(timeline: Timeline) -> dict[str, str]:
    """Private pools in blues/greens, public pools in oranges/reds, stable across plots."""
    private = ["#1f4e79", "#2e8b57", "#4a7dbf", "#6aa84f"]
    public = ["#e69138", "#cc0000", "#f1c232", "#a64d79"]
    colors: dict[str, str] = {}
    used = {"private": 0, "public": 0}
    for p in timeline.pools:
        kind = "public" if p.tenancy == "public" else "private"
        palette = public if kind == "public" else private
        colors[p.name] = palette[used[kind] % len(palette)]
        used[kind] += 1
    return colors


def _finish_model_grid(fig: Any, axes: Any, handles: list[Any], labels: list[str], title: str, path: Path) -> None:
    """Shared legend on top, time axis label, title; save and free the figure (one row of axes per model)."""
    import matplotlib.pyplot as plt

    fig.legend(handles, labels, loc="upper center", fontsize=7, ncols=len(labels), bbox_to_anchor=(0.5, 0.96), frameon=False)
    axes[-1, 0].set_xlabel("simulated time of day")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _decorate(ax: Any, timeline: Timeline, *, integer_y: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

    sale = timeline.sale
    if sale is not None:
        # Behind the data: the sale window is context, not a series.
        ax.axvspan(sale.start_hour, sale.end_hour, color="#ffd966", alpha=0.45, lw=0, label="flash sale", zorder=0)
    if integer_y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MultipleLocator(4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: clock(x)))
    ax.grid(alpha=0.3)


def _plot_cost(timeline: Timeline, path: Path) -> None:
    import matplotlib.pyplot as plt

    hours = [s.sim_hour for s in timeline.samples]
    series = pool_cost_series(timeline)
    colors = _pool_colors(timeline)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    names = [p.name for p in timeline.pools]
    labels = [f"{n} ({timeline.pool(n).tenancy})" for n in names]  # type: ignore[union-attr]
    ax.stackplot(hours, [series[n] for n in names], labels=labels, colors=[colors[n] for n in names], step="post", alpha=0.85)
    budgets = [m.budget_per_hour for m in timeline.models if m.budget_per_hour is not None]
    if budgets and len(budgets) == len(timeline.models):
        ax.axhline(sum(budgets), color="black", ls="--", lw=1, label="sum of hourly budgets")
    _decorate(ax, timeline)
    ax.set_ylabel(f"cost ({timeline.currency}/h)")
    ax.set_xlabel("simulated time of day")
    ax.set_title("Cost per hour by pool")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=7, ncols=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _plot_replicas(timeline: Timeline, path: Path) -> None:
    import matplotlib.pyplot as plt

    hours = [s.sim_hour for s in timeline.samples]
    colors = _pool_colors(timeline)
    names = [p.name for p in timeline.pools]
    fig, axes = plt.subplots(len(timeline.models), 1, figsize=(8, 1.9 * len(timeline.models) + 0.6), sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], timeline.models):
        series = model_pool_replicas(timeline, m.name)
        ax.stackplot(hours, [series[n] for n in names], labels=names, colors=[colors[n] for n in names], step="post", alpha=0.85)
        _decorate(ax, timeline, integer_y=True)
        ax.set_ylabel("replicas")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{m.name} ({m.sensitivity})", fontsize=9, loc="left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    _finish_model_grid(fig, axes, handles, labels, "Running replicas per pool (private: blue/green, public: orange/red)", path)


def _plot_latency(timeline: Timeline, path: Path) -> None:
    import matplotlib.pyplot as plt

    hours = [s.sim_hour for s in timeline.samples]
    fig, axes = plt.subplots(len(timeline.models), 1, figsize=(8, 1.9 * len(timeline.models) + 0.6), sharex=True, squeeze=False)
    for ax, m in zip(axes[:, 0], timeline.models):
        server = [_nan(s.models[m.name].p95_ms) if m.name in s.models else math.nan for s in timeline.samples]
        client = [_nan(s.models[m.name].client_p95_ms) if m.name in s.models else math.nan for s in timeline.samples]
        ax.plot(hours, server, color="#1f4e79", lw=1.4, label="p95 (server, Prometheus)")
        ax.plot(hours, client, color="#999999", lw=1, ls=":", label="p95 (client)")
        ax.axhline(m.slo_p95_ms, color="#cc0000", ls="--", lw=1, label=f"SLO {m.slo_p95_ms:g} ms")
        _decorate(ax, timeline)
        ax.set_ylabel("ms")
        seen = [v for v in server + client if math.isfinite(v)]
        ax.set_ylim(0, max([m.slo_p95_ms * 1.4, *(v * 1.1 for v in seen)]))
        ax.set_title(f"{m.name} (SLO {m.slo_p95_ms:g} ms)", fontsize=9, loc="left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    labels = [("SLO" if label.startswith("SLO") else label) for label in labels]
    _finish_model_grid(fig, axes, handles, labels, "p95 latency vs SLO", path)


def _plot_traffic(timeline: Timeline, path: Path) -> None:
    import matplotlib.pyplot as plt

    hours = [s.sim_hour for s in timeline.samples]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    palette = ["#1f4e79", "#e69138", "#2e8b57", "#a64d79"]
    for color, m in zip(palette * 4, timeline.models):
        offered = [s.models[m.name].offered_rps if m.name in s.models else math.nan for s in timeline.samples]
        served = [s.models[m.name].served_rps if m.name in s.models else math.nan for s in timeline.samples]
        ax.plot(hours, offered, color=color, lw=1, ls="--", label=f"{m.name} offered")
        ax.plot(hours, served, color=color, lw=1.4, label=f"{m.name} served")
    _decorate(ax, timeline)
    ax.set_ylabel("requests/s")
    ax.set_xlabel("simulated time of day")
    ax.set_title("Traffic: a compressed day with a flash sale")
    ax.legend(loc="upper left", fontsize=7, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------- HTML

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hybridrec demo report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;width:100%;font-size:13px;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2e7d32;font-weight:600} .bad{color:#c62828;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:.5em 0} pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:12px}
ul.summary li{margin:.25em 0}
</style></head><body>
<h1>hybridrec demo report</h1>
<p class="sub">Started {{ tl.started_at }} &middot; one simulated day ({{ "%.0f"|format(tl.real_seconds) }} s real time) &middot; {{ tl.samples|length }} observations</p>

<h2>What happened</h2>
<ul class="summary">{% for line in summary %}<li>{{ line }}</li>{% endfor %}</ul>
<p>Placement rule check: {% if violations %}<span class="bad">{{ violations|length }} violation(s)</span>{% else %}<span class="ok">no replica ever ran on a pool its data class forbids</span>{% endif %}.</p>

<h2>Models</h2>
<table><tr><th>model</th><th>data class</th><th>public burst</th><th>p95 SLO</th><th>within SLO</th><th>spend</th><th>budget for the period</th><th>peak capacity all day</th></tr>
{% for m in tl.models %}<tr><td>{{ m.name }}</td><td>{{ m.sensitivity }}</td><td>{{ "yes" if m.allow_public_burst else "no" }}</td>
<td class="num">{{ "%g"|format(m.slo_p95_ms) }} ms</td><td class="num">{{ slo[m.name] }}</td><td class="num">{{ spend[m.name] }}</td>
<td class="num">{{ budget[m.name] }}</td><td class="num">{{ static[m.name] }}</td></tr>{% endfor %}
</table>

<h2>Pools</h2>
<table><tr><th>pool</th><th>tenancy</th><th>capacity type</th><th>price</th><th>spend</th></tr>
{% for p in tl.pools %}<tr><td>{{ p.name }}</td><td>{{ p.tenancy }}</td><td>{{ p.capacity_type }}</td>
<td class="num">{{ "%.2f"|format(p.price_per_gpu_hour) }} {{ p.currency }}/GPU-h</td><td class="num">{{ pool_spend[p.name] }}</td></tr>{% endfor %}
</table>

<h2>Cost by pool</h2><img src="{{ plots.cost }}" alt="cost per hour by pool over the simulated day">
<h2>Replicas per pool</h2><img src="{{ plots.replicas }}" alt="running replicas per pool and model">
<h2>p95 latency vs SLO</h2><img src="{{ plots.latency }}" alt="p95 latency against the SLO per model">
<h2>Traffic</h2><img src="{{ plots.traffic }}" alt="offered and served requests per second">

{{ retraining_html }}
<h2>Decisions taken ({{ tl.decisions|length }})</h2>
{% if tl.decisions %}<table><tr><th>sim time</th><th>real +s</th><th>model</th><th>trigger</th><th>decision</th></tr>
{% for d in tl.decisions %}<tr><td>{{ clock(d.sim_hour) }}</td><td class="num">{{ "%.0f"|format(d.t) }}</td><td>{{ d.model }}</td><td>{{ d.trigger }}</td><td>{{ d.message }}</td></tr>{% endfor %}
</table>{% else %}<p>The operator recorded no decisions.</p>{% endif %}

{% if violations %}<h2 class="bad">Placement violations</h2><table><tr><th>sim time</th><th>model</th><th>pool</th><th>replicas</th><th>rule</th></tr>
{% for v in violations %}<tr><td>{{ clock(v.sim_hour) }}</td><td>{{ v.model }}</td><td>{{ v.pool }}</td><td class="num">{{ v.replicas }}</td><td>{{ v.reason }}</td></tr>{% endfor %}</table>{% endif %}

{% if tl.notes %}<h2>Notes</h2><ul>{% for n in tl.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% if tl.kubectl_get_rmd %}<h2>kubectl get rmd -A</h2><pre>{{ tl.kubectl_get_rmd }}</pre>{% endif %}
<p class="sub">Raw data: <a href="{{ timeline_file }}">{{ timeline_file }}</a></p>
</body></html>
"""


def render_html(timeline: Timeline, plots: dict[str, str], retraining: RetrainingRecord | None = None) -> str:
    """The report page (autoescaped: model names and operator messages are data, not markup); with ``retraining``,
    its "Retraining" section."""
    from jinja2 import Environment
    from markupsafe import Markup

    cur = timeline.currency
    hours = simulated_hours(timeline)
    spend = spend_by_model(timeline)
    static = peak_provisioning_spend(timeline)
    slo = {name: (f"{ok}/{total}" if total else "no data") for name, (ok, total) in slo_attainment(timeline).items()}
    budget = {
        m.name: money(m.budget_per_hour * hours, m.budget_currency) if m.budget_per_hour is not None else "none"
        for m in timeline.models
    }
    env = Environment(autoescape=True)
    env.globals["clock"] = clock
    return env.from_string(_TEMPLATE).render(
        tl=timeline,
        summary=summary_lines(timeline) + ([retraining_line(retraining)] if retraining is not None else []),
        violations=placement_violations(timeline),
        spend={k: money(v, cur) for k, v in spend.items()},
        static={k: money(v, cur) for k, v in static.items()},
        pool_spend={k: money(v, cur) for k, v in spend_by_pool(timeline).items()},
        slo=slo,
        budget=budget,
        plots=plots,
        timeline_file=TIMELINE_FILE,
        # Rendered autoescaped by its own template; marked safe here so it is not escaped twice.
        retraining_html=Markup(render_section(retraining, timeline.pools)) if retraining is not None else "",
    )


def write_report(timeline: Timeline, out_dir: Path, retraining: RetrainingRecord | None = None) -> Path:
    """Write ``timeline.json`` (and ``retraining.json`` with ``retraining``), the PNG plots and ``index.html`` into
    ``out_dir``; return the HTML path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the demo runs in terminals and CI
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TIMELINE_FILE).write_text(timeline.to_json())
    if retraining is not None:
        (out_dir / RETRAINING_FILE).write_text(retraining.to_json())
    _plot_cost(timeline, out_dir / PLOTS["cost"])
    _plot_replicas(timeline, out_dir / PLOTS["replicas"])
    _plot_latency(timeline, out_dir / PLOTS["latency"])
    _plot_traffic(timeline, out_dir / PLOTS["traffic"])
    html = out_dir / HTML_FILE
    html.write_text(render_html(timeline, dict(PLOTS), retraining))
    return html
