"""A spot reclaim mid-training: the trainer process (``python -m hybridrec_server.training_job``, what the Job's
container and the local pod runner run) is stopped with SIGTERM, as the kubelet / pod runner stops it when its pod
is deleted, right after it wrote its first per-epoch checkpoint to a real S3 (moto_server). The replacement process,
with the same environment as the Job's replacement pod gets, resumes at the next epoch (its log and termination
message say so) and finishes the run: a new version with its manifest written last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hybridrec_server.artifacts import parse_s3_uri, pull_verified, s3_client
from hybridrec_server.data import movielens_100k_path, read_interactions
from hybridrec_server.testing import MotoS3Server
from hybridrec_server.train_checkpoint import POINTER_NAME
from hybridrec_server.training_job import EPOCH_CHECKPOINT_PREFIX
from support.stack import FAKE_AWS, aws_environment

BUCKET = "hybridrec-resume"
# All of MovieLens 100K: an epoch takes about a second here, so the first attempt is still training when it is
# stopped right after its first checkpoint (the test checks that it was: otherwise it proves nothing and fails).
EPOCHS = 5


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    # This process's client; the trainers get the credentials in their environment.
    with aws_environment(), MotoS3Server() as server:
        yield from _bucket(server)


def _bucket(server: MotoS3Server) -> Iterator[tuple[str, Any]]:
    """The bucket with all of MovieLens 100K as the documented CSV."""
    client = s3_client(server.endpoint_url)
    client.create_bucket(Bucket=BUCKET)
    raw = read_interactions(movielens_100k_path())
    lines = ["user_id,item_id,rating,timestamp"] + [
        f"{u},{i},4,{int(t)}" for u, i, t in zip(raw.users, raw.items, raw.timestamps)
    ]
    client.put_object(Bucket=BUCKET, Key="data/interactions.csv", Body="\n".join(lines).encode())
    yield server.endpoint_url, client


def start_trainer(endpoint: str, output: str, termination: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **FAKE_AWS, "AWS_ENDPOINT_URL": endpoint,
           "HYBRIDREC_TRAIN_DATA_URI": f"s3://{BUCKET}/data/interactions.csv", "HYBRIDREC_TRAIN_OUTPUT_URI": output,
           "HYBRIDREC_TRAIN_EPOCHS": str(EPOCHS), "HYBRIDREC_TRAIN_ARCHITECTURE": "two-tower",
           "HYBRIDREC_TRAIN_VERSION": "resume-run", "HYBRIDREC_TERMINATION_LOG": str(termination)}
    with log.open("wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "hybridrec_server.training_job"], env=env, stdout=fh,
                                stderr=subprocess.STDOUT)


def pointer(client: Any, output: str) -> dict[str, Any] | None:
    loc = parse_s3_uri(output)
    try:
        body = client.get_object(Bucket=BUCKET, Key=loc.key(EPOCH_CHECKPOINT_PREFIX + POINTER_NAME))["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def keys(client: Any, output: str) -> set[str]:
    loc = parse_s3_uri(output)
    return {o["Key"][len(loc.prefix):] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=loc.prefix).get("Contents", [])}


def test_a_trainer_stopped_after_its_first_checkpoint_is_resumed_by_its_replacement(
    s3: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = s3
    output = f"s3://{BUCKET}/models/movies/versions/run-{uuid.uuid4().hex[:6]}/"

    first = start_trainer(endpoint, output, tmp_path / "t1", tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while pointer(client, output) is None:
            assert first.poll() is None, f"the trainer exited before a checkpoint:\n{(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # the pod is deleted: spot reclaim
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert first.returncode != 0, "the first attempt finished before it was stopped: nothing was resumed"
    stopped_at = pointer(client, output)
    assert stopped_at is not None and stopped_at["epoch"] < EPOCHS
    assert "manifest.json" not in keys(client, output)  # nothing the operator could promote

    second = start_trainer(endpoint, output, tmp_path / "t2", tmp_path / "second.log")
    assert second.wait(300) == 0, (tmp_path / "second.log").read_text()
    log = (tmp_path / "second.log").read_text()
    resumed_at = stopped_at["epoch"] + 1
    assert f"resuming at epoch {resumed_at} from the checkpoint" in log
    assert f"epoch {stopped_at['epoch']} loss" not in log  # the epochs before the checkpoint were not trained again
    result = json.loads((tmp_path / "t2").read_text())
    assert result["resumedFromEpoch"] == resumed_at
    # The version is written: its checkpoints (the pointer included) are removed; it trained all EPOCHS (below).
    assert pointer(client, output) is None and not {k for k in keys(client, output) if k.startswith("checkpoints/")}
    verified = pull_verified(result["uri"], tmp_path / "pulled", expected_sha256=result["sha256"], client=client)
    assert verified.config["metrics"]["epochs_run"] == EPOCHS
    assert verified.config["metrics"]["resumed_from_epoch"] == resumed_at
