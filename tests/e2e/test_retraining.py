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

Then a version that answers errors: its run is given a trained artifact to resume from (``checkpoints/artifact/``,
as a reclaimed pod leaves it) that is the promoted version with 20 extra user ids beyond its embedding table, so the
real server loads it, warms up, passes readiness, and answers HTTP 500 for those users (IndexError in the lookup).
Under a steady load the real Prometheus scrapes the servers; within the bake window the operator reads the new
version's error ratio against the previous version's, rolls back (make-before-break) and the servers answer with
the previous manifest sha256 again.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def model_manifest(s3: MotoS3, name: str = MODEL, **training: Any) -> dict[str, Any]:
    return rmd_manifest(
        name, NS, s3, "internal", rps_per_replica=50, max_replicas=1, stabilisation_s=30,
        training={
            "schedule": SCHEDULE,
            "dataUri": f"s3://{s3.bucket}/{name}/interactions.csv",
            "outputUri": f"s3://{s3.bucket}/{name}/versions",
            "epochs": 10,
            "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
            # The serving version must be beaten by 0.05 HR@10, and so must the popularity baseline.
            "gate": {"minHitRateAt10": 0.0, "minImprovement": 0.05, "beatPopularity": True},
            "promotion": "auto",
            "bakeSeconds": 2,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            **training,
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


GHOSTS = [f"ghost{i}" for i in range(20)]


def plant_faulty_checkpoint(s3: Any, bucket: str, source: str, run_prefix: str, version: str, workdir: Path) -> str:
    """The version under ``source`` with ``GHOSTS`` appended to its user ids (beyond its embedding table) and
    ``version``, left as the run's trained checkpoint; returns its manifest sha256."""
    from hybridrec_server.artifacts import (
        CONFIG_NAME,
        MANIFEST_NAME,
        WEIGHTS_NAME,
        build_manifest,
        pull,
        push,
    )

    good = pull(f"s3://{bucket}/{source}", workdir / "good", client=s3)
    config = json.loads((good / CONFIG_NAME).read_text())
    config["user_ids"] = [*config["user_ids"], *GHOSTS]
    config["version"] = version
    files = {CONFIG_NAME: (json.dumps(config) + "\n").encode(), WEIGHTS_NAME: (good / WEIGHTS_NAME).read_bytes()}
    faulty = workdir / "faulty"
    faulty.mkdir()
    for name, data in files.items():
        (faulty / name).write_bytes(data)
    (faulty / MANIFEST_NAME).write_bytes(build_manifest(files))
    return push(faulty, f"s3://{bucket}/{run_prefix}checkpoints/artifact/", client=s3)


@contextmanager
def steady_load(runner: PodRunnerProcess, interval_s: float = 0.1) -> Iterator[dict[str, int]]:
    """About 10 requests/s to the model's ready servers, known users and ghosts in turn; counts answers by code."""
    codes: dict[str, int] = {}
    stop = threading.Event()

    def loop() -> None:
        users = [u for pair in zip([f"u{i}" for i in range(20)], GHOSTS) for u in pair]
        n = 0
        with httpx.Client(timeout=2.0) as http:
            while not stop.wait(interval_s):
                for url in runner.servers().get(f"{NS}/{MODEL}", []):
                    try:
                        code = str(http.post(f"{url}/v1/recommend", json={"user_id": users[n % len(users)], "k": 5}).status_code)
                    except httpx.HTTPError:
                        code = "unreachable"
                    codes[code] = codes.get(code, 0) + 1
                    n += 1

    thread = threading.Thread(target=loop, name="steady-load", daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(10)


def test_retraining_promotes_a_better_version_rejects_a_worse_one_and_rolls_back_one_that_errs(
    hybridrec_api: LocalCluster, moto_s3: MotoS3, pod_runner: PodRunnerProcess,
    operator_with_controller: OperatorProcess, kube_api: ApiClient, tmp_path: Path,
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
        # No request reached it within its bake window: promoted, and the status says the error ratio was not judged.
        assert "too few requests to the new version" in status["message"], status["message"]
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

        # A version that answers errors: passes the gate (it ranks as the promoted one; minImprovement -1 lets it
        # through), is promoted, its error ratio rises within the bake window: rolled back to the promoted version.
        faulty = f"{MODEL}-faulty"
        plant_faulty_checkpoint(s3, moto_s3.bucket, f"{MODEL}/versions/{MODEL}-better/", f"{MODEL}/versions/{faulty}/",
                                faulty, tmp_path)
        hybridrec_api.kubectl("patch", "rmd", MODEL, "-n", NS, "--type", "merge", "-p", json.dumps(
            {"spec": {"training": {"bakeSeconds": 300, "gate": {"minImprovement": -1.0}}}}))
        with steady_load(pod_runner) as codes:
            # The previous version's requests before the promotion are its error ratio (ghosts get its fallback).
            eventually(lambda: codes.get("200", 0) >= 30, 30, 0.5, "the promoted version answering the load")
            api.create_run(faulty)
            back = wait_phase(api, faulty, {"RolledBack", "Promoted", "Failed", "Rejected"}, 150, pod_runner)
            assert back["phase"] == "RolledBack", back
            assert codes.get("500", 0) > 0, codes  # the faulty version really answered errors
            bake = back["bake"]
            assert bake["newErrorRatio"] > bake.get("previousErrorRatio", 0.0) + 0.02, bake
            promoted = next(c for c in back["conditions"] if c["type"] == "Promoted")
            assert (promoted["status"], promoted["reason"]) == ("False", "ErrorRatioRose")
            for text in (promoted["message"], back["message"]):
                assert f"{bake['newErrorRatio']:.4f}" in text and f"{bake.get('previousErrorRatio', 0.0):.4f}" in text
            assert any(e.reason == "ErrorRatioRose" and e.type == "Warning" for e in api.events(faulty))
            assert api.rmd()["status"]["promotedModel"]["model"]["sha256"] == artifact["sha256"]
            eventually(lambda: served_shas(pod_runner) == {artifact["sha256"]}, 60, 0.5, "the previous version served again")
        url = pod_runner.servers()[f"{NS}/{MODEL}"][0]
        answer = httpx.post(f"{url}/v1/recommend", json={"user_id": GHOSTS[0], "k": 5}, timeout=5.0)
        assert answer.status_code == 200 and answer.json()["version"] == f"{MODEL}-better", answer.text
    finally:
        hybridrec_api.kubectl("delete", "rmd", "-n", NS, MODEL, "--ignore-not-found", "--wait=false", check=False)


RECLAIM_MODEL = "reclaim-recs"
RECLAIM_EPOCHS = 4  # the reclaim lands within the first three epochs even on a fast machine


def test_a_spot_reclaim_mid_run_resumes_from_the_checkpoint(
    hybridrec_api: LocalCluster, moto_s3: MotoS3, pod_runner: PodRunnerProcess,
    operator_with_controller: OperatorProcess, kube_api: ApiClient,
) -> None:
    """The training pod is evicted (as a spot reclaim's node drain does: the pod gets the DisruptionTarget condition)
    after its first epoch checkpoint; the pod runner stops its trainer. The Job's podFailurePolicy ignores the
    disruption (backoffLimit 0: a counted failure would fail the run), its replacement pod resumes at the next epoch,
    and the run completes; its checkpoints are removed once the version is written."""
    from hybridrec_server.artifacts import s3_client
    from hybridrec_server.data import movielens_100k_path, read_interactions, subsample_users

    s3 = s3_client(moto_s3.endpoint)
    # Half of MovieLens 100K: epochs of a second or more, time enough to reclaim the pod before training ends.
    raw = subsample_users(read_interactions(movielens_100k_path()), 470, 0)
    rows = ["user_id,item_id,rating,timestamp", *(f"{u},{i},4,{int(t)}" for u, i, t in zip(raw.users, raw.items, raw.timestamps))]
    s3.put_object(Bucket=moto_s3.bucket, Key=f"{RECLAIM_MODEL}/interactions.csv", Body="\n".join(rows).encode())
    output = f"{RECLAIM_MODEL}/versions/{RECLAIM_MODEL}-run/"
    api = Api(kube_api)
    hybridrec_api.kubectl("apply", "-f", "-", input=json.dumps(model_manifest(
        moto_s3, RECLAIM_MODEL, promotion="manual", epochs=RECLAIM_EPOCHS, gate={"minImprovement": -1.0})))
    run = f"{RECLAIM_MODEL}-run"
    try:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecModelTrainingRun", "metadata": {"name": run},
                "spec": {"model": RECLAIM_MODEL}}
        api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "recmodeltrainingruns", body)

        def first_checkpoint() -> dict[str, Any] | None:
            try:
                return json.loads(s3.get_object(Bucket=moto_s3.bucket, Key=f"{output}checkpoints/epochs/latest.json")["Body"].read())
            except s3.exceptions.NoSuchKey:
                return None

        pointer = eventually(first_checkpoint, 120, 0.1, "the first epoch checkpoint")
        assert pointer["epoch"] < RECLAIM_EPOCHS
        pods = api.core.list_namespaced_pod(NS, label_selector=f"hybridrec.io/training-run={run}").items
        reclaimed = next(p for p in pods if p.status.phase == "Running").metadata.name
        api.core.create_namespaced_pod_eviction(reclaimed, NS, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=reclaimed, namespace=NS)))

        status = wait_phase(api, run, {"AwaitingPromotion", "Rejected", "Failed"}, 180, pod_runner)
        assert status["phase"] == "AwaitingPromotion", status
        pods = api.core.list_namespaced_pod(NS, label_selector=f"hybridrec.io/training-run={run}").items
        done = next(p for p in pods if p.status.phase == "Succeeded")
        assert done.metadata.name != reclaimed
        result = json.loads(done.status.container_statuses[0].state.terminated.message)
        resumed = result["resumedFromEpoch"]
        assert resumed is not None and pointer["epoch"] + 1 <= resumed <= RECLAIM_EPOCHS, result
        log = (pod_runner.state_dir / "logs" / f"{NS}_{done.metadata.name}.log").read_text()
        assert f"resuming at epoch {resumed} from the checkpoint" in log
        assert status["artifact"]["sha256"] == result["sha256"]
        listed = s3.list_objects_v2(Bucket=moto_s3.bucket, Prefix=f"{output}checkpoints/").get("Contents", [])
        assert listed == [], [o["Key"] for o in listed]
    finally:
        hybridrec_api.kubectl("delete", "rmd", "-n", NS, RECLAIM_MODEL, "--ignore-not-found", "--wait=false", check=False)
