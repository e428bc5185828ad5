"""Retraining on the real control plane (API server, scheduler, Job controller, kwok nodes), without the operator
process: the TrainingController's passes create runs and Jobs, and the real scheduler places the training pods.

* the CRDs refuse what the schema can tell (a malformed cron, a training input less strict than the model's, a
  change to a run's spec);
* a restricted model's run lands on a node of the private pool that admits restricted data, even when the model
  prefers the public spot pool; a public model's run lands on the spot pool;
* a run whose pool is deleted before it trains fails with PoolGone, its Job deleted, and the cause in an event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient

from hybridrec_operator.controller.kube import Kube as KubeClient
from hybridrec_operator.controller.training import TrainingController
from support.kube import Kube
from support.stack import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def controller(kube_api: ApiClient, namespace: str) -> TrainingController:
    return TrainingController(KubeClient(kube_api), namespaces=[namespace], identity="test")


def model(name: str, sensitivity: str, *, preferred: list[str] | None = None, schedule: str = "0 3 * * *",
          training_sensitivity: str | None = None) -> dict[str, Any]:
    training: dict[str, Any] = {"schedule": schedule, "dataUri": "s3://hybridrec-data/interactions.csv",
                                "outputUri": f"s3://hybridrec-models/{name}/versions"}
    if training_sensitivity:
        training["dataSensitivity"] = training_sensitivity
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"uri": f"s3://hybridrec-models/{name}/v1/", "architecture": "two-tower"},
                     "dataSensitivity": sensitivity, "scaling": {"minReplicas": 0},
                     "placement": {"preferredPools": preferred or []}, "training": training}}


def run(name: str, model_name: str) -> dict[str, Any]:
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun", "metadata": {"name": name},
            "spec": {"model": model_name, "trigger": "manual"}}


def refusal(kube: Kube, doc: dict[str, Any], namespace: str) -> str:
    proc = kube.apply([doc], namespace, check=False)
    assert proc.returncode != 0, f"accepted: {doc}"
    return proc.stderr


def test_schema_refuses_what_it_can_tell(installed: Kube, namespace: str) -> None:
    assert "cron expression of five fields" in refusal(installed, model("bad-cron", "public", schedule="every night"), namespace)
    assert "cannot be less strict" in refusal(installed, model("weaker", "confidential", training_sensitivity="public"), namespace)
    installed.apply([run("immutable-run", "whatever")], namespace)
    changed = run("immutable-run", "other")
    assert "immutable" in refusal(installed, changed, namespace)


def training_pod(kube: Kube, namespace: str, run_name: str) -> dict[str, Any]:
    def placed() -> dict[str, Any] | None:
        pods = kube.items("pods", namespace, f"hybridrec.io/training-run={run_name}")
        return next((p for p in pods if (p.get("spec") or {}).get("nodeName")), None)

    return wait_for(placed, 60, f"a scheduled pod of run {run_name}")


def node_labels(kube: Kube, node: str) -> dict[str, str]:
    return kube.get("node", node)["metadata"]["labels"]


def test_restricted_trains_private_and_public_trains_on_spot(installed: Kube, namespace: str, controller: TrainingController) -> None:
    installed.apply([model("secret-recs", "restricted", preferred=["aws-spot-l4"]),
                     model("open-recs", "public", preferred=["aws-spot-l4"])], namespace)
    installed.apply([run("secret-recs-now", "secret-recs"), run("open-recs-now", "open-recs")], namespace)
    controller.sync()

    secret = training_pod(installed, namespace, "secret-recs-now")
    labels = node_labels(installed, secret["spec"]["nodeName"])
    assert labels["hybridrec.io/tenancy"] == "private" and labels["hybridrec.io/pool"] == "onprem-a100"
    status = installed.get("recmodeltrainingrun", "secret-recs-now", namespace)["status"]
    assert status["pool"] == "onprem-a100" and status["tenancy"] == "private"

    public = training_pod(installed, namespace, "open-recs-now")
    labels = node_labels(installed, public["spec"]["nodeName"])
    assert labels["hybridrec.io/pool"] == "aws-spot-l4" and labels["hybridrec.io/tenancy"] == "public"
    job = installed.get("job", "open-recs-now", namespace)
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RecModelTrainingRun"
    # kubectl get shows the run's model, phase and pool.
    table = installed("get", "recmodeltrainingruns", "-n", namespace).stdout
    assert "secret-recs-now" in table and "onprem-a100" in table and "aws-spot-l4" in table


def test_a_run_whose_pool_vanishes_before_it_trains_fails_with_the_cause(
    installed: Kube, namespace: str, controller: TrainingController,
) -> None:
    pool = installed.get("computepool", "gcp-ondemand-a100")
    installed.apply([model("moving-recs", "public", preferred=["gcp-ondemand-a100"])], namespace)
    installed.apply([run("moving-recs-now", "moving-recs")], namespace)
    # Only the pods' placement needs to fail: cordon the pool's nodes so its pod cannot run.
    nodes = [n["metadata"]["name"] for n in installed.items("nodes", selector="hybridrec.io/pool=gcp-ondemand-a100")]
    for node in nodes:
        installed("cordon", node)
    try:
        controller.sync()
        assert installed.get("recmodeltrainingrun", "moving-recs-now", namespace)["status"]["pool"] == "gcp-ondemand-a100"
        installed("delete", "computepool", "gcp-ondemand-a100", "--wait=true")
        controller.sync()
        status = installed.get("recmodeltrainingrun", "moving-recs-now", namespace)["status"]
        assert status["phase"] == "Failed" and "gcp-ondemand-a100 was deleted" in status["message"]
        assert {"type": "Trained", "status": "False", "reason": "PoolGone"}.items() <= next(
            c for c in status["conditions"] if c["type"] == "Trained").items()
        wait_for(lambda: installed.get("job", "moving-recs-now", namespace) is None, 30, "the run's Job deleted")
        events = installed.items("events", namespace)
        assert any(e["reason"] == "PoolGone" and e["involvedObject"]["name"] == "moving-recs-now" for e in events)
    finally:
        for node in nodes:
            installed("uncordon", node)
        if installed.get("computepool", "gcp-ondemand-a100") is None:
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
                pool["metadata"].pop(key, None)
            pool.pop("status", None)
            installed("apply", "-f", "-", input=json.dumps(pool))


def test_schedule_creates_one_run_per_fire_time_and_never_overlaps(
    installed: Kube, namespace: str, kube_api: ApiClient,
) -> None:
    installed.apply([model("nightly-recs", "internal", schedule="*/5 * * * *")], namespace)
    created = datetime.strptime(installed.get("rmd", "nightly-recs", namespace)["metadata"]["creationTimestamp"],
                                "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    later = created.replace(second=0, microsecond=0)
    clock = {"now": later.replace(minute=(later.minute // 5) * 5) + timedelta(minutes=11)}
    ctl = TrainingController(KubeClient(kube_api), namespaces=[namespace], identity="test", clock=lambda: clock["now"])
    ctl.sync()
    ctl.sync()  # the same fire time: the same run, not a second one
    runs = [r for r in installed.items("recmodeltrainingruns", namespace) if r["spec"]["model"] == "nightly-recs"]
    assert len(runs) == 1 and runs[0]["spec"]["dataSensitivity"] == "internal"
    assert runs[0]["metadata"]["ownerReferences"][0]["name"] == "nightly-recs"
    clock["now"] = clock["now"] + timedelta(minutes=5)
    ctl.sync()  # the first run is still active: the next fire time is skipped
    assert len([r for r in installed.items("recmodeltrainingruns", namespace) if r["spec"]["model"] == "nightly-recs"]) == 1


def finish_with_result(kube: Kube, namespace: str, run_name: str, result: dict[str, Any] | None) -> None:
    """What the trainer leaves when it exits, without running it: kwok makes the Job's pod Running and (for training
    pods) leaves it so; the test writes the pod's terminal status as a kubelet would (and as the pod runner does after
    running the trainer): Succeeded, exit code 0 and the trainer's result as the termination message (none if
    ``result`` is None)."""
    from hybridrec_local.podtraining import terminated_status

    def running() -> dict[str, Any] | None:
        pods = kube.items("pods", namespace, f"hybridrec.io/training-run={run_name}")
        return next((p for p in pods if (p.get("status") or {}).get("phase") == "Running"), None)

    pod = wait_for(running, 60, f"kwok running the pod of {run_name}")
    now = datetime.now(UTC)
    patch = terminated_status(pod, 0, json.dumps(result) if result is not None else "", now, now)
    kube("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status", "--type=strategic",
         "-p", json.dumps(patch))
    wait_for(lambda: (kube.get("job", run_name, namespace).get("status") or {}).get("succeeded"), 30, "the Job complete")


def result(run_name: str, hr: float, serving_hr: float) -> dict[str, Any]:
    return {"uri": f"s3://hybridrec-models/gated-recs/versions/{run_name}/", "sha256": "b" * 64, "version": run_name,
            "architecture": "two-tower", "evaluation": {"hitRateAt10": hr, "ndcgAt10": hr / 2, "servingHitRateAt10": serving_hr,
                                                        "servingNdcgAt10": serving_hr / 2, "popularityHitRateAt10": 0.2,
                                                        "popularityNdcgAt10": 0.1}}


def test_gate_rejects_a_worse_version_and_a_better_one_is_promoted_by_one_patch(
    installed: Kube, namespace: str, controller: TrainingController,
) -> None:
    doc = model("gated-recs", "public", preferred=["aws-spot-l4"])
    doc["spec"]["training"].update({"gate": {"minImprovement": 0.01}, "bakeSeconds": 0})
    installed.apply([doc], namespace)
    installed.apply([run("gated-recs-worse", "gated-recs")], namespace)
    controller.sync()
    finish_with_result(installed, namespace, "gated-recs-worse", result("gated-recs-worse", 0.40, 0.45))
    controller.sync()
    worse = installed.get("recmodeltrainingrun", "gated-recs-worse", namespace)["status"]
    assert worse["phase"] == "Rejected" and "0.4000" in worse["message"] and "0.4500" in worse["message"]
    gate = next(c for c in worse["conditions"] if c["type"] == "GatePassed")
    assert (gate["status"], gate["reason"]) == ("False", "NoImprovement")
    assert worse["evaluation"]["servingHitRateAt10"] == 0.45
    assert installed.get("rmd", "gated-recs", namespace)["spec"]["model"]["uri"] == "s3://hybridrec-models/gated-recs/v1/"

    installed.apply([run("gated-recs-better", "gated-recs")], namespace)
    controller.sync()
    finish_with_result(installed, namespace, "gated-recs-better", result("gated-recs-better", 0.52, 0.45))
    controller.sync()
    better = installed.get("recmodeltrainingrun", "gated-recs-better", namespace)["status"]
    assert better["phase"] == "AwaitingPromotion" and better["artifact"]["sha256"] == "b" * 64
    command = better["message"].split("promote it with: ", 1)[1]
    patch = command.split(" -p ", 1)[1].strip("'")
    installed("patch", "rmd", "gated-recs", "-n", namespace, "--type", "merge", "-p", patch)
    controller.sync()
    assert installed.get("recmodeltrainingrun", "gated-recs-better", namespace)["status"]["phase"] == "Promoting"
    # The serving reconcile (not running here) would report the model Ready once the new pods serve: say so.
    installed("patch", "rmd", "gated-recs", "-n", namespace, "--subresource=status", "--type", "merge", "-p", json.dumps(
        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))
    controller.sync()
    done = installed.get("recmodeltrainingrun", "gated-recs-better", namespace)["status"]
    assert done["phase"] == "Promoted" and done["previous"]["uri"] == "s3://hybridrec-models/gated-recs/v1/"
    assert next(c for c in done["conditions"] if c["type"] == "Promoted")["status"] == "True"
