"""rbac.scope: the cluster-wide install and the namespaced one, rendered by the real helm (issue 9 item 7)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_helpers import ROOT, by_kind, objects, template

NAMESPACED = ["--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={team-a,team-b}"]
CHILDREN = {"deployments", "services", "poddisruptionbudgets", "networkpolicies", "resourceclaimtemplates"}
# DeviceClasses and ResourceSlices (read): the devices of DRA pools (gpu.dra), cluster-scoped objects.
CLUSTER_SCOPED = {"computepools", "computepools/status", "nodes", "customresourcedefinitions", "deviceclasses",
                  "resourceslices"}


def _rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
            for v in rule.get("verbs", [])}


def _manifest(kind: str, name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac" / "operator-namespaced.yaml").read_text()) if d]
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _args(docs: list[dict[str, Any]]) -> list[str]:
    (dep,) = by_kind(docs, "Deployment")
    return dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_cluster_scope_is_the_default_and_grants_network_policies(helm: str) -> None:
    docs = objects(template(helm).stdout)
    (role,) = by_kind(docs, "ClusterRole")
    flat = _rules(role["rules"])
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert ("networking.k8s.io", "networkpolicies", verb) in flat
    assert "--all-namespaces" in _args(docs) and not any(a.startswith("--namespace") for a in _args(docs))


def test_namespaced_scope_grants_children_only_in_the_served_namespaces(helm: str) -> None:
    docs = objects(template(helm, *NAMESPACED).stdout)
    args = _args(docs)
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]

    # Cluster-wide: nothing namespaced, nothing that writes except pool status.
    (cluster_role,) = by_kind(docs, "ClusterRole")
    cluster = _rules(cluster_role["rules"])
    assert {r for _, r, _ in cluster} == CLUSTER_SCOPED
    assert {(r, v) for _, r, v in cluster if v not in {"get", "list", "watch"}} == {("computepools/status", "patch")}
    assert cluster == _rules(_manifest("ClusterRole", "hybridrec-operator-cluster")["rules"])
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]

    # Per namespace: the children, pods and events, the same rules as the manifest's Role.
    models = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-operator-models")]
    assert sorted(r["metadata"]["namespace"] for r in models) == ["team-a", "team-b"]
    expected = _rules(_manifest("Role", "hybridrec-operator-models")["rules"])
    for role in models:
        flat = _rules(role["rules"])
        assert flat == expected
        assert CHILDREN <= {r for _, r, _ in flat}
        assert not any("*" in part for triple in flat for part in triple)
        assert not {r for _, r, _ in flat} & {"secrets", "roles", "rolebindings", "serviceaccounts"}
    bindings = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(docs, "RoleBinding")}
    assert {("team-a", models[0]["metadata"]["name"]), ("team-b", models[0]["metadata"]["name"])} <= bindings
    for b in by_kind(docs, "RoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "hybridrec-operator", "namespace": "hybridrec-system"}]

    # Pool events in default (create only) and the Lease in the release namespace; no other Role anywhere.
    others = {(r["metadata"]["namespace"], r["metadata"]["name"]): _rules(r["rules"])
              for r in by_kind(docs, "Role") if r not in models}
    assert others == {
        ("default", "hybridrec-operator-pool-events"): {("", "events", "create")},
        ("hybridrec-system", "hybridrec-operator-leader-election"):
            {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")},
    }


@pytest.mark.parametrize("args, named", [
    (["--set", "rbac.scope=namespaced"], "namespaces"),
    (["--set", "rbac.scope=everything"], "scope"),
    (["--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={Team_A}"], "namespaces"),
])
def test_bad_scopes_are_refused(helm: str, args: list[str], named: str) -> None:
    proc = template(helm, *args, check=False)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
