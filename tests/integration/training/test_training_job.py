"""The retraining Job's entry point (hybridrec_server.training_job) against a real S3 (moto_server) and real
MovieLens 100K interactions: train, evaluate against the serving version, write a new version manifest last;
bad input exits 2 with the cause; a replacement pod resumes from the checkpoint."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridrec_server import training_job as tj
from hybridrec_server.artifacts import parse_s3_uri, pull_verified, push, s3_client
from hybridrec_server.data import movielens_100k_path, read_interactions, subsample_users
from hybridrec_server.testing import MotoS3Server
from support.stack import aws_environment

BUCKET = "hybridrec-training"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with aws_environment() as env, MotoS3Server() as server:
        env.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
        client = s3_client(server.endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        yield server.endpoint_url, client


@pytest.fixture(scope="module")
def interactions_uri(s3: tuple[str, Any]) -> str:
    """120 MovieLens 100K users as the documented CSV (header, user_id,item_id,rating,timestamp)."""
    raw = subsample_users(read_interactions(movielens_100k_path()), 120, 0)
    lines = ["user_id,item_id,rating,timestamp"] + [f"{u},{i},4,{int(t)}" for u, i, t in zip(raw.users, raw.items, raw.timestamps)]
    s3[1].put_object(Bucket=BUCKET, Key="data/interactions.csv", Body="\n".join(lines).encode())
    return f"s3://{BUCKET}/data/interactions.csv"


@pytest.fixture(scope="module")
def serving(s3: tuple[str, Any], interactions_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The serving version: one epoch on the same users, pushed as a model is pushed today."""
    from hybridrec_server.train import train_and_evaluate

    work = tmp_path_factory.mktemp("serving")
    inter = tj.write_inter(tj.parse_interactions(tj.fetch_text(s3[1], interactions_uri)), work / "x.inter")
    path, _ = train_and_evaluate("two-tower", 1, work / "v1", data_path=inter, seed=1, device="cpu", version="v1")
    uri = f"s3://{BUCKET}/models/movies/v1/"
    return uri, push(path, uri, client=s3[1])


def job_env(data_uri: str, output: str, serving: tuple[str, str] | None, termination: Path, epochs: int = 2) -> dict[str, str]:
    env = {"HYBRIDREC_TRAIN_DATA_URI": data_uri, "HYBRIDREC_TRAIN_OUTPUT_URI": output, "HYBRIDREC_TRAIN_EPOCHS": str(epochs),
           "HYBRIDREC_TRAIN_ARCHITECTURE": "two-tower", "HYBRIDREC_TRAIN_VERSION": output.rstrip("/").rsplit("/", 1)[-1],
           "HYBRIDREC_TERMINATION_LOG": str(termination)}
    if serving:
        env["HYBRIDREC_SERVING_MODEL_URI"], env["HYBRIDREC_SERVING_MODEL_SHA256"] = serving
    return env


def keys(client: Any, uri: str) -> set[str]:
    loc = parse_s3_uri(uri)
    listed = client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.prefix).get("Contents", [])
    return {o["Key"][len(loc.prefix):] for o in listed}


def test_trains_evaluates_against_serving_and_writes_a_new_version_manifest_last(
    s3: tuple[str, Any], interactions_uri: str, serving: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = f"s3://{BUCKET}/models/movies/versions/run-{uuid.uuid4().hex[:6]}/"
    serving_before = keys(s3[1], serving[0])
    termination = tmp_path / "termination"
    monkeypatch.setattr(os, "environ", {**os.environ, **job_env(interactions_uri, output, serving, termination)})
    assert tj.main() == 0
    result = json.loads(termination.read_text())
    ev = result["evaluation"]
    assert 0 < ev["hitRateAt10"] <= 1 and 0 <= ev["servingHitRateAt10"] <= 1 and ev["popularityHitRateAt10"] > 0
    assert {"config.json", "model.safetensors", "evaluation.json", "manifest.json"} <= keys(s3[1], output)
    assert json.loads(s3[1].get_object(Bucket=BUCKET, Key=parse_s3_uri(output).key("evaluation.json"))["Body"].read())[
        "servingHitRateAt10"] == ev["servingHitRateAt10"]
    # The new version verifies against the sha256 the operator reads, and the serving version is untouched.
    verified = pull_verified(result["uri"], tmp_path / "pulled", expected_sha256=result["sha256"], client=s3[1])
    assert verified.config["version"] == result["version"]
    assert keys(s3[1], serving[0]) == serving_before


@pytest.mark.parametrize("body,cause", [
    (None, "does not exist"), (b"", "is empty"), (b"\x1f\x8b\x08\x00garbage\xff\xfe", "not UTF-8"),
    (b"user_id,item_id,rating,timestamp\n1,2,3,notatime\n", "line 2"),
])
def test_bad_input_exits_2_with_the_cause_and_writes_nothing(
    s3: tuple[str, Any], body: bytes | None, cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = f"data/bad-{uuid.uuid4().hex[:6]}.csv"
    if body is not None:
        s3[1].put_object(Bucket=BUCKET, Key=key, Body=body)
    output = f"s3://{BUCKET}/models/movies/versions/bad-{uuid.uuid4().hex[:6]}/"
    termination = tmp_path / "termination"
    monkeypatch.setattr(os, "environ", {**os.environ, **job_env(f"s3://{BUCKET}/{key}", output, None, termination)})
    assert tj.main() == tj.EXIT_BAD_INPUT
    assert cause in termination.read_text()
    assert keys(s3[1], output) == set()


def test_a_replacement_pod_resumes_from_the_checkpoint(
    s3: tuple[str, Any], interactions_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = f"s3://{BUCKET}/models/movies/versions/resume-{uuid.uuid4().hex[:6]}/"
    cfg = tj.JobConfig.from_env(job_env(interactions_uri, output, None, tmp_path / "t", epochs=1))

    class Reclaimed(Exception):
        pass

    def reclaimed(*_: Any, **__: Any) -> Any:
        raise Reclaimed("the pod was reclaimed after the checkpoint, before the upload")

    (tmp_path / "a").mkdir()
    with monkeypatch.context() as m:
        m.setattr(tj, "upload_version", reclaimed)
        with pytest.raises(Reclaimed):
            tj.run(cfg, tmp_path / "a", s3[1])
    assert "checkpoints/artifact/manifest.json" in keys(s3[1], output)
    assert "manifest.json" not in keys(s3[1], output)
    # Its replacement must not train again.
    import hybridrec_server.train as train

    def no_training(*_: Any, **__: Any) -> Any:
        raise AssertionError("trained again instead of resuming from the checkpoint")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    (tmp_path / "b").mkdir()
    second = tj.run(cfg, tmp_path / "b", s3[1])
    assert second["evaluation"]["hitRateAt10"] > 0 and "manifest.json" in keys(s3[1], output)
    # The version is written: its checkpoints are removed.
    assert not {k for k in keys(s3[1], output) if k.startswith("checkpoints/")}
    # A pod killed after the upload: its replacement returns the written version and writes nothing.
    before = {o["Key"]: o["LastModified"] for o in s3[1].list_objects_v2(Bucket=BUCKET, Prefix=parse_s3_uri(output).prefix)["Contents"]}
    monkeypatch.setattr(tj, "upload_version", reclaimed)
    (tmp_path / "c").mkdir()
    third = tj.run(cfg, tmp_path / "c", s3[1])
    assert (third["sha256"], third["version"], third["evaluation"]["hitRateAt10"]) == (
        second["sha256"], second["version"], second["evaluation"]["hitRateAt10"])
    after = {o["Key"]: o["LastModified"] for o in s3[1].list_objects_v2(Bucket=BUCKET, Prefix=parse_s3_uri(output).prefix)["Contents"]}
    assert after == before


@pytest.mark.parametrize("text,rows", [
    ("1\t10\t5\t100\n", [("1", "10", 100.0)]),  # MovieLens u.data
    ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t100\n", [("1", "10", 100.0)]),
    ("item_id,user_id,timestamp\n10,1,100\n", [("1", "10", 100.0)]),
])
def test_documented_formats(text: str, rows: list[tuple[str, str, float]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tj, "MIN_ITEMS", 1)
    assert tj.parse_interactions(text) == rows
