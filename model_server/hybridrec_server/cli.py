"""CLI pieces mounted by the main ``hybridrec`` CLI: ``hybridrec model push|pull|verify`` and ``hybridrec train``.

Heavy imports (torch, boto3) happen inside the commands so ``hybridrec --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

model_app = typer.Typer(
    name="model",
    help="Push, pull and verify model artifacts (config.json + model.safetensors + manifest.json).",
    no_args_is_help=True,
)

EndpointOption = Annotated[
    Optional[str],
    typer.Option("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL or AWS)."),
]


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@model_app.command("push")
def push_command(
    src_dir: Annotated[Path, typer.Argument(help="Local artifact directory.", exists=True, file_okay=False)],
    s3_uri: Annotated[str, typer.Argument(help="Destination, s3://bucket/prefix/.")],
    endpoint_url: EndpointOption = None,
) -> None:
    """Verify a local artifact and upload it (manifest last)."""
    from .artifacts import ArtifactError, push

    try:
        digest = push(src_dir, s3_uri, endpoint_url=endpoint_url)
    except (ArtifactError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"pushed {src_dir} -> {s3_uri}\nmanifest sha256 (HYBRIDREC_MODEL_SHA256): {digest}")


@model_app.command("pull")
def pull_command(
    s3_uri: Annotated[str, typer.Argument(help="Source, s3://bucket/prefix/.")],
    dest_dir: Annotated[Path, typer.Argument(help="Local directory to create or replace.")],
    endpoint_url: EndpointOption = None,
    sha256: Annotated[
        Optional[str], typer.Option("--sha256", help="Expected sha256 of manifest.json (pin).")
    ] = None,
) -> None:
    """Download, verify, then atomically move an artifact into place."""
    from .artifacts import ArtifactError, pull, read_verified

    try:
        path = pull(s3_uri, dest_dir, endpoint_url=endpoint_url, expected_sha256=sha256)
        digest = read_verified(path).manifest_sha256
    except (ArtifactError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"pulled {s3_uri} -> {path}\nmanifest sha256: {digest}")


@model_app.command("verify")
def verify_command(
    directory: Annotated[Path, typer.Argument(help="Local artifact directory.")],
    sha256: Annotated[
        Optional[str], typer.Option("--sha256", help="Expected sha256 of manifest.json (pin).")
    ] = None,
) -> None:
    """Check every checksum and refuse pickled weights; exit 1 naming the bad file."""
    from .artifacts import ArtifactError, read_verified

    try:
        verified = read_verified(directory, sha256)
    except ArtifactError as exc:
        _fail(exc)
    cfg = verified.config
    typer.echo(
        f"ok: {directory} architecture={cfg.get('architecture')} version={cfg.get('version')} "
        f"manifest sha256={verified.manifest_sha256}"
    )


def train_command(
    architecture: Annotated[
        str, typer.Option("--architecture", "-a", help="matrix-factorization or two-tower.")
    ] = "two-tower",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Maximum epochs (early stopping).")] = 30,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Artifact directory to write (default: a new temp dir).")
    ] = None,
    subsample: Annotated[
        Optional[int], typer.Option("--subsample", min=10, help="Train on this many random users only.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (split negatives, init, order).")] = 0,
) -> None:
    """Train on MovieLens 100K, print HR@10/NDCG@10 against popularity, write an artifact."""
    from .data import DatasetNotFoundError
    from .models import ARCHITECTURES
    from .train import format_report, train_and_evaluate

    if architecture not in ARCHITECTURES:
        _fail(ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}"))
    try:
        path, metrics = train_and_evaluate(architecture, epochs, out, subsample=subsample, seed=seed)
    except DatasetNotFoundError as exc:
        _fail(exc)
    typer.echo(format_report(metrics))
    typer.echo(f"artifact: {path}")


def register(app: typer.Typer) -> None:
    """Mount ``hybridrec model`` and ``hybridrec train`` (the ``hybridrec.cli`` entry point)."""
    app.add_typer(model_app, name="model", help="Push, pull and verify model artifacts in S3.")
    app.command("train", help="Train a recommender on MovieLens 100K and evaluate it.")(train_command)
