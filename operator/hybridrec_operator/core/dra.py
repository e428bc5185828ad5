"""GPU pools through Dynamic Resource Allocation (``resource.k8s.io/v1``), pure: the ResourceClaimTemplate of a model
on a DRA pool, the devices each node offers the pool, and the pool's ``DevicesReady`` condition.

A ComputePool with ``gpu.dra`` claims its GPUs as devices of a DeviceClass: each replica's pod references a
ResourceClaimTemplate (one per model and pool) asking for ``resources.gpus`` devices of the class, and the scheduler
allocates them from the ResourceSlices the DRA driver publishes for each node. Capacity stays the arithmetic of
``core/capacity.py``: this module writes each node's free devices into its allocatable under the pool's own name
(``GpuSpec.counted_resource``: ``dra.hybridrec.io/<class>``), and hybridrec pods of DRA pools carry their device
count in an annotation that ``core/objects.compact_pod`` turns into a request of that name. So free GPUs become whole
replicas and a full pool becomes CapacityShortfall exactly as with extended resources.

A node's devices for a class are the devices of the class's driver (read from the class's ``device.driver == "..."``
selector) in the ResourceSlices whose ``nodeName`` is the node, minus those allocated to ResourceClaims that are not
hybridrec's (ours are counted through our pods, as for extended resources). The pool's CEL ``selectors`` and the
class's other selectors are the scheduler's to evaluate: a pool whose selectors exclude some devices is over-counted,
and its pods then stay Pending, which the stuck-pool rule already handles (the replicas move elsewhere).

Bad input never disturbs what runs: a missing DeviceClass or a pool without ResourceSlices offers no room to new
replicas, but a node never offers less than what hybridrec's running pods hold there, so no running replica is
planned away because the inventory vanished; the condition and an event name the problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hybridrec_operator.api.models import ComputePool
from hybridrec_operator.api.pool import DRA_RESOURCE_PREFIX
from hybridrec_operator.core import conditions

GROUP_VERSION = "resource.k8s.io/v1"
TEMPLATE_KIND = "ResourceClaimTemplate"
CLAIM = "gpu"  # the pod's resourceClaims entry, the container's claim and the template's one request
DEVICE_CLASS_ANNOTATION = "hybridrec.io/dra-device-class"
DEVICES_ANNOTATION = "hybridrec.io/dra-devices"
MANAGED_BY = "app.kubernetes.io/managed-by"
DEVICES_READY = "DevicesReady"
_DRIVER = re.compile(r"""device\.driver\s*==\s*(?:"([^"]+)"|'([^']+)')""")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


# ------------------------------------------------------------------------------------------------------ render


def template_spec(device_class: str, selectors: Sequence[str], count: int) -> dict[str, Any]:
    """A ResourceClaimSpec asking for ``count`` devices of ``device_class`` that satisfy every selector."""
    exactly: dict[str, Any] = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": max(1, count)}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"devices": {"requests": [{"name": CLAIM, "exactly": exactly}]}}


def template_name(base: str, spec: Mapping[str, Any]) -> str:
    """``<model>-<pool>-<hash>``: a ResourceClaimTemplate's spec is immutable, so a changed spec (another class,
    selectors or count) is a new template the Deployment's next rollout references; the old one goes once no live
    Deployment of the model references it (``templates_in_use``)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:6]
    return f"{base}-{digest}"


def build_claim_template(base: str, namespace: str, labels: Mapping[str, str], device_class: str,
                         selectors: Sequence[str], count: int) -> dict[str, Any]:
    """The ResourceClaimTemplate of one model on one DRA pool. Its labels are copied onto every claim generated from
    it, so the claims are recognisably hybridrec's (``foreign_allocations`` leaves them to our pods' count)."""
    spec = template_spec(device_class, selectors, count)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": TEMPLATE_KIND,
        "metadata": {"name": template_name(base, spec), "namespace": namespace, "labels": dict(labels)},
        "spec": {"metadata": {"labels": dict(labels)}, "spec": spec},
    }


def pod_claims(template: str) -> list[dict[str, str]]:
    """The pod's ``spec.resourceClaims``."""
    return [{"name": CLAIM, "resourceClaimTemplateName": template}]


def pod_annotations(device_class: str, count: int) -> dict[str, str]:
    """What capacity needs of a pod on a DRA pool (its claim is not in the pod): which class and how many devices."""
    return {DEVICE_CLASS_ANNOTATION: device_class, DEVICES_ANNOTATION: str(max(1, count))}


def pod_requests(annotations: Mapping[str, str] | None) -> dict[str, int]:
    """The counted-resource request a pod's DRA annotations stand for (``{}`` for any other pod)."""
    annotations = annotations or {}
    device_class, count = annotations.get(DEVICE_CLASS_ANNOTATION), annotations.get(DEVICES_ANNOTATION)
    if not device_class or not count or not count.isdigit():
        return {}
    return {f"{DRA_RESOURCE_PREFIX}{device_class}": int(count)}


def templates_in_use(deployments: Iterable[Mapping[str, Any]]) -> set[str]:
    """Templates referenced by these (live) Deployments' pod templates: kept while a Deployment may still create pods
    from them (a Deployment the plan no longer wants stays until its replacement is ready)."""
    used = set()
    for deployment in deployments:
        pod = (((deployment.get("spec") or {}).get("template") or {}).get("spec")) or {}
        used.update(str(c["resourceClaimTemplateName"]) for c in pod.get("resourceClaims") or []
                    if c.get("resourceClaimTemplateName"))
    return used


# ------------------------------------------------------------------------------------------- compact watch bodies


def compact_class(body: Mapping[str, Any]) -> dict[str, Any]:
    """A DeviceClass as capacity needs it: its name and the driver its selectors name (None when none is legible)."""
    return {"name": _name(body), "driver": class_driver(body)}


def class_driver(body: Mapping[str, Any]) -> str | None:
    """The driver a DeviceClass selects (``device.driver == "gpu.nvidia.com"`` in one of its CEL selectors)."""
    for selector in (body.get("spec") or {}).get("selectors") or []:
        match = _DRIVER.search(str((selector.get("cel") or {}).get("expression", "")))
        if match:
            return match.group(1) or match.group(2)
    return None


def compact_slice(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ResourceSlice as capacity needs it: driver, node, pool and device names."""
    spec = body.get("spec") or {}
    return {"name": _name(body), "driver": str(spec.get("driver", "")), "nodeName": str(spec.get("nodeName") or ""),
            "pool": str((spec.get("pool") or {}).get("name", "")),
            "devices": [str(d.get("name", "")) for d in spec.get("devices") or []]}


def compact_claim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ResourceClaim as capacity needs it: whether it is hybridrec's and which devices it holds."""
    allocation = (body.get("status") or {}).get("allocation") or {}
    results = [{"driver": str(r.get("driver", "")), "pool": str(r.get("pool", "")), "device": str(r.get("device", ""))}
               for r in (allocation.get("devices") or {}).get("results") or []]
    return {"name": _name(body), "namespace": str(_meta(body).get("namespace", "")),
            "hybridrec": _labels(body).get(MANAGED_BY) == "hybridrec", "results": results}


# ---------------------------------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class Inventory:
    """The cluster's DRA objects, compact: DeviceClasses by name, ResourceSlices, ResourceClaims."""

    classes: Mapping[str, Mapping[str, Any]]
    slices: Sequence[Mapping[str, Any]] = ()
    claims: Sequence[Mapping[str, Any]] = ()

    def devices(self, driver: str | None) -> dict[str, int]:
        """node -> devices of ``driver`` (any driver when None) its ResourceSlices publish."""
        out: dict[str, int] = {}
        for s in self.slices:
            if s.get("nodeName") and (driver is None or s.get("driver") == driver):
                out[s["nodeName"]] = out.get(s["nodeName"], 0) + len(s.get("devices") or [])
        return out

    def foreign_allocations(self, driver: str | None) -> dict[str, int]:
        """node -> devices of ``driver`` allocated to claims that are not hybridrec's."""
        where = {(s.get("driver"), s.get("pool"), d): s.get("nodeName") for s in self.slices for d in s.get("devices") or []}
        out: dict[str, int] = {}
        for claim in self.claims:
            if claim.get("hybridrec"):
                continue
            for r in claim.get("results") or []:
                node = where.get((r.get("driver"), r.get("pool"), r.get("device")))
                if node and (driver is None or r.get("driver") == driver):
                    out[node] = out.get(node, 0) + 1
        return out


def dra_pools(pools: Iterable[ComputePool]) -> list[ComputePool]:
    return [p for p in pools if p.spec.gpu.dra is not None]


def with_devices(nodes: Sequence[Mapping[str, Any]], pools: Iterable[ComputePool], inventory: Inventory,
                 held: Mapping[tuple[str, str], int]) -> list[Mapping[str, Any]]:
    """``nodes`` with each DRA pool's devices in their allocatable under the pool's counted resource: the class's
    devices on the node minus those allocated to others' claims, and never less than ``held`` (node, resource) ->
    devices hybridrec's bound pods hold there (a vanished inventory plans no running replica away). Nodes untouched
    when no pool uses DRA (the common case costs nothing)."""
    classes = sorted({p.spec.gpu.dra.device_class_name for p in dra_pools(pools) if p.spec.gpu.dra is not None})
    if not classes:
        return list(nodes)
    extra: dict[str, dict[str, int]] = {}
    for device_class in classes:
        resource = f"{DRA_RESOURCE_PREFIX}{device_class}"
        known = inventory.classes.get(device_class)
        devices = inventory.devices(known.get("driver")) if known else {}
        foreign = inventory.foreign_allocations(known.get("driver")) if known else {}
        for node in nodes:
            name = _name(node)
            free = max(0, devices.get(name, 0) - foreign.get(name, 0))
            extra.setdefault(name, {})[resource] = max(free, held.get((name, resource), 0))
    out = []
    for node in nodes:
        status = node.get("status") or {}
        out.append({**node, "status": {**status, "allocatable": {**(status.get("allocatable") or {}), **extra[_name(node)]}}})
    return out


def held_by_pods(pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(node, counted resource) -> devices that bound, active hybridrec pods of DRA pools hold there."""
    out: dict[tuple[str, str], int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for resource, count in ((container.get("resources") or {}).get("requests") or {}).items():
                if str(resource).startswith(DRA_RESOURCE_PREFIX) and isinstance(count, int):
                    out[(node, resource)] = out.get((node, resource), 0) + count
    return out


# ----------------------------------------------------------------------------------------------- the condition


def devices_condition(pool: ComputePool, nodes: Iterable[Mapping[str, Any]],
                      inventory: Inventory) -> tuple[bool, str, str] | None:
    """(status, reason, message) of ``DevicesReady``; None for a pool without ``gpu.dra`` (the condition is then
    absent)."""
    dra = pool.spec.gpu.dra
    if dra is None:
        return None
    known = inventory.classes.get(dra.device_class_name)
    if known is None:
        return (False, "DeviceClassNotFound",
                f"DeviceClass {dra.device_class_name} does not exist: no new replica is planned on this pool (running "
                "pods are left alone); create the class (the DRA driver's chart installs it) or fix gpu.dra.deviceClassName")
    driver = known.get("driver")
    members = sorted(_name(n) for n in nodes
                     if all(_labels(n).get(k) == v for k, v in pool.spec.node_selector.items()))
    devices = inventory.devices(driver)
    published = {n: devices[n] for n in members if devices.get(n)}
    which = f"driver {driver}" if driver else f"any driver (DeviceClass {dra.device_class_name} names none)"
    if not members:
        return (False, "NoNodes", f"no node matches nodeSelector {dict(pool.spec.node_selector)}")
    if not published:
        return (False, "NoResourceSlices",
                f"no ResourceSlice of {which} publishes devices on the pool's nodes ({', '.join(members[:10])}"
                f"{', ...' if len(members) > 10 else ''}): no new replica is planned on this pool (is the DRA driver "
                "running on them?)")
    return (True, "DevicesPublished",
            f"{sum(published.values())} device(s) of {which} on {len(published)} of {len(members)} node(s)")


def set_devices_condition(pool: ComputePool, nodes: Iterable[Mapping[str, Any]], inventory: Inventory,
                          conds: Iterable[Mapping[str, Any]], generation: int | None,
                          now: datetime) -> list[dict[str, Any]]:
    """``conds`` with ``DevicesReady`` set, or removed when the pool no longer uses DRA."""
    wanted = devices_condition(pool, nodes, inventory)
    if wanted is None:
        return [dict(c) for c in conds if c.get("type") != DEVICES_READY]
    return conditions.set_condition(conds, DEVICES_READY, wanted[0], wanted[1], wanted[2], generation, now)
