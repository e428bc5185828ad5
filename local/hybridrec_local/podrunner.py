"""Local pod runner: make pods on kwok's fake nodes serve for real.

kwok marks pods Running without running anything. For tests and the demo this runner watches pods that
hybridrec manages (``app.kubernetes.io/managed-by=hybridrec``), are bound to a kwok node and are Running, and
starts one real ``python -m hybridrec_server`` per pod on 127.0.0.1 (its own free port) with the pod's
``HYBRIDREC_*`` environment. When the pod goes away the server gets SIGTERM (drain), then SIGKILL.

It writes, atomically, into ``--state-dir``:

* ``targets.json``: Prometheus file-based service discovery, one group per server, labelled
  namespace, model, pool, tenancy, sensitivity and pod;
* ``servers.json``: ``{"<namespace>/<model>": ["http://127.0.0.1:<port>", ...]}`` of *ready* servers,
  for load generators.

Run: ``python -m hybridrec_local.podrunner --kubeconfig K --state-dir D [--s3 URL | --model-dir-map URI=DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import httpx

from hybridrec_local.localcluster import die_with_parent
from hybridrec_local.promlocal import SERVER_TARGETS, free_port, write_json_atomically

log = logging.getLogger("hybridrec.podrunner")

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=hybridrec"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SERVERS_FILE = "servers.json"
MODEL_LABEL = "hybridrec.io/model"
POOL_LABEL = "hybridrec.io/pool"
TENANCY_LABEL = "hybridrec.io/tenancy"
SENSITIVITY_LABEL = "hybridrec.io/sensitivity"
# Variables of the runner's own environment handed to every server (credentials and endpoint of the local S3).
PASSTHROUGH_PREFIXES = ("AWS_", "PATH", "HOME", "LANG", "LC_", "PYTHON", "VIRTUAL_ENV", "TMPDIR", "CUDA_", "HF_")


# ----------------------------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class PodTarget:
    """A pod that should have a server: identity, labels and the env its server container asks for."""

    uid: str
    namespace: str
    name: str
    node: str
    model: str
    pool: str
    tenancy: str
    sensitivity: str
    env: Mapping[str, str]

    @property
    def model_key(self) -> str:
        return f"{self.namespace}/{self.model}"


def _field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The few downward-API field paths a rendered pod may use."""
    meta = pod.get("metadata", {})
    if path == "metadata.namespace":
        return str(meta.get("namespace", ""))
    if path == "metadata.name":
        return str(meta.get("name", ""))
    if path == "spec.nodeName":
        return str(pod.get("spec", {}).get("nodeName", ""))
    for kind in ("labels", "annotations"):
        prefix = f"metadata.{kind}['"
        if path.startswith(prefix) and path.endswith("']"):
            return str(meta.get(kind, {}).get(path[len(prefix):-2], ""))
    return ""


def container_env(pod: Mapping[str, Any]) -> dict[str, str] | None:
    """The ``HYBRIDREC_*`` env of the pod's model-server container (the one with HYBRIDREC_MODEL_URI), or None."""
    for container in pod.get("spec", {}).get("containers", []) or []:
        env: dict[str, str] = {}
        for item in container.get("env", []) or []:
            name = item.get("name", "")
            if not name.startswith("HYBRIDREC_"):
                continue
            if "value" in item:
                env[name] = str(item["value"])
            elif (ref := (item.get("valueFrom") or {}).get("fieldRef")) is not None:
                env[name] = _field_ref(pod, ref.get("fieldPath", ""))
        if env.get("HYBRIDREC_MODEL_URI"):
            return env
    return None


def pod_target(pod: Mapping[str, Any], kwok_nodes: set[str]) -> PodTarget | None:
    """The pod as a runner target when it is managed by hybridrec, bound to a kwok node, Running and not deleting."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels", {}) or {}
    node = pod.get("spec", {}).get("nodeName") or ""
    if labels.get("app.kubernetes.io/managed-by") != "hybridrec" or node not in kwok_nodes:
        return None
    if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
        return None
    env = container_env(pod)
    if env is None:
        return None
    return PodTarget(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "default")),
        name=str(meta.get("name", "")),
        node=node,
        model=labels.get(MODEL_LABEL) or env.get("HYBRIDREC_MODEL_NAME", ""),
        pool=labels.get(POOL_LABEL) or env.get("HYBRIDREC_POOL", ""),
        tenancy=labels.get(TENANCY_LABEL, ""),
        sensitivity=labels.get(SENSITIVITY_LABEL, ""),
        env=env,
    )


def parse_dir_map(items: Sequence[str]) -> dict[str, str]:
    """``URI=DIR`` pairs -> {uri prefix: absolute dir}."""
    out: dict[str, str] = {}
    for item in items:
        uri, sep, directory = item.partition("=")
        if not sep or not uri or not directory:
            raise ValueError(f"--model-dir-map wants URI=DIR, got {item!r}")
        out[uri.rstrip("/") + "/"] = str(Path(directory).resolve())
    return out


def map_model_uri(uri: str, dir_map: Mapping[str, str]) -> str:
    """Replace a mapped s3:// prefix by a local ``file://`` directory (longest prefix wins)."""
    norm = uri.rstrip("/") + "/"
    for prefix in sorted(dir_map, key=len, reverse=True):
        if norm.startswith(prefix):
            rest = norm[len(prefix):].rstrip("/")
            local = Path(dir_map[prefix]) / rest if rest else Path(dir_map[prefix])
            return f"file://{local}"
    return uri


def server_env(
    target: PodTarget,
    port: int,
    base_env: Mapping[str, str],
    *,
    cache_dir: str,
    dir_map: Mapping[str, str],
    s3_endpoint: str | None,
    torch_threads: int,
    shutdown_timeout_s: float,
) -> dict[str, str]:
    """The environment of one server process: the runner's pass-through variables, the pod's HYBRIDREC_* and the
    local overrides (loopback, its own port and model cache)."""
    env = {k: v for k, v in base_env.items() if k.startswith(PASSTHROUGH_PREFIXES)}
    env.update(target.env)
    env.update(
        {
            "HYBRIDREC_HOST": "127.0.0.1",
            "HYBRIDREC_PORT": str(port),
            "HYBRIDREC_NAMESPACE": target.env.get("HYBRIDREC_NAMESPACE") or target.namespace,
            "HYBRIDREC_MODEL_NAME": target.env.get("HYBRIDREC_MODEL_NAME") or target.model,
            "HYBRIDREC_POOL": target.env.get("HYBRIDREC_POOL") or target.pool,
            # one cache per server: concurrent pulls of one URI into a shared directory would race
            "HYBRIDREC_MODEL_CACHE_DIR": cache_dir,
            "HYBRIDREC_SHUTDOWN_TIMEOUT_S": f"{shutdown_timeout_s:g}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if torch_threads > 0:
        env["HYBRIDREC_TORCH_THREADS"] = str(torch_threads)
        env.setdefault("OMP_NUM_THREADS", str(torch_threads))
    env["HYBRIDREC_MODEL_URI"] = map_model_uri(env["HYBRIDREC_MODEL_URI"], dir_map)
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    return env


@dataclass
class ServerProcess:
    target: PodTarget
    port: int
    proc: subprocess.Popen[bytes]
    started: float
    cache_dir: str
    ready: bool = False
    restarts: int = 0
    stopping_since: float | None = None
    next_start: float | None = None  # set while waiting to restart after a crash

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def targets_document(servers: Sequence[ServerProcess]) -> list[dict[str, Any]]:
    """file_sd groups: every live, not-stopping server (ready or not: Prometheus' ``up`` shows which)."""
    groups = []
    for s in sorted(servers, key=lambda s: (s.target.namespace, s.target.name)):
        if s.stopping_since is not None or s.next_start is not None:
            continue
        t = s.target
        groups.append(
            {
                "targets": [s.address],
                "labels": {
                    "namespace": t.namespace,
                    "model": t.model,
                    "pool": t.pool,
                    "tenancy": t.tenancy,
                    "sensitivity": t.sensitivity,
                    "pod": t.name,
                    "node": t.node,
                },
            }
        )
    return groups


def servers_document(servers: Sequence[ServerProcess]) -> dict[str, list[str]]:
    """``{"<namespace>/<model>": [url, ...]}`` of servers that are ready and not stopping."""
    out: dict[str, list[str]] = {}
    for s in servers:
        if s.ready and s.stopping_since is None and s.next_start is None:
            out.setdefault(s.target.model_key, []).append(s.url)
    return {k: sorted(v) for k, v in sorted(out.items())}


# ----------------------------------------------------------------------------------------------- cluster view


class PodWatcher(threading.Thread):
    """Keeps ``pods`` (uid -> raw pod) and ``kwok_nodes`` current: list, then watch; relist on any error,
    on 410 Gone and every ``relist_s`` seconds, so a dropped watch never leaves the view wrong for long."""

    def __init__(self, kubeconfig: str, on_change: Callable[[], None], relist_s: float = 30.0) -> None:
        super().__init__(name="pod-watcher", daemon=True)
        from kubernetes import client, config

        self._api_client = config.new_client_from_config(config_file=kubeconfig)
        self._core = client.CoreV1Api(self._api_client)
        self._on_change = on_change
        self._relist_s = relist_s
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, Any]] = {}
        self._kwok_nodes: set[str] = set()
        self.synced = threading.Event()
        self.stop_event = threading.Event()

    def snapshot(self) -> tuple[list[dict[str, Any]], set[str]]:
        with self._lock:
            return list(self._pods.values()), set(self._kwok_nodes)

    def _list_json(self, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        resp = call(_preload_content=False, _request_timeout=10, **kwargs)
        return json.loads(resp.data)

    def _relist(self) -> str:
        nodes = self._list_json(self._core.list_node)
        kwok = {
            n["metadata"]["name"]
            for n in nodes.get("items", [])
            if (n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION) == "fake"
        }
        pods = self._list_json(self._core.list_pod_for_all_namespaces, label_selector=MANAGED_SELECTOR)
        with self._lock:
            self._kwok_nodes = kwok
            self._pods = {p["metadata"]["uid"]: p for p in pods.get("items", [])}
        self.synced.set()
        self._on_change()
        return str(pods.get("metadata", {}).get("resourceVersion", ""))

    def run(self) -> None:
        from kubernetes import watch

        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                rv = self._relist()
                backoff = 0.5
                w = watch.Watch()
                for event in w.stream(
                    self._core.list_pod_for_all_namespaces,
                    label_selector=MANAGED_SELECTOR,
                    resource_version=rv,
                    timeout_seconds=max(int(self._relist_s), 1),
                    allow_watch_bookmarks=True,
                    _request_timeout=self._relist_s + 10,
                ):
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    kind, raw = event.get("type"), event.get("raw_object") or {}
                    if kind == "ERROR":  # typically 410 Gone: the resourceVersion is too old; relist
                        break
                    if kind == "BOOKMARK":
                        continue
                    uid = (raw.get("metadata") or {}).get("uid")
                    if not uid:
                        continue
                    with self._lock:
                        if kind == "DELETED":
                            self._pods.pop(uid, None)
                        else:
                            self._pods[uid] = raw
                    self._on_change()
            except Exception as exc:  # noqa: BLE001 - API server restarts, timeouts: relist after a pause
                log.warning("pod watch interrupted (%s: %s); relisting", type(exc).__name__, exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        self.stop_event.set()
        self._api_client.close()


# ----------------------------------------------------------------------------------------------- the runner


@dataclass
class RunnerConfig:
    state_dir: Path
    dir_map: Mapping[str, str] = field(default_factory=dict)
    s3_endpoint: str | None = None
    python: str = sys.executable
    torch_threads: int = 1
    grace_s: float = 5.0
    max_backoff_s: float = 30.0


class PodRunner:
    """Reconciles running server processes to the wanted pods. Call :meth:`step` from the main thread
    (children get PR_SET_PDEATHSIG, which is tied to the thread that started them)."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.servers: dict[str, ServerProcess] = {}
        self._stopping: list[ServerProcess] = []
        self._http = httpx.Client(timeout=0.5)
        self._last_targets: Any = None
        self._last_servers: Any = None
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / "logs").mkdir(exist_ok=True)
        self._publish(force=True)

    # ---- processes
    def _spawn(self, target: PodTarget, cache_dir: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        env = server_env(
            target, port, os.environ, cache_dir=cache_dir, dir_map=self.config.dir_map, s3_endpoint=self.config.s3_endpoint,
            torch_threads=self.config.torch_threads, shutdown_timeout_s=self.config.grace_s,
        )
        log_path = self.config.state_dir / "logs" / f"{target.namespace}_{target.name}.log"
        with open(log_path, "ab") as fh:
            fh.write(f"==== {time.strftime('%H:%M:%S')} starting {target.model_key} pool={target.pool} port={port}\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                [self.config.python, "-m", "hybridrec_server"], env=env, stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, close_fds=True, preexec_fn=die_with_parent,
            )
        return proc, port

    def start(self, target: PodTarget) -> ServerProcess:
        cache_dir = str(self.config.state_dir / "cache" / target.uid)
        proc, port = self._spawn(target, cache_dir)
        server = ServerProcess(target=target, port=port, proc=proc, started=time.monotonic(), cache_dir=cache_dir)
        log.info("started %s/%s (%s on %s) pid %d at %s", target.namespace, target.name, target.model, target.pool, proc.pid, server.url)
        return server

    def begin_stop(self, server: ServerProcess) -> None:
        server.stopping_since = time.monotonic()
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
        self._stopping.append(server)
        log.info("stopping %s/%s (pod gone)", server.target.namespace, server.target.name)

    def _reap_stopping(self, now: float) -> None:
        left = []
        for s in self._stopping:
            if s.proc.poll() is None:
                if s.stopping_since is not None and now - s.stopping_since > self.config.grace_s + 2:
                    s.proc.kill()
                left.append(s)
            else:
                shutil.rmtree(s.cache_dir, ignore_errors=True)
        self._stopping = left

    def _check_health(self, now: float) -> None:
        for server in self.servers.values():
            if server.next_start is not None:
                if now >= server.next_start:
                    server.proc, server.port = self._spawn(server.target, server.cache_dir)
                    server.started, server.next_start, server.ready = now, None, False
                continue
            code = server.proc.poll()
            if code is not None:
                server.restarts += 1
                delay = min(2.0 ** server.restarts, self.config.max_backoff_s)
                server.next_start, server.ready = now + delay, False
                log.warning("server for %s/%s exited with %s; restart %d in %.0f s",
                            server.target.namespace, server.target.name, code, server.restarts, delay)
                continue
            if not server.ready:
                try:
                    server.ready = self._http.get(f"{server.url}/readyz").status_code == 200
                except httpx.HTTPError:
                    server.ready = False
                if server.ready:
                    log.info("ready %s/%s after %.1f s", server.target.namespace, server.target.name, now - server.started)

    def step(self, pods: Sequence[Mapping[str, Any]], kwok_nodes: set[str]) -> None:
        """One reconcile: start servers for new pods, stop those of gone pods, restart crashed ones, publish."""
        now = time.monotonic()
        wanted = {t.uid: t for p in pods if (t := pod_target(p, kwok_nodes)) is not None}
        for uid in list(self.servers):
            if uid not in wanted:
                self.begin_stop(self.servers.pop(uid))
        for uid, target in wanted.items():
            if uid not in self.servers:
                self.servers[uid] = self.start(target)
        self._check_health(now)
        self._reap_stopping(now)
        self._publish()

    def _publish(self, force: bool = False) -> None:
        servers = list(self.servers.values())
        targets, ready = targets_document(servers), servers_document(servers)
        if force or targets != self._last_targets:
            write_json_atomically(self.config.state_dir / SERVER_TARGETS, targets)
            self._last_targets = targets
        if force or ready != self._last_servers:
            write_json_atomically(self.config.state_dir / SERVERS_FILE, ready)
            self._last_servers = ready

    def shutdown(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after the grace period) and publish empty files."""
        for uid in list(self.servers):
            self.begin_stop(self.servers.pop(uid))
        self._publish()
        deadline = time.monotonic() + self.config.grace_s + 3
        while self._stopping and time.monotonic() < deadline + 5:
            self._reap_stopping(time.monotonic())
            time.sleep(0.1)
        self._http.close()


def run(kubeconfig: str, config: RunnerConfig, stop: threading.Event, interval_s: float = 0.5) -> None:
    """Watch the cluster and reconcile until ``stop`` is set."""
    changed = threading.Event()
    watcher = PodWatcher(kubeconfig, on_change=changed.set)
    watcher.start()
    runner = PodRunner(config)
    try:
        while not stop.is_set():
            changed.wait(interval_s)
            changed.clear()
            if watcher.synced.is_set():
                pods, nodes = watcher.snapshot()
                runner.step(pods, nodes)
    finally:
        runner.shutdown()
        watcher.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridrec_local.podrunner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path, help="where targets.json, servers.json and logs go")
    parser.add_argument("--s3", default=None, help="S3 endpoint URL handed to servers as AWS_ENDPOINT_URL (e.g. moto_server)")
    parser.add_argument("--model-dir-map", action="append", default=[], metavar="URI=DIR",
                        help="serve artifact URI prefix from a local directory instead (repeatable)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per server (0: torch default)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = RunnerConfig(
        state_dir=args.state_dir, dir_map=parse_dir_map(args.model_dir_map), s3_endpoint=args.s3,
        torch_threads=args.torch_threads, grace_s=args.grace,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(args.kubeconfig, config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
