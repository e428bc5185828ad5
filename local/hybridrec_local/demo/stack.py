"""The demo's processes: what it checks before starting, how it starts the control plane, the S3 store, Prometheus,
the operator and the pod runner, how it notices one of them died, and how it stops them all.

Every process is recorded in the local cluster's state file, so :meth:`DemoStack.down` (or ``hybridrec demo down``
from another shell) stops all of them, whichever step the demo reached.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridrec_local.demo.errors import DemoError
from hybridrec_local.demo.files import CRDS_DIR, MODELS_FILE, POLICY_DIR, POOLS_FILE
from hybridrec_local.demo.steps import StepHandle, Steps
from hybridrec_local.localcluster import CONTROL_PLANE, ClusterError, LocalCluster
from hybridrec_local.podtargets import SERVERS_FILE
from hybridrec_local.processes import free_port, port_in_use, tail
from hybridrec_local.promlocal import OPERATOR_TARGETS, write_json_atomically

ARTIFACT_BUCKET = "hybridrec-demo"
# moto accepts any credentials; fixed ones keep boto3 from searching the machine for real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "hybridrec-demo", "AWS_SECRET_ACCESS_KEY": "hybridrec-demo", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Services:
    """Where the demo's services listen, and their logs."""

    s3_url: str = ""
    prometheus_url: str = ""
    operator_metrics: str = ""
    runner_dir: Path = Path()
    names: dict[str, str] = field(default_factory=dict)  # service -> log path


def executable(name: str) -> str | None:
    """A console script of this virtualenv, else one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if os.access(local, os.X_OK) else shutil.which(name)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code < 500
    except httpx.HTTPError:
        return False


class DemoStack:
    """The processes of one demo under ``workdir``; ``steps`` prints what happens."""

    def __init__(self, workdir: Path, steps: Steps, *, s3_port: int = 0, prometheus_port: int = 0) -> None:
        self.workdir = workdir
        self.steps = steps
        self.console = steps.console
        self.s3_port = s3_port
        self.prometheus_port = prometheus_port
        self.cluster = LocalCluster(workdir / "cluster", die_with_parent=False, progress=self._cluster_progress)
        self.services = Services(runner_dir=workdir / "podrunner")
        self._cluster_step: StepHandle | None = None

    # ---- bookkeeping -------------------------------------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Any:
        """Start a service, recorded in the cluster state, its output in ``<workdir>/logs/<name>.log``."""
        log_path = self.workdir / "logs" / f"{name}.log"
        self.services.names[name] = str(log_path)
        return self.cluster.start_process(name, argv, env={**S3_ENV, **(env or {})}, log_path=log_path,
                                          die_with_parent=False)

    def alive(self, step: str, *names: str, control_plane: bool = False) -> Callable[[], None]:
        """A check that raises a DemoError with the log tail when a named service (or the control plane) exited."""

        def check() -> None:
            status = self.cluster.status()
            latest = {p.name: p for p in status.processes}  # the last record of a name wins
            for name in names:
                proc = latest.get(name)
                if proc is None or not proc.alive:
                    log_path = self.services.names.get(name, "")
                    raise DemoError(step, f"{name} exited. Last lines of {log_path}:\n{tail(log_path, 15)}",
                                    f"read {log_path}")
            # Process liveness only: a slow /readyz on a busy machine is not a reason to stop the demo.
            down = [n for n in CONTROL_PLANE if control_plane and (n not in latest or not latest[n].alive)]
            if down:
                raise DemoError(step, f"the local control plane stopped: {', '.join(down)} exited",
                                f"look at the logs in {self.cluster.log_dir}")
        return check

    def all_alive(self, step: str) -> Callable[[], None]:
        """:meth:`alive` for every service and the control plane (once they all run)."""
        return self.alive(step, "operator", "pod-runner", "prometheus", "s3", control_plane=True)

    def down(self, reason: str) -> None:
        self.console.print(f"[dim]Stopping everything the demo started ({reason})...[/dim]")
        stopped = self.cluster.down(quiet=True)
        self.console.print(f"[dim]Stopped {len(stopped)} process(es).[/dim]")

    def ready_servers(self) -> dict[str, list[str]]:
        """The pod runner's ready servers by ``<namespace>/<model>``."""
        try:
            return json.loads((self.services.runner_dir / SERVERS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    @property
    def servers_file(self) -> Path:
        return self.services.runner_dir / SERVERS_FILE

    # ---- steps -------------------------------------------------------------------------------------------------
    def check(self) -> None:
        title = "Checking what the demo needs"
        with self.steps.step(title, total=5) as h:
            problems: list[str] = []
            missing = self.cluster.missing_binaries()
            if missing:
                problems.append(f"control-plane binaries missing in {self.cluster.bin_dir}: {', '.join(missing)} "
                                "(run `make install`, or `bash hack/build-binaries.sh`)")
            h.advance()
            if shutil.which("prometheus") is None:
                problems.append("the `prometheus` binary is not on PATH (run `make install`, or `apt-get install prometheus`)")
            if executable("moto_server") is None:
                problems.append("`moto_server` is missing (run `make install`, or `pip install 'moto[server]'`)")
            h.advance()
            for mod, fix in (("matplotlib", "pip install matplotlib"), ("jinja2", "pip install jinja2"),
                             ("hybridrec_server.train", "pip install -e '.[server]'")):
                try:
                    __import__(mod)
                except ImportError:
                    problems.append(f"Python module {mod} is missing ({fix}, or `make install`)")
            h.advance()
            for name, port, flag in (("S3 store", self.s3_port, "--s3-port"),
                                     ("Prometheus", self.prometheus_port, "--prometheus-port")):
                if port and port_in_use(port):
                    problems.append(f"{name}: port 127.0.0.1:{port} is already in use; stop what listens there "
                                    f"or pass {flag} 0 to use a free port")
            h.advance()
            for needed in (CRDS_DIR, POLICY_DIR, POOLS_FILE, MODELS_FILE):
                if not needed.exists() or (needed.is_dir() and not any(needed.glob("*.yaml"))):
                    problems.append(f"{needed} is missing (a fresh clone has it; `make crds` regenerates the CRDs)")
            h.advance()
            if problems:
                raise DemoError(title, "\n  - " + "\n  - ".join(problems), "fix the items above and run `make demo` again")
            if self.cluster.status().processes:
                self.console.print("A previous demo was still running: stopping it first.")
                self.cluster.down(quiet=True)

    def _cluster_progress(self, message: str) -> None:
        if self._cluster_step is not None:
            self._cluster_step.note(message)
            self._cluster_step.advance()

    def start_cluster(self) -> None:
        title = "Starting the local Kubernetes control plane (no Docker)"
        hint = f"look at the logs in {self.cluster.log_dir}; `make demo-down` clears leftovers"
        with self.steps.step(title, hint, total=10) as h:
            self._cluster_step = h
            try:
                self.cluster.up(timeout=240)
            except ClusterError as exc:
                raise DemoError(title, str(exc), hint) from exc
            finally:
                self._cluster_step = None

    def start_s3(self) -> None:
        title = "Starting the S3-compatible store (moto_server)"
        with self.steps.step(title, "run `pip install 'moto[server]'` (make install does)") as h:
            port = self.s3_port or free_port()
            self.services.s3_url = f"http://127.0.0.1:{port}"
            self.start("s3", [executable("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)])
            self.steps.wait(title, f"moto_server on {self.services.s3_url}", lambda: http_ok(self.services.s3_url), 45,
                            f"read {self.services.names['s3']}", self.alive(title, "s3"))
            os.environ.update(S3_ENV)  # boto3 in this process (artifact push) uses the same throwaway credentials
            from hybridrec_server.artifacts import s3_client

            s3_client(self.services.s3_url).create_bucket(Bucket=ARTIFACT_BUCKET)
            h.note(self.services.s3_url)

    def start_prometheus(self) -> None:
        title = "Starting Prometheus"
        with self.steps.step(title, "run `apt-get install prometheus` (make install does)") as h:
            port = self.prometheus_port or free_port()
            self.services.prometheus_url = f"http://127.0.0.1:{port}"
            self.services.operator_metrics = f"127.0.0.1:{free_port()}"
            sd_dir = self.services.runner_dir
            sd_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(sd_dir / OPERATOR_TARGETS, [{"targets": [self.services.operator_metrics], "labels": {}}])
            prom_dir = self.workdir / "prometheus"
            shutil.rmtree(prom_dir, ignore_errors=True)
            self.start("prometheus", [sys.executable, "-m", "hybridrec_local.promlocal", str(prom_dir), "--sd-dir",
                                      str(sd_dir), "--port", str(port), "--scrape-interval", "2"])
            self.steps.wait(title, f"Prometheus on {self.services.prometheus_url}",
                            lambda: http_ok(f"{self.services.prometheus_url}/-/ready"), 60,
                            f"read {self.services.names['prometheus']} and {prom_dir / 'prometheus.log'}",
                            self.alive(title, "prometheus"))
            h.note(self.services.prometheus_url)

    def install(self) -> None:
        title = "Installing the CRDs and the admission policy"
        with self.steps.step(title, "`make crds` regenerates manifests/crds") as h:
            self.cluster.kubectl("apply", "-f", str(CRDS_DIR))
            self.cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=90)
            h.note("CRDs established")
            self.cluster.kubectl("apply", "-f", str(POLICY_DIR))
            h.note("ValidatingAdmissionPolicy applied; checking that the API server enforces it")
            refusal = self._policy_refusal()
        if refusal:
            self.console.print("Admission check: a hand-made pod of restricted data aimed at a public node is refused "
                               f"by the API server itself:\n  [red]{refusal}[/red]", highlight=False)
        else:
            self.console.print("[yellow]The admission policy did not refuse a restricted pod on a public node within "
                               "20 s; the operator's placement rule still applies.[/yellow]")

    def _policy_refusal(self, timeout: float = 20.0) -> str | None:
        """Dry-run (server side) a restricted pod pinned to public nodes; the policy's message, or None if admitted.

        Policies take a moment to load after they are created, hence the retries.
        """
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "restricted-on-public", "namespace": "default",
                            "labels": {"hybridrec.io/model": "account-recs", "hybridrec.io/sensitivity": "restricted"}},
               "spec": {"nodeSelector": {"hybridrec.io/tenancy": "public"},
                        "tolerations": [{"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public",
                                         "effect": "NoSchedule"}],
                        "containers": [{"name": "server", "image": "ghcr.io/hybridrec/server:0.1.0"}]}}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
            if res.returncode != 0:
                return " ".join(res.stderr.split())[:400]
            time.sleep(1.0)
        return None

    def start_operator(self, control_interval_s: float, operator_env: Mapping[str, str]) -> None:
        title = f"Starting the operator (cost controller every {control_interval_s:g} s)"
        with self.steps.step(title) as h:
            port = self.services.operator_metrics.rsplit(":", 1)[1]
            self.start("operator", [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", "--standalone",
                                    "--all-namespaces", "--metrics-port", port, "--metrics-address", "127.0.0.1"],
                       env={**self.cluster.env(), **operator_env,
                            "HYBRIDREC_PROMETHEUS_URL": self.services.prometheus_url,
                            "HYBRIDREC_CONTROL_INTERVAL_SECONDS": f"{control_interval_s:g}",
                            # Retraining passes every 2 s (a run or Job change wakes one at once anyway): the demo's
                            # run is seen rolled out and baked within its compressed day, not 30 s later.
                            "HYBRIDREC_TRAINING_INTERVAL_SECONDS": "2",
                            # Training pods reach the demo's S3 store as a real cluster's reach theirs.
                            "HYBRIDREC_TRAINING_S3_ENDPOINT": self.services.s3_url,
                            "AWS_ENDPOINT_URL": self.services.s3_url})
            self.steps.wait(title, f"operator metrics on {self.services.operator_metrics}",
                            lambda: http_ok(f"http://{self.services.operator_metrics}/metrics"), 90,
                            f"read {self.services.names['operator']}", self.alive(title, "operator"))
            h.note(f"metrics on {self.services.operator_metrics}")

    def start_pod_runner(self) -> None:
        title = "Starting the pod runner (one real model server per Running pod)"
        with self.steps.step(title) as h:
            self.start("pod-runner", [sys.executable, "-m", "hybridrec_local.podrunner", "--kubeconfig",
                                      str(self.cluster.kubeconfig), "--state-dir", str(self.services.runner_dir),
                                      "--s3", self.services.s3_url],
                       env={"AWS_ENDPOINT_URL": self.services.s3_url})
            self.steps.wait(title, "the pod runner's first servers.json", self.servers_file.exists, 60,
                            f"read {self.services.names['pod-runner']}", self.alive(title, "pod-runner"))
            h.note(str(self.services.runner_dir))
