"""Shared helpers for the integration and end-to-end tests (real processes on 127.0.0.1, bounded load).

``tests/`` is on ``sys.path`` under pytest (rootdir conftest), so tests import ``support``; scripts outside
pytest add ``tests/`` to ``sys.path`` first. The load generator is the demo's own (:mod:`hybridrec_local.loadgen`).
"""

from hybridrec_local.loadgen import LoadStats, PacedLoad, ramp, read_servers, steps
from support.operator import OperatorProcess, parse_metrics
from support.stack import (
    FAKE_AWS,
    MotoS3,
    PodRunnerProcess,
    eventually,
    log_tail,
    prom_metric_names,
    prom_query,
    prom_scalar,
    start_logged,
    stop_process,
)

__all__ = [
    "FAKE_AWS", "LoadStats", "MotoS3", "OperatorProcess", "PacedLoad", "PodRunnerProcess", "eventually", "log_tail",
    "parse_metrics", "prom_metric_names", "prom_query", "prom_scalar", "ramp", "read_servers", "start_logged", "steps",
    "stop_process",
]
