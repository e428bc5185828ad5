"""Latency of a model's replicas in the simulator: a queueing approximation of a replica with dynamic batching.

A replica batches what arrives (``max_batch_delay`` + one forward pass per batch), so its p95 is nearly flat until
the batches fill up, then climbs steeply as arrivals approach the rate at which full batches can be served. The
measured curve of hybridrec-server with dynamic batching (``benchmarks/results/serving.md`` (b)) shows exactly
that: p95 at 17% of the 50 ms SLO up to the capacity at the SLO (1,331 RPS), 1.5x the SLO 12% above it, and
growing backlog beyond. The approximation:

* saturation throughput ``mu = SATURATION x c``, ``c`` = the replica's capacity at the SLO (per model and pool);
* ``p95(rho) = base + (slo - base) x q(rho) / q(rho_c)``, ``q(rho) = rho / (1 - rho)`` (the M/M/1-like waiting
  term), ``base = BASE x slo``, ``rho_c = 1 / SATURATION``: p95 equals the SLO exactly at ``c``, as the capacity
  is defined;
* above ``mu`` requests queue; the backlog drains at the spare rate and adds ``backlog / mu`` seconds of waiting;
  clients give up after ``TIMEOUT_SECONDS`` (the backlog never holds more than that much work), as real callers
  time out rather than wait for ever.

Load is spread over the ready replicas in proportion to their capacity (a least-outstanding-requests balancer),
so all replicas of a model run at the same utilisation. An SLO-violation minute is a minute in which the model's
p95 exceeded its target at some tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SATURATION = 1.1  # throughput ceiling / capacity at the SLO: serving.md (b) still achieved 1.12x at 1.5x the SLO
BASE = 0.17  # p95 at low load / SLO: serving.md (b), 8.5 ms of 50 ms (batch delay + one forward pass)
TIMEOUT_SECONDS = 1.0  # a client's request timeout: queued work older than this is abandoned


@dataclass(frozen=True)
class LatencyState:
    p95_ms: float
    backlog: float  # requests queued beyond what the replicas could serve


def step(arrival_rps: float, capacity_rps: float, backlog: float, slo_ms: float, tick_seconds: float) -> LatencyState:
    """p95 during one tick for ``arrival_rps`` over replicas whose capacities at the SLO sum to ``capacity_rps``."""
    mu = SATURATION * capacity_rps
    if mu <= 0:
        return LatencyState(math.inf if arrival_rps > 0 or backlog > 0 else 0.0, backlog + arrival_rps * tick_seconds)
    backlog = min(max(0.0, backlog + (arrival_rps - mu) * tick_seconds), mu * TIMEOUT_SECONDS)
    rho = min(arrival_rps / mu, 0.999)
    rho_c = 1.0 / SATURATION
    base = BASE * slo_ms
    p95 = base + (slo_ms - base) * (rho / (1.0 - rho)) / (rho_c / (1.0 - rho_c))
    return LatencyState(p95 + 1000.0 * backlog / mu, backlog)
