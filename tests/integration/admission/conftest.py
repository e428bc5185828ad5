"""Fixtures for the admission policies against the real local API server (no operator process: the tests act as
the operator themselves, with the admin identity the operator runs as in the local tests, and as other users through
impersonation)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cleanup import delete_namespace
from support.stack import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from admission_support import MALLORY  # noqa: E402
from support.kube import Kube  # noqa: E402


@pytest.fixture
def namespace(installed: Kube) -> Iterator[str]:
    name = f"adm-{uuid.uuid4().hex[:6]}"
    installed("create", "namespace", name)
    installed("create", "rolebinding", "mallory-edit", "--clusterrole=edit", f"--user={MALLORY}", "-n", name)
    wait_for(lambda: installed.get("serviceaccount", "default", name), 30, "the namespace's default ServiceAccount")
    yield name
    delete_namespace(installed, name)  # awaited gone: nothing of it reaches a later module's operator
