"""The pod runner as the kubelet of retraining pods on kwok nodes: which pods get a trainer, its environment, the
terminal status it writes when the trainer exits (podtraining.py), and the process lifecycle in PodRunner (real
processes: a stand-in trainer script that writes a termination message and exits with a chosen code)."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hybridrec_local.podrunner import PodRunner, RunnerConfig
from hybridrec_local.podtraining import terminated_status, trainer_env, training_target

KWOK = {"onprem-a100-0"}


def pod(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"uid": "p1", "namespace": "shop", "name": "recs-202601010300-abcde",
                     "labels": {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/training-run": "recs-202601010300",
                                "hybridrec.io/trained-model": "recs", "hybridrec.io/pool": "onprem-a100"}},
        "spec": {"nodeName": "onprem-a100-0", "containers": [{
            "name": "trainer", "image": "ghcr.io/x/hybridrec-server:1", "command": ["python", "-m", "hybridrec_server.training_job"],
            "env": [{"name": "HYBRIDREC_TRAIN_DATA_URI", "value": "s3://data/recs.csv"},
                    {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"},
                    {"name": "HYBRIDREC_TRAIN_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['hybridrec.io/training-run']"}}}],
        }]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "image": "ghcr.io/x/hybridrec-server:1", "ready": True, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-01-01T03:00:05Z"}}}]},
    }
    for path, value in over.items():
        node = base
        *parents, leaf = path.split("__")
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return base


def test_a_running_training_pod_on_a_kwok_node_gets_a_trainer_with_its_container_env() -> None:
    target = training_target(pod(), KWOK)
    assert target is not None
    assert (target.run, target.model, target.pool, target.node) == ("recs-202601010300", "recs", "onprem-a100", "onprem-a100-0")
    assert target.env == {"HYBRIDREC_TRAIN_DATA_URI": "s3://data/recs.csv", "AWS_ENDPOINT_URL": "http://minio.storage:9000",
                          "HYBRIDREC_TRAIN_VERSION": "recs-202601010300"}


@pytest.mark.parametrize("over", [
    {"status__phase": "Pending"},                                   # not Running yet (kwok has not started it)
    {"status__phase": "Succeeded"},                                 # already finished
    {"spec__nodeName": "real-node"},                                # not a kwok node: a real kubelet runs it
    {"metadata__deletionTimestamp": "2026-01-01T03:01:00Z"},        # being deleted (reclaim, Job deleted)
    {"metadata__labels": {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/model": "recs"}},  # a server pod
    {"metadata__labels": {"hybridrec.io/training-run": "x"}},       # not hybridrec's
    {"spec__containers": [{"name": "trainer", "image": "other", "command": ["/bin/train"]}]},  # not our trainer
])
def test_other_pods_get_no_trainer(over: dict[str, Any]) -> None:
    assert training_target(pod(**over), KWOK) is None


def test_trainer_env_uses_the_local_s3_and_a_local_termination_log() -> None:
    target = training_target(pod(), KWOK)
    assert target is not None
    env = trainer_env(target, {"PATH": "/bin", "AWS_ACCESS_KEY_ID": "testing", "SECRET_TOKEN": "no"},
                      termination_log="/tmp/t/termination-log", s3_endpoint="http://127.0.0.1:5000", torch_threads=1)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"  # this machine's S3, not the cluster-internal one
    assert env["HYBRIDREC_TERMINATION_LOG"] == "/tmp/t/termination-log"
    assert env["HYBRIDREC_TRAIN_DATA_URI"] == "s3://data/recs.csv" and env["AWS_ACCESS_KEY_ID"] == "testing"
    assert "SECRET_TOKEN" not in env and env["PATH"] == "/bin"


def test_terminated_status_is_what_a_kubelet_writes() -> None:
    t0, t1 = datetime(2026, 1, 1, 3, 0, 5, tzinfo=UTC), datetime(2026, 1, 1, 3, 10, tzinfo=UTC)
    ok = terminated_status(pod(), 0, '{"uri":"s3://m/v2/"}', t0, t1)["status"]
    assert ok["phase"] == "Succeeded"
    (cs,) = ok["containerStatuses"]
    assert cs["name"] == "trainer" and cs["state"]["running"] is None  # the strategic merge removes the running state
    assert cs["state"]["terminated"] == {"exitCode": 0, "reason": "Completed", "startedAt": "2026-01-01T03:00:05Z",
                                         "finishedAt": "2026-01-01T03:10:00Z", "message": '{"uri":"s3://m/v2/"}'}
    assert {(c["type"], c["status"]) for c in ok["conditions"]} == {("Ready", "False"), ("ContainersReady", "False")}
    bad = terminated_status(pod(), 2, "bad input: " + "x" * 9000, t0, t1)["status"]
    assert bad["phase"] == "Failed"
    terminated = bad["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2 and terminated["reason"] == "Error" and len(terminated["message"]) == 4096
    assert "message" not in terminated_status(pod(), 1, "", t0, t1)["status"]["containerStatuses"][0]["state"]["terminated"]


def fake_trainer(tmp_path: Path, exit_code: int, message: str, sleep_s: float = 0.0) -> str:
    """A stand-in for ``python -m hybridrec_server.training_job``: writes the termination message, exits."""
    script = tmp_path / "trainer.sh"
    hang = f"exec sleep {sleep_s}\n" if sleep_s else ""  # exec: SIGTERM reaches the sleeping process itself
    script.write_text(f"#!/bin/sh\n{hang}printf '%s' '{message}' > \"$HYBRIDREC_TERMINATION_LOG\"\n"
                      f"echo \"trained $HYBRIDREC_TRAIN_DATA_URI via $AWS_ENDPOINT_URL\"\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def drive(runner: PodRunner, pods: list[dict[str, Any]], until: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "timed out"
        runner.step(pods, KWOK)
        time.sleep(0.05)


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (2, "Failed")])
def test_runner_runs_the_trainer_and_finishes_the_pod_once(tmp_path: Path, code: int, phase: str) -> None:
    written: list[tuple[str, str, Mapping[str, Any]]] = []
    config = RunnerConfig(state_dir=tmp_path / "state", s3_endpoint="http://127.0.0.1:5000",
                          python=fake_trainer(tmp_path, code, json.dumps({"sha256": "b" * 64})))
    runner = PodRunner(config, write_status=lambda ns, name, patch: written.append((ns, name, patch)))
    try:
        pods = [pod()]
        drive(runner, pods, lambda: bool(written))
        ((ns, name, patch),) = written
        assert (ns, name) == ("shop", "recs-202601010300-abcde")
        terminated = patch["status"]["containerStatuses"][0]["state"]["terminated"]
        assert patch["status"]["phase"] == phase and terminated["exitCode"] == code
        assert json.loads(terminated["message"]) == {"sha256": "b" * 64}
        log = (tmp_path / "state" / "logs" / "shop_recs-202601010300-abcde.log").read_text()
        assert "trained s3://data/recs.csv via http://127.0.0.1:5000" in log
        # The watch still shows the pod Running for a moment: the trainer is not started again.
        for _ in range(5):
            runner.step(pods, KWOK)
        assert len(written) == 1 and not runner.trainers
    finally:
        runner.shutdown()


def test_a_training_pod_deleted_midway_stops_its_trainer_without_a_status(tmp_path: Path) -> None:
    written: list[Any] = []
    config = RunnerConfig(state_dir=tmp_path / "state", grace_s=0.5, python=fake_trainer(tmp_path, 0, "{}", sleep_s=30))
    runner = PodRunner(config, write_status=lambda *a: written.append(a))
    try:
        runner.step([pod()], KWOK)
        (trainer,) = runner.trainers.values()
        # A spot reclaim or a deleted Job: the pod is deleting, then gone.
        runner.step([pod(metadata__deletionTimestamp="2026-01-01T03:01:00Z")], KWOK)
        drive(runner, [], lambda: trainer.proc.poll() is not None, timeout_s=10)
        assert not written and not runner.trainers
    finally:
        runner.shutdown()


def test_status_write_failures_are_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(*_: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("API server restarting")

    runner = PodRunner(RunnerConfig(state_dir=tmp_path / "state", python=fake_trainer(tmp_path, 0, "{}")), write_status=flaky)
    try:
        drive(runner, [pod()], lambda: len(calls) >= 2)
        runner.step([pod()], KWOK)
        assert len(calls) == 2 and not runner.trainers
    finally:
        runner.shutdown()


def test_the_embedded_cluster_leaves_training_pods_to_the_runner() -> None:
    """kwok's pod-complete stage (hack/cluster/kwok.yaml) must not complete hybridrec's training pods, while every
    other Job pod is completed at once as kwok's built-in stage does."""
    import yaml
    from hybridrec_local.components import CONFIG_DIR

    docs = [d for d in yaml.safe_load_all((CONFIG_DIR / "kwok.yaml").read_text()) if d]
    stages = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Stage"}
    assert set(stages) == {"pod-ready", "pod-complete", "pod-delete"}  # all three: kwok drops its built-ins for pods
    keys = {e["key"]: e for e in stages["pod-complete"]["spec"]["selector"]["matchExpressions"]}
    assert keys['.metadata.labels["hybridrec.io/training-run"]']["operator"] == "DoesNotExist"
    assert keys[".metadata.ownerReferences.[].kind"]["values"] == ["Job"]
