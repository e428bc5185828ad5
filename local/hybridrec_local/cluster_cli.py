"""``hybridrec cluster up|down|status|env``: the embedded local control plane from the command line.

Processes started here run detached (own session, no parent-death signal), so the cluster outlives the command;
``hybridrec cluster down`` stops them using the PIDs recorded in the workdir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hybridrec_local.localcluster import DEFAULT_WORKDIR, ClusterError, LocalCluster

cluster_app = typer.Typer(
    help="Local Kubernetes control plane (etcd, kube-apiserver, controllers, kwok fake GPU nodes).",
    no_args_is_help=True,
)

WorkdirOpt = Annotated[Optional[Path], typer.Option("--workdir", help=f"State directory [default: {DEFAULT_WORKDIR}]")]


def _fail(exc: ClusterError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@cluster_app.command()
def up(workdir: WorkdirOpt = None,
       timeout: Annotated[float, typer.Option(help="Seconds to wait for the control plane")] = 180.0) -> None:
    """Start the cluster (or re-use the running one) and print how to point kubectl at it."""
    try:
        cluster = LocalCluster(workdir, die_with_parent=False).up(timeout=timeout)
    except ClusterError as exc:
        raise _fail(exc) from exc
    typer.echo(f"export KUBECONFIG={cluster.kubeconfig}")


@cluster_app.command()
def down(workdir: WorkdirOpt = None) -> None:
    """Stop every process the cluster (and start_process) recorded, including their children."""
    try:
        LocalCluster(workdir).down()
    except ClusterError as exc:
        raise _fail(exc) from exc


@cluster_app.command()
def status(workdir: WorkdirOpt = None) -> None:
    """Show the recorded processes; exit code 1 when the cluster is not running."""
    st = LocalCluster(workdir).status()
    typer.echo(f"cluster: {'running' if st.running else 'NOT running'}  server: {st.server or '-'}  "
               f"kubeconfig: {st.kubeconfig}")
    for p in st.processes:
        typer.echo(f"  {p.name:<26} pid {p.pid:<8} {'up' if p.alive else 'DOWN':<5} log {p.log}")
    if not st.running:
        raise typer.Exit(code=1)


@cluster_app.command()
def env(workdir: WorkdirOpt = None) -> None:
    """Print shell exports for clients: eval "$(hybridrec cluster env)"."""
    for key, value in LocalCluster(workdir).env().items():
        typer.echo(f"export {key}={value}")


if __name__ == "__main__":
    cluster_app()
