"""Issue 9 item 7 (render side): a confidential/restricted model gets a NetworkPolicy admitting only the clients its
spec names, plus the metrics scrape from the monitoring namespace; public/internal models get none."""

from __future__ import annotations

from typing import Any

import pytest

from hybridrec_operator.api.models import RecModelDeployment
from hybridrec_operator.core.placement import PlacementPlan
from hybridrec_operator.core.render import build_children, build_network_policy, model_selector


def rmd(sensitivity: str, clients: list[dict[str, Any]] | None = None, port: int = 8080) -> RecModelDeployment:
    serving: dict[str, Any] = {"port": port}
    if clients is not None:
        serving["allowedClients"] = clients
    return RecModelDeployment.model_validate({
        "metadata": {"name": "account-recs", "namespace": "shop"},
        "spec": {"model": {"uri": "s3://hybridrec-models/m/", "architecture": "two-tower"}, "dataSensitivity": sensitivity,
                 "serving": serving},
    })


@pytest.mark.parametrize("sensitivity", ["public", "internal"])
def test_no_policy_for_data_anyone_may_read(sensitivity: str) -> None:
    assert build_network_policy(rmd(sensitivity)) is None


@pytest.mark.parametrize("sensitivity", ["confidential", "restricted"])
def test_named_clients_and_the_scrape_only(sensitivity: str) -> None:
    clients = [
        {"namespaceSelector": {"matchLabels": {"team": "checkout"}}, "podSelector": {"matchLabels": {"app": "web"}}},
        {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["ranker"]}]}},
    ]
    model = rmd(sensitivity, clients, port=9000)
    policy = build_network_policy(model, {"kubernetes.io/metadata.name": "observability"})
    assert policy is not None
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "account-recs" and policy["metadata"]["namespace"] == "shop"
    assert policy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hybridrec"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": model_selector(model)}
    assert spec["policyTypes"] == ["Ingress"]  # ingress denied unless a rule admits it
    callers, scrape = spec["ingress"]
    assert callers["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "checkout"}}, "podSelector": {"matchLabels": {"app": "web"}}},
        {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["ranker"]}]}},
    ]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
    for rule in spec["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_unset_clients_means_the_models_own_namespace() -> None:
    policy = build_network_policy(rmd("restricted"))
    assert policy is not None
    callers, scrape = policy["spec"]["ingress"]
    assert callers["from"] == [{"podSelector": {}}]  # no namespaceSelector: same namespace only
    assert scrape["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def test_empty_client_list_admits_only_the_scrape() -> None:
    policy = build_network_policy(rmd("confidential", []))
    assert policy is not None
    [scrape] = policy["spec"]["ingress"]
    assert "namespaceSelector" in scrape["from"][0]


def test_build_children_adds_it_only_when_asked() -> None:
    empty = PlacementPlan(assignments=(), wanted=0, placed=0, shortfall=0, budget_limited=False, excluded={}, problems=(),
                          summary="")
    kinds = [c["kind"] for c in build_children(rmd("restricted"), empty, {})]
    assert "NetworkPolicy" not in kinds
    kinds = [c["kind"] for c in build_children(rmd("restricted"), empty, {}, network_policy=True)]
    assert kinds == ["Service", "PodDisruptionBudget", "NetworkPolicy"]
    assert [c["kind"] for c in build_children(rmd("public"), empty, {}, network_policy=True)] == ["Service", "PodDisruptionBudget"]
