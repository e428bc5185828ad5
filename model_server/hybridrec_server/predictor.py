"""kserve-style model class: ``load()`` -> ``warmup()`` -> ``ready`` -> ``predict(batch)``.

``prepare()`` turns a validated request into a :class:`Query` of dense indices on the event loop
(cheap, and where unknown candidate items become a 422); ``predict()`` runs a whole batch with one
user-tower pass and one matmul against the item matrix precomputed at load time.

Sequential models (SASRec) score from the user's recent items instead of the user id: the request's
``history`` (oldest first) or, without one, the history the artifact carries for that user id. A history
longer than the model's window keeps its most recent ``max_seq_len`` items; unknown item ids in it are
skipped and counted (``Query.skipped``), never an error. No usable history -> the popular-items fallback.
Precision: fp32 by default, everywhere. ``HYBRIDREC_PRECISION=bf16|fp16`` runs the forward under CUDA autocast
(the final dot product with the item matrix stays fp32 so rankings do not flip on rounding). Measured on an H200
(benchmarks/results/serving_h200.md): for the 64-d SASRec, bf16 autocast was slower than fp32 at every batch size
from 1 to 256 but 32 (the forward is bound by kernel launches, and autocast adds cast kernels), so it is opt-in;
it pays only once the matmuls are large enough to be compute-bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .artifacts import fetch_verified
from .errors import UnknownItemError
from .export import load_module
from .models import is_sequential, pad_sequences, pick_device

#: ``HYBRIDREC_PRECISION`` values: auto = fp32 (reduced precision measured slower for our model sizes, see above).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """One recommendation request in model index space."""

    user_id: str
    user_index: int | None  # None: unknown user -> popular-items fallback
    k: int
    candidates: tuple[int, ...] | None = None
    exclude: tuple[int, ...] = ()
    #: sequential models: the most recent known items (oldest first, at most the window); None for id models
    history: tuple[int, ...] | None = None
    #: unknown item ids dropped from the request's history
    skipped: int = 0


@dataclass(frozen=True)
class Recommendation:
    """Top-k result for one query."""

    user_id: str
    items: list[tuple[str, float]]
    fallback: bool


def _dedupe(values: Sequence[int]) -> tuple[int, ...]:
    """Drop repeats, keeping first occurrence order."""
    return tuple(dict.fromkeys(values))


class RecommenderModel:
    """One served model. Thread-safety: ``predict`` runs on the batcher's single executor thread."""

    def __init__(
        self,
        name: str,
        model_uri: str,
        *,
        expected_sha256: str | None = None,
        cache_dir: str | None = None,
        s3_endpoint_url: str | None = None,
        device: str | None = None,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
        self.name = name
        self.precision = precision
        self.model_uri = model_uri
        self.expected_sha256 = expected_sha256
        self.cache_dir = cache_dir
        self.s3_endpoint_url = s3_endpoint_url
        self.device = pick_device(device)
        self.ready = False
        self.version = ""
        self.architecture = ""
        self.manifest_sha256 = ""
        self.local_dir: Path | None = None
        self._module: torch.nn.Module | None = None
        self._item_matrix_t: torch.Tensor | None = None  # [D, N]
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self._item_ids: list[str] = []
        self._popular: list[tuple[int, float]] = []
        self._popular_score: dict[int, float] = {}
        self.sequential = False
        self.window = 0
        self._histories: dict[str, tuple[int, ...]] = {}
        self._autocast_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Fetch (S3) or locate the artifact, verify every checksum, rebuild the model, precompute items."""
        started = time.perf_counter()
        verified = fetch_verified(self.model_uri, self.cache_dir, self.expected_sha256, self.s3_endpoint_url)
        local = verified.directory
        loaded = load_module(verified, self.device)
        config = loaded.config
        self._module = loaded.module
        with torch.inference_mode():
            self._item_matrix_t = loaded.module.item_vectors().T.contiguous()
        self._item_ids = list(config["item_ids"])
        self._item_index = {item: i for i, item in enumerate(self._item_ids)}
        self._user_index = {user: i for i, user in enumerate(config["user_ids"])}
        self._popular = [
            (self._item_index[item], float(score))
            for item, score in zip(config["popular_items"], config["popular_scores"])
            if item in self._item_index
        ]
        self._popular_score = dict(self._popular)
        self.sequential = is_sequential(loaded.module)
        if self.sequential:
            self.window = int(loaded.module.dims.max_seq_len)
            self._histories = {
                str(user): self._history_indices(items)[0] for user, items in config.get("histories", {}).items()
            }
        self._autocast_dtype = self._pick_autocast()
        self.version = str(config["version"])
        self.architecture = str(config["architecture"])
        self.manifest_sha256 = loaded.manifest_sha256
        self.local_dir = local
        log.info(
            "loaded %s %s (%d users, %d items) from %s on %s in %.2fs",
            self.architecture, self.version, len(self._user_index), len(self._item_ids),
            self.model_uri, self.device, time.perf_counter() - started,
        )

    def _pick_autocast(self) -> torch.dtype | None:
        """Autocast dtype: only on CUDA (CPU autocast is slower) and only when asked for (see the module doc)."""
        if self.device.type != "cuda" or self.precision in {"auto", "fp32"}:
            return None
        if self.precision == "bf16" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _history_indices(self, ids: Sequence[str | int]) -> tuple[tuple[int, ...], int]:
        """Known items of a history, most recent ``window`` kept; and how many unknown ids were skipped."""
        known = [self._item_index.get(str(raw)) for raw in ids]
        out = tuple(i for i in known if i is not None)
        return out[-self.window :] if self.window else out, len(known) - len(out)

    def warmup(self, batch_size: int = 64) -> None:
        """Run the code paths once (allocator, kernels, fallback) so the first real request is not slow."""
        some_user = next(iter(self._user_index), None)
        some_item = self._item_ids[0] if self._item_ids else None
        queries: list[Query] = []
        if some_user is not None:
            queries.append(self.prepare(some_user, 10))
            if some_item is not None:
                queries.append(self.prepare(some_user, 1, candidates=[some_item], exclude=[some_item]))
        queries.append(self.prepare("\x00warmup-unknown-user", 10))
        if self.sequential and self._item_ids:
            # the longest sequence shape, and the one-item shape
            queries.append(self.prepare("\x00warmup", 10, history=self._item_ids[: self.window]))
            queries.append(self.prepare("\x00warmup", 10, history=self._item_ids[:1]))
        self.predict(queries)
        if some_user is not None:
            self.predict([self.prepare(some_user, 10)] * max(1, batch_size))
        self.ready = True

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self._item_ids)

    def knows_user(self, user_id: str) -> bool:
        """True when the user has an embedding."""
        return user_id in self._user_index

    # ------------------------------------------------------------------ requests
    def _indices(self, ids: Sequence[str | int], field: str, strict: bool) -> tuple[int, ...]:
        out: list[int] = []
        unknown: list[str] = []
        for raw in ids:
            idx = self._item_index.get(str(raw))
            if idx is None:
                unknown.append(str(raw))
            else:
                out.append(idx)
        if unknown and strict:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise UnknownItemError(f"{len(unknown)} unknown item id(s): {shown}", field)
        return _dedupe(out)

    def prepare(
        self,
        user_id: str | int,
        k: int,
        candidates: Sequence[str | int] | None = None,
        exclude: Sequence[str | int] | None = None,
        field_prefix: str = "",
        history: Sequence[str | int] | None = None,
    ) -> Query:
        """Validate item ids and map to indices. Unknown candidates -> UnknownItemError; unknown excludes are ignored.

        ``history`` (oldest first) feeds sequential models; id models ignore it. Without one, a sequential model
        uses the artifact's stored history of ``user_id``.
        """
        uid = str(user_id)
        cand = None if candidates is None else self._indices(candidates, f"{field_prefix}candidates", strict=True)
        excl = self._indices(exclude or (), f"{field_prefix}exclude", strict=False)
        if not self.sequential:
            return Query(uid, self._user_index.get(uid), k, cand, excl)
        if history is None:
            return Query(uid, self._user_index.get(uid), k, cand, excl, self._histories.get(uid, ()))
        seq, skipped = self._history_indices(history)
        return Query(uid, self._user_index.get(uid), k, cand, excl, seq, skipped)

    def _scorable(self, q: Query) -> bool:
        """The model can score this query (else the popular-items fallback answers it)."""
        return bool(q.history) if self.sequential else q.user_index is not None

    def _fallback(self, q: Query) -> Recommendation:
        """Popular items (restricted to candidates when given), minus exclusions."""
        excluded = set(q.exclude)
        if q.candidates is not None:
            ranked = sorted(
                (c for c in q.candidates if c not in excluded),
                key=lambda c: -self._popular_score.get(c, 0.0),
            )
            picks = [(c, self._popular_score.get(c, 0.0)) for c in ranked[: q.k]]
        else:
            picks = [(i, s) for i, s in self._popular if i not in excluded][: q.k]
        return Recommendation(q.user_id, [(self._item_ids[i], s) for i, s in picks], True)

    def _rows(self, scores: torch.Tensor, queries: Sequence[Query]) -> list[Recommendation]:
        """Top-k per row of ``scores`` [B, N] for queries without candidates (one batched topk)."""
        if any(q.exclude for q in queries):
            rows = [r for r, q in enumerate(queries) for _ in q.exclude]
            cols = [c for q in queries for c in q.exclude]
            scores = scores.clone()
            scores[rows, cols] = -math.inf
        kmax = min(max(q.k for q in queries), scores.shape[1])
        values, indices = torch.topk(scores, kmax, dim=1)
        values_l, indices_l = values.cpu().tolist(), indices.cpu().tolist()
        out = []
        for q, vals, idxs in zip(queries, values_l, indices_l):
            items = [(self._item_ids[i], v) for i, v in zip(idxs[: q.k], vals[: q.k]) if v != -math.inf]
            out.append(Recommendation(q.user_id, items, False))
        return out

    def _candidate_row(self, scores: torch.Tensor, q: Query) -> Recommendation:
        """Top-k among the query's candidates, minus exclusions."""
        excluded = set(q.exclude)
        cand = [c for c in q.candidates or () if c not in excluded]
        if not cand:
            return Recommendation(q.user_id, [], False)
        sub = scores[torch.tensor(cand, device=scores.device)]
        values, idx = torch.topk(sub, min(q.k, len(cand)))
        items = [(self._item_ids[cand[i]], v) for i, v in zip(idx.cpu().tolist(), values.cpu().tolist())]
        return Recommendation(q.user_id, items, False)

    def predict(self, queries: Sequence[Query]) -> list[Recommendation]:
        """Answer a batch: one user-tower pass + one matmul for all known users, fallbacks for the rest."""
        if self._module is None or self._item_matrix_t is None:
            raise RuntimeError("model not loaded")
        results: list[Recommendation | None] = [None] * len(queries)
        known = [r for r, q in enumerate(queries) if self._scorable(q)]
        for r, q in enumerate(queries):
            if not self._scorable(q):
                results[r] = self._fallback(q)
        if known:
            with torch.inference_mode():
                if self.sequential:
                    padded = pad_sequences([queries[r].history or () for r in known], self.window, self.n_items)
                    with self._autocast():
                        vectors = self._module.sequence_vectors(torch.tensor(padded, device=self.device))
                    vectors = vectors.float()
                else:
                    users = torch.tensor([queries[r].user_index for r in known], device=self.device)
                    vectors = self._module.user_vectors(users)
                scores = vectors @ self._item_matrix_t
                plain = [j for j, r in enumerate(known) if queries[r].candidates is None]
                if plain:
                    sub = scores if len(plain) == len(known) else scores[plain]
                    for j, rec in zip(plain, self._rows(sub, [queries[known[j]] for j in plain])):
                        results[known[j]] = rec
                for j, r in enumerate(known):
                    if queries[r].candidates is not None:
                        results[r] = self._candidate_row(scores[j], queries[r])
        return [r for r in results if r is not None]

    def describe(self) -> dict[str, Any]:
        """Identity of the loaded model (for logs and the root endpoint)."""
        return {
            "model": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "device": str(self.device),
            "precision": str(self._autocast_dtype or torch.float32).removeprefix("torch."),
            "sequential": self.sequential,
            "window": self.window,
            "manifest_sha256": self.manifest_sha256,
            "users": len(self._user_index),
            "items": len(self._item_ids),
            "ready": self.ready,
        }
