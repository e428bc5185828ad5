"""The operator process with its retraining loop on the real control plane (namespaced, so it shares nothing with
other modules' operators): a restricted model's run is placed on the private pool that admits restricted data, its
Job created and owned by the run; kwok completes the training pod without running the trainer (no result in its
termination message), so the run must fail with that cause as a condition and a Warning event, and its measured cost
is exported as hybridrec_training_cost."""

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
def namespace(installed: Kube) -> Iterator[str]:
    name = f"training-op-{uuid.uuid4().hex[:6]}"
    installed("create", "namespace", name)
    yield name
    delete_namespace(installed.cluster.kubectl, name)


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

    def finished() -> dict[str, Any] | None:
        run = installed.get("recmodeltrainingrun", "vault-recs-now", namespace)
        return run if (run.get("status") or {}).get("phase") == "Failed" else None

    status = wait_for(finished, 60, "kwok's completed pod judged")["status"]
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
