"""Status conditions of a RecModelDeployment, following Kubernetes API conventions (pure).

Types: ``Ready`` (the placed replicas serve), ``Placed`` (every wanted replica has a pool), ``CapacityShortfall``
(allowed pools are too small), ``BudgetLimited`` (``budget.maxPerHour`` holds replicas back) and ``SLOAtRisk``
(reported by the cost controller; Unknown until it does). Reasons are CamelCase, messages one sentence.
``lastTransitionTime`` only moves when a condition's status changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from hybridrec_operator.core.placement import PlacementPlan

READY = "Ready"
PLACED = "Placed"
CAPACITY_SHORTFALL = "CapacityShortfall"
BUDGET_LIMITED = "BudgetLimited"
SLO_AT_RISK = "SLOAtRisk"
RMD_CONDITION_TYPES = (READY, PLACED, CAPACITY_SHORTFALL, BUDGET_LIMITED, SLO_AT_RISK)
# Set by the invariant check (issue 9 item 4): a pod of the model ran on a node not labelled private.
SENSITIVE_PLACEMENT_VIOLATION = "SensitivePlacementViolation"
# ComputePool: its nodes' hybridrec.io/tenancy labels agree with spec.tenancy.
TENANCY_MISMATCH = "TenancyMismatch"

Status = Literal["True", "False", "Unknown"]


def timestamp(now: datetime | str) -> str:
    """RFC 3339 in UTC with second precision, the form Kubernetes stores (``2024-05-01T12:00:00Z``)."""
    if isinstance(now, str):
        return now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_status(value: bool | str | None) -> Status:
    """True/False/None (or the strings themselves) as a condition status."""
    if value is None:
        return "Unknown"
    if isinstance(value, bool):
        return "True" if value else "False"
    if value not in ("True", "False", "Unknown"):
        raise ValueError(f"not a condition status: {value!r}")
    return value  # type: ignore[return-value]


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type: str,  # noqa: A002 - the Kubernetes field name
    status: bool | str | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime | str,
) -> list[dict[str, Any]]:
    """A new list with condition ``type`` set; its lastTransitionTime is kept while the status does not change."""
    new_status = as_status(status)
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type:
            result.append(dict(condition))
            continue
        found = True
        unchanged = condition.get("status") == new_status and condition.get("lastTransitionTime")
        result.append(_condition(type, new_status, reason, message, generation,
                                 condition["lastTransitionTime"] if unchanged else timestamp(now)))
    if not found:
        result.append(_condition(type, new_status, reason, message, generation, timestamp(now)))
    return result


def _condition(type_: str, status: Status, reason: str, message: str, generation: int | None, when: str) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": when}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _sentence(text: str) -> str:
    """Capitalised, with a full stop."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _n(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


def _ready(plan: PlacementPlan | None, ready: int) -> tuple[Status, str, str]:
    if plan is None:
        return "Unknown", "InvalidSpec", f"{_n(ready)} ready; nothing is changed until the spec is fixed."
    if plan.wanted == 0:
        return "True", "ScaledToZero", "No replicas are wanted."
    if plan.placed == 0:
        return "False", "NoReplicasPlaced", f"None of the {_n(plan.wanted)} wanted could be placed."
    if ready >= plan.placed:
        extra = f" ({plan.wanted} wanted)" if plan.shortfall else ""
        return "True", "ReplicasReady", f"{ready} of {plan.placed} placed replicas are ready{extra}."
    return "False", "ReplicasNotReady", f"{ready} of {plan.placed} placed replicas are ready."


def _placed(plan: PlacementPlan | None, spec_error: str | None) -> tuple[Status, str, str]:
    if spec_error is not None or plan is None:
        return "False", "InvalidSpec", spec_error or "The spec could not be read."
    if plan.problems:
        return "False", "PreferredPoolNotFound", _sentence("; ".join(plan.problems)) + " " + _sentence(f"plan: {plan.summary}")
    if plan.wanted == 0:
        return "True", "NothingToPlace", "No replicas are wanted."
    if plan.placed == plan.wanted:
        return "True", "AllReplicasPlaced", _sentence(plan.summary)
    if not plan.allowed:
        return "False", "NoAllowedPool", _sentence(plan.summary)
    if plan.shortfall == plan.budget_shortfall:
        return "False", "BudgetLimited", _sentence(plan.summary)
    return "False", "CapacityShortfall", _sentence(plan.summary)


def _capacity(plan: PlacementPlan | None) -> tuple[Status, str, str]:
    if plan is None:
        return "Unknown", "InvalidSpec", "No plan was made because the spec is invalid."
    missing = plan.shortfall - plan.budget_shortfall
    if missing <= 0:
        return "False", "CapacitySufficient", "Every wanted replica fits in the allowed pools."
    if not plan.allowed:
        excluded = "; ".join(f"{k}: {v}" for k, v in sorted(plan.excluded.items())) or "no pools exist"
        return "True", "NoAllowedPool", f"No pool may run this model ({excluded})."
    return "True", "InsufficientCapacity", (
        f"{_n(missing)} of {plan.wanted} cannot be placed: the allowed pools ({', '.join(plan.allowed)}) are full."
    )


def _budget(plan: PlacementPlan | None) -> tuple[Status, str, str]:
    if plan is None:
        return "Unknown", "InvalidSpec", "No plan was made because the spec is invalid."
    if plan.budget_per_hour is None:
        return "False", "NoBudget", "No budget.maxPerHour is set."
    limit = f"{plan.budget_per_hour:.2f} {plan.currency}/h"
    if plan.budget_limited:
        return "True", "MaxPerHourReached", (
            f"The budget of {limit} holds back {_n(plan.budget_shortfall)}; the plan costs {plan.cost_per_hour:.2f} {plan.currency}/h."
        )
    return "False", "WithinBudget", f"The plan costs {plan.cost_per_hour:.2f} {plan.currency}/h of a {limit} budget."


def _slo(slo_at_risk: tuple[bool | None, str, str] | None) -> tuple[Status, str, str]:
    if slo_at_risk is None:
        return "Unknown", "AwaitingMetrics", "The cost controller has not reported latency for this model yet."
    at_risk, reason, message = slo_at_risk
    return as_status(at_risk), reason, _sentence(message) if message.strip() else message


def rmd_conditions(
    plan: PlacementPlan | None,
    ready_replicas: int,
    generation: int | None,
    now: datetime | str,
    previous: Iterable[Mapping[str, Any]] | None,
    *,
    slo_at_risk: tuple[bool | None, str, str] | None = None,
    spec_error: str | None = None,
) -> list[dict[str, Any]]:
    """All five conditions in a fixed order, then any other condition types found in ``previous`` (kept as they are)."""
    previous = [dict(c) for c in previous or []]
    computed = {
        READY: _ready(plan, ready_replicas),
        PLACED: _placed(plan, spec_error),
        CAPACITY_SHORTFALL: _capacity(plan),
        BUDGET_LIMITED: _budget(plan),
        SLO_AT_RISK: _slo(slo_at_risk),
    }
    conditions = previous
    for type_, (status, reason, message) in computed.items():
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)
    ours = {c["type"]: c for c in conditions}
    return [ours[t] for t in RMD_CONDITION_TYPES] + [c for c in conditions if c["type"] not in RMD_CONDITION_TYPES]


def get_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, None when absent."""
    return next((c for c in conditions if c.get("type") == type_), None)


def pool_tenancy_condition(tenancy: str, mismatched: Iterable[str]) -> tuple[Status, str, str]:
    """``TenancyMismatch`` of a ComputePool from ``capacity.PoolUsage.tenancy_mismatch``: True (reason
    NodesDisagree) while selected nodes are labelled with another tenancy; those nodes give the pool no capacity."""
    names = sorted(mismatched)
    if not names:
        return "False", "NodesAgree", _sentence(f"every selected node is labelled hybridrec.io/tenancy={tenancy} or unlabelled")
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return "True", "NodesDisagree", _sentence(
        f"{len(names)} selected node(s) are not labelled hybridrec.io/tenancy={tenancy} ({shown}): they receive no "
        "replicas of this pool until the labels or spec.nodeSelector agree")


def violation_condition(messages: Iterable[str], *, resolved: str = "") -> tuple[Status, str, str]:
    """``SensitivePlacementViolation`` of a RecModelDeployment from ``sensitivity.placement_violations`` messages.

    ``resolved``: the message of the violation that was True until now; once it is gone the condition turns False
    with reason ``ViolationResolved`` and keeps naming the pod and node, so the record outlives the pod.
    """
    found = list(messages)
    if not found and resolved:
        return "False", "ViolationResolved", _sentence(
            f"no pod of this model runs on a node that is not labelled private now; last violation: {resolved.rstrip('.')}")
    if not found:
        return "False", "NoViolation", "No pod of this model runs on a node that is not labelled private."
    return "True", "PodOnNonPrivateNode", _sentence("; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else ""))


# ---- children: what the reconcile could not carry out (issue 9 items 1, 2 and 5) ---------------------------------
# ChildrenApplied: every child the plan wants is applied and every child it forbids is removed; False names the
# objects and quotes the API server. ChildConflict: an object with a child's name exists that this model does not own
# (no controller ownerReference to its uid): hybridrec never overwrites, adopts or deletes it.
CHILDREN_APPLIED = "ChildrenApplied"
CHILD_CONFLICT = "ChildConflict"
# Reasons of ChildrenApplied=False, most serious first (the condition's reason is the first that occurs).
CHILD_FAILURE_REASONS = ("DeleteFailed", "ChildConflict", "ApplyFailed")
# A reconcile that failed before it could decide anything (an input the code cannot compute with): Placed=False.
RECONCILE_FAILED = "ReconcileFailed"


def _listed(messages: list[str]) -> str:
    return _sentence("; ".join(messages[:3]) + (f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""))


def children_conditions(
    conditions: Iterable[Mapping[str, Any]],
    failures: Iterable[tuple[str, str]],
    generation: int | None,
    now: datetime | str,
) -> list[dict[str, Any]]:
    """``ChildrenApplied`` and ``ChildConflict`` from the reconcile's failures, each a ``(reason, message)`` with
    reason in :data:`CHILD_FAILURE_REASONS`; no failures: both say all is well."""
    found = list(failures)
    conflicts = [m for r, m in found if r == "ChildConflict"]
    conds = set_condition(
        conditions, CHILD_CONFLICT, bool(conflicts), "NotOwnedByModel" if conflicts else "NoConflict",
        _listed(conflicts) if conflicts else "No object with a child's name belongs to anyone else.", generation, now)
    if not found:
        return set_condition(conds, CHILDREN_APPLIED, True, "Applied",
                             "Every wanted child is applied and every forbidden one removed.", generation, now)
    reason = next(r for r in CHILD_FAILURE_REASONS if any(f[0] == r for f in found))
    ordered = [m for r in CHILD_FAILURE_REASONS for f_r, m in found if f_r == r]
    return set_condition(conds, CHILDREN_APPLIED, False, reason, _listed(ordered), generation, now)


def violation_updates(
    violations: Mapping[str, Iterable[str]],
    current: Mapping[str, Iterable[Mapping[str, Any]]],
) -> dict[str, tuple[Status, str, str]]:
    """Which models' ``SensitivePlacementViolation`` must be written, and to what.

    ``violations``: model key -> messages of its pods on non-private nodes now; ``current``: model key -> its
    conditions (every sensitive model). True while a violation remains; back to False (``ViolationResolved``) once
    none does; a model that never had one gets no condition (no write per model and event). Only changes are returned.
    """
    out: dict[str, tuple[Status, str, str]] = {}
    for key in sorted(set(violations) | set(current)):
        messages = sorted(violations.get(key) or [])
        old = get_condition(current.get(key) or [], SENSITIVE_PLACEMENT_VIOLATION) or {}
        if not messages and old.get("status") != "True":
            continue
        resolved = str(old.get("message", "")) if old.get("status") == "True" else ""
        wanted = violation_condition(messages, resolved=resolved)
        if (old.get("status"), old.get("reason"), old.get("message")) != wanted:
            out[key] = wanted
    return out


def condition_news(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]],
                   type_: str) -> tuple[str, str, str] | None:
    """The event for a pool condition (RemoteClusterReady, OpenCostPrice) whose status or reason changed: Warning
    when it turned bad, Normal when it recovered; None when it did not change."""
    before = get_condition(old, type_) or {}
    after = get_condition(new, type_)
    if after is None or (before.get("status"), before.get("reason")) == (after.get("status"), after.get("reason")):
        return None
    if after.get("status") == "True" and not before:
        return None  # healthy when first seen: nothing to tell
    return ("Normal" if after.get("status") == "True" else "Warning", str(after.get("reason")), str(after.get("message")))
