"""The training suites' namespace: one per module, awaited gone afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from support.cleanup import delete_namespace
from support.kube import Kube


@pytest.fixture(scope="module")
def namespace(installed: Kube) -> Iterator[str]:
    name = f"training-{uuid.uuid4().hex[:6]}"
    installed("create", "namespace", name)
    yield name
    delete_namespace(installed.cluster.kubectl, name)
