"""The operator suite's fixtures (tests/integration/operator/conftest.py), reused as they are: the local control
plane, CRDs, sample pools and admission policy installed once, one shared standalone operator process, a fresh
namespace per test, and the operator's log attached to a failing test's report.

The file is loaded under its own module name: two modules called ``conftest`` clash when both folders are collected.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_OPERATOR_SUITE = Path(__file__).resolve().parents[1] / "operator"
sys.path.insert(0, str(_OPERATOR_SUITE))  # operator_harness, which that conftest imports
_spec = importlib.util.spec_from_file_location("operator_suite_conftest", _OPERATOR_SUITE / "conftest.py")
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

operator_log_dir = _suite.operator_log_dir
shared_operator = _suite.shared_operator
operator = _suite.operator
namespace = _suite.namespace
pytest_runtest_makereport = _suite.pytest_runtest_makereport
