"""What the retraining controller reads from a Job and its pods (controller/training_jobs.JobView): pure parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hybridrec_operator.controller.training_jobs import JobView
from hybridrec_operator.core import training as core

def pod(phase: str, *, start: str | None = "2026-01-01T00:00:00Z", end: str | None = None, message: str = "",
        gpus: int = 1, node: str = "n1") -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}} if end is None else {"terminated": {"finishedAt": end, "message": message}}
    return {"metadata": {"creationTimestamp": start or "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": core.CONTAINER,
                                                         "resources": {"limits": {"nvidia.com/gpu": str(gpus), "memory": "1Gi"}}}]},
            "status": {"phase": phase, "startTime": start, "containerStatuses": [{"name": core.CONTAINER, "state": state}]}}


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r"}, "status": status}


def test_a_failed_job_names_the_trainers_cause() -> None:
    view = JobView(job(conditions=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                    "message": "Container trainer exited with 2"}]),
                   [pod("Failed", end="2026-01-01T00:01:00Z", message="bad input: s3://d/x.csv does not exist (NoSuchKey)")])
    obs = view.observation()
    assert obs.job_failed is not None and "PodFailurePolicy" in obs.job_failed and "does not exist" in obs.job_failed


def test_a_succeeded_job_carries_the_evaluation() -> None:
    result = {"uri": "s3://b/v/r/", "sha256": "c" * 64, "version": "r", "architecture": "two-tower",
              "evaluation": {"hitRateAt10": 0.5, "ndcgAt10": 0.3, "popularityHitRateAt10": 0.2, "popularityNdcgAt10": 0.1}}
    view = JobView(job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]),
                   [pod("Succeeded", end="2026-01-01T00:30:00Z", message=json.dumps(result))])
    obs = view.observation()
    assert obs.job_succeeded and obs.evaluation is not None and obs.evaluation.hit_rate_at10 == 0.5
    assert obs.evaluation.serving_hit_rate_at10 is None  # a first version: nothing served before
    assert view.result() == result


@pytest.mark.parametrize("message", ["", "not json", json.dumps({"evaluation": {"ndcgAt10": 1}})])
def test_a_succeeded_job_without_a_readable_result_is_an_error(message: str) -> None:
    view = JobView(job(succeeded=1), [pod("Succeeded", end="2026-01-01T00:01:00Z", message=message)])
    obs = view.observation()
    assert obs.job_succeeded and obs.evaluation is None and obs.result_error


def test_gpu_hours_count_every_pod_that_ran_and_only_the_pools_gpu_resource() -> None:
    pods = [pod("Failed", end="2026-01-01T00:30:00Z", gpus=2),  # reclaimed after 30 min: paid for
            pod("Running", start="2026-01-01T00:31:00Z", gpus=2),
            pod("Pending", start=None, node="")]  # never ran
    spans = JobView(job(active=1), pods).spans("nvidia.com/gpu")
    assert len(spans) == 2
    assert core.gpu_hours(spans, datetime(2026, 1, 1, 1, 1, tzinfo=UTC)) == pytest.approx(2.0)
    assert all(s.gpus == 0 for s in JobView(job(active=1), pods).spans("amd.com/gpu"))


def test_a_job_with_a_running_pod_is_active() -> None:
    assert JobView(job(active=1), [pod("Running")]).observation().job_active
    assert not JobView(job(active=1), [pod("Pending", start=None, node="")]).observation().job_active
