"""Isolation of the integration modules on the one session cluster (tests/conftest.py): each module that uses it
gets the cluster back as it found it, whatever its own fixtures forgot (order-dependent failures otherwise: a model
left in one module's namespace is served by the next module's operator and takes the GPUs its tests count on)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster
from support.cleanup import ClusterState
from support.kube import Kube, install_hybridrec

SAMPLE_POOLS = frozenset(
    d["metadata"]["name"]
    for d in yaml.safe_load_all((Path(__file__).resolve().parents[2] / "manifests" / "samples" / "pools.yaml").read_text())
    if d and d.get("kind") == "ComputePool")


@pytest.fixture(scope="module", autouse=True)
def cluster_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """Reads namespaces, node labels and pools before a module that uses the session cluster; afterwards deletes
    what it added (waiting until gone), restores the labels and pool specs, and warns naming what was left."""
    uses_cluster = any(getattr(item, "module", None) is request.module and "cluster" in item.fixturenames
                       for item in request.session.items)
    if not uses_cluster:
        yield
        return
    kubectl = request.getfixturevalue("cluster").kubectl
    before = ClusterState.read(kubectl)
    yield
    # The sample pools are installed once per session by whichever module comes first (its session fixture):
    # they belong to the session, not to that module.
    before.pools.update({n: p for n, p in ClusterState.read(kubectl).pools.items()
                         if n in SAMPLE_POOLS and n not in before.pools})
    leaks = before.restore(kubectl)
    if leaks:
        warnings.warn(f"{request.module.__name__} left on the shared cluster (now cleaned up): {'; '.join(leaks)}",
                      stacklevel=1)


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Kube:
    return Kube(cluster)


@pytest.fixture(scope="session")
def installed(kube: Kube) -> Kube:
    """CRDs, the sample pools and the admission policies, installed once and awaited judging."""
    return install_hybridrec(kube)
