"""An embedded local Kubernetes control plane: real etcd, kube-apiserver, controller-manager and scheduler, plus kwok.

Nothing here needs Docker or root. The binaries come from ``hack/build-binaries.sh`` (``~/.cache/hybridrec/bin`` or
``$HYBRIDREC_BIN``). kwok turns the fake GPU nodes in ``hack/cluster/nodes.yaml`` Ready and makes pods bound to them
Running/Ready, so the *real* scheduler, garbage collector, RBAC and admission run against workloads.

This module is the bring-up order and the state file; certificates are in :mod:`hybridrec_local.pki`, the
components' command lines and the fake nodes in :mod:`hybridrec_local.components`, process bookkeeping in
:mod:`hybridrec_local.processes`.

Everything listens on 127.0.0.1 on free ports. The workdir holds the PKI, kubeconfigs, logs and a ``state.json``
that records every process started (control plane and extra services started with :meth:`LocalCluster.start_process`),
so :meth:`LocalCluster.down` can stop them from any Python process, including ``hybridrec cluster down``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridrec_local import components
from hybridrec_local.components import NODES_FILE, node_names, ready_node_names
from hybridrec_local.pki import CLIENT_CERTS, Pki, ensure_pki, render_kubeconfig
from hybridrec_local.processes import (
    ProcessRecord,
    free_ports,
    port_in_use,
    reap_children,
    spawn,
    stop_processes,
    tail,
)

BUILD_COMMAND = "bash hack/build-binaries.sh"
DEFAULT_BIN_DIR = Path.home() / ".cache" / "hybridrec" / "bin"
DEFAULT_WORKDIR = Path.home() / ".cache" / "hybridrec" / "cluster"

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REQUIRED_BINARIES = (*CONTROL_PLANE, "kubectl")
STATE_VERSION = 1

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local control plane could not be started, reached or stopped; the message says what to do."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike CalledProcessError, str() includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


# --------------------------------------------------------------------------------------------------------------------
# State file


@dataclass
class ClusterState:
    """Contents of ``<workdir>/state.json``."""

    version: int = STATE_VERSION
    ready: bool = False
    server: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: str) -> ClusterState:
        data = json.loads(raw)
        procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=procs)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    alive: bool
    log: str


@dataclass(frozen=True)
class ClusterStatus:
    """What :meth:`LocalCluster.status` reports; ``running`` means every control-plane process is up and /readyz OK."""

    running: bool
    server: str
    kubeconfig: Path
    processes: list[ProcessStatus]


def _stderr_progress(start: float) -> Progress:
    def emit(msg: str) -> None:
        print(f"[cluster +{time.monotonic() - start:5.1f}s] {msg}", file=sys.stderr, flush=True)

    return emit


# --------------------------------------------------------------------------------------------------------------------
# The cluster


class LocalCluster:
    """A local control plane rooted at ``workdir``; see the module docstring.

    ``die_with_parent=True`` (tests) makes every process it starts die with the Python process that started it;
    ``False`` (``hybridrec cluster up``) leaves the cluster running detached after the CLI exits.
    ``ports`` pins component ports (names as in :data:`CONTROL_PLANE`, plus ``etcd-peer``); the rest are free ports.
    """

    def __init__(self, workdir: Path | str | None = None, *, bin_dir: Path | str | None = None,
                 die_with_parent: bool = False, progress: Progress | None = None,
                 ports: Mapping[str, int] | None = None) -> None:
        self.workdir = Path(workdir).expanduser() if workdir is not None else DEFAULT_WORKDIR
        self.bin_dir = Path(bin_dir or os.environ.get("HYBRIDREC_BIN") or DEFAULT_BIN_DIR).expanduser()
        self.die_with_parent = die_with_parent
        self._progress = progress
        self._fixed_ports = dict(ports or {})

    # ---- paths ------------------------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (system:masters); valid once :meth:`up` returned."""
        return self.workdir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pki(self) -> Pki:
        return Pki(self.workdir / "pki")

    @property
    def server(self) -> str:
        """The API server URL (``https://127.0.0.1:<port>``), or "" if no cluster is recorded."""
        return self._read_state().server

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def missing_binaries(self) -> list[str]:
        """Names of required binaries that are not executable in ``bin_dir``."""
        return [b for b in REQUIRED_BINARIES if not os.access(self.binary(b), os.X_OK)]

    def check_binaries(self) -> None:
        """Raise ClusterError naming the build command if any binary is missing."""
        missing = self.missing_binaries()
        if missing:
            raise ClusterError(
                f"missing control-plane binaries in {self.bin_dir}: {', '.join(missing)}. "
                f"Build them once with `{BUILD_COMMAND}` (about 15 minutes; needs Go), "
                "or point HYBRIDREC_BIN at a directory that has them."
            )

    # ---- state --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_state(self) -> ClusterState:
        try:
            return ClusterState.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return ClusterState()
        except (ValueError, TypeError) as exc:
            raise ClusterError(f"unreadable cluster state {self.state_file}: {exc}; delete the workdir") from exc

    def _write_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.state_file)

    def _update_state(self, fn: Callable[[ClusterState], None]) -> None:
        with self._locked():
            state = self._read_state()
            fn(state)
            self._write_state(state)

    # ---- processes ----------------------------------------------------------------------------------------------
    def start_process(self, name: str, argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
                      log_path: Path | str | None = None, *, die_with_parent: bool,
                      cwd: Path | str | None = None, _control_plane: bool = False) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, stdout+stderr appended to ``log_path``, and record it for :meth:`down`.

        ``env`` is merged over ``os.environ``. ``log_path`` defaults to ``<workdir>/logs/<name>.log``.
        ``die_with_parent`` makes it (and, through the kernel, nothing else) get SIGTERM when this process exits;
        :meth:`down` stops it and all its descendants either way.
        """
        log = Path(log_path) if log_path is not None else self.log_dir / f"{name}.log"
        try:
            proc, record = spawn(name, argv, log, env, die_with_parent=die_with_parent, cwd=cwd,
                                 control_plane=_control_plane)
        except OSError as exc:
            raise ClusterError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        self._update_state(lambda s: s.processes.append(record))
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin kubeconfig); text in/out; raises KubectlError if check fails."""
        argv = [str(self.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    # ---- HTTP probes --------------------------------------------------------------------------------------------
    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.crt("ca")))
        ctx.load_cert_chain(str(self.pki.crt("admin")), str(self.pki.key("admin")))
        return ctx

    def api_get(self, path: str, server: str | None = None, timeout: float = 5.0) -> Any:
        """GET ``path`` from the API server as admin and decode the JSON (urllib: no kubectl start-up per poll)."""
        url = (server or self.server) + path
        with urllib.request.urlopen(url, context=self._admin_ssl(), timeout=timeout) as resp:
            return json.loads(resp.read())

    @staticmethod
    def _probe(url: str, context: ssl.SSLContext | None) -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _apiserver_ready(self, server: str) -> bool:
        return bool(server) and self._probe(server + "/readyz", self._admin_ssl())

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def status(self) -> ClusterStatus:
        """Liveness of every recorded process and whether the control plane answers /readyz."""
        state = self._read_state()
        procs = [ProcessStatus(p.name, p.pid, p.alive(), p.log) for p in state.processes]
        cp_alive = {p.name for p in state.processes if p.control_plane and p.alive()}
        running = (state.ready and set(CONTROL_PLANE) <= cp_alive and self.pki.crt("admin").exists()
                   and self._apiserver_ready(state.server))
        return ClusterStatus(running=running, server=state.server, kubeconfig=self.kubeconfig, processes=procs)

    def up(self, timeout: float = 180.0) -> LocalCluster:
        """Start the control plane and fake nodes, or re-use the healthy cluster recorded in the workdir.

        Idempotent. A recorded but unhealthy cluster is stopped and replaced by a fresh one (empty etcd).
        On failure everything started is stopped and ClusterError says which component failed, with its log tail.
        """
        t0 = time.monotonic()
        progress = self._progress or _stderr_progress(t0)
        deadline = t0 + timeout
        self.check_binaries()
        if self.status().running:
            progress(f"re-using the running cluster at {self.server} (kubeconfig {self.kubeconfig})")
            return self
        if self._read_state().processes:
            progress("recorded cluster is not healthy: stopping its leftovers and starting a fresh one")
            self.down(quiet=True)
        try:
            self._start(progress, deadline, timeout)
        except BaseException:
            # KeyboardInterrupt included: never leave half a cluster behind.
            self.down(quiet=True)
            raise
        progress(f"cluster ready in {time.monotonic() - t0:.1f}s: export KUBECONFIG={self.kubeconfig}")
        return self

    def _start(self, progress: Progress, deadline: float, timeout: float) -> None:
        for sub in ("logs", "kwok"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        for stale in self.log_dir.glob("*.log"):
            stale.unlink()
        progress("generating certificates" if not self.pki.crt("ca").exists() else "re-using certificates")
        pki = ensure_pki(self.workdir / "pki")
        ports = self._allocate_ports()
        for name, port in self._fixed_ports.items():
            if port_in_use(port):
                raise ClusterError(f"{name}: port 127.0.0.1:{port} is already in use; "
                                   "stop whatever listens there or let LocalCluster pick a free port")
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        self._write_state(ClusterState(server=server, ports=ports))
        kubeconfigs = self._write_kubeconfigs(pki, server)

        self._launch("etcd", components.etcd_argv(self.binary("etcd"), self.workdir, ports))
        self._wait_ready("etcd", lambda: self._probe(f"http://127.0.0.1:{ports['etcd']}/health", None),
                         deadline, timeout, progress)
        self._launch("kube-apiserver", components.apiserver_argv(self.binary("kube-apiserver"), self.workdir, pki, ports))
        self._wait_ready("kube-apiserver", lambda: self._apiserver_ready(server), deadline, timeout, progress)
        # The rest start together: each only needs the API server.
        self._launch("kube-controller-manager", components.controller_manager_argv(
            self.binary("kube-controller-manager"), self.workdir, pki, ports, kubeconfigs))
        self._launch("kube-scheduler", components.scheduler_argv(self.binary("kube-scheduler"), self.workdir, ports,
                                                                 kubeconfigs))
        self._launch("kwok", components.kwok_argv(self.binary("kwok"), ports, kubeconfigs),
                     env={"KWOK_WORKDIR": str(self.workdir / "kwok")})
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed throwaways on loopback
        for name, url, ctx in (
            ("kube-controller-manager", f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz", insecure),
            ("kube-scheduler", f"https://127.0.0.1:{ports['kube-scheduler']}/healthz", insecure),
            ("kwok", f"http://127.0.0.1:{ports['kwok']}/healthz", None),
        ):
            self._wait_ready(name, lambda url=url, ctx=ctx: self._probe(url, ctx), deadline, timeout, progress)

        nodes = NODES_FILE
        try:
            self.kubectl("apply", "-f", str(nodes))
        except KubectlError as exc:
            raise ClusterError(f"could not create the fake nodes from {nodes}: {exc}") from exc
        expected = node_names(nodes)
        self._wait_ready("kwok", lambda: self._nodes_ready(server, expected), deadline, timeout, progress,
                         what=f"{len(expected)} fake nodes Ready")
        # Pod admission needs the namespace's default ServiceAccount, which the controller-manager creates.
        self._wait_ready("kube-controller-manager", lambda: self._default_sa_exists(server), deadline, timeout,
                         progress, what="default ServiceAccount")
        self._update_state(lambda s: setattr(s, "ready", True))

    def _allocate_ports(self) -> dict[str, int]:
        names = [*CONTROL_PLANE, "etcd-peer"]
        free = iter(free_ports(len(names)))
        return {n: self._fixed_ports.get(n) or next(free) for n in names}

    def _launch(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.start_process(name, argv, env=env, die_with_parent=self.die_with_parent, _control_plane=True)

    def _wait_ready(self, name: str, check: Callable[[], bool], deadline: float, timeout: float, progress: Progress,
                    what: str = "ready") -> None:
        """Poll ``check`` until true; fail fast with the log tail if the component exits or time runs out."""
        rec = next(p for p in reversed(self._read_state().processes) if p.name == name)
        started = time.monotonic()
        while True:
            if check():
                progress(f"{name}: {what} ({time.monotonic() - started:.1f}s)")
                return
            if not rec.alive():
                raise ClusterError(f"{name} exited before it was {what}. Last lines of {rec.log}:\n{tail(rec.log)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} was not {what} within the {timeout:.0f}s timeout. "
                                   f"Last lines of {rec.log}:\n{tail(rec.log)}")
            time.sleep(0.2)

    def _nodes_ready(self, server: str, expected: set[str]) -> bool:
        try:
            items = self.api_get("/api/v1/nodes", server)["items"]
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return expected <= ready_node_names(items)

    def _default_sa_exists(self, server: str) -> bool:
        try:
            self.api_get("/api/v1/namespaces/default/serviceaccounts/default", server)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return True

    def _write_kubeconfigs(self, pki: Pki, server: str) -> dict[str, Path]:
        ca = pki.crt("ca").read_bytes()
        paths: dict[str, Path] = {}
        for name, (cn, _) in CLIENT_CERTS.items():
            path = self.kubeconfig if name == "admin" else self.workdir / f"{name}.kubeconfig"
            path.write_text(render_kubeconfig(server, ca, pki.crt(name).read_bytes(), pki.key(name).read_bytes(), cn))
            path.chmod(0o600)
            paths[name] = path
        return paths

    # ---- teardown -----------------------------------------------------------------------------------------------
    def down(self, grace: float = 10.0, *, quiet: bool = False) -> list[str]:
        """Stop every recorded process (services first, then the control plane) and their descendants.

        Removes the state file and etcd data, keeps the PKI. Returns the names of processes that were running.
        """
        with self._locked():
            state = self._read_state()
            services = [p for p in state.processes if not p.control_plane]
            control = [p for p in state.processes if p.control_plane]
            stopped = stop_processes(services, grace) + stop_processes(control, grace)
            reap_children()
            self.state_file.unlink(missing_ok=True)
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        if not quiet:
            (self._progress or _stderr_progress(time.monotonic()))(
                f"stopped {len(stopped)} process(es): {', '.join(stopped) or 'none were running'}")
        return stopped
