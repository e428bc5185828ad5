"""Helpers for the operator integration tests: operator subprocesses, kubectl wrappers, polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster, free_ports, tail
from support.stack import wait_for

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "manifests" / "samples"
BAD_CRS = ROOT / "tests" / "unit" / "operator" / "bad_crs"
MANAGED = "app.kubernetes.io/managed-by=hybridrec"
OPERATORS: list["OperatorProcess"] = []

# Short clocks so the suite stays fast; the defaults are for real clusters.
FAST_ENV = {
    "HYBRIDREC_RESYNC_SECONDS": "15",
    "HYBRIDREC_PENDING_GRACE_SECONDS": "5",
    "HYBRIDREC_POOL_STATUS_DELAY": "0.3",
    "HYBRIDREC_PEERING_LIFETIME": "6",
}


class OperatorProcess:
    """An operator subprocess with its own log file and metrics port."""

    def __init__(self, cluster: LocalCluster, log_dir: Path, name: str, args: list[str],
                 env: dict[str, str] | None = None, *, via_kopf: bool = False) -> None:
        self.cluster, self.name, self.args, self.via_kopf = cluster, name, args, via_kopf
        self.env = {**FAST_ENV, **cluster.env(), **(env or {})}
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        OPERATORS.append(self)

    def start(self) -> OperatorProcess:
        self.metrics_port = free_ports(1)[0]
        if self.via_kopf:  # plain `kopf run -m hybridrec_operator.controller.handlers`, configured through the environment
            argv = [sys.executable, "-m", "kopf", "run", "-A", "-m", "hybridrec_operator.controller.handlers", *self.args]
            env = {**self.env, "HYBRIDREC_METRICS_PORT": str(self.metrics_port), "HYBRIDREC_METRICS_ADDRESS": "127.0.0.1"}
        else:
            argv = [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", *self.args,
                    "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1"]
            env = self.env
        self.proc = self.cluster.start_process(self.name, argv, env=env, log_path=self.log, die_with_parent=True)
        wait_for(lambda: "hybridrec operator started" in self.log.read_text(errors="replace") or self.exited(),
                 60, f"{self.name} to start")
        if self.exited():
            pytest.fail(f"{self.name} exited at start-up:\n{tail(self.log, 40)}")
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Kube:
    """kubectl-based helpers for the tests (what a person would type)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, selector: str | None = None) -> Any:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        proc = self(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def items(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        return (self.get(kind, namespace=namespace, selector=selector) or {}).get("items", [])

    def apply(self, docs: list[dict[str, Any]] | str, namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self(*args, input=text, check=check)

    def condition(self, rmd: dict[str, Any] | None, type_: str) -> dict[str, Any]:
        for cond in ((rmd or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return cond
        return {}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def sample_models(namespace: str, *names: str) -> list[dict[str, Any]]:
    """Sample RecModelDeployments (all or ``names``) moved into ``namespace``."""
    docs = [d for d in load_docs(SAMPLES / "models.yaml") if d.get("kind") == "RecModelDeployment"]
    picked = [d for d in docs if not names or d["metadata"]["name"] in names]
    for doc in picked:
        doc["metadata"]["namespace"] = namespace
    return picked



def rmd_ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    rmd = kube.get("rmd", name, namespace)
    if rmd and kube.condition(rmd, "Ready").get("status") == "True" and \
            (rmd.get("status") or {}).get("observedGeneration") == rmd["metadata"]["generation"]:
        return rmd
    return None


