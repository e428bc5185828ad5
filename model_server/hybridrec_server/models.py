"""PyTorch recommenders and the architecture registry.

Every architecture exposes the same serving contract: ``user_vectors(users) -> [B, D]`` and
``item_vectors() -> [N, D]`` with score = dot product.  The server precomputes ``item_vectors()``
once at load time, so a request costs one user-tower pass plus a top-k over the item matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ModelDims:
    """Shape of a model; stored in ``config.json`` so the loader can rebuild the module."""

    n_users: int
    n_items: int
    embedding_dim: int = 64
    hidden_dim: int = 128

    def to_dict(self) -> dict[str, int]:
        """Plain dict for JSON."""
        return asdict(self)


class MatrixFactorization(nn.Module):
    """Biased MF: score(u, i) = <p_u, q_i> + b_i (the user bias cannot change a ranking, so it is omitted).

    The item bias is folded into the dot product as an extra dimension (user side = 1) so serving
    is the same matmul as for the two-tower model.
    """

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.user_embedding = nn.Embedding(dims.n_users, dims.embedding_dim)
        self.item_embedding = nn.Embedding(dims.n_items, dims.embedding_dim)
        self.item_bias = nn.Embedding(dims.n_items, 1)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, D+1]."""
        emb = self.user_embedding(users)
        return torch.cat([emb, torch.ones_like(emb[:, :1])], dim=1)

    def item_vectors(self) -> torch.Tensor:
        """All items -> [N, D+1]."""
        return torch.cat([self.item_embedding.weight, self.item_bias.weight], dim=1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: [B, N]."""
        return self.user_vectors(users) @ self.item_vectors().T


def _tower(dims: ModelDims) -> nn.Sequential:
    """ID-embedding MLP tower: embedding -> hidden -> embedding with a residual-free ReLU MLP."""
    return nn.Sequential(
        nn.Linear(dims.embedding_dim, dims.hidden_dim),
        nn.ReLU(),
        nn.Linear(dims.hidden_dim, dims.embedding_dim),
    )


class TwoTower(nn.Module):
    """Two-tower retrieval model: separate user and item towers, dot-product score."""

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        self.user_embedding = nn.Embedding(dims.n_users, dims.embedding_dim)
        self.item_embedding = nn.Embedding(dims.n_items, dims.embedding_dim)
        self.user_tower = _tower(dims)
        self.item_tower = _tower(dims)
        self.item_bias = nn.Embedding(dims.n_items, 1)
        nn.init.normal_(self.user_embedding.weight, std=0.1)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, D+1] (the trailing 1 multiplies the item bias)."""
        emb = self.user_embedding(users)
        out = self.user_tower(emb) + emb
        return torch.cat([out, torch.ones_like(out[:, :1])], dim=1)

    def item_vectors(self) -> torch.Tensor:
        """All items through the item tower -> [N, D+1]."""
        emb = self.item_embedding.weight
        out = self.item_tower(emb) + emb
        return torch.cat([out, self.item_bias.weight], dim=1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: [B, N]."""
        return self.user_vectors(users) @ self.item_vectors().T


ModelFactory = Callable[[ModelDims], nn.Module]

#: Keys are the CRD enum ``spec.model.architecture``; keep them in sync with the operator.
ARCHITECTURES: dict[str, ModelFactory] = {
    "matrix-factorization": MatrixFactorization,
    "two-tower": TwoTower,
}


class UnknownArchitectureError(ValueError):
    """The requested architecture is not in the registry."""


def build_model(architecture: str, dims: ModelDims) -> nn.Module:
    """Instantiate a registered architecture."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(f"unknown architecture {architecture!r}; known: {known}") from None
    return factory(dims)


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else CPU; ``prefer`` ("cpu"/"cuda") overrides for tests and benchmarks."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
