"""Artifacts through a real moto S3 server: push/pull round trip, manifest last, tamper detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hybridrec_server.artifacts import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    ArtifactIntegrityError,
    parse_s3_uri,
    pull,
    push,
    read_verified,
)
from hybridrec_server.cli import model_app

S3 = Any  # the `s3` fixture's handle (tests/integration/server/conftest.py)


class RecordingClient:
    """The real boto3 client, with the order of uploaded keys recorded."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.put_keys: list[str] = []

    def put_object(self, **kwargs: Any) -> Any:
        self.put_keys.append(kwargs["Key"])
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_cli_push_pull_round_trip(s3: S3, trained_artifact: Path, tmp_path: Path) -> None:
    uri = s3.new_uri()
    runner = CliRunner()
    pushed = runner.invoke(model_app, ["push", str(trained_artifact), uri, "--endpoint-url", s3.endpoint_url])
    assert pushed.exit_code == 0, pushed.output
    digest = read_verified(trained_artifact).manifest_sha256
    assert digest in pushed.output
    dest = tmp_path / "pulled"
    pulled = runner.invoke(model_app, ["pull", uri, str(dest), "--endpoint-url", s3.endpoint_url, "--sha256", digest])
    assert pulled.exit_code == 0, pulled.output
    assert read_verified(dest, digest).weights == (trained_artifact / WEIGHTS_NAME).read_bytes()
    # pulling again over an existing copy replaces it atomically
    assert read_verified(pull(uri, dest, endpoint_url=s3.endpoint_url)).manifest_sha256 == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pulled"]


def test_manifest_is_uploaded_last(s3: S3, trained_artifact: Path) -> None:
    uri = s3.new_uri()
    recorder = RecordingClient(s3.client)
    push(trained_artifact, uri, client=recorder)
    loc = parse_s3_uri(uri)
    assert recorder.put_keys[-1] == loc.key(MANIFEST_NAME)
    assert set(recorder.put_keys[:-1]) == {loc.key("config.json"), loc.key(WEIGHTS_NAME)}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "drop-manifest", "wrong-pin"])
def test_damaged_s3_artifact_fails_pull_and_leaves_nothing(
    s3: S3, trained_artifact: Path, tmp_path: Path, damage: str
) -> None:
    uri = s3.new_uri()
    push(trained_artifact, uri, endpoint_url=s3.endpoint_url)
    loc = parse_s3_uri(uri)
    pin = None
    if damage == "flip-byte":
        data = bytearray((trained_artifact / WEIGHTS_NAME).read_bytes())
        data[1000] ^= 0x10
        s3.client.put_object(Bucket=loc.bucket, Key=loc.key(WEIGHTS_NAME), Body=bytes(data))
        expected = "sha256 mismatch"
    elif damage == "truncate":
        data = (trained_artifact / WEIGHTS_NAME).read_bytes()
        s3.client.put_object(Bucket=loc.bucket, Key=loc.key(WEIGHTS_NAME), Body=data[: len(data) // 2])
        expected = "truncated"
    elif damage == "drop-manifest":  # an interrupted push: files present, manifest never written
        s3.client.delete_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))
        expected = "not found"
    else:
        pin = "f" * 64
        expected = "HYBRIDREC_MODEL_SHA256"
    parent = tmp_path / "cache"
    with pytest.raises(ArtifactIntegrityError, match=expected) as info:
        pull(uri, parent / "model", endpoint_url=s3.endpoint_url, expected_sha256=pin)
    if damage in {"flip-byte", "truncate"}:
        assert info.value.path == f"s3://{loc.bucket}/{loc.key(WEIGHTS_NAME)}"
    assert _leftovers(parent) == []  # no partial copy, no staging directory


def test_failed_pull_keeps_the_previous_good_copy(s3: S3, trained_artifact: Path, tmp_path: Path) -> None:
    uri = s3.new_uri()
    push(trained_artifact, uri, endpoint_url=s3.endpoint_url)
    dest = pull(uri, tmp_path / "model", endpoint_url=s3.endpoint_url)
    good = read_verified(dest).manifest_sha256
    loc = parse_s3_uri(uri)
    s3.client.put_object(Bucket=loc.bucket, Key=loc.key("config.json"), Body=b'{"architecture": "evil"}')
    runner = CliRunner()
    result = runner.invoke(model_app, ["pull", uri, str(dest), "--endpoint-url", s3.endpoint_url])
    assert result.exit_code == 1 and "config.json" in result.output
    assert read_verified(dest).manifest_sha256 == good
    assert _leftovers(tmp_path) == ["model"]


def test_concurrent_pulls_into_a_shared_cache_all_succeed(s3: S3, trained_artifact: Path, tmp_path: Path) -> None:
    """Several servers starting at once with one cache dir (as in the e2e tests) must not trip over each other."""
    from concurrent.futures import ThreadPoolExecutor

    from hybridrec_server.artifacts import fetch_verified

    uri = s3.new_uri()
    digest = push(trained_artifact, uri, endpoint_url=s3.endpoint_url)
    cache = tmp_path / "shared-cache"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: fetch_verified(uri, cache, digest, s3.endpoint_url), range(6)))
    assert {r.manifest_sha256 for r in results} == {digest}
    assert all(r.weights == (trained_artifact / WEIGHTS_NAME).read_bytes() for r in results)
    slots = [p for p in cache.iterdir()]
    assert len(slots) == 1 and read_verified(slots[0]).manifest_sha256 == digest  # no staging/old dirs left
