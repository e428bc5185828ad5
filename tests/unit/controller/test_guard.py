"""The placement guard's decisions (issue 9 item 4): which offending pods hybridrec may delete, how the model's
SensitivePlacementViolation condition moves, and which watch events wake the guard. Its I/O (delete, status,
events, metric) runs against the real control plane in tests/integration/invariant."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from hybridrec_operator.controller.guard import PlacementGuard
from hybridrec_operator.core import conditions
from hybridrec_operator.core.sensitivity import Violation, created_by_hybridrec, training_job_of_hybridrec

RMD_OWNER = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "name": "account-recs",
             "uid": "rmd-uid", "controller": True}
OURS = {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/model": "account-recs"}


def deployment(name: str = "account-recs-onprem-a100", *, labels: dict[str, str] | None = None,
               owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "shop", "labels": OURS if labels is None else labels,
                                               "ownerReferences": [RMD_OWNER] if owners is None else owners}}


def pod(*, labels: dict[str, str] | None = None, owner: str | None = "account-recs-onprem-a100-5d8f7",
        template_hash: str = "5d8f7", kind: str = "ReplicaSet") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "account-recs-onprem-a100-5d8f7-abcde", "namespace": "shop",
                            "labels": {**(OURS if labels is None else labels), "pod-template-hash": template_hash}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "rs", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": "onprem-a100-1"}}


def test_a_pod_of_our_deployment_may_be_deleted() -> None:
    assert created_by_hybridrec(pod(), [deployment()])


@pytest.mark.parametrize("case, the_pod, deployments", [
    ("a user's bare pod that copies our labels", pod(owner=None), [deployment()]),
    ("owned by a ReplicaSet of someone else's Deployment", pod(owner="user-app-5d8f7"), [deployment()]),
    ("a user's ReplicaSet named like ours but another template hash", pod(template_hash="99999"), [deployment()]),
    ("controlled by a Job, not a ReplicaSet", pod(kind="Job"), [deployment()]),
    ("without our managed-by label", pod(labels={"hybridrec.io/model": "account-recs"}), [deployment()]),
    ("our Deployment's name, but the Deployment is not the model's", pod(), [deployment(owners=[])]),
    ("a Deployment without our label", pod(), [deployment(labels={"hybridrec.io/model": "account-recs"})]),
    ("no Deployment of the model known", pod(), []),
])
def test_anything_else_is_never_deleted(case: str, the_pod: dict[str, Any], deployments: list[dict[str, Any]]) -> None:
    assert not created_by_hybridrec(the_pod, deployments), case


def _trainer(job_name: str = "run-1", job_uid: str = "job-uid", labels: dict[str, str] | None = None) -> dict[str, Any]:
    base = {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/trained-model": "account-recs"}
    return {"metadata": {"name": f"{job_name}-xyz", "namespace": "shop", "labels": base if labels is None else labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid,
                                              "controller": True}]}}


def _job(owners: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    run = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun", "name": "run-1", "uid": "r", "controller": True}
    return {"metadata": {"name": "run-1", "namespace": "shop", "uid": "job-uid",
                         "labels": {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/trained-model": "account-recs"}
                         if labels is None else labels, "ownerReferences": [run] if owners is None else owners}}


def test_a_retraining_pod_of_our_job_may_be_deleted_and_nothing_that_only_looks_like_one() -> None:
    assert training_job_of_hybridrec(_trainer(), _job())
    assert not training_job_of_hybridrec(_trainer(), None)  # the Job is gone or is not a Job
    assert not training_job_of_hybridrec(_trainer(job_uid="other"), _job())  # a Job of that name, not that one
    assert not training_job_of_hybridrec(_trainer(labels={"hybridrec.io/trained-model": "account-recs"}), _job())
    assert not training_job_of_hybridrec(_trainer(), _job(owners=[]))  # a user's Job copying our labels
    assert not training_job_of_hybridrec(_trainer(), _job(labels={"hybridrec.io/trained-model": "account-recs"}))
    assert not training_job_of_hybridrec(_trainer(), _job(owners=[{"apiVersion": "batch/v1", "kind": "CronJob",
                                                                   "name": "c", "uid": "c", "controller": True}]))


def test_violation_message_names_pod_node_and_what_was_done() -> None:
    v = Violation("shop", "p-1", "account-recs", "onprem-a100-1", "public")
    assert v.model_key == "shop/account-recs"
    for text in (v.describe(deleted=True), v.describe(deleted=False)):
        assert "shop/p-1" in text and "onprem-a100-1" in text and "hybridrec.io/tenancy=public" in text
    assert v.describe(deleted=True).endswith("the pod is deleted") and v.message == v.describe(deleted=True)
    assert "left alone" in v.describe(deleted=False)
    forbidden = v.describe(deleted=False, failure='pods "p-1" is forbidden.')
    assert "could not delete it (pods \"p-1\" is forbidden) and keeps trying" in forbidden
    assert "without a hybridrec.io/tenancy label" in Violation("shop", "p", "m", "n", "").describe(deleted=True)


def _cond(status: str, reason: str, message: str) -> list[dict[str, Any]]:
    return [{"type": conditions.READY, "status": "True"},
            {"type": conditions.SENSITIVE_PLACEMENT_VIOLATION, "status": status, "reason": reason, "message": message}]


def test_condition_turns_true_then_resolved_and_is_written_only_on_change() -> None:
    msg = "pod shop/p-1 of model account-recs runs on node n-1 labelled hybridrec.io/tenancy=public: x; the pod is deleted"
    # A model that never had a violation gets no condition at all (no write per model per check).
    assert conditions.violation_updates({}, {"shop/a": [{"type": "Ready", "status": "True"}]}) == {}
    # A violation: True, naming it.
    first = conditions.violation_updates({"shop/a": [msg]}, {"shop/a": []})
    status, reason, message = first["shop/a"]
    assert (status, reason) == ("True", "PodOnNonPrivateNode") and "shop/p-1" in message and "n-1" in message
    # Still there: nothing to write.
    assert conditions.violation_updates({"shop/a": [msg]}, {"shop/a": _cond(status, reason, message)}) == {}
    # Gone: False, ViolationResolved, still naming the pod and node; then stable.
    resolved = conditions.violation_updates({}, {"shop/a": _cond(status, reason, message)})["shop/a"]
    assert resolved[:2] == ("False", "ViolationResolved") and "shop/p-1" in resolved[2] and "n-1" in resolved[2]
    assert conditions.violation_updates({}, {"shop/a": _cond(*resolved)}) == {}
    # A new violation after a resolved one: True again.
    assert conditions.violation_updates({"shop/a": [msg]}, {"shop/a": _cond(*resolved)})["shop/a"][0] == "True"


def test_many_violations_are_summarised() -> None:
    status, _, message = conditions.violation_condition([f"pod shop/p-{i} on node n-{i}" for i in range(5)])
    assert status == "True" and "p-0" in message and "p-2" in message and "p-4" not in message and "2 more" in message


def _guard() -> PlacementGuard:
    return PlacementGuard(runtime=None, interval=3600)  # type: ignore[arg-type] - the event filters never touch it


def _node(tenancy: str | None, ready: str = "True") -> dict[str, Any]:
    labels = {"hybridrec.io/pool": "onprem-a100"} | ({"hybridrec.io/tenancy": tenancy} if tenancy else {})
    return {"metadata": {"name": "n-1", "labels": labels}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def test_node_events_wake_the_guard_only_when_tenancy_changes() -> None:
    async def scenario() -> list[set[str]]:
        guard = _guard()
        woken = []
        for type_, body in ((None, _node("private")), ("MODIFIED", _node("private", ready="False")),
                            ("MODIFIED", _node("public")), ("MODIFIED", _node(None)), ("DELETED", _node(None))):
            guard.reasons.clear()
            guard.on_node(type_, body, "n-1")
            woken.append(set(guard.reasons))
        return woken

    assert asyncio.run(scenario()) == [{"node n-1"}, set(), {"node n-1"}, {"node n-1"}, {"node n-1"}]


def test_pod_events_wake_the_guard_when_a_model_pod_is_bound_or_gone() -> None:
    async def scenario() -> list[bool]:
        guard = _guard()
        out = []
        for type_, node, labels in (("ADDED", "", OURS), ("MODIFIED", "n-1", OURS), ("DELETED", "", OURS),
                                    ("MODIFIED", "n-1", {"app": "user"}),
                                    ("MODIFIED", "n-1", {"hybridrec.io/trained-model": "account-recs"})):
            guard.reasons.clear()
            guard.on_pod(type_, {"spec": {"nodeName": node}}, labels)
            out.append(bool(guard.reasons))
        return out

    assert asyncio.run(scenario()) == [False, True, True, False, True]


def test_model_events_wake_the_guard_only_when_its_data_class_changes() -> None:
    """A model raised to restricted makes pods already bound (a user's carrying its label included) sensitive with
    no pod or node event; status writes and other edits must not cost a pass each."""
    def rmd(sensitivity: str, replicas: int = 1) -> dict[str, Any]:
        return {"spec": {"dataSensitivity": sensitivity, "replicas": replicas}, "status": {"replicas": replicas}}

    async def scenario() -> list[set[str]]:
        guard = _guard()
        woken = []
        for type_, body in ((None, rmd("public")), ("MODIFIED", rmd("public", 3)), ("MODIFIED", rmd("restricted")),
                            ("MODIFIED", rmd("restricted", 2)), ("MODIFIED", rmd("internal")), ("DELETED", rmd("internal"))):
            guard.reasons.clear()
            guard.on_model(type_, body, "ns", "m")
            woken.append(set(guard.reasons))
        return woken

    assert asyncio.run(scenario()) == [{"model ns/m"}, set(), {"model ns/m"}, set(), {"model ns/m"}, {"model ns/m"}]


class _Recording(PlacementGuard):
    """The guard's own loop, with the pass itself recorded instead of run (it needs the API server)."""

    passes: list[list[str]]

    async def check(self, reasons: list[str]) -> list[Violation]:
        self.passes.append(reasons)
        return []


def _loop_guard(leader: bool) -> _Recording:
    runtime = SimpleNamespace(leader=SimpleNamespace(is_leader=leader), loop=asyncio.get_running_loop())
    guard = _Recording(runtime=runtime, interval=3600)  # type: ignore[arg-type]
    guard.passes = []
    return guard


@pytest.mark.parametrize("leader, expected", [(True, [["node n-1", "pod"]]), (False, [])])
def test_only_the_leader_checks_and_a_burst_of_events_costs_one_pass(leader: bool, expected: list[list[str]]) -> None:
    async def scenario() -> list[list[str]]:
        guard = _loop_guard(leader)
        task = asyncio.create_task(guard.run())
        for _ in range(50):
            guard.poke("pod")
        guard.poke("node n-1")
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return guard.passes

    assert asyncio.run(scenario()) == expected


def test_a_violation_the_condition_already_names_is_not_reported_again() -> None:
    """After a restart or a takeover the guard finds the same pod again: no second count or event. The condition is
    a sentence (its first "pod" capitalised), so the match must not depend on case."""
    from hybridrec_operator.controller.guard import _reported

    v = Violation("shop", "p-1", "account-recs", "n-1", "public")
    status, reason, message = conditions.violation_condition([v.describe(deleted=False)])
    assert message.startswith("Pod shop/p-1 ")
    rmd = {"status": {"conditions": _cond(status, reason, message)}}
    assert _reported(rmd, v)
    assert not _reported(rmd, Violation("shop", "p-10", "account-recs", "n-1", "public"))  # a prefix is not a match
    assert not _reported({"status": {"conditions": _cond("False", "ViolationResolved", message)}}, v)
    assert not _reported(None, v)
