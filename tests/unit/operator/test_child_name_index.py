"""The GET before a child's first apply is spared only when a synced watch of every object of its kind vouches for
the name (free, or controlled by this model); anything else keeps the GET, so nothing foreign is applied over."""

from __future__ import annotations

from typing import Any

from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.runtime import NAME_INDEXES, Runtime
from hybridrec_operator.core.decide import ModelDecision, needs_lookup

UID = "model-uid"


def entry(controller_uid: str | None, managed: bool = True) -> dict[str, Any]:
    refs = [{"kind": "RecModelDeployment", "name": "m", "uid": controller_uid, "controller": True}] if controller_uid else []
    labels = {"app.kubernetes.io/managed-by": "hybridrec"} if managed else {}
    return {"kind": "Service", "metadata": {"name": "m", "labels": labels, "ownerReferences": refs}}


def test_unsynced_index_always_looks_up() -> None:
    assert needs_lookup([], synced=False, uid=UID)
    assert needs_lookup([entry(UID)], synced=False, uid=UID)


def test_synced_index_spares_the_get_for_a_free_name_or_our_own_object() -> None:
    assert not needs_lookup([], synced=True, uid=UID)
    assert not needs_lookup([entry(UID)], synced=True, uid=UID)


def test_any_other_owner_keeps_the_get() -> None:
    assert needs_lookup([entry(None, managed=False)], synced=True, uid=UID)  # a user's object
    assert needs_lookup([entry("older-model-uid")], synced=True, uid=UID)  # labelled ours, another model's uid
    assert needs_lookup([entry(UID), entry("other")], synced=True, uid=UID)  # two objects seen under one name
    assert needs_lookup([entry(UID)], synced=True, uid="")  # a model without a uid owns nothing


def runtime(indices: dict[str, Any], indexed: bool) -> Runtime:
    rt = Runtime(config=OperatorConfig(), kube=None, indices=indices, loop=None, executor=None,  # type: ignore[arg-type]
                 seam=None, leader=None, identity="unit")  # type: ignore[arg-type]
    rt.indexed = indexed
    return rt


def test_runtime_drops_only_what_the_synced_name_indexes_vouch_for() -> None:
    indices = {
        NAME_INDEXES["Service"]: {("ns", "taken"): [entry(None, managed=False)], ("ns", "mine"): [entry(UID)]},
        NAME_INDEXES["Deployment"]: {},
        # no PodDisruptionBudget name index registered: its children keep the GET
    }
    decision = ModelDecision(key="ns/m", uid=UID)
    decision.unseen = {("Service", "taken"), ("Service", "mine"), ("Service", "free"), ("Deployment", "free"),
                       ("PodDisruptionBudget", "free")}
    assert runtime(indices, indexed=True).must_look_up("ns", decision) == {("Service", "taken"), ("PodDisruptionBudget", "free")}
    assert runtime(indices, indexed=False).must_look_up("ns", decision) == decision.unseen  # not synced: every GET kept
