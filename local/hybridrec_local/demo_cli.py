"""``hybridrec demo run|down``: the one-command demo (``make demo`` / ``make demo-down``).

The work happens in :mod:`hybridrec_local.demo.run`; this module turns its outcome into exit codes and messages:
0 done, 1 a step failed (the message names the step and what to do), 130 interrupted. Either failure stops
everything the demo started before the command returns.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hybridrec_local.demo.files import DEFAULT_OUTPUT, DEFAULT_WORKDIR, SCENARIO_FILE

demo_app = typer.Typer(help="The one-command demo on the embedded local cluster.", no_args_is_help=True)

WorkdirOpt = Annotated[Path, typer.Option("--workdir", help="Where the demo keeps its cluster, logs and artifacts.")]


@demo_app.command()
def run(
    duration_seconds: Annotated[Optional[float], typer.Option("--duration-seconds", min=10,
                                help="Real seconds one simulated day lasts [default: the scenario's, 240].")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory of the HTML report.")] = DEFAULT_OUTPUT,
    scenario: Annotated[Path, typer.Option("--scenario", help="Traffic scenario (YAML).")] = SCENARIO_FILE,
    train: Annotated[bool, typer.Option("--train/--no-train",
                     help="Train on MovieLens 100K, or serve small random-initialised models (faster).")] = True,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=50, help="Training epochs per model (early stopping).")] = 4,
    s3_port: Annotated[int, typer.Option("--s3-port", min=0, max=65535, help="Port of the S3 store (0: a free one).")] = 0,
    prometheus_port: Annotated[int, typer.Option("--prometheus-port", min=0, max=65535,
                               help="Port of Prometheus (0: a free one).")] = 0,
    keep: Annotated[bool, typer.Option("--keep/--no-keep",
                    help="Leave everything running at the end to look around (stop with `hybridrec demo down`).")] = True,
    live: Annotated[Optional[bool], typer.Option("--live/--no-live",
                    help="Live terminal view [default: when stdout is a terminal].")] = None,
    workdir: WorkdirOpt = DEFAULT_WORKDIR,
) -> None:
    """Local cluster, S3 with a trained model, Prometheus, operator and pod runner; a compressed day of traffic with a
    flash sale, a live view, and an HTML report in ./demo-output/."""
    from rich.console import Console

    from hybridrec_local.demo.errors import DemoError, Terminated
    from hybridrec_local.demo.run import Demo, DemoOptions
    from hybridrec_local.demo.scenario import ScenarioError

    # Logs and CI are not terminals: a wider fixed width keeps the plain status lines readable there.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    options = DemoOptions(workdir=workdir, output=output, scenario_file=scenario, duration_seconds=duration_seconds,
                          train=train, epochs=epochs, s3_port=s3_port, prometheus_port=prometheus_port, keep=keep,
                          live=live)
    try:
        Demo(options, console).run()
    except ScenarioError as exc:
        console.print(f"[bold red]The scenario {scenario} is not valid:[/bold red] {exc}")
        raise typer.Exit(code=1) from exc
    except DemoError as exc:
        console.print(f"[bold red]The demo stopped at: {exc.step}[/bold red]\n  {exc.problem}", highlight=False)
        if exc.hint:
            console.print(f"  [bold]What to do:[/bold] {exc.hint}", highlight=False)
        console.print("Everything the demo had started has been stopped.")
        raise typer.Exit(code=1) from exc
    except (KeyboardInterrupt, Terminated):
        console.print("[yellow]Interrupted: everything the demo had started has been stopped.[/yellow]")
        # Every process the demo started is stopped by now. The background training thread may still be inside torch
        # (or importing it, early in a run); a normal interpreter exit would then wait on torch's locks and atexit
        # hooks, so an interrupted demo could hang after its cleanup. Leave at once, output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


@demo_app.command()
def down(workdir: WorkdirOpt = DEFAULT_WORKDIR) -> None:
    """Stop everything `hybridrec demo run` started (control plane, S3, Prometheus, operator, pod runner, servers)."""
    from hybridrec_local.demo.run import demo_down

    stopped = demo_down(workdir)
    typer.echo(f"stopped {len(stopped)} process(es): {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    demo_app()
