"""Child objects of a RecModelDeployment, as plain dicts (pure, dask-kubernetes style ``build_*``).

One Deployment per pool with replicas (``<model>-<pool>``), one Service over all pools, one PodDisruptionBudget when
the model can run more than one replica (``wants_pdb``); a ResourceClaimTemplate per DRA pool with a Deployment
(``build_claim_template``: the pods claim their GPUs as devices, ``core/dra.py``); for confidential/restricted models a NetworkPolicy
(``build_network_policy``) admitting only the clients the spec names and the metrics scrape from the monitoring
namespace.
Every pod carries the pool's nodeSelector and tolerations plus a *required* node affinity on its tenancy; pods of
confidential/restricted models require ``hybridrec.io/tenancy In [private]`` in every term, which the
ValidatingAdmissionPolicy in ``manifests/policy/`` enforces again at admission.
Owner references are left to the caller (kopf.adopt); ``owner_reference`` builds one for callers that need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from hybridrec_operator.api.models import (
    API_VERSION,
    SENSITIVE,
    ComputePool,
    LabelSelector,
    NetworkPeer,
    RecModelDeployment,
    Tenancy,
)
from hybridrec_operator.core import dra, remote
from hybridrec_operator.core.placement import PlacementPlan
from hybridrec_operator.core.sensitivity import pool_admits
from hybridrec_operator.core.training import served_model

APP_NAME = "hybridrec-server"
MANAGER = "hybridrec"
COMPONENT = "inference"
MODEL_LABEL = "hybridrec.io/model"
POOL_LABEL = "hybridrec.io/pool"
TENANCY_LABEL = "hybridrec.io/tenancy"
SENSITIVITY_LABEL = "hybridrec.io/sensitivity"
CONTAINER = "server"
PORT_NAME = "http"
MODEL_CACHE_DIR = "/var/cache/hybridrec"
RUN_AS = 10001
TERMINATION_GRACE_SECONDS = 30
# Where Prometheus runs, as a namespaceSelector: the label every namespace carries (Kubernetes >= 1.22).
DEFAULT_MONITORING_NAMESPACE_SELECTOR: Mapping[str, str] = MappingProxyType(
    {"kubernetes.io/metadata.name": "monitoring"}
)


def child_name(model: str, pool: str) -> str:
    """``<model>-<pool>``; the CRD name limits keep it a valid 63-character DNS label."""
    return f"{model}-{pool}"


def model_labels(rmd: RecModelDeployment) -> dict[str, str]:
    """Labels every child of the model carries (pool-spanning objects: Service, PDB)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": rmd.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGER,
        MODEL_LABEL: rmd.name,
        SENSITIVITY_LABEL: rmd.spec.data_sensitivity.value,
    }


def pool_labels(rmd: RecModelDeployment, pool: ComputePool) -> dict[str, str]:
    """Labels of a per-pool Deployment and its pods."""
    return {**model_labels(rmd), POOL_LABEL: pool.name, TENANCY_LABEL: pool.spec.tenancy.value}


def model_selector(rmd: RecModelDeployment) -> dict[str, str]:
    """matchLabels selecting all the model's pods, across pools."""
    return {"app.kubernetes.io/name": APP_NAME, MODEL_LABEL: rmd.name}


def selector_for(rmd: RecModelDeployment) -> str:
    """The label selector string for ``status.selector`` (scale subresource: HPA/KEDA count the model's pods)."""
    return ",".join(f"{k}={v}" for k, v in model_selector(rmd).items())


def owner_reference(rmd_body: Mapping[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the RecModelDeployment (garbage-collects children with it)."""
    meta = rmd_body.get("metadata") or {}
    return {
        "apiVersion": rmd_body.get("apiVersion", API_VERSION),
        "kind": rmd_body.get("kind", "RecModelDeployment"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def node_affinity(rmd: RecModelDeployment, pool: ComputePool) -> dict[str, Any]:
    """Required node affinity on the pool's tenancy: the scheduler cannot put the pod on the other kind of node."""
    tenancy = pool.spec.tenancy
    if rmd.spec.data_sensitivity in SENSITIVE and tenancy != Tenancy.PRIVATE:
        # Defence in depth: the planner never does this; refuse to render it rather than trust the caller.
        raise ValueError(f"{rmd.spec.data_sensitivity.value} model {rmd.name} cannot run on public pool {pool.name}")
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": TENANCY_LABEL, "operator": "In", "values": [tenancy.value]}]}
            ]
        }
    }


def _tolerations(pool: ComputePool) -> list[dict[str, Any]]:
    """The pool's tolerations without empty fields (an empty key/effect means "any" only when omitted cleanly), plus
    Liqo's virtual-node taint for a pool on a remote cluster (``core/remote.py``)."""
    rendered = [{k: v for k, v in t.to_wire().items() if v != ""} for t in pool.spec.tolerations]
    return rendered + remote.extra_tolerations(pool.spec, rendered)


def server_env(rmd: RecModelDeployment, pool: ComputePool) -> list[dict[str, str]]:
    """The HYBRIDREC_* environment of the contract."""
    spec = rmd.spec
    model = served_model(rmd)  # spec.model, or the version a training run promoted over it (core/training.py)
    env = {
        "HYBRIDREC_MODEL_URI": model.uri,
        "HYBRIDREC_MODEL_SHA256": model.sha256,
        "HYBRIDREC_MODEL_NAME": rmd.name,
        "HYBRIDREC_NAMESPACE": rmd.namespace,
        "HYBRIDREC_POOL": pool.name,
        "HYBRIDREC_PORT": str(spec.serving.port),
        "HYBRIDREC_MAX_BATCH_SIZE": str(spec.serving.max_batch_size),
        "HYBRIDREC_MAX_BATCH_DELAY_MS": str(spec.serving.max_batch_delay_ms),
        "HYBRIDREC_MAX_QUEUE": str(spec.serving.max_queue),
        "HYBRIDREC_MODEL_CACHE_DIR": MODEL_CACHE_DIR,
    }
    return [{"name": k, "value": v} for k, v in env.items() if v is not None]


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(rmd: RecModelDeployment, pool: ComputePool) -> dict[str, Any]:
    spec = rmd.spec
    # A DRA pool's GPUs come from the pod's ResourceClaim (build_claim_template), not an extended-resource limit.
    gpus = {} if pool.spec.gpu.dra is not None else {pool.spec.gpu.resource_name: str(spec.resources.gpus)}
    # Model download + load can take a while on a fresh node; the startup probe covers it so liveness can stay strict.
    startup_failures = max(12, (pool.spec.startup_seconds + 300) // 5)
    return {
        "name": CONTAINER,
        "image": spec.serving.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": spec.serving.port, "protocol": "TCP"}],
        "env": server_env(rmd, pool),
        "resources": {
            "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory, **gpus},
            "limits": {"memory": spec.resources.memory, **gpus},
            **({"claims": [{"name": dra.CLAIM}]} if pool.spec.gpu.dra is not None else {}),
        },
        "startupProbe": _probe("/healthz", 5, startup_failures),
        "readinessProbe": _probe("/readyz", 5, 2),
        "livenessProbe": _probe("/healthz", 10, 3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def build_deployment(rmd: RecModelDeployment, pool: ComputePool, replicas: int) -> dict[str, Any]:
    """The Deployment running ``replicas`` of the model on ``pool``."""
    labels = pool_labels(rmd, pool)
    selector = {**model_selector(rmd), POOL_LABEL: pool.name}
    pod_spec: dict[str, Any] = {
        "nodeSelector": dict(pool.spec.node_selector),
        "affinity": {"nodeAffinity": node_affinity(rmd, pool)},
        "containers": [_container(rmd, pool)],
        "volumes": [
            {"name": "model-cache", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
    }
    if tolerations := _tolerations(pool):
        pod_spec["tolerations"] = tolerations
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(rmd.spec.serving.port),
        "prometheus.io/path": "/metrics",
    }
    if (gpu := pool.spec.gpu.dra) is not None:
        pod_spec["resourceClaims"] = dra.pod_claims(build_claim_template(rmd, pool)["metadata"]["name"])
        annotations.update(dra.pod_annotations(gpu.device_class_name, rmd.spec.resources.gpus))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": child_name(rmd.name, pool.name), "namespace": rmd.namespace, "labels": labels},
        "spec": {
            "replicas": max(0, int(replicas)),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            # A spare GPU is rarely free: replace pods one at a time, and only drop one once its successor is ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def build_claim_template(rmd: RecModelDeployment, pool: ComputePool) -> dict[str, Any]:
    """The ResourceClaimTemplate of the model on a DRA pool (``gpu.dra``): ``resources.gpus`` devices of the pool's
    DeviceClass per replica, named ``<model>-<pool>-<spec hash>`` (core/dra.py)."""
    gpu = pool.spec.gpu.dra
    if gpu is None:
        raise ValueError(f"pool {pool.name} does not use DRA")
    return dra.build_claim_template(child_name(rmd.name, pool.name), rmd.namespace, pool_labels(rmd, pool),
                                    gpu.device_class_name, gpu.selectors, rmd.spec.resources.gpus)


def build_service(rmd: RecModelDeployment) -> dict[str, Any]:
    """One ClusterIP Service over the model's pods in every pool."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": rmd.name, "namespace": rmd.namespace, "labels": model_labels(rmd)},
        "spec": {
            "type": "ClusterIP",
            "selector": model_selector(rmd),
            "ports": [{"name": PORT_NAME, "port": rmd.spec.serving.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def max_replicas(rmd: RecModelDeployment) -> int:
    """The most replicas the model can ever run: the pinned ``spec.replicas``, else ``scaling.maxReplicas``."""
    return rmd.spec.replicas if rmd.spec.replicas is not None else rmd.spec.scaling.max_replicas


def wants_pdb(rmd: RecModelDeployment) -> bool:
    """Whether the model gets a PodDisruptionBudget: only when it can run more than one replica. With one pod,
    ``maxUnavailable: 1`` lets every eviction through, so the budget protects nothing and cost an object and a
    write per model. A spec-level rule (not the current plan), so scaling between 1 and 2 never churns the PDB."""
    return max_replicas(rmd) > 1


def build_pdb(rmd: RecModelDeployment) -> dict[str, Any]:
    """At most one of the model's pods voluntarily disrupted at a time, across pools."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": rmd.name, "namespace": rmd.namespace, "labels": model_labels(rmd)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": model_selector(rmd)}},
    }


def _selector(selector: LabelSelector) -> dict[str, Any]:
    """A LabelSelector in its wire form without empty fields (the API server omits them, so a drift check comparing
    with the live object would see a difference forever); the empty selector stays ``{}`` (it means "all")."""
    return {k: v for k, v in selector.to_wire().items() if v}


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def build_network_policy(
    rmd: RecModelDeployment,
    monitoring_namespace_selector: Mapping[str, str] = DEFAULT_MONITORING_NAMESPACE_SELECTOR,
) -> dict[str, Any] | None:
    """Ingress to a confidential/restricted model's pods: only ``serving.allowedClients`` (unset: pods of the model's
    own namespace) and the metrics scrape from the monitoring namespace, both on the serving port (it also serves
    ``/metrics``). ``None`` for public and internal models (no policy: they take traffic as any Service does).

    Egress is left alone: the server must reach its artifact store, which the spec does not name.
    """
    if rmd.spec.data_sensitivity not in SENSITIVE:
        return None
    port = [{"protocol": "TCP", "port": rmd.spec.serving.port}]
    clients = rmd.spec.serving.allowed_clients
    peers = [_peer(p) for p in clients] if clients is not None else [{"podSelector": {}}]
    ingress: list[dict[str, Any]] = []
    if peers:
        ingress.append({"from": peers, "ports": port})
    ingress.append({"from": [{"namespaceSelector": {"matchLabels": dict(monitoring_namespace_selector)}}], "ports": port})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": rmd.name, "namespace": rmd.namespace, "labels": model_labels(rmd)},
        "spec": {
            "podSelector": {"matchLabels": model_selector(rmd)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def build_children(
    rmd: RecModelDeployment,
    plan: PlacementPlan,
    pools: Mapping[str, ComputePool],
    *,
    keep_pools: Iterable[str] = (),
    network_policy: bool = False,
    monitoring_namespace_selector: Mapping[str, str] = DEFAULT_MONITORING_NAMESPACE_SELECTOR,
) -> list[dict[str, Any]]:
    """Every child the plan implies: a Deployment per assigned pool, then the Service and (``wants_pdb``) the PDB.

    ``keep_pools``: pools whose Deployment should stay at 0 replicas rather than disappear (saves a re-create when
    the model comes back soon); pools that no longer exist or no longer admit the model are skipped.
    ``network_policy``: also the NetworkPolicy of a confidential/restricted model (off until the controller has
    the RBAC for networkpolicies and applies the kind).
    """
    children = [build_deployment(rmd, pools[a.pool], a.replicas) for a in plan.assignments if a.replicas > 0]
    assigned = {a.pool for a in plan.assignments if a.replicas > 0}
    for name in sorted(set(keep_pools) - assigned):
        admitted = name in pools and pool_admits(
            rmd.spec.data_sensitivity, pools[name].spec, allow_public_burst=rmd.spec.placement.allow_public_burst
        )[0]
        if admitted:
            children.append(build_deployment(rmd, pools[name], 0))
    # A DRA pool's Deployment needs its ResourceClaimTemplate (applied before it: core/decide.py orders them).
    children += [build_claim_template(rmd, pools[c["metadata"]["labels"][POOL_LABEL]]) for c in list(children)
                 if pools[c["metadata"]["labels"][POOL_LABEL]].spec.gpu.dra is not None]
    children.append(build_service(rmd))
    if wants_pdb(rmd):
        children.append(build_pdb(rmd))
    if network_policy and (policy := build_network_policy(rmd, monitoring_namespace_selector)) is not None:
        children.append(policy)
    return children
