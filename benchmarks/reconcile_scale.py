"""Reconcile at scale: N RecModelDeployments placed by the operator vs kubectl creating N plain Deployments.

    python benchmarks/reconcile_scale.py            # N=200 on a fresh local control plane (about 3 minutes)
    python benchmarks/reconcile_scale.py --n 50 --no-write

What is compared (on the same embedded control plane, one after the other):

* floor: ``kubectl create -f`` of N plain Deployments (1 replica, the same GPU pod template shape); the time
  kubectl needs is the API server's own floor for N objects.
* hybridrec: ``kubectl create -f`` of N RecModelDeployments (1 GPU replica each), then the time until every one
  reports ``Placed=True`` for its current generation (children applied, status written), as seen by a watch.

Both runs create pods that the real scheduler binds to kwok nodes of a dedicated "bench" pool (ceil(N/8) nodes x
8 GPUs, the cheapest pool, so every model fits). Also reported: the operator's peak RSS (VmHWM), its API writes
(counted by the API server) and whether a resync after everything settled writes anything (it must not).
Results go to benchmarks/results/reconcile_scale.md (small markdown; the raw numbers as a JSON block in it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from hybridrec_local.localcluster import LocalCluster  # noqa: E402
from hybridrec_local.processes import free_ports  # noqa: E402
from machine import cpu_model, memory_gib  # noqa: E402

NAMESPACE = "bench"
RESULTS = ROOT / "benchmarks" / "results" / "reconcile_scale.md"
GPUS_PER_NODE = 8


def bench_nodes(count: int) -> list[dict[str, Any]]:
    """kwok fake nodes of the "bench" pool."""
    nodes = []
    for i in range(count):
        name = f"bench-{i}"
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(GPUS_PER_NODE)}
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                                    "hybridrec.io/pool": "bench", "hybridrec.io/tenancy": "private"}},
            "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
        })
    return nodes


def bench_pool(gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "ComputePool", "metadata": {"name": "bench"},
        "spec": {"tenancy": "private", "provider": "onprem", "nodeSelector": {"hybridrec.io/pool": "bench"},
                 "pricing": {"pricePerGpuHour": 0.10, "currency": "USD", "capacityType": "reserved"},
                 "maxGpus": gpus, "allowedSensitivity": ["public", "internal", "confidential", "restricted"]},
    }


def models(n: int, replicas: int = 1) -> list[dict[str, Any]]:
    return [{
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": f"model-{i:04d}", "namespace": NAMESPACE},
        "spec": {"model": {"uri": f"s3://hybridrec-models/model-{i:04d}/", "architecture": "two-tower"},
                 "dataSensitivity": ["public", "internal", "confidential", "restricted"][i % 4],
                 "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
                 "replicas": replicas, "scaling": {"minReplicas": 0, "maxReplicas": 4}},
    } for i in range(n)]


def plain_deployments(n: int, replicas: int = 1) -> list[dict[str, Any]]:
    """What a person would write by hand for the same pods (no operator)."""
    out = []
    for i in range(n):
        labels = {"app": f"plain-{i:04d}"}
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"plain-{i:04d}", "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {"hybridrec.io/pool": "bench"},
                         "containers": [{"name": "server", "image": "ghcr.io/hybridrec/server:0.1.0",
                                         "resources": {"requests": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "1"},
                                                       "limits": {"nvidia.com/gpu": "1"}}}]}}},
        })
    return out


def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, input=input, timeout=600)


def timed_create(cluster: LocalCluster, docs: list[dict[str, Any]], workdir: Path, name: str) -> float:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    start = time.perf_counter()
    kubectl(cluster, "create", "-f", str(path))
    return time.perf_counter() - start


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def count(cluster: LocalCluster, path: str) -> int:
    return len(cluster.api_get(path + ("&" if "?" in path else "?") + "resourceVersion=0")["items"])


def clean_namespace(cluster: LocalCluster) -> None:
    kubectl(cluster, "delete", "deployments,recmodeldeployments", "--all", "-n", NAMESPACE, "--wait=false")
    wait(lambda: count(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods") == 0, 600, "pods to be gone", 1.0)


class PlacedWatch(threading.Thread):
    """Watches RecModelDeployments and records when each first reports Placed=True for its generation."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        from kubernetes import config

        self.api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self.placed: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.stop = False

    def run(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api)
        while not self.stop:
            for event in watch.Watch().stream(custom.list_namespaced_custom_object, "hybridrec.io", "v1alpha1",
                                              NAMESPACE, "recmodeldeployments", timeout_seconds=30):
                obj = event["object"]
                status, name = obj.get("status") or {}, obj["metadata"]["name"]
                if status.get("observedGeneration") != obj["metadata"].get("generation"):
                    continue
                conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
                now = time.perf_counter()
                if conds.get("Placed") == "True":
                    self.placed.setdefault(name, now)
                if conds.get("Ready") == "True":
                    self.ready.setdefault(name, now)
                if self.stop:
                    return


OPERATOR_WRITES = {  # (verb, resource, subresource) that only the operator issues in this benchmark
    ("APPLY", "deployments", ""), ("APPLY", "services", ""), ("APPLY", "poddisruptionbudgets", ""),
    ("DELETE", "deployments", ""), ("PATCH", "recmodeldeployments", "status"), ("PATCH", "computepools", "status"),
}


def operator_writes(cluster: LocalCluster) -> int:
    """The operator's API writes, counted by the API server (apiserver_request_total) plus the events it posted."""
    text = kubectl(cluster, "get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.rindex("}")].split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        if (labels.get("verb"), labels.get("resource"), labels.get("subresource", "")) in OPERATOR_WRITES:
            total += float(line.rsplit(" ", 1)[1])
    events = cluster.api_get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
    return int(total) + sum(1 for e in events if e.get("reportingComponent") == "hybridrec-operator")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of the process' resident set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict[str, str]:
    cpu, gib = cpu_model(), memory_gib()
    import kopf

    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{gib:.0f} GiB" if gib else "unknown",
            "kernel": platform.release(), "python": platform.python_version(), "kopf": getattr(kopf, "__version__", "?")}


def run(n: int, replicas: int, workdir: Path) -> dict[str, Any]:
    cluster = LocalCluster(workdir / "cluster", die_with_parent=True)
    cluster.check_binaries()
    cluster.up(timeout=300)
    try:
        kube_version = json.loads(kubectl(cluster, "version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        nodes = math.ceil(n / GPUS_PER_NODE) + 1
        kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "crds"))
        kubectl(cluster, "wait", "--for=condition=Established", "crd/recmodeldeployments.hybridrec.io", "crd/computepools.hybridrec.io")
        kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "samples" / "pools.yaml"))
        kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all([*bench_nodes(nodes), bench_pool(nodes * GPUS_PER_NODE)]))
        kubectl(cluster, "create", "namespace", NAMESPACE)
        wait(lambda: cluster.api_get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")["items"], 60, "default SA")
        wait(lambda: sum(1 for x in cluster.api_get("/api/v1/nodes")["items"] if x["metadata"]["name"].startswith("bench-")
                         and any(c["type"] == "Ready" and c["status"] == "True" for c in x["status"].get("conditions", []))) == nodes,
             120, "bench nodes Ready")

        [metrics_port] = free_ports(1)
        env = {**cluster.env(), "HYBRIDREC_RESYNC_SECONDS": "20"}
        log = workdir / "operator.log"
        proc = cluster.start_process("operator", [sys.executable, "-m", "hybridrec_operator.cli.operator", "run", "--standalone",
                                                  "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"],
                                     env=env, log_path=log, die_with_parent=True)
        wait(lambda: "hybridrec operator started" in log.read_text(), 60, "operator start")
        wait(lambda: (cluster.api_get("/apis/hybridrec.io/v1alpha1/computepools/bench").get("status") or {}).get("allocatableGpus")
             == nodes * GPUS_PER_NODE, 60, "bench pool status")
        time.sleep(2)

        # Floor: kubectl creating N plain Deployments.
        floor = timed_create(cluster, plain_deployments(n, replicas), workdir, "deployments")
        wait(lambda: count(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector=status.phase=Running") == n * replicas,
             600, "plain pods Running", 1.0)
        clean_namespace(cluster)
        time.sleep(2)

        # hybridrec: N RecModelDeployments until every one is Placed.
        writes_before = operator_writes(cluster)
        watcher = PlacedWatch(cluster)
        watcher.start()
        time.sleep(1)
        start = time.perf_counter()
        create = timed_create(cluster, models(n, replicas), workdir, "models")
        wait(lambda: len(watcher.placed) >= n, 900, "all models Placed", 0.1)
        placed = max(watcher.placed.values()) - start
        writes_placed = operator_writes(cluster) - writes_before
        wait(lambda: len(watcher.ready) >= n, 900, "all models Ready", 0.5)
        ready = max(watcher.ready.values()) - start
        time.sleep(3)  # let the last readiness status patches land
        writes_ready = operator_writes(cluster) - writes_before
        time.sleep(25)  # one resync period with nothing changing
        writes_idle = operator_writes(cluster) - writes_before - writes_ready
        rss = peak_rss_mb(proc.pid)
        watcher.stop = True
        per_model = sorted(t - start for t in watcher.placed.values())
        result = {
            "n": n, "replicas_per_model": replicas, "kubernetes": kube_version, "bench_nodes": nodes,
            "floor_kubectl_create_deployments_s": round(floor, 2),
            "kubectl_create_rmds_s": round(create, 2),
            "all_placed_s": round(placed, 2),
            "ratio": round(placed / floor, 2),
            "median_time_to_placed_s": round(statistics.median(per_model), 2),
            "all_ready_s": round(ready, 2),
            "operator_writes_until_placed": writes_placed,
            "operator_writes_until_ready": writes_ready,
            "operator_writes_per_model_until_placed": round(writes_placed / n, 2),
            "operator_writes_idle_resync": writes_idle,
            "operator_peak_rss_mb": round(rss, 1),
            "machine": machine(),
        }
        clean_namespace(cluster)
        return result
    finally:
        cluster.down(quiet=True)


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    ok_ratio = "meets" if r["ratio"] <= 2.0 else "misses"
    ok_rss = "meets" if r["operator_peak_rss_mb"] <= 250 else "misses"
    return f"""# Reconcile at scale (N = {r['n']})

`python benchmarks/reconcile_scale.py --n {r['n']}` on the embedded control plane (Kubernetes {r['kubernetes']}, etcd,
kube-scheduler, kube-controller-manager, kwok; {r['bench_nodes']} fake 8-GPU nodes in a "bench" pool).

| measure | value |
|---|---|
| floor: `kubectl create` of {r['n']} plain Deployments | {r['floor_kubectl_create_deployments_s']} s |
| `kubectl create` of {r['n']} RecModelDeployments | {r['kubectl_create_rmds_s']} s |
| until all {r['n']} are `Placed=True` (children applied, status written) | **{r['all_placed_s']} s** |
| ratio to the floor (target <= 2.0) | **{r['ratio']}** ({ok_ratio} the target) |
| median time to `Placed` per model | {r['median_time_to_placed_s']} s |
| until all are `Ready` (pods scheduled and running via kwok) | {r['all_ready_s']} s |
| operator API writes until all placed | {r['operator_writes_until_placed']} ({r['operator_writes_per_model_until_placed']} per model) |
| operator API writes until all ready (status of ready replicas included) | {r['operator_writes_until_ready']} |
| operator API writes during an idle resync | {r['operator_writes_idle_resync']} |
| operator peak RSS (VmHWM, target <= 250 MB) | **{r['operator_peak_rss_mb']} MB** ({ok_rss} the target) |

Writes per model at placement: Deployment + Service + PodDisruptionBudget (server-side apply), one status patch,
one event. No finalizer, no kopf annotations: the handlers are event handlers feeding one de-duplicating work queue.

Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}, kopf {m['kopf']}.
The control plane, kwok and the operator share those cores, so the floor and the operator compete for the same CPU.

```json
{json.dumps(r, indent=2)}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per model (0: the operator's work without pods)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument("--append", action="store_true", help="add to the results file instead of replacing it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridrec-bench-") as tmp:
        result = run(args.n, args.replicas, Path(tmp))
    text = markdown(result)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        previous = RESULTS.read_text() + "\n" if args.append and RESULTS.exists() else ""
        RESULTS.write_text(previous + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
