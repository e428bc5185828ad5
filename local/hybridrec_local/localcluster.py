"""An embedded local Kubernetes control plane: real etcd, kube-apiserver, controller-manager and scheduler, plus kwok.

Nothing here needs Docker or root. The binaries come from ``hack/build-binaries.sh`` (``~/.cache/hybridrec/bin`` or
``$HYBRIDREC_BIN``). kwok turns the fake GPU nodes in ``hack/cluster/nodes.yaml`` Ready and makes pods bound to them
Running/Ready, so the *real* scheduler, garbage collector, RBAC and admission run against workloads.

Everything listens on 127.0.0.1 on free ports. The workdir holds the PKI, kubeconfigs, logs and a ``state.json``
that records every process started (control plane and extra services started with :meth:`LocalCluster.start_process`),
so :meth:`LocalCluster.down` can stop them from any Python process, including ``hybridrec cluster down``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
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

import yaml

BUILD_COMMAND = "bash hack/build-binaries.sh"
DEFAULT_BIN_DIR = Path.home() / ".cache" / "hybridrec" / "bin"
DEFAULT_WORKDIR = Path.home() / ".cache" / "hybridrec" / "cluster"
CONFIG_DIR = Path(os.environ.get("HYBRIDREC_CLUSTER_CONFIG", Path(__file__).resolve().parents[2] / "hack" / "cluster"))

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REQUIRED_BINARIES = (*CONTROL_PLANE, "kubectl")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FRONT_PROXY_CLIENT = "front-proxy-client"
CLUSTER_NAME = "hybridrec"
STATE_VERSION = 1

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local control plane could not be started, reached or stopped; the message says what to do."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike CalledProcessError, str() includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()}"


# --------------------------------------------------------------------------------------------------------------------
# Processes


_PR_SET_PDEATHSIG = 1
# Resolved at import time: dlopen() inside a forked child of a multi-threaded parent can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM the calling process when its parent dies; use as ``Popen(preexec_fn=...)``.

    Linux only (no-op elsewhere). The signal fires when the *thread* that forked the child exits, so start children
    from a long-lived thread (the main thread in pytest).
    """
    if _LIBC is None:
        return
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # The parent may have died between fork() and prctl(); then we have already been re-parented.
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


# start_process's own parameter is also called die_with_parent; this alias keeps the function reachable there.
_die_with_parent_hook = die_with_parent


@dataclass(frozen=True)
class ProcessRecord:
    """A process started by LocalCluster: enough to find it again (and not a recycled PID) from another process."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str
    control_plane: bool = False

    def alive(self) -> bool:
        """True while the recorded process (same PID *and* start time) runs and is not a zombie."""
        stat = _proc_stat(self.pid)
        return stat is not None and stat[2] != "Z" and stat[3] == self.start_ticks


def _proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """(pid, ppid, state, start_ticks) from /proc/<pid>/stat, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_proc_stat(raw)


def parse_proc_stat(raw: str) -> tuple[int, int, str, int]:
    """Parse /proc/<pid>/stat; the command name may itself contain spaces and parentheses, hence rpartition."""
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    return int(head.split("(", 1)[0]), int(fields[1]), fields[0], int(fields[19])


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] for all live processes (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(stat[0])
    return children


def descendants(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    """All transitive children of ``pid`` in ``children`` (ppid -> pids), depth first."""
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out


def descendant_pids(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (children, grandchildren, ...)."""
    return descendants(pid, _children_map())


def _pid_running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[2] != "Z"


def stop_processes(records: Sequence[ProcessRecord], grace: float = 10.0) -> list[str]:
    """Stop the recorded processes in reverse start order, each with all its descendants.

    One at a time, because a process often needs the ones started before it to shut down cleanly (the API server
    stalls for seconds when etcd is already gone). SIGTERM first, SIGKILL after ``grace`` seconds.
    Returns the names of the recorded processes that were running.
    """
    live = [r for r in records if r.alive()]
    for rec in reversed(live):
        _stop_tree(rec, grace)
    return [r.name for r in live]


def _stop_tree(rec: ProcessRecord, grace: float) -> None:
    targets = {rec.pid, *descendants(rec.pid, _children_map())}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(rec.pid) == rec.pid:  # started with start_new_session: it leads its own process group
            os.killpg(rec.pid, signal.SIGTERM)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in targets:
            if _pid_running(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_pid_running(p) for p in targets):
            _reap_children()
            time.sleep(0.05)
        if not any(_pid_running(p) for p in targets):
            break
    _reap_children()


# Popen objects of every process start_process launched from this Python process, by PID: polling them reaps
# zombies without os.waitpid(-1), which would steal exit statuses from other code's subprocesses.
_OUR_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    """Reap our own dead children (poll() records their exit status), so they do not linger as zombies."""
    for pid, proc in list(_OUR_CHILDREN.items()):
        if proc.poll() is not None:
            del _OUR_CHILDREN[pid]


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Stop one child we started: SIGTERM (a clean shutdown), then SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path | str, lines: int = 25) -> str:
    """The last ``lines`` lines of a (log) file, or a note that it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so the kernel cannot repeat one)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------------------------------------------------
# PKI and kubeconfigs


@dataclass(frozen=True)
class Pki:
    """Paths of the cluster's certificates and keys (PEM) under ``<workdir>/pki``."""

    dir: Path

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


# name -> (common name, organisations) of the client certificates; the apiserver maps them to RBAC users/groups.
CLIENT_CERTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("hybridrec-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ("system:masters",)),  # kwok acts for many nodes, so it cannot be one system:node
}


def ensure_pki(pki_dir: Path) -> Pki:
    """Create the CA, the apiserver serving cert, client certs and the ServiceAccount key pair unless present."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = Pki(pki_dir)
    names = ["ca", "apiserver", "front-proxy-ca", "front-proxy-client", *CLIENT_CERTS]
    if all(pki.crt(n).exists() and pki.key(n).exists() for n in names) and pki.sa_key.exists() and pki.sa_pub.exists():
        return pki
    pki_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def write_key(path: Path, key: Any) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def subject(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                         + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make_ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = subject(cn)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(name: str, cn: str, orgs: Sequence[str], ca: tuple[Any, x509.Certificate], *, server: bool) -> None:
        ca_key, ca_cert = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(subject(cn, orgs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"]
            ips = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(SERVICE_IP)]
            builder = builder.add_extension(
                x509.SubjectAlternativeName([*map(x509.DNSName, dns), *map(x509.IPAddress, ips)]), critical=False)
        write_key(pki.key(name), key)
        pki.crt(name).write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    def write_ca(name: str, ca: tuple[Any, x509.Certificate]) -> None:
        write_key(pki.key(name), ca[0])
        pki.crt(name).write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

    ca = make_ca("hybridrec-local-ca")
    issue("apiserver", "kube-apiserver", (), ca, server=True)
    for name, (cn, orgs) in CLIENT_CERTS.items():
        issue(name, cn, orgs, ca, server=False)
    # A separate CA for the aggregation layer's request-header authentication (kubeadm does the same): a client
    # certificate from the main CA must never be able to assert X-Remote-User.
    front_proxy_ca = make_ca("hybridrec-front-proxy-ca")
    write_ca("front-proxy-ca", front_proxy_ca)
    issue("front-proxy-client", FRONT_PROXY_CLIENT, (), front_proxy_ca, server=False)
    # RSA for ServiceAccount tokens (RS256), the algorithm every client library verifies.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    # The CA goes last: its presence marks a complete PKI for the reuse check above.
    write_ca("ca", ca)
    return pki


def render_kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str,
                      cluster: str = CLUSTER_NAME) -> str:
    """A self-contained kubeconfig (certificates embedded) for one client-certificate user."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


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
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **(env or {})}
        args = [str(a) for a in argv]
        with open(log, "ab") as fh:
            fh.write(f"==== {dt.datetime.now().isoformat(timespec='seconds')} starting: {' '.join(args)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=cwd, start_new_session=True, close_fds=True,
                                        preexec_fn=_die_with_parent_hook if die_with_parent else None)
            except OSError as exc:
                raise ClusterError(f"cannot start {name} ({args[0]}): {exc}") from exc
        _OUR_CHILDREN[proc.pid] = proc
        stat = _proc_stat(proc.pid)
        record = ProcessRecord(name=name, pid=proc.pid, start_ticks=stat[3] if stat else 0, argv=args,
                               log=str(log), control_plane=_control_plane)
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

        self._launch("etcd", self._etcd_argv(ports))
        self._wait_ready("etcd", lambda: self._probe(f"http://127.0.0.1:{ports['etcd']}/health", None),
                         deadline, timeout, progress)
        self._launch("kube-apiserver", self._apiserver_argv(pki, ports))
        self._wait_ready("kube-apiserver", lambda: self._apiserver_ready(server), deadline, timeout, progress)
        # The rest start together: each only needs the API server.
        self._launch("kube-controller-manager", self._controller_manager_argv(pki, ports, kubeconfigs))
        self._launch("kube-scheduler", self._scheduler_argv(ports, kubeconfigs))
        self._launch("kwok", self._kwok_argv(ports, kubeconfigs), env={"KWOK_WORKDIR": str(self.workdir / "kwok")})
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed throwaways on loopback
        for name, url, ctx in (
            ("kube-controller-manager", f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz", insecure),
            ("kube-scheduler", f"https://127.0.0.1:{ports['kube-scheduler']}/healthz", insecure),
            ("kwok", f"http://127.0.0.1:{ports['kwok']}/healthz", None),
        ):
            self._wait_ready(name, lambda url=url, ctx=ctx: self._probe(url, ctx), deadline, timeout, progress)

        nodes = CONFIG_DIR / "nodes.yaml"
        try:
            self.kubectl("apply", "-f", str(nodes))
        except KubectlError as exc:
            raise ClusterError(f"could not create the fake nodes from {nodes}: {exc}") from exc
        expected = _node_names(nodes)
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
        ready = {n["metadata"]["name"] for n in items
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", []))}
        return expected <= ready

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

    # ---- command lines ------------------------------------------------------------------------------------------
    def _etcd_argv(self, ports: Mapping[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return [str(self.binary("etcd")), "--name=hybridrec", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=hybridrec={peer}", "--initial-cluster-state=new",
                # A throwaway dev/test store: durability is not worth an fsync per write on a shared 2-core box.
                "--unsafe-no-fsync", "--log-level=warn"]

    def _apiserver_argv(self, pki: Pki, ports: Mapping[str, int]) -> list[str]:
        return [str(self.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['kube-apiserver']}",
                f"--cert-dir={self.workdir / 'pki' / 'kube-apiserver'}",
                f"--tls-cert-file={pki.crt('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.crt('ca')}",
                f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # Aggregation layer (metrics/custom-metrics APIs); also lets the controller-manager and scheduler
                # find a complete extension-apiserver-authentication ConfigMap for their delegated authn.
                f"--requestheader-client-ca-file={pki.crt('front-proxy-ca')}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
                f"--proxy-client-key-file={pki.key('front-proxy-client')}",
                # Added to the default admission chain (which includes ValidatingAdmissionPolicy, GA since 1.30).
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                # A loopback advertise address cannot be an Endpoints IP; nothing in-cluster needs the kubernetes
                # Service to route anyway (pods are simulated by kwok).
                "--endpoint-reconciler-type=none",
                "--profiling=false"]

    def _controller_manager_argv(self, pki: Pki, ports: Mapping[str, int], kc: Mapping[str, Path]) -> list[str]:
        own = kc["kube-controller-manager"]
        return [str(self.binary("kube-controller-manager")),
                f"--kubeconfig={own}", f"--authentication-kubeconfig={own}", f"--authorization-kubeconfig={own}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['kube-controller-manager']}",
                f"--cert-dir={self.workdir / 'pki' / 'kube-controller-manager'}",
                "--leader-elect=false",
                # ServiceAccount token controller + kube-root-ca.crt publisher.
                f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.crt('ca')}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.crt('ca')}", f"--cluster-signing-key-file={pki.key('ca')}",
                f"--cluster-name={CLUSTER_NAME}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Default set (deployment, replicaset, garbage collector, disruption, serviceaccount-token, ...).
                "--controllers=*",
                "--profiling=false"]

    def _scheduler_argv(self, ports: Mapping[str, int], kc: Mapping[str, Path]) -> list[str]:
        own = kc["kube-scheduler"]
        return [str(self.binary("kube-scheduler")),
                f"--kubeconfig={own}", f"--authentication-kubeconfig={own}", f"--authorization-kubeconfig={own}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['kube-scheduler']}",
                f"--cert-dir={self.workdir / 'pki' / 'kube-scheduler'}",
                "--leader-elect=false", "--profiling=false"]

    def _kwok_argv(self, ports: Mapping[str, int], kc: Mapping[str, Path]) -> list[str]:
        return [str(self.binary("kwok")), f"--kubeconfig={kc['kwok']}", f"--config={CONFIG_DIR / 'kwok.yaml'}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"]

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
            _reap_children()
            self.state_file.unlink(missing_ok=True)
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        if not quiet:
            (self._progress or _stderr_progress(time.monotonic()))(
                f"stopped {len(stopped)} process(es): {', '.join(stopped) or 'none were running'}")
        return stopped


def _node_names(nodes_yaml: Path) -> set[str]:
    """Names of the Node objects in a multi-document YAML file."""
    return {d["metadata"]["name"] for d in yaml.safe_load_all(nodes_yaml.read_text())
            if d and d.get("kind") == "Node"}
