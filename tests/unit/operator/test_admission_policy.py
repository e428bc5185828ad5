"""Structure of the ValidatingAdmissionPolicies guarding sensitive pods and hybridrec's children (their CEL runs
against a real API server in tests/integration/admission); plus: everything the renderer produces for sensitive
models satisfies the policies' intent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.core.render import build_deployment

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "manifests" / "policy" / "sensitive-placement.yaml"


PLACEMENT, CHILDREN, MODEL = "hybridrec-sensitive-placement", "hybridrec-children", "hybridrec-model-placement"
MODEL_PODS = "hybridrec-model-pods"


def policies() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each policy by name with its binding."""
    docs = [d for d in yaml.safe_load_all(POLICY.read_text()) if d]
    found = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert len(docs) == 2 * len(found) and set(found) == set(bindings)
    return {name: (found[name], bindings[name]) for name in found}


def load() -> tuple[dict[str, Any], dict[str, Any]]:
    return policies()[PLACEMENT]


def test_policy_and_binding_shape() -> None:
    assert set(policies()) == {PLACEMENT, CHILDREN, MODEL, MODEL_PODS}
    for policy, binding in policies().values():
        assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["metadata"]["name"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert policy["spec"]["failurePolicy"] == "Fail"
        for validation in policy["spec"]["validations"]:
            assert validation["messageExpression"].startswith("'hybridrec: ")
            assert validation["reason"] in {"Forbidden", "Invalid"}


def test_children_policy_asks_rbac_who_the_operator_is() -> None:
    """Only holders of recmodeldeployments/children verbs (the operator's ServiceAccount, cluster admins) may touch
    objects labelled managed-by=hybridrec; kube-system controllers may update and delete, never create."""
    policy, _ = policies()[CHILDREN]
    resources = {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in policy["spec"]["matchConstraints"]["resourceRules"]}
    assert resources == {(("apps",), ("deployments",)), (("",), ("services",)), (("policy",), ("poddisruptionbudgets",)),
                         (("networking.k8s.io",), ("networkpolicies",)), (("resource.k8s.io",), ("resourceclaimtemplates",))}
    for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
        assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    [condition] = policy["spec"]["matchConditions"]
    assert "oldObject" in condition["expression"] and "'app.kubernetes.io/managed-by'" in condition["expression"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "subresource('children')" in variables["operator"] and ".check(variables.verb).allowed()" in variables["operator"]
    assert "request.operation != 'CREATE'" in variables["kubeSystemController"]
    rbac = [d for d in yaml.safe_load_all((REPO / "manifests/rbac/operator.yaml").read_text()) if d and d["kind"] == "ClusterRole"]
    rules = [r for r in rbac[0]["rules"] if "recmodeldeployments/children" in r["resources"]]
    assert rules and set(rules[0]["verbs"]) == {"create", "update", "delete"}


def test_model_pods_policy_covers_every_way_to_get_such_a_pod() -> None:
    """A pod labelled hybridrec.io/model (or managed-by=hybridrec) gets the model's traffic: who may create one
    directly or through any built-in workload controller is asked of RBAC, as for the children."""
    policy, _ = policies()[MODEL_PODS]
    resources = {(g, r) for rule in policy["spec"]["matchConstraints"]["resourceRules"]
                 for g in rule["apiGroups"] for r in rule["resources"]}
    assert resources == {("", "pods"), ("", "replicationcontrollers"), ("apps", "deployments"), ("apps", "replicasets"),
                         ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs")}
    for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}  # deleting such a pod is a restart, not a leak
    condition, children = policy["spec"]["matchConditions"]
    assert "jobTemplate" in condition["expression"] and "'hybridrec.io/model'" in condition["expression"]
    assert "'app.kubernetes.io/managed-by'" in children["expression"]  # hybridrec's Deployments: the children policy
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    children = {v["name"]: v["expression"] for v in policies()[CHILDREN][0]["spec"]["variables"]}
    assert variables["operator"] == children["operator"]  # one notion of "the operator" for both policies
    [validation] = policy["spec"]["validations"]
    assert validation["expression"] == "variables.kubeSystemController || variables.operator"


def test_model_policy_reads_the_models_spec_not_labels() -> None:
    policy, binding = policies()[MODEL]
    assert policy["spec"]["paramKind"] == {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment"}
    assert binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "params.spec.dataSensitivity" in variables["specSensitivity"]
    assert "params.metadata.name in variables.names" in variables["mine"]
    assert "oldObject" in variables["labelSets"]  # a label dropped in the same edit still counts


@pytest.mark.parametrize("name", [PLACEMENT, MODEL])
def test_matches_pods_and_deployments_on_create_and_update(name: str) -> None:
    policy, _ = policies()[name]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in policy["spec"]["matchConstraints"]["resourceRules"]}
    assert set(rules) == {(("",), ("pods",)), (("apps",), ("deployments",))}
    for rule in rules.values():
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}
        assert rule["apiVersions"] == ["v1"]


def test_validations_encode_the_rule() -> None:
    policy, _ = load()
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "'confidential', 'restricted'" in variables["sensitive"]
    # Template labels, the object's own labels and (on UPDATE) the previous template labels all count.
    assert "variables.labels, variables.ownLabels, variables.oldLabels" in variables["claimed"]
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
    node_name = next(e for e in expressions if "nodeName" in e)
    assert "'system:nodes' in request.userInfo.groups" in node_name and "request.operation != 'CREATE'" in node_name
    assert any("variables.ownSensitivity == variables.sensitivity" in e for e in expressions)
    for validation in policy["spec"]["validations"]:
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
