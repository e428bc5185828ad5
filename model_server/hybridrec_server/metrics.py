"""Prometheus metrics of one server app, defined once, in a per-app registry.

Every series carries ``namespace``, ``model`` and ``pool`` so the operator's cost controller and the
dashboards can aggregate per RecModelDeployment and per node pool. Names are a contract with the
operator, the dashboards and the alert rules: see docs/metrics-server.md before changing one.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

PREFIX = "hybridrec_server_"
BASE_LABELS: tuple[str, ...] = ("namespace", "model", "pool")
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: Every metric name this module exports (the docs and the tests are checked against it).
METRIC_NAMES: tuple[str, ...] = (
    "hybridrec_server_request_duration_seconds",
    "hybridrec_server_requests_total",
    "hybridrec_server_batch_size",
    "hybridrec_server_queue_depth",
    "hybridrec_server_inflight_requests",
    "hybridrec_server_model_info",
    "hybridrec_server_ready",
    "hybridrec_server_fallback_total",
    "hybridrec_server_unknown_items_total",
)
GPU_METRIC_NAMES: tuple[str, ...] = (
    "hybridrec_server_gpu_utilization_ratio",
    "hybridrec_server_gpu_memory_used_bytes",
)


class GpuCollector(Collector):
    """GPU utilisation and memory, read at scrape time; registered only when CUDA is present."""

    def __init__(self, base: dict[str, str], device_index: int = 0) -> None:
        self._base = base
        self._index = device_index

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import torch

        labels = list(self._base)
        values = list(self._base.values())
        util = GaugeMetricFamily(
            "hybridrec_server_gpu_utilization_ratio", "GPU busy fraction (0-1) of the serving device.", labels=labels
        )
        try:  # needs pynvml / NVML; absent on some images, so guard it
            util.add_metric(values, float(torch.cuda.utilization(self._index)) / 100.0)
        except Exception:  # noqa: BLE001 - metric omitted when NVML is unavailable
            pass
        yield util
        mem = GaugeMetricFamily(
            "hybridrec_server_gpu_memory_used_bytes", "GPU memory in use on the serving device.", labels=labels
        )
        try:
            free, total = torch.cuda.mem_get_info(self._index)
            mem.add_metric(values, float(total - free))
        except Exception:  # noqa: BLE001
            mem.add_metric(values, float(torch.cuda.memory_allocated(self._index)))
        yield mem


class ServerMetrics:
    """All metrics of one app, with the constant labels bound once."""

    def __init__(self, namespace: str, model: str, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.base = {"namespace": namespace, "model": model, "pool": pool}
        reg = self.registry
        self._duration = Histogram(
            "hybridrec_server_request_duration_seconds",
            "End-to-end latency of API requests as seen by the server.",
            (*BASE_LABELS, "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._requests = Counter(
            "hybridrec_server_requests",
            "API requests by endpoint and HTTP status code.",
            (*BASE_LABELS, "endpoint", "code"),
            registry=reg,
        )
        self.batch_size = Histogram(
            "hybridrec_server_batch_size",
            "Requests per model forward pass (dynamic batching).",
            BASE_LABELS,
            buckets=BATCH_BUCKETS,
            registry=reg,
        ).labels(**self.base)
        self.queue_depth = Gauge(
            "hybridrec_server_queue_depth", "Requests waiting for a batch slot.", BASE_LABELS, registry=reg
        ).labels(**self.base)
        self.inflight = Gauge(
            "hybridrec_server_inflight_requests", "API requests being handled right now.", BASE_LABELS, registry=reg
        ).labels(**self.base)
        self._info = Gauge(
            "hybridrec_server_model_info",
            "Always 1; labels describe the loaded model.",
            (*BASE_LABELS, "version", "architecture", "device"),
            registry=reg,
        )
        self.ready = Gauge(
            "hybridrec_server_ready", "1 when the model is loaded and warmed up and the server is not draining.",
            BASE_LABELS, registry=reg,
        ).labels(**self.base)
        self.fallback = Counter(
            "hybridrec_server_fallback",
            "Responses served from popular items because the user is unknown to the model.",
            BASE_LABELS,
            registry=reg,
        ).labels(**self.base)
        self.unknown_items = Counter(
            "hybridrec_server_unknown_items",
            "Item ids in request histories that the model does not know (skipped, not an error).",
            BASE_LABELS,
            registry=reg,
        ).labels(**self.base)
        self.ready.set(0)
        self.queue_depth.set(0)
        self._duration_children: dict[str, Histogram] = {}
        self._request_children: dict[tuple[str, str], Counter] = {}

    def enable_gpu(self, device_index: int = 0) -> None:
        """Register the GPU gauges (call only when the model runs on CUDA)."""
        self.registry.register(GpuCollector(self.base, device_index))

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one API request and record its latency."""
        hist = self._duration_children.get(endpoint)
        if hist is None:
            hist = self._duration_children[endpoint] = self._duration.labels(**self.base, endpoint=endpoint)
        hist.observe(seconds)
        key = (endpoint, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(**self.base, endpoint=endpoint, code=key[1])
        counter.inc()

    def set_model_info(self, version: str, architecture: str, device: str) -> None:
        """Publish the loaded model's identity (replaces any previous model's series)."""
        self._info.clear()
        self._info.labels(**self.base, version=version, architecture=architecture, device=device).set(1)

    def render(self) -> tuple[bytes, str]:
        """Exposition body and content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
