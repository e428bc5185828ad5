"""``hybridrec plan -f pools.yaml -f models.yaml``: show where the operator would put each model, without a cluster.

Pools are taken at full quota (``maxGpus`` free) and models are planned one after the other in file order, each
taking GPUs from the pools before the next (as they would share a cluster). Replicas: ``spec.replicas`` if pinned,
else ``scaling.minReplicas``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_pool, parse_rmd
from hybridrec_operator.core.placement import PlacementPlan, PoolView, desired_replicas, plan_placement


def load_objects(files: Iterable[Path]) -> tuple[list[ComputePool], list[RecModelDeployment]]:
    """ComputePools and RecModelDeployments from multi-document YAML files (other kinds are ignored)."""
    pools: list[ComputePool] = []
    models: list[RecModelDeployment] = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for doc in yaml.safe_load_all(handle):
                if not isinstance(doc, dict):
                    continue
                kind = doc.get("kind")
                if kind == "ComputePool":
                    pools.append(parse_pool(doc))
                elif kind == "RecModelDeployment":
                    models.append(parse_rmd(doc))
    return pools, models


def plan_all(pools: list[ComputePool], models: list[RecModelDeployment]) -> list[tuple[RecModelDeployment, PlacementPlan]]:
    """Plan the models in order, each consuming the GPUs the previous ones took."""
    free = {p.name: p.spec.max_gpus for p in pools}
    plans = []
    for model in models:
        views = [PoolView(name=p.name, spec=p.spec, free_gpus=free[p.name]) for p in pools]
        plan = plan_placement(model.spec, views, desired_replicas(model.spec, None))
        for assignment in plan.assignments:
            free[assignment.pool] -= assignment.replicas * model.spec.resources.gpus
        plans.append((model, plan))
    return plans


def plan_table(model: RecModelDeployment, plan: PlacementPlan, tenancy: dict[str, str] | None = None) -> Table:
    """One model's plan as a table: pool, tenancy, replicas, cost per hour, reason."""
    table = Table(title=f"{model.namespace}/{model.name} ({model.spec.data_sensitivity.value})", title_justify="left")
    table.add_column("pool")
    table.add_column("tenancy")
    table.add_column("replicas", justify="right")
    table.add_column("$/h", justify="right")
    table.add_column("reason")
    for a in plan.assignments:
        table.add_row(a.pool, a.tenancy.value, str(a.replicas), f"{a.cost_per_hour:.2f} {a.currency}", a.reason)
    for pool, why in sorted(plan.excluded.items()):
        table.add_row(pool, (tenancy or {}).get(pool, ""), "-", "", f"excluded: {why}", style="dim")
    table.caption = plan.summary
    table.caption_justify = "left"
    return table


def plan_command(
    file: list[Path] = typer.Option(..., "--file", "-f", exists=True, dir_okay=False, readable=True,
                                    help="YAML with ComputePools and/or RecModelDeployments (repeatable)."),
) -> None:
    """Show where each RecModelDeployment would be placed on the ComputePools, cheapest allowed pool first."""
    console = Console()
    try:
        pools, models = load_objects(file)
    except (ValidationError, yaml.YAMLError) as error:
        console.print(f"[red]invalid input:[/red] {error}")
        raise typer.Exit(2) from error
    if not pools or not models:
        console.print("[red]need at least one ComputePool and one RecModelDeployment[/red]")
        raise typer.Exit(2)
    total: dict[str, float] = {}
    tenancy = {p.name: p.spec.tenancy.value for p in pools}
    for model, plan in plan_all(pools, models):
        console.print(plan_table(model, plan, tenancy))
        total[plan.currency] = total.get(plan.currency, 0.0) + plan.cost_per_hour
    console.print("total: " + ", ".join(f"{v:.2f} {k}/h" for k, v in sorted(total.items())))
