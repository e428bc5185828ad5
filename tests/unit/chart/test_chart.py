"""The Helm chart, rendered and linted by the real helm binary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hybridrec_operator.core import render
from hybridrec_operator.api.models import parse_rmd
from chart_helpers import CHART, KUBE_VERSION, ROOT, by_kind, objects, run, template

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
MONITORING_APIS = [
    "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PodMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
]


def test_there_are_ci_values_files() -> None:
    assert {p.name for p in CI_VALUES} >= {"minimal-values.yaml", "monitoring-on-values.yaml", "samples-on-values.yaml"}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_lint_strict(helm: str, values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []
    out = run([helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *extra]).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_render(helm: str, values: Path) -> None:
    docs = objects(template(helm, "-f", str(values), *MONITORING_APIS).stdout)
    assert len(by_kind(docs, "Deployment")) == 1
    assert all(d["metadata"].get("name") for d in docs)


def test_duplicate_keys_are_caught() -> None:
    with pytest.raises(AssertionError, match="duplicate keys"):
        objects("metadata:\n  labels:\n    a: '1'\n    a: '2'\n")


def test_defaults_render_the_expected_objects(helm: str) -> None:
    docs = objects(template(helm).stdout)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "PodDisruptionBudget",
         "Service", "ConfigMap", "ConfigMap", "ConfigMap",
         # Four policies (owner-only children, placement from labels, placement from the model's spec, who may run
         # a model's pods), each bound.
         *["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 4]
    )
    # Without the prometheus-operator API, "auto" leaves the monitoring objects out; no sample pools by default.
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PrometheusRule") and not by_kind(docs, "ComputePool")


def test_monitoring_auto_follows_the_api_and_false_wins(helm: str) -> None:
    docs = objects(template(helm, *MONITORING_APIS).stdout)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (rule,) = by_kind(docs, "PrometheusRule")
    (servers,) = by_kind(docs, "PodMonitor")
    endpoint = servers["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == render.PORT_NAME and endpoint["honorLabels"] is True
    model = parse_rmd(next(d for d in yaml.safe_load_all((ROOT / "manifests" / "samples" / "models.yaml").read_text()) if d))
    assert servers["spec"]["selector"]["matchLabels"].items() <= render.model_labels(model).items()
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["spec"]["selector"]["matchLabels"] == by_kind(docs, "Service")[0]["spec"]["selector"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert yaml.safe_load((CHART / "rules" / "hybridrec-alerts.yaml").read_text()) == rule["spec"]
    assert len(alerts) == 8 and "HybridRecSensitivePlacementViolation" in alerts  # issue 9 item 4 added it
    assert "HybridRecAdmissionPolicyMissing" in alerts  # and the check that its admission policies are in force
    off = objects(template(helm, *MONITORING_APIS, "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false").stdout)
    assert not by_kind(off, "ServiceMonitor") and not by_kind(off, "PrometheusRule") and not by_kind(off, "PodMonitor")
    forced = objects(template(helm, "--set", "serviceMonitor.enabled=true").stdout)
    assert by_kind(forced, "ServiceMonitor")


def test_deployment_security_and_probes(helm: str) -> None:
    (dep,) = by_kind(objects(template(helm).stdout), "Deployment")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "ghcr.io/hybridrec/operator:0.1.0"
    assert container["args"][:2] == ["operator", "run"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"] and "--lease-name=hybridrec" in container["args"]
    assert "--lease-namespace=hybridrec-system" in container["args"] and "--lease-duration=15" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HYBRIDREC_PROMETHEUS_URL"].startswith("http://")
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_serviceaccount_does_not_automount(helm: str) -> None:
    (sa,) = by_kind(objects(template(helm).stdout), "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_pdb_selects_the_operator_pods(helm: str) -> None:
    docs = objects(template(helm).stdout)
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    (dep,) = by_kind(docs, "Deployment")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] == 1


def _rules(doc_rules: list[dict]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb) so equal permissions compare equal however grouped."""
    return {(g, r, v) for rule in doc_rules for g in rule.get("apiGroups", []) for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def test_rbac_is_least_privilege_and_matches_the_operator_manifest(helm: str) -> None:
    docs = objects(template(helm).stdout)
    (role,) = by_kind(docs, "ClusterRole")
    flat = _rules(role["rules"])
    assert not any("*" in part for triple in flat for part in triple), "wildcards in the ClusterRole"
    assert not any(r in {"secrets", "clusterroles", "clusterrolebindings", "roles", "rolebindings"} for _, r, _ in flat)
    assert not any(v in {"escalate", "bind", "impersonate"} for *_, v in flat)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] != "cluster-admin"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hybridrec-operator", "namespace": "hybridrec-system"}]
    manifest = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac" / "operator.yaml").read_text()) if d and d["kind"] == "ClusterRole"]
    assert len(manifest) == 1
    assert flat == _rules(manifest[0]["rules"])


def test_leader_election_rbac_is_namespaced_and_matches_the_operator_manifest(helm: str) -> None:
    docs = objects(template(helm).stdout)
    (role,) = by_kind(docs, "Role")
    (binding,) = by_kind(docs, "RoleBinding")
    # Leases in the operator's own namespace, and nothing else: read, create once, renew.
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "hybridrec-system"
    assert _rules(role["rules"]) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hybridrec-operator", "namespace": "hybridrec-system"}]
    manifest = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac" / "operator.yaml").read_text()) if d and d["kind"] == "Role"]
    assert len(manifest) == 1 and _rules(role["rules"]) == _rules(manifest[0]["rules"])
    # Without leader election the replicas need no Lease, and every one acts.
    off = objects(template(helm, "--set", "leaderElection.enabled=false").stdout)
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding")
    (dep,) = by_kind(off, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-leader-election" in args and not any(a.startswith("--lease") for a in args)


def test_crds_are_byte_identical_copies(helm: str) -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "manifests" / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "manifests/crds is empty: run `make crds`"
    assert chart == source  # leader election rests on Leases, a built-in kind: no third-party CRD ships any more


def test_admission_policy_is_the_manifest_one(helm: str) -> None:
    docs = objects(template(helm).stdout)
    def key(doc: dict) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    rendered = by_kind(docs, "ValidatingAdmissionPolicy") + by_kind(docs, "ValidatingAdmissionPolicyBinding")
    source = objects((ROOT / "manifests" / "policy" / "sensitive-placement.yaml").read_text())
    assert len(source) == 8
    assert sorted(rendered, key=key) == sorted(source, key=key)
    off = objects(template(helm, "--set", "admissionPolicy.enabled=false").stdout)
    assert not by_kind(off, "ValidatingAdmissionPolicy")


def test_sample_pools_are_opt_in_and_match_the_samples(helm: str) -> None:
    docs = by_kind(objects(template(helm, "--set", "samples.computePools.enabled=true").stdout), "ComputePool")
    source = objects((ROOT / "manifests" / "samples" / "pools.yaml").read_text())
    assert [(d["metadata"]["name"], d["spec"]) for d in docs] == [(d["metadata"]["name"], d["spec"]) for d in source]
    assert len(docs) == 4


def test_dashboards_ship_as_labelled_configmaps(helm: str) -> None:
    maps = by_kind(objects(template(helm, "--set", "dashboards.namespace=monitoring").stdout), "ConfigMap")
    assert len(maps) == 3
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "monitoring"
        ((key, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / key.removeprefix("hybridrec-")).read_text())


# ------------------------------------------------------------------------------------------------- bad values

BAD_VALUES = [
    (["--set", "replicaCount=0"], "replicaCount"),
    (["--set", "replicaCount=two"], "replicaCount"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "serviceMonitor.enabled=maybe"], "serviceMonitor/enabled"),
    (["--set", "prometheusRule.enabled=yes"], "prometheusRule/enabled"),
    (["--set", "operator.metricsPort=80"], "metricsPort"),
    (["--set", "operator.prometheusUrl=prometheus:9090"], "prometheusUrl"),
    (["--set", "operator.logLevel=trace"], "logLevel"),
    (["--set", "resources.requests.memory=lots"], "memory"),
    (["--set", "serviceMonitor.interval=30 seconds"], "interval"),
    (["--set", "leaderElection.leaseName=Hybrid_Rec"], "leaderElection/leaseName"),
    (["--set", "leaderElection.leaseDurationSeconds=1"], "leaderElection/leaseDurationSeconds"),
    (["--set", "unknownKey=1"], "unknownKey"),
    (["--set", "podDisruptionBudget.minAvailable=2"], "podDisruptionBudget.minAvailable"),
    (["--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"], "metrics.service.enabled"),
    (["--set", "serviceAccount.create=false"], "serviceAccount.name"),
]


@pytest.mark.parametrize(("args", "named"), BAD_VALUES, ids=[a[-1] for a, _ in BAD_VALUES])
def test_bad_values_are_refused_naming_the_value(helm: str, args: list[str], named: str) -> None:
    proc = template(helm, *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert named in proc.stderr, proc.stderr


def test_lint_refuses_bad_values_too(helm: str) -> None:
    proc = run([helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicaCount=0"], check=False)
    assert proc.returncode != 0 and "replicaCount" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- documentation

def _leaf_keys_without_comment(text: str) -> list[str]:
    """Leaf keys of values.yaml (``key: value``) whose preceding line is not a comment."""
    lines = text.splitlines()
    missing = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w]*):\s*(\S.*)?$", line)
        if not match or match.group(3) is None:
            continue  # a parent mapping: its children carry the comments
        previous = next((p for p in reversed(lines[:index]) if p.strip()), "")
        if not previous.strip().startswith("#"):
            missing.append(match.group(2))
    return missing


def test_every_value_has_a_comment() -> None:
    text = (CHART / "values.yaml").read_text()
    assert _leaf_keys_without_comment(text) == []
    assert _leaf_keys_without_comment("a: 1\n# -- fine\nb: 2\n") == ["a"]


def test_schema_closes_every_object_and_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict, value: object, path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '/'} allows unknown keys"
            assert isinstance(value, dict)
            for key, child in value.items():
                assert key in node["properties"], f"{path}/{key} is not in values.schema.json"
                walk(node["properties"][key], child, f"{path}/{key}")

    walk(schema, values, "")


def test_every_helper_has_a_comment() -> None:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    defines = re.findall(r"\{\{-? define \"([^\"]+)\"", text)
    assert len(defines) >= 6
    for name in defines:
        before = re.split(r"\{\{-? define \"" + re.escape(name) + '"', text)[0].rstrip()
        assert before.endswith("*/}}") and f"{name}:" in before.rsplit("{{/*", 1)[-1], f"helper {name} has no comment"
