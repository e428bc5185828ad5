"""Local pod runner: make pods on kwok's fake nodes serve and train for real.

kwok marks pods Running without running anything. For tests and the demo this runner watches pods that
hybridrec manages (``app.kubernetes.io/managed-by=hybridrec``), are bound to a kwok node and are Running, and

* for a model-server pod starts one real ``python -m hybridrec_server`` on 127.0.0.1 (its own free port) with the
  pod's ``HYBRIDREC_*`` environment; when the pod goes away the server gets SIGTERM (drain), then SIGKILL;
* for a retraining pod (label ``hybridrec.io/training-run``; kwok never completes those, see ``hack/cluster/kwok.yaml``)
  runs its trainer, ``python -m hybridrec_server.training_job`` with the container's environment, and when the
  process exits writes the pod's terminal status as a kubelet would (Succeeded/Failed, exit code, termination
  message: :mod:`hybridrec_local.podtraining`), so the Job completes, retries or fails. A training pod deleted
  while its trainer runs (spot reclaim, Job deleted) stops it: SIGTERM, then SIGKILL.

It writes, atomically, into ``--state-dir``:

* ``targets.json``: Prometheus file-based service discovery, one group per server, labelled
  namespace, model, pool, tenancy, sensitivity and pod;
* ``servers.json``: ``{"<namespace>/<model>": ["http://127.0.0.1:<port>", ...]}`` of *ready* servers,
  for load generators.

Run: ``python -m hybridrec_local.podrunner --kubeconfig K --state-dir D [--s3 URL | --model-dir-map URI=DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hybridrec_local.podtargets import (
    SERVERS_FILE,
    PodTarget,
    ServerProcess,
    parse_dir_map,
    pod_target,
    server_env,
    servers_document,
    targets_document,
)
from hybridrec_local.podtraining import (
    TrainingTarget,
    terminated_status,
    trainer_env,
    training_target,
)
from hybridrec_local.podwatch import PodWatcher
from hybridrec_local.processes import die_with_parent, free_port
from hybridrec_local.promlocal import SERVER_TARGETS, write_json_atomically

log = logging.getLogger("hybridrec.podrunner")


@dataclass
class RunnerConfig:
    state_dir: Path
    dir_map: Mapping[str, str] = field(default_factory=dict)
    s3_endpoint: str | None = None
    python: str = sys.executable
    torch_threads: int = 1
    grace_s: float = 5.0
    max_backoff_s: float = 30.0


# Writes a pod's status: (namespace, name, strategic-merge patch). Raises LookupError when the pod is gone.
StatusWriter = Callable[[str, str, Mapping[str, Any]], None]


@dataclass
class TrainerProcess:
    """One trainer process standing in for a training pod's container."""

    target: TrainingTarget
    proc: subprocess.Popen[bytes]
    started: datetime
    termination_log: Path
    stopping_since: float | None = None


class PodRunner:
    """Reconciles running server and trainer processes to the wanted pods. Call :meth:`step` from the main thread
    (children get PR_SET_PDEATHSIG, which is tied to the thread that started them)."""

    def __init__(self, config: RunnerConfig, write_status: StatusWriter | None = None) -> None:
        self.config = config
        self.servers: dict[str, ServerProcess] = {}
        self._stopping: list[ServerProcess] = []
        self.trainers: dict[str, TrainerProcess] = {}
        self._stopping_trainers: list[TrainerProcess] = []
        self._reported: set[str] = set()  # training pods whose terminal status is written (the watch may lag)
        self._write_status = write_status
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
        self._stopping = self._reap(self._stopping, now, lambda s: s.cache_dir)

    def _reap(self, stopping: list[Any], now: float, scratch: Callable[[Any], Path]) -> list[Any]:
        """Of processes sent SIGTERM (a server or a trainer), those still running: killed once past the grace
        period; the exited ones' scratch folder is removed."""
        left = []
        for s in stopping:
            if s.proc.poll() is None:
                if s.stopping_since is not None and now - s.stopping_since > self.config.grace_s + 2:
                    s.proc.kill()
                left.append(s)
            else:
                shutil.rmtree(scratch(s), ignore_errors=True)
        return left

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

    # ---- trainers
    def start_trainer(self, target: TrainingTarget) -> TrainerProcess:
        workdir = self.config.state_dir / "training" / target.uid
        workdir.mkdir(parents=True, exist_ok=True)
        termination = workdir / "termination-log"
        termination.unlink(missing_ok=True)
        env = trainer_env(target, os.environ, termination_log=str(termination), s3_endpoint=self.config.s3_endpoint,
                          torch_threads=self.config.torch_threads)
        log_path = self.config.state_dir / "logs" / f"{target.namespace}_{target.name}.log"
        with open(log_path, "ab") as fh:
            fh.write(f"==== {time.strftime('%H:%M:%S')} training {target.run} of {target.namespace}/{target.model} "
                     f"on {target.pool}\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                [self.config.python, "-m", "hybridrec_server.training_job"], env=env, cwd=workdir,
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, close_fds=True, preexec_fn=die_with_parent,
            )
        log.info("training %s/%s (run %s on %s) pid %d", target.namespace, target.name, target.run, target.pool, proc.pid)
        return TrainerProcess(target=target, proc=proc, started=datetime.now(UTC), termination_log=termination)

    def _finish_trainer(self, trainer: TrainerProcess, pod: Mapping[str, Any], code: int) -> bool:
        """Write the pod's terminal status for an exited trainer; True once written (or the pod is gone)."""
        t = trainer.target
        try:
            message = trainer.termination_log.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            message = ""
        # A signal (negative return code) reads as 128 + signal, as a container runtime reports it.
        exit_code = code if code >= 0 else 128 - code
        patch = terminated_status(pod, exit_code, message, trainer.started, datetime.now(UTC))
        if self._write_status is None:
            return True
        try:
            self._write_status(t.namespace, t.name, patch)
        except LookupError:
            log.info("training pod %s/%s gone before its result was written", t.namespace, t.name)
            return True
        except Exception as exc:  # noqa: BLE001 - API server restarting: written at the next step
            log.warning("status of training pod %s/%s not written (%s); retrying", t.namespace, t.name, exc)
            return False
        log.info("training pod %s/%s %s (exit %d)", t.namespace, t.name, patch["status"]["phase"], exit_code)
        return True

    def _step_trainers(self, pods: Sequence[Mapping[str, Any]], kwok_nodes: set[str], now: float) -> None:
        by_uid = {str((p.get("metadata") or {}).get("uid", "")): p for p in pods}
        wanted = {t.uid: t for p in pods if (t := training_target(p, kwok_nodes)) is not None and t.uid not in self._reported}
        for uid in list(self.trainers):
            trainer = self.trainers[uid]
            code = trainer.proc.poll()
            if code is not None and uid in by_uid:
                if self._finish_trainer(trainer, by_uid[uid], code):
                    self._reported.add(uid)
                    del self.trainers[uid]
            elif uid not in wanted:  # the pod is gone or deleting: its container is killed
                del self.trainers[uid]
                trainer.stopping_since = now
                if code is None:
                    trainer.proc.send_signal(signal.SIGTERM)
                    log.info("stopping trainer of %s/%s (pod gone)", trainer.target.namespace, trainer.target.name)
                self._stopping_trainers.append(trainer)
        for uid, target in wanted.items():
            if uid not in self.trainers and uid not in self._reported:
                self.trainers[uid] = self.start_trainer(target)
        self._stopping_trainers = self._reap(self._stopping_trainers, now, lambda t: t.termination_log.parent)
        self._reported &= set(by_uid)  # forget pods that are gone

    def step(self, pods: Sequence[Mapping[str, Any]], kwok_nodes: set[str]) -> None:
        """One reconcile: start servers and trainers for new pods, stop those of gone pods, restart crashed servers,
        finish the pods of exited trainers, publish."""
        now = time.monotonic()
        wanted = {t.uid: t for p in pods if (t := pod_target(p, kwok_nodes)) is not None}
        for uid in list(self.servers):
            if uid not in wanted:
                self.begin_stop(self.servers.pop(uid))
        for uid, target in wanted.items():
            if uid not in self.servers:
                self.servers[uid] = self.start(target)
        self._step_trainers(pods, kwok_nodes, now)
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
        for uid in list(self.trainers):
            trainer = self.trainers.pop(uid)
            if trainer.proc.poll() is None:
                trainer.proc.send_signal(signal.SIGTERM)
            self._stopping_trainers.append(trainer)
        self._publish()
        deadline = time.monotonic() + self.config.grace_s + 3
        while (self._stopping or any(t.proc.poll() is None for t in self._stopping_trainers)) and time.monotonic() < deadline + 5:
            self._reap_stopping(time.monotonic())
            if time.monotonic() > deadline:
                for trainer in self._stopping_trainers:
                    if trainer.proc.poll() is None:
                        trainer.proc.kill()
            time.sleep(0.1)
        self._http.close()


def pod_status_writer(kubeconfig: str) -> tuple[StatusWriter, Callable[[], None]]:
    """A :data:`StatusWriter` on the pods' status subresource (strategic merge, as a kubelet patches), and its close."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api_client = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)

    def write(namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        try:
            core.patch_namespaced_pod_status(name, namespace, patch, _content_type="application/strategic-merge-patch+json",
                                             _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"pod {namespace}/{name} not found") from None
            raise

    return write, api_client.close


def run(kubeconfig: str, config: RunnerConfig, stop: threading.Event, interval_s: float = 0.5) -> None:
    """Watch the cluster and reconcile until ``stop`` is set."""
    changed = threading.Event()
    watcher = PodWatcher(kubeconfig, on_change=changed.set)
    watcher.start()
    write_status, close_writer = pod_status_writer(kubeconfig)
    runner = PodRunner(config, write_status=write_status)
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
        close_writer()


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
