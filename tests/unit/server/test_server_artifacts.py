"""Artifact integrity: every way a local artifact can be wrong is refused with the bad file named."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from hybridrec_server.artifacts import (
    CONFIG_NAME,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    ArtifactError,
    ArtifactIntegrityError,
    PickleRefusedError,
    build_manifest,
    parse_s3_uri,
    pickle_signature,
    read_verified,
    resolve_model_uri,
    sha256_hex,
)
from hybridrec_server.predictor import RecommenderModel
from hybridrec_server.testing import make_small_artifact


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return make_small_artifact(tmp_path / "model", n_users=20, n_items=50, embedding_dim=8, hidden_dim=16)


def rewrite_manifest(root: Path) -> None:
    """What an attacker who can write the whole artifact would do: make the manifest match again."""
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.name != MANIFEST_NAME}
    (root / MANIFEST_NAME).write_bytes(build_manifest(files))


def test_valid_artifact_verifies_and_loads(artifact: Path) -> None:
    verified = read_verified(artifact)
    assert verified.config["architecture"] == "two-tower"
    assert verified.manifest_sha256 == sha256_hex((artifact / MANIFEST_NAME).read_bytes())
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {CONFIG_NAME, WEIGHTS_NAME}
    assert manifest["files"][WEIGHTS_NAME]["size"] == (artifact / WEIGHTS_NAME).stat().st_size


def test_tampered_byte_is_refused(artifact: Path) -> None:
    weights = artifact / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch") as info:
        read_verified(artifact)
    assert info.value.path == str(weights)


def test_truncated_file_is_refused(artifact: Path) -> None:
    weights = artifact / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactIntegrityError, match="truncated") as info:
        read_verified(artifact)
    assert WEIGHTS_NAME in str(info.value)


def test_missing_file_is_refused(artifact: Path) -> None:
    (artifact / CONFIG_NAME).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing file") as info:
        read_verified(artifact)
    assert info.value.path == str(artifact / CONFIG_NAME)


def test_missing_manifest_is_refused(artifact: Path) -> None:
    (artifact / MANIFEST_NAME).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing manifest") as info:
        read_verified(artifact)
    assert MANIFEST_NAME in str(info.value)


def test_malformed_manifest_is_refused(artifact: Path) -> None:
    (artifact / MANIFEST_NAME).write_text('{"files": 3}')
    with pytest.raises(ArtifactIntegrityError, match="malformed manifest"):
        read_verified(artifact)


def test_unlisted_extra_file_is_refused(artifact: Path) -> None:
    (artifact / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactIntegrityError, match="not listed") as info:
        read_verified(artifact)
    assert info.value.path == str(artifact / "notes.txt")


def test_pickle_disguised_as_safetensors_is_refused_even_with_a_matching_manifest(artifact: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)  # torch zip format
    (artifact / WEIGHTS_NAME).write_bytes(buf.getvalue())
    rewrite_manifest(artifact)
    with pytest.raises(PickleRefusedError, match="zip archive") as info:
        read_verified(artifact)
    assert info.value.path == str(artifact / WEIGHTS_NAME)


def test_raw_pickle_is_refused_by_magic_bytes(artifact: Path) -> None:
    (artifact / WEIGHTS_NAME).write_bytes(pickle.dumps({"w": [1.0] * 10}, protocol=4))
    rewrite_manifest(artifact)
    with pytest.raises(PickleRefusedError, match="pickle protocol 4"):
        read_verified(artifact)


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "state.pkl", "pytorch_model.bin"])
def test_pickle_suffix_is_refused_even_if_listed(artifact: Path, name: str) -> None:
    (artifact / name).write_bytes(b"not really a pickle")
    rewrite_manifest(artifact)
    with pytest.raises(PickleRefusedError, match="suffix") as info:
        read_verified(artifact)
    assert name in str(info.value)


def test_pin_mismatch_is_refused(artifact: Path) -> None:
    good = read_verified(artifact).manifest_sha256
    assert read_verified(artifact, expected_sha256=good).manifest_sha256 == good
    with pytest.raises(ArtifactIntegrityError, match="HYBRIDREC_MODEL_SHA256"):
        read_verified(artifact, expected_sha256="0" * 64)


def test_server_model_never_loads_a_tampered_artifact(artifact: Path) -> None:
    weights = artifact / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    model = RecommenderModel("m", str(artifact), device="cpu")
    with pytest.raises(ArtifactError, match=WEIGHTS_NAME):
        model.load()
    assert not model.ready


def test_config_that_does_not_match_weights_is_refused(artifact: Path) -> None:
    cfg = json.loads((artifact / CONFIG_NAME).read_text())
    cfg["dims"]["embedding_dim"] = 9
    (artifact / CONFIG_NAME).write_text(json.dumps(cfg))
    rewrite_manifest(artifact)
    model = RecommenderModel("m", str(artifact), device="cpu")
    with pytest.raises(ArtifactIntegrityError, match="weights do not match config"):
        model.load()


def test_pickle_signature_detection() -> None:
    assert pickle_signature(pickle.dumps(1, protocol=2)[:8]) == "pickle protocol 2 header"
    assert pickle_signature(b"PK\x03\x04rest") is not None
    assert pickle_signature(b'{"a": 1}') is None


def test_manifest_is_canonical() -> None:
    a = build_manifest({"b": b"2", "a": b"1"})
    b = build_manifest({"a": b"1", "b": b"2"})
    assert a == b and sha256_hex(a) == sha256_hex(b)


def test_parse_s3_uri_and_resolve_local(tmp_path: Path) -> None:
    loc = parse_s3_uri("s3://bucket/models/two-tower")
    assert (loc.bucket, loc.prefix, loc.key("x")) == ("bucket", "models/two-tower/", "models/two-tower/x")
    assert parse_s3_uri("s3://bucket").prefix == ""
    with pytest.raises(ValueError):
        parse_s3_uri("http://bucket/x")
    assert resolve_model_uri(f"file://{tmp_path}") == tmp_path
    assert resolve_model_uri(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="unsupported"):
        resolve_model_uri("gs://bucket/x")
