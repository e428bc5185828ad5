"""A training run's Job as the retraining controller reads it: its pods' phases, the trainer's result (the
termination message), the GPU time each pod held. Pure parsing of what ``controller/training.py`` fetched; no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from hybridrec_operator.api.models import API_VERSION
from hybridrec_operator.api.training_run import Evaluation
from hybridrec_operator.core import training as core


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def owner_ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = (owner.get("metadata") or {}).get("uid")
    return any(r.get("uid") == uid and r.get("controller") for r in (obj.get("metadata") or {}).get("ownerReferences") or [])


@dataclass
class JobView:
    """What the controller read of one run's Job and pods."""

    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)

    def observation(self) -> core.Observation:
        job = self.job
        if job is None:
            return core.Observation()
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = None
        if "Failed" in conditions:
            cond = conditions["Failed"]
            failed = f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
            if cause := self._termination_message(phase="Failed"):
                failed += f" ({cause})"
        evaluation, result_error = None, None
        if "Complete" in conditions or status.get("succeeded"):
            evaluation, result_error = self._result()
        return core.Observation(
            job_exists=True, job_active=bool(status.get("active")) and any(
                (p.get("status") or {}).get("phase") == "Running" for p in self.pods),
            job_succeeded="Complete" in conditions or bool(status.get("succeeded")), job_failed=failed,
            evaluation=evaluation, result_error=result_error)

    def _termination_message(self, phase: str) -> str:
        for pod in sorted(self.pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")), reverse=True):
            if (pod.get("status") or {}).get("phase") != phase:
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if cs.get("name") == core.CONTAINER:
                    message = ((cs.get("state") or {}).get("terminated") or {}).get("message")
                    if message:
                        return str(message).strip()
        return ""

    def result(self) -> dict[str, Any] | None:
        text = self._termination_message(phase="Succeeded")
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _result(self) -> tuple[Evaluation | None, str | None]:
        data = self.result()
        if data is None:
            return None, "the training pod succeeded but left no readable result in its termination message"
        try:
            return Evaluation.model_validate(data.get("evaluation") or {}), None
        except ValidationError as exc:
            return None, f"the training result is malformed: {exc.errors()[0].get('msg', exc)}"

    def spans(self, resource_name: str = "nvidia.com/gpu") -> list[core.PodSpan]:
        """Every pod that ran on a node: from its start to its container's finish (None: still running), with the GPUs
        of ``resource_name`` (the pool's ``gpu.resourceName``) it held."""
        out = []
        for pod in self.pods:
            status = pod.get("status") or {}
            start = parse_time(status.get("startTime"))
            if start is None or not (pod.get("spec") or {}).get("nodeName"):
                continue
            end = None
            for cs in status.get("containerStatuses") or []:
                end = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")) or end
            gpus = sum(int(str(((c.get("resources") or {}).get("limits") or {}).get(resource_name, 0)))
                       for c in (pod.get("spec") or {}).get("containers") or [])
            out.append(core.PodSpan(start, end, gpus))
        return out
