"""The pod runner's pure parts for retraining pods: which pods get a real trainer process, with what environment, and
the pod status the runner writes when that process exits (what a kubelet would write). No I/O here.

On the embedded cluster kwok runs no container. Its pod-complete stage (``hack/cluster/kwok.yaml``) leaves pods
labelled ``hybridrec.io/training-run`` alone, so a training pod stays Running until the pod runner, acting as the
kubelet for it, runs ``python -m hybridrec_server.training_job`` with the container's environment and, when the
process exits, sets the pod ``Succeeded`` (exit 0) or ``Failed`` with the container's ``terminated`` state: exit
code, finish time and the termination message the trainer wrote (the operator reads its result from there, and the
Job's ``podFailurePolicy`` reads the exit code). The Job controller then completes or retries the Job as it would on
a real cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hybridrec_operator.core.training import (
    CONTAINER,
    ENTRY_POINT,
    POOL_LABEL,
    RUN_LABEL,
    TRAINED_MODEL_LABEL,
)

from hybridrec_local.podtargets import PASSTHROUGH_PREFIXES, _field_ref

ENTRY_MODULE = ENTRY_POINT[-1]  # python -m hybridrec_server.training_job
# Kubernetes keeps at most 4096 bytes of a termination message.
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class TrainingTarget:
    """A training pod that should have a trainer process: identity and its container's environment."""

    uid: str
    namespace: str
    name: str
    node: str
    run: str
    model: str
    pool: str
    image: str
    env: Mapping[str, str]


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == CONTAINER), None)


def training_target(pod: Mapping[str, Any], kwok_nodes: set[str]) -> TrainingTarget | None:
    """The pod as a trainer target when it is a hybridrec training pod bound to a kwok node, Running (kwok made it
    so), not deleting and runs the project's trainer; else None."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    if labels.get("app.kubernetes.io/managed-by") != "hybridrec" or not labels.get(RUN_LABEL) or node not in kwok_nodes:
        return None
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
        return None
    container = _container(pod)
    if container is None or ENTRY_MODULE not in (container.get("command") or []) + (container.get("args") or []):
        return None  # not the project's trainer: nothing on this machine can run it
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item.get("name", "")
        if "value" in item:
            env[name] = str(item["value"])
        elif (ref := (item.get("valueFrom") or {}).get("fieldRef")) is not None:
            env[name] = _field_ref(pod, ref.get("fieldPath", ""))
    return TrainingTarget(
        uid=str(meta.get("uid", "")), namespace=str(meta.get("namespace", "default")), name=str(meta.get("name", "")),
        node=node, run=labels[RUN_LABEL], model=labels.get(TRAINED_MODEL_LABEL, ""), pool=labels.get(POOL_LABEL, ""),
        image=str(container.get("image", "")), env=env,
    )


def trainer_env(target: TrainingTarget, base_env: Mapping[str, str], *, termination_log: str, s3_endpoint: str | None,
                torch_threads: int) -> dict[str, str]:
    """The trainer process's environment: the runner's pass-through variables (PATH, credentials of the local S3),
    the container's env, the termination-message file (a real container's is /dev/termination-log) and the local S3
    endpoint, which wins over the pod's: the runner knows where S3 is on this machine."""
    env = {k: v for k, v in base_env.items() if k.startswith(PASSTHROUGH_PREFIXES)}
    env.update(target.env)
    env["HYBRIDREC_TERMINATION_LOG"] = termination_log
    env["PYTHONUNBUFFERED"] = "1"
    if torch_threads > 0:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    return env


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated_status(pod: Mapping[str, Any], exit_code: int, message: str, started: datetime, finished: datetime) -> dict[str, Any]:
    """The strategic-merge status patch a kubelet writes when the pod's only container exits with ``exit_code``:
    phase Succeeded/Failed, the container's ``terminated`` state (its ``running`` state removed) with the termination
    message, Ready and ContainersReady False."""
    container = _container(pod) or {}
    previous = next((cs for cs in (pod.get("status") or {}).get("containerStatuses") or [] if cs.get("name") == CONTAINER), {})
    started_at = ((previous.get("state") or {}).get("running") or {}).get("startedAt") or _rfc3339(started)
    terminated: dict[str, Any] = {
        "exitCode": int(exit_code), "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at, "finishedAt": _rfc3339(finished),
    }
    if message:
        terminated["message"] = message.encode("utf-8")[:MAX_MESSAGE].decode("utf-8", "ignore")
    now = _rfc3339(finished)
    return {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
                       for t in ("Ready", "ContainersReady")],
        "containerStatuses": [{
            "name": CONTAINER, "image": container.get("image", previous.get("image", "")),
            "imageID": previous.get("imageID", ""), "ready": False, "started": False,
            "restartCount": int(previous.get("restartCount", 0)),
            "state": {"running": None, "waiting": None, "terminated": terminated},
        }],
    }}
