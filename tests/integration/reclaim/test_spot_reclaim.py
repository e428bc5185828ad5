"""Spot reclaims on the real control plane: replacement capacity starts on another allowed pool before the doomed
pods are gone, and a restricted model is never moved to a public pool by a reclaim.

Real etcd, kube-apiserver, scheduler and kwok nodes; the cost controller's round (``core/cost_round.plan_round``,
what ``controller/cost_controller.py`` runs every interval) reads the nodes, pods and Deployments as the API server
returns them. Prometheus is replaced by plain data (a steady demand, p95 within the SLO), as in the controller's
unit tests: the signal under test is the node's, not the metrics'. The test applies the round's per-pool targets
to the Deployments itself, as the operator's render would, and the real scheduler places the replacement.

Own pools and nodes (``rc-*``) so no other module's pools or operator see them:

* ``rc-spot``: public spot, 0.45/GPU-h, one node with 2 GPUs, where the internal ``burst-recs`` runs 2 replicas;
* ``rc-ondemand``: public on-demand, 1.10/GPU-h, one node with 4 free GPUs;
* ``rc-private``: private reserved, 0.90/GPU-h, one node with 1 GPU, where the restricted ``vault-recs`` runs.

Then the spot node is tainted ``karpenter.sh/disrupted:NoSchedule`` (Karpenter's interruption signal) and the
private node is deleted (held by a finalizer, as a drained node is until its pods leave): every pod is doomed, and
still there. The round must start ``burst-recs``' replacements on ``rc-ondemand`` (the spot node offers no room any
more) while the doomed pods are still counted and running, and must leave ``vault-recs`` short rather than move it
to a public pool, although ``rc-ondemand`` has room.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hybridrec_operator.api.models import ComputePool, Tenancy, parse_pool, parse_rmd
from hybridrec_operator.controller.observe import DataState, ModelObservation, Observation, PoolObservation, Reading
from hybridrec_operator.core import capacity
from hybridrec_operator.core.cost_round import plan_round
from hybridrec_operator.core.cost_types import ControllerConfig, ControllerState, RoundResult, build_snapshot
from hybridrec_operator.core.render import build_deployment
from hybridrec_operator.core.sensitivity import pool_admits
from support.cleanup import delete_namespace
from support.kube import Kube
from support.stack import wait_for

pytestmark = pytest.mark.cluster

NAMESPACE = "spot-reclaim"
FINALIZER = "hybridrec.io/test-hold"
CONFIG = ControllerConfig(prometheus_url="http://prometheus.invalid", interval_s=30, window_s=60, max_age_s=60)
T0 = 1_700_000_000.0
RPS_PER_REPLICA = 20.0


def pool(name: str, tenancy: str, price: float, capacity_type: str, startup: int, allowed: list[str]) -> ComputePool:
    return parse_pool({
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "ComputePool", "metadata": {"name": name},
        "spec": {"tenancy": tenancy, "provider": "onprem" if tenancy == "private" else "aws",
                 "nodeSelector": {"hybridrec.io/pool": name}, "gpu": {"model": "NVIDIA-L4"},
                 "pricing": {"pricePerGpuHour": price, "currency": "USD", "capacityType": capacity_type},
                 "maxGpus": 8, "allowedSensitivity": allowed, "startupSeconds": startup},
    })


POOLS = [
    pool("rc-spot", "public", 0.45, "spot", 90, ["public", "internal"]),
    pool("rc-ondemand", "public", 1.10, "on-demand", 120, ["public", "internal"]),
    pool("rc-private", "private", 0.90, "reserved", 60, ["public", "internal", "confidential", "restricted"]),
]
TENANCY = {p.name: p.spec.tenancy.value for p in POOLS}
NODES = {"rc-spot-0": ("rc-spot", 2), "rc-ondemand-0": ("rc-ondemand", 4), "rc-private-0": ("rc-private", 1)}


def node(name: str, pool_name: str, gpus: int) -> dict[str, Any]:
    """A fake GPU node kwok manages (Ready, pods bound to it Running), like hack/cluster/nodes.yaml."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "type": "kwok", "hybridrec.io/pool": pool_name,
                                "hybridrec.io/tenancy": TENANCY[pool_name]}},
        "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
    }


def rmd(name: str, sensitivity: str, *, burst: bool = False) -> dict[str, Any]:
    """A RecModelDeployment body, never created in the API (the shared operator would serve it): the round's input."""
    return {
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "model": {"uri": f"s3://models/{name}/", "architecture": "two-tower"},
            "dataSensitivity": sensitivity,
            "placement": {"allowPublicBurst": burst},
            "resources": {"gpus": 1},
            "slo": {"p95LatencyMs": 50},
            "scaling": {"minReplicas": 1, "maxReplicas": 6, "targetRpsPerReplica": RPS_PER_REPLICA,
                        "scaleDownStabilizationSeconds": 300},
        },
    }


BURST = rmd("burst-recs", "internal", burst=True)
VAULT = rmd("vault-recs", "restricted")


def deployment(model: str, pool_name: str, replicas: int) -> dict[str, Any]:
    """What the operator renders for one (model, pool): its own renderer, so the admission policies judge it as
    they judge the operator's (labels, tenancy affinity) when another module has installed them."""
    body = next(b for b in (BURST, VAULT) if b["metadata"]["name"] == model)
    return build_deployment(parse_rmd(body), next(p for p in POOLS if p.name == pool_name), replicas)


def steady(name: str, replicas: dict[str, int]) -> ModelObservation:
    """Prometheus replaced by data: 75% of the running replicas' capacity, p95 20 ms of a 50 ms SLO."""
    rps = 0.75 * RPS_PER_REPLICA * sum(replicas.values())
    pools = {p: PoolObservation(pool=p, expected=True, state=DataState.OK, request_rate=Reading.ok(rps / len(replicas)),
                                ready_servers=Reading.ok(n), targets=n, targets_up=n, sample_age_seconds=1.0)
             for p, n in replicas.items()}
    return ModelObservation(NAMESPACE, name, DataState.OK, "fresh", request_rate=Reading.ok(rps), p95_seconds=Reading.ok(0.02),
                            ready_servers=Reading.ok(sum(replicas.values())), pools=pools)


def pods_of(kube: Kube, model: str) -> list[dict[str, Any]]:
    return kube.items("pods", NAMESPACE, f"hybridrec.io/model={model}")


def running_on(kube: Kube, model: str) -> dict[str, int]:
    """Running pods of ``model`` per node."""
    out: dict[str, int] = {}
    for p in pods_of(kube, model):
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
            node_name = p["spec"].get("nodeName", "")
            out[node_name] = out.get(node_name, 0) + 1
    return out


def round_on_cluster(kube: Kube, state: ControllerState, now: float, demand_replicas: dict[str, dict[str, int]]
                     ) -> tuple[RoundResult, ControllerState, dict[str, dict[str, int]]]:
    """One controller round over what the API server holds now (what ``CostController.snapshot`` reads)."""
    nodes, pods = kube.items("nodes"), kube.items("pods", NAMESPACE)
    deployments = kube.items("deployments", NAMESPACE)
    usage = capacity.pool_usage(POOLS, nodes, pods)
    gpus = {name: u.used_gpus + u.free_gpus for name, u in usage.items()}
    snapshot = build_snapshot([BURST, VAULT], POOLS, deployments, gpus, nodes, pods)
    observation = Observation(time=now, models={(NAMESPACE, m): steady(m, r) for m, r in demand_replicas.items()})
    result, state = plan_round(snapshot, observation, state, now, CONFIG)
    targets = {key.split("/", 1)[1]: {p: n for p, n in out.targets.items() if n} for key, out in result.outcomes.items()}
    return result, state, targets


def apply_targets(kube: Kube, targets: dict[str, dict[str, int]]) -> None:
    """Scale the Deployments to the round's targets, as the operator's render would."""
    kube.apply([deployment(model, p, n) for model, per_pool in targets.items() for p, n in per_pool.items()])


def assert_restricted_stays_private(targets: dict[str, dict[str, int]]) -> None:
    spec = parse_rmd(VAULT).spec
    by_name = {p.name: p for p in POOLS}
    for p, n in targets.get("vault-recs", {}).items():
        assert n == 0 or (by_name[p].spec.tenancy == Tenancy.PRIVATE and pool_admits(spec.data_sensitivity, by_name[p].spec, allow_public_burst=False)[0]), (
            f"restricted vault-recs targeted at {n} on {p}")


@pytest.fixture
def reclaim_cluster(kube: Kube) -> Iterator[Kube]:
    kube("create", "namespace", NAMESPACE)
    kube.apply([node(n, p, g) for n, (p, g) in NODES.items()])
    try:
        wait_for(lambda: all(capacity.node_ready(n) for n in kube.items("nodes") if n["metadata"]["name"] in NODES)
                 and len([n for n in kube.items("nodes") if n["metadata"]["name"] in NODES]) == len(NODES),
                 60, "the rc-* kwok nodes to be Ready")
        yield kube
    finally:
        # Pods first, at once (their nodes are fake and some are going): the namespace then goes in seconds.
        kube("delete", "deployments", "--all", "-n", NAMESPACE, "--wait=false", check=False)
        kube("delete", "pods", "--all", "-n", NAMESPACE, "--grace-period=0", "--force", check=False)
        delete_namespace(kube.cluster.kubectl, NAMESPACE, timeout=60)
        for name in NODES:
            kube("patch", "node", name, "--type=json", "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
                 check=False)
        kube("delete", "node", *NODES, "--wait=true", "--timeout=60s", "--ignore-not-found", check=False)


def test_a_reclaim_starts_replacements_elsewhere_before_the_pods_die_and_never_moves_restricted_data_public(
        reclaim_cluster: Kube) -> None:
    kube = reclaim_cluster
    running = {"burst-recs": {"rc-spot": 2}, "vault-recs": {"rc-private": 1}}
    apply_targets(kube, running)
    wait_for(lambda: running_on(kube, "burst-recs") == {"rc-spot-0": 2} and running_on(kube, "vault-recs") == {"rc-private-0": 1},
             60, "burst-recs on rc-spot-0 and vault-recs on rc-private-0")

    # Steady: the round keeps what runs (75% load, nothing doomed).
    result, state, targets = round_on_cluster(kube, ControllerState(), T0, running)
    assert targets == running, result.outcomes
    assert_restricted_stays_private(targets)

    # The reclaim signals, on real node objects: Karpenter's taint on the spot node, a deletion held by a finalizer
    # on the private one. Every pod is doomed; none is gone.
    kube("taint", "node", "rc-spot-0", "karpenter.sh/disrupted=:NoSchedule")
    kube("patch", "node", "rc-private-0", "--type=merge", "-p", json.dumps({"metadata": {"finalizers": [FINALIZER]}}))
    kube("delete", "node", "rc-private-0", "--wait=false")
    wait_for(lambda: (kube.get("node", "rc-private-0") or {}).get("metadata", {}).get("deletionTimestamp"), 30,
             "rc-private-0 to be deleting")

    result, state, targets = round_on_cluster(kube, state, T0 + CONFIG.interval_s, running)
    burst = targets["burst-recs"]
    # The doomed spot pods stay counted until they die (lowering the Deployment would let the ReplicaSet remove a
    # healthy pod); the replacements start now, on the one allowed pool with room.
    assert burst.get("rc-spot") == 2, result.outcomes
    assert burst.get("rc-ondemand", 0) >= 2, result.outcomes
    assert "replacing 2 on rc-spot" in result.outcomes[f"{NAMESPACE}/burst-recs"].message
    # Restricted data waits for private room rather than moving to the public pool that has it.
    assert_restricted_stays_private(targets)
    assert targets["vault-recs"] == {"rc-private": 1}, result.outcomes
    assert result.outcomes[f"{NAMESPACE}/vault-recs"].shortfall >= 1, result.outcomes

    # Replacement capacity is running before the doomed pods are gone: the scheduler places it on rc-ondemand-0
    # while both spot pods and the private pod are still there and Running.
    apply_targets(kube, targets)
    wait_for(lambda: running_on(kube, "burst-recs").get("rc-ondemand-0", 0) >= 2, 60, "the replacements on rc-ondemand-0")
    assert running_on(kube, "burst-recs").get("rc-spot-0") == 2
    assert running_on(kube, "vault-recs") == {"rc-private-0": 1}
    assert all(p["spec"].get("nodeName") != "rc-ondemand-0" for p in pods_of(kube, "vault-recs"))

    # A later round, still under the reclaim, neither drops the replacements nor moves restricted data.
    result, state, targets = round_on_cluster(kube, state, T0 + 2 * CONFIG.interval_s, running)
    assert targets["burst-recs"].get("rc-ondemand", 0) >= 2, result.outcomes
    assert_restricted_stays_private(targets)
