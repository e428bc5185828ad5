"""The per-model decision (pure, no I/O): plan one RecModelDeployment from a snapshot of the cluster and diff the
result against its live children and status.

:func:`decide` is the whole reconcile minus the API calls: ``controller/runtime.py`` takes the snapshot from the
kopf indexes, calls it, and carries out the :class:`ModelDecision` it returns (applies, deletes, one status patch,
events). Re-running it on the state it produced decides nothing new.

The cost controller's part arrives as a per-pool target and a :class:`ControllerVerdict` (through
``controller/seam.py``): the placement re-checks the hard sensitivity rule and the free room on every target, so a
bad target can never break a rule, and the verdict makes the conditions count what the controller held back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from hybridrec_operator.api.models import API_VERSION, ComputePool, RecModelDeploymentSpec, Sensitivity, parse_rmd
from hybridrec_operator.core import capacity, conditions, dra, placement, render
from hybridrec_operator.core.drift import needs_apply
from hybridrec_operator.core.objects import POOL_LABEL, RMD_KIND, adopt, meta_of, owned_by, placements_of
from hybridrec_operator.core.sensitivity import pool_admits

# The trigger of re-plans the cost controller asks for (status.lastDecision.trigger names it).
CONTROLLER_TRIGGER = "cost-controller"


@dataclass(frozen=True)
class ControllerVerdict:
    """What the cost controller decided for one model, next to its per-pool target."""

    wanted: int  # replicas the model needs (demand, stabilisation window, min/max or the pinned count)
    shortfall: int  # of those, replicas the controller could not give it (the reconcile recounts from what it placed)
    budget_limited: bool  # the shortfall is due to budget.maxPerHour (else: no room in the allowed pools)
    message: str  # the decision's reason, one sentence
    # Per pool: the status.placements[] fields the controller knows (capacityRps, rpsPerReplica, capacitySource,
    # costPer1kRequests), as sorted (key, value) pairs so the verdict stays hashable and comparable.
    # Not part of equality: figures for status only; the seam compares them itself (cost_handover.hand_over).
    pools: tuple[tuple[str, tuple[tuple[str, float | str], ...]], ...] = field(default=(), compare=False)

    def pool_fields(self, pool: str) -> dict[str, float | str]:
        return next((dict(fields) for name, fields in self.pools if name == pool), {})


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


@dataclass(frozen=True)
class ChildFailure:
    """One child the reconcile could not bring where it wants it; becomes ``ChildrenApplied``/``ChildConflict``."""

    reason: str  # one of conditions.CHILD_FAILURE_REASONS
    message: str  # names the object; for API refusals, the API server's own message


@dataclass
class ModelDecision:
    """What a reconcile wants done; computed without I/O, executed by :meth:`Runtime.execute` in this order:
    ``deletes`` (what the spec forbids, first), ``status``, ``applies``, then the outcome as conditions."""

    key: str
    applies: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # apiVersion, kind, ns, name, uid
    # (kind, name) of applies the per-model indexes have never shown: the executor checks that no object of that name
    # exists (a user's object is not labelled) before server-side apply would take it over; the runtime first drops
    # those its synced name indexes show free or ours (``needs_lookup``).
    unseen: set[tuple[str, str]] = field(default_factory=set)
    conflicts: list[ChildFailure] = field(default_factory=list)  # known from the indexes: left alone
    uid: str = ""  # the model's uid: children are ours only with a controller ownerReference to it
    generation: int | None = None
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
    meta = meta_of(body)
    namespace = str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    old_status: Mapping[str, Any] = body.get("status") or {}
    decision = ModelDecision(key=snap.key, uid=str(meta.get("uid") or ""), generation=generation)
    stamp = conditions.timestamp(now)

    try:
        rmd = parse_rmd(body)
    except ValidationError as exc:
        # The CRD schema refuses almost everything; what reaches us (e.g. objects stored under an older schema)
        # becomes a readable condition, never a traceback or a crash loop.
        return failed_decision(snap, validation_message(exc), now)

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

    # Children: one Deployment per assigned pool, the Service, the PDB of a model that can run more than one replica,
    # the NetworkPolicy of a sensitive model; owned by the model for garbage collection. A live object of a child's
    # name that this model does not own is a conflict: never applied over, never deleted.
    pools_by_name = {p.name: p for p in snap.pools}
    children = render.build_children(rmd, plan, pools_by_name, network_policy=True)
    owner = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind", RMD_KIND), "metadata": dict(meta)}
    adopt(children, owner)
    decision.desired = children
    wanted_names = set()
    for child in children:
        ref = (child["kind"], child["metadata"]["name"])
        wanted_names.add(ref)
        live = snap.children.get(ref)
        if live is not None and not owned_by(live, decision.uid):
            decision.conflicts.append(conflict(ref[0], namespace, ref[1], live, rmd.name))
        elif needs_apply(child, live):
            decision.applies.append(child)
            if live is None:
                decision.unseen.add(ref)
    # The NetworkPolicy first: a sensitive model's new pods never start before the policy that fences them; then
    # ResourceClaimTemplates, so a DRA pool's new pods find theirs.
    decision.applies.sort(key=lambda c: (c["kind"] != "NetworkPolicy", c["kind"] != dra.TEMPLATE_KIND))

    # Ready replicas per pool, from the live Deployments.
    ready_by_pool: dict[str, int] = {}
    for (kind, _), live in snap.children.items():
        if kind == "Deployment" and owned_by(live, decision.uid):
            pool = (meta_of(live).get("labels") or {}).get(POOL_LABEL, "")
            ready_by_pool[pool] = int((live.get("status") or {}).get("readyReplicas") or 0)

    # What the plan no longer wants. A Deployment on a pool the model may not use (sensitivity raised, pool gone or
    # changed) is removed at once, whatever else fails; one on a pool still allowed stays until the planned
    # replicas are ready elsewhere (make-before-break), so a move between allowed pools never drops serving pods.
    ready_planned = sum(min(a.replicas, ready_by_pool.get(a.pool, 0)) for a in plan.assignments)
    forbidden = forbidden_deployments(snap, rmd.spec.data_sensitivity, rmd.spec.placement.allow_public_burst)
    removed: list[tuple[str, str, str]] = []
    # A claim template stays while a live Deployment of the model can still create pods from it.
    in_use = dra.templates_in_use(live for (kind, _), live in snap.children.items()
                                  if kind == "Deployment" and owned_by(live, decision.uid))
    for (kind, child_name), live in sorted(snap.children.items()):
        if (kind, child_name) in wanted_names or kind not in _REMOVABLE or not owned_by(live, decision.uid):
            continue
        if kind == dra.TEMPLATE_KIND and child_name in in_use:
            continue
        if meta_of(live).get("deletionTimestamp"):
            continue
        if child_name in forbidden:
            removed.append(_remove_forbidden(decision, namespace, live, forbidden[child_name]))
            continue
        replicas = int((live.get("spec") or {}).get("replicas") or 0)
        if kind == "Deployment" and replicas > 0 and ready_planned < plan.placed:
            continue  # make-before-break: re-examined when the new pools' ready replicas change
        decision.deletes.append((str(live.get("apiVersion") or _REMOVABLE[kind]), kind, namespace, child_name,
                                 str(meta_of(live).get("uid", ""))))
    placements = [
        {"pool": a.pool, "tenancy": a.tenancy.value, "desired": a.replicas, "ready": min(a.replicas, ready_by_pool.get(a.pool, 0)),
         "pricePerHour": a.cost_per_hour, "currency": a.currency, "reason": a.reason,
         **(snap.verdict.pool_fields(a.pool) if snap.verdict is not None and snap.target else {})}
        for a in plan.assignments
    ]
    ready = sum(p["ready"] for p in placements)
    conds = conditions.rmd_conditions(plan, ready, generation, now, old_status.get("conditions"), slo_at_risk=snap.slo)
    conds = _children_conditions(decision, conds, now)
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
    decision.events.extend(removed)
    decision.events.extend(children_events(old_status.get("conditions") or [], conds))

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


# Children the reconcile removes when the plan no longer wants them (the Service always is wanted; a PDB is not once
# the model can run only one replica), with the apiVersion to use when the live copy does not say. Only our own
# (controller ownerReference to this model's uid) are removed, with a uid precondition.
_REMOVABLE = {"Deployment": "apps/v1", "NetworkPolicy": "networking.k8s.io/v1", "PodDisruptionBudget": "policy/v1",
              dra.TEMPLATE_KIND: dra.GROUP_VERSION}


def conflict(kind: str, namespace: str, name: str, live: Mapping[str, Any] | None, model: str) -> ChildFailure:
    """The ``ChildConflict`` failure for an object of a child's name that the model does not own."""
    owner = next((f"{r.get('kind')} {r.get('name')}" for r in meta_of(live or {}).get("ownerReferences") or []
                  if r.get("controller")), "")
    whose = f"is controlled by {owner} (another uid)" if owner else "was not created by hybridrec"
    return ChildFailure("ChildConflict", (
        f"{kind} {namespace}/{name} already exists and {whose}: hybridrec never changes, adopts or deletes it; "
        f"rename or remove it, or give RecModelDeployment {model} another name"))


def needs_lookup(entries: Iterable[Mapping[str, Any]], *, synced: bool, uid: str) -> bool:
    """Whether a child about to be applied for the first time must be read from the API server first, so that it is
    never applied over an object hybridrec did not create (server-side apply has no create-only mode).

    ``entries`` are what the watch of every object of the child's kind holds under its namespace and name (the
    operator's name indexes; each entry at least the controller ownerReference), ``synced`` whether that watch has
    listed everything yet. No lookup only when the watch is synced and shows the name free or controlled by this
    model's ``uid``; an unsynced watch or any other owner keeps the GET (a conflict is reported from the live object,
    never from a possibly stale index). What is left: an object created by someone else in the instant between its
    creation and our watch seeing it, the same instant a GET-then-apply leaves between its two requests."""
    if not synced:
        return True
    return not all(owned_by(entry, uid) for entry in entries)


def forbidden_deployments(snap: ModelSnapshot, sensitivity: Any, allow_public_burst: Any) -> dict[str, str]:
    """Live Deployments of the model on pools its data may not use: name -> why. Total over any input: an
    unreadable sensitivity counts as restricted, anything but a literal ``true`` burst flag as false, and a pool
    that no longer exists (or is not readable) as forbidden."""
    try:
        data = Sensitivity(sensitivity)
    except ValueError:
        data = Sensitivity.RESTRICTED
    burst = allow_public_burst is True
    pools = {p.name: p for p in snap.pools}
    uid = str(meta_of(snap.body).get("uid") or "")
    out: dict[str, str] = {}
    for (kind, name), live in snap.children.items():
        if kind != "Deployment" or not owned_by(live, uid):
            continue
        pool = str((meta_of(live).get("labels") or {}).get(POOL_LABEL, ""))
        if pool not in pools:
            out[name] = f"pool {pool or '(none)'} no longer exists"
            continue
        allowed, why = pool_admits(data, pools[pool].spec, allow_public_burst=burst)
        if not allowed:
            out[name] = f"pool {pool} ({pools[pool].spec.tenancy.value}): {why}"
    return out


def _remove_forbidden(decision: ModelDecision, namespace: str, live: Mapping[str, Any], why: str) -> tuple[str, str, str]:
    """Queue the removal of a Deployment the spec forbids; returns its Warning event (saying why)."""
    name = str(meta_of(live).get("name"))
    decision.deletes.append((str(live.get("apiVersion") or "apps/v1"), "Deployment", namespace, name,
                             str(meta_of(live).get("uid", ""))))
    return ("Warning", "ForbiddenDeploymentRemoved", f"Deployment {namespace}/{name} is scaled to zero and deleted: {why}")


def _children_conditions(decision: ModelDecision, conds: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """ChildrenApplied/ChildConflict as far as the decision knows. While writes are pending their outcome is not
    known yet: the previous conditions stand (the executor settles them), so a child that keeps failing does not
    flip the condition back and forth; a model without them yet starts from what the indexes show."""
    pending = bool(decision.applies or decision.deletes)
    if pending and conditions.get_condition(conds, conditions.CHILDREN_APPLIED) is not None:
        return conds
    return conditions.children_conditions(conds, [(f.reason, f.message) for f in decision.conflicts],
                                          decision.generation, now)


def children_events(old: list[Mapping[str, Any]], new: list[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """A Warning event when ChildrenApplied turns False or ChildConflict True, or their message changes while so."""
    events = []
    for type_, bad in ((conditions.CHILDREN_APPLIED, "False"), (conditions.CHILD_CONFLICT, "True")):
        before, after = _condition(old, type_), _condition(new, type_)
        if after.get("status") == bad and (before.get("status"), before.get("message")) != (bad, after.get("message")):
            applied = _condition(new, conditions.CHILDREN_APPLIED)
            if type_ == conditions.CHILD_CONFLICT and applied.get("message") == after.get("message"):
                continue  # the same conflict already has its event from ChildrenApplied
            events.append(("Warning", str(after.get("reason", type_)), str(after.get("message", ""))))
    return events


def settle_children(status_conditions: list[Mapping[str, Any]], failures: Iterable[ChildFailure],
                    generation: int | None, now: datetime) -> tuple[list[dict[str, Any]] | None, list[tuple[str, str, str]]]:
    """After the writes: ChildrenApplied/ChildConflict from every failure met (None when the conditions already
    say so), and the events for what turned bad."""
    new = conditions.children_conditions(status_conditions, [(f.reason, f.message) for f in failures], generation, now)
    if new == [dict(c) for c in status_conditions]:
        return None, []
    return new, children_events(status_conditions, new)


def failed_decision(snap: ModelSnapshot, message: str, now: datetime, *, reason: str = "InvalidSpec") -> ModelDecision:
    """The decision when no plan can be made (a spec the code cannot read or compute with): Placed=False with the
    message and a Warning event, no child applied; but Deployments on pools the spec forbids are still removed
    (the raw ``dataSensitivity`` is read, the most restrictive class when unreadable). Total: never raises."""
    body = snap.body
    meta = meta_of(body)
    spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
    placement_spec = spec.get("placement") if isinstance(spec.get("placement"), Mapping) else {}
    namespace = str(meta.get("namespace") or "default")
    generation = meta.get("generation")
    old_status: Mapping[str, Any] = body.get("status") or {}
    decision = ModelDecision(key=snap.key, uid=str(meta.get("uid") or ""), generation=generation, error=message)
    forbidden = forbidden_deployments(snap, spec.get("dataSensitivity"), placement_spec.get("allowPublicBurst"))
    for name, why in sorted(forbidden.items()):
        live = snap.children[("Deployment", name)]
        if not meta_of(live).get("deletionTimestamp"):
            decision.events.append(_remove_forbidden(decision, namespace, live, why))
    conds = conditions.rmd_conditions(None, int(old_status.get("readyReplicas", 0) or 0), generation, now,
                                      old_status.get("conditions"), spec_error=message)
    if reason != "InvalidSpec":
        conds = conditions.set_condition(conds, conditions.PLACED, False, reason, message, generation, now)
    new_status = {**old_status, "observedGeneration": generation, "conditions": conds}
    if new_status != dict(old_status):
        decision.status = new_status
    decision.events.extend(_status_events(old_status, conds))
    if reason not in _PLACED_WARNINGS and (_condition(old_status.get("conditions") or [], conditions.PLACED).get("message")
                                           != message):
        decision.events.append(("Warning", reason, message))
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
