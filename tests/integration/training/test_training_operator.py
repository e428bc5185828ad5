"""The operator process with its retraining loop on the real control plane (namespaced, so it shares nothing with
other modules' operators): a restricted model's run is placed on the private pool that admits restricted data, its
Job created and owned by the run; its pod then succeeds without a result in its termination message (the test writes
that status, as a kubelet would after a trainer that printed nothing), so the run must fail with that cause as a
condition and a Warning event, and its measured cost is exported as hybridrec_training_cost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridrec_local.localcluster import LocalCluster
from support.cleanup import delete_namespace
from support.kube import Kube
from support.operator import OperatorProcess
from support.stack import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(installed: Kube, cluster: LocalCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("training-operator"), "training-operator", ["--standalone"],
                         {"HYBRIDREC_TRAINING_INTERVAL_SECONDS": "1", "HYBRIDREC_RESYNC_SECONDS": "15"}, namespaces=[namespace])
    op.start()
    yield op
    op.stop()


def test_operator_places_a_restricted_run_privately_and_reports_a_run_without_result(
    installed: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path,
) -> None:
    model: dict[str, Any] = {
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": "vault-recs"},
        "spec": {"model": {"uri": "s3://hybridrec-models/vault-recs/v1/", "architecture": "two-tower"},
                 "dataSensitivity": "restricted", "scaling": {"minReplicas": 0},
                 "training": {"schedule": "0 3 * * *", "dataUri": "s3://hybridrec-data/vault.csv",
                              "outputUri": "s3://hybridrec-models/vault-recs/versions"}}}
    installed.apply([model], namespace)
    installed.apply([{"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun", "metadata": {"name": "vault-recs-now"},
                      "spec": {"model": "vault-recs"}}], namespace)

    def placed() -> dict[str, Any] | None:
        run = installed.get("recmodeltrainingrun", "vault-recs-now", namespace)
        return run if (run.get("status") or {}).get("pool") else None

    status = wait_for(placed, 30, "the run placed")["status"]
    assert (status["pool"], status["tenancy"]) == ("onprem-a100", "private")
    job = wait_for(lambda: installed.get("job", "vault-recs-now", namespace), 10, "the run's Job")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RecModelTrainingRun"
    assert job["spec"]["template"]["metadata"]["labels"]["hybridrec.io/sensitivity"] == "restricted"

    from test_training_cluster import finish_with_result

    finish_with_result(installed, namespace, "vault-recs-now", None)

    def finished() -> dict[str, Any] | None:
        run = installed.get("recmodeltrainingrun", "vault-recs-now", namespace)
        return run if (run.get("status") or {}).get("phase") == "Failed" else None

    status = wait_for(finished, 60, "the completed pod without a result judged")["status"]
    trained = next(c for c in status["conditions"] if c["type"] == "Trained")
    assert trained["status"] == "False" and trained["reason"] == "ResultUnreadable"
    assert "termination message" in status["message"]
    events = installed.items("events", namespace)
    assert any(e["reason"] == "ResultUnreadable" and e["type"] == "Warning" for e in events)
    pods = installed.items("pods", namespace, "hybridrec.io/training-run=vault-recs-now")
    assert pods and all(installed.get("node", p["spec"]["nodeName"])["metadata"]["labels"]["hybridrec.io/tenancy"] == "private"
                        for p in pods if p["spec"].get("nodeName"))
    want = {("namespace", namespace), ("model", "vault-recs"), ("run", "vault-recs-now"), ("pool", "onprem-a100")}
    costs = [v for (n, labels), v in operator.metric_samples().items() if n == "hybridrec_training_cost" and want <= set(labels)]
    assert len(costs) == 1 and costs[0] >= 0


def test_auto_promotion_rolls_the_new_version_out_through_the_serving_reconcile(
    installed: Kube, cluster: LocalCluster, tmp_path: Path, kube_api: Any,
) -> None:
    """The serving operator runs (retraining off in it); the test drives the training controller's passes itself so it
    can write the trainer's result into the pod's status between two passes."""
    from hybridrec_operator.controller.kube import Kube as KubeClient
    from hybridrec_operator.controller.training import TrainingController
    from test_training_cluster import finish_with_result, result

    ns = f"training-auto-{uuid.uuid4().hex[:6]}"
    installed("create", "namespace", ns)
    op = OperatorProcess(cluster, tmp_path, "serving-operator", ["--standalone"],
                         {"HYBRIDREC_TRAINING_INTERVAL_SECONDS": "0", "HYBRIDREC_RESYNC_SECONDS": "15"}, namespaces=[ns])
    op.start()
    try:
        doc: dict[str, Any] = {
            "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": "gated-recs"},
            "spec": {"model": {"uri": "s3://hybridrec-models/gated-recs/v1/", "architecture": "two-tower", "sha256": "a" * 64},
                     "dataSensitivity": "public", "scaling": {"minReplicas": 1, "maxReplicas": 2},
                     "placement": {"preferredPools": ["aws-spot-l4"]},
                     "training": {"schedule": "0 3 * * *", "dataUri": "s3://hybridrec-data/i.csv",
                                  "outputUri": "s3://hybridrec-models/gated-recs/versions", "promotion": "auto",
                                  "bakeSeconds": 0}}}
        installed.apply([doc], ns)

        def ready() -> bool:
            rmd = installed.get("rmd", "gated-recs", ns)
            return installed.condition(rmd, "Ready").get("status") == "True"

        wait_for(ready, 60, "the model Ready on v1")
        ctl = TrainingController(KubeClient(kube_api), namespaces=[ns], identity="test")
        installed.apply([{"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun",
                          "metadata": {"name": "gated-recs-auto"}, "spec": {"model": "gated-recs"}}], ns)
        ctl.sync()
        finish_with_result(installed, ns, "gated-recs-auto", result("gated-recs-auto", 0.52, 0.45))
        ctl.sync()
        run = installed.get("recmodeltrainingrun", "gated-recs-auto", ns)["status"]
        assert run["phase"] == "Promoting", run
        promoted = installed.get("rmd", "gated-recs", ns)["status"]["promotedModel"]
        assert promoted["model"]["sha256"] == "b" * 64 and promoted["replaces"]["sha256"] == "a" * 64
        assert installed.get("rmd", "gated-recs", ns)["spec"]["model"]["sha256"] == "a" * 64  # the spec is the user's

        def served_new() -> bool:
            deps = installed.items("deployments", ns, "hybridrec.io/model=gated-recs")
            envs = [{e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]} for d in deps]
            return bool(deps) and all(e["HYBRIDREC_MODEL_SHA256"] == "b" * 64 for e in envs)

        wait_for(served_new, 60, "the serving reconcile rendering the promoted version")

        def promoted_run() -> dict[str, Any] | None:
            ctl.sync()
            status = installed.get("recmodeltrainingrun", "gated-recs-auto", ns)["status"]
            return status if status["phase"] == "Promoted" else None

        done = wait_for(promoted_run, 60, "the run Promoted once rolled out and Ready", interval=1.0)
        assert done["previous"]["sha256"] == "a" * 64
    finally:
        op.stop()
        delete_namespace(installed.cluster.kubectl, ns)
