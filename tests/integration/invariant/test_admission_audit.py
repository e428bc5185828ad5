"""Issue 9, "verified continuously": the operator notices when the admission layer of the sensitive-placement rule
is gone, against the real API server and the operator process.

A cluster admin deletes one of hybridrec's ValidatingAdmissionPolicyBindings: within a resync the operator's
``hybridrec_admission_policy_missing{policy}`` reads 1, and a restricted model says ``AdmissionGuarded=False``
(reason ``AdmissionPolicyMissing``, naming the binding) with a Warning event. The binding re-applied: the gauge reads
0, the condition is True again and a Normal event says so. The binding is restored whatever happens (the cluster and
its policies are shared by the session).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml
from operator_harness import ROOT, Kube, OperatorProcess, sample_models, wait_for
from support.operator import parse_metrics

pytestmark = pytest.mark.cluster

POLICY = "hybridrec-sensitive-placement"
GUARDED = "AdmissionGuarded"
METRIC = "hybridrec_admission_policy_missing"
DEADLINE = 40.0  # the test operator's resync is 15 s: the check runs at most one resync after the change


def shipped_binding(name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "manifests" / "policy" / "sensitive-placement.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "ValidatingAdmissionPolicyBinding" and d["metadata"]["name"] == name)


def gauge(operator: OperatorProcess, policy: str) -> float | None:
    samples = parse_metrics(httpx.get(f"http://{operator.metrics_address}/metrics", timeout=5.0).text)
    return samples.get((METRIC, (("policy", policy),)))


def guarded(kube: Kube, namespace: str, model: str) -> dict[str, Any]:
    return kube.condition(kube.get("rmd", model, namespace), GUARDED)


def events(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("events", namespace) if e.get("reason") == reason]


def test_a_deleted_policy_binding_is_reported_and_clears_when_reapplied(operator: OperatorProcess, kube: Kube,
                                                                        namespace: str) -> None:
    kube.apply(sample_models(namespace, "account-recs"))  # restricted
    wait_for(lambda: gauge(operator, POLICY) == 0, DEADLINE, f"{METRIC}{{policy={POLICY}}} 0 (all in force)")
    assert kube.get("validatingadmissionpolicybinding", POLICY) is not None
    try:
        kube("delete", "validatingadmissionpolicybinding", POLICY)
        wait_for(lambda: gauge(operator, POLICY) == 1, DEADLINE, f"{METRIC}{{policy={POLICY}}} 1")
        cond = wait_for(lambda: (c := guarded(kube, namespace, "account-recs")).get("status") == "False" and c,
                        DEADLINE, "account-recs AdmissionGuarded=False")
        assert cond["reason"] == "AdmissionPolicyMissing", cond
        assert f"ValidatingAdmissionPolicyBinding {POLICY} does not exist" in cond["message"], cond
        [warning] = wait_for(lambda: events(kube, namespace, "AdmissionPolicyMissing"), 20, "a Warning event")
        assert warning["type"] == "Warning" and POLICY in warning["message"]
        assert warning["involvedObject"]["kind"] == "RecModelDeployment"
        # Only the deleted binding is reported.
        assert gauge(operator, "hybridrec-children") == 0
    finally:
        kube.apply([shipped_binding(POLICY)])

    wait_for(lambda: gauge(operator, POLICY) == 0, DEADLINE, f"{METRIC}{{policy={POLICY}}} back to 0")
    cond = wait_for(lambda: (c := guarded(kube, namespace, "account-recs")).get("status") == "True" and c,
                    DEADLINE, "account-recs AdmissionGuarded=True again")
    assert cond["reason"] == "AdmissionPoliciesEnforced" and POLICY in cond["message"], cond
    [normal] = wait_for(lambda: events(kube, namespace, "AdmissionPoliciesEnforced"), 20, "a Normal event")
    assert normal["type"] == "Normal"
