"""A pool's price per GPU-hour from OpenCost's series, pure: which nodes' prices count, their average, and when to fall
back to the static price.

OpenCost (opencost.io) exports, per node, with labels ``instance, node, instance_type, region, provider_id, arch, uid``:

* ``node_gpu_hourly_cost``: the hourly cost of one GPU on the node (0 where it knows no GPU price);
* ``node_gpu_count``: the node's GPUs;
* ``node_total_hourly_cost``: cpus x cpu price + GiB x RAM price + GPUs x GPU price;
* ``kubecost_node_is_spot``: 1 for a spot/preemptible node, else 0.

A pool with ``pricing.source: opencost`` is priced with the mean of ``node_gpu_hourly_cost`` over its nodes (the nodes
its nodeSelector picks). A node whose GPU price is 0 but whose total and GPU count are there is priced
``node_total_hourly_cost / node_gpu_count`` (the whole node per GPU: what a GPU node costs when OpenCost does not split
it). A node's sample that is missing, older than ``max_age_s``, NaN, infinite, negative, zero or above the API's
bound is left out and named; when no node is left, the pool falls back to ``pricing.pricePerGpuHour``. A price source
failure therefore never prices a pool at zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hybridrec_operator.api.models import ComputePool, PriceSource

GPU_HOURLY = "node_gpu_hourly_cost"
GPU_COUNT = "node_gpu_count"
TOTAL_HOURLY = "node_total_hourly_cost"
IS_SPOT = "kubecost_node_is_spot"
MAX_PRICE = 1000.0  # the bound of spec.pricing.pricePerGpuHour: a larger figure is a unit or scrape error
CONDITION = "OpenCostPrice"


@dataclass(frozen=True)
class Sample:
    """One node's latest sample of one series; ``value`` may be NaN (OpenCost or a relabelling can emit it)."""

    value: float
    age_s: float | None = None  # seconds between the sample and the read; None: unknown


@dataclass(frozen=True)
class OpenCostSnapshot:
    """OpenCost's node series as read at one instant, by node name; ``error`` when Prometheus could not answer."""

    gpu_hourly: Mapping[str, Sample] = field(default_factory=dict)
    gpu_count: Mapping[str, Sample] = field(default_factory=dict)
    total_hourly: Mapping[str, Sample] = field(default_factory=dict)
    spot: Mapping[str, Sample] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class PoolPrice:
    """The price a pool is planned with and why: ``source`` opencost when OpenCost's series gave it, static when the
    spec's price is used (fallback); ``reason``/``message`` feed the pool's ``OpenCostPrice`` condition."""

    price_per_gpu_hour: float
    currency: str
    source: PriceSource
    reason: str
    message: str
    nodes: int = 0
    spot_nodes: int | None = None
    # When this price was first read; not part of equality, so an unchanged price is not news (no status write).
    since: str | None = field(default=None, compare=False)

    @property
    def fallback(self) -> bool:
        return self.source != PriceSource.OPENCOST

    def status(self) -> dict[str, object]:
        """``status.price`` in its wire form."""
        out: dict[str, object] = {"pricePerGpuHour": round(self.price_per_gpu_hour, 6), "currency": self.currency,
                                  "source": self.source.value, "detail": self.message[:4096], "nodes": self.nodes,
                                  "since": self.since}
        if self.spot_nodes is not None:
            out["spotNodes"] = self.spot_nodes
        return out


def _fresh(sample: Sample | None, max_age_s: float) -> bool:
    return sample is not None and (sample.age_s is None or sample.age_s <= max_age_s)


def _usable(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= MAX_PRICE


def node_price(node: str, snap: OpenCostSnapshot, max_age_s: float) -> tuple[float | None, str, str]:
    """(price per GPU-hour, how, kind) for one node: kind ``ok``, or ``missing``/``stale``/``invalid`` with the
    price None and ``how`` saying what was wrong."""
    sample = snap.gpu_hourly.get(node)
    if sample is None:
        return None, f"{node}: no {GPU_HOURLY} series", "missing"
    if not _fresh(sample, max_age_s):
        # No age figure in the text: it grows every read, and a message that changes is a status write each time.
        return None, f"{node}: {GPU_HOURLY} is older than {max_age_s:.0f} s", "stale"
    if _usable(sample.value):
        return sample.value, f"{node}: {GPU_HOURLY} {sample.value:g}", "ok"
    if sample.value == 0:
        # OpenCost reports 0 where it has no GPU price: the whole node's cost per GPU, when it knows both.
        total, count = snap.total_hourly.get(node), snap.gpu_count.get(node)
        if _fresh(total, max_age_s) and _fresh(count, max_age_s) and total is not None and count is not None \
                and math.isfinite(count.value) and count.value >= 1 and _usable(total.value / count.value):
            per_gpu = total.value / count.value
            return per_gpu, f"{node}: {TOTAL_HOURLY} {total.value:g} / {GPU_COUNT} {count.value:g}", "ok"
        return None, f"{node}: {GPU_HOURLY} is 0 (OpenCost knows no GPU price for it)", "invalid"
    what = "NaN" if math.isnan(sample.value) else f"{sample.value:g}"
    return None, f"{node}: {GPU_HOURLY} is {what} (not a price in (0, {MAX_PRICE:g}])", "invalid"


_KIND_REASON = {"invalid": "PriceInvalid", "stale": "SeriesStale", "missing": "SeriesMissing"}


def pool_price(pool: ComputePool, nodes: Sequence[str], snap: OpenCostSnapshot | None, max_age_s: float) -> PoolPrice:
    """The price ``pool`` is planned with, given the names of its nodes and what OpenCost says (None: no Prometheus
    configured for prices)."""
    pricing = pool.spec.pricing
    static = pricing.price_per_gpu_hour

    def fallback(reason: str, why: str) -> PoolPrice:
        return PoolPrice(static, pricing.currency, PriceSource.STATIC, reason,
                         f"static price {static:g} {pricing.currency}/GPU-hour in use: {why}")

    if pricing.source != PriceSource.OPENCOST:
        return PoolPrice(static, pricing.currency, PriceSource.STATIC, "StaticPrice", "spec.pricing.pricePerGpuHour")
    if snap is None:
        return fallback("NotConfigured", "no Prometheus to read OpenCost from (set HYBRIDREC_OPENCOST_PROMETHEUS_URL "
                                         "or HYBRIDREC_PROMETHEUS_URL)")
    if snap.error is not None:
        return fallback("PrometheusUnavailable", f"Prometheus could not answer: {snap.error}")
    if not nodes:
        return fallback("NoNodes", f"no node matches nodeSelector {dict(pool.spec.node_selector)}")
    prices: list[float] = []
    used: list[str] = []
    skipped: dict[str, list[str]] = {}
    for node in sorted(nodes):
        price, how, kind = node_price(node, snap, max_age_s)
        if price is None:
            skipped.setdefault(kind, []).append(how)
        else:
            prices.append(price)
            used.append(how)
    if not prices:
        worst = next(k for k in ("invalid", "stale", "missing") if k in skipped)
        return fallback(_KIND_REASON[worst], "; ".join(h for k in ("invalid", "stale", "missing") for h in skipped.get(k, [])))
    mean = sum(prices) / len(prices)
    spot = [node for node in nodes if (s := snap.spot.get(node)) is not None and _fresh(s, max_age_s) and s.value == 1]
    known_spot = any(snap.spot.get(n) is not None for n in nodes)
    message = f"mean {GPU_HOURLY} over {len(prices)} node(s) {mean:g} {pricing.currency}/GPU-hour ({'; '.join(used)})"
    reason = "OpenCostPrice"
    if skipped:
        reason = "OpenCostPartial"
        message += "; left out: " + "; ".join(h for k in ("invalid", "stale", "missing") for h in skipped.get(k, []))
    return PoolPrice(mean, pricing.currency, PriceSource.OPENCOST, reason, message, nodes=len(prices),
                     spot_nodes=len(spot) if known_spot else None)


def apply_price(pool: ComputePool, price: PoolPrice | None) -> ComputePool:
    """``pool`` as the planners see it: its spec's price replaced by OpenCost's while that is in use."""
    if price is None or price.fallback or pool.spec.pricing.source != PriceSource.OPENCOST:
        return pool
    pricing = pool.spec.pricing.model_copy(update={"price_per_gpu_hour": price.price_per_gpu_hour})
    return pool.model_copy(update={"spec": pool.spec.model_copy(update={"pricing": pricing})})


def price_condition(price: PoolPrice) -> tuple[bool, str, str]:
    """(status, reason, message) of the pool's ``OpenCostPrice`` condition: True while OpenCost's price is in use."""
    return (not price.fallback, price.reason, price.message)


def opencost_pools(pools: Iterable[ComputePool]) -> list[ComputePool]:
    return [p for p in pools if p.spec.pricing.source == PriceSource.OPENCOST]
