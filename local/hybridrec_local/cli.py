"""The local stack's command groups, mounted into ``hybridrec`` through the ``hybridrec.cli`` entry point."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``hybridrec cluster`` and ``hybridrec demo``."""
    from hybridrec_local.cluster_cli import cluster_app
    from hybridrec_local.demo_cli import demo_app

    app.add_typer(cluster_app, name="cluster", help="The embedded local control plane (no Docker).")
    app.add_typer(demo_app, name="demo", help="The one-command demo on the local cluster.")
