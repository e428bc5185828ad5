"""Train a registered architecture on MovieLens 100K and evaluate it leave-one-out.

Protocol: implicit feedback (every rating is a positive). Per user, the latest interaction is the
test item and the second latest the validation item (early stopping); each is ranked against 99
sampled items the user never interacted with; HR@10 and NDCG@10 are reported next to a popularity
baseline (items ranked by training interaction count). Ties count against the held-out item.
Loss: full softmax over the whole catalogue (cheap at 1,682 items). Seeds fix everything.

Sequential models (SASRec) see the same split as item sequences: each user's training items in time order,
cut from the end into windows of ``max_seq_len + 1`` and trained to predict every next item (causal). The
validation item is scored after the training sequence, the test item after training + validation items.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import (
    Encoded,
    LeaveOneOutSplit,
    encode,
    hit_rate_at_k,
    item_popularity,
    leave_one_out,
    movielens_100k_path,
    ndcg_at_k,
    ranks_of_positive,
    read_interactions,
    sample_negatives,
    subsample_users,
)

if TYPE_CHECKING:
    from .train_checkpoint import EpochCheckpoints

log = logging.getLogger(__name__)
N_NEGATIVES = 99
TOP_K = 10
N_POPULAR = 100


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (defaults tuned once on the validation split)."""

    embedding_dim: int = 64
    hidden_dim: int = 128
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    l2: float = 1e-4
    patience: int = 3
    #: sequential models only
    max_seq_len: int = 50
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2


@dataclass(frozen=True)
class EvalSet:
    """Users, their held-out item and their sampled negatives."""

    users: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


def make_eval_set(enc: Encoded, users: np.ndarray, items: np.ndarray, seed: int) -> EvalSet:
    """Pair each held-out interaction with 99 sampled negatives."""
    return EvalSet(users, items, sample_negatives(enc, users, N_NEGATIVES, seed))


def evaluate_scores(scores: np.ndarray, ev: EvalSet) -> dict[str, float]:
    """HR@10 / NDCG@10 from a full score matrix [n_users, n_items] (pure)."""
    pos = scores[ev.users, ev.positives]
    neg = np.take_along_axis(scores[ev.users], ev.negatives, axis=1)
    ranks = ranks_of_positive(pos, neg)
    return {"hr@10": hit_rate_at_k(ranks, TOP_K), "ndcg@10": ndcg_at_k(ranks, TOP_K)}


def popularity_metrics(split: LeaveOneOutSplit, n_users: int, n_items: int, ev: EvalSet) -> dict[str, float]:
    """The popularity baseline: every user gets the training interaction counts as scores."""
    pop = item_popularity(split.train_items, n_items)
    return evaluate_scores(np.broadcast_to(pop, (n_users, n_items)), ev)


def _model_scores(model: Any, n_users: int, device: Any) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        users = torch.arange(n_users, device=device)
        return model(users).float().cpu().numpy()


def user_sequences(users: np.ndarray, items: np.ndarray, n_users: int) -> list[list[int]]:
    """Per user index, their items in the order given (``leave_one_out`` returns each user's rows in time order)."""
    out: list[list[int]] = [[] for _ in range(n_users)]
    for u, i in zip(users.tolist(), items.tolist()):
        out[u].append(i)
    return out


def training_windows(sequences: list[list[int]], window: int) -> list[list[int]]:
    """Cut each sequence from its end into pieces of ``window + 1`` items overlapping by one (pure).

    Every transition (item -> next item) of a sequence is in exactly one piece; pieces shorter than 2 are dropped.
    """
    out: list[list[int]] = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            out.append(seq[max(0, end - window - 1) : end])
            end -= window
    return out


def _sequence_scores(model: Any, sequences: list[list[int]], device: Any, batch_size: int = 256) -> np.ndarray:
    import torch

    from .models import pad_sequences

    model.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            padded = pad_sequences(sequences[start : start + batch_size], model.dims.max_seq_len, model.padding_index)
            rows.append(model(torch.tensor(padded, device=device)).float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.dims.n_items), dtype=np.float32)


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_and_evaluate(
    architecture: str = "two-tower",
    epochs: int = 30,
    out_dir: str | Path | None = None,
    *,
    subsample: int | None = None,
    seed: int = 0,
    device: str | None = None,
    config: TrainConfig | None = None,
    data_path: str | Path | None = None,
    version: str | None = None,
    torch_threads: int | None = 1,
    checkpoints: EpochCheckpoints | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train ``architecture`` for at most ``epochs`` (early stopping on validation HR@10), evaluate on
    the test split, export an artifact to ``out_dir`` (a new temp dir by default).

    ``subsample`` keeps that many randomly chosen users (CI smoke runs). ``torch_threads`` defaults to 1:
    these matmuls are tiny, and OpenMP threads spinning on a busy CPU made steps 20x slower.
    ``checkpoints`` (``train_checkpoint``): save the training state after every epoch and resume from the latest
    complete checkpoint made for the same data and settings; ``metrics["resumed_from_epoch"]`` says where it resumed.
    Returns ``(artifact_dir, metrics)``.
    """
    import torch

    previous_threads = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        return _train_and_evaluate(
            architecture, epochs, out_dir, subsample, seed, device, config, data_path, version, checkpoints
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_evaluate(
    architecture: str,
    epochs: int,
    out_dir: str | Path | None,
    subsample: int | None,
    seed: int,
    device: str | None,
    config: TrainConfig | None,
    data_path: str | Path | None,
    version: str | None,
    checkpoints: EpochCheckpoints | None = None,
) -> tuple[Path, dict[str, Any]]:
    import dataclasses
    import hashlib

    import torch

    from .export import export_artifact
    from .models import ModelDims, build_model, is_sequential, pick_device

    cfg = config or TrainConfig()
    started = time.perf_counter()
    _seed_everything(seed)
    dev = pick_device(device)
    raw = read_interactions(Path(data_path) if data_path else movielens_100k_path())
    if subsample:
        raw = subsample_users(raw, subsample, seed)
    enc = encode(raw)
    n_users, n_items = len(enc.user_ids), len(enc.item_ids)
    split = leave_one_out(enc)
    val_set = make_eval_set(enc, split.val_users, split.val_items, seed + 1)
    test_set = make_eval_set(enc, split.test_users, split.test_items, seed + 2)
    popularity = popularity_metrics(split, n_users, n_items, test_set)

    dims = ModelDims(
        n_users, n_items, cfg.embedding_dim, cfg.hidden_dim, cfg.max_seq_len, cfg.n_layers, cfg.n_heads, cfg.dropout
    )
    model = build_model(architecture, dims).to(dev)
    sequential = is_sequential(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    users_t = torch.as_tensor(split.train_users, device=dev)
    items_t = torch.as_tensor(split.train_items, device=dev)
    train_seqs = user_sequences(split.train_users, split.train_items, n_users)
    windows = training_windows(train_seqs, dims.max_seq_len) if sequential else []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    epochs_run = 0
    start_epoch, stopped, resumed_from = 1, False, None
    # What a checkpoint must have been made for: other data or settings make its state meaningless here.
    fingerprint: dict[str, Any] = {
        "architecture": architecture, "seed": seed, "n_users": n_users, "n_items": n_items,
        "config": dataclasses.asdict(cfg),
        "train_sha256": hashlib.sha256(split.train_users.tobytes() + split.train_items.tobytes()).hexdigest(),
    }
    state = checkpoints.load(fingerprint) if checkpoints is not None else None
    if state is not None:
        try:
            model.load_state_dict(state.model)
            optimiser.load_state_dict(state.optimiser)
            gen.set_state(state.generator_state)
            torch.set_rng_state(state.torch_rng_state)
        except Exception as exc:  # noqa: BLE001 - e.g. shapes that do not fit: start over from a clean model
            log.warning("ignoring the checkpoint at %s, training from epoch 1: %s", checkpoints.store.where, exc)  # type: ignore[union-attr]
            _seed_everything(seed)
            model = build_model(architecture, dims).to(dev)
            optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            best = (-1.0, 0, copy.deepcopy(model.state_dict()))
        else:
            best = (state.best_hr, state.best_epoch, {k: v.to(dev) for k, v in state.best_model.items()})
            history, epochs_run, stopped = list(state.history), state.epoch, state.stopped
            start_epoch = resumed_from = state.epoch + 1
            log.info("resuming at epoch %d from the checkpoint at %s", start_epoch, checkpoints.store.where)  # type: ignore[union-attr]

    def scores_for(seqs: list[list[int]]) -> np.ndarray:
        return _sequence_scores(model, seqs, dev) if sequential else _model_scores(model, n_users, dev)

    for epoch in range(start_epoch, epochs + 1):
        if stopped:
            break
        model.train()
        if sequential:
            total, count = _sequence_epoch(model, optimiser, windows, cfg.batch_size, gen, dev)
        else:
            order = torch.randperm(len(users_t), generator=gen).to(dev)
            total, count = 0.0, len(order)
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                u, i = users_t[idx], items_t[idx]
                user_vec = model.user_vectors(u)
                logits = user_vec @ model.item_vectors().T
                loss = torch.nn.functional.cross_entropy(logits, i)
                if cfg.l2:
                    loss = loss + cfg.l2 * user_vec.pow(2).sum(dim=1).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
        order_len = count
        epochs_run = epoch
        val = evaluate_scores(scores_for(train_seqs), val_set)
        history.append({"epoch": epoch, "loss": total / max(1, order_len), **val})
        log.info("epoch %d loss %.4f val HR@10 %.4f NDCG@10 %.4f", epoch, total / max(1, order_len), val["hr@10"], val["ndcg@10"])
        if val["hr@10"] > best[0]:
            best = (val["hr@10"], epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            stopped = True
        if checkpoints is not None:
            from .train_checkpoint import TrainState

            checkpoints.save(TrainState(
                epoch=epoch, model=model.state_dict(), optimiser=optimiser.state_dict(), best_hr=best[0],
                best_epoch=best[1], best_model=best[2], history=history, stopped=stopped,
                generator_state=gen.get_state(), torch_rng_state=torch.get_rng_state(), fingerprint=fingerprint,
            ))
    model.load_state_dict(best[2])
    full_seqs = user_sequences(split.train_users, split.train_items, n_users)
    for u, i in zip(split.val_users.tolist(), split.val_items.tolist()):
        full_seqs[u].append(i)
    test = evaluate_scores(scores_for(full_seqs), test_set)

    counts = item_popularity(np.concatenate([split.train_items, split.val_items, split.test_items]), n_items)
    top = np.argsort(-counts, kind="stable")[:N_POPULAR]
    metrics: dict[str, Any] = {
        "architecture": architecture,
        "hr@10": test["hr@10"],
        "ndcg@10": test["ndcg@10"],
        "popularity_hr@10": popularity["hr@10"],
        "popularity_ndcg@10": popularity["ndcg@10"],
        "best_epoch": best[1],
        "epochs_run": epochs_run,
        "n_users": n_users,
        "n_items": n_items,
        "n_train": int(len(split.train_users)),
        "n_test_users": int(len(test_set.users)),
        "seed": seed,
        "subsample": subsample,
        "resumed_from_epoch": resumed_from,
        "device": str(dev),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    dest = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"hybridrec-{architecture}-"))
    export_artifact(
        model,
        dest,
        architecture=architecture,
        dims=dims,
        user_ids=enc.user_ids,
        item_ids=enc.item_ids,
        popular_items=[enc.item_ids[i] for i in top],
        popular_scores=(counts[top] / max(1.0, counts.sum())).tolist(),
        version=version,
        extra={
            "trained_on": "movielens-100k",
            "metrics": {k: v for k, v in metrics.items()},
            "history": history,
            **({"histories": _histories(enc, split, dims.max_seq_len)} if sequential else {}),
        },
    )
    return dest, metrics


def _sequence_epoch(
    model: Any, optimiser: Any, windows: list[list[int]], batch_size: int, gen: Any, device: Any
) -> tuple[float, int]:
    """One epoch of next-item prediction at every position of every window; returns (summed loss, targets)."""
    import torch

    from .models import pad_sequences

    total, count = 0.0, 0
    order = torch.randperm(len(windows), generator=gen).tolist()
    pad = model.padding_index
    for start in range(0, len(order), batch_size):
        chunk = [windows[j] for j in order[start : start + batch_size]]
        inputs = torch.tensor(pad_sequences([w[:-1] for w in chunk], model.dims.max_seq_len, pad), device=device)
        targets = torch.tensor(pad_sequences([w[1:] for w in chunk], model.dims.max_seq_len, pad), device=device)
        targets = targets.masked_fill(targets == pad, -100)  # padding is not a target
        hidden = model.encode(inputs)
        logits = hidden @ model.item_vectors().T
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        n = int((targets != -100).sum())
        total += float(loss.detach()) * n
        count += n
    return total, count


def _histories(enc: Encoded, split: LeaveOneOutSplit, window: int) -> dict[str, list[str]]:
    """Each user's most recent ``window`` items (train, validation and test, in time order) by original id."""
    seqs = user_sequences(split.train_users, split.train_items, len(enc.user_ids))
    for users, items in ((split.val_users, split.val_items), (split.test_users, split.test_items)):
        for u, i in zip(users.tolist(), items.tolist()):
            seqs[u].append(i)
    return {enc.user_ids[u]: [enc.item_ids[i] for i in seq[-window:]] for u, seq in enumerate(seqs) if seq}


def format_report(metrics: dict[str, Any]) -> str:
    """One-paragraph human summary (pure)."""
    pop = metrics["popularity_hr@10"]
    lift = (metrics["hr@10"] / pop - 1.0) * 100 if pop else float("nan")
    return (
        f"{metrics['architecture']}: HR@10 {metrics['hr@10']:.4f}  NDCG@10 {metrics['ndcg@10']:.4f}  |  "
        f"popularity: HR@10 {pop:.4f}  NDCG@10 {metrics['popularity_ndcg@10']:.4f}  |  "
        f"HR@10 lift {lift:+.1f}%  (best epoch {metrics['best_epoch']}/{metrics['epochs_run']}, "
        f"{metrics['n_users']} users, {metrics['n_items']} items, {metrics['train_seconds']}s on {metrics['device']})"
    )
