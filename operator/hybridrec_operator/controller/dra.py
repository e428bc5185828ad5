"""DRA pools in the controller: the kopf indexes of DeviceClasses, ResourceSlices and others' allocated
ResourceClaims feed ``core/dra.py``; their watch events re-plan the pools and the models short of room.

Reads only the in-memory indexes (registered in ``handlers.py``), never the API server. Where ``resource.k8s.io/v1``
is not served, kopf does not watch those kinds, the indexes stay empty, and a DRA pool says DeviceClassNotFound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from hybridrec_operator.api.models import ComputePool, parse_pool
from hybridrec_operator.core import dra



class Replanner(Protocol):
    """What of ``runtime.Runtime`` an inventory event uses (a Protocol: runtime.py imports this module)."""

    indices: Mapping[str, Any]
    fingerprints: dict[str, Any]

    def replan_pools(self) -> None: ...

    def replan_models(self, trigger: str) -> None: ...

CLASSES = "hybridrec_deviceclasses"
SLICES = "hybridrec_resourceslices"
CLAIMS = "hybridrec_resourceclaims"


def _values(indices: Mapping[str, Any], name: str) -> list[Any]:
    index = indices.get(name) or {}
    return [body for key in list(index) for body in index[key]]


def inventory(indices: Mapping[str, Any]) -> dra.Inventory:
    """The DRA objects as the indexes hold them now."""
    classes = {c["name"]: c for c in _values(indices, CLASSES)}
    return dra.Inventory(classes=classes, slices=_values(indices, SLICES), claims=_values(indices, CLAIMS))


def _dra_pools(indices: Mapping[str, Any]) -> list[ComputePool]:
    """The pools with ``gpu.dra``, found on the raw bodies first so that clusters without one parse nothing more."""
    pools = []
    for body in _values(indices, "hybridrec_pools"):
        if ((body.get("spec") or {}).get("gpu") or {}).get("dra"):
            try:
                pools.append(parse_pool(body))
            except ValidationError:
                continue  # its own reconcile says InvalidSpec
    return pools


def nodes(indices: Mapping[str, Any], raw: Sequence[Mapping[str, Any]],
          pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The nodes with each DRA pool's free devices in their allocatable (``core/dra.with_devices``)."""
    pools = _dra_pools(indices)
    if not pools:
        return list(raw)
    return dra.with_devices(raw, pools, inventory(indices), dra.held_by_pods(pods))


def pool_conditions(indices: Mapping[str, Any], pool: ComputePool, raw_nodes: Sequence[Mapping[str, Any]],
                    conds: list[dict[str, Any]], generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """``conds`` with the pool's ``DevicesReady`` condition (absent for a pool without ``gpu.dra``)."""
    return dra.set_devices_condition(pool, raw_nodes, inventory(indices), conds, generation, now)


def on_inventory(runtime: Replanner, kind: str, type_: str | None, name: str, compact: Mapping[str, Any] | None) -> None:
    """A DeviceClass, ResourceSlice or foreign ResourceClaim changed: re-plan pools (their status and condition)
    and, when it changed what DRA pools offer, the models (free devices may move replicas or end a shortfall).
    Heartbeat-like re-deliveries of an unchanged object are dropped, as for nodes."""
    key = f"{kind}:{name}"
    fingerprint = None if type_ == "DELETED" else compact
    if runtime.fingerprints.get(key) == fingerprint and key in runtime.fingerprints:
        return
    first = key not in runtime.fingerprints
    runtime.fingerprints[key] = fingerprint
    if type_ == "DELETED":
        runtime.fingerprints.pop(key, None)
    if not _dra_pools(runtime.indices):
        return
    runtime.replan_pools()
    if not (first and type_ is None):
        runtime.replan_models(f"{kind} {name} changed")
