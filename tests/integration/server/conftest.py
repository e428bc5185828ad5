"""Shared fixtures: a real moto S3 server subprocess and a small model trained on real MovieLens data."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from hybridrec_server.artifacts import s3_client
from hybridrec_server.testing import MotoS3Server
from support.stack import FAKE_AWS, aws_environment


@dataclass(frozen=True)
class S3:
    """Handle on the moto server: endpoint, a bucket, a boto3 client and the env a child process needs."""

    endpoint_url: str
    bucket: str
    client: Any

    def env(self) -> dict[str, str]:
        return {**FAKE_AWS, "AWS_ENDPOINT_URL": self.endpoint_url}

    def new_uri(self, name: str = "model") -> str:
        return f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    with aws_environment(), MotoS3Server() as server:
        client = s3_client(server.endpoint_url)
        bucket = "hybridrec-models"
        client.create_bucket(Bucket=bucket)
        yield S3(server.endpoint_url, bucket, client)


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-tower model quickly trained on a MovieLens subsample (real data, a few seconds)."""
    from hybridrec_server.train import train_and_evaluate

    path, metrics = train_and_evaluate(
        "two-tower", epochs=2, out_dir=tmp_path_factory.mktemp("trained") / "two-tower", subsample=120, seed=0, device="cpu"
    )
    assert metrics["n_users"] == 120
    return path
