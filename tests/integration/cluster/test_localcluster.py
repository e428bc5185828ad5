"""The embedded control plane behaves like a cluster: real scheduler, controllers, RBAC, admission; kwok nodes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from hybridrec_local.localcluster import BUILD_COMMAND, ClusterError, LocalCluster
from hybridrec_local.processes import descendant_pids
from support.cleanup import delete_namespace
from support.stack import wait_for

# pool -> (nodes, GPUs per node, tenancy, capacity type or None, GPU model)
POOLS: dict[str, tuple[int, int, str, str | None, str]] = {
    "onprem-a100": (2, 4, "private", None, "NVIDIA-A100-SXM4-80GB"),
    "onprem-t4": (2, 2, "private", None, "Tesla-T4"),
    "aws-spot-l4": (3, 4, "public", "spot", "NVIDIA-L4"),
    "gcp-ondemand-a100": (2, 8, "public", "on-demand", "NVIDIA-A100-SXM4-40GB"),
}
PUBLIC_TOLERATION = {"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public", "effect": "NoSchedule"}


@pytest.fixture
def namespace(kube_api: ApiClient, cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    # Pods need the namespace's default ServiceAccount, created asynchronously by the controller-manager.
    wait_for(lambda: _exists(lambda: core.read_namespaced_service_account("default", name)), 30, "default SA")
    yield name
    # Awaited gone: these GPU pods (all of aws-spot-l4, for one test) would otherwise hold GPUs later tests need.
    delete_namespace(cluster.kubectl, name)


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def gpu_deployment(name: str, replicas: int, pool: str, gpus: int, public: bool) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"hybridrec.io/pool": pool},
                    "tolerations": [PUBLIC_TOLERATION] if public else [],
                    "containers": [{
                        "name": "server", "image": "hybridrec/model-server:test",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"nvidia.com/gpu": str(gpus), "memory": "1Gi"}},
                    }],
                },
            },
        },
    }


def ready_pods(core: client.CoreV1Api, ns: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(ns, label_selector=f"app={app}").items
    return [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def unschedulable_message(pod: client.V1Pod) -> str | None:
    for c in pod.status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            return c.message or ""
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Against the shared session cluster


@pytest.mark.cluster
def test_nine_fake_gpu_nodes_are_ready_with_pool_labels_and_taints(kube_api: ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    by_pool: dict[str, list[client.V1Node]] = {}
    for node in nodes:
        by_pool.setdefault(node.metadata.labels["hybridrec.io/pool"], []).append(node)
    assert {pool: len(ns) for pool, ns in by_pool.items()} == {pool: spec[0] for pool, spec in POOLS.items()}
    for pool, (_, gpus, tenancy, capacity_type, model) in POOLS.items():
        for node in by_pool[pool]:
            labels = node.metadata.labels
            assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions), node.metadata.name
            assert node.status.allocatable["nvidia.com/gpu"] == str(gpus)
            assert (node.status.allocatable["cpu"], node.status.allocatable["memory"],
                    node.status.allocatable["pods"]) == ("32", "256Gi", "110")
            assert labels["hybridrec.io/tenancy"] == tenancy
            assert labels["nvidia.com/gpu.product"] == model
            assert labels["type"] == "kwok"
            assert labels.get("karpenter.sh/capacity-type") == capacity_type
            assert labels["topology.kubernetes.io/region"]
            taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
            assert (("hybridrec.io/tenancy", "public", "NoSchedule") in taints) == (tenancy == "public")


@pytest.mark.cluster
def test_gpu_deployment_is_placed_by_the_scheduler_on_the_public_spot_pool(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("ranker", 3, "aws-spot-l4", gpus=4, public=True))

    pods = wait_for(lambda: len(ready_pods(core, namespace, "ranker")) == 3 and ready_pods(core, namespace, "ranker"),
                    60, "3 Running/Ready pods")
    nodes = [p.spec.node_name for p in pods]
    # 4 GPUs per pod on 4-GPU nodes: the scheduler must spread them one per node across the pool.
    assert sorted(nodes) == ["aws-spot-l4-0", "aws-spot-l4-1", "aws-spot-l4-2"]
    assert all(p.status.pod_ip for p in pods)

    apps.patch_namespaced_deployment_scale("ranker", namespace, {"spec": {"replicas": 4}})

    def pending_message() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=ranker").items
        return next((m for p in pods if (m := unschedulable_message(p)) is not None), None)

    message = wait_for(pending_message, 30, "the fourth pod to be unschedulable")
    assert "Insufficient nvidia.com/gpu" in message
    assert len(ready_pods(core, namespace, "ranker")) == 3


@pytest.mark.cluster
def test_public_taint_keeps_pods_without_the_toleration_off_public_nodes(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("untolerated", 1, "gcp-ondemand-a100", 1, public=False))

    def message() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=untolerated").items
        return next((m for p in pods if (m := unschedulable_message(p)) is not None), None)

    assert "untolerated taint" in wait_for(message, 30, "an unschedulable pod")


@pytest.mark.cluster
def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("private-model", 2, "onprem-t4", 1, public=False))
    pods = wait_for(lambda: len(ready_pods(core, namespace, "private-model")) == 2
                    and ready_pods(core, namespace, "private-model"), 60, "2 Ready pods")
    assert {p.spec.node_name for p in pods} <= {"onprem-t4-0", "onprem-t4-1"}
    assert len(apps.list_namespaced_replica_set(namespace).items) == 1

    apps.delete_namespaced_deployment("private-model", namespace, propagation_policy="Background")

    wait_for(lambda: not apps.list_namespaced_replica_set(namespace).items
             and not core.list_namespaced_pod(namespace).items, 60, "ReplicaSets and pods to be collected")


@pytest.mark.cluster
def test_disruption_controller_tracks_a_pod_disruption_budget(kube_api: ApiClient, namespace: str) -> None:
    apps, policy = client.AppsV1Api(kube_api), client.PolicyV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("guarded", 2, "onprem-a100", 1, public=False))
    policy.create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
    })

    def healthy() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("guarded", namespace).status
        return bool(status and status.current_healthy == 2 and status.disruptions_allowed == 1)

    wait_for(healthy, 60, "PDB status from the disruption controller")


@pytest.mark.cluster
def test_service_account_tokens_authenticate_and_rbac_limits_them(cluster: LocalCluster, kube_api: ApiClient,
                                                                   namespace: str) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}).status.token

    cfg = client.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.pki.crt("ca"))
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as as_reader:
        review = client.AuthenticationV1Api(as_reader).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_reader).list_namespaced_pod(namespace)
        assert denied.value.status == 403

        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
        assert wait_for(lambda: _can_list_pods(as_reader, namespace), 15, "RBAC grant to apply")
        with pytest.raises(ApiException) as still_denied:
            client.CoreV1Api(as_reader).list_namespaced_pod("default")
        assert still_denied.value.status == 403

    # The controller-manager's token controller signs legacy token Secrets with the same key pair.
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "reader-token", "annotations": {"kubernetes.io/service-account.name": "reader"}},
        "type": "kubernetes.io/service-account-token"})
    secret = wait_for(lambda: (s := core.read_namespaced_secret("reader-token", namespace)).data
                      and "token" in s.data and s, 30, "the token controller to fill the Secret")
    assert "ca.crt" in secret.data
    # Root-CA publisher: every namespace gets the cluster CA for in-cluster clients.
    ca = wait_for(lambda: _exists(lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace))
                  and core.read_namespaced_config_map("kube-root-ca.crt", namespace), 30, "kube-root-ca.crt")
    assert ca.data["ca.crt"].strip() == cluster.pki.crt("ca").read_text().strip()


def _can_list_pods(api: ApiClient, namespace: str) -> bool:
    try:
        client.CoreV1Api(api).list_namespaced_pod(namespace)
    except ApiException as exc:
        if exc.status == 403:
            return False
        raise
    return True


@pytest.mark.cluster
def test_validating_admission_policy_is_enforced(kube_api: ApiClient, namespace: str) -> None:
    adm = client.AdmissionregistrationV1Api(kube_api)
    apps = client.AppsV1Api(kube_api)
    name = f"max-replicas-{namespace}"
    adm.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"}],
        }})
    adm.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        def denied() -> str | None:
            try:
                apps.create_namespaced_deployment(
                    namespace, gpu_deployment("too-big", 6, "onprem-t4", 1, public=False), dry_run="All")
            except ApiException as exc:
                return exc.body if exc.status in (403, 422) else None
            return None

        # Policies reach the admission plugin through an informer: allow a moment for it to sync.
        assert "at most 5 replicas" in wait_for(denied, 30, "the policy to deny")
        apps.create_namespaced_deployment(namespace, gpu_deployment("ok", 5, "onprem-t4", 0, public=False),
                                          dry_run="All")
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)


# ---------------------------------------------------------------------------------------------------------------------
# Lifecycle: separate clusters in their own workdirs


def test_missing_binaries_name_the_build_command(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(ClusterError) as err:
        LocalCluster(tmp_path / "cluster", bin_dir=empty).up(timeout=5)
    assert BUILD_COMMAND in str(err.value)
    assert "kube-apiserver" in str(err.value)
    assert not (tmp_path / "cluster" / "state.json").exists()


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (our workdirs are unique temp paths)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.cluster
def test_a_taken_port_names_the_component_and_stops_what_was_started(tmp_path: Path) -> None:
    import socket

    # Bound but not listening: the pre-flight connect check passes, the API server's own bind() fails.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    workdir = tmp_path / "cluster"
    try:
        with pytest.raises(ClusterError) as err:
            LocalCluster(workdir, die_with_parent=True, ports={"kube-apiserver": port}).up(timeout=60)
    finally:
        blocker.close()
    message = str(err.value)
    assert message.startswith("kube-apiserver exited"), message
    assert "address already in use" in message
    assert _processes_mentioning(str(workdir)) == []  # etcd, started first, was stopped again


@pytest.mark.cluster
def test_cli_cluster_runs_detached_is_reused_and_down_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "cli-cluster"
    cli = [sys.executable, "-m", "hybridrec_local.cluster_cli"]
    t0 = time.monotonic()
    up = subprocess.run([*cli, "up", "--workdir", str(workdir)], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
        assert "cluster ready" in up.stderr
        print(f"cold `hybridrec cluster up`: {time.monotonic() - t0:.1f}s")

        # The CLI process has exited; the control plane it started keeps running.
        status = subprocess.run([*cli, "status", "--workdir", str(workdir)], capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        cluster = LocalCluster(workdir, die_with_parent=True)
        before = {p.name: p.pid for p in cluster.status().processes}
        assert set(before) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

        t1 = time.monotonic()
        cluster.up(timeout=30)
        assert time.monotonic() - t1 < 5, "a healthy recorded cluster must be re-used, not restarted"
        assert {p.name: p.pid for p in cluster.status().processes} == before

        # A service with children of its own, as the demo's pod runner has.
        svc = cluster.start_process("sleeper", ["sh", "-c", "sleep 300 & sleep 300 & wait"], die_with_parent=True)
        grandchildren = wait_for(lambda: len(d := descendant_pids(svc.pid)) == 2 and d, 10, "children")
        assert cluster.kubectl("get", "nodes", "-o", "name").stdout.count("node/") == 9
    finally:
        down = subprocess.run([*cli, "down", "--workdir", str(workdir)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert "stopped 6 process(es)" in down.stderr
    assert _processes_mentioning(str(workdir)) == []
    assert not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in [*before.values(), *grandchildren])
    assert subprocess.run([*cli, "status", "--workdir", str(workdir)], capture_output=True).returncode == 1
    assert svc.wait(timeout=5) != 0  # terminated by a signal, reaped here


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
