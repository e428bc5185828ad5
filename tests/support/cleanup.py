"""Leave the shared session cluster as it was found: the integration modules share one local control plane, and a
namespace, pod, node label or ComputePool one module leaves behind changes what the next one sees (a leftover GPU pod
takes room a later test's pods need; a leftover model is served by the next module's operator).

Every helper takes a ``kubectl(*args, input=None, check=True) -> CompletedProcess`` (``LocalCluster.kubectl`` or the
suites' ``Kube``) and waits until what it deletes is gone: namespace deletion is asynchronous, and a kwok pod's GPU
is free for the scheduler only once the pod object is gone.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

POOLS = "computepools.hybridrec.io"
# Namespaces the control plane itself owns: never deleted, whatever a module did.
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def _items(kubectl: Kubectl, *args: str) -> list[dict[str, Any]]:
    proc = kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "the server doesn't have a resource type" in proc.stderr:  # CRDs not installed (yet): nothing of theirs
            return []
        raise AssertionError(f"kubectl get {' '.join(args)}: {proc.stderr.strip()}")
    return list(json.loads(proc.stdout).get("items", []))


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if not last:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; still there: {last!r}")
        time.sleep(interval)


def delete_namespaces(kubectl: Kubectl, names: Iterable[str], timeout: float = 180.0) -> None:
    """Delete the namespaces (models first, then their children, then the namespace) and wait until all are gone.

    The models go first so no operator that is still running recreates a child while the namespace empties; the
    Deployments and pods are deleted directly too, as the garbage collector may not watch the CRD yet in a young
    cluster. All deletions are issued before the one wait, so several namespaces empty in parallel.
    """
    names = sorted(set(names) - SYSTEM_NAMESPACES)
    if not names:
        return
    for name in names:
        kubectl("delete", "rmd", "--all", "-n", name, "--wait=false", "--ignore-not-found", check=False)
        kubectl("delete", "deployments,replicasets,pods", "--all", "-n", name, "--wait=false", "--ignore-not-found",
                check=False)
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def left() -> list[str]:
        present = {n["metadata"]["name"] for n in _items(kubectl, "namespaces")}
        return [n for n in names if n in present]

    _wait(left, timeout, f"namespaces {', '.join(names)} to be deleted")


def delete_namespace(kubectl: Kubectl, name: str, timeout: float = 180.0) -> None:
    """:func:`delete_namespaces` for one."""
    delete_namespaces(kubectl, [name], timeout)


@dataclass
class ClusterState:
    """What a module may change on the shared cluster and must put back: the namespaces (and their pods), every
    node's labels, and the ComputePools' specs."""

    namespaces: set[str] = field(default_factory=set)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, kubectl: Kubectl) -> ClusterState:
        return cls(
            namespaces={n["metadata"]["name"] for n in _items(kubectl, "namespaces")},
            node_labels={n["metadata"]["name"]: dict(n["metadata"].get("labels") or {}) for n in _items(kubectl, "nodes")},
            pools={p["metadata"]["name"]: p for p in _items(kubectl, POOLS)},
        )

    def restore(self, kubectl: Kubectl, timeout: float = 180.0) -> list[str]:
        """Put the cluster back as it was when read; returns what had been left behind (empty when nothing)."""
        now = ClusterState.read(kubectl)
        leaks: list[str] = []

        extra = sorted(now.namespaces - self.namespaces - SYSTEM_NAMESPACES)
        if extra:
            leaks.append(f"namespaces {extra}")
            delete_namespaces(kubectl, extra, timeout)

        for node, labels in self.node_labels.items():
            current = now.node_labels.get(node)
            if current is None or current == labels:
                continue
            changes = [f"{k}={v}" for k, v in labels.items() if current.get(k) != v]
            changes += [f"{k}-" for k in current if k not in labels]
            leaks.append(f"node {node} labels ({', '.join(changes)} to restore)")
            kubectl("label", "node", node, *changes, "--overwrite")

        for name in sorted(set(now.pools) - set(self.pools)):
            leaks.append(f"ComputePool {name}")
            kubectl("delete", POOLS, name, "--ignore-not-found", "--wait=true", "--timeout=60s")
        for name, pool in self.pools.items():
            live = now.pools.get(name)
            if live is None:
                leaks.append(f"ComputePool {name} deleted")
                kubectl("create", "-f", "-", input=json.dumps({
                    "apiVersion": pool["apiVersion"], "kind": pool["kind"],
                    "metadata": {k: v for k, v in pool["metadata"].items() if k in ("name", "labels", "annotations")},
                    "spec": pool["spec"]}))
            elif live.get("spec") != pool.get("spec"):
                leaks.append(f"ComputePool {name} spec")
                reset_spec(kubectl, POOLS, name, pool["spec"])
        return leaks


def reset_spec(kubectl: Kubectl, kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> None:
    """Set the object's spec to exactly ``spec`` (fields added since go too), whatever its resourceVersion.

    A JSON patch replacing ``/spec`` is unconditional: unlike ``kubectl replace`` with a stored document (custom
    resources refuse an update without a resourceVersion, and a stale one conflicts whenever the operator wrote the
    status in between), it cannot fail with Conflict.
    """
    ns = ["-n", namespace] if namespace else []
    kubectl("patch", kind, name, *ns, "--type=json", "-p", json.dumps([{"op": "replace", "path": "/spec", "value": spec}]))
