"""On a CUDA machine: the models serve the same answers on the GPU as on the CPU, and SASRec's opt-in mixed
precision (HYBRIDREC_PRECISION=bf16 autocast) keeps its rankings. Skipped where there is no GPU (CI, dev machines)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridrec_server.predictor import RecommenderModel
from hybridrec_server.testing import make_small_artifact

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def served(path: Path, device: str, precision: str = "auto") -> RecommenderModel:
    model = RecommenderModel("m", str(path), device=device, precision=precision)
    model.load()
    model.warmup(16)
    return model


@pytest.mark.parametrize("arch", ["two-tower", "sasrec"])
def test_gpu_answers_match_cpu(tmp_path: Path, arch: str) -> None:
    path = make_small_artifact(tmp_path / arch, arch, n_users=200, n_items=500, embedding_dim=64, hidden_dim=128)
    cpu = served(path, "cpu")
    gpu32 = served(path, "cuda", "fp32")
    queries = [str(u) for u in range(1, 65)]
    a = cpu.predict([cpu.prepare(u, 10) for u in queries])
    b = gpu32.predict([gpu32.prepare(u, 10) for u in queries])
    overlap = sum(len({i for i, _ in x.items} & {i for i, _ in y.items}) for x, y in zip(a, b)) / (10 * len(queries))
    assert overlap >= 0.95  # TF32/kernel differences may swap near-ties, nothing more
    for x, y in zip(a, b):
        assert [s for _, s in x.items] == pytest.approx([s for _, s in y.items], rel=2e-2, abs=2e-2)


def test_sasrec_bf16_autocast_keeps_rankings(tmp_path: Path) -> None:
    path = make_small_artifact(tmp_path / "s", "sasrec", n_users=200, n_items=500, embedding_dim=64, hidden_dim=128)
    auto = served(path, "cuda", "bf16")
    exact = served(path, "cuda")
    assert auto.describe()["precision"] in {"bfloat16", "float16"}
    assert exact.describe()["precision"] == "float32"  # the default: measured faster for this size
    history = [str(i) for i in range(1, 120)]  # longer than the window: truncated on the GPU path too
    queries = [str(u) for u in range(1, 129)]
    a = auto.predict([auto.prepare(u, 10) for u in queries] + [auto.prepare("x", 10, history=history)])
    b = exact.predict([exact.prepare(u, 10) for u in queries] + [exact.prepare("x", 10, history=history)])
    overlap = sum(len({i for i, _ in x.items} & {i for i, _ in y.items}) for x, y in zip(a, b)) / (10 * len(a))
    assert overlap >= 0.8, overlap
    assert all(not r.fallback for r in a)
