"""``hybridrec operator run``: the operator process (kopf running ``hybridrec_operator.controller.handlers``, which starts
the reconciler and the cost controller; the controller runs only with a Prometheus URL).

Equivalent to ``kopf run --standalone -m hybridrec_operator.controller.handlers``; this entry point adds the
hybridrec knobs (metrics port, leader election, reconcile workers, Prometheus URL and control interval) as options
and passes them to the handlers through ``HYBRIDREC_*`` environment variables, which is also how a plain
``kopf run`` is configured. Replicas elect a leader on a ``coordination.k8s.io/v1`` Lease (kopf's own peering is
not used).
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
    leader_election: Annotated[bool, typer.Option("--leader-election/--no-leader-election", help="Elect one acting replica on a coordination.k8s.io/v1 Lease (default: on; $HYBRIDREC_LEADER_ELECTION).")] = True,
    standalone: Annotated[bool, typer.Option("--standalone", help="Same as --no-leader-election: act even if other replicas run (tests, a single replica).")] = False,
    lease_name: Annotated[Optional[str], typer.Option("--lease-name", help="Lease the replicas share; two installs in one namespace must not (default: hybridrec).")] = None,
    lease_namespace: Annotated[Optional[str], typer.Option("--lease-namespace", help="Namespace of the Lease (default: $POD_NAMESPACE, the pod's own namespace, else default).")] = None,
    lease_duration: Annotated[Optional[float], typer.Option("--lease-duration", min=1, help="Seconds a silent leader keeps the lease; a standby takes over after it (default: 15).")] = None,
    lease_renew_deadline: Annotated[Optional[float], typer.Option("--lease-renew-deadline", min=0.1, help="Seconds the leader keeps acting without a successful renewal; below --lease-duration (default: 10).")] = None,
    lease_retry: Annotated[Optional[float], typer.Option("--lease-retry", min=0.1, help="Seconds between renewals and takeover attempts (default: 2).")] = None,
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
        "HYBRIDREC_LEADER_ELECTION": "false" if standalone or not leader_election else None,
        "HYBRIDREC_LEASE_NAME": lease_name,
        "HYBRIDREC_LEASE_NAMESPACE": lease_namespace,
        "HYBRIDREC_LEASE_DURATION_SECONDS": lease_duration,
        "HYBRIDREC_LEASE_RENEW_DEADLINE_SECONDS": lease_renew_deadline,
        "HYBRIDREC_LEASE_RETRY_SECONDS": lease_retry,
        "HYBRIDREC_WORKERS": workers,
        "HYBRIDREC_PROMETHEUS_URL": prometheus_url,
        "HYBRIDREC_CONTROL_INTERVAL_SECONDS": f"{control_interval:g}" if control_interval is not None else None,
        "HYBRIDREC_NAMESPACES": ",".join(namespace) if namespace else None,
    }
    for key, value in overrides.items():
        if value is not None:
            os.environ[key] = str(value)
    if all_namespaces and namespace:
        raise typer.BadParameter("--all-namespaces and --namespace exclude each other")

    from hybridrec_operator.controller.config import OperatorConfig

    try:
        OperatorConfig.from_env()  # refuse bad knobs here, with the option's message, not at kopf's startup
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    kopf.configure(verbose=verbose, debug=verbose)
    import hybridrec_operator.controller.handlers  # noqa: F401  (registers the handlers with kopf)

    # kopf peering off: the Lease (or --standalone) decides which replica acts.
    kopf.run(clusterwide=not namespace, namespaces=namespace or (), standalone=True, liveness_endpoint=liveness)


def main() -> None:
    operator_app(prog_name="hybridrec-operator")


if __name__ == "__main__":
    # `python -m hybridrec_operator.cli.operator [run] ...`: accept the options with or without the sub-command.
    import sys

    if len(sys.argv) == 1 or sys.argv[1].startswith("-") and sys.argv[1] not in ("--help", "-h"):
        sys.argv.insert(1, "run")
    main()
