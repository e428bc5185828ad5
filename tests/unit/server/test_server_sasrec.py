"""The sequential transformer recommender: the module itself, its artifact, serving semantics and a training smoke."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridrec_server.export import load_module
from hybridrec_server.artifacts import read_verified
from hybridrec_server.models import ARCHITECTURES, ModelDims, SASRec, build_model, is_sequential, pad_sequences
from hybridrec_server.predictor import RecommenderModel
from hybridrec_server.testing import make_small_artifact
from hybridrec_server.train import TrainConfig, training_windows, user_sequences

N_ITEMS = 40


def small() -> SASRec:
    torch.manual_seed(0)
    model = build_model("sasrec", ModelDims(5, N_ITEMS, 16, 32, max_seq_len=8, n_layers=2, n_heads=2))
    assert isinstance(model, SASRec)
    return model.eval()


def test_registered_and_sequential() -> None:
    assert "sasrec" in ARCHITECTURES
    assert is_sequential(small())
    assert not is_sequential(build_model("two-tower", ModelDims(5, 7, 4, 8)))


def test_pad_sequences_right_aligns_and_keeps_the_most_recent() -> None:
    assert pad_sequences([[1, 2, 3], [4]], window=8, padding_index=9) == [[1, 2, 3], [9, 9, 4]]
    assert pad_sequences([list(range(12))], window=5, padding_index=99) == [[7, 8, 9, 10, 11]]
    assert pad_sequences([[]], window=5, padding_index=9) == [[9]]


def test_scores_do_not_depend_on_padding_or_batch_neighbours() -> None:
    model = small()
    pad = model.padding_index
    with torch.inference_mode():
        alone = model(torch.tensor([[3, 1, 4]]))
        padded = model(torch.tensor([[pad, pad, pad, pad, 3, 1, 4], [5, 9, 2, 6, 5, 3, 5]]))
    assert alone.shape == (1, N_ITEMS)
    assert torch.isfinite(padded).all()
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_attention_is_causal() -> None:
    model = small()
    with torch.inference_mode():
        a = model.encode(torch.tensor([[3, 1, 4, 1, 5]]))
        b = model.encode(torch.tensor([[3, 1, 4, 7, 7]]))
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-5)  # earlier positions never see later items
    assert not torch.allclose(a[0, 4], b[0, 4])


def test_item_vectors_share_the_embedding_without_padding_row() -> None:
    model = small()
    assert model.item_vectors().shape == (N_ITEMS, 16)
    assert model.item_vectors().data_ptr() == model.item_embedding.weight.data_ptr()
    with pytest.raises(ValueError, match="window"):
        model.encode(torch.zeros(1, 9, dtype=torch.long))


def test_training_windows_cover_every_transition_once() -> None:
    seqs = user_sequences(torch.tensor([0, 0, 0, 1, 1]).numpy(), torch.tensor([5, 6, 7, 8, 9]).numpy(), 3)
    assert seqs == [[5, 6, 7], [8, 9], []]
    windows = training_windows([list(range(10)), [1], [2, 3]], window=4)
    assert windows == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5], [0, 1], [2, 3]]
    transitions = {(w[i], w[i + 1]) for w in windows for i in range(len(w) - 1)}
    assert {(i, i + 1) for i in range(9)} <= transitions


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_artifact(
        tmp_path_factory.mktemp("sasrec") / "m", "sasrec", n_users=30, n_items=60, embedding_dim=16, hidden_dim=32,
        max_seq_len=12,
    )


@pytest.fixture(scope="module")
def served(artifact: Path) -> RecommenderModel:
    model = RecommenderModel("seq", str(artifact), device="cpu")
    model.load()
    model.warmup(8)
    return model


def test_artifact_round_trip_is_safetensors_with_the_same_layout(artifact: Path) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    verified = read_verified(artifact)
    assert verified.config["architecture"] == "sasrec"
    assert verified.config["dims"]["max_seq_len"] == 12
    loaded = load_module(verified, torch.device("cpu"))
    assert isinstance(loaded.module, SASRec) and not loaded.module.training


def test_request_history_is_scored_and_stored_history_used_for_known_users(served: RecommenderModel) -> None:
    assert served.ready and served.sequential and served.window == 12
    by_history = served.predict([served.prepare("nobody", 5, history=["1", "2", "3"])])[0]
    assert not by_history.fallback and len(by_history.items) == 5
    stored = [str((7 * 4 + j) % 60 + 1) for j in range(10)]
    by_user = served.predict([served.prepare("4", 5)])[0]
    explicit = served.predict([served.prepare("x", 5, history=stored)])[0]
    assert not by_user.fallback and by_user.items == explicit.items


def test_long_history_keeps_the_most_recent_window(served: RecommenderModel) -> None:
    long = [str(i) for i in range(1, 41)]
    q = served.prepare("u", 5, history=long)
    assert q.history is not None and len(q.history) == 12
    truncated = served.predict([q])[0]
    recent = served.predict([served.prepare("u", 5, history=long[-12:])])[0]
    assert truncated.items == recent.items


def test_unknown_history_items_are_skipped_and_counted(served: RecommenderModel) -> None:
    q = served.prepare("u", 5, history=["1", "no-such", "2", "also-not"])
    assert q.skipped == 2 and q.history is not None and len(q.history) == 2
    same = served.predict([served.prepare("u", 5, history=["1", "2"])])[0]
    assert served.predict([q])[0].items == same.items
    only_unknown = served.prepare("stranger", 3, history=["nope"])
    assert only_unknown.skipped == 1
    rec = served.predict([only_unknown])[0]
    assert rec.fallback and [i for i, _ in rec.items] == ["1", "2", "3"]


def test_batched_answers_equal_single_answers(served: RecommenderModel) -> None:
    queries = [served.prepare(str(u), 5) for u in range(1, 9)] + [served.prepare("x", 5, history=["7"])]
    batched = served.predict(queries)
    for q, rec in zip(queries, batched):
        single = served.predict([q])[0]
        assert [i for i, _ in single.items] == [i for i, _ in rec.items]
        assert [s for _, s in single.items] == pytest.approx([s for _, s in rec.items], abs=1e-4)


def test_describe_reports_precision_and_window(served: RecommenderModel) -> None:
    info = served.describe()
    assert info["architecture"] == "sasrec" and info["window"] == 12 and info["precision"] == "float32"


def test_training_smoke_on_a_subsample(tmp_path: Path) -> None:
    from hybridrec_server.train import train_and_evaluate

    cfg = TrainConfig(embedding_dim=16, hidden_dim=32, batch_size=64, max_seq_len=20, n_layers=1)
    path, metrics = train_and_evaluate("sasrec", 2, tmp_path / "a", subsample=60, seed=1, config=cfg)
    assert 0.0 <= metrics["hr@10"] <= 1.0 and metrics["epochs_run"] >= 1
    model = RecommenderModel("t", str(path), device="cpu")
    model.load()
    model.warmup(4)
    assert model.sequential and model._histories
    user = next(iter(model._histories))
    assert not model.predict([model.prepare(user, 10)])[0].fallback
