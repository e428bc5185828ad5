"""The live terminal view of the demo and, where there is no terminal (logs, CI), one plain status line.

Pure rendering of the latest timeline sample, so both are tested by rendering them.
"""

from __future__ import annotations

from typing import Any

from hybridrec_local.demo.scenario import Scenario
from hybridrec_local.summary import clock, money, tenancy_replicas
from hybridrec_local.timeline import ModelSample, Sample, Timeline


def _p95_cell(ms: ModelSample, slo_ms: float) -> str:
    p95 = ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms
    if p95 is None:
        return "[dim]-[/dim]"
    mark = "[green]ok[/green]" if p95 <= slo_ms else "[red]over[/red]"
    src = "" if ms.p95_ms is not None else "[dim]c[/dim]"
    return f"{p95:5.1f}{src} / {slo_ms:g} ms {mark}"


def render_live(timeline: Timeline, scenario: Scenario, elapsed: float) -> Any:
    """The live terminal view for the latest sample (a rich renderable; pure, so it is tested by rendering it)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    cur = timeline.currency
    sample = timeline.samples[-1] if timeline.samples else Sample(t=0.0, sim_hour=scenario.start_hour)
    sim_hour = scenario.sim_hour(min(elapsed, scenario.real_seconds))
    sale = scenario.sale
    header = Table.grid(expand=True, padding=(0, 1))
    header.add_column(ratio=2)
    header.add_column(ratio=3)
    header.add_column(justify="right", ratio=2)
    sale_text = ""
    if sale is not None:
        if sale.start_hour <= sim_hour < sale.end_hour:
            sale_text = f"[bold black on yellow] FLASH SALE on {sale.model} x{sale.multiplier:g} [/]"
        elif sim_hour < sale.start_hour:
            sale_text = f"flash sale on {sale.model} at {clock(sale.start_hour)} (declared in its schedule)"
        else:
            sale_text = f"[dim]flash sale over ({clock(sale.start_hour)}-{clock(sale.end_hour)})[/dim]"
    header.add_row(f"[bold]simulated {clock(sim_hour)}[/bold]  [dim]real +{elapsed:4.0f}s / {scenario.real_seconds:.0f}s[/dim]",
                   ProgressBar(total=scenario.real_seconds, completed=min(elapsed, scenario.real_seconds)), sale_text)

    models = Table(title="Models", title_justify="left", expand=True, pad_edge=False)
    for col, kw in (("model", {}), ("data", {}), ("rps offered/served", {"justify": "right"}),
                    ("p95 / SLO", {"justify": "right"}), ("replicas priv/pub", {"justify": "center"}),
                    ("placement (running)", {}), (f"{cur}/h (budget)", {"justify": "right"})):
        models.add_column(col, **kw)
    for m in timeline.models:
        ms = sample.models.get(m.name, ModelSample())
        priv, pub = tenancy_replicas(timeline, sample, m.name)
        placement = escape(", ".join(f"{p}:{n}" for p, n in sorted(ms.replicas_by_pool.items()) if n)) or "[dim]none yet[/dim]"
        budget = f" ({m.budget_per_hour:.2f})" if m.budget_per_hour is not None else ""
        color = {"restricted": "red", "confidential": "magenta", "internal": "yellow"}.get(m.sensitivity, "green")
        models.add_row(escape(m.name), f"[{color}]{m.sensitivity}[/{color}]", f"{ms.offered_rps:5.1f} / {ms.served_rps:5.1f}",
                       _p95_cell(ms, m.slo_p95_ms), f"{priv} / {'[bold]' if pub else ''}{pub}{'[/bold]' if pub else ''}",
                       placement, f"{ms.cost_per_hour:.2f}{budget}")

    pools = Table(title="Pools", title_justify="left", expand=True, pad_edge=False)
    for col, kw in (("pool", {}), ("tenancy", {}), ("price", {"justify": "right"}), ("replicas", {"justify": "right"}),
                    (f"{cur}/h", {"justify": "right"})):
        pools.add_column(col, **kw)
    for p in timeline.pools:
        replicas = sum(ms.replicas_by_pool.get(p.name, 0) for ms in sample.models.values())
        cost = sum(ms.cost_by_pool.get(p.name, 0.0) for ms in sample.models.values())
        tenancy = f"[cyan]{p.tenancy}[/cyan]" if p.tenancy == "private" else f"[orange3]{p.tenancy} {p.capacity_type}[/orange3]"
        pools.add_row(p.name, tenancy, f"{p.price_per_gpu_hour:.2f} {p.currency}/GPU-h", str(replicas), f"{cost:.2f}")

    decisions = Table(title="Latest decisions", title_justify="left", expand=True, pad_edge=False, show_header=False)
    decisions.add_column("when", width=6)
    decisions.add_column("model", width=14)
    decisions.add_column("what", ratio=1, overflow="fold")
    for d in timeline.decisions[-5:]:
        decisions.add_row(clock(d.sim_hour), escape(d.model), f"[dim]{escape(d.trigger)}[/dim] {escape(d.message)}")
    if not timeline.decisions:
        decisions.add_row("", "", "[dim]none yet[/dim]")

    spent = sum(
        ms.cost_per_hour * max(0.0, nxt.sim_hour - cur_s.sim_hour)
        for cur_s, nxt in zip(timeline.samples, timeline.samples[1:]) for ms in cur_s.models.values()
    )
    now_cost = sum(ms.cost_per_hour for ms in sample.models.values())
    footer = Text.from_markup(
        f"[bold]{money(now_cost, cur)}/h now[/bold] · {money(spent, cur)} spent so far this simulated day · "
        "[dim]replicas = Running pods; p95 from Prometheus (c = client-side while Prometheus has none)[/dim]")
    return Group(header, models, pools, decisions, footer)


def status_line(timeline: Timeline, scenario: Scenario, elapsed: float) -> str:
    """One plain line per model for logs and CI (the live view needs a terminal)."""
    sample = timeline.samples[-1] if timeline.samples else None
    parts = [f"[{clock(scenario.sim_hour(min(elapsed, scenario.real_seconds)))}]"]
    if sample is not None:
        for m in timeline.models:
            ms = sample.models.get(m.name, ModelSample())
            priv, pub = tenancy_replicas(timeline, sample, m.name)
            p95 = ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms
            parts.append(f"{m.name}: {ms.served_rps:.1f}/{ms.offered_rps:.1f} rps, p95 "
                         f"{'-' if p95 is None else f'{p95:.0f}'}/{m.slo_p95_ms:g} ms, {priv} private + {pub} public, "
                         f"{ms.cost_per_hour:.2f} {timeline.currency}/h")
    return " | ".join(parts)
