"""The demo report: a recorded timeline in, an HTML page with PNG plots out.

``hybridrec demo run`` records a :class:`Timeline` (what it observed every few seconds: offered and served traffic,
p95 from Prometheus, running replicas per pool from the real pods, $/h from the RecModelDeployment status, and the
decisions the operator took). :func:`write_report` turns it into ``index.html`` + PNGs + ``timeline.json``.

Everything except :func:`write_report` (and the plotting it calls) is pure, so the summary numbers are unit-tested
on hand-made timelines. Money always carries its currency code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridrec_operator.api.models import Sensitivity, parse_pool
from hybridrec_operator.core.sensitivity import pool_admits

TIMELINE_FILE = "timeline.json"
HTML_FILE = "index.html"
PLOTS = {
    "cost": "cost_by_pool.png",
    "replicas": "replicas_by_pool.png",
    "latency": "p95_vs_slo.png",
    "traffic": "traffic.png",
}
# Keep PNGs small (they are looked at in a browser, never committed): ~40-90 KB each at this size.
PLOT_DPI = 80

# --------------------------------------------------------------------------------------------------- timeline


@dataclass
class PoolInfo:
    """A ComputePool as applied by the demo; ``spec`` is its wire form, so the placement check can re-parse it."""

    name: str
    tenancy: str
    price_per_gpu_hour: float
    currency: str
    capacity_type: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """A RecModelDeployment as applied by the demo."""

    name: str
    namespace: str
    sensitivity: str
    slo_p95_ms: float
    allow_public_burst: bool = False
    budget_per_hour: float | None = None
    budget_currency: str = "USD"
    gpus_per_replica: int = 1


@dataclass
class ModelSample:
    """What was observed for one model at one instant."""

    offered_rps: float = 0.0
    served_rps: float = 0.0
    error_rps: float = 0.0
    p95_ms: float | None = None  # server side, from Prometheus
    client_p95_ms: float | None = None  # measured by the load generator
    replicas_by_pool: dict[str, int] = field(default_factory=dict)  # running pods, from the API server
    desired_by_pool: dict[str, int] = field(default_factory=dict)  # status.placements[].desired
    cost_per_hour: float = 0.0
    cost_by_pool: dict[str, float] = field(default_factory=dict)


@dataclass
class Sample:
    t: float  # real seconds since the traffic started
    sim_hour: float  # simulated clock (may pass 24: the day wraps)
    models: dict[str, ModelSample] = field(default_factory=dict)


@dataclass
class DecisionRecord:
    """One decision the operator took, from a Kubernetes Event or a change of ``status.lastDecision``."""

    t: float
    sim_hour: float
    model: str
    source: str  # "event" or "status"
    trigger: str
    message: str


@dataclass
class FlashSale:
    model: str
    start_hour: float
    end_hour: float
    multiplier: float


@dataclass
class Timeline:
    """Everything the report needs; JSON round-trips through :meth:`to_json` / :meth:`from_json`."""

    started_at: str
    real_seconds: float
    start_hour: float
    currency: str
    pools: list[PoolInfo]
    models: list[ModelInfo]
    sale: FlashSale | None = None
    samples: list[Sample] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    kubectl_get_rmd: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, raw: str) -> Timeline:
        data = json.loads(raw)
        return cls(
            started_at=data["started_at"],
            real_seconds=data["real_seconds"],
            start_hour=data["start_hour"],
            currency=data["currency"],
            pools=[PoolInfo(**p) for p in data["pools"]],
            models=[ModelInfo(**m) for m in data["models"]],
            sale=FlashSale(**data["sale"]) if data.get("sale") else None,
            samples=[
                Sample(t=s["t"], sim_hour=s["sim_hour"], models={k: ModelSample(**v) for k, v in s["models"].items()})
                for s in data["samples"]
            ],
            decisions=[DecisionRecord(**d) for d in data["decisions"]],
            kubectl_get_rmd=data.get("kubectl_get_rmd", ""),
            notes=list(data.get("notes", [])),
        )

    def pool(self, name: str) -> PoolInfo | None:
        return next((p for p in self.pools if p.name == name), None)

    def model(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)


# ---------------------------------------------------------------------------------------------- pure summary


def money(amount: float, currency: str) -> str:
    """``12.34 USD``: every amount shown carries its currency."""
    return f"{amount:,.2f} {currency}"


def clock(sim_hour: float) -> str:
    """``HH:MM`` of a simulated hour (wraps at 24)."""
    minutes = int(round(sim_hour * 60)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _sim_steps(samples: Sequence[Sample]) -> Iterable[tuple[Sample, float]]:
    """Each sample with the simulated hours until the next one (the last sample covers nothing)."""
    for cur, nxt in zip(samples, samples[1:]):
        yield cur, max(0.0, nxt.sim_hour - cur.sim_hour)


def spend_by_model(timeline: Timeline) -> dict[str, float]:
    """Money spent per model over the simulated period: $/h held until the next sample x simulated hours."""
    spend = {m.name: 0.0 for m in timeline.models}
    for sample, hours in _sim_steps(timeline.samples):
        for name, ms in sample.models.items():
            spend[name] = spend.get(name, 0.0) + ms.cost_per_hour * hours
    return spend


def spend_by_pool(timeline: Timeline) -> dict[str, float]:
    """Money spent per pool over the simulated period."""
    spend = {p.name: 0.0 for p in timeline.pools}
    for sample, hours in _sim_steps(timeline.samples):
        for ms in sample.models.values():
            for pool, cost in ms.cost_by_pool.items():
                spend[pool] = spend.get(pool, 0.0) + cost * hours
    return spend


def simulated_hours(timeline: Timeline) -> float:
    if len(timeline.samples) < 2:
        return 0.0
    return timeline.samples[-1].sim_hour - timeline.samples[0].sim_hour


def peak_provisioning_spend(timeline: Timeline) -> dict[str, float]:
    """What each model would have cost had its peak $/h been provisioned for the whole period (static sizing)."""
    hours = simulated_hours(timeline)
    out: dict[str, float] = {}
    for m in timeline.models:
        peak = max((s.models[m.name].cost_per_hour for s in timeline.samples if m.name in s.models), default=0.0)
        out[m.name] = peak * hours
    return out


@dataclass(frozen=True)
class Violation:
    t: float
    sim_hour: float
    model: str
    pool: str
    replicas: int
    reason: str


def placement_violations(timeline: Timeline) -> list[Violation]:
    """Every observed running replica on a pool its data class may not use (asks the one sensitivity rule)."""
    specs = {p.name: parse_pool({"metadata": {"name": p.name}, "spec": p.spec}).spec for p in timeline.pools if p.spec}
    out: list[Violation] = []
    for sample in timeline.samples:
        for name, ms in sample.models.items():
            info = timeline.model(name)
            if info is None:
                continue
            for pool, replicas in ms.replicas_by_pool.items():
                if replicas <= 0:
                    continue
                spec = specs.get(pool)
                if spec is None:
                    out.append(Violation(sample.t, sample.sim_hour, name, pool, replicas, "unknown pool"))
                    continue
                ok, reason = pool_admits(Sensitivity(info.sensitivity), spec, allow_public_burst=info.allow_public_burst)
                if not ok:
                    out.append(Violation(sample.t, sample.sim_hour, name, pool, replicas, reason))
    return out


def tenancy_replicas(timeline: Timeline, sample: Sample, model: str) -> tuple[int, int]:
    """(private, public) running replicas of ``model`` in ``sample``."""
    ms = sample.models.get(model)
    if ms is None:
        return 0, 0
    private = public = 0
    for pool, n in ms.replicas_by_pool.items():
        info = timeline.pool(pool)
        if info is not None and info.tenancy == "public":
            public += n
        else:
            private += n
    return private, public


def in_sale(timeline: Timeline, sim_hour: float) -> bool:
    sale = timeline.sale
    return sale is not None and sale.start_hour <= sim_hour < sale.end_hour


def max_public_replicas(timeline: Timeline, model: str, *, during_sale: bool) -> int:
    """Largest number of public replicas of ``model`` seen inside (or outside) the flash sale window."""
    return max(
        (tenancy_replicas(timeline, s, model)[1] for s in timeline.samples if in_sale(timeline, s.sim_hour) == during_sale),
        default=0,
    )


def slo_attainment(timeline: Timeline) -> dict[str, tuple[int, int]]:
    """Per model: (samples with p95 within SLO, samples with a p95 at all). Server-side p95, client p95 as fallback."""
    out: dict[str, tuple[int, int]] = {}
    for m in timeline.models:
        ok = total = 0
        for s in timeline.samples:
            ms = s.models.get(m.name)
            p95 = None if ms is None else (ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms)
            if p95 is None or (ms is not None and ms.served_rps <= 0):
                continue
            total += 1
            ok += p95 <= m.slo_p95_ms
        out[m.name] = (ok, total)
    return out


def first_public_replica_hour(timeline: Timeline, model: str) -> float | None:
    """Simulated hour when ``model`` first ran a public replica, or None."""
    return next((s.sim_hour for s in timeline.samples if tenancy_replicas(timeline, s, model)[1] > 0), None)


def last_public_replica_hour(timeline: Timeline, model: str) -> float | None:
    """Simulated hour of the last observation with a public replica of ``model``, or None."""
    return next((s.sim_hour for s in reversed(timeline.samples) if tenancy_replicas(timeline, s, model)[1] > 0), None)


def summary_lines(timeline: Timeline) -> list[str]:
    """Plain sentences for the terminal and the report: what happened and what it cost."""
    cur = timeline.currency
    hours = simulated_hours(timeline)
    spend = spend_by_model(timeline)
    static = peak_provisioning_spend(timeline)
    lines = [
        f"Simulated {hours:.1f} h in {timeline.real_seconds:.0f} s of real time; "
        f"total spend {money(sum(spend.values()), cur)} vs {money(sum(static.values()), cur)} "
        "had every model kept its peak capacity all day."
    ]
    for m in timeline.models:
        line = f"{m.name} ({m.sensitivity}): spent {money(spend.get(m.name, 0.0), cur)}"
        if m.budget_per_hour is not None and hours > 0:
            line += f" (budget {money(m.budget_per_hour, m.budget_currency)}/h = {money(m.budget_per_hour * hours, m.budget_currency)} for the period)"
        lines.append(line + ".")
    violations = placement_violations(timeline)
    if violations:
        v = violations[0]
        lines.append(f"PLACEMENT VIOLATION: {len(violations)} observation(s), first {v.model} on {v.pool} at {clock(v.sim_hour)}: {v.reason}.")
    else:
        sensitive = [m.name for m in timeline.models if m.sensitivity in ("restricted", "confidential")]
        if sensitive:
            lines.append(f"{', '.join(sensitive)} never ran on a public pool ({len(timeline.samples)} observations).")
    sale = timeline.sale
    if sale is not None:
        inside = max_public_replicas(timeline, sale.model, during_sale=True)
        outside = max_public_replicas(timeline, sale.model, during_sale=False)
        first = first_public_replica_hour(timeline, sale.model)
        last = last_public_replica_hour(timeline, sale.model)
        when = ""
        if first is not None and last is not None:
            lead = sale.start_hour - first
            when = (f"; public replicas from {clock(first)}"
                    + (f" ({lead * 60:.0f} simulated minutes before the sale)" if lead > 0 else "")
                    + f" to {clock(last)}")
        lines.append(
            f"Flash sale {clock(sale.start_hour)}-{clock(sale.end_hour)} (x{sale.multiplier:g}) on {sale.model}: "
            f"up to {inside} public replica(s) during the sale, {outside} outside it{when}."
        )
    return lines


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


def render_html(timeline: Timeline, plots: dict[str, str]) -> str:
    """The report page (autoescaped: model names and operator messages are data, not markup)."""
    from jinja2 import Environment

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
        summary=summary_lines(timeline),
        violations=placement_violations(timeline),
        spend={k: money(v, cur) for k, v in spend.items()},
        static={k: money(v, cur) for k, v in static.items()},
        pool_spend={k: money(v, cur) for k, v in spend_by_pool(timeline).items()},
        slo=slo,
        budget=budget,
        plots=plots,
        timeline_file=TIMELINE_FILE,
    )


def write_report(timeline: Timeline, out_dir: Path) -> Path:
    """Write ``timeline.json``, the PNG plots and ``index.html`` into ``out_dir``; return the HTML path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the demo runs in terminals and CI
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TIMELINE_FILE).write_text(timeline.to_json())
    _plot_cost(timeline, out_dir / PLOTS["cost"])
    _plot_replicas(timeline, out_dir / PLOTS["replicas"])
    _plot_latency(timeline, out_dir / PLOTS["latency"])
    _plot_traffic(timeline, out_dir / PLOTS["traffic"])
    html = out_dir / HTML_FILE
    html.write_text(render_html(timeline, dict(PLOTS)))
    return html
