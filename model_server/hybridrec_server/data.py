"""MovieLens 100K (read in place from the recbole wheel) and leave-one-out evaluation data.

Everything except :func:`movielens_100k_path` and :func:`read_interactions` is pure and works on
numpy arrays, so it is unit-testable on made-up data.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ML100K_RELATIVE = Path("dataset_example") / "ml-100k" / "ml-100k.inter"


class DatasetNotFoundError(FileNotFoundError):
    """MovieLens 100K is not installed (it ships inside the recbole wheel)."""


def movielens_100k_path() -> Path:
    """Locate ``ml-100k.inter`` inside the installed ``recbole`` package without importing it.

    recbole is installed ``--no-deps``, so importing it would fail; ``find_spec`` only needs its location.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "MovieLens 100K not found: install it with `pip install --no-deps recbole==1.2.1` "
            "(hack/install.sh does this)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / ML100K_RELATIVE
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(f"recbole is installed but {ML100K_RELATIVE} is missing from it")


@dataclass(frozen=True)
class Interactions:
    """Raw interactions as parallel arrays (ids are the dataset's string tokens)."""

    users: np.ndarray  # dtype object (str)
    items: np.ndarray  # dtype object (str)
    timestamps: np.ndarray  # float64


def read_interactions(path: Path) -> Interactions:
    """Parse a recbole atomic ``.inter`` file (tab-separated, typed header line)."""
    with path.open("r", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        names = [h.split(":", 1)[0] for h in header]
        u_col, i_col, t_col = names.index("user_id"), names.index("item_id"), names.index("timestamp")
        users: list[str] = []
        items: list[str] = []
        stamps: list[float] = []
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < len(names):
                continue
            users.append(parts[u_col])
            items.append(parts[i_col])
            stamps.append(float(parts[t_col]))
    return Interactions(np.array(users, dtype=object), np.array(items, dtype=object), np.array(stamps))


def subsample_users(data: Interactions, n_users: int, seed: int) -> Interactions:
    """Keep all interactions of ``n_users`` users drawn at random (seeded)."""
    unique = np.unique(data.users)
    if n_users >= len(unique):
        return data
    rng = np.random.default_rng(seed)
    keep = set(rng.choice(unique, size=n_users, replace=False).tolist())
    mask = np.fromiter((u in keep for u in data.users), dtype=bool, count=len(data.users))
    return Interactions(data.users[mask], data.items[mask], data.timestamps[mask])


@dataclass(frozen=True)
class Encoded:
    """Interactions mapped to dense indices, with the id maps (index -> original id)."""

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # int64
    items: np.ndarray  # int64
    timestamps: np.ndarray


def encode(data: Interactions) -> Encoded:
    """Map string ids to contiguous indices, sorted by id so the maps are deterministic."""
    user_ids, users = np.unique(data.users.astype(str), return_inverse=True)
    item_ids, items = np.unique(data.items.astype(str), return_inverse=True)
    return Encoded(
        user_ids=[str(u) for u in user_ids],
        item_ids=[str(i) for i in item_ids],
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        timestamps=data.timestamps,
    )


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Per user: the latest interaction is test, the second latest validation, the rest train."""

    train_users: np.ndarray
    train_items: np.ndarray
    val_users: np.ndarray
    val_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray


def leave_one_out(enc: Encoded) -> LeaveOneOutSplit:
    """Hold out each user's latest (test) and second-latest (validation) interaction.

    Ties in timestamp are broken by original row order (stable sort) so the split is deterministic.
    Users with fewer than 3 interactions keep everything in train.
    """
    order = np.lexsort((np.arange(len(enc.users)), enc.timestamps, enc.users))
    users, items = enc.users[order], enc.items[order]
    # position of each row from the end of its user's block: 0 = latest
    n = len(users)
    counts = np.bincount(users, minlength=len(enc.user_ids))
    block_end = np.cumsum(counts)[users] - 1
    from_end = block_end - np.arange(n)
    eligible = counts[users] >= 3
    test = eligible & (from_end == 0)
    val = eligible & (from_end == 1)
    train = ~(test | val)
    return LeaveOneOutSplit(
        users[train], items[train], users[val], items[val], users[test], items[test]
    )


def sample_negatives(
    enc: Encoded, eval_users: np.ndarray, n_negatives: int, seed: int
) -> np.ndarray:
    """For each evaluated user, ``n_negatives`` distinct items the user never interacted with: [U, n_neg]."""
    rng = np.random.default_rng(seed)
    n_items = len(enc.item_ids)
    seen: dict[int, set[int]] = {}
    for u, i in zip(enc.users.tolist(), enc.items.tolist()):
        seen.setdefault(u, set()).add(i)
    out = np.empty((len(eval_users), n_negatives), dtype=np.int64)
    for row, u in enumerate(eval_users.tolist()):
        user_seen = seen.get(u, set())
        available = n_items - len(user_seen)
        if available < n_negatives:
            raise ValueError(f"user {u} has only {available} unseen items; need {n_negatives}")
        chosen: list[int] = []
        chosen_set: set[int] = set()
        while len(chosen) < n_negatives:
            for cand in rng.integers(0, n_items, size=2 * n_negatives).tolist():
                if cand not in user_seen and cand not in chosen_set:
                    chosen.append(cand)
                    chosen_set.add(cand)
                    if len(chosen) == n_negatives:
                        break
        out[row] = chosen
    return out


def ranks_of_positive(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """0-based rank of the positive among [positive + negatives]; ties count against the positive."""
    return (neg_scores >= pos_scores[:, None]).sum(axis=1)


def hit_rate_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Fraction of users whose held-out item ranks in the top ``k``."""
    return float((ranks < k).mean()) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k with a single relevant item: 1/log2(rank + 2) inside the top k, else 0."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean())


def item_popularity(items: np.ndarray, n_items: int) -> np.ndarray:
    """Interaction count per item index."""
    return np.bincount(items, minlength=n_items).astype(np.float64)
