"""A round's outcomes handed to the reconciler (pure, no I/O): what goes into the seam, which models to re-plan,
the Events to post and the ``Observed`` condition to write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from hybridrec_operator.core.conditions import get_condition, set_condition
from hybridrec_operator.core.cost_types import OBSERVED, ModelOutcome
from hybridrec_operator.core.decide import ControllerVerdict


def verdict_counts(verdict: ControllerVerdict) -> tuple[int, int, bool]:
    """The part of a verdict the reconcile's conditions depend on (the message is informative only)."""
    return verdict.wanted, verdict.shortfall, verdict.budget_limited


def capacity_sources(verdict: ControllerVerdict) -> tuple[tuple[str, object], ...]:
    """Per pool, where its capacity figure comes from: a change (a hint overridden by a measurement) is worth a
    re-plan so status.placements shows it; the figures themselves move every round and ride on the next one."""
    return tuple((pool, dict(fields).get("capacitySource")) for pool, fields in verdict.pools)


def observed_condition_patch(conditions_: Sequence[Mapping[str, Any]], out: ModelOutcome, generation: int | None,
                             now: datetime) -> list[dict[str, Any]] | None:
    """The new conditions list when the Observed condition changes (status, reason or message class); else None.

    The message of a fresh Observed condition carries the RPS, which changes every round: it is rewritten only when
    status or reason change, so a steady state costs no writes.
    """
    old = get_condition(conditions_, OBSERVED)
    status = "True" if out.observed else "False"
    if old is not None and old.get("status") == status and old.get("reason") == out.observed_reason:
        return None
    return set_condition(conditions_, OBSERVED, out.observed, out.observed_reason, out.observed_message, generation, now)


def events_for(out: ModelOutcome) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events of one outcome."""
    events = []
    if out.changed:
        reason = "Rebalancing" if out.direction == "move" else "Scaling"
        events.append(("Normal", reason, out.message))
    for pool, measured, hint in out.hint_overridden:
        events.append(("Normal", "CapacityHintOverridden",
                       f"measured {measured:,.1f} RPS per replica on pool {pool} overrides the hint {hint:,.1f} "
                       "(scaling.capacityHints / targetRpsPerReplica)"))
    if out.newly_unobserved:
        events.append(("Warning", "MetricsUnavailable", out.observed_message))
    elif out.newly_observed:
        events.append(("Normal", "MetricsRestored", out.observed_message))
    return events


def hand_over(
    outcomes: Mapping[str, ModelOutcome],
    live: set[str],
    targets: dict[str, dict[str, int]],
    verdicts: dict[str, ControllerVerdict],
    slo_status: dict[str, tuple[bool | None, str, str]],
) -> list[str]:
    """Publish one round into the seam (the three dicts, updated in place); returns the models to re-plan.

    Deleted models are dropped. A fresh decision sets the target, its verdict and the SLO verdict; a held one keeps
    the last target (or what runs, if there was none) and the last verdicts. Messages carry this round's numbers,
    so a change of message alone is stored without a re-plan: only changed replicas or counts/verdicts re-plan.
    """
    for gone in [k for k in targets if k not in live]:
        targets.pop(gone, None)
        verdicts.pop(gone, None)
        slo_status.pop(gone, None)
    replan: list[str] = []
    for key, out in outcomes.items():
        changed = out.changed
        running = {p: n for p, n in out.targets.items() if n > 0}
        if not out.observed:
            targets.setdefault(key, running)
        else:
            if targets.get(key) != running:
                targets[key] = running
                changed = True
            verdict, before = out.verdict(), verdicts.get(key)
            if verdict is not None and (verdict != before or verdict.pools != before.pools):
                verdicts[key] = verdict
                changed = (changed or before is None or verdict_counts(before) != verdict_counts(verdict)
                           or capacity_sources(before) != capacity_sources(verdict))
            slo, slo_before = out.slo_status(), slo_status.get(key)
            if slo is not None and slo != slo_before:
                slo_status[key] = slo
                changed = changed or slo_before is None or slo_before[:2] != slo[:2]
        if changed:
            replan.append(key)
    return replan
