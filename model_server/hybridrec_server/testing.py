"""Helpers for tests, end-to-end runs and the demo: a tiny artifact of MovieLens shape, no recbole needed.

    from hybridrec_server.testing import make_small_artifact
    path = make_small_artifact(tmp_path / "model")        # two-tower, random-initialised, ~0.4 MB
    with ServerProcess(str(path), pool="private") as srv:  # real `python -m hybridrec_server`, ready
        httpx.post(f"{srv.url}/v1/recommend", json={"user_id": "1", "k": 5})
    with MotoS3Server() as s3:                             # real moto S3 on 127.0.0.1
        ...  # s3.endpoint_url
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ML100K_USERS = 943
ML100K_ITEMS = 1682


def make_small_artifact(
    dest_dir: str | os.PathLike[str],
    architecture: str = "two-tower",
    seed: int = 0,
    *,
    n_users: int = ML100K_USERS,
    n_items: int = ML100K_ITEMS,
    embedding_dim: int = 32,
    hidden_dim: int = 64,
    version: str | None = None,
    max_seq_len: int = 50,
) -> Path:
    """Write a deterministic random-initialised artifact (ids "1".."n" like MovieLens) and return its path.

    Popular items (the fallback list) are items "1".."100" with decreasing scores, so fallback
    responses are predictable in tests. Sequence models (``sasrec``) also carry a stored history per user:
    user ``u`` has the 10 items ``(7u + j) mod n + 1``, j = 0..9.
    """
    import torch

    from .export import export_artifact
    from .models import ModelDims, build_model, is_sequential

    dims = ModelDims(n_users, n_items, embedding_dim, hidden_dim, max_seq_len=max_seq_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(architecture, dims)
    extra: dict[str, object] = {"trained_on": "random-init (hybridrec_server.testing)"}
    if is_sequential(model):
        extra["histories"] = {
            str(u): [str((7 * u + j) % n_items + 1) for j in range(10)] for u in range(1, n_users + 1)
        }
    n_popular = min(100, n_items)
    return export_artifact(
        model,
        dest_dir,
        architecture=architecture,
        dims=dims,
        user_ids=[str(u) for u in range(1, n_users + 1)],
        item_ids=[str(i) for i in range(1, n_items + 1)],
        popular_items=[str(i) for i in range(1, n_popular + 1)],
        popular_scores=[float(n_popular - i) / n_popular for i in range(n_popular)],
        version=version or f"{architecture}-small-seed{seed}",
        extra=extra,
    )


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, expect: int = 200) -> None:
    """Poll ``url`` until it answers ``expect``; fail early if ``proc`` dies."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == expect:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout_s}s (last: {last})")


class ServerProcess:
    """A real ``python -m hybridrec_server`` child process on 127.0.0.1 and a free port.

        with ServerProcess(model_uri=str(path), pool="private") as srv:
            httpx.post(f"{srv.url}/v1/recommend", json={"user_id": "1", "k": 5})
    """

    def __init__(
        self,
        model_uri: str,
        *,
        port: int | None = None,
        model_name: str = "test-model",
        namespace: str = "test",
        pool: str = "test-pool",
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HYBRIDREC_MODEL_URI": model_uri,
            "HYBRIDREC_MODEL_NAME": model_name,
            "HYBRIDREC_NAMESPACE": namespace,
            "HYBRIDREC_POOL": pool,
            "HYBRIDREC_HOST": "127.0.0.1",
            "HYBRIDREC_PORT": str(self.port),
            "HYBRIDREC_TORCH_THREADS": os.environ.get("HYBRIDREC_TORCH_THREADS", "1"),
            **(env or {}),
        }
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="hybridrec-server-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout_s: float = 60.0) -> "ServerProcess":
        """Spawn the server; by default wait until ``/readyz`` is 200."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hybridrec_server"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until ``/readyz`` answers 200 (raises if the process exits first)."""
        _wait_http(f"{self.url}/readyz", timeout_s, self.proc)

    def logs(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit; return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout_s)

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class MotoS3Server:
    """A real moto S3 server subprocess (``python -m moto.server``) on 127.0.0.1 and a free port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> "MotoS3Server":
        """Spawn moto and wait until it answers."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_http(f"{self.endpoint_url}/moto-api/", timeout_s, self.proc)
        return self

    def stop(self) -> None:
        """Terminate moto."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "MotoS3Server":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
