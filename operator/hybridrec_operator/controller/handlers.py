"""kopf registrations of the hybridrec operator, and nothing else: each handler hands its event to the runtime.

``kopf run -m hybridrec_operator.controller.handlers`` or ``hybridrec operator run`` loads this module. Where the
work happens:

* ``app.py``: startup/shutdown; builds the seam, the runtime, the leader elector and the cost controller.
* ``events.py``: what each watch event enqueues; ``runtime.py``: snapshots from the indexes, reconcile, workers.
* ``core/decide.py``: the per-model decision (pure); ``leader.py``: which replica acts (a Lease).

Why event handlers and not kopf's on.create/on.update: those persist a diff-base annotation (and with timers a
finalizer) on every object, two to three extra writes per model and per change. Event handlers plus our own queue
keep it to the children that really change, one status patch and one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from hybridrec_operator.api.models import API_VERSION
from hybridrec_operator.controller import app, dra, events, training
from hybridrec_operator.core import dra as core_dra
from hybridrec_operator.core.objects import MANAGED, MODEL_LABEL, compact_meta, compact_node, compact_pod, requests_accelerators

GROUP_VERSION = API_VERSION  # hybridrec.io/v1alpha1


# --------------------------------------------------------------------------------------------------- indexes


@kopf.index(GROUP_VERSION, "recmodeldeployments")
def hybridrec_rmds(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    compact = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": compact_meta(body),
               "spec": body.get("spec") or {}, "status": body.get("status") or {}}
    return {(namespace, name): compact}


@kopf.index(GROUP_VERSION, "computepools")
def hybridrec_pools(body: kopf.Body, name: str, **_: Any) -> dict[Any, Any]:
    return {name: {"metadata": compact_meta(body), "spec": body.get("spec") or {}, "status": body.get("status") or {}}}


@kopf.index("v1", "nodes")
def hybridrec_nodes(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: compact_node(body)}


def _gpu_or_hybridrec_pod(body: kopf.Body, labels: Mapping[str, str], spec: Mapping[str, Any], **_: Any) -> bool:
    # A pod naming a model (hybridrec.io/model) is indexed even when hybridrec did not create it and it asks for no
    # GPU: the model's Service sends it traffic, so the placement guard must see it on a node that is not private.
    return (labels.get("app.kubernetes.io/managed-by") == "hybridrec" or MODEL_LABEL in labels
            or requests_accelerators(spec))


@kopf.index("v1", "pods", when=_gpu_or_hybridrec_pod)
def hybridrec_pods(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any]:
    pod = compact_pod(body)
    keys: dict[Any, Any] = {None: pod}
    if labels.get("app.kubernetes.io/managed-by") == "hybridrec" and labels.get(MODEL_LABEL):
        keys[(namespace, labels[MODEL_LABEL])] = pod
    return keys


def _child(body: kopf.Body) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": compact_meta(body, "ownerReferences"),
            "spec": body.get("spec") or {}, "status": body.get("status") or {}}


@kopf.index("apps/v1", "deployments", labels=MANAGED)
def hybridrec_deployments(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any] | None:
    return {(namespace, labels[MODEL_LABEL]): _child(body)} if labels.get(MODEL_LABEL) else None


@kopf.index("v1", "services", labels=MANAGED)
def hybridrec_services(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any] | None:
    return {(namespace, labels[MODEL_LABEL]): _child(body)} if labels.get(MODEL_LABEL) else None


@kopf.index("policy/v1", "poddisruptionbudgets", labels=MANAGED)
def hybridrec_pdbs(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any] | None:
    return {(namespace, labels[MODEL_LABEL]): _child(body)} if labels.get(MODEL_LABEL) else None


@kopf.index("networking.k8s.io/v1", "networkpolicies", labels=MANAGED)
def hybridrec_networkpolicies(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any] | None:
    return {(namespace, labels[MODEL_LABEL]): _child(body)} if labels.get(MODEL_LABEL) else None


@kopf.index(core_dra.GROUP_VERSION, "resourceclaimtemplates", labels=MANAGED)
def hybridrec_resourceclaimtemplates(body: kopf.Body, namespace: str, labels: Mapping[str, str],
                                     **_: Any) -> dict[Any, Any] | None:
    return {(namespace, labels[MODEL_LABEL]): _child(body)} if labels.get(MODEL_LABEL) else None


# DRA inventory (controller/dra.py): DeviceClasses, ResourceSlices, and the allocated ResourceClaims of others
# (hybridrec's own claims are counted through its pods).
def _foreign_claim(labels: Mapping[str, str], **_: Any) -> bool:
    return labels.get("app.kubernetes.io/managed-by") != "hybridrec"


@kopf.index(core_dra.GROUP_VERSION, "deviceclasses")
def hybridrec_deviceclasses(body: kopf.Body, name: str, **_: Any) -> dict[Any, Any]:
    return {name: core_dra.compact_class(body)}


@kopf.index(core_dra.GROUP_VERSION, "resourceslices")
def hybridrec_resourceslices(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: core_dra.compact_slice(body)}


@kopf.index(core_dra.GROUP_VERSION, "resourceclaims", when=_foreign_claim)
def hybridrec_resourceclaims(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
    claim = core_dra.compact_claim(body)
    return {None: claim} if claim["results"] else None


def _name_entry(body: kopf.Body) -> dict[str, Any]:
    """What the ownership check needs of any object of a child's kind: its controller ownerReference and
    managed-by label (a few hundred bytes, whatever the object's size)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    managed = {k: labels[k] for k in ("app.kubernetes.io/managed-by",) if k in labels}
    refs = [dict(r) for r in meta.get("ownerReferences") or [] if r.get("controller")]
    return {"kind": body.get("kind"), "metadata": {"name": meta.get("name"), "labels": managed, "ownerReferences": refs}}


# Every object of the children's kinds, not only ours: a name free or ours in a synced index needs no GET before our
# first apply (runtime.NAME_INDEXES, core/decide.needs_lookup). kopf filters labels in the operator, not the API
# server, so these watch the same streams as the indexes above: no extra requests.
@kopf.index("apps/v1", "deployments")
def hybridrec_deployment_names(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _name_entry(body)}


@kopf.index("v1", "services")
def hybridrec_service_names(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _name_entry(body)}


@kopf.index("policy/v1", "poddisruptionbudgets")
def hybridrec_pdb_names(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _name_entry(body)}


@kopf.index("networking.k8s.io/v1", "networkpolicies")
def hybridrec_networkpolicy_names(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _name_entry(body)}


@kopf.index(core_dra.GROUP_VERSION, "resourceclaimtemplates")
def hybridrec_resourceclaimtemplate_names(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _name_entry(body)}


# ------------------------------------------------------------------------------------------- event handlers
# Before startup finished (and after cleanup) there is no operator in memo: the event is dropped, and the watch's
# initial listing delivers every object again once it runs.


def _running(memo: kopf.Memo) -> app.Operator | None:
    """The running operator; being called at all means the indexes are synced: kopf holds every handler other
    than an index until all watched kinds are listed into the indexes, so the runtime may now trust them."""
    op = app.running(memo)
    if op is not None:
        op.runtime.indexed = True
    return op


@kopf.on.event(GROUP_VERSION, "recmodeldeployments")
async def rmd_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    if op := _running(memo):
        events.on_rmd(op.runtime, type, body, namespace, name)
        if op.guard is not None:  # a model raised to confidential/restricted makes its pods sensitive at once
            op.guard.on_model(type, body, namespace, name)


@kopf.on.event(GROUP_VERSION, "computepools")
async def pool_event(type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    if op := _running(memo):
        events.on_pool(op.runtime, type, body, name)
        if op.guard is not None:  # a nodeSelector may now pick nodes of another tenancy
            op.guard.poke(f"pool {name}")


@kopf.on.event("v1", "nodes")
async def node_event(type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    if op := _running(memo):
        events.on_node(op.runtime, type, body, name)
        if op.guard is not None:  # a relabelled node may now carry a sensitive pod (controller/guard.py)
            op.guard.on_node(type, body, name)


@kopf.on.event("v1", "pods", when=_gpu_or_hybridrec_pod)
async def pod_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str], memo: kopf.Memo,  # noqa: A002
                    **_: Any) -> None:
    if op := _running(memo):
        events.on_pod(op.runtime, type, body, namespace, labels)
        if op.guard is not None:
            op.guard.on_pod(type, body, labels)


@kopf.on.event("apps/v1", "deployments", labels=MANAGED)
async def deployment_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str],  # noqa: A002
                           memo: kopf.Memo, **_: Any) -> None:
    if op := _running(memo):
        events.on_child(op.runtime, type, body, namespace, labels)


@kopf.on.event("v1", "services", labels=MANAGED)
async def service_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str],  # noqa: A002
                        memo: kopf.Memo, **_: Any) -> None:
    if op := _running(memo):
        events.on_child(op.runtime, type, body, namespace, labels)


@kopf.on.event("policy/v1", "poddisruptionbudgets", labels=MANAGED)
async def pdb_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str],  # noqa: A002
                    memo: kopf.Memo, **_: Any) -> None:
    if op := _running(memo):
        events.on_child(op.runtime, type, body, namespace, labels)


@kopf.on.event("networking.k8s.io/v1", "networkpolicies", labels=MANAGED)
async def networkpolicy_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str],  # noqa: A002
                              memo: kopf.Memo, **_: Any) -> None:
    if op := _running(memo):
        events.on_child(op.runtime, type, body, namespace, labels)


@kopf.on.event(core_dra.GROUP_VERSION, "resourceclaimtemplates", labels=MANAGED)
async def claim_template_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str],  # noqa: A002
                               memo: kopf.Memo, **_: Any) -> None:
    if op := _running(memo):
        events.on_child(op.runtime, type, body, namespace, labels)


@kopf.on.event(core_dra.GROUP_VERSION, "deviceclasses")
async def device_class_event(type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    if op := _running(memo):
        dra.on_inventory(op.runtime, "DeviceClass", type, name, core_dra.compact_class(body))


@kopf.on.event(core_dra.GROUP_VERSION, "resourceslices")
async def resource_slice_event(type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:  # noqa: A002
    if op := _running(memo):
        dra.on_inventory(op.runtime, "ResourceSlice", type, name, core_dra.compact_slice(body))


@kopf.on.event(core_dra.GROUP_VERSION, "resourceclaims", when=_foreign_claim)
async def resource_claim_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,  # noqa: A002
                               **_: Any) -> None:
    if op := _running(memo):
        dra.on_inventory(op.runtime, "ResourceClaim", type, f"{namespace}/{name}", core_dra.compact_claim(body))


# ------------------------------------------------------------------------------------------------ retraining
# controller/training.py does the work in its own loop; a run or a training Job that changes only wakes it.

TRAINING_MEMO_KEY = "hybridrec_training"
TRAINING_JOBS = {"app.kubernetes.io/managed-by": "hybridrec", "app.kubernetes.io/component": training.core.COMPONENT}


@kopf.on.event(GROUP_VERSION, "recmodeltrainingruns")
async def training_run_event(memo: kopf.Memo, **_: Any) -> None:
    if loop := memo.get(TRAINING_MEMO_KEY):
        loop.poke()


@kopf.on.event("batch/v1", "jobs", labels=TRAINING_JOBS)
async def training_job_event(memo: kopf.Memo, **_: Any) -> None:
    if loop := memo.get(TRAINING_MEMO_KEY):
        loop.poke()


# ------------------------------------------------------------------------------------------ startup / probes


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    op = await app.start(settings, memo, {name: kwargs[name] for name in kwargs if name.startswith("hybridrec_")})
    started = training.start_loop(op.runtime.kube, op.leader, identity=op.runtime.identity,
                                  namespaces=op.runtime.config.served_namespaces() if op.runtime.config.exact_namespaces() else [])
    if started is not None:
        op.runtime.tasks.append(started[1])  # cancelled with the runtime's tasks at shutdown
        memo[TRAINING_MEMO_KEY] = started[0]


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    op = memo.pop(app.MEMO_KEY, None)
    if op is not None:
        await op.stop()


@kopf.on.probe(id="reconciler")
def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    return app.probe(app.running(memo))
