"""``hybridrec``: the one command-line entry point (Typer).

The operator's own command groups are mounted here. Other installed hybridrec distributions add theirs through the
``hybridrec.cli`` entry-point group (the model server: ``model``, ``train``; the local stack: ``cluster``, ``demo``),
so the operator package never imports them and its image carries neither torch nor the local stack.
Modules keep heavy imports (scipy, matplotlib) inside their functions so ``hybridrec --help`` stays fast.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from hybridrec_operator.cli.cost import cost_app, simulate_command
from hybridrec_operator.cli.operator import operator_app
from hybridrec_operator.cli.plan import plan_command

PLUGIN_GROUP = "hybridrec.cli"


def build_app() -> typer.Typer:
    """The CLI: the operator's commands plus every installed plugin's."""
    app = typer.Typer(
        name="hybridrec",
        help="Place recommendation models on private and public GPU pools by data sensitivity and price; steer replicas by cost and SLO.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.add_typer(operator_app, name="operator", help="Run the operator.")
    app.add_typer(cost_app, name="cost", help="Cost accounting without a cluster.")
    app.command("plan", help="Show where models would be placed on the given pools.")(plan_command)
    app.command("simulate", help="Replay a demand trace through the allocator and baseline policies.")(simulate_command)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        register = plugin.load()
        register(app)
    return app


app = build_app()


if __name__ == "__main__":
    app()
