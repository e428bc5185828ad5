"""What the model servers are doing, read from a real Prometheus over its HTTP API.

One round = a handful of instant queries, all evaluated at the same instant, aggregated by
(namespace, model, pool). The result is typed: every reading is ``ok``, ``missing`` or ``stale``, and a
missing reading is never reported as zero, because the controller must not mistake "no data" for "no demand"
and scale a model to its minimum.

Freshness is judged only for pools where the cluster says the model runs: a server that went away leaves its
last samples visible in Prometheus for the lookback window (5 minutes), which says nothing about the model now.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Protocol

import httpx

# The observation types live in core: the cost round reads them without I/O.
from hybridrec_operator.core.observation import (
    MISSING,
    DataState,
    ModelKey,
    ModelObservation,
    Observation,
    PoolObservation,
    Reading,
)

SERVER_JOB = "hybridrec-server"
GROUP = ("namespace", "model", "pool")


class PrometheusUnavailable(Exception):
    """Prometheus could not answer (down, not ready, timing out or refusing the query)."""


# ----------------------------------------------------------------------------------------------- queries


def build_queries(window: str) -> dict[str, str]:
    """The PromQL of one round, by reading name. Per-pool series are grouped by namespace, model, pool."""
    sel = f'job="{SERVER_JOB}"'
    rec = f'{sel},endpoint="recommend"'
    by = "namespace, model, pool"
    return {
        "rate": f"sum by ({by}) (rate(hybridrec_server_requests_total{{{rec}}}[{window}]))",
        # Servers with request counters, and servers whose counters have a rate. A server with counters but no rate
        # yet (one sample in the window: it just started, or Prometheus just restarted) leaves the pool's rate
        # incomplete, which is "not computable yet", unlike a server that never served a request.
        "present": f"count by ({by}) (count by ({by}, instance) (hybridrec_server_requests_total{{{rec}}}))",
        "with_rate": f"count by ({by}) (count by ({by}, instance) (rate(hybridrec_server_requests_total{{{rec}}}[{window}])))",
        "errors": f'sum by ({by}) (rate(hybridrec_server_requests_total{{{rec},code=~"5..|429"}}[{window}]))',
        "p95_pool": (
            f"histogram_quantile(0.95, sum by ({by}, le) (rate(hybridrec_server_request_duration_seconds_bucket{{{rec}}}[{window}])))"
        ),
        # A model's p95 comes from its pooled buckets: averaging per-pool quantiles would be wrong.
        "p95_model": (
            "histogram_quantile(0.95, sum by (namespace, model, le) "
            f"(rate(hybridrec_server_request_duration_seconds_bucket{{{rec}}}[{window}])))"
        ),
        "inflight": f"sum by ({by}) (hybridrec_server_inflight_requests{{{sel}}})",
        "queue": f"sum by ({by}) (hybridrec_server_queue_depth{{{sel}}})",
        "gpu": f"avg by ({by}) (hybridrec_server_gpu_utilization_ratio{{{sel}}})",
        "ready": f"sum by ({by}) (hybridrec_server_ready{{{sel}}})",
        "up": f"sum by ({by}) (up{{{sel}}})",
        "targets": f"count by ({by}) (up{{{sel}}})",
        "age": f"max by ({by}) (time() - timestamp(up{{{sel}}}))",
    }


Series = dict[tuple[str, ...], float]


def parse_vector(payload: Mapping[str, Any], labels: Iterable[str] = GROUP) -> Series:
    """An instant-vector answer as {label values: value}; NaN/Inf samples (e.g. quantile of nothing) dropped."""
    if payload.get("status") != "success":
        raise PrometheusUnavailable(f"query failed: {payload.get('errorType', '')} {payload.get('error', '')}".strip())
    data = payload.get("data", {})
    if data.get("resultType") != "vector":
        raise PrometheusUnavailable(f"unexpected result type {data.get('resultType')!r}")
    names = tuple(labels)
    out: Series = {}
    for item in data.get("result", []):
        metric = item.get("metric", {})
        value = float(item["value"][1])
        if math.isfinite(value):
            out[tuple(metric.get(n, "") for n in names)] = value
    return out


class PromClient(Protocol):
    def query(self, expr: str, at: float) -> Mapping[str, Any]: ...


class HttpPromClient:
    """Instant queries over Prometheus' HTTP API; every failure becomes ``PrometheusUnavailable``."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)

    def query(self, expr: str, at: float) -> Mapping[str, Any]:
        try:
            resp = self._client.get(f"{self.base_url}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (404, 429):
            raise PrometheusUnavailable(f"HTTP {resp.status_code} from {self.base_url}")
        try:
            return resp.json()
        except ValueError as exc:
            raise PrometheusUnavailable(f"not JSON (HTTP {resp.status_code})") from exc

    def close(self) -> None:
        self._client.close()


# ----------------------------------------------------------------------------------------------- assembly


def _reading(series: Series, key: tuple[str, str, str]) -> Reading:
    value = series.get(key)
    return Reading.ok(value) if value is not None else MISSING


def pool_state(age: float | None, max_age_s: float) -> DataState:
    """ok: scraped recently; stale: only old samples; missing: never scraped (or not there at all)."""
    if age is None:
        return DataState.MISSING
    if age > max_age_s:
        return DataState.STALE
    return DataState.OK


def assemble_pool(raw: Mapping[str, Series], key: tuple[str, str, str], expected: bool, max_age_s: float) -> PoolObservation:
    """A pool's readings. A fresh target without request series has served nothing: its rate is a real 0."""
    age = raw["age"].get(key)
    state = pool_state(age, max_age_s)
    if state != DataState.OK:
        return PoolObservation(pool=key[2], expected=expected, state=state, sample_age_seconds=age,
                               targets=int(raw["targets"].get(key, 0)), targets_up=int(raw["up"].get(key, 0)))
    up = int(raw["up"].get(key, 0))
    rate = raw["rate"].get(key)
    present = int(raw.get("present", {}).get(key, 0))
    with_rate = int(raw.get("with_rate", {}).get(key, 0))
    if rate is not None and with_rate >= present:
        rate_reading = Reading.ok(rate)
    elif rate is None and up > 0 and present == 0:
        # Scraped and up, yet no request counter at all: no recommendation served (yet): a real 0.
        rate_reading = Reading.ok(0.0)
    else:
        # Some server's counters have no rate yet: a sum without it would understate demand.
        rate_reading = MISSING
    errors = raw["errors"].get(key)
    if rate is not None and rate > 0:
        error_ratio = Reading.ok((errors or 0.0) / rate)
    else:
        error_ratio = MISSING
    return PoolObservation(
        pool=key[2],
        expected=expected,
        state=state,
        request_rate=rate_reading,
        p95_seconds=_reading(raw["p95_pool"], key),
        error_ratio=error_ratio,
        inflight=_reading(raw["inflight"], key),
        queue_depth=_reading(raw["queue"], key),
        gpu_utilization=_reading(raw["gpu"], key),
        ready_servers=_reading(raw["ready"], key),
        targets_up=up,
        targets=int(raw["targets"].get(key, 0)),
        sample_age_seconds=age,
    )


def _sum(readings: Iterable[Reading]) -> Reading:
    ok = [r.value for r in readings if r.is_ok and r.value is not None]
    return Reading.ok(sum(ok)) if ok else MISSING


def summarise_model(
    namespace: str, model: str, pools: Mapping[str, PoolObservation], p95_model: Reading
) -> ModelObservation:
    """Roll pools up into the model. Rules, in order:

    * an expected pool with only old samples -> ``stale`` (the demand figure would be an undercount);
    * no expected pool and nothing fresh anywhere -> ``missing`` (no replicas: demand cannot be seen);
    * no expected pool has been scraped yet -> ``missing``;
    * an expected pool is scraped but its request rate cannot be computed yet -> ``missing`` (counting it as 0
      right after a Prometheus restart would look like demand collapsed);
    * otherwise ``ok``; expected pools not scraped yet are pods still starting (``starting_pools``).
    """
    expected = {p: o for p, o in pools.items() if o.expected}
    fresh = [o for o in pools.values() if o.state == DataState.OK and o.request_rate.is_ok]
    stale = sorted(p for p, o in expected.items() if o.state == DataState.STALE)
    no_rate = sorted(p for p, o in expected.items() if o.state == DataState.OK and not o.request_rate.is_ok)
    if stale:
        state, reason = DataState.STALE, f"metrics stale for pool(s) {', '.join(stale)}"
    elif no_rate:
        state, reason = DataState.MISSING, f"request rate not computable yet for pool(s) {', '.join(no_rate)}"
    elif not expected and not fresh:
        state, reason = DataState.MISSING, "no running replicas to observe"
    elif expected and not any(o.state == DataState.OK for o in expected.values()):
        state, reason = DataState.MISSING, f"no metrics yet for pool(s) {', '.join(sorted(expected))}"
    else:
        state, reason = DataState.OK, "fresh metrics"
    if state != DataState.OK:
        return ModelObservation(namespace, model, state, reason, pools=dict(pools))
    rate = _sum(o.request_rate for o in fresh)
    errors = [o.error_ratio.value * o.request_rate.value for o in fresh
              if o.error_ratio.is_ok and o.request_rate.is_ok and o.error_ratio.value is not None and o.request_rate.value is not None]
    error_ratio = Reading.ok(sum(errors) / rate.value) if rate.is_ok and rate.value and rate.value > 0 else MISSING
    gpu = [o.gpu_utilization.value for o in fresh if o.gpu_utilization.is_ok and o.gpu_utilization.value is not None]
    return ModelObservation(
        namespace=namespace,
        model=model,
        state=state,
        reason=reason,
        request_rate=rate,
        p95_seconds=p95_model,
        error_ratio=error_ratio,
        inflight=_sum(o.inflight for o in fresh),
        queue_depth=_sum(o.queue_depth for o in fresh),
        gpu_utilization=Reading.ok(sum(gpu) / len(gpu)) if gpu else MISSING,
        ready_servers=_sum(o.ready_servers for o in fresh),
        pools=dict(pools),
    )


def assemble(
    raw: Mapping[str, Series],
    p95_model: Mapping[tuple[str, ...], float],
    expected: Mapping[ModelKey, Iterable[str]],
    at: float,
    max_age_s: float,
) -> Observation:
    """Pure: raw query answers + where the cluster says each model runs -> typed observations.

    Only models in ``expected`` are reported (the cluster, not Prometheus, says which models exist).
    """
    seen: dict[ModelKey, set[str]] = {}
    for series in raw.values():
        for ns, model, pool in series:
            seen.setdefault((ns, model), set()).add(pool)
    models: dict[ModelKey, ModelObservation] = {}
    for key, expected_pools in expected.items():
        want = set(expected_pools)
        pools: dict[str, PoolObservation] = {}
        for pool in sorted(want | seen.get(key, set())):
            pools[pool] = assemble_pool(raw, (key[0], key[1], pool), pool in want, max_age_s)
        p95 = p95_model.get((key[0], key[1]))
        models[key] = summarise_model(key[0], key[1], pools, Reading.ok(p95) if p95 is not None else MISSING)
    return Observation(time=at, models=models)


def observe(
    client: PromClient,
    expected: Mapping[ModelKey, Iterable[str]],
    at: float,
    window_s: float = 30.0,
    max_age_s: float = 30.0,
) -> Observation:
    """One round against Prometheus. Raises ``PrometheusUnavailable`` if any query cannot be answered."""
    queries = build_queries(f"{max(int(round(window_s)), 1)}s")
    raw: dict[str, Series] = {}
    p95_model: Series = {}
    for name, expr in queries.items():
        payload = client.query(expr, at)
        if name == "p95_model":
            p95_model = parse_vector(payload, ("namespace", "model"))
        else:
            raw[name] = parse_vector(payload)
    return assemble(raw, p95_model, expected, at, max_age_s)
