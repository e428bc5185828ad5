"""Helpers for the invariant tests: node tenancy labels, what counts as hybridrec's own pod, the invariant itself,
a watch that records every value a condition takes (a violation is True only for the moment it takes to delete the
pod, too short to be seen by polling), and user-owned objects to compare before and after."""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

from operator_harness import Kube

TENANCY = "hybridrec.io/tenancy"
SENSITIVE = {"confidential", "restricted"}
MANAGED_BY = ("app.kubernetes.io/managed-by", "hybridrec")


def node_tenancy(kube: Kube) -> dict[str, str]:
    """node name -> its hybridrec.io/tenancy label ("" when it has none)."""
    return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(TENANCY, "") for n in kube.items("nodes")}


def relabel(kube: Kube, node: str, tenancy: str) -> None:
    kube("label", "node", node, f"{TENANCY}={tenancy}", "--overwrite")


@contextlib.contextmanager
def restored_node_labels(kube: Kube) -> Iterator[dict[str, str]]:
    """Yields the nodes' tenancy labels; puts every one back afterwards (the cluster is shared by the session)."""
    before = node_tenancy(kube)
    try:
        yield before
    finally:
        now = node_tenancy(kube)
        for node, tenancy in before.items():
            if now.get(node) != tenancy:
                relabel(kube, node, tenancy)


def is_hybridrec_pod(pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    owners = pod["metadata"].get("ownerReferences") or []
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and any(o.get("kind") == "ReplicaSet" for o in owners)


def violations(kube: Kube, namespace: str) -> list[str]:
    """The invariant: every bound pod hybridrec created for a confidential/restricted model (by the model's spec or
    the pod's own sensitivity label) runs on a node labelled private. Returns what breaks it."""
    tenancy = node_tenancy(kube)
    sensitive_models = {m["metadata"]["name"] for m in kube.items("rmd", namespace)
                        if m["spec"].get("dataSensitivity") in SENSITIVE}
    found = []
    for pod in kube.items("pods", namespace):
        labels = pod["metadata"].get("labels") or {}
        node = pod["spec"].get("nodeName")
        if not node or not is_hybridrec_pod(pod) or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if labels.get("hybridrec.io/model") in sensitive_models or labels.get("hybridrec.io/sensitivity") in SENSITIVE:
            if tenancy.get(node) != "private":
                found.append(f"{pod['metadata']['name']} ({labels.get('hybridrec.io/model')}) on {node} "
                             f"labelled {tenancy.get(node)!r}")
    return found


class ConditionWatch:
    """Every (status, reason, message) a condition of one RecModelDeployment takes, from a watch (a thread)."""

    def __init__(self, kube_api: Any, namespace: str, name: str, condition: str) -> None:
        self.kube_api, self.namespace, self.name, self.condition = kube_api, namespace, name, condition
        self.seen: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConditionWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(self.kube_api)
        while not self._stop.is_set():
            w = watch.Watch()
            with contextlib.suppress(Exception):
                for event in w.stream(api.list_namespaced_custom_object, "hybridrec.io", "v1alpha1", self.namespace,
                                      "recmodeldeployments", field_selector=f"metadata.name={self.name}",
                                      timeout_seconds=5):
                    for cond in ((event["object"].get("status") or {}).get("conditions")) or []:
                        if cond.get("type") == self.condition:
                            value = (cond["status"], cond.get("reason", ""), cond.get("message", ""))
                            if not self.seen or self.seen[-1] != value:
                                self.seen.append(value)
                    if self._stop.is_set():
                        w.stop()

    def statuses(self) -> list[str]:
        return [s for s, _, _ in self.seen]


def wait_settled(kube: Kube, namespace: str, timeout: float, quiet_s: float = 1.5) -> bool:
    """Until every model has observed its generation and the namespace's pods (name, node, phase, deleting) stayed
    the same for ``quiet_s``; False when ``timeout`` passed first (the invariant is checked either way)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        models = kube.items("rmd", namespace)
        observed = all((m.get("status") or {}).get("observedGeneration") == m["metadata"]["generation"] for m in models)
        pods = sorted((p["metadata"]["name"], p["spec"].get("nodeName") or "", (p.get("status") or {}).get("phase", ""),
                       bool(p["metadata"].get("deletionTimestamp"))) for p in kube.items("pods", namespace))
        if pods != last or not observed:
            last, stable_since = pods, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return True
        time.sleep(0.3)
    return False


# ---- objects hybridrec did not create ----------------------------------------------------------------------------

def user_objects(namespace: str, gpu_node: str) -> list[dict[str, Any]]:
    """A user's Deployment and Service (carrying a model's label, but not managed by hybridrec), a ConfigMap, and a
    user's GPU pod on a chosen private node with a sensitive model's labels: it sits in the operator's pod index, on a
    node the tests relabel, and looks like a violation the guard must report but never delete."""
    # The admission policies want a sensitivity label beside a model label and, as the model is restricted, the
    # private-tenancy affinity: a user can still create these, and hybridrec must leave them alone.
    bait = {"hybridrec.io/model": "account-recs", "hybridrec.io/sensitivity": "restricted", "app": "user-app"}
    private_only = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": TENANCY, "operator": "In", "values": ["private"]}]}]}}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "user-app", "namespace": namespace, "labels": bait},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "user-app"}},
                  "template": {"metadata": {"labels": bait},
                               "spec": {"affinity": private_only,
                                        "containers": [{"name": "app", "image": "registry.example/user-app:1"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "user-svc", "namespace": namespace, "labels": bait},
         "spec": {"selector": {"app": "user-app"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "user-config", "namespace": namespace},
         "data": {"owner": "a user"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user-gpu-job", "namespace": namespace, "labels": {"app": "user-gpu", "hybridrec.io/model": "account-recs",
                                                                                 "hybridrec.io/sensitivity": "restricted"}},
         "spec": {"nodeSelector": {"kubernetes.io/hostname": gpu_node}, "affinity": private_only,
                  "tolerations": [{"key": TENANCY, "operator": "Exists", "effect": "NoSchedule"}],
                  "containers": [{"name": "job", "image": "registry.example/job:1",
                                  "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}]}},
    ]


def fingerprint(obj: dict[str, Any]) -> dict[str, Any]:
    """What a writer other than the object's own controllers would change: identity, labels, annotations, owners,
    finalizers, spec (or data), and that it is not being deleted."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration")}
    return copy.deepcopy({"uid": meta["uid"], "generation": meta.get("generation"), "labels": meta.get("labels"),
                          "annotations": annotations, "ownerReferences": meta.get("ownerReferences"),
                          "finalizers": meta.get("finalizers"), "deleting": bool(meta.get("deletionTimestamp")),
                          "spec": obj.get("spec"), "data": obj.get("data")})


def snapshot(kube: Kube, namespace: str, objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for obj in objects:
        live = kube.get(obj["kind"].lower(), obj["metadata"]["name"], namespace)
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = fingerprint(live) if live else {"missing": True}
    return out
