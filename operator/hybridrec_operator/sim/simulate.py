"""The simulator's public surface, one import away: ``hybridrec simulate``, the benchmark and the tests use it.

The pieces live in ``traces`` (CSV format, validation, real traces, noise), ``cluster`` (pods, capacities, spot
reclaims), ``latency`` (p95 of a batching replica), ``policies`` (hybridrec and the baselines), ``engine`` (the
replay loop, the oracle, the summary) and ``plots``.
"""

from __future__ import annotations

from hybridrec_operator.sim.cluster import Cluster, Pod, Reclaims, View, capacities
from hybridrec_operator.sim.engine import (
    DEFAULT_START,
    PolicyResult,
    parse_objects,
    run_oracle,
    run_policy,
    simulate,
    summary_rows,
)
from hybridrec_operator.sim.plots import write_plots
from hybridrec_operator.sim.policies import DEFAULT_KEDA_THRESHOLD, POLICIES, AllocatorPolicy, HpaPolicy, StaticPolicy, make_policy
from hybridrec_operator.sim.traces import Trace, TraceError, demand_shape, parse_trace_csv, tick_demand, trace_to_csv

__all__ = [
    "DEFAULT_KEDA_THRESHOLD",
    "DEFAULT_START",
    "POLICIES",
    "AllocatorPolicy",
    "Cluster",
    "HpaPolicy",
    "Pod",
    "PolicyResult",
    "Reclaims",
    "StaticPolicy",
    "Trace",
    "TraceError",
    "View",
    "capacities",
    "demand_shape",
    "make_policy",
    "parse_objects",
    "parse_trace_csv",
    "run_oracle",
    "run_policy",
    "simulate",
    "summary_rows",
    "tick_demand",
    "trace_to_csv",
    "write_plots",
]
