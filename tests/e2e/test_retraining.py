"""Retraining for real on the embedded cluster: train -> evaluate -> auto-promote -> serve, and a worse version kept out.

The operator (with its retraining loop) creates each run's Job; the scheduler binds its pod to a kwok node; the pod
runner runs the project's trainer (``python -m hybridrec_server.training_job``) on this machine with the Job's
environment against moto S3 and finishes the pod with the trainer's exit code and termination message, as a kubelet
would; the Job controller completes the Job; the operator reads the evaluation, gates it and, with ``promotion: auto``,
rolls the new version out (the pod runner starts a real server for the new pod, which pulls and verifies it).

Data: a tiny interactions CSV generated here (400 users in 5 taste groups of 24 items, 20 interactions each), so
the model trained on it ranks each user's held-out item far above the popularity baseline and above the small random
artifact the model starts with. A second run with one epoch is worse than the promoted version: Rejected with both
scores named, and the promoted version keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import httpx
import pytest
from hybridrec_local.localcluster import LocalCluster
from kubernetes import client
from kubernetes.client import ApiClient
from support import MotoS3, OperatorProcess, PodRunnerProcess, eventually
from support.manifests import rmd_manifest
from support.stack import E2E_NAMESPACE, log_tail

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

NS = E2E_NAMESPACE
MODEL = "retrain-recs"
GROUP, VERSION = "hybridrec.io", "v1alpha1"
DATA_KEY = f"{MODEL}/interactions.csv"
# Never fires during the test: every run here is started by hand (a RecModelTrainingRun), as `hybridrec` users can.
SCHEDULE = "0 0 1 1 *"


def interactions_csv(users: int = 400, groups: int = 5, items_per_group: int = 24, per_user: int = 20) -> str:
    """user_id,item_id,rating,timestamp rows: each user picks items of its own group only (seeded, deterministic)."""
    rng = random.Random(13)
    lines = ["user_id,item_id,rating,timestamp"]
    for u in range(users):
        group = u % groups
        items = rng.sample(range(group * items_per_group, (group + 1) * items_per_group), per_user)
        lines += [f"u{u},i{item},5,{1_700_000_000 + t}" for t, item in enumerate(items)]
    return "\n".join(lines) + "\n"


def model_manifest(s3: MotoS3) -> dict[str, Any]:
    return rmd_manifest(
        MODEL, NS, s3, "internal", rps_per_replica=50, max_replicas=1, stabilisation_s=30,
        training={
            "schedule": SCHEDULE,
            "dataUri": f"s3://{s3.bucket}/{DATA_KEY}",
            "outputUri": f"s3://{s3.bucket}/{MODEL}/versions",
            "epochs": 10,
            "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
            # The serving version must be beaten by 0.05 HR@10, and so must the popularity baseline.
            "gate": {"minHitRateAt10": 0.0, "minImprovement": 0.05, "beatPopularity": True},
            "promotion": "auto",
            "bakeSeconds": 2,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
        },
    )


class Api:
    def __init__(self, api: ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def run(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "recmodeltrainingruns", name)

    def create_run(self, name: str, **spec: Any) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecModelTrainingRun", "metadata": {"name": name},
                "spec": {"model": MODEL, **spec}}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "recmodeltrainingruns", body)

    def rmd(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "recmodeldeployments", MODEL)

    def events(self, name: str) -> list[Any]:
        return self.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items


def served_shas(runner: PodRunnerProcess) -> set[str]:
    """Manifest sha256 each ready server of the model reports (its root endpoint)."""
    shas = set()
    for url in runner.servers().get(f"{NS}/{MODEL}", []):
        try:
            shas.add(httpx.get(f"{url}/", timeout=2.0).json()["manifest_sha256"])
        except (httpx.HTTPError, ValueError, KeyError):
            shas.add("unreachable")
    return shas


def wait_phase(api: Api, name: str, phases: set[str], timeout_s: float, runner: PodRunnerProcess) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = api.run(name).get("status") or {}
        return status if status.get("phase") in phases else None

    try:
        return eventually(reached, timeout_s, 0.5, f"run {name} in {sorted(phases)}")
    except AssertionError:
        logs = sorted((runner.state_dir / "logs").glob(f"{NS}_{name}-*.log"))
        raise AssertionError(f"run {name}: {api.run(name).get('status')}\n" + "".join(log_tail(p) for p in logs)) from None


def test_retraining_promotes_a_better_version_to_the_servers_and_rejects_a_worse_one(
    hybridrec_api: LocalCluster, moto_s3: MotoS3, pod_runner: PodRunnerProcess,
    operator_with_controller: OperatorProcess, kube_api: ApiClient,
) -> None:
    from hybridrec_server.artifacts import s3_client

    s3 = s3_client(moto_s3.endpoint)
    s3.put_object(Bucket=moto_s3.bucket, Key=DATA_KEY, Body=interactions_csv().encode())
    api = Api(kube_api)
    hybridrec_api.kubectl("apply", "-f", "-", input=json.dumps(model_manifest(moto_s3)))
    try:
        # The model serves the small random artifact it was deployed with.
        eventually(lambda: served_shas(pod_runner) == {moto_s3.sha256}, 90, 0.5, "the first version served")

        # A better version: trained for real, gated, promoted automatically, served.
        api.create_run(f"{MODEL}-better")
        status = wait_phase(api, f"{MODEL}-better", {"Promoted", "Failed", "Rejected", "RolledBack"}, 150, pod_runner)
        assert status["phase"] == "Promoted", status
        evaluation, artifact = status["evaluation"], status["artifact"]
        assert evaluation["hitRateAt10"] >= evaluation["servingHitRateAt10"] + 0.05
        assert evaluation["hitRateAt10"] > evaluation["popularityHitRateAt10"]
        assert artifact["uri"] == f"s3://{moto_s3.bucket}/{MODEL}/versions/{MODEL}-better/"
        assert artifact["sha256"] != moto_s3.sha256
        # What the operator read from the pod's termination message is what the trainer wrote to S3.
        manifest = s3.get_object(Bucket=moto_s3.bucket, Key=f"{MODEL}/versions/{MODEL}-better/manifest.json")["Body"].read()
        assert hashlib.sha256(manifest).hexdigest() == artifact["sha256"]
        assert status["gpuHours"] > 0 and status["cost"] > 0  # measured from the pod's start to the trainer's exit
        rmd = api.rmd()
        assert rmd["status"]["promotedModel"]["model"]["sha256"] == artifact["sha256"]
        assert rmd["spec"]["model"]["sha256"] == moto_s3.sha256  # the user's spec is never edited
        eventually(lambda: served_shas(pod_runner) == {artifact["sha256"]}, 60, 0.5, "the new version served")
        url = pod_runner.servers()[f"{NS}/{MODEL}"][0]
        answer = httpx.post(f"{url}/v1/recommend", json={"user_id": "u7", "k": 5}, timeout=5.0)
        assert answer.status_code == 200 and answer.json()["version"] == f"{MODEL}-better", answer.text
        assert not answer.json()["fallback"]  # a user of the new data is known to the new version

        # A worse version (one epoch): not promoted, both scores named; the promoted version keeps serving.
        api.create_run(f"{MODEL}-worse", epochs=1)
        worse = wait_phase(api, f"{MODEL}-worse", {"Rejected", "Failed", "AwaitingPromotion", "Promoting", "Promoted"}, 90, pod_runner)
        assert worse["phase"] == "Rejected", worse
        scores = worse["evaluation"]
        assert scores["servingHitRateAt10"] == pytest.approx(evaluation["hitRateAt10"])
        assert scores["hitRateAt10"] < scores["servingHitRateAt10"]
        gate = next(c for c in worse["conditions"] if c["type"] == "GatePassed")
        assert (gate["status"], gate["reason"]) == ("False", "NoImprovement")
        for text in (gate["message"], worse["message"]):
            assert f"{scores['hitRateAt10']:.4f}" in text and f"{scores['servingHitRateAt10']:.4f}" in text
        assert any(e.reason == "NoImprovement" and e.type == "Warning" for e in api.events(f"{MODEL}-worse"))
        assert api.rmd()["status"]["promotedModel"]["run"] == f"{MODEL}-better"
        assert served_shas(pod_runner) == {artifact["sha256"]}

        # Both runs' measured cost is the model's training spend (what its lifecycle ROI adds to economics.training).
        costs = [api.run(f"{MODEL}-{n}")["status"] for n in ("better", "worse")]
        spent = eventually(lambda: (s := (api.rmd()["status"].get("trainingSpend") or {})).get("runs") == 2 and s,
                           20, 0.5, "the model's trainingSpend counting both runs")
        assert spent["cost"]["USD"] == pytest.approx(sum(c["cost"] for c in costs), abs=1e-5) and spent["cost"]["USD"] > 0
    finally:
        hybridrec_api.kubectl("delete", "rmd", "-n", NS, MODEL, "--ignore-not-found", "--wait=false", check=False)
