"""Remote clusters as pools on the real local control plane: two kwok nodes carry Liqo's virtual-node labels and taint
(one for a public cloud cluster, one for a private data centre); the sample pools of manifests/samples/remote-pools.yaml
select them. The real scheduler places a public model's pods on the public virtual node (the rendered toleration), a
confidential model's pods on the private one only, the API server refuses pools that select virtual nodes without
declaring their cluster, and a virtual node that goes NotReady is named in the pool's condition and an event while the
the other remote pool's pods stay where they are.

The nodes are this module's own: it deletes them afterwards (the pools and namespaces are restored by the
isolation fixture in tests/integration/conftest.py too).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridrec_local.localcluster import LocalCluster
from support.kube import SAMPLES, Kube, fresh_namespace, sample_docs
from support.operator import OperatorProcess
from support.stack import wait_for

pytestmark = pytest.mark.cluster

KWOK = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
LIQO_TAINT = {"key": "virtual-node.liqo.io/not-allowed", "value": "true", "effect": "NoExecute"}
NODES = {"liqo-aws-eu": ("aws-eu-west-1", "public"), "liqo-dc2-muc": ("dc2-muc", "private")}
FAST_ENV = {"HYBRIDREC_RESYNC_SECONDS": "15", "HYBRIDREC_PENDING_GRACE_SECONDS": "5", "HYBRIDREC_POOL_STATUS_DELAY": "0.3"}


def virtual_node(name: str, cluster_id: str, tenancy: str) -> dict[str, Any]:
    """A node as Liqo creates it for a peered cluster (labels and taint), plus the tenancy label the admin adds."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": dict(KWOK), "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok",
            "liqo.io/type": "virtual-node", "liqo.io/remote-cluster-id": cluster_id, "hybridrec.io/tenancy": tenancy}},
        "spec": {"taints": [LIQO_TAINT]},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"}},
    }



def model(namespace: str, name: str, sensitivity: str, pool: str) -> dict[str, Any]:
    doc = copy.deepcopy(next(d for d in sample_docs("models.yaml") if d.get("metadata", {}).get("name") == "trending"))
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["dataSensitivity"] = sensitivity
    doc["spec"]["replicas"] = 2
    doc["spec"]["placement"] = {"preferredPools": [pool]}
    doc["spec"].pop("budget", None)
    return doc


def pool_condition(kube: Kube, pool: str, type_: str = "RemoteClusterReady") -> dict[str, Any]:
    body = kube.get("computepools.hybridrec.io", pool) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


@pytest.fixture(scope="module")
def liqo(installed: Kube, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The two virtual nodes, the remote sample pools and an operator; all removed afterwards."""
    kube = installed
    kube.apply([virtual_node(n, *NODES[n]) for n in NODES])
    wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "True" for c in (kube.get("node", n) or {})
                             .get("status", {}).get("conditions", [])) for n in NODES), 60, "the virtual nodes Ready")
    kube("apply", "-f", str(SAMPLES / "remote-pools.yaml"))
    op = OperatorProcess(cluster, Path(tmp_path_factory.mktemp("liqo-operator")), "operator-liqo", ["--standalone"],
                         FAST_ENV)
    op.start()
    try:
        yield kube
    finally:
        op.stop()
        for name in NODES:  # a node taken from kwok (the NotReady test) gets it back, so its pods can terminate
            kube("annotate", "node", name, "kwok.x-k8s.io/node=fake", "--overwrite", check=False)
        kube("delete", "-f", str(SAMPLES / "remote-pools.yaml"), "--ignore-not-found", "--wait=true")
        kube("delete", "node", *NODES, "--ignore-not-found", "--wait=true")


@pytest.fixture
def namespace(liqo: Kube) -> Iterator[str]:
    with fresh_namespace(liqo, "liqo") as name:
        yield name


def test_the_api_server_refuses_a_pool_that_selects_virtual_nodes_without_declaring_them(installed: Kube) -> None:
    pool = copy.deepcopy(sample_docs("remote-pools.yaml")[0])
    pool["metadata"]["name"] = "liqo-undeclared"
    del pool["spec"]["remoteCluster"]
    refused = installed.apply([pool], check=False)
    assert refused.returncode != 0 and "must declare remoteCluster" in refused.stderr
    pool["spec"]["remoteCluster"] = {"clusterId": "aws-eu-west-1", "tenancy": "private"}
    refused = installed.apply([pool], check=False)
    assert refused.returncode != 0 and "remoteCluster.tenancy must equal tenancy" in refused.stderr


def test_remote_pools_place_by_tenancy_and_name_a_virtual_node_that_went_not_ready(liqo: Kube, namespace: str) -> None:
    kube = liqo
    for pool, node in (("liqo-aws-l4", "liqo-aws-eu"), ("liqo-dc2-a100", "liqo-dc2-muc")):
        wait_for(lambda p=pool: pool_condition(kube, p).get("status") == "True", 60, f"{pool} RemoteClusterReady")
        status = kube.get("computepools.hybridrec.io", pool)["status"]
        assert (status["readyNodes"], status["allocatableGpus"]) == (1, 4)
        assert node in pool_condition(kube, pool)["message"]

    kube.apply([model(namespace, "public-recs", "public", "liqo-aws-l4"),
                model(namespace, "private-recs", "confidential", "liqo-dc2-a100")])

    def running(name: str) -> list[dict[str, Any]] | None:
        pods = [p for p in kube.items("pods", namespace, f"hybridrec.io/model={name}")
                if not p["metadata"].get("deletionTimestamp")]
        ok = [p for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName")]
        return ok if len(ok) == 2 and len(pods) == 2 else None

    public = wait_for(lambda: running("public-recs"), 90, "the public model's 2 pods Running")
    assert {p["spec"]["nodeName"] for p in public} == {"liqo-aws-eu"}  # the scheduler honoured the toleration
    for pod in public:
        assert {"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"} in pod["spec"]["tolerations"]
    confidential = wait_for(lambda: running("private-recs"), 90, "the confidential model's 2 pods Running")
    assert {p["spec"]["nodeName"] for p in confidential} == {"liqo-dc2-muc"}
    rmd = kube.get("rmd", "private-recs", namespace)
    assert {p["pool"] for p in rmd["status"]["placements"] if p["desired"]} == {"liqo-dc2-a100"}
    assert all(p["tenancy"] == "private" for p in rmd["status"]["placements"])

    # The public cluster's peering goes down: kwok stops heartbeating the node and it reports NotReady.
    kube("annotate", "node", "liqo-aws-eu", "kwok.x-k8s.io/node-")
    kube("patch", "node", "liqo-aws-eu", "--subresource=status", "--type=strategic", "-p", json.dumps({"status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "RemoteClusterUnreachable",
                        "message": "liqo: the foreign cluster is unreachable"}]}}))
    cond = wait_for(lambda: (c := pool_condition(kube, "liqo-aws-l4")).get("reason") == "VirtualNodeNotReady" and c,
                    60, "liqo-aws-l4 RemoteClusterReady=False VirtualNodeNotReady")
    assert cond["status"] == "False" and "liqo-aws-eu" in cond["message"] and "aws-eu-west-1" in cond["message"]
    events = wait_for(lambda: [e for e in kube.items("events", "default")
                               if e.get("involvedObject", {}).get("name") == "liqo-aws-l4"
                               and e.get("reason") == "VirtualNodeNotReady"], 30, "the pool's VirtualNodeNotReady event")
    assert "liqo-aws-eu" in events[0]["message"] and events[0]["type"] == "Warning"
    # The model's replicas move to pools that can run them (the same as for any node gone NotReady); the
    # confidential model on the other remote cluster is not disturbed.
    moved = wait_for(lambda: (pods := running("public-recs")) and all(p["spec"]["nodeName"] != "liqo-aws-eu" for p in pods)
                     and pods, 90, "the public model's replicas running off the lost virtual node")
    assert all(kube.get("node", p["spec"]["nodeName"])["metadata"]["labels"].get("liqo.io/type") != "virtual-node"
               for p in moved)
    assert {p["metadata"]["uid"] for p in running("private-recs") or []} == {p["metadata"]["uid"] for p in confidential}
    # The peering comes back: the condition recovers (and says so in a Normal event).
    kube("annotate", "node", "liqo-aws-eu", "kwok.x-k8s.io/node=fake")
    wait_for(lambda: pool_condition(kube, "liqo-aws-l4").get("status") == "True", 90, "liqo-aws-l4 RemoteClusterReady again")
