"""kopf handlers of the hybridrec operator: thin glue between Kubernetes and the pure core.

How it works (``kopf run -m hybridrec_operator.controller.handlers`` or ``hybridrec operator run``):

* **Indexes.** kopf keeps in-memory indexes of Nodes, GPU/hybridrec Pods, ComputePools, RecModelDeployments and
  the children (Deployments, Services, PodDisruptionBudgets labelled ``app.kubernetes.io/managed-by=hybridrec``).
  Reconciles read these snapshots; they never list or get from the API server.
* **One work queue, level-triggered.** Every watch event only *enqueues* a key (``rmd:<ns>/<name>`` or
  ``pool:<name>``) into a de-duplicating queue; ``HYBRIDREC_WORKERS`` coroutines drain it. A model's reconcile
  re-plans from scratch (``placement.plan_placement`` over ``capacity.views_for_model``), renders its children
  (``render.build_children``), server-side applies only those that differ from the live object, deletes
  Deployments of pools it no longer uses and patches status only when it changed. Re-running it changes nothing.
  Events of RecModelDeployments, pools, nodes, pods and children all funnel into it, plus ONE cluster-wide resync
  loop (``HYBRIDREC_RESYNC_SECONDS``) instead of a per-object kopf timer.
* **Why not kopf's on.create/on.update.** They persist a diff-base annotation (and with timers a finalizer) on
  every object: two to three extra writes per model and per change. Event handlers plus our own queue keep it to
  the children that really change, one status patch and one event. Failures are retried by the queue with the
  backoff ``kube.classify`` gives (``kopf.TemporaryError``); ``kopf.PermanentError`` waits for the next change.
* **Peering.** kopf pauses watching while another replica with a higher priority is alive (each process gets a
  random priority). The queue and the resync loop follow the same pause through :class:`PeeringGate`.
* **Cost-controller seam.** ``CONTROLLER_TARGETS[model_key] = {pool: replicas}``, its verdict in
  ``CONTROLLER_VERDICTS`` and ``request_replan(key)``; see the section below. The controller
  (``cost_controller``) is loaded with this module and stays off unless ``HYBRIDREC_PROMETHEUS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from pydantic import ValidationError

# cost_controller is imported for its kopf startup/cleanup handlers, so `kopf run -m hybridrec_operator.controller.handlers` and
# `hybridrec operator run` run it too (it stays off without HYBRIDREC_PROMETHEUS_URL). Imported before our handlers
# are declared, kopf runs its cleanup before ours: its loop stops before the runtime it reads is torn down. No cycle:
# cost_controller imports this module only inside functions.
from hybridrec_operator.core import capacity, conditions, placement, render
from hybridrec_operator.controller import cost_controller, metrics
from hybridrec_operator.api.models import API_VERSION, ComputePool, RecModelDeploymentSpec, parse_pool, parse_rmd
from hybridrec_operator.controller.kube import Kube, api_message, classify, needs_apply, new_api_client, retry_delay

log = logging.getLogger("hybridrec.operator")

GROUP_VERSION = API_VERSION  # hybridrec.io/v1alpha1
MANAGED = {"app.kubernetes.io/managed-by": "hybridrec"}
MODEL_LABEL = render.MODEL_LABEL
POOL_LABEL = render.POOL_LABEL
RMD_KIND = "RecModelDeployment"
POOL_KIND = "ComputePool"
# Resources that are not accelerators: a pod requesting only these never takes GPU room.
_PLAIN_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")


# ----------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class OperatorConfig:
    """Knobs read from ``HYBRIDREC_*`` environment variables (``hybridrec operator run`` sets them from options)."""

    metrics_port: int = 8000  # 0 disables the /metrics server
    metrics_address: str = "0.0.0.0"
    workers: int = 8  # concurrent reconciles (each holds one thread for its API calls)
    resync_seconds: float = 60.0  # cluster-wide re-plan of every model (capacity drift, missed events)
    pending_grace_seconds: float = 60.0  # a pod Unschedulable this long marks its pool "stuck" for the model
    stuck_cooldown_seconds: float = 300.0  # how long a stuck pool stays avoided before it is tried again
    peering_lifetime: int = 60  # seconds after which a silent peer counts as dead
    pool_status_delay: float = 1.0  # coalesces bursts of pod events into one pool status write

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: Any) -> Any:
            raw = env.get(f"HYBRIDREC_{name.upper()}")
            return type(default)(raw) if raw not in (None, "") else default

        return cls(**{f: get(f, getattr(defaults, f)) for f in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------- the cost-controller seam
#
# The cost controller (a global allocator running in the same process) decides replicas per pool for every model.
# It publishes them here with its verdict and asks for a re-plan; the reconcile then places exactly that
# (re-checking the hard sensitivity rule and the free room through placement.plan_placement, so a bad target can
# never break a rule):
#
#     CONTROLLER_TARGETS["default/homepage-recs"] = {"onprem-t4": 2, "aws-spot-l4": 1}
#     CONTROLLER_VERDICTS["default/homepage-recs"] = ControllerVerdict(wanted=4, shortfall=1, budget_limited=True,
#                                                                      message="...; budget 5.00 USD/h reached")
#     SLO_STATUS["default/homepage-recs"] = (True, "P95AboveTarget", "p95 130 ms > 80 ms")   # optional
#     request_replan("default/homepage-recs", trigger=CONTROLLER_TRIGGER)
#
# A target alone would read as "everything wanted is placed": the verdict tells the reconcile how many replicas the
# model really wants and why the rest were held back, so Placed, CapacityShortfall, BudgetLimited and
# hybridrec_capacity_shortfall_replicas report the truth; its message becomes status.lastDecision.message when the
# controller's re-plan changes the placement.
# Without a target a model gets the greedy plan of its desired count (spec.replicas or scaling.minReplicas).

CONTROLLER_TRIGGER = cost_controller.TRIGGER  # "cost-controller"


@dataclass(frozen=True)
class ControllerVerdict:
    """What the cost controller decided for one model, next to its per-pool target."""

    wanted: int  # replicas the model needs (demand, stabilisation window, min/max or the pinned count)
    shortfall: int  # of those, replicas the controller could not give it (the reconcile recounts from what it placed)
    budget_limited: bool  # the shortfall is due to budget.maxPerHour (else: no room in the allowed pools)
    message: str  # the decision's reason, one sentence


CONTROLLER_TARGETS: dict[str, dict[str, int]] = {}
CONTROLLER_VERDICTS: dict[str, ControllerVerdict] = {}
SLO_STATUS: dict[str, tuple[bool | None, str, str]] = {}


def request_replan(model_key: str, trigger: str = "controller", delay: float = 0.0) -> bool:
    """Queue a re-plan of ``<namespace>/<name>``; thread-safe. False when the operator is not running here.

    Called on the operator's event loop (the cost controller's rounds) the key is queued at once, so no worker can
    apply a target just set under another trigger before this one is queued.
    """
    runtime = RUNTIME
    if runtime is None:
        return False
    try:
        on_loop = asyncio.get_running_loop() is runtime.loop
    except RuntimeError:  # a plain thread
        on_loop = False
    if on_loop:
        runtime.queue.add(f"rmd:{model_key}", trigger, delay)
    else:
        runtime.loop.call_soon_threadsafe(runtime.queue.add, f"rmd:{model_key}", trigger, delay)
    return True


# ----------------------------------------------------------------------------------------------------- helpers


def model_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _rv(body: Mapping[str, Any] | None) -> int:
    """resourceVersion as a number, to tell which of two copies of an object is newer (0 when unknown).

    Kubernetes calls it opaque; here it only picks the fresher of our own write and the watch cache, and a wrong
    guess costs one extra (no-op) write, never a wrong decision.
    """
    try:
        return int(_meta(body or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def fresher(*bodies: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The copy with the highest resourceVersion."""
    present = [b for b in bodies if b]
    return max(present, key=_rv) if present else None


def _compact_meta(body: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    meta = _meta(body)
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

    return {
        "metadata": _compact_meta(body, "creationTimestamp"),
        "spec": {
            "nodeName": spec.get("nodeName") or "",
            "containers": slim(spec.get("containers") or []),
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
        "metadata": {"name": _meta(body).get("name"), "labels": dict(_meta(body).get("labels") or {})},
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


def restrict_to_target(views: list[placement.PoolView], target: Mapping[str, int], gpus: int) -> list[placement.PoolView]:
    """Views capped to the controller's replicas per pool; pools outside the target offer nothing."""
    capped = []
    for view in views:
        limit = max(0, int(target.get(view.name, 0)))
        slots = view.capacity(gpus)
        capped.append(placement.PoolView(name=view.name, spec=view.spec, free_gpus=min(view.free_gpus, limit * gpus),
                                         replica_slots=min(slots, limit)))
    return capped


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def apply_verdict(plan: placement.PlacementPlan, verdict: ControllerVerdict | None,
                  spec: RecModelDeploymentSpec) -> placement.PlacementPlan:
    """The plan measured against what the model wants, not against the target the controller could give it.

    Placing a target that the controller already cut (budget cap, no room) looks complete; its verdict restores the
    wanted count, and the replicas it held back count as budget or capacity shortfall. The wanted count is clamped to
    the spec again (a spec edited since the controller's round wins). What the placement itself could not place
    stays counted as before.
    """
    if verdict is None:
        return plan
    wanted = max(plan.wanted, placement.desired_replicas(spec, verdict.wanted))
    held_back = max(0, wanted - plan.placed) - plan.shortfall
    if held_back <= 0:
        return plan
    budget = spec.budget.max_per_hour if spec.budget is not None else None
    for_budget = verdict.budget_limited and budget is not None
    why = (f"for the budget of {budget:.2f} {plan.currency}/h" if for_budget
           else "for lack of room in the allowed pools")
    return replace(
        plan,
        wanted=wanted,
        shortfall=plan.shortfall + held_back,
        budget_shortfall=plan.budget_shortfall + (held_back if for_budget else 0),
        budget_limited=plan.budget_limited or for_budget,
        summary=f"{wanted} wanted by the cost controller; {plan.summary}; {_replicas(held_back)} held back {why}",
    )


def decision_message(plan: placement.PlacementPlan, trigger: str, verdict: ControllerVerdict | None,
                     target: Mapping[str, int] | None) -> str:
    """status.lastDecision.message: the controller's reason when it triggered the change, else the placement summary.

    When the placement could not follow the target (room taken since the controller's round, a pool that no longer
    admits the model), what was placed is added, so the message never claims replicas that do not exist.
    """
    if trigger != CONTROLLER_TRIGGER or verdict is None or not verdict.message:
        return plan.summary
    followed = plan.replicas_by_pool() == {p: n for p, n in (target or {}).items() if n > 0}
    return verdict.message if followed else f"{verdict.message}; placed instead: {plan.summary}"


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line a person reads (field path: problem; ...)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "spec")
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    return "invalid spec: " + "; ".join(parts)


# --------------------------------------------------------------------------------------------- decisions (pure)


@dataclass
class ModelSnapshot:
    """Everything one model's reconcile reads, taken from the indexes at one instant."""

    key: str
    body: Mapping[str, Any]  # the RecModelDeployment (compact)
    pools: list[ComputePool]
    nodes: list[Mapping[str, Any]]
    pods: list[Mapping[str, Any]]  # all GPU/hybridrec pods, plus claims of other models
    own_pods: list[Mapping[str, Any]]
    children: dict[tuple[str, str], Mapping[str, Any]]  # (kind, name) -> live child
    target: Mapping[str, int] | None = None
    verdict: ControllerVerdict | None = None  # only read together with ``target``
    slo: tuple[bool | None, str, str] | None = None
    avoid: frozenset[str] = frozenset()  # pools remembered as stuck for this model


@dataclass
class ModelDecision:
    """What a reconcile wants done; computed without I/O, executed by :meth:`Runtime.execute`."""

    key: str
    applies: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # apiVersion, kind, ns, name, uid
    status: dict[str, Any] | None = None  # None: unchanged
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    plan: placement.PlacementPlan | None = None
    placement_changed: bool = False
    direction: str = ""
    error: str | None = None  # the invalid-spec message, when there is one
    requeue_after: float | None = None
    newly_stuck: frozenset[str] = frozenset()
    desired: list[dict[str, Any]] = field(default_factory=list)  # every rendered child, applied or not


def views_per_pool(key: str, gpus: int, pools: list[ComputePool], nodes: list[Mapping[str, Any]],
                   pods: list[Mapping[str, Any]], stuck: set[str]) -> list[placement.PoolView]:
    """``capacity.views_for_model`` pool by pool, each fed only its own nodes and pods.

    Same result (a pool's usage depends only on its member nodes, the pods bound to them and the pods labelled
    with it), but each pool scans its own pods instead of every pod: with hundreds of models this is most of a
    reconcile's CPU.
    """
    views: list[placement.PoolView] = []
    for pool in pools:
        members = [n for n in nodes if capacity.matches(pool.spec.node_selector, (n.get("metadata") or {}).get("labels") or {})]
        names = {(n.get("metadata") or {}).get("name") for n in members}
        relevant = [p for p in pods if (p.get("spec") or {}).get("nodeName") in names
                    or ((p.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL) == pool.name]
        views.extend(capacity.views_for_model(key, gpus, [pool], members, relevant, stuck=stuck))
    return views


# Placed reasons that deserve a Warning event when a model enters them.
_PLACED_WARNINGS = {"InvalidSpec", "PreferredPoolNotFound", "NoAllowedPool", "CapacityShortfall", "BudgetLimited"}


def _condition(conds: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any]:
    return conditions.get_condition(list(conds), type_) or {}


def _status_events(old: Mapping[str, Any], new_conditions: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """A Warning event when the Placed condition moves into a problem reason (once per transition)."""
    before = _condition(old.get("conditions") or [], conditions.PLACED)
    after = _condition(new_conditions, conditions.PLACED)
    reason = after.get("reason", "")
    if after.get("status") == "False" and reason in _PLACED_WARNINGS and (
        before.get("reason") != reason or before.get("status") != "False"
    ):
        return [("Warning", reason, str(after.get("message", "")))]
    return []


def decide(snap: ModelSnapshot, *, now: datetime, trigger: str, grace_seconds: float) -> ModelDecision:
    """Plan one model and diff the result against the live children and status (pure)."""
    body = snap.body
    meta = _meta(body)
    namespace = str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    old_status: Mapping[str, Any] = body.get("status") or {}
    decision = ModelDecision(key=snap.key)
    stamp = conditions.timestamp(now)

    try:
        rmd = parse_rmd(body)
    except ValidationError as exc:
        # The CRD schema refuses almost everything; what reaches us (e.g. objects stored under an older schema)
        # becomes a readable condition, never a traceback or a crash loop.
        decision.error = validation_message(exc)
        conds = conditions.rmd_conditions(None, int(old_status.get("readyReplicas", 0)), generation, now,
                                          old_status.get("conditions"), spec_error=decision.error)
        new_status = {**old_status, "observedGeneration": generation, "conditions": conds}
        if new_status != dict(old_status):
            decision.status = new_status
        decision.events = _status_events(old_status, conds)
        return decision

    spec = rmd.spec
    gpus = spec.resources.gpus
    stuck_now = capacity.stuck_pools(snap.own_pods, now, grace_seconds)
    decision.newly_stuck = frozenset(stuck_now - snap.avoid)
    stuck = set(stuck_now) | set(snap.avoid)
    views = views_per_pool(snap.key, gpus, snap.pools, snap.nodes, snap.pods, stuck)
    controller_total = sum(snap.target.values()) if snap.target else None
    wanted = placement.desired_replicas(spec, controller_total)
    if snap.target and controller_total is not None and controller_total >= wanted:
        views = restrict_to_target(views, snap.target, gpus)
    current = placements_of(old_status)
    plan = placement.plan_placement(spec, views, wanted, current=current)
    if snap.target:
        plan = apply_verdict(plan, snap.verdict, spec)
    decision.plan = plan

    # Children: one Deployment per assigned pool, the Service, the PDB; owned by the model for garbage collection.
    pools_by_name = {p.name: p for p in snap.pools}
    children = render.build_children(rmd, plan, pools_by_name)
    owner = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", RMD_KIND), "metadata": dict(meta)}
    kopf.adopt(children, owner=owner)  # type: ignore[arg-type]
    decision.desired = children
    wanted_names = set()
    for child in children:
        ref = (child["kind"], child["metadata"]["name"])
        wanted_names.add(ref)
        if needs_apply(child, snap.children.get(ref)):
            decision.applies.append(child)
    for (kind, child_name), live in sorted(snap.children.items()):
        if kind == "Deployment" and (kind, child_name) not in wanted_names and not _meta(live).get("deletionTimestamp"):
            decision.deletes.append(("apps/v1", "Deployment", namespace, child_name, str(_meta(live).get("uid", ""))))

    # Status: desired from the plan, ready from the live Deployments.
    ready_by_pool: dict[str, int] = {}
    for (kind, _), live in snap.children.items():
        if kind == "Deployment":
            pool = (_meta(live).get("labels") or {}).get(POOL_LABEL, "")
            ready_by_pool[pool] = int((live.get("status") or {}).get("readyReplicas") or 0)
    placements = [
        {"pool": a.pool, "tenancy": a.tenancy.value, "desired": a.replicas, "ready": min(a.replicas, ready_by_pool.get(a.pool, 0)),
         "pricePerHour": a.cost_per_hour, "currency": a.currency, "reason": a.reason}
        for a in plan.assignments
    ]
    ready = sum(p["ready"] for p in placements)
    conds = conditions.rmd_conditions(plan, ready, generation, now, old_status.get("conditions"), slo_at_risk=snap.slo)
    new_map = plan.replicas_by_pool()
    decision.placement_changed = new_map != current or not old_status.get("lastDecision")
    old_total, new_total = sum(current.values()), plan.placed
    decision.direction = "up" if new_total > old_total else "down" if new_total < old_total else "move"
    last_decision = old_status.get("lastDecision")
    if decision.placement_changed:
        message = decision_message(plan, trigger, snap.verdict if snap.target else None, snap.target)
        last_decision = {"time": stamp, "trigger": trigger, "message": message}
    new_status = {
        "observedGeneration": generation,
        "conditions": conds,
        "placements": placements,
        "replicas": plan.placed,
        "readyReplicas": ready,
        "privateReplicas": plan.private_replicas,
        "publicReplicas": plan.public_replicas,
        "selector": render.selector_for(rmd),
        "costPerHour": plan.cost_per_hour,
        "currency": plan.currency,
        "lastDecision": last_decision,
    }
    if new_status != {k: old_status.get(k) for k in new_status}:
        decision.status = new_status
    if decision.placement_changed and (new_map or current):
        reason = "Placed" if not current else "Replanned"
        decision.events.append(("Normal", reason, plan.summary))
    decision.events.extend(_status_events(old_status, conds))

    # Pods waiting for room: look again once the oldest would cross the grace period.
    waits = [
        grace_seconds - (now - since).total_seconds()
        for since in (capacity.unschedulable_since(p) for p in snap.own_pods)
        if since is not None
    ]
    pending = [w for w in waits if w > 0]
    if pending:
        decision.requeue_after = min(pending) + 0.5
    return decision


def pool_status(pool: ComputePool, usage: capacity.PoolUsage, old: Mapping[str, Any] | None, generation: int | None,
                now: datetime) -> dict[str, Any]:
    """ComputePool status from its usage; conditions keep their transition time while unchanged."""
    old = old or {}
    ready = usage.ready_nodes > 0
    conds = conditions.set_condition(
        old.get("conditions") or [], "Ready", ready,
        "NodesReady" if ready else "NoReadyNodes",
        f"{usage.ready_nodes} of {usage.nodes} nodes ready, {usage.allocatable_gpus} GPUs allocatable" if ready
        else f"no Ready node matches nodeSelector {dict(pool.spec.node_selector)}",
        generation, now,
    )
    quota_left = max(0, usage.quota_gpus - usage.used_gpus)
    conds = conditions.set_condition(
        conds, "QuotaExhausted", quota_left == 0,
        "MaxGpusReached" if quota_left == 0 else "QuotaAvailable",
        f"hybridrec uses {usage.used_gpus} of maxGpus {usage.quota_gpus}", generation, now,
    )
    return {
        "observedGeneration": generation,
        "nodes": usage.nodes,
        "readyNodes": usage.ready_nodes,
        "allocatableGpus": usage.allocatable_gpus,
        "usedGpus": usage.used_gpus,
        "freeGpus": usage.free_gpus,
        "conditions": conds,
    }


# -------------------------------------------------------------------------------------------------- the queue


# The trigger a reconcile reports (status.lastDecision.trigger) names who decided what it applies. When adds of one
# key coalesce, a user's change or the cost controller's target outranks the echoes, capacity events and resyncs
# that merely arrive in the same moment; between equal ranks the first add's trigger is kept.
TRIGGER_RANK: Mapping[str, int] = {"created": 2, "spec changed": 2, CONTROLLER_TRIGGER: 1}


def stronger_trigger(held: str | None, new: str) -> str:
    """The trigger a coalesced queue entry keeps: ``new`` only when it ranks above the one already held."""
    if held is None or TRIGGER_RANK.get(new, 0) > TRIGGER_RANK.get(held, 0):
        return new
    return held


class WorkQueue:
    """De-duplicating work queue (as client-go's): a key is never processed twice at once, bursts coalesce.

    Coalesced adds keep the most important trigger (:func:`stronger_trigger`). Event-loop only (use
    ``loop.call_soon_threadsafe`` from threads).
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: dict[str, str] = {}  # key -> trigger, queued and not yet taken
        self._active: set[str] = set()
        self._dirty: dict[str, str] = {}  # re-queue after the running reconcile of the key finishes
        self._timers: dict[str, tuple[float, asyncio.TimerHandle, str]] = {}  # key -> (due, handle, trigger)
        self.failures: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: str, trigger: str, delay: float = 0.0) -> None:
        if delay > 0:
            due = time.monotonic() + delay
            current = self._timers.get(key)
            if current and current[0] <= due:  # an earlier wake-up is already set: it carries the stronger trigger
                self._timers[key] = (current[0], current[1], stronger_trigger(current[2], trigger))
                return
            if current:  # this one is earlier: it replaces the timer, keeping the old trigger only if that ranks higher
                current[1].cancel()
                trigger = stronger_trigger(trigger, current[2])
            handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
            self._timers[key] = (due, handle, trigger)
            return
        if key in self._pending:
            self._pending[key] = stronger_trigger(self._pending[key], trigger)
            return
        if key in self._active:
            self._dirty[key] = stronger_trigger(self._dirty.get(key), trigger)
            return
        self._pending[key] = trigger
        self._queue.put_nowait(key)

    def _fire(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            self.add(key, timer[2])

    async def get(self) -> tuple[str, str]:
        key = await self._queue.get()
        trigger = self._pending.pop(key)
        self._active.add(key)
        return key, trigger

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self.add(key, self._dirty.pop(key))

    def forget(self, key: str) -> None:
        """Drop retries and timers of a key whose object is gone."""
        self.failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer[1].cancel()

    def clear_timers(self) -> None:
        for _, handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()


class PeeringGate(logging.Handler):
    """Whether this replica may act: follows kopf's own pause/resume decisions (logged by its peering engine).

    kopf stops watching while a peer with a higher priority lives, so no new events reach the handlers; this gate
    stops what runs outside kopf's watchers (queued retries, the resync loop) at the same moments.
    """

    LOGGER = "kopf._core.engines.peering"

    def __init__(self, *, active: bool) -> None:
        super().__init__(level=logging.INFO)
        self.active = active

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Pausing"):
            self.active = False
        elif message.startswith("Resuming"):
            self.active = True


# ------------------------------------------------------------------------------------------------- the runtime


@dataclass
class Runtime:
    """The operator's process-wide state, created at startup."""

    config: OperatorConfig
    kube: Kube
    indices: Mapping[str, Any]
    loop: asyncio.AbstractEventLoop
    executor: concurrent.futures.ThreadPoolExecutor
    gate: PeeringGate
    identity: str
    queue: WorkQueue = field(default_factory=WorkQueue)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # Our own writes, so a reconcile running before the watch shows them does not write again.
    written: dict[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)  # (kind, ns, name) -> body
    planned: dict[str, dict[str, int]] = field(default_factory=dict)  # model key -> pool -> replicas
    avoid: dict[str, dict[str, float]] = field(default_factory=dict)  # model key -> pool -> avoid until (monotonic)
    metric_labels: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    fingerprints: dict[str, Any] = field(default_factory=dict)  # node name -> what capacity depends on
    shortfall: set[str] = field(default_factory=set)  # models with CapacityShortfall
    desired: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # last rendered children
    writes: int = 0

    # ---- snapshots ---------------------------------------------------------------------------------------------
    def _index(self, name: str) -> Any:
        return self.indices[name]

    def _store(self, index: str, key: Any) -> list[Any]:
        idx = self._index(index)
        return list(idx[key]) if key in idx else []

    def rmd_body(self, key: str) -> Mapping[str, Any] | None:
        namespace, name = key.split("/", 1)
        bodies = self._store("hybridrec_rmds", (namespace, name))
        return fresher(bodies[0] if bodies else None, self.written.get((RMD_KIND, namespace, name)))

    def pools(self) -> list[ComputePool]:
        pools = []
        for body in (b for store in self._index("hybridrec_pools").values() for b in store):
            try:
                pools.append(parse_pool(fresher(body, self.written.get((POOL_KIND, "", _meta(body)["name"]))) or body))
            except ValidationError as exc:
                log.warning("ignoring ComputePool %s: %s", _meta(body).get("name"), validation_message(exc))
        return sorted(pools, key=lambda p: p.name)

    def nodes(self) -> list[Mapping[str, Any]]:
        return self._store("hybridrec_nodes", None)

    def pods(self) -> list[Mapping[str, Any]]:
        return self._store("hybridrec_pods", None)

    def children(self, namespace: str, name: str) -> dict[tuple[str, str], Mapping[str, Any]]:
        live: dict[tuple[str, str], Mapping[str, Any]] = {}
        for index in ("hybridrec_deployments", "hybridrec_services", "hybridrec_pdbs"):
            for body in self._store(index, (namespace, name)):
                ref = (body["kind"], _meta(body)["name"])
                live[ref] = fresher(body, self.written.get((body["kind"], namespace, ref[1]))) or body
        # Applied a moment ago and not yet seen by the watch: still counts as live (no second apply).
        for (kind, ns, child), body in list(self.written.items()):
            if ns == namespace and kind != RMD_KIND and (kind, child) not in live and _model_of(body) == name:
                live[(kind, child)] = body
        return live

    def model_snapshot(self, key: str, body: Mapping[str, Any]) -> ModelSnapshot:
        namespace, name = key.split("/", 1)
        pods = self.pods()
        pools = self.pools()
        # Other models' planned replicas: our own recent plans, else what their status says.
        planned: dict[str, dict[str, int]] = {}
        gpus_of: dict[str, int] = {}
        for (ns, other), store in self._index("hybridrec_rmds").items():
            other_key = model_key(ns, other)
            if other_key == key:
                continue
            for other_body in store:
                planned[other_key] = self.planned.get(other_key) or placements_of(other_body.get("status"))
                gpus_of[other_key] = int(((other_body.get("spec") or {}).get("resources") or {}).get("gpus") or 1)
        claims = claim_pods(planned, gpus_of, {p.name: p.spec.gpu.resource_name for p in pools}, pods)
        now = time.monotonic()
        avoid = frozenset(p for p, until in self.avoid.get(key, {}).items() if until > now)
        return ModelSnapshot(
            key=key, body=body, pools=pools, nodes=self.nodes(), pods=pods + claims,
            own_pods=self._store("hybridrec_pods", (namespace, name)), children=self.children(namespace, name),
            target=CONTROLLER_TARGETS.get(key), verdict=CONTROLLER_VERDICTS.get(key), slo=SLO_STATUS.get(key), avoid=avoid,
        )

    # ---- the reconcile ------------------------------------------------------------------------------------------
    async def reconcile(self, item: str, trigger: str) -> None:
        kind, _, key = item.partition(":")
        if kind == "rmd":
            await self.reconcile_model(key, trigger)
        elif kind == "pool":
            await self.reconcile_pool(key)

    async def reconcile_model(self, key: str, trigger: str) -> None:
        started = time.perf_counter()
        body = self.rmd_body(key)
        if body is None or _meta(body).get("deletionTimestamp"):
            self.forget_model(key)
            return
        snap = self.model_snapshot(key, body)
        decision = decide(snap, now=datetime.now(UTC), trigger=trigger, grace_seconds=self.config.pending_grace_seconds)
        if decision.plan is not None:
            # Record the plan before any await: a concurrent reconcile of another model must see these GPUs taken.
            self.planned[key] = decision.plan.replicas_by_pool()
        if decision.newly_stuck:
            until = time.monotonic() + self.config.stuck_cooldown_seconds
            self.avoid.setdefault(key, {}).update({p: until for p in decision.newly_stuck})
        try:
            results = await self.loop.run_in_executor(self.executor, self.execute, body, decision)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind=RMD_KIND).observe(time.perf_counter() - started)
        for written in results:
            self.written[(written["kind"], _meta(written).get("namespace", ""), _meta(written)["name"])] = written
        namespace = key.split("/", 1)[0]
        for child in decision.desired:
            self.desired[(child["kind"], namespace, child["metadata"]["name"])] = child
        for _, kind, ns, name, _ in decision.deletes:
            self.desired.pop((kind, ns, name), None)
        self.record(key, body, decision)
        if decision.requeue_after is not None:
            self.queue.add(f"rmd:{key}", "pods pending", decision.requeue_after)
        if decision.error:
            raise kopf.PermanentError(decision.error)

    def execute(self, body: Mapping[str, Any], decision: ModelDecision) -> list[dict[str, Any]]:
        """Carry out a decision (worker thread): applies, deletes, status, events. Returns the written objects."""
        meta = _meta(body)
        written: list[dict[str, Any]] = []
        for child in decision.applies:
            written.append(self.kube.apply(child))
        for api_version, kind, namespace, name, uid in decision.deletes:
            self.kube.delete(api_version, kind, namespace, name, uid=uid or None)
            self.written.pop((kind, namespace, name), None)
        if decision.status is not None:
            status = {k: v for k, v in decision.status.items() if v is not None}
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
            # resourceVersion makes it a compare-and-swap: a concurrent writer's update is never silently lost.
            written.append(self.kube.request(
                "PATCH", f"/apis/{GROUP_VERSION}/namespaces/{meta.get('namespace')}/recmodeldeployments/{meta['name']}/status",
                body=patch, content_type="application/merge-patch+json"))
        involved = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": RMD_KIND, "metadata": meta}
        for type_, reason, message in decision.events:
            try:
                self.kube.post_event(involved, reason=reason, message=message, type_=type_, instance=self.identity)
            except ApiException as exc:  # an event is informative: never fail a reconcile over it
                log.warning("could not post event %s for %s: %s", reason, decision.key, api_message(exc))
        self.writes += len(decision.applies) + len(decision.deletes) + (decision.status is not None) + len(decision.events)
        return written

    def record(self, key: str, body: Mapping[str, Any], decision: ModelDecision) -> None:
        """Metrics and in-memory bookkeeping after a successful reconcile."""
        namespace, name = key.split("/", 1)
        plan = decision.plan
        if plan is None:
            return
        sensitivity = str((body.get("spec") or {}).get("dataSensitivity", ""))
        status = decision.status or body.get("status") or {}
        ready = {p["pool"]: p.get("ready", 0) for p in status.get("placements") or []}
        labels: set[tuple[str, ...]] = set()
        for a in plan.assignments:
            for state, value in (("desired", a.replicas), ("ready", ready.get(a.pool, 0))):
                metrics.REPLICAS.labels(namespace, name, a.pool, a.tenancy.value, sensitivity, state).set(value)
                labels.add(("replicas", namespace, name, a.pool, a.tenancy.value, sensitivity, state))
            metrics.COST_PER_HOUR.labels(namespace, name, a.pool, a.tenancy.value, a.currency).set(a.cost_per_hour)
            labels.add(("cost", namespace, name, a.pool, a.tenancy.value, a.currency))
        metrics.SHORTFALL.labels(namespace, name, sensitivity).set(plan.shortfall - plan.budget_shortfall)
        labels.add(("shortfall", namespace, name, sensitivity))
        for stale in self.metric_labels.get(key, set()) - labels:
            _remove_metric(stale)
        self.metric_labels[key] = labels
        if decision.placement_changed:
            metrics.DECISIONS.labels(namespace, name, decision.direction, "placement").inc()
        if plan.shortfall - plan.budget_shortfall > 0:
            self.shortfall.add(key)
        else:
            self.shortfall.discard(key)

    def forget_model(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        self.planned.pop(key, None)
        self.avoid.pop(key, None)
        self.shortfall.discard(key)
        self.queue.forget(f"rmd:{key}")
        self.written.pop((RMD_KIND, namespace, name), None)
        for ref in [r for r, child in self.desired.items() if r[1] == namespace and _model_of(child) == name]:
            self.desired.pop(ref, None)
        for stale in self.metric_labels.pop(key, set()):
            _remove_metric(stale)

    async def reconcile_pool(self, name: str) -> None:
        started = time.perf_counter()
        bodies = self._store("hybridrec_pools", name)
        if not bodies:
            return
        body = fresher(bodies[0], self.written.get((POOL_KIND, "", name))) or bodies[0]
        try:
            pool = parse_pool(body)
        except ValidationError as exc:
            raise kopf.PermanentError(validation_message(exc)) from exc
        usage = capacity.pool_usage([pool], self.nodes(), self.pods())[name]
        tenancy = pool.spec.tenancy.value
        for state, value in (("allocatable", usage.allocatable_gpus), ("used", usage.used_gpus),
                             ("free", usage.free_gpus), ("quota", usage.quota_gpus)):
            metrics.POOL_GPUS.labels(name, tenancy, state).set(value)
        old = body.get("status") or {}
        new = pool_status(pool, usage, old, _meta(body).get("generation"), datetime.now(UTC))
        if new != {k: old.get(k) for k in new}:
            path = f"/apis/{GROUP_VERSION}/computepools/{name}/status"
            written = await self.loop.run_in_executor(self.executor, lambda: self.kube.request(
                "PATCH", path, body={"status": new}, content_type="application/merge-patch+json"))
            self.writes += 1
            self.written[(POOL_KIND, "", name)] = written
        metrics.RECONCILE_SECONDS.labels(kind=POOL_KIND).observe(time.perf_counter() - started)

    # ---- workers --------------------------------------------------------------------------------------------
    async def worker(self) -> None:
        while True:
            item, trigger = await self.queue.get()
            try:
                if not self.gate.active:
                    continue  # paused: the replica in charge does it; our watch re-lists everything on resume
                await self.reconcile(item, trigger)
                self.queue.failures.pop(item, None)
            except asyncio.CancelledError:
                raise
            except kopf.PermanentError as exc:
                self.queue.failures.pop(item, None)
                metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason="permanent").inc()
                log.warning("%s: %s (waiting for the object to change)", item, exc)
            except Exception as exc:  # noqa: BLE001 - one bad object must never stop the others
                attempt = self.queue.failures.get(item, 0)
                self.queue.failures[item] = attempt + 1
                if isinstance(exc, ApiException):
                    exc = classify(exc, attempt=attempt)
                if isinstance(exc, kopf.PermanentError):
                    metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason="permanent").inc()
                    log.error("%s: %s", item, exc)
                    continue
                delay = exc.delay if isinstance(exc, kopf.TemporaryError) and exc.delay else retry_delay(1.0, attempt)
                reason = "temporary" if isinstance(exc, kopf.TemporaryError) else "unexpected"
                metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason=reason).inc()
                if reason == "unexpected":
                    log.exception("%s: unexpected error, retrying in %.1fs", item, delay)
                else:
                    log.info("%s: %s; retrying in %.1fs", item, exc, delay)
                self.queue.add(item, trigger, delay)
            finally:
                self.queue.done(item)

    async def resync(self) -> None:
        """The one cluster-wide periodic mechanism: re-plan every model (a no-op when nothing changed)."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            if not self.gate.active:
                continue
            for (namespace, name) in list(self._index("hybridrec_rmds")):
                self.queue.add(f"rmd:{model_key(namespace, name)}", "resync")
            for pool in list(self._index("hybridrec_pools")):
                self.queue.add(f"pool:{pool}", "resync")

    def replan_models(self, trigger: str, *, keys: Iterable[str] | None = None) -> None:
        keys = keys if keys is not None else [model_key(ns, n) for ns, n in list(self._index("hybridrec_rmds"))]
        for key in keys:
            self.queue.add(f"rmd:{key}", trigger)

    def replan_pools(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else list(self._index("hybridrec_pools")):
            self.queue.add(f"pool:{name}", "capacity", self.config.pool_status_delay)


def _model_of(body: Mapping[str, Any]) -> str:
    return str((_meta(body).get("labels") or {}).get(MODEL_LABEL, ""))


def _kind_of(item: str) -> str:
    return POOL_KIND if item.startswith("pool:") else RMD_KIND


def _remove_metric(labels: tuple[str, ...]) -> None:
    gauge = {"replicas": metrics.REPLICAS, "cost": metrics.COST_PER_HOUR, "shortfall": metrics.SHORTFALL}[labels[0]]
    with contextlib.suppress(KeyError):
        gauge.remove(*labels[1:])


RUNTIME: Runtime | None = None


# --------------------------------------------------------------------------------------------------- indexes


@kopf.index(GROUP_VERSION, "recmodeldeployments")
def hybridrec_rmds(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    compact = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _compact_meta(body),
               "spec": body.get("spec") or {}, "status": body.get("status") or {}}
    return {(namespace, name): compact}


@kopf.index(GROUP_VERSION, "computepools")
def hybridrec_pools(body: kopf.Body, name: str, **_: Any) -> dict[Any, Any]:
    return {name: {"metadata": _compact_meta(body), "spec": body.get("spec") or {}, "status": body.get("status") or {}}}


@kopf.index("v1", "nodes")
def hybridrec_nodes(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {None: compact_node(body)}


def _gpu_or_hybridrec_pod(body: kopf.Body, labels: Mapping[str, str], spec: Mapping[str, Any], **_: Any) -> bool:
    return labels.get("app.kubernetes.io/managed-by") == "hybridrec" or requests_accelerators(spec)


@kopf.index("v1", "pods", when=_gpu_or_hybridrec_pod)
def hybridrec_pods(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any]:
    pod = compact_pod(body)
    keys: dict[Any, Any] = {None: pod}
    if labels.get("app.kubernetes.io/managed-by") == "hybridrec" and labels.get(MODEL_LABEL):
        keys[(namespace, labels[MODEL_LABEL])] = pod
    return keys


def _child(body: kopf.Body) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _compact_meta(body, "ownerReferences"),
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


# ------------------------------------------------------------------------------------------- event handlers


def _own_echo(runtime: Runtime, kind: str, body: Mapping[str, Any]) -> bool:
    """The watch showing our own last write back to us: nothing new to react to.

    Once the watch has caught up with a write, the remembered copy is dropped (the index is as fresh).
    """
    ref = (kind, _meta(body).get("namespace", "") or "", _meta(body).get("name", ""))
    mine = runtime.written.get(ref)
    if mine is None:
        return False
    if _rv(body) >= _rv(mine):
        runtime.written.pop(ref, None)
    return _rv(mine) == _rv(body)


@kopf.on.event(GROUP_VERSION, "recmodeldeployments")
async def rmd_event(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:  # noqa: A002
    runtime = RUNTIME
    if runtime is None:
        return
    key = model_key(namespace, name)
    if type == "DELETED":
        runtime.forget_model(key)
        runtime.replan_models("capacity freed", keys=sorted(runtime.shortfall))
        runtime.replan_pools()
        return
    if _own_echo(runtime, RMD_KIND, body):
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


@kopf.on.event(GROUP_VERSION, "computepools")
async def pool_event(type: str | None, body: kopf.Body, name: str, **_: Any) -> None:  # noqa: A002
    runtime = RUNTIME
    if runtime is None or _own_echo(runtime, POOL_KIND, body):
        return
    if type == "DELETED":
        runtime.written.pop((POOL_KIND, "", name), None)
        runtime.replan_models(f"pool {name} deleted")
        return
    runtime.queue.add(f"pool:{name}", "pool changed")
    status = body.get("status") or {}
    if type is not None and status.get("observedGeneration") != body.get("metadata", {}).get("generation"):
        runtime.replan_models(f"pool {name} changed")


@kopf.on.event("v1", "nodes")
async def node_event(type: str | None, body: kopf.Body, name: str, **_: Any) -> None:  # noqa: A002
    runtime = RUNTIME
    if runtime is None:
        return
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


@kopf.on.event("v1", "pods", when=_gpu_or_hybridrec_pod)
async def pod_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> None:  # noqa: A002
    runtime = RUNTIME
    if runtime is None:
        return
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
    kind, name = str(body.get("kind")), str(_meta(body).get("name", ""))
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
        pool = ((_meta(body).get("labels") or {}).get(POOL_LABEL)) or ""
        rmd = runtime.rmd_body(model_key(namespace, model)) or {}
        recorded = {p.get("pool"): int(p.get("ready", 0)) for p in (rmd.get("status") or {}).get("placements") or []}
        if recorded.get(pool, 0) != ready:
            return "ready replicas changed"
    return None


async def _child_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str]) -> None:  # noqa: A002
    runtime = RUNTIME
    model = labels.get(MODEL_LABEL)
    if runtime is None or not model or _own_echo(runtime, str(body.get("kind")), body):
        return
    trigger = child_needs_reconcile(runtime, type, body, namespace, model)
    if trigger:
        runtime.queue.add(f"rmd:{model_key(namespace, model)}", trigger)


@kopf.on.event("apps/v1", "deployments", labels=MANAGED)
async def deployment_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> None:  # noqa: A002
    await _child_event(type, body, namespace, labels)


@kopf.on.event("v1", "services", labels=MANAGED)
async def service_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> None:  # noqa: A002
    await _child_event(type, body, namespace, labels)


@kopf.on.event("policy/v1", "poddisruptionbudgets", labels=MANAGED)
async def pdb_event(type: str | None, body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> None:  # noqa: A002
    await _child_event(type, body, namespace, labels)


# ------------------------------------------------------------------------------------------ startup / probes


def ensure_peering_object(kube: Kube, name: str, clusterwide: bool, namespaces: Iterable[str]) -> None:
    """kopf never creates its peering object and stays paused without one: create it when missing."""
    targets = [("kopf.dev/v1", "ClusterKopfPeering", None)] if clusterwide else [
        ("kopf.dev/v1", "KopfPeering", ns) for ns in namespaces if ns and not any(ch in ns for ch in "*?[!")]
    for api_version, kind, namespace in targets:
        try:
            if kube.get(api_version, kind, namespace, name) is None:
                meta: dict[str, Any] = {"name": name}
                if namespace:
                    meta["namespace"] = namespace
                kube.create({"apiVersion": api_version, "kind": kind, "metadata": meta})
                log.info("created %s %s for peering", kind, name)
        except ApiException as exc:
            if exc.status == 404:
                log.error("the kopf peering CRD (%s) is not installed: apply manifests/operator/peering.yaml "
                          "or run with --standalone", kind)
            elif exc.status != 409:
                log.error("cannot ensure %s %s: %s", kind, name, api_message(exc))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    global RUNTIME
    config = OperatorConfig.from_env()

    # No per-object persistence: without change-detecting handlers kopf writes nothing to our objects, and the
    # events we post ourselves carry the reasons (kopf's own would add a write per handler run).
    settings.posting.enabled = False
    if not log.isEnabledFor(logging.DEBUG):
        # kopf logs every event-handler call at INFO ("Handler ... succeeded"): thousands of lines at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60

    # Peering: every replica gets a random priority (kopf pauses ALL replicas that share the highest one).
    if not settings.peering.standalone:
        if not settings.peering.mandatory:
            settings.peering.name, settings.peering.mandatory = "hybridrec", True
        if settings.peering.priority == 0:
            settings.peering.priority = random.randint(1, 1_000_000)
        settings.peering.lifetime = config.peering_lifetime

    api = await asyncio.to_thread(new_api_client, None, pool_size=max(16, config.workers * 2))
    kube = Kube(api)
    if not settings.peering.standalone:
        clusterwide = settings.peering.clusterwide
        await asyncio.to_thread(ensure_peering_object, kube, settings.peering.name, clusterwide, [])

    gate = PeeringGate(active=settings.peering.standalone)
    logging.getLogger(PeeringGate.LOGGER).addHandler(gate)
    indices = {name: kwargs[name] for name in kwargs if name.startswith("hybridrec_")}
    runtime = Runtime(
        config=config, kube=kube, indices=indices, loop=asyncio.get_running_loop(),
        executor=concurrent.futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="hybridrec-io"),
        gate=gate, identity=f"{os.uname().nodename}-{os.getpid()}",
    )
    runtime.tasks = [asyncio.create_task(runtime.worker(), name=f"hybridrec-worker-{i}") for i in range(config.workers)]
    runtime.tasks.append(asyncio.create_task(runtime.resync(), name="hybridrec-resync"))
    if config.metrics_port:
        server, _ = await asyncio.to_thread(_start_metrics, config.metrics_port, config.metrics_address)
        memo["metrics_server"] = server
    RUNTIME = runtime
    log.info("hybridrec operator started: %s, priority %s, %d workers, metrics on %s:%s",
             "standalone" if settings.peering.standalone else f"peering {settings.peering.name!r}",
             settings.peering.priority, config.workers, config.metrics_address, config.metrics_port or "off")


def _start_metrics(port: int, address: str) -> Any:
    from prometheus_client import start_http_server

    return start_http_server(port, addr=address, registry=metrics.REGISTRY)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    global RUNTIME
    runtime, RUNTIME = RUNTIME, None
    if runtime is not None:
        runtime.queue.clear_timers()
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        logging.getLogger(PeeringGate.LOGGER).removeHandler(runtime.gate)
        runtime.kube.api.close()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()


@kopf.on.probe(id="reconciler")
def probe(**_: Any) -> dict[str, Any]:
    """Liveness: fails when the work queue's workers died (kopf answers 500 and the kubelet restarts us)."""
    runtime = RUNTIME
    if runtime is None:
        raise kopf.TemporaryError("not started")
    dead = [t.get_name() for t in runtime.tasks if t.done()]
    if dead:
        raise RuntimeError(f"background tasks stopped: {', '.join(dead)}")
    return {"active": runtime.gate.active, "queued": len(runtime.queue), "writes": runtime.writes}
