"""Settings from the environment, the model registry, metrics names vs docs, and the local CLI commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hybridrec_server.cli import model_app, train_command
from hybridrec_server.metrics import GPU_METRIC_NAMES, METRIC_NAMES, ServerMetrics
from hybridrec_server.models import ARCHITECTURES, ModelDims, UnknownArchitectureError, build_model, pick_device
from hybridrec_server.settings import Settings, SettingsError
from hybridrec_server.testing import make_small_artifact

REPO = Path(__file__).resolve().parents[3]


def test_settings_defaults_and_env_names() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.max_batch_size, s.max_batch_delay_ms, s.max_queue, s.batching) == (
        "0.0.0.0", 8080, 64, 5.0, 1024, True,
    )
    s = Settings.from_env(
        {
            "HYBRIDREC_MODEL_URI": "s3://b/p/",
            "HYBRIDREC_MODEL_SHA256": "ab" * 32,
            "HYBRIDREC_MODEL_NAME": "recs",
            "HYBRIDREC_NAMESPACE": "shop",
            "HYBRIDREC_POOL": "public-a",
            "HYBRIDREC_HOST": "127.0.0.1",
            "HYBRIDREC_PORT": "9000",
            "HYBRIDREC_MAX_BATCH_SIZE": "32",
            "HYBRIDREC_MAX_BATCH_DELAY_MS": "2.5",
            "HYBRIDREC_MAX_QUEUE": "10",
            "HYBRIDREC_BATCHING": "false",
            "HYBRIDREC_MODEL_CACHE_DIR": "/cache",
            "HYBRIDREC_TORCH_THREADS": "2",
            "HYBRIDREC_PRECISION": "bf16",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        }
    )
    assert s.precision == "bf16" and Settings.from_env({}).precision == "auto"
    assert s.model_uri == "s3://b/p/" and s.model_sha256 == "ab" * 32
    assert (s.model_name, s.namespace, s.pool, s.host, s.port) == ("recs", "shop", "public-a", "127.0.0.1", 9000)
    assert (s.max_batch_size, s.max_batch_delay_ms, s.max_queue, s.batching) == (32, 2.5, 10, False)
    assert (s.model_cache_dir, s.torch_threads, s.s3_endpoint_url) == ("/cache", 2, "http://127.0.0.1:5000")


@pytest.mark.parametrize(
    "env",
    [{"HYBRIDREC_PORT": "http"}, {"HYBRIDREC_PORT": "70000"}, {"HYBRIDREC_BATCHING": "maybe"}, {"HYBRIDREC_MAX_QUEUE": "0"},
     {"HYBRIDREC_PRECISION": "fp8"}],
)
def test_bad_settings_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_registry_keys_match_the_crd_enum_and_share_the_serving_contract() -> None:
    assert set(ARCHITECTURES) == {"matrix-factorization", "two-tower", "sasrec"}
    dims = ModelDims(5, 7, 4, 8)
    for arch in ("matrix-factorization", "two-tower"):  # id models; sasrec: test_server_sasrec.py
        model = build_model(arch, dims)
        users = torch.tensor([0, 3])
        expected = model.user_vectors(users) @ model.item_vectors().T
        assert model(users).shape == (2, 7)
        assert torch.allclose(model(users), expected)
    with pytest.raises(UnknownArchitectureError):
        build_model("wide-and-deep", dims)
    assert pick_device().type in {"cpu", "cuda"}
    assert pick_device("cpu").type == "cpu"


def test_every_metric_is_documented_with_promql() -> None:
    doc = (REPO / "docs" / "metrics-server.md").read_text()
    for name in METRIC_NAMES + GPU_METRIC_NAMES:
        assert f"`{name}`" in doc, name
    assert "histogram_quantile(0.95" in doc


def test_every_series_carries_namespace_model_pool() -> None:
    m = ServerMetrics("shop", "recs", "private")
    m.observe_request("recommend", 200, 0.004)
    m.set_model_info("v1", "two-tower", "cpu")
    m.batch_size.observe(3)
    m.fallback.inc()
    body, _ = m.render()
    samples = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    names = {re.split(r"[{ ]", line)[0] for line in samples}
    for name in METRIC_NAMES:
        assert any(n.startswith(name) for n in names), name
    for line in samples:
        assert 'namespace="shop"' in line and 'model="recs"' in line and 'pool="private"' in line, line


def test_cli_verify_accepts_good_and_names_the_bad_file(tmp_path: Path) -> None:
    path = make_small_artifact(tmp_path / "m", n_users=10, n_items=20, embedding_dim=4, hidden_dim=8)
    runner = CliRunner()
    ok = runner.invoke(model_app, ["verify", str(path)])
    assert ok.exit_code == 0 and "ok:" in ok.output
    (path / "config.json").write_text("{}")
    bad = runner.invoke(model_app, ["verify", str(path)])
    assert bad.exit_code == 1 and "config.json" in bad.output


def test_train_command_prints_metrics(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # keep "train" a subcommand, as in the lead's CLI
    out = tmp_path / "mf"
    result = CliRunner().invoke(
        app, ["train", "--architecture", "matrix-factorization", "--epochs", "1", "--subsample", "40", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "HR@10" in result.output and "popularity" in result.output
    assert (out / "manifest.json").is_file()
    bad = CliRunner().invoke(app, ["train", "--architecture", "gpt"])
    assert bad.exit_code == 1 and "unknown architecture" in bad.output
