"""Drift between what hybridrec renders and what the API server holds (pure comparisons, no I/O).

A reconcile applies a child only when :func:`needs_apply` says the live object differs from the rendered one, which
keeps a steady-state reconcile free of API writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.utils.quantity import parse_quantity


# Pod-template fields that decide WHERE pods run. They are compared exactly (a key added by hand counts as drift),
# everything else as "what we render is contained in the live object" (the API server adds defaults).
PLACEMENT_FIELDS = ("nodeSelector", "tolerations", "affinity")


def same_scalar(want: Any, have: Any) -> bool:
    """Equal, or equal once both are read as Kubernetes quantities/strings ("1" == 1, "0.5" == "500m")."""
    if want == have:
        return True
    if isinstance(want, bool) or isinstance(have, bool) or want is None or have is None:
        return False
    if str(want) == str(have):
        return True
    try:
        return bool(parse_quantity(want) == parse_quantity(have))
    except (ValueError, TypeError, ArithmeticError):
        return False


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def contained(want: Any, have: Any) -> bool:
    """Whether every field of ``want`` is present in ``have`` with the same value (lists: same length, in order)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return _empty(want) and _empty(have)
        return all(contained(v, have.get(k)) if not (_empty(v) and k not in have) else True for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list):
            return _empty(want) and _empty(have)
        return len(want) == len(have) and all(contained(w, h) for w, h in zip(want, have))
    return same_scalar(want, have)


def exactly(want: Any, have: Any) -> bool:
    """Structural equality where empty means absent and scalars compare as in :func:`same_scalar`."""
    if _empty(want) and _empty(have):
        return True
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        keys = {k for k, v in want.items() if not _empty(v)} | {k for k, v in have.items() if not _empty(v)}
        return all(exactly(want.get(k), have.get(k)) for k in keys)
    if isinstance(want, list) and isinstance(have, list):
        return len(want) == len(have) and all(exactly(w, h) for w, h in zip(want, have))
    if isinstance(want, (Mapping, list)) or isinstance(have, (Mapping, list)):
        return False
    return same_scalar(want, have)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether server-side applying ``desired`` would change ``live`` (None: the object does not exist).

    Skipping no-op applies keeps a steady-state reconcile free of API writes; placement fields of a pod template
    must match exactly so a hand-edited nodeSelector or toleration is put back.
    """
    if live is None:
        return True
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return True
    want_meta = desired.get("metadata") or {}
    have_meta = live.get("metadata") or {}
    if not contained(want_meta.get("labels") or {}, have_meta.get("labels") or {}):
        return True
    if not contained(want_meta.get("annotations") or {}, have_meta.get("annotations") or {}):
        return True
    want_owners = {r.get("uid") for r in want_meta.get("ownerReferences") or []}
    if not want_owners <= {r.get("uid") for r in have_meta.get("ownerReferences") or []}:
        return True
    want_spec, have_spec = desired.get("spec") or {}, live.get("spec") or {}
    if not contained(want_spec, have_spec):
        return True
    want_pod = ((want_spec.get("template") or {}).get("spec")) or {}
    have_pod = ((have_spec.get("template") or {}).get("spec")) or {}
    return any(not exactly(want_pod.get(f), have_pod.get(f)) for f in PLACEMENT_FIELDS) if want_pod else False
