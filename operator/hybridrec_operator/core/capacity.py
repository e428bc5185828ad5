"""Free GPU capacity per pool, from plain Node and Pod dicts (as the API or kopf bodies give them). No I/O.

A node belongs to a pool when its labels match the pool's ``nodeSelector``. Only Ready, schedulable nodes whose
``hybridrec.io/tenancy`` label does not contradict the pool's tenancy offer room: every pod of the pool requires that
tenancy, so a node labelled otherwise can never run one (issue 9, findings 3 and 4: such nodes are reported in
``PoolUsage.tenancy_mismatch`` for a pool condition, not counted as ready capacity). A pool's free GPUs for a model are ``min(quota left, free node room)`` where the quota is ``maxGpus`` minus
the GPUs of other hybridrec models' pods in the pool (Pending ones that are labelled with the pool but bound to no
node included: they are claims the scheduler will honour), and the node room is what the nodes' allocatable GPUs
leave after every bound pod and those pending claims. The model's own pods count as available: the planner
re-decides where all of them go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from hybridrec_operator.api.models import ComputePool
from hybridrec_operator.core import remote
from hybridrec_operator.core.placement import PoolView

MODEL_LABEL = "hybridrec.io/model"
POOL_LABEL = "hybridrec.io/pool"
TENANCY_LABEL = "hybridrec.io/tenancy"
_DONE_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PoolUsage:
    """What a pool holds right now (the ComputePool status is written from this)."""

    pool: str
    nodes: int
    ready_nodes: int
    allocatable_gpus: int  # on Ready, schedulable nodes
    used_gpus: int  # requested by hybridrec pods of the pool, Pending ones included
    free_gpus: int  # min(quota left, node room)
    quota_gpus: int
    node_free: tuple[int, ...] = ()  # free GPUs per Ready node after bound pods and pending claims, largest first
    tenancy_mismatch: tuple[str, ...] = ()  # selected nodes whose tenancy label says otherwise than the pool, sorted

    def replica_slots(self, gpus_per_replica: int) -> int:
        """Whole replicas that fit: per-node packing, capped by the quota left."""
        g = max(1, gpus_per_replica)
        quota_left = max(0, self.quota_gpus - self.used_gpus)
        return min(sum(f // g for f in self.node_free), quota_left // g)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-based label selector match (an empty selector selects everything, as in Kubernetes)."""
    return all(labels.get(k) == v for k, v in selector.items())


# Karpenter taints a node it is about to take away (spot interruption, consolidation): no new pod lands there.
DISRUPTION_TAINT = "karpenter.sh/disrupted"


def node_ready(node: Mapping[str, Any]) -> bool:
    """Ready condition True, not cordoned, not tainted for disruption and not being deleted: a node that offers room.

    A reclaimed node's free GPUs are no room: a replacement planned there would stay Pending (NoSchedule) while the
    node's pods die, so it must go to a pool that can take it."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable") or (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if any(t.get("key") == DISRUPTION_TAINT for t in spec.get("taints") or []):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _count(value: Any) -> int:
    """An extended-resource quantity ("2", 2, "1k"...) as a whole number."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(parse_quantity(value).to_integral_value(rounding=ROUND_CEILING))


def node_gpus(node: Mapping[str, Any], resource: str) -> int:
    return _count(((node.get("status") or {}).get("allocatable") or {}).get(resource))


def pod_gpus(pod: Mapping[str, Any], resource: str) -> int:
    """GPUs a pod holds: the larger of its containers' sum and its largest init container (the scheduler's rule)."""
    spec = pod.get("spec") or {}

    def one(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        return max(_count((resources.get("requests") or {}).get(resource)), _count((resources.get("limits") or {}).get(resource)))

    main = sum(one(c) for c in spec.get("containers") or [])
    init = max((one(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def pod_active(pod: Mapping[str, Any]) -> bool:
    """Holds (or will hold) resources: not Succeeded/Failed. Terminating pods still hold their GPUs."""
    return (pod.get("status") or {}).get("phase") not in _DONE_PHASES


def pod_model_key(pod: Mapping[str, Any]) -> str | None:
    """``<namespace>/<model>`` of a hybridrec pod, None for other pods."""
    model = _labels(pod).get(MODEL_LABEL)
    if not model:
        return None
    return f"{(pod.get('metadata') or {}).get('namespace', 'default')}/{model}"


def _node_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _usage(pool: ComputePool, nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> PoolUsage:
    resource = pool.spec.gpu.counted_resource  # a DRA pool: its devices, written into the nodes by core/dra.py
    members = [n for n in nodes if matches(pool.spec.node_selector, _labels(n))]
    mismatched = tenancy_mismatch(pool, members)
    # A Liqo virtual node is room only for a pool that declares its remote cluster (core/remote.py).
    ready = [n for n in members if node_ready(n) and _name(n) not in mismatched and remote.offers_room(pool.spec, n)]
    bound: dict[str, int] = {}
    for pod in pods:
        if pod_active(pod) and _node_name(pod):
            bound[_node_name(pod)] = bound.get(_node_name(pod), 0) + pod_gpus(pod, resource)
    free = [max(0, node_gpus(n, resource) - bound.get(_name(n), 0)) for n in ready]
    ours = [p for p in pods if pod_active(p) and pod_model_key(p) and _labels(p).get(POOL_LABEL) == pool.name]
    claims = sorted((pod_gpus(p, resource) for p in ours if not _node_name(p)), reverse=True)
    for claim in claims:
        # Best fit, as the scheduler's bin-packing would roughly do; a claim that fits nowhere holds only quota.
        fits = [i for i, f in enumerate(free) if f >= claim]
        if fits:
            best = min(fits, key=lambda i: free[i])
            free[best] -= claim
    used = sum(pod_gpus(p, resource) for p in ours)
    quota = pool.spec.max_gpus
    return PoolUsage(
        pool=pool.name,
        nodes=len(members),
        ready_nodes=len(ready),
        allocatable_gpus=sum(node_gpus(n, resource) for n in ready),
        used_gpus=used,
        free_gpus=max(0, min(quota - used, sum(free))),
        quota_gpus=quota,
        node_free=tuple(sorted(free, reverse=True)),
        tenancy_mismatch=mismatched,
    )


def tenancy_mismatch(pool: ComputePool, nodes: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Names of ``nodes`` selected by ``pool`` whose ``hybridrec.io/tenancy`` label contradicts the pool's tenancy
    (a "private" pool selecting nodes labelled public, or a node relabelled after the fact), sorted. A node without
    the label is not counted here: the scheduler keeps the pool's pods off it by their required affinity."""
    tenancy = pool.spec.tenancy.value
    return tuple(sorted(
        _name(n) for n in nodes
        if matches(pool.spec.node_selector, _labels(n)) and TENANCY_LABEL in _labels(n) and _labels(n)[TENANCY_LABEL] != tenancy
    ))


def pool_usage(pools: Sequence[ComputePool], nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> dict[str, PoolUsage]:
    """Usage of every pool, keyed by pool name."""
    nodes, pods = list(nodes), list(pods)
    return {pool.name: _usage(pool, nodes, pods) for pool in pools}


def views_for_model(
    model_key: str,
    gpus_per_replica: int,
    pools: Sequence[ComputePool],
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    stuck: set[str] | frozenset[str] = frozenset(),
) -> list[PoolView]:
    """The pools as ``model_key`` sees them: its own pods count as free room, everyone else's as taken.

    In a ``stuck`` pool (the model's pods there cannot be scheduled) the view offers only what actually runs, so the
    planner moves the rest elsewhere instead of waiting on a pool that cannot deliver.
    """
    nodes, pods = list(nodes), list(pods)
    mine = [p for p in pods if pod_active(p) and pod_model_key(p) == model_key]
    others = [p for p in pods if pod_model_key(p) != model_key]
    views = []
    for pool in pools:
        usage = _usage(pool, nodes, others)
        free, slots = usage.free_gpus, usage.replica_slots(gpus_per_replica)
        if pool.name in stuck:
            running = sum(1 for p in mine if _labels(p).get(POOL_LABEL) == pool.name and _node_name(p))
            slots = min(slots, running)
            free = min(free, running * gpus_per_replica)
        views.append(PoolView(name=pool.name, spec=pool.spec, free_gpus=free, replica_slots=slots))
    return views


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def unschedulable_since(pod: Mapping[str, Any]) -> datetime | None:
    """When the scheduler declared the pod Unschedulable (PodScheduled False), None when it is not."""
    if not pod_active(pod) or _node_name(pod):
        return None
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
            return _time(condition.get("lastTransitionTime")) or _time((pod.get("metadata") or {}).get("creationTimestamp"))
    return None


def stuck_pools(pods_of_model: Iterable[Mapping[str, Any]], now: datetime, grace_seconds: float = 60) -> set[str]:
    """Pools where the model has a pod Unschedulable for longer than ``grace_seconds``."""
    now = _time(now) or datetime.now(UTC)
    stuck = set()
    for pod in pods_of_model:
        since = unschedulable_since(pod)
        pool = _labels(pod).get(POOL_LABEL)
        if since is not None and pool and (now - since).total_seconds() > grace_seconds:
            stuck.add(pool)
    return stuck
