"""Kubernetes objects as the operator keeps them (pure, no I/O): compact copies for the indexes, which of two copies
is fresher, what a pod asks for, placeholder claims for planned replicas, and owner references on rendered children.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from hybridrec_operator.core import capacity, dra, render

MANAGED = {"app.kubernetes.io/managed-by": "hybridrec"}
MODEL_LABEL = render.MODEL_LABEL
POOL_LABEL = render.POOL_LABEL
RMD_KIND = "RecModelDeployment"
POOL_KIND = "ComputePool"
# Resources that are not accelerators: a pod requesting only these never takes GPU room.
_PLAIN_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")


def model_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def meta_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def resource_version(body: Mapping[str, Any] | None) -> int:
    """resourceVersion as a number, to tell which of two copies of an object is newer (0 when unknown).

    Kubernetes calls it opaque; here it only picks the fresher of our own write and the watch cache, and a wrong
    guess costs one extra (no-op) write, never a wrong decision.
    """
    try:
        return int(meta_of(body or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def fresher(*bodies: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The copy with the highest resourceVersion."""
    present = [b for b in bodies if b]
    return max(present, key=resource_version) if present else None


def compact_meta(body: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    meta = meta_of(body)
    keys = ("name", "namespace", "uid", "generation", "resourceVersion", "labels", "deletionTimestamp", *extra)
    return {k: meta[k] for k in keys if k in meta}


def requests_accelerators(pod_spec: Mapping[str, Any]) -> bool:
    """Whether any container asks for an extended resource (GPUs and the like)."""
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for name in resources.get(section) or {}:
                if name not in _PLAIN_RESOURCES and not name.startswith("hugepages-"):
                    return True
    return False


def _as_counts(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Extended-resource quantities as ints (parsed once per watch event, not once per reconcile)."""
    out: dict[str, Any] = {}
    for name, value in (resources or {}).items():
        if name in _PLAIN_RESOURCES or name.startswith("hugepages-") or isinstance(value, int):
            out[name] = value
            continue
        try:
            quantity = parse_quantity(value)
            out[name] = int(quantity) if quantity == quantity.to_integral_value() else value
        except (ValueError, TypeError, ArithmeticError):
            out[name] = value
    return out


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What capacity.py needs of a pod (labels, node, GPU requests, phase, the PodScheduled condition)."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}

    def slim(containers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for c in containers:
            resources = c.get("resources") or {}
            out.append({"name": c.get("name"), "resources": {"requests": _as_counts(resources.get("requests")),
                                                            "limits": _as_counts(resources.get("limits"))}})
        return out

    containers = slim(spec.get("containers") or [])
    if claimed := dra.pod_requests(meta_of(body).get("annotations")):
        # A pod on a DRA pool: its devices, as the counted resource capacity.py adds up (core/dra.py).
        containers.append({"name": "dra-devices", "resources": {"requests": claimed, "limits": {}}})
    return {
        "metadata": compact_meta(body, "creationTimestamp"),
        "spec": {
            "nodeName": spec.get("nodeName") or "",
            "containers": containers,
            "initContainers": slim(spec.get("initContainers") or []),
        },
        "status": {
            "phase": status.get("phase") or "Pending",
            "conditions": [c for c in status.get("conditions") or [] if c.get("type") in ("PodScheduled", "Ready")],
        },
    }


def compact_node(body: Mapping[str, Any]) -> dict[str, Any]:
    """What capacity.py needs of a node; heartbeat times are dropped so the index only changes on real changes."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ready = [{"type": "Ready", "status": c.get("status")} for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        "metadata": {"name": meta_of(body).get("name"), "labels": dict(meta_of(body).get("labels") or {})},
        "spec": {"unschedulable": bool(spec.get("unschedulable")), "taints": spec.get("taints") or []},
        "status": {"allocatable": _as_counts(status.get("allocatable")), "conditions": ready},
    }


def placements_of(status: Mapping[str, Any] | None) -> dict[str, int]:
    """pool -> desired replicas recorded in a status."""
    return {p["pool"]: int(p.get("desired", 0)) for p in (status or {}).get("placements") or [] if p.get("desired", 0)}


def claim_pods(planned: Mapping[str, Mapping[str, int]], gpus_of: Mapping[str, int],
               resource_of: Mapping[str, str], pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Placeholder pods for replicas that are planned but whose pods the watch has not shown yet.

    A Deployment's pods appear a moment after it is applied; without these claims a second model planned in that
    moment would see the same GPUs free and both would be placed on them. ``planned``: model key -> pool ->
    replicas; ``gpus_of``: model key -> GPUs per replica; ``resource_of``: pool -> its GPU resource name.
    """
    seen: dict[tuple[str, str], int] = {}
    for pod in pods:
        key = capacity.pod_model_key(pod)
        pool = ((pod.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL)
        if key and pool and capacity.pod_active(pod):
            seen[(key, pool)] = seen.get((key, pool), 0) + 1
    claims: list[dict[str, Any]] = []
    for key, by_pool in planned.items():
        namespace, name = key.split("/", 1)
        gpus = gpus_of.get(key, 1)
        for pool, replicas in by_pool.items():
            resource = resource_of.get(pool, "nvidia.com/gpu")
            for i in range(max(0, replicas - seen.get((key, pool), 0))):
                claims.append({
                    "metadata": {"name": f"claim-{name}-{pool}-{i}", "namespace": namespace,
                                 "labels": {MODEL_LABEL: name, POOL_LABEL: pool}},
                    "spec": {"nodeName": "", "containers": [{"name": "claim", "resources": {"requests": {resource: gpus}}}]},
                    "status": {"phase": "Pending", "conditions": []},
                })
    return claims


def model_of(body: Mapping[str, Any]) -> str:
    """The model a child or pod belongs to (its ``hybridrec.io/model`` label)."""
    return str((meta_of(body).get("labels") or {}).get(MODEL_LABEL, ""))


def controller_uid(body: Mapping[str, Any]) -> str:
    """The uid of the object's controller (its ownerReference with ``controller: true``), "" when it has none."""
    for ref in meta_of(body).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def owned_by(body: Mapping[str, Any], uid: str) -> bool:
    """Whether ``uid`` is the object's controller: hybridrec created it for that model. Anything else with a child's
    name (a user's Service, a Deployment of an older model of the same name) is never changed or deleted."""
    return bool(uid) and controller_uid(body) == uid


def describe(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (garbage collection deletes the children with it)."""
    meta = owner.get("metadata") or {}
    ref = {"controller": True, "blockOwnerDeletion": True, "apiVersion": owner.get("apiVersion"),
           "kind": owner.get("kind"), "name": meta.get("name"), "uid": meta.get("uid")}
    return {k: v for k, v in ref.items() if v is not None}


def adopt(children: Iterable[dict[str, Any]], owner: Mapping[str, Any]) -> None:
    """Make ``children`` the owner's, in place, as ``kopf.adopt`` does (kept here so the decision stays pure):
    an owner reference unless one with its uid is there, the owner's name as generateName of unnamed children,
    the owner's namespace where none is set, and the owner's labels where a child has none of that key."""
    meta = owner.get("metadata") or {}
    ref = owner_reference(owner)
    for child in children:
        child_meta = child.setdefault("metadata", {})
        refs = child_meta.setdefault("ownerReferences", [])
        if not any(r.get("uid") == ref.get("uid") for r in refs):
            refs.append(ref)
        if not child_meta.get("name") and not child_meta.get("generateName") and meta.get("name"):
            child_meta["generateName"] = f"{meta['name']}-"
        if child_meta.get("namespace") is None:
            child_meta["namespace"] = meta.get("namespace")
        labels = child_meta.setdefault("labels", {})
        for key, value in (meta.get("labels") or {}).items():
            labels.setdefault(key, value)
