"""Root fixtures: a real local control plane for tests marked ``cluster`` (and e2e).

Importing this file is cheap (no cluster, no kubernetes client): the cluster starts lazily, once per session, the
first time a test asks for ``cluster``, ``kubectl`` or ``kube_api``. Missing binaries fail those tests with the
build command; they never skip, because CI must run them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from hybridrec_local.localcluster import BUILD_COMMAND, LocalCluster

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

CLUSTER_UP_TIMEOUT = float(os.environ.get("HYBRIDREC_CLUSTER_TIMEOUT", "240"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A fresh LocalCluster in a temporary workdir, torn down at the end of the session.

    Its processes get PR_SET_PDEATHSIG, so even a killed pytest leaves nothing running.
    """
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), die_with_parent=True)
    missing = c.missing_binaries()
    if missing:
        pytest.fail(f"cluster tests need {', '.join(missing)} in {c.bin_dir}: run `{BUILD_COMMAND}` "
                    "(or set HYBRIDREC_BIN)", pytrace=False)
    c.up(timeout=CLUSTER_UP_TIMEOUT)
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    """``kubectl(*args, input=None, check=True) -> CompletedProcess`` against the session cluster (admin)."""
    return cluster.kubectl


@pytest.fixture(scope="session")
def kube_api(cluster: LocalCluster) -> Iterator[ApiClient]:
    """A ``kubernetes.client.ApiClient`` for the session cluster (admin credentials)."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()

