"""core.admission: given the ValidatingAdmissionPolicies and bindings the API server lists, which of hybridrec's
policies are enforced, missing, weakened or unknown, and what the sensitive models' AdmissionGuarded condition says.
The inputs are the shipped manifests (manifests/policy/sensitive-placement.yaml), edited as an admin would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.core import admission

POLICY = Path(__file__).resolve().parents[3] / "manifests" / "policy" / "sensitive-placement.yaml"


def shipped() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = [d for d in yaml.safe_load_all(POLICY.read_text()) if d]
    return ([d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"],
            [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"])


def by_name(states: list[admission.PolicyState]) -> dict[str, admission.PolicyState]:
    return {s.policy: s for s in states}


def test_the_names_are_the_shipped_policies_each_with_a_binding_of_its_name() -> None:
    policies, bindings = shipped()
    assert sorted(admission.POLICY_NAMES) == sorted(p["metadata"]["name"] for p in policies)
    assert sorted(admission.POLICY_NAMES) == sorted(b["metadata"]["name"] for b in bindings)


def test_shipped_manifests_are_enforced() -> None:
    states = admission.audit(*shipped())
    assert [s.state for s in states] == ["enforced"] * len(admission.POLICY_NAMES)
    assert [s.gauge for s in states] == [0] * len(admission.POLICY_NAMES)
    status, reason, message = admission.guarded_condition(states)
    assert (status, reason) == ("True", admission.REASON_ENFORCED)
    assert all(name in message for name in admission.POLICY_NAMES)


def test_a_deleted_binding_is_missing_and_named() -> None:
    policies, bindings = shipped()
    bindings = [b for b in bindings if b["metadata"]["name"] != "hybridrec-children"]
    states = by_name(admission.audit(policies, bindings))
    assert states["hybridrec-children"].state == "missing"
    assert states["hybridrec-children"].gauge == 1
    assert "ValidatingAdmissionPolicyBinding hybridrec-children does not exist" in states["hybridrec-children"].problems
    assert {s.state for n, s in states.items() if n != "hybridrec-children"} == {"enforced"}
    status, reason, message = admission.guarded_condition(states.values())
    assert (status, reason) == ("False", admission.REASON_MISSING)
    assert "hybridrec-children" in message and "hybridrec-model-pods" not in message


def test_nothing_installed_is_missing_everywhere() -> None:
    states = admission.audit([], [])
    assert {s.state for s in states} == {"missing"}
    assert all(len(s.problems) == 2 for s in states)  # the policy and its binding


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda b: b["spec"].update(validationActions=["Warn"]), "validationActions ['Warn'], without Deny"),
    (lambda b: b["spec"].update(validationActions=["Audit", "Warn"]), "without Deny"),
    (lambda b: b["spec"].update(policyName="something-else"), "binds policy something-else"),
    (lambda b: b["spec"].update(matchResources={"namespaceSelector": {"matchLabels": {"x": "y"}}}),
     "spec.matchResources.namespaceSelector is set"),
    (lambda b: b["spec"].update(matchResources={"excludeResourceRules": [{"resources": ["pods"]}]}),
     "spec.matchResources.excludeResourceRules is set"),
])
def test_a_weakened_binding(edit: Any, expected: str) -> None:
    policies, bindings = shipped()
    bindings = copy.deepcopy(bindings)
    edit(next(b for b in bindings if b["metadata"]["name"] == "hybridrec-sensitive-placement"))
    state = by_name(admission.audit(policies, bindings))["hybridrec-sensitive-placement"]
    assert state.state == "weakened" and state.gauge == 1
    assert any(expected in p for p in state.problems), state.problems
    assert admission.guarded_condition([state])[:2] == ("False", admission.REASON_WEAKENED)


def test_defaulted_empty_match_resources_and_deny_with_audit_are_enforced() -> None:
    """The API server may default an empty matchResources; Deny plus Audit still refuses."""
    policies, bindings = copy.deepcopy(shipped())
    for b in bindings:
        b["spec"]["matchResources"] = {"namespaceSelector": {}, "objectSelector": {}, "matchPolicy": "Equivalent"}
        b["spec"]["validationActions"] = ["Deny", "Audit"]
    assert {s.state for s in admission.audit(policies, bindings)} == {"enforced"}


def test_a_policy_failing_open_is_weakened_and_missing_outranks_it() -> None:
    policies, bindings = copy.deepcopy(shipped())
    next(p for p in policies if p["metadata"]["name"] == "hybridrec-model-pods")["spec"]["failurePolicy"] = "Ignore"
    bindings = [b for b in bindings if b["metadata"]["name"] != "hybridrec-children"]
    states = by_name(admission.audit(policies, bindings))
    assert states["hybridrec-model-pods"].state == "weakened"
    assert "failurePolicy is Ignore" in states["hybridrec-model-pods"].problems[0]
    status, reason, message = admission.guarded_condition(states.values())
    assert (status, reason) == ("False", admission.REASON_MISSING)
    assert "hybridrec-children" in message and "hybridrec-model-pods" in message


def test_unreadable_is_unknown_never_missing() -> None:
    for policies, bindings in ((None, []), ([], None), (None, None)):
        states = admission.audit(policies, bindings, "listing them was answered 403: forbidden")
        assert {s.state for s in states} == {"unknown"}
        assert {s.gauge for s in states} == {-1}
        status, reason, message = admission.guarded_condition(states)
        assert (status, reason) == ("Unknown", admission.REASON_UNKNOWN)
        assert "403" in message


def test_condition_updates_write_only_changes_and_nothing_while_healthy_from_the_start() -> None:
    healthy = admission.guarded_condition(admission.audit(*shipped()))
    broken = admission.guarded_condition(admission.audit([], []))
    never = {"ns/a": [{"type": "Ready", "status": "True"}]}
    assert admission.condition_updates(healthy, never) == {}
    assert admission.condition_updates(broken, never) == {"ns/a": broken}
    had = {"ns/a": [{"type": admission.ADMISSION_GUARDED, "status": broken[0], "reason": broken[1], "message": broken[2]}]}
    assert admission.condition_updates(broken, had) == {}
    assert admission.condition_updates(healthy, had) == {"ns/a": healthy}
