"""Remote clusters as pools (Liqo virtual nodes): validation, the rendered toleration, the sensitivity rule, capacity
and the RemoteClusterReady condition, on the samples in manifests/samples/remote-pools.yaml."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from hybridrec_operator.api.models import (
    ComputePool,
    ComputePoolSpec,
    RecModelDeployment,
    Sensitivity,
    Toleration,
    parse_pool,
    parse_rmd,
)
from hybridrec_operator.core.conditions import condition_news
from hybridrec_operator.core import capacity, remote
from hybridrec_operator.core.placement import PoolView, plan_placement
from hybridrec_operator.core.render import build_deployment
from hybridrec_operator.core.sensitivity import pool_admits

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIQO_TOLERATION = {"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "manifests" / "samples" / name).read_text()) if d]


def remote_pools() -> dict[str, ComputePool]:
    return {p.name: p for p in map(parse_pool, docs("remote-pools.yaml"))}


def sample_pools() -> dict[str, ComputePool]:
    return {p.name: p for p in map(parse_pool, docs("pools.yaml"))}


def models() -> dict[str, RecModelDeployment]:
    return {m.name: m for m in map(parse_rmd, (d for d in docs("models.yaml") if d.get("kind") == "RecModelDeployment"))}


def virtual_node(name: str, cluster: str, tenancy: str | None, *, ready: bool = True, gpus: int = 4) -> dict[str, Any]:
    labels = {"liqo.io/type": "virtual-node", "liqo.io/remote-cluster-id": cluster}
    if tenancy is not None:
        labels["hybridrec.io/tenancy"] = tenancy
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"taints": [{"key": "virtual-node.liqo.io/not-allowed", "value": "true", "effect": "NoExecute"}]},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


BASE = {"tenancy": "public", "provider": "aws", "pricing": {"pricePerGpuHour": 1}, "maxGpus": 4,
        "allowedSensitivity": ["public"]}


@pytest.mark.parametrize(("extra", "message"), [
    ({"nodeSelector": {"liqo.io/type": "virtual-node"}}, "must declare remoteCluster"),
    ({"nodeSelector": {"liqo.io/remote-cluster-id": "aws"}}, "must declare remoteCluster"),
    ({"nodeSelector": {"liqo.io/remote-cluster-id": "aws"}, "remoteCluster": {"clusterId": "aws", "tenancy": "private"}},
     "remoteCluster.tenancy must equal tenancy"),
    ({"nodeSelector": {"liqo.io/remote-cluster-id": "gcp"}, "remoteCluster": {"clusterId": "aws", "tenancy": "public"}},
     "liqo.io/remote-cluster-id equal to remoteCluster.clusterId"),
    ({"nodeSelector": {"pool": "x"}, "remoteCluster": {"clusterId": "aws", "tenancy": "public"}},
     "liqo.io/remote-cluster-id equal to remoteCluster.clusterId"),
])
def test_a_pool_that_selects_virtual_nodes_declares_its_remote_cluster(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ComputePoolSpec.model_validate({**BASE, **extra})


def test_samples_parse_and_a_public_remote_cluster_never_admits_sensitive_data() -> None:
    pools = remote_pools()
    assert set(pools) == {"liqo-aws-l4", "liqo-dc2-a100"}
    aws = pools["liqo-aws-l4"].spec
    for sensitivity in (Sensitivity.CONFIDENTIAL, Sensitivity.RESTRICTED):
        assert not pool_admits(sensitivity, aws, allow_public_burst=True)[0]
    assert pool_admits(Sensitivity.CONFIDENTIAL, pools["liqo-dc2-a100"].spec, allow_public_burst=False)[0]
    # Defence in depth: a private pool whose remote cluster is declared public (an input the CRD refuses) is public.
    liar = pools["liqo-dc2-a100"].spec.model_copy(update={
        "remote_cluster": pools["liqo-dc2-a100"].spec.remote_cluster.model_copy(update={"tenancy": "public"})})
    assert pool_admits(Sensitivity.CONFIDENTIAL, liar, allow_public_burst=False) == \
        (False, "confidential data never runs on a public pool")


def test_remote_pods_tolerate_the_virtual_node_and_others_do_not() -> None:
    trending, account = models()["trending"], models()["account-recs"]
    pools = remote_pools()
    pod = build_deployment(trending, pools["liqo-aws-l4"], 2)["spec"]["template"]["spec"]
    assert pod["tolerations"] == [LIQO_TOLERATION]
    assert pod["nodeSelector"] == {"liqo.io/type": "virtual-node", "liqo.io/remote-cluster-id": "aws-eu-west-1"}
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["public"]}]}]
    # A sensitive model on the private remote cluster: the toleration, and the private-only affinity.
    dc2 = pools["liqo-dc2-a100"].model_copy(deep=True)
    dc2.spec.allowed_sensitivity.append(Sensitivity.RESTRICTED)
    pod = build_deployment(account, dc2, 1)["spec"]["template"]["spec"]
    assert LIQO_TOLERATION in pod["tolerations"]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"] == [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]
    with pytest.raises(ValueError, match="cannot run on public pool"):
        build_deployment(account, pools["liqo-aws-l4"], 1)
    # Pools that are not remote never tolerate a virtual node.
    for pool in sample_pools().values():
        tolerations = build_deployment(trending, pool, 1)["spec"]["template"]["spec"].get("tolerations", [])
        assert all(t.get("key") != LIQO_TOLERATION["key"] for t in tolerations)


def test_a_pool_that_already_tolerates_everything_gets_no_second_toleration() -> None:
    pool = remote_pools()["liqo-aws-l4"].model_copy(deep=True)
    pool.spec.tolerations = [Toleration(operator="Exists")]
    pod = build_deployment(models()["trending"], pool, 1)["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_capacity_counts_only_declared_labelled_ready_virtual_nodes() -> None:
    aws = remote_pools()["liqo-aws-l4"]
    nodes = [virtual_node("liqo-aws", "aws-eu-west-1", "public"),
             virtual_node("liqo-aws-unlabelled", "aws-eu-west-1", None),
             virtual_node("liqo-aws-down", "aws-eu-west-1", "public", ready=False)]
    usage = capacity.pool_usage([aws], nodes, [])["liqo-aws-l4"]
    assert (usage.nodes, usage.ready_nodes, usage.allocatable_gpus) == (3, 1, 4)
    # An ordinary pool whose selector happens to match a virtual node gets no room there (its pods would not
    # tolerate the taint), and the condition names the node.
    loose = parse_pool({"metadata": {"name": "loose"}, "spec": {**BASE, "nodeSelector": {}}})
    assert capacity.pool_usage([loose], nodes[:1], [])["loose"].ready_nodes == 0
    found = remote.findings(loose, nodes[:1])
    assert remote.remote_condition(loose, found)[:2] == (False, "VirtualNodesUndeclared")
    assert "liqo-aws" in remote.remote_condition(loose, found)[2]


def test_a_public_remote_pool_is_never_planned_for_a_sensitive_model() -> None:
    pools = {**sample_pools(), **remote_pools()}
    views = [PoolView(name=p.name, spec=p.spec, free_gpus=8) for p in pools.values()]
    account = models()["account-recs"]
    plan = plan_placement(account.spec, views, 6)
    assert "liqo-aws-l4" not in {a.pool for a in plan.assignments if a.replicas}
    assert all(pools[a.pool].spec.tenancy.value == "private" for a in plan.assignments if a.replicas)


@pytest.mark.parametrize(("nodes", "expected"), [
    ([virtual_node("liqo-aws", "aws-eu-west-1", "public")], (True, "VirtualNodesReady")),
    ([virtual_node("liqo-aws", "aws-eu-west-1", "public", ready=False)], (False, "VirtualNodeNotReady")),
    ([virtual_node("liqo-aws", "aws-eu-west-1", None)], (False, "VirtualNodeUnlabelled")),
    ([], (False, "NoVirtualNode")),
])
def test_remote_cluster_ready_names_the_node(nodes: list[dict[str, Any]], expected: tuple[bool, str]) -> None:
    aws = remote_pools()["liqo-aws-l4"]
    status, reason, message = remote.remote_condition(aws, remote.findings(aws, nodes))
    assert (status, reason) == expected
    assert "aws-eu-west-1" in message
    if nodes:
        assert "liqo-aws" in message
    conds = remote.set_remote_condition(aws, remote.findings(aws, nodes), [], 3, NOW)
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("RemoteClusterReady", "True" if status else "False", reason)]


def test_conflicting_declarations_of_one_cluster_are_named() -> None:
    aws = remote_pools()["liqo-aws-l4"]
    other = parse_pool({"metadata": {"name": "liqo-aws-private"}, "spec": {
        **BASE, "tenancy": "private", "allowedSensitivity": ["confidential"],
        "nodeSelector": {"liqo.io/remote-cluster-id": "aws-eu-west-1"},
        "remoteCluster": {"clusterId": "aws-eu-west-1", "tenancy": "private"}}})
    nodes = [virtual_node("liqo-aws", "aws-eu-west-1", "public")]
    status, reason, message = remote.remote_condition(aws, remote.findings(aws, nodes, [aws, other]))
    assert (status, reason) == (False, "RemoteTenancyConflict") and "liqo-aws-private" in message


def test_ordinary_pools_have_no_remote_condition_and_lose_a_stale_one() -> None:
    pool = sample_pools()["onprem-a100"]
    found = remote.findings(pool, [])
    assert remote.remote_condition(pool, found) is None
    stale = [{"type": "RemoteClusterReady", "status": "False", "reason": "NoVirtualNode"}, {"type": "Ready", "status": "True"}]
    assert remote.set_remote_condition(pool, found, stale, 1, NOW) == [{"type": "Ready", "status": "True"}]


def test_events_only_when_the_remote_condition_changes() -> None:
    aws = remote_pools()["liqo-aws-l4"]
    up = remote.set_remote_condition(aws, remote.findings(aws, [virtual_node("v", "aws-eu-west-1", "public")]), [], 1, NOW)
    down = remote.set_remote_condition(
        aws, remote.findings(aws, [virtual_node("v", "aws-eu-west-1", "public", ready=False)]), up, 1, NOW)
    assert condition_news([], up, "RemoteClusterReady") is None  # healthy from the start: nothing to tell
    assert condition_news(up, up, "RemoteClusterReady") is None
    news = condition_news(up, down, "RemoteClusterReady")
    assert news is not None and news[:2] == ("Warning", "VirtualNodeNotReady") and "v of remote cluster" in news[2]
    assert condition_news(down, down, "RemoteClusterReady") is None
    assert condition_news(down, up, "RemoteClusterReady")[:2] == ("Normal", "VirtualNodesReady")  # type: ignore[index]
