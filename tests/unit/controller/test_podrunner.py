"""The pod runner's pure parts (podtargets.py): which pods get a server, with what environment, and what gets published."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from hybridrec_local.podtargets import (
    PodTarget,
    ServerProcess,
    container_env,
    map_model_uri,
    parse_dir_map,
    pod_target,
    server_env,
    servers_document,
    targets_document,
)

KWOK = {"onprem-t4-0", "aws-spot-l4-0"}


def pod(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {
            "uid": "u1", "namespace": "shop", "name": "recs-onprem-t4-abc",
            "labels": {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/model": "recs", "hybridrec.io/pool": "onprem-t4",
                       "hybridrec.io/tenancy": "private", "hybridrec.io/sensitivity": "restricted"},
        },
        "spec": {"nodeName": "onprem-t4-0", "containers": [
            {"name": "sidecar", "env": [{"name": "OTHER", "value": "x"}]},
            {"name": "server", "env": [
                {"name": "HYBRIDREC_MODEL_URI", "value": "s3://models/recs/v1/"},
                {"name": "HYBRIDREC_POOL", "value": "onprem-t4"},
                {"name": "HYBRIDREC_PORT", "value": "8080"},
                {"name": "HYBRIDREC_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "HYBRIDREC_MODEL_CACHE_DIR", "value": "/var/cache/hybridrec"},
                {"name": "SECRET_THING", "value": "not passed"},
            ]},
        ]},
        "status": {"phase": "Running"},
    }
    for path, value in over.items():
        section, key = path.split("__")
        if value is None:
            base[section].pop(key, None)
        else:
            base[section][key] = value
    return base


def test_running_managed_pod_on_kwok_node_gets_a_server() -> None:
    t = pod_target(pod(), KWOK)
    assert t is not None
    assert (t.namespace, t.model, t.pool, t.tenancy, t.sensitivity) == ("shop", "recs", "onprem-t4", "private", "restricted")
    assert t.env["HYBRIDREC_NAMESPACE"] == "shop"  # downward API resolved
    assert "SECRET_THING" not in t.env


@pytest.mark.parametrize(
    "over",
    [
        {"status__phase": "Pending"},
        {"spec__nodeName": "real-node"},
        {"spec__nodeName": None},
        {"metadata__deletionTimestamp": "2024-01-01T00:00:00Z"},
        {"metadata__labels": {"app.kubernetes.io/managed-by": "someone-else"}},
        {"spec__containers": [{"name": "server", "env": [{"name": "HYBRIDREC_POOL", "value": "x"}]}]},
    ],
)
def test_other_pods_get_none(over: dict[str, Any]) -> None:
    assert pod_target(pod(**over), KWOK) is None


def test_container_env_picks_the_model_server_container() -> None:
    env = container_env(pod())
    assert env is not None and env["HYBRIDREC_MODEL_URI"] == "s3://models/recs/v1/"


def target() -> PodTarget:
    t = pod_target(pod(), KWOK)
    assert t is not None
    return t


def test_server_env_binds_loopback_on_its_own_port_and_passes_s3_settings() -> None:
    base = {"AWS_ACCESS_KEY_ID": "testing", "PATH": "/usr/bin", "KUBECONFIG": "/secret/kubeconfig", "HYBRIDREC_PORT": "1"}
    env = server_env(target(), 41234, base, cache_dir="/tmp/c/u1", dir_map={}, s3_endpoint="http://127.0.0.1:5000",
                     torch_threads=1, shutdown_timeout_s=3)
    assert env["HYBRIDREC_HOST"] == "127.0.0.1" and env["HYBRIDREC_PORT"] == "41234"
    assert env["HYBRIDREC_MODEL_CACHE_DIR"] == "/tmp/c/u1"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000" and env["AWS_ACCESS_KEY_ID"] == "testing"
    assert "KUBECONFIG" not in env  # the runner's cluster credentials never reach a model server
    assert env["HYBRIDREC_MODEL_NAME"] == "recs" and env["HYBRIDREC_NAMESPACE"] == "shop"
    assert env["HYBRIDREC_TORCH_THREADS"] == "1"


def test_model_dir_map_serves_an_s3_prefix_from_a_local_directory(tmp_path: Any) -> None:
    dir_map = parse_dir_map([f"s3://models/recs={tmp_path}"])
    assert map_model_uri("s3://models/recs/v1/", dir_map) == f"file://{tmp_path}/v1"
    assert map_model_uri("s3://models/recs/", dir_map) == f"file://{tmp_path}"
    assert map_model_uri("s3://models/other/", dir_map) == "s3://models/other/"
    with pytest.raises(ValueError):
        parse_dir_map(["no-equals-sign"])


def fake_server(port: int, *, ready: bool, stopping: bool = False) -> ServerProcess:
    proc = subprocess.Popen(["true"])
    proc.wait()
    s = ServerProcess(target=target(), port=port, proc=proc, started=0.0, cache_dir="/tmp/x", ready=ready)
    if stopping:
        s.stopping_since = 1.0
    return s


def test_published_documents() -> None:
    servers = [fake_server(1001, ready=True), fake_server(1002, ready=False), fake_server(1003, ready=True, stopping=True)]
    groups = targets_document(servers)
    assert [g["targets"] for g in groups] == [["127.0.0.1:1001"], ["127.0.0.1:1002"]]  # not ready yet: still scraped
    assert groups[0]["labels"] == {"namespace": "shop", "model": "recs", "pool": "onprem-t4", "tenancy": "private",
                                   "sensitivity": "restricted", "pod": "recs-onprem-t4-abc", "node": "onprem-t4-0"}
    assert servers_document(servers) == {"shop/recs": ["http://127.0.0.1:1001"]}  # only ready, not stopping
