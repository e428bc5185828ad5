"""seed_from_api: the replicas that run now, read from the API server at startup, within the namespaces served."""

from __future__ import annotations

from typing import Any

from hybridrec_operator.controller.cost_controller import seed_from_api


class RecordingKube:
    """Answers list calls from a fixed set of Deployments, filtered by the path's namespace, and records the paths."""

    def __init__(self, deployments: list[dict[str, Any]]) -> None:
        self.deployments = deployments
        self.paths: list[str] = []

    def request(self, method: str, path: str, query: dict[str, str] | None = None, **_: Any) -> dict[str, Any]:
        assert method == "GET" and query == {"labelSelector": "app.kubernetes.io/managed-by=hybridrec"}
        self.paths.append(path)
        parts = path.split("/")
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts else None
        return {"items": [d for d in self.deployments if namespace in (None, d["metadata"]["namespace"])]}


def deployment(namespace: str, model: str, pool: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"{model}-{pool}",
                         "labels": {"hybridrec.io/model": model, "hybridrec.io/pool": pool}},
            "spec": {"replicas": replicas}}


DEPLOYMENTS = [deployment("shop", "recs", "onprem-t4", 2), deployment("shop", "recs", "aws-spot-l4", 1),
               deployment("other", "ads", "onprem-t4", 3), deployment("shop", "idle", "onprem-t4", 0)]


def test_cluster_wide_lists_once_and_keeps_running_replicas() -> None:
    kube = RecordingKube(DEPLOYMENTS)
    assert seed_from_api(kube) == {"shop/recs": {"onprem-t4": 2, "aws-spot-l4": 1}, "other/ads": {"onprem-t4": 3}}
    assert kube.paths == ["/apis/apps/v1/deployments"]


def test_a_namespaced_install_lists_only_its_namespaces() -> None:
    kube = RecordingKube(DEPLOYMENTS)
    assert seed_from_api(kube, ["shop"]) == {"shop/recs": {"onprem-t4": 2, "aws-spot-l4": 1}}
    assert kube.paths == ["/apis/apps/v1/namespaces/shop/deployments"]
