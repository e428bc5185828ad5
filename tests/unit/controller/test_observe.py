"""observe.py: query answers -> typed observations. Missing and stale are states, never zeros."""

from __future__ import annotations

from typing import Any, Mapping

import httpx
import pytest

from hybridrec_operator.controller.observe import (
    DataState,
    HttpPromClient,
    PrometheusUnavailable,
    assemble,
    build_queries,
    observe,
    parse_vector,
)

KEY = ("shop", "recs")


def vector(*samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, str(v)]} for m, v in samples]}}


def pool_labels(pool: str, ns: str = "shop", model: str = "recs") -> dict[str, str]:
    return {"namespace": ns, "model": model, "pool": pool}


def raw(pools: Mapping[str, Mapping[str, float]]) -> dict[str, dict[tuple[str, ...], float]]:
    """Per-pool readings -> the raw series dicts observe.assemble takes."""
    names = build_queries("30s").keys() - {"p95_model"}
    out: dict[str, dict[tuple[str, ...], float]] = {n: {} for n in names}
    for pool, readings in pools.items():
        for name, value in readings.items():
            out[name][("shop", "recs", pool)] = value
    return out


FRESH = {"age": 1.0, "up": 2, "targets": 2, "rate": 30.0, "errors": 3.0, "p95_pool": 0.02, "inflight": 4, "queue": 1, "ready": 2,
         "present": 2, "with_rate": 2}


def test_fresh_pools_sum_into_the_model() -> None:
    obs = assemble(raw({"t4": FRESH, "l4": {**FRESH, "rate": 10.0, "errors": 0.0}}), {KEY: 0.03}, {KEY: ["t4", "l4"]}, 100.0, 10.0)
    m = obs.models[KEY]
    assert m.state == DataState.OK
    assert m.request_rate.value == pytest.approx(40.0)
    assert m.error_ratio.value == pytest.approx(3.0 / 40.0)
    assert m.p95_seconds.value == pytest.approx(0.03)  # the model's own quantile, not an average of pools
    assert m.ready_servers.value == 4
    assert m.gpu_utilization.state == DataState.MISSING  # CPU servers export none: not zero
    assert m.pools["t4"].targets_up == 2


def test_expected_pool_with_old_samples_makes_the_model_stale() -> None:
    obs = assemble(raw({"t4": FRESH, "l4": {**FRESH, "age": 120.0}}), {}, {KEY: ["t4", "l4"]}, 0.0, 10.0)
    m = obs.models[KEY]
    assert m.state == DataState.STALE
    assert "l4" in m.reason
    assert m.request_rate.state == DataState.MISSING and m.request_rate.value is None


def test_stale_samples_of_a_pool_the_model_left_are_ignored() -> None:
    obs = assemble(raw({"t4": FRESH, "gone": {**FRESH, "age": 200.0}}), {}, {KEY: ["t4"]}, 0.0, 10.0)
    m = obs.models[KEY]
    assert m.state == DataState.OK
    assert m.request_rate.value == pytest.approx(30.0)
    assert m.pools["gone"].state == DataState.STALE and not m.pools["gone"].expected


def test_a_pool_not_scraped_yet_is_starting_not_zero_demand() -> None:
    obs = assemble(raw({"t4": FRESH}), {}, {KEY: ["t4", "l4"]}, 0.0, 10.0)
    m = obs.models[KEY]
    assert m.state == DataState.OK
    assert m.starting_pools == ("l4",)
    assert m.pools["l4"].request_rate.state == DataState.MISSING


def test_nothing_scraped_is_missing() -> None:
    m = assemble(raw({}), {}, {KEY: ["t4"]}, 0.0, 10.0).models[KEY]
    assert m.state == DataState.MISSING and m.request_rate.value is None
    m = assemble(raw({}), {}, {KEY: []}, 0.0, 10.0).models[KEY]
    assert m.state == DataState.MISSING and "no running replicas" in m.reason


def test_an_up_server_that_served_nothing_has_a_real_zero_rate_and_unknown_latency() -> None:
    idle = {"age": 1.0, "up": 1, "targets": 1, "ready": 1, "inflight": 0, "queue": 0}
    m = assemble(raw({"t4": idle}), {}, {KEY: ["t4"]}, 0.0, 10.0).models[KEY]
    assert m.state == DataState.OK
    assert m.request_rate.value == 0.0
    assert m.p95_seconds.state == DataState.MISSING
    assert m.error_ratio.state == DataState.MISSING


def test_a_counter_without_a_rate_yet_is_missing_not_zero() -> None:
    # Right after a Prometheus restart: counters are back (one sample), rate() needs two.
    restarted = {"age": 1.0, "up": 2, "targets": 2, "present": 2, "ready": 2}
    m = assemble(raw({"t4": FRESH, "l4": restarted}), {}, {KEY: ["t4", "l4"]}, 0.0, 10.0).models[KEY]
    assert m.state == DataState.MISSING and "l4" in m.reason
    assert m.request_rate.value is None
    # Two of three servers already have a rate: their sum would understate demand, so still not computable.
    partial = {**FRESH, "up": 3, "targets": 3, "present": 3, "with_rate": 2, "rate": 20.0}
    m = assemble(raw({"t4": FRESH, "l4": partial}), {}, {KEY: ["t4", "l4"]}, 0.0, 10.0).models[KEY]
    assert m.state == DataState.MISSING and m.pools["l4"].request_rate.value is None


def test_models_the_cluster_does_not_know_are_not_reported() -> None:
    r = raw({"t4": FRESH})
    r["age"][("other", "x", "t4")] = 1.0
    assert set(assemble(r, {}, {KEY: ["t4"]}, 0.0, 10.0).models) == {KEY}


def test_parse_vector_drops_nan_and_refuses_errors() -> None:
    series = parse_vector(vector((pool_labels("a"), 1.5), (pool_labels("b"), float("nan"))))
    assert series == {("shop", "recs", "a"): 1.5}
    with pytest.raises(PrometheusUnavailable):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_one_instant_for_every_query() -> None:
    seen: list[float] = []

    class Fake:
        def query(self, expr: str, at: float) -> Mapping[str, Any]:
            seen.append(at)
            return vector()

    observe(Fake(), {KEY: ["t4"]}, at=1234.5)
    assert seen and set(seen) == {1234.5}
    assert len(seen) == len(build_queries("30s"))


def test_http_client_maps_failures_to_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "boom" in request.url.params["query"]:
            return httpx.Response(503, text="not ready")
        raise httpx.ConnectError("refused", request=request)

    client = HttpPromClient("http://prom.invalid", client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(PrometheusUnavailable, match="503"):
        client.query("boom", 0.0)
    with pytest.raises(PrometheusUnavailable, match="ConnectError"):
        client.query("up", 0.0)


def test_queries_use_the_recommend_endpoint_histogram() -> None:
    q = build_queries("20s")
    assert 'hybridrec_server_request_duration_seconds_bucket{job="hybridrec-server",endpoint="recommend"}[20s]' in q["p95_pool"]
    assert q["p95_model"].startswith("histogram_quantile(0.95, sum by (namespace, model, le)")
