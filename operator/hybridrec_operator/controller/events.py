"""What each watch event means for the work queue (event-loop only; ``handlers.py`` hands every event here).

Events only enqueue keys; the reconcile does the work. The filters here keep a burst of N models at a few
reconciles each: our own writes echoed back by the watch, node heartbeats and children's status churn are dropped.
Standby replicas route events the same way (their queue drops them; the indexes stay warm either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.core import capacity
from hybridrec_operator.core.drift import needs_apply
from hybridrec_operator.core.objects import (
    MODEL_LABEL,
    POOL_KIND,
    POOL_LABEL,
    RMD_KIND,
    compact_node,
    compact_pod,
    meta_of,
    model_key,
    resource_version,
)


def own_echo(runtime: Runtime, kind: str, body: Mapping[str, Any]) -> bool:
    """The watch showing our own last write back to us: nothing new to react to.

    Once the watch has caught up with a write, the remembered copy is dropped (the index is as fresh).
    """
    ref = (kind, meta_of(body).get("namespace", "") or "", meta_of(body).get("name", ""))
    mine = runtime.written.get(ref)
    if mine is None:
        return False
    if resource_version(body) >= resource_version(mine):
        runtime.written.pop(ref, None)
    return resource_version(mine) == resource_version(body)


def on_rmd(runtime: Runtime, type: str | None, body: Mapping[str, Any], namespace: str, name: str) -> None:  # noqa: A002
    key = model_key(namespace, name)
    if type == "DELETED":
        runtime.forget_model(key)
        runtime.replan_models("capacity freed", keys=sorted(runtime.shortfall))
        runtime.replan_pools()
        return
    if own_echo(runtime, RMD_KIND, body):
        return
    status = body.get("status") or {}
    if type is None:
        trigger = "operator start"
    elif not status:
        trigger = "created"
    elif status.get("observedGeneration") != body.get("metadata", {}).get("generation"):
        trigger = "spec changed"
    else:
        trigger = "status changed"
    runtime.queue.add(f"rmd:{key}", trigger)


def on_pool(runtime: Runtime, type: str | None, body: Mapping[str, Any], name: str) -> None:  # noqa: A002
    if own_echo(runtime, POOL_KIND, body):
        return
    if type == "DELETED":
        runtime.written.pop((POOL_KIND, "", name), None)
        runtime.replan_models(f"pool {name} deleted")
        return
    runtime.queue.add(f"pool:{name}", "pool changed")
    status = body.get("status") or {}
    if type is not None and status.get("observedGeneration") != body.get("metadata", {}).get("generation"):
        runtime.replan_models(f"pool {name} changed")


def on_node(runtime: Runtime, type: str | None, body: Mapping[str, Any], name: str) -> None:  # noqa: A002
    fingerprint = None if type == "DELETED" else compact_node(body)
    if runtime.fingerprints.get(name) == fingerprint:
        return  # a heartbeat: nothing capacity depends on changed
    first = name not in runtime.fingerprints
    runtime.fingerprints[name] = fingerprint
    if type == "DELETED":
        runtime.fingerprints.pop(name, None)
    runtime.replan_pools()
    if not (first and type is None):
        runtime.replan_models(f"node {name} changed")


def on_pod(runtime: Runtime, type: str | None, body: Mapping[str, Any], namespace: str,  # noqa: A002
           labels: Mapping[str, str]) -> None:
    pool = labels.get(POOL_LABEL)
    runtime.replan_pools([pool] if pool and labels.get(MODEL_LABEL) else None)
    model = labels.get(MODEL_LABEL)
    key = model_key(namespace, model) if model and labels.get("app.kubernetes.io/managed-by") == "hybridrec" else None
    if key and capacity.unschedulable_since(compact_pod(body)) is not None:
        runtime.queue.add(f"rmd:{key}", "pods pending")
    if type == "DELETED" or (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        # GPUs came free: models short of room may fit now.
        runtime.replan_models("capacity freed", keys=sorted(runtime.shortfall - {key}))


def child_needs_reconcile(runtime: Runtime, type_: str | None, body: Mapping[str, Any], namespace: str, model: str) -> str | None:
    """Why a child's watch event needs its model reconciled, or None when nothing we care about changed.

    Children change often (the controllers write their status); only drift from what we rendered, a deletion, or
    a change in ready replicas matters. Filtering here keeps a burst of N models at a few reconciles each.
    """
    kind, name = str(body.get("kind")), str(meta_of(body).get("name", ""))
    ref = (kind, namespace, name)
    if type_ == "DELETED":
        runtime.written.pop(ref, None)
        return f"{kind.lower()} deleted"
    want = runtime.desired.get(ref)
    if want is None:
        return f"{kind.lower()} appeared"
    if needs_apply(want, body):
        return f"{kind.lower()} drifted"
    if kind == "Deployment":
        replicas = int((body.get("spec") or {}).get("replicas") or 0)
        ready = min(replicas, int((body.get("status") or {}).get("readyReplicas") or 0))
        pool = ((meta_of(body).get("labels") or {}).get(POOL_LABEL)) or ""
        rmd = runtime.rmd_body(model_key(namespace, model)) or {}
        recorded = {p.get("pool"): int(p.get("ready", 0)) for p in (rmd.get("status") or {}).get("placements") or []}
        if recorded.get(pool, 0) != ready:
            return "ready replicas changed"
    return None


def on_child(runtime: Runtime, type: str | None, body: Mapping[str, Any], namespace: str,  # noqa: A002
             labels: Mapping[str, str]) -> None:
    model = labels.get(MODEL_LABEL)
    if not model or own_echo(runtime, str(body.get("kind")), body):
        return
    trigger = child_needs_reconcile(runtime, type, body, namespace, model)
    if trigger:
        runtime.queue.add(f"rmd:{model_key(namespace, model)}", trigger)
