"""PyTorch recommenders and the architecture registry.

Every architecture exposes the same serving contract: a query vector per request ``[B, D]`` and
``item_vectors() -> [N, D]`` with score = dot product.  The server precomputes ``item_vectors()``
once at load time, so a request costs one query pass plus a top-k over the item matrix.

The query vector comes from the user id (``user_vectors(users)``: matrix factorisation, two-tower) or,
for sequential models (``SEQUENTIAL = True``: SASRec), from the user's recent item indices
(``sequence_vectors(items, lengths)``).
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
    #: Sequential models only: the window (most recent items kept), layers and heads of the encoder.
    max_seq_len: int = 50
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2

    def to_dict(self) -> dict[str, int | float]:
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


class SASRec(nn.Module):
    """SASRec (Kang & McAuley, 2018): causal self-attention over a user's most recent items.

    Items are indices ``0..N-1`` as in the other models; row ``N`` of the item embedding is padding. Sequences
    are right-aligned (the latest item last) and positions count back from the end of the window, so the
    most recent item always has position ``max_seq_len - 1`` whatever the padding of its batch: a request's
    scores do not depend on the other requests batched with it. The query vector is the encoder's output at the
    last position; scores are its dot product with the *shared* item embedding (no separate output layer).
    """

    SEQUENTIAL = True

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.embedding_dim
        self.padding_index = dims.n_items
        self.item_embedding = nn.Embedding(dims.n_items + 1, d, padding_idx=self.padding_index)
        self.position_embedding = nn.Embedding(dims.max_seq_len, d)
        self.dropout = nn.Dropout(dims.dropout)
        layer = nn.TransformerEncoderLayer(
            d, dims.n_heads, dim_feedforward=dims.hidden_dim, dropout=dims.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        # nested tensors only help with key-padding masks; ours is a full per-row mask
        self.encoder = nn.TransformerEncoder(layer, dims.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        nn.init.normal_(self.position_embedding.weight, std=0.1)
        with torch.no_grad():
            self.item_embedding.weight[self.padding_index].zero_()

    def _mask(self, padded: torch.Tensor) -> torch.Tensor:
        """Boolean attention mask [B * heads, T, T]: True = may not attend.

        Causal, and no query attends to a padding key; every position may attend to itself, so a padding row is
        never fully masked (a fully masked softmax row is NaN, and NaN * 0 still leaks through the next layer).
        """
        b, t = padded.shape
        causal = torch.ones(t, t, dtype=torch.bool, device=padded.device).triu(1)
        blocked = causal.unsqueeze(0) | padded.unsqueeze(1)  # [B, T(query), T(key)]
        blocked = blocked & ~torch.eye(t, dtype=torch.bool, device=padded.device).unsqueeze(0)
        return blocked.repeat_interleave(self.dims.n_heads, dim=0)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """[B, T] right-aligned item indices (padding = ``n_items``), T <= max_seq_len -> hidden states [B, T, D]."""
        t = items.shape[1]
        if t > self.dims.max_seq_len:
            raise ValueError(f"sequence of {t} items exceeds the window of {self.dims.max_seq_len}")
        padded = items == self.padding_index
        positions = torch.arange(self.dims.max_seq_len - t, self.dims.max_seq_len, device=items.device)
        x = self.item_embedding(items) * (self.dims.embedding_dim ** 0.5) + self.position_embedding(positions)
        x = self.dropout(x) * (~padded).unsqueeze(-1)
        x = self.encoder(x, mask=self._mask(padded))
        return self.final_norm(x)

    def sequence_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[B, T] right-aligned item indices -> [B, D]: the state after the most recent item."""
        return self.encode(items)[:, -1, :]

    def item_vectors(self) -> torch.Tensor:
        """All items (shared embedding, padding row excluded) -> [N, D]."""
        return self.item_embedding.weight[: self.dims.n_items]

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Scores of every item after each sequence: [B, N]."""
        return self.sequence_vectors(items) @ self.item_vectors().T


def is_sequential(module: nn.Module) -> bool:
    """True for models that score from a user's recent items rather than from a user id."""
    return bool(getattr(module, "SEQUENTIAL", False))


def pad_sequences(sequences: list[list[int]] | list[tuple[int, ...]], window: int, padding_index: int) -> list[list[int]]:
    """Right-align sequences to the longest (at most ``window``), keeping the most recent items (pure)."""
    kept = [list(seq[-window:]) if window else [] for seq in sequences]
    width = max((len(seq) for seq in kept), default=0) or 1
    return [[padding_index] * (width - len(seq)) + seq for seq in kept]


ModelFactory = Callable[[ModelDims], nn.Module]

#: Keys are the CRD enum ``spec.model.architecture``; keep them in sync with the operator.
ARCHITECTURES: dict[str, ModelFactory] = {
    "matrix-factorization": MatrixFactorization,
    "two-tower": TwoTower,
    "sasrec": SASRec,
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
