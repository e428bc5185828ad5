"""Structure of the ValidatingAdmissionPolicy guarding sensitive pods (its CEL runs against a real API server in the
integration tests); plus: everything the renderer produces for sensitive models satisfies the policy's intent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.core.render import build_deployment

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "manifests" / "policy" / "sensitive-placement.yaml"


def load() -> tuple[dict[str, Any], dict[str, Any]]:
    policy, binding = [d for d in yaml.safe_load_all(POLICY.read_text()) if d]
    return policy, binding


def test_policy_and_binding_shape() -> None:
    policy, binding = load()
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["kind"] == "ValidatingAdmissionPolicy" and binding["kind"] == "ValidatingAdmissionPolicyBinding"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_matches_pods_and_deployments_on_create_and_update() -> None:
    policy, _ = load()
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in policy["spec"]["matchConstraints"]["resourceRules"]}
    assert set(rules) == {(("",), ("pods",)), (("apps",), ("deployments",))}
    for rule in rules.values():
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}
        assert rule["apiVersions"] == ["v1"]


def test_validations_encode_the_rule() -> None:
    policy, _ = load()
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "'confidential', 'restricted'" in variables["sensitive"]
    assert "object.spec.template.spec" in variables["podSpec"]  # Deployments' templates are guarded too
    assert "requiredDuringSchedulingIgnoredDuringExecution" in variables["terms"]
    expressions = [v["expression"] for v in policy["spec"]["validations"]]
    affinity = next(e for e in expressions if "variables.terms" in e)
    # Every term (terms are ORed), the tenancy key, operator In, and only the value "private".
    assert "variables.terms.all(" in affinity and "size(variables.terms) > 0" in affinity
    assert "e.key == 'hybridrec.io/tenancy'" in affinity and "e.operator == 'In'" in affinity
    assert "e.values.all(v, v == 'private')" in affinity
    selector = next(e for e in expressions if "nodeSelector" in e)
    assert "== 'private'" in selector
    for validation in policy["spec"]["validations"]:
        assert validation["messageExpression"].startswith("'hybridrec: ")
        assert validation["reason"] in {"Forbidden", "Invalid"}
        assert "\n" not in validation["messageExpression"]


def test_rendered_sensitive_pods_satisfy_the_policy_intent() -> None:
    pools = {p.name: p for p in (parse_pool(d) for d in yaml.safe_load_all((REPO / "manifests/samples/pools.yaml").read_text()) if d)}
    rmd = next(parse_rmd(d) for d in yaml.safe_load_all((REPO / "manifests/samples/models.yaml").read_text())
               if d and d["metadata"]["name"] == "account-recs")
    for pool in ("onprem-a100", "onprem-t4"):
        spec = build_deployment(rmd, pools[pool], 1)["spec"]["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms and all(
            any(e["key"] == "hybridrec.io/tenancy" and e["operator"] == "In" and e["values"] == ["private"]
                for e in t["matchExpressions"])
            for t in terms
        )
        assert spec["nodeSelector"].get("hybridrec.io/tenancy", "private") == "private"
