"""Torch side of artifacts: turn a trained module into an artifact and back (safetensors only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .artifacts import CONFIG_NAME, ArtifactIntegrityError, VerifiedArtifact, sha256_hex, write_artifact
from .models import ModelDims, UnknownArchitectureError, build_model

CONFIG_FORMAT = 1


def build_config(
    *,
    architecture: str,
    dims: ModelDims,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    popular_items: Sequence[str],
    popular_scores: Sequence[float],
    version: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` document (pure)."""
    if len(user_ids) != dims.n_users or len(item_ids) != dims.n_items:
        raise ValueError("id maps do not match the model dims")
    if len(popular_items) != len(popular_scores):
        raise ValueError("popular_items and popular_scores differ in length")
    return {
        "format": CONFIG_FORMAT,
        "architecture": architecture,
        "dims": dims.to_dict(),
        "version": version,
        "user_ids": [str(u) for u in user_ids],
        "item_ids": [str(i) for i in item_ids],
        "popular_items": [str(i) for i in popular_items],
        "popular_scores": [float(s) for s in popular_scores],
        **(extra or {}),
    }


def export_artifact(
    model: nn.Module,
    dest: str | os.PathLike[str],
    *,
    architecture: str,
    dims: ModelDims,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    popular_items: Sequence[str],
    popular_scores: Sequence[float],
    version: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a verified artifact; the default version is derived from the weights' hash."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"architecture": architecture})
    version = version or f"{architecture}-{sha256_hex(weights)[:12]}"
    config = build_config(
        architecture=architecture,
        dims=dims,
        user_ids=user_ids,
        item_ids=item_ids,
        popular_items=popular_items,
        popular_scores=popular_scores,
        version=version,
        extra=extra,
    )
    return write_artifact(dest, config, weights)


@dataclass(frozen=True)
class LoadedModel:
    """A module rebuilt from a verified artifact plus its config."""

    module: nn.Module
    config: dict[str, Any]
    manifest_sha256: str


def load_module(verified: VerifiedArtifact, device: torch.device) -> LoadedModel:
    """Rebuild the module from verified config + safetensors bytes (never from a pickle)."""
    config = verified.config
    where = verified.directory / CONFIG_NAME
    try:
        dims = ModelDims(**config["dims"])
        module = build_model(config["architecture"], dims)
    except (KeyError, TypeError, UnknownArchitectureError) as exc:
        raise ArtifactIntegrityError(f"invalid config ({exc})", where) from None
    state = load_safetensors(verified.weights)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactIntegrityError(f"weights do not match config ({exc})", verified.directory) from None
    module.to(device).eval()
    return LoadedModel(module, config, verified.manifest_sha256)
