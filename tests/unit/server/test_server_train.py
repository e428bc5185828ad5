"""Evaluation maths on hand-made data, and a fast training smoke run on a MovieLens subsample."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from hybridrec_server.artifacts import read_verified
from hybridrec_server.data import (
    Encoded,
    Interactions,
    encode,
    hit_rate_at_k,
    leave_one_out,
    movielens_100k_path,
    ndcg_at_k,
    ranks_of_positive,
    read_interactions,
    sample_negatives,
)
from hybridrec_server.predictor import RecommenderModel
from hybridrec_server.train import train_and_evaluate


def tiny() -> Encoded:
    # user a: items x(t=1), y(t=3), z(t=2) -> test y, val z; user b: only 2 rows -> all train
    return encode(
        Interactions(
            np.array(["a", "a", "a", "b", "b"], dtype=object),
            np.array(["x", "y", "z", "x", "w"], dtype=object),
            np.array([1.0, 3.0, 2.0, 5.0, 6.0]),
        )
    )


def test_leave_one_out_holds_out_latest_then_second_latest() -> None:
    enc = tiny()
    split = leave_one_out(enc)
    name = lambda idx: [enc.item_ids[i] for i in idx]  # noqa: E731
    assert name(split.test_items) == ["y"] and name(split.val_items) == ["z"]
    assert [enc.user_ids[u] for u in split.test_users] == ["a"]
    assert sorted(name(split.train_items)) == ["w", "x", "x"]


def test_sampled_negatives_are_unseen_and_distinct() -> None:
    users = np.array(["u"] * 3 + ["v"], dtype=object)
    items = np.array(["i0", "i1", "i2", "i3"], dtype=object)
    extra_items = np.array([f"n{j}" for j in range(20)], dtype=object)
    enc = encode(
        Interactions(
            np.concatenate([users, np.array(["v"] * 20, dtype=object)]),
            np.concatenate([items, extra_items]),
            np.arange(24, dtype=float),
        )
    )
    u = enc.user_ids.index("u")
    neg = sample_negatives(enc, np.array([u]), 5, seed=1)
    seen = {enc.item_ids.index(i) for i in ("i0", "i1", "i2")}
    assert len(set(neg[0].tolist())) == 5 and not seen & set(neg[0].tolist())
    assert (sample_negatives(enc, np.array([u]), 5, seed=1) == neg).all()  # seeded


def test_rank_metrics() -> None:
    ranks = ranks_of_positive(np.array([0.9, 0.5, 0.1]), np.array([[0.1, 0.2], [0.6, 0.1], [0.1, 0.3]]))
    assert ranks.tolist() == [0, 1, 2]  # a tie counts against the positive
    assert hit_rate_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(4)) / 3)


def test_movielens_is_read_in_place() -> None:
    path = movielens_100k_path()
    assert path.name == "ml-100k.inter" and "recbole" in str(path)
    data = read_interactions(path)
    assert len(data.users) == 100_000
    assert len(set(data.users.tolist())) == 943 and len(set(data.items.tolist())) == 1682


def test_training_smoke_on_a_subsample(tmp_path: Path) -> None:
    started = time.perf_counter()
    path, metrics = train_and_evaluate(
        "two-tower", epochs=4, out_dir=tmp_path / "tt", subsample=150, seed=0, device="cpu"
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 30, f"smoke training took {elapsed:.1f}s"
    assert metrics["n_users"] == 150
    for key in ("hr@10", "ndcg@10", "popularity_hr@10", "popularity_ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["ndcg@10"] <= metrics["hr@10"]
    # random ranking of 1 positive among 100 gives HR@10 = 0.10; even a few epochs must beat that
    assert metrics["hr@10"] > 0.2
    verified = read_verified(path)
    assert verified.config["architecture"] == "two-tower" and verified.config["trained_on"] == "movielens-100k"
    model = RecommenderModel("smoke", str(path), device="cpu")
    model.load()
    model.warmup(4)
    user = verified.config["user_ids"][0]
    rec = model.predict([model.prepare(user, 10)])[0]
    assert len(rec.items) == 10 and not rec.fallback


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    _, m1 = train_and_evaluate("matrix-factorization", epochs=1, out_dir=tmp_path / "a", subsample=60, seed=5, device="cpu")
    _, m2 = train_and_evaluate("matrix-factorization", epochs=1, out_dir=tmp_path / "b", subsample=60, seed=5, device="cpu")
    assert m1["hr@10"] == m2["hr@10"] and m1["ndcg@10"] == m2["ndcg@10"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
