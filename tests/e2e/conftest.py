"""End-to-end fixtures: real moto_server S3, real Prometheus, the pod runner, the operator with its cost controller.

All session-scoped and shared, so a later test (e.g. the dashboards' panel check) can query the same Prometheus
after a closed-loop run has filled it:

* ``moto_s3``: a moto_server with the small test artifact pushed (``.uri``, ``.sha256``, ``.endpoint``);
* ``prometheus``: :class:`LocalPrometheus` scraping the pod runner's ``targets.json`` and the operator; ``stop()`` and
  ``start()`` simulate an outage (same URL, same data);
* ``pod_runner``: real model-server processes for pods on kwok nodes (``.servers()``, ``.targets()``);
* ``hybridrec_api``: the CRDs and the sample ComputePools applied;
* ``operator_with_controller``: the operator serving :data:`E2E_NAMESPACE` with the cost controller every 5 s.

Everything binds 127.0.0.1 and dies with the test process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import MotoS3, OperatorProcess, PodRunnerProcess, eventually
from support.stack import E2E_CONTROL_INTERVAL_S as CONTROL_INTERVAL_S
from support.stack import E2E_NAMESPACE

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.promlocal import LocalPrometheus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def moto_s3(e2e_dir: Path) -> Iterator[MotoS3]:
    s3 = MotoS3(e2e_dir / "s3").start()
    try:
        s3.push_small_artifact()
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def prometheus(e2e_dir: Path) -> Iterator[LocalPrometheus]:
    prom = LocalPrometheus(e2e_dir / "prometheus", sd_dir=e2e_dir / "runner", scrape_interval_s=2.0)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def hybridrec_api(cluster: LocalCluster) -> LocalCluster:
    """CRDs and the four sample ComputePools (they match the kwok nodes)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "manifests" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/computepools.hybridrec.io", "crd/recmodeldeployments.hybridrec.io")
    # The API server may answer "no matches for kind" for a moment after Established.
    eventually(lambda: cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "samples" / "pools.yaml"), check=False).returncode == 0,
               30, 1.0, "sample ComputePools applied")
    return cluster


@pytest.fixture(scope="session")
def pod_runner(cluster: LocalCluster, moto_s3: MotoS3, prometheus: LocalPrometheus) -> Iterator[PodRunnerProcess]:
    assert prometheus.sd_dir is not None
    runner = PodRunnerProcess(kubeconfig=cluster.kubeconfig, state_dir=prometheus.sd_dir, s3=moto_s3).start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def operator_with_controller(hybridrec_api: LocalCluster, prometheus: LocalPrometheus, e2e_dir: Path) -> Iterator[OperatorProcess]:
    hybridrec_api.kubectl("create", "namespace", E2E_NAMESPACE, check=False)
    op = OperatorProcess(
        kubeconfig=hybridrec_api.kubeconfig,
        workdir=e2e_dir / "operator",
        namespaces=[E2E_NAMESPACE],
        prometheus_url=prometheus.url,
        interval_s=CONTROL_INTERVAL_S,
        env={
            "HYBRIDREC_OBSERVE_WINDOW_SECONDS": "10",
            "HYBRIDREC_METRICS_MAX_AGE_SECONDS": "10",
            "HYBRIDREC_RESYNC_SECONDS": "30",
            # Retraining passes every 2 s (test_retraining.py): a promotion's rollout and bake are seen promptly.
            "HYBRIDREC_TRAINING_INTERVAL_SECONDS": "2",
        },
    ).start()
    prometheus.set_operator_targets([op.metrics_address], {"instance_role": "operator"})
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def prometheus_restored(prometheus: LocalPrometheus) -> Iterator[LocalPrometheus]:
    """The session Prometheus, started again after the test whatever the test did to it."""
    try:
        yield prometheus
    finally:
        if not prometheus.running:
            prometheus.start()
            time.sleep(0.5)
