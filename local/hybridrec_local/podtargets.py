"""The pod runner's pure parts: which pods get a real server, with what environment, and the two files it publishes
(Prometheus file_sd targets and the ready servers for load generators). No I/O here; :mod:`hybridrec_local.podrunner`
does the watching and the processes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=hybridrec"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SERVERS_FILE = "servers.json"
MODEL_LABEL = "hybridrec.io/model"
POOL_LABEL = "hybridrec.io/pool"
TENANCY_LABEL = "hybridrec.io/tenancy"
SENSITIVITY_LABEL = "hybridrec.io/sensitivity"
# Variables of the runner's own environment handed to every server (credentials and endpoint of the local S3).
PASSTHROUGH_PREFIXES = ("AWS_", "PATH", "HOME", "LANG", "LC_", "PYTHON", "VIRTUAL_ENV", "TMPDIR", "CUDA_", "HF_")




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
