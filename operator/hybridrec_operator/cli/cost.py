"""``hybridrec cost estimate`` and ``hybridrec simulate``: cost tools that need no cluster.

The lead's ``cli.py`` mounts them: ``app.add_typer(cost_app, name="cost")`` and ``app.command("simulate")(simulate_command)``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hybridrec_operator.api.models import ComputePool, RecModelDeployment
from hybridrec_operator.core.costing import Money, lifecycle, replica_cost_per_hour
from hybridrec_operator.core.capacity_model import hint_for
from hybridrec_operator.core.planner import DEFAULT_HEADROOM, PoolState, admitted_pools
from hybridrec_operator.sim.simulate import (
    DEFAULT_KEDA_THRESHOLD,
    DEFAULT_START,
    POLICIES,
    Reclaims,
    parse_objects,
    parse_trace_csv,
    simulate,
    summary_rows,
    write_plots,
)

HOURS_PER_MONTH = Decimal(730)  # 365 x 24 / 12: the usual cloud-billing month

cost_app = typer.Typer(help="Cost accounting without a cluster.", no_args_is_help=True)


def _read_objects(paths: list[Path]) -> tuple[list[ComputePool], list[RecModelDeployment]]:
    try:
        return parse_objects([p.read_text() for p in paths])
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def cheapest_serving(rmd: RecModelDeployment, pools: list[ComputePool]) -> tuple[ComputePool, Money] | None:
    """The pool with the lowest cost per served request the model may run on (price per replica-hour / the replica's
    capacity there, from ``scaling.capacityHints``) and the cost per hour of ``minReplicas`` there; None if no pool
    admits it."""
    states = [PoolState(p.name, p.spec, p.spec.max_gpus) for p in pools]
    allowed = {s.name for s in admitted_pools(rmd.spec, states)}
    candidates = [p for p in pools if p.name in allowed]
    if not candidates:
        return None
    best = min(candidates, key=lambda p: (p.spec.pricing.price_per_gpu_hour / hint_for(rmd.spec, p.spec), p.name))
    return best, replica_cost_per_hour(best.spec, rmd.spec.resources.gpus) * rmd.spec.scaling.min_replicas


@cost_app.command("estimate")
def estimate(
    file: Annotated[Path, typer.Option("-f", "--file", help="RecModelDeployment YAML (one or more documents).", exists=True)],
    pools: Annotated[Path | None, typer.Option("--pools", help="ComputePool YAML, to price serving at minReplicas.", exists=True)] = None,
) -> None:
    """Print the lifecycle cost breakdown (training, deployment, maintenance, benefit, ROI) of a CR."""
    _, models = _read_objects([file])
    pool_objs = _read_objects([pools])[0] if pools else []
    if not models:
        raise typer.BadParameter(f"{file} holds no RecModelDeployment")
    console = Console()
    for rmd in models:
        table = Table(title=f"{rmd.namespace}/{rmd.name}", show_header=True)
        table.add_column("item")
        table.add_column("formula")
        table.add_column("amount", justify="right")
        econ = rmd.spec.economics
        if econ is None:
            table.add_row("lifecycle", "spec.economics not set", "-")
        else:
            lc = lifecycle(econ)
            t, d, m, b = econ.training, econ.deployment, econ.maintenance, econ.business_value
            table.add_row("training", f"{t.gpus:g} GPUs x {t.hours:g} h x {t.price_per_gpu_hour:g}/GPU-h", str(lc.training))
            table.add_row("deployment", f"{d.gpus:g} GPUs x {d.tps:g} TPS x {d.unit_cost:g}", str(lc.deployment))
            table.add_row("maintenance", f"{m.people:g} x {m.hours:g} h x {m.rate_per_hour:g}/h", str(lc.maintenance))
            table.add_row("total cost", "training + deployment + maintenance", str(lc.total_cost))
            table.add_row(
                "benefit",
                f"{b.requests:g} requests x {b.click_through_rate:g} CTR x {b.conversion_rate:g} CVR x {b.value_per_conversion:g}",
                str(lc.benefit),
            )
            roi = lc.roi
            table.add_row("ROI", "benefit / total cost", "undefined (no cost)" if roi is None else f"{roi:.3f}")
        if pool_objs:
            found = cheapest_serving(rmd, pool_objs)
            if found is None:
                table.add_row("serving", "no pool admits this model", "-")
            else:
                pool, per_hour = found
                n = rmd.spec.scaling.min_replicas
                table.add_row("serving per hour", f"{n} x {rmd.spec.resources.gpus} GPU on {pool.name} (cheapest per request)", str(per_hour))
                table.add_row("serving per month", f"per hour x {HOURS_PER_MONTH} h", str(per_hour * HOURS_PER_MONTH))
        console.print(table)


def simulate_command(
    trace: Annotated[
        Path,
        typer.Option(
            "--trace", "-t", exists=True,
            help="CSV demand trace: header 'minute,<model>,...', then one row per minute (consecutive minutes, RPS >= 0, "
            "one column per RecModelDeployment, named like it). A file with a gap, a negative or a non-numeric value is "
            "refused with its line number.",
        ),
    ],
    files: Annotated[
        list[Path],
        typer.Option(
            "-f", "--file", exists=True,
            help="YAML with ComputePools and RecModelDeployments in the CRD schema (repeatable). Per pool: maxGpus (quota), "
            "pricing (pricePerGpuHour, capacityType: spot pools suffer reclaims), startupSeconds, gpu.model. Per model: "
            "scaling.targetRpsPerReplica and scaling.capacityHints [{gpuModel, rpsPerReplica}] (the capacity of one "
            "replica on each pool's GPU), slo.p95LatencyMs, dataSensitivity, placement.",
        ),
    ],
    policy: Annotated[list[str] | None, typer.Option("--policy", "-p", help=f"Policies to run (repeatable): {', '.join(POLICIES)}.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for the plots and summary.json.")] = Path("/tmp/hybridrec-simulate"),
    interval: Annotated[float, typer.Option(help="hybridrec control interval, seconds.")] = 30.0,
    headroom: Annotated[float, typer.Option(help="static-peak's headroom over the trace's peak (hybridrec sizes its own margin).")] = DEFAULT_HEADROOM,
    keda_threshold: Annotated[
        float, typer.Option("--keda-threshold", min=0.05, max=2.0, help="KEDA baseline: RPS-per-replica threshold as a fraction of targetRpsPerReplica.")
    ] = DEFAULT_KEDA_THRESHOLD,
    noise: Annotated[
        bool, typer.Option("--noise/--no-noise", help="Minute-level noise of the trace's own variability (seeded, same for every policy), interpolated to the 15 s ticks.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the noise and of the reclaims.")] = 0,
    spot_reclaims: Annotated[
        float, typer.Option("--spot-reclaims-per-hour", min=0.0, help="Reclaims per pool-hour on spot pools (each takes one replica after a 30-120 s notice).")
    ] = 0.0,
    start: Annotated[datetime, typer.Option(help="Wall-clock time of minute 0 (UTC), for spec.scaling.schedule.")] = DEFAULT_START,
) -> None:
    """Replay a demand trace through hybridrec's allocator and baseline policies; print cost, SLO and placement figures.

    An SLO-violation minute is a model-minute in which the simulated p95 (a batching replica's queueing
    approximation, per-(model, pool) capacity) exceeded slo.p95LatencyMs. The oracle has perfect foresight and no
    start-up delay: a lower bound on cost.
    """
    pools, models = _read_objects(files)
    names = policy or list(POLICIES)
    unknown = set(names) - set(POLICIES)
    if unknown:
        raise typer.BadParameter(f"unknown policy {', '.join(sorted(unknown))}; choose from {', '.join(POLICIES)}")
    try:
        demand = parse_trace_csv(trace.read_text())
    except ValueError as exc:
        raise typer.BadParameter(f"{trace}: {exc}", param_hint="--trace") from exc
    try:
        results = simulate(
            demand, pools, models, names, start=start if start.tzinfo else start.replace(tzinfo=DEFAULT_START.tzinfo), interval=interval,
            headroom=headroom, keda_threshold=keda_threshold, noise=noise, seed=seed, reclaims=Reclaims(spot_reclaims, seed=seed + 1),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rows = summary_rows(results)
    table = Table(title=f"{trace.name}: {len(demand.minutes)} minutes, {len(models)} model(s), {len(pools)} pool(s)")
    for col in ("policy", "cost", "x oracle", "x HPA", "x KEDA", "SLO-violation min", "sensitive viol. (replica-min)", "moves", "reclaims"):
        if col == "policy":
            table.add_column(col, justify="left", no_wrap=True, min_width=12)  # policy names stay whole in narrow terminals
        else:
            table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["policy"],
            f"{r['cost']:,.2f} {r['currency']}",
            "-" if r["x_oracle"] is None else f"{r['x_oracle']:.3f}",
            "-" if r["x_hpa"] is None else f"{r['x_hpa']:.3f}",
            "-" if r["x_keda"] is None else f"{r['x_keda']:.3f}",
            str(r["slo_violation_minutes"]),
            f"{r['sensitive_violations']:,.0f}",
            str(r["moves"]),
            str(r["reclaims"]),
        )
    console = Console()
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    for path in write_plots(results, out, stem=trace.stem):
        console.print(f"wrote {path}")
