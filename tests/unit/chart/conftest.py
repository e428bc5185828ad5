"""Fixtures of the chart unit tests: the real helm and promtool binaries (missing ones fail with the install command)."""

from __future__ import annotations

import pytest
from chart_helpers import binary


@pytest.fixture(scope="session")
def helm() -> str:
    return binary("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")
