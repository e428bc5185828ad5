"""The pod runner alone: scaling a Deployment on kwok nodes starts and stops real model servers, and Prometheus
discovers them with pool/model labels and counts exactly the requests the client saw succeed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import MotoS3, PacedLoad, PodRunnerProcess, eventually, prom_query, prom_scalar, steps

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.promlocal import LocalPrometheus
from hybridrec_operator.core.render import build_deployment

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e-podrunner"
MODEL = "runner-recs"


def deployment(s3: MotoS3, replicas: int) -> dict[str, Any]:
    """The Deployment the operator would render for one pool (same labels, env and node selection)."""
    pool = next(parse_pool(d) for d in yaml.safe_load_all((ROOT / "manifests/samples/pools.yaml").read_text()) if d and d["metadata"]["name"] == "onprem-t4")
    rmd = parse_rmd({
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {"model": {"uri": s3.uri, "architecture": "two-tower", "sha256": s3.sha256}, "dataSensitivity": "internal",
                 "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"}},
    })
    return build_deployment(rmd, pool, replicas)


def server_pids(runner: PodRunnerProcess) -> set[int]:
    """PIDs of this test's model-server processes (children of the runner serving NAMESPACE)."""
    assert runner.proc is not None
    children = Path(f"/proc/{runner.proc.pid}/task/{runner.proc.pid}/children").read_text().split()
    pids = set()
    for pid in map(int, children):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hybridrec_server" in cmd and f"HYBRIDREC_NAMESPACE={NAMESPACE}".encode() in env:
            pids.add(pid)
    return pids


def alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def ours(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in groups if g["labels"]["namespace"] == NAMESPACE]


def test_scaling_a_deployment_starts_and_stops_real_servers(
    cluster: LocalCluster, moto_s3: MotoS3, prometheus: LocalPrometheus, pod_runner: PodRunnerProcess
) -> None:
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    key = f"{NAMESPACE}/{MODEL}"

    def apply(replicas: int) -> None:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment(moto_s3, replicas)))

    apply(2)
    try:
        urls = eventually(lambda: (u := pod_runner.servers().get(key, [])) and len(u) == 2 and u, 90, 0.5, "two ready servers")
        assert len(server_pids(pod_runner)) == 2

        # Prometheus found both through file_sd, labelled with where the pod runs.
        def discovered() -> list[dict[str, Any]]:
            up = prom_query(prometheus.url, f'up{{job="hybridrec-server",namespace="{NAMESPACE}",model="{MODEL}"}} == 1')
            return up if len(up) == 2 else []

        up = eventually(discovered, 30, 0.5, "both servers scraped")
        assert {s["metric"]["pool"] for s in up} == {"onprem-t4"}
        assert {s["metric"]["tenancy"] for s in up} == {"private"}
        assert {s["metric"]["sensitivity"] for s in up} == {"internal"}
        assert {s["metric"]["pod"] for s in up} <= set(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.replace("pod/", "").split())

        # Requests the client saw succeed are exactly what Prometheus counts (after the next scrape).
        stats = PacedLoad(lambda: urls, key, steps((6.0, 25.0)), 6.0, unknown_user_every=10).start().wait()
        assert stats.ok > 100 and stats.errors == 0, stats.codes
        assert len(stats.ok_by_url) == 2  # round-robin reached both servers
        expr = f'sum(hybridrec_server_requests_total{{namespace="{NAMESPACE}",model="{MODEL}",endpoint="recommend",code="200"}})'
        eventually(lambda: prom_scalar(prometheus.url, expr) == stats.ok, 20, 0.5, f"Prometheus counting {stats.ok} successes")
        fallback = prom_scalar(prometheus.url, f'sum(hybridrec_server_fallback_total{{namespace="{NAMESPACE}"}})')
        assert fallback is not None and fallback > 0  # the unknown visitors were served popular items

        # Scale down: one server stops and leaves service discovery; scale to zero: none left.
        before = server_pids(pod_runner)
        apply(1)
        eventually(lambda: len(pod_runner.servers().get(key, [])) == 1 and len(ours(pod_runner.targets())) == 1, 60, 0.5, "one server")
        eventually(lambda: len(server_pids(pod_runner)) == 1, 30, 0.5, "the removed server's process gone")
        gone = before - server_pids(pod_runner)
        assert len(gone) == 1
        eventually(lambda: not any(alive(pid) for pid in gone), 10, 0.2, "the stopped server reaped")
        apply(0)
        eventually(lambda: not pod_runner.servers().get(key) and not server_pids(pod_runner), 60, 0.5, "no servers")
        eventually(lambda: not prom_query(prometheus.url, f'up{{namespace="{NAMESPACE}"}}'), 20, 0.5, "targets dropped from Prometheus")
    finally:
        cluster.kubectl("delete", "deployment", "-n", NAMESPACE, f"{MODEL}-onprem-t4", "--ignore-not-found", "--wait=false", check=False)
