"""``hybridrec operator run``: the operator process (kopf running ``hybridrec_operator.controller.handlers``, which loads the
cost controller; the controller runs only with a Prometheus URL).

Equivalent to ``kopf run -m hybridrec_operator.controller.handlers``; this entry point adds the hybridrec knobs (metrics port,
peering lifetime, reconcile workers, Prometheus URL and control interval) as options and passes them to the handlers
through ``HYBRIDREC_*`` environment variables, which is also how a plain ``kopf run`` is configured.
``python -m hybridrec_operator.cli.operator`` runs it without the rest of the CLI (what the integration and
end-to-end tests start).
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

operator_app = typer.Typer(help="The hybridrec operator (kopf).", no_args_is_help=True)


@operator_app.callback()
def _group() -> None:
    """The hybridrec operator (kopf). A callback keeps `run` a sub-command even while it is the only one."""


@operator_app.command()
def run(
    namespace: Annotated[Optional[list[str]], typer.Option("--namespace", "-n", help="Serve only these namespaces (repeatable; globs allowed).")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Serve every namespace (the default without --namespace).")] = False,
    standalone: Annotated[bool, typer.Option("--standalone", help="No peering: act even if other replicas run (tests, single replica).")] = False,
    peering: Annotated[str, typer.Option("--peering", help="Peering object shared by replicas; only the highest priority acts.")] = "hybridrec",
    priority: Annotated[Optional[int], typer.Option("--priority", help="Peering priority (default: random per process).")] = None,
    peering_lifetime: Annotated[Optional[int], typer.Option("--peering-lifetime", help="Seconds after which a silent peer counts as dead (default: 60).")] = None,
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="Prometheus /metrics port (0: off) (default: $HYBRIDREC_METRICS_PORT or 8000).")] = None,
    metrics_address: Annotated[Optional[str], typer.Option("--metrics-address", help="Bind address of /metrics (default: $HYBRIDREC_METRICS_ADDRESS or 0.0.0.0).")] = None,
    liveness: Annotated[Optional[str], typer.Option("--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Concurrent model reconciles (default: 8).")] = None,
    prometheus_url: Annotated[Optional[str], typer.Option("--prometheus-url", help="Prometheus the cost controller reads; without it (and without $HYBRIDREC_PROMETHEUS_URL) the controller is off.")] = None,
    control_interval: Annotated[Optional[float], typer.Option("--control-interval", min=0.1, help="Seconds between cost-controller rounds (default: $HYBRIDREC_CONTROL_INTERVAL_SECONDS or 30).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the operator until interrupted (SIGINT/SIGTERM stop it gracefully)."""
    import kopf

    overrides = {
        "HYBRIDREC_METRICS_PORT": metrics_port,
        "HYBRIDREC_METRICS_ADDRESS": metrics_address,
        "HYBRIDREC_PEERING_LIFETIME": peering_lifetime,
        "HYBRIDREC_WORKERS": workers,
        "HYBRIDREC_PROMETHEUS_URL": prometheus_url,
        "HYBRIDREC_CONTROL_INTERVAL_SECONDS": f"{control_interval:g}" if control_interval is not None else None,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)
    if all_namespaces and namespace:
        raise typer.BadParameter("--all-namespaces and --namespace exclude each other")

    kopf.configure(verbose=verbose, debug=verbose)
    import hybridrec_operator.controller.handlers  # noqa: F401  (registers the handlers and the cost controller with kopf)

    kopf.run(
        clusterwide=not namespace,
        namespaces=namespace or (),
        standalone=standalone,
        priority=priority,
        peering_name=None if standalone else peering,
        liveness_endpoint=liveness,
    )


def main() -> None:
    operator_app(prog_name="hybridrec-operator")


if __name__ == "__main__":
    # `python -m hybridrec_operator.cli.operator [run] ...`: accept the options with or without the sub-command.
    import sys

    if len(sys.argv) == 1 or sys.argv[1].startswith("-") and sys.argv[1] not in ("--help", "-h"):
        sys.argv.insert(1, "run")
    main()
