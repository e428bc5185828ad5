"""The hybridrec operator as a subprocess, started the way it is deployed, for the integration and e2e tests.

One class for every suite: ``python -m hybridrec_operator.cli.operator run`` (``hybridrec operator run``), or plain
``kopf run -m hybridrec_operator.controller.handlers`` with ``via_kopf``. It runs in its own session (so a signal
reaches the whole group), dies with the test process (PR_SET_PDEATHSIG), serves /metrics on a free loopback port,
and counts as started once /metrics answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.processes import free_port, spawn, tail
from support.stack import eventually

MetricSamples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> MetricSamples:
    """Prometheus text exposition -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: MetricSamples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


class OperatorProcess:
    """An operator subprocess with its own log (``<workdir>/<name>.log``) and metrics port.

    ``cluster`` records the process in that local cluster's state (so the cluster's teardown stops it too) and
    supplies the kubeconfig; ``kubeconfig`` alone works without one. ``args`` go after ``run``; ``namespaces``
    limits what it serves (so operators sharing a cluster never share objects); ``prometheus_url`` turns the cost
    controller on (without it the controller is off, whatever the test's environment says); ``interval_s`` is the
    cost controller's period.
    """

    def __init__(self, cluster: LocalCluster | None = None, workdir: Path | None = None, name: str = "operator",
                 args: Sequence[str] = ("--standalone",), env: Mapping[str, str] | None = None, *,
                 via_kopf: bool = False, kubeconfig: Path | None = None, namespaces: Sequence[str] = (),
                 prometheus_url: str | None = None, interval_s: float | None = None, metrics_port: int = 0) -> None:
        if workdir is None or (cluster is None and kubeconfig is None):
            raise ValueError("OperatorProcess needs a workdir and a cluster or a kubeconfig")
        self.cluster, self.name, self.args, self.via_kopf = cluster, name, list(args), via_kopf
        self.kubeconfig = kubeconfig or (cluster.kubeconfig if cluster is not None else None)
        self.workdir = workdir
        self.namespaces = list(namespaces)
        self.prometheus_url = prometheus_url
        self.interval_s = interval_s
        self.env = {"KUBECONFIG": str(self.kubeconfig), **(env or {})}
        self.log = workdir / f"{name}.log"
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def argv(self) -> list[str]:
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)]
        if self.via_kopf:  # configured through the environment, as `kopf run` passes no options to the handlers
            return [sys.executable, "-m", "kopf", "run", *(scope or ["-A"]), "-m",
                    "hybridrec_operator.controller.handlers", *self.args]
        return [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", *self.args, *scope,
                "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1",
                *(["--control-interval", f"{self.interval_s:g}"] if self.interval_s is not None else []),
                *(["--prometheus-url", self.prometheus_url] if self.prometheus_url else [])]

    def start(self, timeout_s: float = 60.0) -> OperatorProcess:
        self.metrics_port = self.metrics_port or free_port()
        env = dict(self.env)
        if self.via_kopf:
            env.update({"HYBRIDREC_METRICS_PORT": str(self.metrics_port), "HYBRIDREC_METRICS_ADDRESS": "127.0.0.1"})
            if self.interval_s is not None:
                env["HYBRIDREC_CONTROL_INTERVAL_SECONDS"] = f"{self.interval_s:g}"
            if self.prometheus_url:
                env["HYBRIDREC_PROMETHEUS_URL"] = self.prometheus_url
        if not self.prometheus_url:
            env.setdefault("HYBRIDREC_PROMETHEUS_URL", "")  # never inherit one from the test's environment
        if self.cluster is not None:
            self.proc = self.cluster.start_process(self.name, self.argv(), env=env, log_path=self.log,
                                                   die_with_parent=True)
        else:
            self.proc, _ = spawn(self.name, self.argv(), self.log, env, die_with_parent=True)

        def up() -> bool:
            if self.exited():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log, 40)}")  # type: ignore[union-attr]
            try:
                return httpx.get(f"http://{self.metrics_address}/metrics", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(up, timeout_s, 0.3, f"{self.name} serving /metrics")
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
        """Signal the operator's process group; SIGKILL if it is still there after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def metrics(self) -> str:
        """The /metrics page as text."""
        return httpx.get(f"http://{self.metrics_address}/metrics", timeout=5.0).text

    def metric_samples(self) -> MetricSamples:
        return parse_metrics(self.metrics())

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metric_samples().items() if n == name and want <= set(ls))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
