"""OpenCost as a price source (I/O): read OpenCost's node series from Prometheus on a timer, price every pool with
``pricing.source: opencost`` (``core/pricing.py``), and hand the prices to the runtime, which plans with them, writes
``status.price`` and the ``OpenCostPrice`` condition, and re-plans the models when a price moved.

Prometheus: ``HYBRIDREC_OPENCOST_PROMETHEUS_URL`` (the Prometheus that scrapes OpenCost), else
``HYBRIDREC_PROMETHEUS_URL``. Clocks: ``HYBRIDREC_PRICE_REFRESH_SECONDS`` (how often) and
``HYBRIDREC_PRICE_MAX_AGE_SECONDS`` (an older sample is stale). Only the leader reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from hybridrec_operator.controller.observe import PromClient, PrometheusUnavailable
from hybridrec_operator.core import capacity
from hybridrec_operator.core.pricing import (
    GPU_COUNT,
    GPU_HOURLY,
    IS_SPOT,
    TOTAL_HOURLY,
    OpenCostSnapshot,
    PoolPrice,
    Sample,
    opencost_pools,
    pool_price,
)

log = logging.getLogger("hybridrec.pricing")


def _vector(payload: Mapping[str, Any]) -> list[tuple[Mapping[str, str], float]]:
    """An instant vector as (labels, value) pairs, NaN and infinities kept (they are findings, not noise)."""
    if payload.get("status") != "success":
        raise PrometheusUnavailable(f"query failed: {payload.get('errorType', '')} {payload.get('error', '')}".strip())
    data = payload.get("data", {})
    if data.get("resultType") != "vector":
        raise PrometheusUnavailable(f"unexpected result type {data.get('resultType')!r}")
    return [(item.get("metric", {}), float(item["value"][1])) for item in data.get("result", [])]


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def read_series(client: PromClient, metric: str, at: float) -> dict[str, Sample]:
    """The latest sample of ``metric`` per ``node`` label, with its age; of several series for one node (labels
    that changed, two OpenCost replicas) the freshest wins."""
    values = _vector(client.query(metric, at))
    stamps = {_key(labels): stamp for labels, stamp in _vector(client.query(f"timestamp({metric})", at))}
    out: dict[str, Sample] = {}
    for labels, value in values:
        node = labels.get("node")
        if not node:
            continue
        stamp = stamps.get(_key(labels))
        age = max(0.0, at - stamp) if stamp is not None and math.isfinite(stamp) else None
        old = out.get(node)
        if old is None or (age is not None and (old.age_s is None or age < old.age_s)):
            out[node] = Sample(value, age)
    return out


def read_opencost(client: PromClient, at: float) -> OpenCostSnapshot:
    """OpenCost's node series at ``at``; a Prometheus failure is returned as ``error`` (every pool falls back)."""
    try:
        return OpenCostSnapshot(gpu_hourly=read_series(client, GPU_HOURLY, at),
                                gpu_count=read_series(client, GPU_COUNT, at),
                                total_hourly=read_series(client, TOTAL_HOURLY, at),
                                spot=read_series(client, IS_SPOT, at))
    except PrometheusUnavailable as exc:
        return OpenCostSnapshot(error=str(exc))


def members_of(pool: Any, nodes: list[Mapping[str, Any]]) -> list[str]:
    """Names of the nodes the pool's nodeSelector picks (their OpenCost prices make the pool's)."""
    return [str((n.get("metadata") or {}).get("name")) for n in nodes
            if capacity.matches(pool.spec.node_selector, (n.get("metadata") or {}).get("labels") or {})]


class PricedRuntime(Protocol):
    """What the refresher needs of ``controller.runtime.Runtime``."""

    prices: dict[str, PoolPrice]

    def spec_pools(self) -> list[Any]: ...
    def nodes(self) -> list[Mapping[str, Any]]: ...
    def replan_pools(self, names: Any = None) -> None: ...
    def replan_models(self, trigger: str, *, keys: Any = None) -> None: ...


class PriceRefresher:
    """Every ``interval_s``: read OpenCost, price the opencost pools, and tell the runtime what changed."""

    def __init__(self, runtime: PricedRuntime, client: PromClient | None, *, interval_s: float, max_age_s: float,
                 is_active: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.client = client
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self.is_active = is_active
        self.clock = clock

    def publish(self, prices: dict[str, PoolPrice]) -> list[str]:
        """Install ``prices`` on the runtime; re-plan what they change. Returns the pools whose planning price moved."""
        old = self.runtime.prices
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        # An unchanged price keeps its object (and its "since"); a new one starts now.
        prices = {name: old[name] if old.get(name) == p else dataclasses.replace(p, since=since)
                  for name, p in prices.items()}
        self.runtime.prices = prices
        changed = sorted(name for name in set(old) | set(prices) if old.get(name) != prices.get(name))
        if changed:
            self.runtime.replan_pools(changed)  # status.price and the OpenCostPrice condition
        moved = sorted(name for name in changed
                       if (old.get(name) and old[name].price_per_gpu_hour) != (prices.get(name) and prices[name].price_per_gpu_hour))
        if moved:
            for name in moved:
                p = prices.get(name)
                log.info("pool %s priced %s (%s)", name, f"{p.price_per_gpu_hour:g}" if p else "statically",
                         p.message if p else "no longer opencost")
            self.runtime.replan_models(f"price of pool(s) {', '.join(moved)} changed")
        return moved

    async def refresh(self) -> list[str]:
        # The indexes are read on the event loop (not thread-safe); only Prometheus is queried in a thread.
        pools = opencost_pools(self.runtime.spec_pools())
        if not pools:
            return self.publish({})
        snap = await asyncio.to_thread(read_opencost, self.client, self.clock()) if self.client is not None else None
        nodes = self.runtime.nodes()
        prices = {pool.name: pool_price(pool, members_of(pool, nodes), snap, self.max_age_s) for pool in pools}
        return self.publish(prices)

    async def run(self) -> None:
        while True:
            if self.is_active():
                try:
                    await self.refresh()
                except Exception:  # noqa: BLE001 - a bad round must not stop pricing; the next one retries
                    log.exception("pricing round failed")
            await asyncio.sleep(self.interval_s)
