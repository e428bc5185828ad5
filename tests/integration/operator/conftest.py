"""Fixtures for the operator against the real local control plane (API server, scheduler, controller-manager, kwok).

One operator process (``python -m hybridrec_operator.cli.operator run --standalone``) serves each test module;
tests that need it stopped or replaced (kill -9, leader election, RBAC) stop it and the next test gets it back. Its log
goes to a temp file whose tail is attached to the report of any failing test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import OPERATORS, Kube, OperatorProcess
from support.kube import fresh_namespace

from hybridrec_local.localcluster import LocalCluster, tail


@pytest.fixture(scope="session")
def operator_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator-logs")


@pytest.fixture(scope="module")
def shared_operator(installed: Kube, cluster: LocalCluster, operator_log_dir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, operator_log_dir, "operator", ["--standalone"])
    op.start()
    yield op
    op.stop()


@pytest.fixture
def operator(shared_operator: OperatorProcess) -> OperatorProcess:
    """The shared standalone operator, (re)started if an earlier test stopped it."""
    if not shared_operator.running:
        shared_operator.start()
    return shared_operator


@pytest.fixture
def namespace(installed: Kube) -> Iterator[str]:
    """A fresh namespace; afterwards it is deleted with its models and pods, and awaited gone."""
    with fresh_namespace(installed, "op") as name:
        yield name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and OPERATORS:
        for op in OPERATORS:
            if op.log.exists():
                report.sections.append((f"operator log: {op.name} ({op.log})", tail(op.log, 60)))
