"""OpenCost as a price source, the pure part: a pool's price from OpenCost's node series, every way they can be
unusable (never a price of zero), the planners' view of the pool, and the refresher's re-plans."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from hybridrec_operator.api.models import ComputePool, PriceSource, parse_pool
from hybridrec_operator.controller.pricing import PriceRefresher
from hybridrec_operator.core.pricing import OpenCostSnapshot, PoolPrice, Sample, apply_price, pool_price, price_condition

NODES = ["spot-0", "spot-1"]


def pool(source: str = "opencost", price: float = 1.5) -> ComputePool:
    return parse_pool({"metadata": {"name": "oc"}, "spec": {
        "tenancy": "public", "provider": "aws", "nodeSelector": {"hybridrec.io/pool": "oc"},
        "pricing": {"pricePerGpuHour": price, "capacityType": "spot", "source": source},
        "maxGpus": 8, "allowedSensitivity": ["public"]}})


def snap(gpu: dict[str, float], *, age: float = 5.0, spot: dict[str, float] | None = None,
         total: dict[str, float] | None = None, count: dict[str, float] | None = None) -> OpenCostSnapshot:
    def series(values: dict[str, float] | None) -> dict[str, Sample]:
        return {n: Sample(v, age) for n, v in (values or {}).items()}
    return OpenCostSnapshot(gpu_hourly=series(gpu), spot=series(spot), total_hourly=series(total), gpu_count=series(count))


def test_the_static_source_is_the_default_and_uses_the_spec_price() -> None:
    p = pool(source="static")
    assert p.spec.pricing.source == PriceSource.STATIC
    assert parse_pool({"metadata": {"name": "x"}, "spec": {
        "tenancy": "private", "provider": "onprem", "pricing": {"pricePerGpuHour": 1}, "maxGpus": 1,
        "allowedSensitivity": ["public"]}}).spec.pricing.source == PriceSource.STATIC
    price = pool_price(p, NODES, snap({"spot-0": 0.2}), 60)
    assert (price.price_per_gpu_hour, price.source) == (1.5, PriceSource.STATIC)
    assert apply_price(p, price) is p


def test_the_mean_over_the_pools_nodes_with_spot_counted() -> None:
    price = pool_price(pool(), NODES, snap({"spot-0": 0.4, "spot-1": 0.6, "elsewhere": 9.0},
                                            spot={"spot-0": 1, "spot-1": 0}), 60)
    assert price.source == PriceSource.OPENCOST and price.reason == "OpenCostPrice"
    assert price.price_per_gpu_hour == pytest.approx(0.5)
    assert (price.nodes, price.spot_nodes) == (2, 1)
    assert price_condition(price)[0] is True
    planned = apply_price(pool(), price)
    assert planned.spec.pricing.price_per_gpu_hour == pytest.approx(0.5)
    assert pool().spec.pricing.price_per_gpu_hour == 1.5  # the spec itself is untouched
    status = price.status()
    assert status["source"] == "opencost" and status["pricePerGpuHour"] == 0.5 and status["spotNodes"] == 1


@pytest.mark.parametrize(("values", "reason", "words"), [
    ({}, "SeriesMissing", "no node_gpu_hourly_cost series"),
    ({"spot-0": math.nan, "spot-1": math.nan}, "PriceInvalid", "NaN"),
    ({"spot-0": -0.3, "spot-1": -1.0}, "PriceInvalid", "-0.3"),
    ({"spot-0": 0.0, "spot-1": 0.0}, "PriceInvalid", "is 0"),
    ({"spot-0": math.inf, "spot-1": 5000.0}, "PriceInvalid", "5000"),
])
def test_unusable_series_fall_back_to_the_static_price_never_zero(values: dict[str, float], reason: str, words: str) -> None:
    price = pool_price(pool(), NODES, snap(values), 60)
    assert (price.price_per_gpu_hour, price.source, price.reason) == (1.5, PriceSource.STATIC, reason)
    assert words in price.message and "static price 1.5" in price.message
    assert price_condition(price)[0] is False
    assert apply_price(pool(), price).spec.pricing.price_per_gpu_hour == 1.5


def test_stale_samples_fall_back() -> None:
    price = pool_price(pool(), NODES, snap({"spot-0": 0.4, "spot-1": 0.4}, age=400), 180)
    assert (price.source, price.reason) == (PriceSource.STATIC, "SeriesStale")
    assert "older than 180 s" in price.message


def test_prometheus_down_or_not_configured_or_no_nodes_fall_back() -> None:
    assert pool_price(pool(), NODES, OpenCostSnapshot(error="ConnectError"), 60).reason == "PrometheusUnavailable"
    assert pool_price(pool(), NODES, None, 60).reason == "NotConfigured"
    assert pool_price(pool(), [], snap({"spot-0": 0.4}), 60).reason == "NoNodes"


def test_one_bad_node_is_left_out_and_named() -> None:
    price = pool_price(pool(), NODES, snap({"spot-0": 0.4, "spot-1": math.nan}), 60)
    assert (price.source, price.reason, price.nodes) == (PriceSource.OPENCOST, "OpenCostPartial", 1)
    assert price.price_per_gpu_hour == pytest.approx(0.4) and "spot-1" in price.message and "NaN" in price.message


def test_a_zero_gpu_price_uses_the_node_total_per_gpu() -> None:
    price = pool_price(pool(), ["spot-0"], snap({"spot-0": 0.0}, total={"spot-0": 3.2}, count={"spot-0": 4}), 60)
    assert price.source == PriceSource.OPENCOST and price.price_per_gpu_hour == pytest.approx(0.8)
    assert "node_total_hourly_cost 3.2 / node_gpu_count 4" in price.message


class FakeRuntime:
    """The refresher's view of the runtime: pools, nodes and the re-plans it asks for (no I/O to stand in for)."""

    def __init__(self, pools: list[ComputePool]) -> None:
        self.prices: dict[str, PoolPrice] = {}
        self._pools = pools
        self.replanned_pools: list[list[str]] = []
        self.replanned_models: list[str] = []

    def spec_pools(self) -> list[ComputePool]:
        return self._pools

    def nodes(self) -> list[dict[str, Any]]:
        return [{"metadata": {"name": n, "labels": {"hybridrec.io/pool": "oc"}}} for n in NODES]

    def replan_pools(self, names: Any = None) -> None:
        self.replanned_pools.append(list(names or []))

    def replan_models(self, trigger: str, *, keys: Any = None) -> None:
        self.replanned_models.append(trigger)


def test_the_refresher_replans_models_only_when_a_price_moves() -> None:
    runtime = FakeRuntime([pool()])
    refresher = PriceRefresher(runtime, None, interval_s=1, max_age_s=60)
    prices = {"oc": pool_price(pool(), NODES, snap({"spot-0": 0.4, "spot-1": 0.4}), 60)}
    assert refresher.publish(prices) == ["oc"]
    assert runtime.replanned_models == ["price of pool(s) oc changed"] and runtime.replanned_pools == [["oc"]]
    since = runtime.prices["oc"].since
    assert since is not None and runtime.prices["oc"].status()["since"] == since
    again = {"oc": pool_price(pool(), NODES, snap({"spot-0": 0.4, "spot-1": 0.4}), 60)}
    assert refresher.publish(again) == []  # the same price again: nothing to do, and it is in use since the first read
    assert len(runtime.replanned_models) == 1 and len(runtime.replanned_pools) == 1
    assert runtime.prices["oc"].since == since
    # Without a Prometheus the pool is priced statically (NotConfigured): a move back to 1.5.
    assert asyncio.run(refresher.refresh()) == ["oc"]
    assert runtime.prices["oc"].reason == "NotConfigured"


def test_the_sample_opencost_pool_parses() -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[3] / "manifests" / "samples" / "opencost-pool.yaml"
    (sample,) = [parse_pool(d) for d in yaml.safe_load_all(path.read_text()) if d]
    assert sample.spec.pricing.source == PriceSource.OPENCOST and sample.spec.pricing.price_per_gpu_hour == 1.2
