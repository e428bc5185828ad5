"""The control plane's components and its fake nodes: the command line of each binary (pure functions of paths
and ports) and the kwok node set from ``hack/cluster/nodes.yaml``. The bring-up order lives in
:mod:`hybridrec_local.localcluster`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.pki import CLUSTER_NAME, FRONT_PROXY_CLIENT, Pki

# The kwok configuration and the fake nodes (four pools, nine GPU nodes).
CONFIG_DIR = Path(os.environ.get("HYBRIDREC_CLUSTER_CONFIG", Path(__file__).resolve().parents[2] / "hack" / "cluster"))
NODES_FILE = CONFIG_DIR / "nodes.yaml"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kwok manages only nodes carrying this annotation, so it never touches a real node of another cluster.
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"


def etcd_argv(binary: Path, workdir: Path, ports: Mapping[str, int]) -> list[str]:
    """etcd: one member on loopback, data under ``workdir/etcd``."""
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
    return [str(binary), "--name=hybridrec", f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=hybridrec={peer}", "--initial-cluster-state=new",
            # A throwaway dev/test store: durability is not worth an fsync per write on a shared 2-core box.
            "--unsafe-no-fsync", "--log-level=warn"]


def apiserver_argv(binary: Path, workdir: Path, pki: Pki, ports: Mapping[str, int]) -> list[str]:
    """kube-apiserver: RBAC, client certificates, ServiceAccount tokens, the aggregation layer."""
    return [str(binary),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={workdir / 'pki' / 'kube-apiserver'}",
            f"--tls-cert-file={pki.crt('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.crt('ca')}",
            f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # Aggregation layer (metrics/custom-metrics APIs); also lets the controller-manager and scheduler
            # find a complete extension-apiserver-authentication ConfigMap for their delegated authn.
            f"--requestheader-client-ca-file={pki.crt('front-proxy-ca')}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.crt('front-proxy-client')}",
            f"--proxy-client-key-file={pki.key('front-proxy-client')}",
            # Added to the default admission chain (which includes ValidatingAdmissionPolicy, GA since 1.30).
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # A loopback advertise address cannot be an Endpoints IP; nothing in-cluster needs the kubernetes
            # Service to route anyway (pods are simulated by kwok).
            "--endpoint-reconciler-type=none",
            "--profiling=false"]


def controller_manager_argv(binary: Path, workdir: Path, pki: Pki, ports: Mapping[str, int],
                            kc: Mapping[str, Path]) -> list[str]:
    """kube-controller-manager: every default controller (Deployments, garbage collector, ServiceAccount tokens)."""
    own = kc["kube-controller-manager"]
    return [str(binary),
            f"--kubeconfig={own}", f"--authentication-kubeconfig={own}", f"--authorization-kubeconfig={own}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kube-controller-manager']}",
            f"--cert-dir={workdir / 'pki' / 'kube-controller-manager'}",
            "--leader-elect=false",
            # ServiceAccount token controller + kube-root-ca.crt publisher.
            f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.crt('ca')}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.crt('ca')}", f"--cluster-signing-key-file={pki.key('ca')}",
            f"--cluster-name={CLUSTER_NAME}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Default set (deployment, replicaset, garbage collector, disruption, serviceaccount-token, ...).
            "--controllers=*",
            "--profiling=false"]


def scheduler_argv(binary: Path, workdir: Path, ports: Mapping[str, int], kc: Mapping[str, Path]) -> list[str]:
    """kube-scheduler with its default profile: the real filters (taints, affinity, resources) bind the pods."""
    own = kc["kube-scheduler"]
    return [str(binary),
            f"--kubeconfig={own}", f"--authentication-kubeconfig={own}", f"--authorization-kubeconfig={own}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kube-scheduler']}",
            f"--cert-dir={workdir / 'pki' / 'kube-scheduler'}",
            "--leader-elect=false", "--profiling=false"]


def kwok_argv(binary: Path, ports: Mapping[str, int], kc: Mapping[str, Path]) -> list[str]:
    """kwok: makes the fake nodes Ready and their bound pods Running."""
    return [str(binary), f"--kubeconfig={kc['kwok']}", f"--config={CONFIG_DIR / 'kwok.yaml'}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}"]


def node_names(nodes_yaml: Path = NODES_FILE) -> set[str]:
    """Names of the Node objects in a multi-document YAML file."""
    return {d["metadata"]["name"] for d in yaml.safe_load_all(nodes_yaml.read_text())
            if d and d.get("kind") == "Node"}


def ready_node_names(nodes: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the nodes (API objects) whose Ready condition is True."""
    return {n["metadata"]["name"] for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))}
