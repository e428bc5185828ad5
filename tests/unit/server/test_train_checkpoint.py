"""Per-epoch checkpoints: a trainer killed after an epoch resumes at the next one and ends where an uninterrupted run
with the same seed ends; a corrupt, partial or foreign checkpoint is ignored with a warning, never a crash."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from hybridrec_server.train import train_and_evaluate
from hybridrec_server.train_checkpoint import (
    POINTER_NAME,
    DirStore,
    EpochCheckpoints,
    TrainState,
)
from safetensors.torch import load_file

EPOCHS = 3


def tiny_inter(path: Path, users: int = 120, groups: int = 5, items_per_group: int = 24, per_user: int = 12) -> Path:
    """A RecBole .inter file: each user picks items of its own group (120 items: enough for 99 sampled negatives)."""
    rng = random.Random(7)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(users):
        g = u % groups
        for t, item in enumerate(rng.sample(range(g * items_per_group, (g + 1) * items_per_group), per_user)):
            lines.append(f"u{u}\ti{item}\t{t}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Reclaimed(Exception):
    """Stands for the SIGKILL of a spot reclaim right after an epoch's checkpoint."""


class KilledAfter(EpochCheckpoints):
    def __init__(self, store: DirStore, epoch: int) -> None:
        super().__init__(store)
        self.kill_at = epoch

    def save(self, state: TrainState) -> None:
        super().save(state)
        if state.epoch == self.kill_at:
            raise Reclaimed(f"reclaimed after epoch {state.epoch}")


def train(tmp: Path, name: str, data: Path, checkpoints: EpochCheckpoints | None, architecture: str = "two-tower",
          seed: int = 3) -> tuple[Path, dict[str, Any]]:
    return train_and_evaluate(architecture, EPOCHS, tmp / name, data_path=data, seed=seed, device="cpu",
                              checkpoints=checkpoints)


def weights(artifact: Path) -> dict[str, torch.Tensor]:
    return load_file(str(artifact / "model.safetensors"))


@pytest.mark.parametrize("architecture", ["two-tower", "sasrec"])  # sasrec: dropout draws from the global RNG
def test_a_run_killed_after_epoch_1_resumes_at_epoch_2_and_ends_as_an_uninterrupted_run(
    tmp_path: Path, architecture: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = tiny_inter(tmp_path / "tiny.inter")
    ref_dir, ref = train(tmp_path, "ref", data, None, architecture)
    store = DirStore(tmp_path / "ckpt")

    with pytest.raises(Reclaimed):
        train(tmp_path, "first", data, KilledAfter(store, 1), architecture)
    pointer = json.loads((store.root / POINTER_NAME).read_bytes())
    assert pointer["epoch"] == 1 and (store.root / pointer["file"]).exists()

    with caplog.at_level(logging.INFO, logger="hybridrec_server.train"):
        out_dir, resumed = train(tmp_path, "second", data, EpochCheckpoints(store), architecture)
    assert resumed["resumed_from_epoch"] == 2
    assert any("resuming at epoch 2" in r.getMessage() for r in caplog.records)
    assert resumed["epochs_run"] == ref["epochs_run"] == EPOCHS
    for key in ("hr@10", "ndcg@10", "best_epoch"):
        assert resumed[key] == ref[key], key
    got, want = weights(out_dir), weights(ref_dir)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    # Only the latest epoch's tensors are kept next to the pointer.
    assert sorted(p.name for p in store.root.iterdir()) == ["epoch-0003.safetensors", POINTER_NAME]


def _killed_run(tmp_path: Path, data: Path) -> DirStore:
    store = DirStore(tmp_path / "ckpt")
    with pytest.raises(Reclaimed):
        train(tmp_path, "first", data, KilledAfter(store, 1))
    return store


def _pointer(store: DirStore) -> dict[str, Any]:
    return json.loads((store.root / POINTER_NAME).read_bytes())


def corrupt_tensors(store: DirStore) -> None:
    path = store.root / _pointer(store)["file"]
    path.write_bytes(path.read_bytes()[: 200])  # a partial upload


def garbage_tensors_with_matching_sha(store: DirStore) -> None:
    import hashlib

    pointer = _pointer(store)
    garbage = b"\x80\x04 not safetensors"  # a pickle header, not a safetensors file: never unpickled
    (store.root / pointer["file"]).write_bytes(garbage)
    pointer["sha256"] = hashlib.sha256(garbage).hexdigest()
    (store.root / POINTER_NAME).write_text(json.dumps(pointer))


def missing_tensors(store: DirStore) -> None:
    (store.root / _pointer(store)["file"]).unlink()


def truncated_pointer(store: DirStore) -> None:
    (store.root / POINTER_NAME).write_bytes((store.root / POINTER_NAME).read_bytes()[:40])


def foreign_pointer(store: DirStore) -> None:
    pointer = _pointer(store)
    pointer["fingerprint"]["seed"] = 99  # made by a run with other settings
    (store.root / POINTER_NAME).write_text(json.dumps(pointer))


@pytest.mark.parametrize(
    "damage", [corrupt_tensors, garbage_tensors_with_matching_sha, missing_tensors, truncated_pointer, foreign_pointer]
)
def test_a_bad_checkpoint_is_ignored_with_a_warning_and_training_starts_over(
    tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    data = tiny_inter(tmp_path / "tiny.inter")
    store = _killed_run(tmp_path, data)
    damage(store)
    with caplog.at_level(logging.WARNING):
        _, metrics = train(tmp_path, "again", data, EpochCheckpoints(store))
    assert metrics["resumed_from_epoch"] is None and metrics["epochs_run"] == EPOCHS
    assert any("ignoring the checkpoint" in r.getMessage() for r in caplog.records)
    assert _pointer(store)["epoch"] == EPOCHS  # and it checkpointed again, over the bad one


def test_a_checkpoint_from_other_data_is_not_resumed(tmp_path: Path) -> None:
    store = _killed_run(tmp_path, tiny_inter(tmp_path / "a.inter"))
    other = tiny_inter(tmp_path / "b.inter", users=110)
    _, metrics = train(tmp_path, "other", other, EpochCheckpoints(store))
    assert metrics["resumed_from_epoch"] is None
