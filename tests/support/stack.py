"""Real components for the end-to-end tests: a moto_server S3 with a pushed artifact, the pod runner, and small
helpers (polling, Prometheus queries). Every process binds 127.0.0.1 on a free port and dies with the process that
started it (PR_SET_PDEATHSIG). The operator process is in :mod:`support.operator`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import httpx
import pytest

from hybridrec_local.processes import die_with_parent, free_port, tail, terminate
from hybridrec_local.promlocal import SERVER_TARGETS

T = TypeVar("T")

# The namespace the e2e operator serves and its control interval (tests/e2e/conftest.py).
E2E_NAMESPACE = "e2e-closed-loop"
E2E_CONTROL_INTERVAL_S = 5.0

# moto accepts any credentials; fixed fake ones keep boto3 from searching the machine for real ones.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def aws_environment() -> Iterator[pytest.MonkeyPatch]:
    """This process's AWS environment set to the fake credentials (in-process boto3 uses the standard chain, like
    production) and put back as it was afterwards; the yielded MonkeyPatch sets more (an endpoint) the same way."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in FAKE_AWS.items():
            env.setenv(key, value)
        yield env


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition", interval: float = 0.3) -> T:
    """Poll until ``predicate`` returns something truthy (and return it); fail the test after ``timeout`` seconds.

    Unlike :func:`eventually`, an AssertionError raised by ``predicate`` fails at once instead of being retried.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


def eventually(check: Callable[[], T], timeout_s: float, interval_s: float = 0.5, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (returned) or raise AssertionError with the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as exc:  # a check may assert to explain itself
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)


def start_logged(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child with output appended to ``log_path``; it dies with us."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as fh:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, preexec_fn=die_with_parent,
        )


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``."""
    terminate(proc, grace_s)


def log_tail(path: Path, lines: int = 40) -> str:
    return tail(path, lines)



# ----------------------------------------------------------------------------------------------- Prometheus


def prom_query(url: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; the result list (``metric``, ``value``)."""
    resp = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5.0)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def prom_metric_names(url: str, match: str, since_s: float) -> set[str]:
    """Names of the metrics matching ``match`` that have samples in the last ``since_s`` seconds."""
    now = time.time()
    resp = httpx.get(f"{url}/api/v1/label/__name__/values", params={"match[]": match, "start": f"{now - since_s:.3f}", "end": f"{now:.3f}"},
                     timeout=5.0)
    resp.raise_for_status()
    return set(resp.json()["data"])


def prom_scalar(url: str, expr: str) -> float | None:
    """The single value of an instant query, or None when it returns nothing."""
    result = prom_query(url, expr)
    if not result:
        return None
    return float(result[0]["value"][1])


# ----------------------------------------------------------------------------------------------- S3


@dataclass
class MotoS3:
    """A real moto_server S3 on loopback, with one small model artifact pushed to ``uri``."""

    workdir: Path
    bucket: str = "hybridrec-models"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    uri: str = ""
    sha256: str = ""
    artifact_dir: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client (pod runner, servers) needs to reach this S3."""
        return {**FAKE_AWS, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self, timeout_s: float = 30.0) -> "MotoS3":
        self.port = self.port or free_port()
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
        argv = [moto, "-H", "127.0.0.1", "-p", str(self.port)] if moto else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = start_logged(argv, self.workdir / "moto.log", FAKE_AWS)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited:\n{log_tail(self.workdir / 'moto.log')}")
            try:
                return httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        eventually(ready, timeout_s, 0.2, "moto_server")
        return self

    def push_small_artifact(self, name: str = "small-two-tower", architecture: str = "two-tower") -> str:
        """Make the small test artifact and push it; returns its URI (and sets ``uri``/``sha256``)."""
        from hybridrec_server.artifacts import push, s3_client
        from hybridrec_server.testing import make_small_artifact

        os.environ.update({k: v for k, v in FAKE_AWS.items() if k not in os.environ})
        self.artifact_dir = make_small_artifact(self.workdir / "artifacts" / name, architecture=architecture)
        client = s3_client(self.endpoint)
        try:
            client.create_bucket(Bucket=self.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.uri = f"s3://{self.bucket}/{name}/"
        self.sha256 = push(self.artifact_dir, self.uri, endpoint_url=self.endpoint, client=client)
        return self.uri

    def stop(self) -> None:
        stop_process(self.proc, 5.0)


# ----------------------------------------------------------------------------------------------- pod runner


@dataclass
class PodRunnerProcess:
    """``python -m hybridrec_local.podrunner`` as a subprocess, plus readers for the files it writes."""

    kubeconfig: Path
    state_dir: Path
    s3: MotoS3 | None = None
    grace_s: float = 3.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "podrunner.log"

    def start(self) -> "PodRunnerProcess":
        argv = [sys.executable, "-m", "hybridrec_local.podrunner", "--kubeconfig", str(self.kubeconfig),
                "--state-dir", str(self.state_dir), "--grace", str(self.grace_s)]
        env: dict[str, str] = {}
        if self.s3 is not None:
            argv += ["--s3", self.s3.endpoint]
            env.update(self.s3.env)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = start_logged(argv, self.log_path, env)
        eventually(lambda: (self.state_dir / SERVER_TARGETS).exists() or self._check_alive(), 30, 0.2, "pod runner start")
        return self

    def _check_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pod runner exited with {self.proc.returncode}:\n{log_tail(self.log_path)}")
        return False

    def servers(self) -> dict[str, list[str]]:
        """Ready server URLs by ``<namespace>/<model>``."""
        self._check_alive()
        try:
            return json.loads((self.state_dir / "servers.json").read_text())
        except (OSError, ValueError):
            return {}

    def targets(self) -> list[dict[str, Any]]:
        """The file_sd groups (one per live server)."""
        try:
            return json.loads((self.state_dir / SERVER_TARGETS).read_text())
        except (OSError, ValueError):
            return []

    def stop(self) -> None:
        stop_process(self.proc, self.grace_s + 10)
