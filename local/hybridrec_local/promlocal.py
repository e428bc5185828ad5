"""A real, local Prometheus for tests and the demo (Debian package ``prometheus``).

It listens on 127.0.0.1 on a free port, keeps its TSDB in its own directory and discovers the model servers
through file-based service discovery (``targets.json``, written by the pod runner) and the operator through a
second file (``operator-targets.json``). ``stop()``/``start()`` keep the URL and the data, so a test can simulate
an outage and a recovery.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import httpx

from hybridrec_local.processes import die_with_parent, free_port, tail, terminate

SERVER_JOB = "hybridrec-server"
OPERATOR_JOB = "hybridrec-operator"
SERVER_TARGETS = "targets.json"
OPERATOR_TARGETS = "operator-targets.json"


def write_json_atomically(path: Path, payload: object) -> None:
    """Replace ``path`` in one rename so a reader (Prometheus' file_sd) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def render_config(sd_dir: Path, scrape_interval_s: float, rule_files: Sequence[Path] = ()) -> str:
    """prometheus.yml: the server job (file_sd, labels honoured) and the operator job (file_sd)."""
    interval = f"{scrape_interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": SERVER_JOB,
                # The servers label their own series with namespace/model/pool; keep those rather than
                # renaming them to exported_* because the target carries the same labels.
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(sd_dir / SERVER_TARGETS)], "refresh_interval": "1s"}],
            },
            {
                "job_name": OPERATOR_JOB,
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(sd_dir / OPERATOR_TARGETS)], "refresh_interval": "1s"}],
            },
        ],
    }
    # JSON is valid YAML; no YAML emitter needed.
    return json.dumps(config, indent=1)


@dataclass
class LocalPrometheus:
    """One Prometheus process. ``sd_dir`` is where the pod runner writes ``targets.json``."""

    workdir: Path
    sd_dir: Path | None = None
    scrape_interval_s: float = 2.0
    port: int = 0
    binary: str = "prometheus"
    rule_files: Sequence[Path] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.sd_dir = Path(self.sd_dir) if self.sd_dir else self.workdir / "sd"
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def set_operator_targets(self, addresses: Sequence[str], labels: dict[str, str] | None = None) -> None:
        """Tell Prometheus where the operator's /metrics is (``host:port`` each)."""
        assert self.sd_dir is not None
        write_json_atomically(self.sd_dir / OPERATOR_TARGETS, [{"targets": list(addresses), "labels": labels or {}}])

    def _ensure_files(self) -> None:
        assert self.sd_dir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in (SERVER_TARGETS, OPERATOR_TARGETS):
            if not (self.sd_dir / name).exists():
                write_json_atomically(self.sd_dir / name, [])
        self.config_path.write_text(render_config(self.sd_dir, self.scrape_interval_s, self.rule_files))

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (or restart after ``stop()``) on the same port and data directory; wait until ready."""
        if self.running:
            return
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary!r} not found: apt-get install prometheus (see hack/install.sh)")
        self._ensure_files()
        cmd = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        finally:
            log.close()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until /-/ready answers 200; raise with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout_s} s:\n{self.log_tail()}")

    def reload(self) -> None:
        """Re-read the configuration (``--web.enable-lifecycle``)."""
        httpx.post(f"{self.url}/-/reload", timeout=5.0).raise_for_status()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (clean TSDB shutdown), SIGKILL after ``timeout_s``."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> "LocalPrometheus":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use: python -m hybridrec_local.promlocal DIR
    import argparse

    parser = argparse.ArgumentParser(description="Run a local Prometheus scraping the pod runner's targets.")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--sd-dir", type=Path, default=None, help="directory of targets.json (the pod runner's --state-dir)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scrape-interval", type=float, default=2.0)
    args = parser.parse_args()
    prom = LocalPrometheus(args.workdir, sd_dir=args.sd_dir, port=args.port, scrape_interval_s=args.scrape_interval)
    prom.start()
    print(prom.url, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        prom.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
