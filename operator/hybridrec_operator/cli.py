"""``hybridrec``: the one command-line entry point (Typer).

Each area owns its sub-commands in its own module; this file only mounts them, so ``hybridrec --help`` stays fast
(modules keep heavy imports such as torch and scipy inside their functions).
"""

from __future__ import annotations

import typer

from hybridrec_operator.cluster_cli import cluster_app
from hybridrec_operator.cost_cli import cost_app, simulate_command
from hybridrec_operator.demo_cli import demo_app
from hybridrec_operator.operator_cli import operator_app
from hybridrec_operator.placement_cli import plan_command
from hybridrec_server.cli import model_app, train_command

app = typer.Typer(
    name="hybridrec",
    help="Place recommendation models on private and public GPU pools by data sensitivity and price; steer replicas by cost and SLO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(operator_app, name="operator", help="Run the operator.")
app.add_typer(cluster_app, name="cluster", help="The embedded local control plane (no Docker).")
app.add_typer(cost_app, name="cost", help="Cost accounting without a cluster.")
app.add_typer(model_app, name="model", help="Push, pull and verify model artifacts in S3.")
app.add_typer(demo_app, name="demo", help="The one-command demo on the local cluster.")
app.command("plan", help="Show where models would be placed on the given pools.")(plan_command)
app.command("simulate", help="Replay a demand trace through the allocator and baseline policies.")(simulate_command)
app.command("train", help="Train a recommender on MovieLens 100K and evaluate it.")(train_command)


if __name__ == "__main__":
    app()
