"""Reconcile at scale: the operator placing N RecModelDeployments vs the same API work done the simplest way.

    python benchmarks/reconcile_scale.py            # N=200 on a fresh local control plane (10-15 minutes)
    python benchmarks/reconcile_scale.py --n 50 --no-write

Three phases on one embedded control plane (etcd, kube-apiserver, scheduler, controller-manager, kwok nodes):

* **floor** (no operator running): one sequential client (the operator's own thin REST client, one connection pool)
  creates each RecModelDeployment, then server-side applies exactly the children the operator would write for it
  (``core.decide.decide`` -> ``core.render.build_children``: Deployment, Service, PodDisruptionBudget where one is
  rendered, NetworkPolicy of confidential/restricted models, owner reference to the new uid), patches the same
  status on the status subresource (compare-and-swap on resourceVersion, as the operator does) and posts the same
  event. The decisions are computed before the clock starts: the floor is API work only.
* **burst**: the real operator (``python -m hybridrec_operator.cli.operator run --standalone``, as the integration
  tests run it), then the same client creates the same N RecModelDeployments as fast as it can; measured until a
  watch has seen every one ``Placed=True`` for its generation. Ratio = burst / floor.
* **steady**: N new models arriving at ``--rate`` per second (default 5/s); per model, the time from sending its
  create to the watch seeing ``Placed=True`` (p50, p99). The floor's client is paced the same way (time from a
  model's arrival to its last write), which shows whether the simplest client keeps up on this machine at all; and
  N/4 models at ``--low-rate`` (default 1/s) show the operator's latency when the API server is not saturated.

Pods are real: the scheduler binds them to kwok nodes of a dedicated "bench" pool (ceil(N/8)+1 nodes x 8 GPUs, the
cheapest pool, so every model fits). Writes are counted by the API server (``apiserver_request_total`` by verb and
resource, before/after each phase) plus the events whose reportingComponent is hybridrec-operator; the operator's
peak RSS is the kernel's VmHWM. Results go to benchmarks/results/reconcile_scale.md (the raw numbers as JSON in it).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.processes import free_ports
from hybridrec_operator.api.models import API_VERSION, parse_pool
from hybridrec_operator.controller.kube import Kube, new_api_client
from hybridrec_operator.core.decide import ModelSnapshot, decide
from hybridrec_operator.core.objects import compact_node
from machine import cpu_model, memory_gib

NAMESPACE = "bench"
RESULTS = ROOT / "benchmarks" / "results" / "reconcile_scale.md"
GPUS_PER_NODE = 8
OPERATOR = "hybridrec-operator"  # reportingComponent of the operator's events (controller/kube.py)
TARGET_RATIO, TARGET_P99_S, TARGET_RSS_MB = 1.5, 2.0, 250.0

# What the operator writes (and the floor writes for it), as (verb, resource, subresource) in apiserver_request_total.
CHILD_RESOURCES = ("deployments", "services", "poddisruptionbudgets", "networkpolicies")
WRITES = {
    **{("APPLY", r, ""): f"apply {r}" for r in CHILD_RESOURCES},
    **{("DELETE", r, ""): f"delete {r}" for r in CHILD_RESOURCES},
    ("PATCH", "deployments", ""): "scale deployments to 0",
    ("PATCH", "recmodeldeployments", "status"): "patch recmodeldeployments/status",
    ("PATCH", "computepools", "status"): "patch computepools/status",
}
# Reads the operator makes per child it has not seen yet (is an object of that name someone else's?). Nothing else
# in this run GETs single children (the controllers read from informers), so the count is the operator's.
READS = {("GET", r, ""): f"get {r}" for r in CHILD_RESOURCES}


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


def models(n: int, replicas: int = 1, prefix: str = "model") -> list[dict[str, Any]]:
    """N models, the four sensitivity classes in turn (half of them get a NetworkPolicy), ``replicas`` pinned."""
    return [{
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
        "metadata": {"name": f"{prefix}-{i:04d}", "namespace": NAMESPACE},
        "spec": {"model": {"uri": f"s3://hybridrec-models/{prefix}-{i:04d}/", "architecture": "two-tower"},
                 "dataSensitivity": ["public", "internal", "confidential", "restricted"][i % 4],
                 "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
                 "replicas": replicas, "scaling": {"minReplicas": 0, "maxReplicas": 4}},
    } for i in range(n)]


def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(*args, input=input, timeout=600)


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def count(cluster: LocalCluster, path: str) -> int:
    return len(cluster.api_get(path + ("&" if "?" in path else "?") + "resourceVersion=0")["items"])


def clean_namespace(cluster: LocalCluster) -> None:
    """Delete every model (the garbage collector takes their children) and wait until their pods are gone."""
    kubectl(cluster, "delete", "recmodeldeployments", "--all", "-n", NAMESPACE, "--wait=false")
    for kind in ("pods", "deployments", "services"):
        path = f"/api/v1/namespaces/{NAMESPACE}/{kind}" if kind != "deployments" else f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        wait(lambda path=path: count(cluster, path) == 0, 600, f"{kind} to be gone", 1.0)


# ---- the floor: the same API work, done by one sequential client -----------------------------------------------


def floor_plan(cluster: LocalCluster, docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]],
                                                                               dict[str, Any], list[tuple[str, str, str]]]]:
    """For each model: (the object to create, the children, the status and the events the operator would write),
    from the operator's own pure decision on the cluster as it is (every bench GPU free)."""
    pools = [parse_pool(p) for p in cluster.api_get(f"/apis/{API_VERSION}/computepools")["items"]]
    nodes = [compact_node(n) for n in cluster.api_get("/api/v1/nodes")["items"]]
    out = []
    for doc in docs:
        meta = doc["metadata"]
        body = {**doc, "metadata": {**meta, "uid": "floor-uid", "generation": 1}, "status": {}}
        snap = ModelSnapshot(key=f"{meta['namespace']}/{meta['name']}", body=body, pools=pools, nodes=nodes, pods=[],
                             own_pods=[], children={})
        decision = decide(snap, now=datetime.now(UTC), trigger="created", grace_seconds=30.0)
        assert decision.status is not None and not decision.deletes and not decision.conflicts, decision
        out.append((doc, decision.applies, {k: v for k, v in decision.status.items() if v is not None}, decision.events))
    return out


def floor_one(kube: Kube, doc: dict[str, Any], children: list[dict[str, Any]], status: dict[str, Any],
              events: list[tuple[str, str, str]]) -> None:
    """One model's work: create it, apply its children (owned by the new uid), patch its status, post its event."""
    created = kube.create(doc)
    meta = created["metadata"]
    for child in children:
        child = copy.deepcopy(child)
        for ref in child["metadata"].get("ownerReferences") or []:
            ref["uid"] = meta["uid"]
        kube.apply(child)
    path = f"/apis/{API_VERSION}/namespaces/{meta['namespace']}/recmodeldeployments/{meta['name']}/status"
    kube.request("PATCH", path, body={"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status},
                 content_type="application/merge-patch+json")
    for type_, reason, message in events:
        kube.post_event(created, reason=reason, message=message, type_=type_)


def run_floor(kube: Kube, plan: list[Any]) -> float:
    """Every model's work, one after the other, as fast as it goes."""
    start = time.perf_counter()
    for item in plan:
        floor_one(kube, *item)
    return time.perf_counter() - start


def run_floor_paced(kube: Kube, plan: list[Any], rate: float) -> dict[str, float]:
    """The floor with models arriving at ``rate`` per second: per model, the time from its arrival until its last
    write returned (a model that arrives while the client is busy waits, as it would in any one-client loop)."""
    latencies = []
    start = time.perf_counter()
    for i, item in enumerate(plan):
        arrival = start + i / rate
        if (delay := arrival - time.perf_counter()) > 0:
            time.sleep(delay)
        floor_one(kube, *item)
        latencies.append(time.perf_counter() - arrival)
    return {"p50_s": round(percentile(latencies, 50), 3), "p99_s": round(percentile(latencies, 99), 3),
            "max_s": round(max(latencies), 3)}


# ---- watching, counting ---------------------------------------------------------------------------------------


class PlacedWatch(threading.Thread):
    """Watches RecModelDeployments and records when each first reports Placed=True for its generation."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        from kubernetes import config

        self.api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self.placed: dict[str, float] = {}
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
                if any(c["type"] == "Placed" and c["status"] == "True" for c in status.get("conditions") or []):
                    self.placed.setdefault(name, time.perf_counter())
                if self.stop:
                    return


class ChildWatch(threading.Thread):
    """Watches one kind of child in the namespace and records when each name is first seen."""

    def __init__(self, cluster: LocalCluster, kind: str) -> None:
        super().__init__(daemon=True)
        from kubernetes import config

        self.api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        self.kind = kind
        self.seen: dict[str, float] = {}
        self.stop = False

    def run(self) -> None:
        from kubernetes import client, watch

        custom, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        while not self.stop:
            if self.kind == "services":
                stream = watch.Watch().stream(core.list_namespaced_service, NAMESPACE, timeout_seconds=30,
                                              label_selector="app.kubernetes.io/managed-by=hybridrec")
            else:
                group = {"deployments": "apps", "poddisruptionbudgets": "policy", "networkpolicies": "networking.k8s.io"}[self.kind]
                stream = watch.Watch().stream(custom.list_namespaced_custom_object, group, "v1", NAMESPACE, self.kind,
                                              timeout_seconds=30)
            for event in stream:
                obj = event["object"]
                name = obj.metadata.name if hasattr(obj, "metadata") else obj["metadata"]["name"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.seen.setdefault(name, time.perf_counter())
                if self.stop:
                    return


def watch_children(cluster: LocalCluster) -> list[ChildWatch]:
    watchers = [ChildWatch(cluster, kind) for kind in CHILD_RESOURCES]
    for w in watchers:
        w.start()
    return watchers


def children_seen(watchers: list[ChildWatch], prefix: str) -> list[float]:
    return [t for w in watchers for name, t in w.seen.items() if name.startswith(prefix)]


def api_counts(cluster: LocalCluster) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total of successful requests (2xx) by (verb, resource, subresource); refused ones (409
    conflicts, 422...) under the verb prefixed with "refused "."""
    text = kubectl(cluster, "get", "--raw", "/metrics").stdout
    out: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.rindex("}")].split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        verb = labels.get("verb", "") if labels.get("code", "").startswith("2") else "refused " + labels.get("verb", "")
        out[(verb, labels.get("resource", ""), labels.get("subresource", ""))] += int(float(line.rsplit(" ", 1)[1]))
    return out


def operator_events(cluster: LocalCluster) -> int:
    return sum(1 for e in cluster.api_get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
               if e.get("reportingComponent") == OPERATOR)


class Tally:
    """API requests of one phase: the operator's kinds of writes (and its child reads), plus its events."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.before, self.events_before = api_counts(cluster), operator_events(cluster)

    def result(self, n: int) -> dict[str, Any]:
        after = api_counts(self.cluster)
        diff = {k: after[k] - self.before.get(k, 0) for k in after if after[k] - self.before.get(k, 0) > 0}
        by_kind = {name: diff[key] for key, name in WRITES.items() if diff.get(key)}
        events = operator_events(self.cluster) - self.events_before
        if events:
            by_kind["post events"] = events
        writes = sum(by_kind.values())
        reads = sum(diff.get(key, 0) + diff.get((f"refused {key[0]}", *key[1:]), 0) for key in READS)  # 404s too
        refused = {f"{v} {r}{'/' + sub if sub else ''}": c for (v, r, sub), c in diff.items() if v.startswith("refused ")
                   and (v.split(" ", 1)[1], r, sub) in WRITES}
        return {"refused_writes": refused, "writes": writes, "writes_per_model": round(writes / n, 2), "writes_by_kind": by_kind,
                "child_reads": reads, "child_reads_per_model": round(reads / n, 2),
                "creates": diff.get(("POST", "recmodeldeployments", ""), 0)}


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's own reconcile count and time (hybridrec_reconcile_duration_seconds, RecModelDeployment)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {"reconciles": 0.0, "reconcile_seconds": 0.0}
    for line in text.splitlines():
        if 'kind="RecModelDeployment"' not in line:
            continue
        if line.startswith("hybridrec_reconcile_duration_seconds_count"):
            out["reconciles"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("hybridrec_reconcile_duration_seconds_sum"):
            out["reconcile_seconds"] = float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of the process' resident set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the value at least q% of the samples do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def machine() -> dict[str, str]:
    cpu, gib = cpu_model(), memory_gib()
    import kopf

    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{gib:.0f} GiB" if gib else "unknown",
            "kernel": platform.release(), "python": platform.python_version(), "kopf": getattr(kopf, "__version__", "?"),
            "load_average_at_start": load}


# ---- the run -----------------------------------------------------------------------------------------------------


def steady(cluster: LocalCluster, kube: Kube, children: list[ChildWatch], metrics_port: int, pid: int,
           docs: list[dict[str, Any]], rate: float, expected_children: int) -> dict[str, Any]:
    """Create ``docs`` at ``rate`` per second; per model, the time from sending its create until a watch sees it
    Placed (and until its children are there too)."""
    n, prefix = len(docs), docs[0]["metadata"]["name"].rsplit("-", 1)[0] + "-"
    watcher = PlacedWatch(cluster)
    watcher.start()
    time.sleep(1)
    tally = Tally(cluster)
    ops_before, cpu_before = operator_metrics(metrics_port), cpu_seconds(pid)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i, doc in enumerate(docs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[doc["metadata"]["name"]] = time.perf_counter()
        kube.create(doc)
    wait(lambda: len(watcher.placed) >= n, 900, f"all {prefix}* models Placed", 0.05)
    wait(lambda: len(children_seen(children, prefix)) >= expected_children, 300, f"all {prefix}* children", 0.05)
    ops_after, cpu_after = operator_metrics(metrics_port), cpu_seconds(pid)
    requests = tally.result(n)
    watcher.stop = True
    latencies = [watcher.placed[name] - t for name, t in sent.items()]
    written = [max([watcher.placed[name], *children_seen(children, name)]) - t for name, t in sent.items()]
    return {
        "n": n, "rate_per_s": rate, "arrival_s": round(max(sent.values()) - start, 2),
        "p50_time_to_placed_s": round(percentile(latencies, 50), 3),
        "p99_time_to_placed_s": round(percentile(latencies, 99), 3),
        "max_time_to_placed_s": round(max(latencies), 3),
        "p50_time_to_written_s": round(percentile(written, 50), 3),
        "p99_time_to_written_s": round(percentile(written, 99), 3),
        "requests_until_placed": requests,
        "reconciles_per_model": round((ops_after["reconciles"] - ops_before["reconciles"]) / n, 2),
        "operator_cpu_s": round(cpu_after - cpu_before, 2),
    }


def run(n: int, replicas: int, rate: float, low_rate: float, low_n: int, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n, "replicas_per_model": replicas, "rate_per_s": rate, "machine": machine()}
    cluster = LocalCluster(workdir / "cluster", die_with_parent=True)
    cluster.check_binaries()
    cluster.up(timeout=300)
    try:
        result["kubernetes"] = json.loads(kubectl(cluster, "version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        nodes = math.ceil(n / GPUS_PER_NODE) + 1
        result["bench_nodes"] = nodes
        kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "crds"))
        kubectl(cluster, "wait", "--for=condition=Established", "crd/recmodeldeployments.hybridrec.io", "crd/computepools.hybridrec.io")
        kubectl(cluster, "apply", "-f", str(ROOT / "manifests" / "samples" / "pools.yaml"))
        kubectl(cluster, "apply", "-f", "-", input=yaml.safe_dump_all([*bench_nodes(nodes), bench_pool(nodes * GPUS_PER_NODE)]))
        kubectl(cluster, "create", "namespace", NAMESPACE)
        wait(lambda: cluster.api_get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts")["items"], 60, "default SA")
        wait(lambda: sum(1 for x in cluster.api_get("/api/v1/nodes")["items"] if x["metadata"]["name"].startswith("bench-")
                         and any(c["type"] == "Ready" and c["status"] == "True" for c in x["status"].get("conditions", []))) == nodes,
             120, "bench nodes Ready")
        kube = Kube(new_api_client(str(cluster.kubeconfig)))

        # 1. The floor, with no operator running (it would reconcile the floor's models too).
        plan = floor_plan(cluster, models(n, replicas, "floor"))
        result["floor_children_per_model"] = round(sum(len(c) for _, c, _, _ in plan) / n, 2)
        result["floor_child_kinds"] = dict(Counter(c["kind"] for _, children, _, _ in plan for c in children))
        tally = Tally(cluster)
        result["floor_s"] = round(run_floor(kube, plan), 2)
        result["floor_requests"] = tally.result(n)
        clean_namespace(cluster)
        # The floor at the steady arrival rate: can the simplest client keep up on this machine?
        result["floor_paced"] = {"rate_per_s": rate, **run_floor_paced(kube, floor_plan(cluster, models(n, replicas, "paced")), rate)}
        clean_namespace(cluster)

        # 2. The operator, the same N models created by the same client as fast as it goes.
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

        docs = models(n, replicas)
        expected_children = sum(len(c) for _, c, _, _ in plan)
        watcher, children = PlacedWatch(cluster), watch_children(cluster)
        watcher.start()
        time.sleep(1)
        tally = Tally(cluster)
        ops_before, cpu_before = operator_metrics(metrics_port), cpu_seconds(proc.pid)
        start = time.perf_counter()
        for doc in docs:
            kube.create(doc)
        create_s = time.perf_counter() - start
        wait(lambda: len(watcher.placed) >= n, 900, "all models Placed", 0.05)
        placed = max(watcher.placed.values()) - start
        # The operator writes a model's status before its children: the same work as the floor is done once every
        # child is there too.
        wait(lambda: len(children_seen(children, "model-")) >= expected_children, 300, "all children", 0.05)
        written = max(placed, max(children_seen(children, "model-")) - start)
        ops_after, cpu_after = operator_metrics(metrics_port), cpu_seconds(proc.pid)
        burst_requests = tally.result(n)
        time.sleep(25)  # one resync period with nothing changing (pods becoming ready do change the status)
        watcher.stop = True
        result["burst"] = {
            "create_s": round(create_s, 2), "all_placed_s": round(placed, 2), "all_written_s": round(written, 2),
            "ratio": round(written / result["floor_s"], 2),
            "median_time_to_placed_s": round(percentile([t - start for t in watcher.placed.values()], 50), 2),
            "requests_until_placed": burst_requests,
            "reconciles_per_model": round((ops_after["reconciles"] - ops_before["reconciles"]) / n, 2),
            "mean_reconcile_ms": round(1000 * (ops_after["reconcile_seconds"] - ops_before["reconcile_seconds"])
                                       / max(1.0, ops_after["reconciles"] - ops_before["reconciles"]), 1),
            "operator_cpu_s": round(cpu_after - cpu_before, 2),
        }
        clean_namespace(cluster)
        time.sleep(2)

        # 3. Steady arrival: N new models at `rate` per second; time from sending the create to Placed.
        result["steady"] = steady(cluster, kube, children, metrics_port, proc.pid, models(n, replicas, "steady"), rate,
                                  sum(len(c) for _, c, _, _ in plan))
        # Nothing changing (pods ready, statuses settled): a resync (20 s) must write nothing.
        time.sleep(15)
        tally = Tally(cluster)
        time.sleep(25)
        result["idle_resync_writes"] = tally.result(n)["writes"]
        clean_namespace(cluster)
        # 4. The same at a rate this machine's API server sustains for the floor (fewer models: it takes longer).
        if low_rate > 0 and low_n > 0:
            result["steady_low"] = steady(cluster, kube, children, metrics_port, proc.pid,
                                          models(low_n, replicas, "slow"), low_rate,
                                          sum(len(c) for _, c, _, _ in plan[:low_n]))
            clean_namespace(cluster)
        result["operator_peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
        for w in children:
            w.stop = True
        return result
    finally:
        cluster.down(quiet=True)


def verdict(ok: bool) -> str:
    return "meets" if ok else "**misses**"


def markdown(r: dict[str, Any]) -> str:
    m, b, s = r["machine"], r["burst"], r["steady"]
    fr, br, sr = r["floor_requests"], b["requests_until_placed"], s["requests_until_placed"]
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(r["floor_child_kinds"].items()))

    low = ""
    if (lo := r.get("steady_low")) is not None:
        low = (f"\n| {lo['n']} models at {lo['rate_per_s']:g}/s: time to `Placed` p50 / p99 (max) | {lo['p50_time_to_placed_s']} s"
               f" / {lo['p99_time_to_placed_s']} s ({lo['max_time_to_placed_s']} s) | |")

    def by_kind(req: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in req["writes_by_kind"].items())

    title = f"Reconcile at scale (N = {r['n']})" + (f": {r['label']}" if r.get("label") else "")
    return f"""# {title}

`python benchmarks/reconcile_scale.py --n {r['n']} --rate {r['rate_per_s']:g}` on the embedded control plane
(Kubernetes {r['kubernetes']}: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok; {r['bench_nodes']}
fake 8-GPU nodes in a "bench" pool), {r['replicas_per_model']} pinned replica(s) per model, the four sensitivity
classes in turn.

| measure | value | target |
|---|---|---|
| floor: one sequential client creates the {r['n']} models, applies their children ({kinds}), patches their status, posts their event | {r['floor_s']} s | |
| operator: the same client creates the {r['n']} models (took {b['create_s']} s); until a watch saw all `Placed=True` | {b['all_placed_s']} s | |
| ... and every child there too (the operator patches status before it applies children) | **{b['all_written_s']} s** | |
| ratio operator (all placed and written) / floor | **{b['ratio']}** | <= {TARGET_RATIO} ({verdict(b['ratio'] <= TARGET_RATIO)}) |
| median time to `Placed` in the burst (from the first create) | {b['median_time_to_placed_s']} s | |
| steady arrival {r['rate_per_s']:g}/s: time to `Placed` p50 / p99 (max) | {s['p50_time_to_placed_s']} s / **{s['p99_time_to_placed_s']} s** ({s['max_time_to_placed_s']} s) | p99 <= {TARGET_P99_S} s ({verdict(s['p99_time_to_placed_s'] <= TARGET_P99_S)}) |
| steady: time until the model's children are there too, p50 / p99 | {s['p50_time_to_written_s']} s / {s['p99_time_to_written_s']} s | |
| floor throughput (models/s the floor's one client sustains on this machine) | {r['n'] / r['floor_s']:.2f} | |
| the floor itself at {r['floor_paced']['rate_per_s']:g}/s: time from arrival to its last write, p50 / p99 (max) | {r['floor_paced']['p50_s']} s / {r['floor_paced']['p99_s']} s ({r['floor_paced']['max_s']} s) | |{low}
| writes per model, floor | {fr['writes_per_model']} (+1 create) | |
| writes per model, operator burst until all placed and written | {br['writes_per_model']} (+1 create by the client) | |
| writes per model, operator steady | {sr['writes_per_model']} | |
| child GETs per model (operator: is a same-named object someone else's?) | burst {br['child_reads_per_model']}, steady {sr['child_reads_per_model']} | |
| reconciles per model (burst / steady); mean reconcile | {b['reconciles_per_model']} / {s['reconciles_per_model']}; {b['mean_reconcile_ms']} ms | |
| operator CPU (burst / steady) | {b['operator_cpu_s']} s / {s['operator_cpu_s']} s | |
| operator writes during a resync with nothing changing | {r['idle_resync_writes']} | 0 |
| operator peak RSS (VmHWM) | **{r['operator_peak_rss_mb']} MB** | <= {TARGET_RSS_MB:g} MB ({verdict(r['operator_peak_rss_mb'] <= TARGET_RSS_MB)}) |

Writes are counted by the API server (`apiserver_request_total` by verb/resource/subresource, before and after each
phase: server-side applies, deletes, status patches of models and pools) plus the events whose reportingComponent
is hybridrec-operator. Floor: {by_kind(fr)}. Burst: {by_kind(br)}. Steady: {by_kind(sr)}.

Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}, kopf {m['kopf']};
load average at start {m['load_average_at_start']}. The control plane, kwok, the client and the operator share those
cores (and other work on the machine), so the floor and the operator compete for the same CPU.

```json
{json.dumps(r, indent=2)}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=1, help="pinned replicas per model")
    parser.add_argument("--rate", type=float, default=5.0, help="steady arrival rate, models per second")
    parser.add_argument("--low-rate", type=float, default=1.0, help="a second, lower arrival rate (0: skip it)")
    parser.add_argument("--low-n", type=int, default=None, help="models at the lower rate (default: N/4)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument("--append", action="store_true", help="add to the results file instead of replacing it")
    parser.add_argument("--label", default="", help="what this run measures, in the heading (e.g. which operator)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridrec-bench-") as tmp:
        low_n = args.low_n if args.low_n is not None else max(1, args.n // 4)
        result = run(args.n, args.replicas, args.rate, args.low_rate, low_n, Path(tmp))
    if args.label:
        result["label"] = args.label
    text = markdown(result)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        previous = RESULTS.read_text() + "\n" if args.append and RESULTS.exists() else ""
        RESULTS.write_text(previous + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
