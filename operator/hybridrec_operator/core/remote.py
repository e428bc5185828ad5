"""Remote clusters as pools (Liqo virtual nodes), pure: which tolerations a remote pool's pods carry, which virtual
nodes may count as a pool's room, and the pool's ``RemoteClusterReady`` condition.

Liqo shows a peered cluster as one *virtual node* labelled ``liqo.io/type: virtual-node`` and
``liqo.io/remote-cluster-id: <id>`` and tainted ``virtual-node.liqo.io/not-allowed=true:NoExecute``; pods that
tolerate the taint and land there run in the remote cluster. A ComputePool selecting such a node declares
``remoteCluster`` (its id and tenancy; the CRD refuses a pool that selects virtual nodes without it). The sensitivity
rule is not decided here: ``core/sensitivity.pool_admits`` reads the declared tenancy, and the pods' required
affinity on ``hybridrec.io/tenancy`` keeps them off any node, virtual or not, labelled otherwise. A virtual node
must therefore carry ``hybridrec.io/tenancy`` (public for a public cluster); one without it is no room for the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hybridrec_operator.api.models import (
    LIQO_CLUSTER_LABEL,
    LIQO_TAINT,
    LIQO_TYPE_LABEL,
    LIQO_VIRTUAL_NODE,
    ComputePool,
    ComputePoolSpec,
)
from hybridrec_operator.core import conditions

TENANCY_LABEL = "hybridrec.io/tenancy"
REMOTE_CLUSTER_READY = "RemoteClusterReady"
# What the pods of a remote pool carry: Liqo's taint has the value "true"; Exists also covers a future value.
LIQO_TOLERATION: Mapping[str, str] = {"key": LIQO_TAINT, "operator": "Exists", "effect": "NoExecute"}


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def _selected(spec: ComputePoolSpec, node: Mapping[str, Any]) -> bool:
    labels = _labels(node)
    return all(labels.get(k) == v for k, v in spec.node_selector.items())


def _ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def is_virtual_node(node: Mapping[str, Any]) -> bool:
    """A Liqo virtual node (a whole remote cluster behind one node object)."""
    return _labels(node).get(LIQO_TYPE_LABEL) == LIQO_VIRTUAL_NODE


def _tolerates(toleration: Mapping[str, Any]) -> bool:
    key, effect = toleration.get("key", ""), toleration.get("effect", "")
    return (key in ("", LIQO_TAINT) and toleration.get("operator") == "Exists") and effect in ("", "NoExecute")


def extra_tolerations(spec: ComputePoolSpec, rendered: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Liqo's toleration for a pool on a remote cluster, unless the pool's own tolerations already cover the taint;
    nothing for other pools (their pods must never drift onto a virtual node)."""
    if spec.remote_cluster is None or any(_tolerates(t) for t in rendered):
        return []
    return [dict(LIQO_TOLERATION)]


def offers_room(spec: ComputePoolSpec, node: Mapping[str, Any]) -> bool:
    """Whether ``node`` (selected by the pool) can run the pool's pods as far as remote clusters go: any ordinary
    node; a virtual node only for a pool that declares its remote cluster, and only when the node carries the pool's
    ``hybridrec.io/tenancy`` (the pods' required affinity refuses it otherwise)."""
    if not is_virtual_node(node):
        return True
    remote = spec.remote_cluster
    labels = _labels(node)
    return (remote is not None and labels.get(LIQO_CLUSTER_LABEL) == remote.cluster_id
            and labels.get(TENANCY_LABEL) == spec.tenancy.value)


@dataclass(frozen=True)
class RemoteFindings:
    """What the pool's virtual nodes look like now (names sorted)."""

    applies: bool  # the pool declares a remote cluster or selects a virtual node
    virtual: tuple[str, ...] = ()
    undeclared: tuple[str, ...] = ()  # virtual nodes selected by a pool without remoteCluster
    unlabelled: tuple[str, ...] = ()  # virtual nodes without hybridrec.io/tenancy
    not_ready: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()  # other pools declaring the same cluster id with another tenancy


def findings(pool: ComputePool, nodes: Iterable[Mapping[str, Any]], pools: Iterable[ComputePool] = ()) -> RemoteFindings:
    spec = pool.spec
    virtual = sorted((n for n in nodes if _selected(spec, n) and is_virtual_node(n)), key=_name)
    remote = spec.remote_cluster
    if remote is None and not virtual:
        return RemoteFindings(applies=False)
    conflicts = tuple(sorted(
        p.name for p in pools
        if p.name != pool.name and remote is not None and p.spec.remote_cluster is not None
        and p.spec.remote_cluster.cluster_id == remote.cluster_id and p.spec.remote_cluster.tenancy != remote.tenancy))
    return RemoteFindings(
        applies=True,
        virtual=tuple(_name(n) for n in virtual),
        undeclared=tuple(_name(n) for n in virtual) if remote is None else (),
        unlabelled=tuple(_name(n) for n in virtual if TENANCY_LABEL not in _labels(n)),
        not_ready=tuple(_name(n) for n in virtual if not _ready(n)),
        conflicts=conflicts,
    )


def _list(names: Sequence[str]) -> str:
    return ", ".join(names)


def remote_condition(pool: ComputePool, found: RemoteFindings) -> tuple[bool, str, str] | None:
    """(status, reason, message) of ``RemoteClusterReady``; None for a pool that has nothing to do with remote
    clusters (the condition is then absent). The first problem found wins, most serious first."""
    if not found.applies:
        return None
    remote = pool.spec.remote_cluster
    if found.undeclared:
        return (False, "VirtualNodesUndeclared",
                f"virtual node(s) {_list(found.undeclared)} match nodeSelector but the pool declares no remoteCluster "
                "(the remote cluster's id and tenancy): hybridrec does not use them and its pods do not tolerate them")
    assert remote is not None
    cluster = f"remote cluster {remote.cluster_id}"
    if found.conflicts:
        return (False, "RemoteTenancyConflict",
                f"pool(s) {_list(found.conflicts)} declare {cluster} with another tenancy than "
                f"{remote.tenancy.value}: one of the declarations is wrong; sensitive data stays off both")
    if found.unlabelled:
        return (False, "VirtualNodeUnlabelled",
                f"virtual node(s) {_list(found.unlabelled)} of {cluster} carry no {TENANCY_LABEL} label: label them "
                f"{TENANCY_LABEL}={remote.tenancy.value} (Liqo: the VirtualNode's labels); until then no replica "
                "goes there")
    if found.not_ready:
        return (False, "VirtualNodeNotReady",
                f"virtual node(s) {_list(found.not_ready)} of {cluster} are not Ready (the peering or the remote "
                "cluster is down): no new replica goes there; pods already there are left to Kubernetes")
    if not found.virtual:
        return (False, "NoVirtualNode", f"no virtual node of {cluster} matches nodeSelector {dict(pool.spec.node_selector)}")
    return (True, "VirtualNodesReady", f"virtual node(s) {_list(found.virtual)} of {cluster} Ready")


def set_remote_condition(pool: ComputePool, found: RemoteFindings, conds: Iterable[Mapping[str, Any]],
                         generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """``conds`` with ``RemoteClusterReady`` set, or removed when the pool has nothing remote any more."""
    wanted = remote_condition(pool, found)
    if wanted is None:
        return [dict(c) for c in conds if c.get("type") != REMOTE_CLUSTER_READY]
    return conditions.set_condition(conds, REMOTE_CLUSTER_READY, wanted[0], wanted[1], wanted[2], generation, now)
