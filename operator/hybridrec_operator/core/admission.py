"""Is the admission layer of the sensitive-placement rule in force? (pure; issue 9, "verified continuously")

The ValidatingAdmissionPolicies of manifests/policy/sensitive-placement.yaml refuse a sensitive pod without the
private-tenancy affinity before it exists; the operator's guard (controller/guard.py) deletes one after it is bound.
Without the policies (a binding deleted, never installed, or switched to ``Warn``/``Audit``) the guard still acts, but
such a pod reaches Running for a moment, and nothing else would say so. Given the policies and bindings the API server
lists, :func:`audit` says for each of hybridrec's policies whether it is enforced, missing, weakened, or unknown (the
operator may not read them: a namespaced install), and :func:`guarded_condition` turns that into the
``AdmissionGuarded`` condition every confidential/restricted model carries once something was ever wrong.

What is checked: the policy exists and its ``failurePolicy`` is ``Fail`` (the API server's default); the binding of
the same name exists, binds that policy, has ``Deny`` among its ``validationActions`` and no ``matchResources`` that
narrows it. The policies' CEL is not compared with the shipped text (an edited expression is not detected).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The policies of manifests/policy/sensitive-placement.yaml; each has a binding of the same name
# (tests/unit/operator/test_admission_verdict.py keeps the two in step).
POLICY_NAMES = ("hybridrec-children", "hybridrec-sensitive-placement", "hybridrec-model-placement",
                "hybridrec-model-pods")

ADMISSION_GUARDED = "AdmissionGuarded"
REASON_ENFORCED = "AdmissionPoliciesEnforced"
REASON_MISSING = "AdmissionPolicyMissing"
REASON_WEAKENED = "AdmissionPolicyWeakened"
REASON_UNKNOWN = "AdmissionPoliciesUnreadable"

State = Literal["enforced", "missing", "weakened", "unknown"]
# The gauge hybridrec_admission_policy_missing: 1 missing or weakened, 0 enforced, -1 the operator cannot tell.
GAUGE: dict[State, int] = {"enforced": 0, "missing": 1, "weakened": 1, "unknown": -1}


@dataclass(frozen=True)
class PolicyState:
    """One policy's verdict; ``problems`` are sentences naming what is wrong (empty when enforced)."""

    policy: str
    state: State
    problems: tuple[str, ...] = ()

    @property
    def gauge(self) -> int:
        return GAUGE[self.state]

    def describe(self) -> str:
        return f"{self.policy}: " + "; ".join(self.problems) if self.problems else f"{self.policy}: enforced"


def _named(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str((o.get("metadata") or {}).get("name")): o for o in objects}


def _narrowing(match: Mapping[str, Any] | None) -> list[str]:
    """What in a binding's ``spec.matchResources`` narrows the policy (empty selectors match everything)."""
    if not match:
        return []
    out = [f"spec.matchResources.{key} is set" for key in ("namespaceSelector", "objectSelector")
           if (match.get(key) or {}).get("matchLabels") or (match.get(key) or {}).get("matchExpressions")]
    out += [f"spec.matchResources.{key} is set" for key in ("resourceRules", "excludeResourceRules") if match.get(key)]
    return out


def audit(policies: Iterable[Mapping[str, Any]] | None, bindings: Iterable[Mapping[str, Any]] | None,
          unreadable: str = "") -> list[PolicyState]:
    """Each of hybridrec's policies as the listed objects show it. ``None`` for either list means it could not be
    read (``unreadable`` says why): every policy is then ``unknown``, never ``missing``."""
    if policies is None or bindings is None:
        why = unreadable or "the operator could not list ValidatingAdmissionPolicies and their bindings"
        return [PolicyState(name, "unknown", (why,)) for name in POLICY_NAMES]
    by_policy, by_binding = _named(policies), _named(bindings)
    states: list[PolicyState] = []
    for name in POLICY_NAMES:
        missing: list[str] = []
        weak: list[str] = []
        policy, binding = by_policy.get(name), by_binding.get(name)
        if policy is None:
            missing.append(f"ValidatingAdmissionPolicy {name} does not exist")
        elif (policy.get("spec") or {}).get("failurePolicy", "Fail") != "Fail":
            weak.append(f"its failurePolicy is {(policy.get('spec') or {}).get('failurePolicy')}, not Fail")
        if binding is None:
            missing.append(f"ValidatingAdmissionPolicyBinding {name} does not exist")
        else:
            spec = binding.get("spec") or {}
            if spec.get("policyName") != name:
                weak.append(f"binding {name} binds policy {spec.get('policyName') or '(none)'}, not {name}")
            actions = list(spec.get("validationActions") or [])
            if "Deny" not in actions:
                weak.append(f"binding {name} has validationActions {actions}, without Deny")
            weak += [f"binding {name}: {p}" for p in _narrowing(spec.get("matchResources"))]
        state: State = "missing" if missing else ("weakened" if weak else "enforced")
        states.append(PolicyState(name, state, tuple(missing + weak)))
    return states


def guarded_condition(states: Iterable[PolicyState]) -> tuple[Literal["True", "False", "Unknown"], str, str]:
    """``AdmissionGuarded`` of a confidential/restricted model: False (missing first, then weakened) naming each
    policy and what is wrong, Unknown when the operator cannot tell, True when every policy is enforced."""
    states = list(states)
    bad = [s for s in states if s.state in ("missing", "weakened")]
    if bad:
        reason = REASON_MISSING if any(s.state == "missing" for s in bad) else REASON_WEAKENED
        return "False", reason, (
            "The API server no longer refuses misplaced sensitive pods before they run ("
            + " | ".join(s.describe() for s in bad)
            + "); the operator still deletes any it finds on a non-private node. Re-apply manifests/policy/ "
            "(or upgrade the chart).")
    unknown = [s for s in states if s.state == "unknown"]
    if unknown:
        return "Unknown", REASON_UNKNOWN, (
            f"The operator cannot tell whether hybridrec's admission policies are in force: {unknown[0].problems[0]}.")
    return "True", REASON_ENFORCED, (
        "Every hybridrec admission policy (" + ", ".join(s.policy for s in states) + ") is installed and bound with Deny.")


def condition_updates(wanted: tuple[str, str, str],
                      current: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, tuple[str, str, str]]:
    """Which sensitive models' ``AdmissionGuarded`` must be written: those whose condition differs from ``wanted``,
    except that a model that never had one gets none while all is well (no write per model in a healthy cluster)."""
    out: dict[str, tuple[str, str, str]] = {}
    for key, conds in current.items():
        old = next((c for c in conds if c.get("type") == ADMISSION_GUARDED), None)
        if old is None and wanted[0] == "True":
            continue
        if old is None or (old.get("status"), old.get("reason"), old.get("message")) != wanted:
            out[key] = wanted
    return out
