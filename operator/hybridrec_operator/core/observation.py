"""What the cost controller observed of the model servers, as typed data (no I/O: ``controller/observe.py`` reads
Prometheus and fills these).

Every reading is ``ok``, ``missing`` or ``stale``; a missing reading is never reported as zero, because the
controller must not mistake "no data" for "no demand" and scale a model to its minimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

ModelKey = tuple[str, str]  # (namespace, name)


class DataState(StrEnum):
    OK = "ok"
    MISSING = "missing"
    STALE = "stale"


@dataclass(frozen=True)
class Reading:
    """One observed number with its state; ``value`` is None unless the state is ``ok``."""

    state: DataState
    value: float | None = None

    @staticmethod
    def ok(value: float) -> "Reading":
        return Reading(DataState.OK, float(value))

    @staticmethod
    def missing() -> "Reading":
        return Reading(DataState.MISSING, None)

    @property
    def is_ok(self) -> bool:
        return self.state == DataState.OK

    def or_default(self, default: float) -> float:
        """The value when ok, otherwise ``default`` (the caller says explicitly what it assumes)."""
        return self.value if self.state == DataState.OK and self.value is not None else default


MISSING = Reading.missing()


@dataclass(frozen=True)
class PoolObservation:
    """One model in one pool."""

    pool: str
    expected: bool  # the cluster says the model runs here
    state: DataState
    request_rate: Reading = MISSING
    p95_seconds: Reading = MISSING
    error_ratio: Reading = MISSING
    inflight: Reading = MISSING
    queue_depth: Reading = MISSING
    gpu_utilization: Reading = MISSING
    ready_servers: Reading = MISSING
    targets_up: int = 0
    targets: int = 0
    sample_age_seconds: float | None = None


@dataclass(frozen=True)
class ModelObservation:
    """One RecModelDeployment across its pools. ``state`` is ok only when the demand figure can be trusted."""

    namespace: str
    model: str
    state: DataState
    reason: str
    request_rate: Reading = MISSING
    p95_seconds: Reading = MISSING
    error_ratio: Reading = MISSING
    inflight: Reading = MISSING
    queue_depth: Reading = MISSING
    gpu_utilization: Reading = MISSING
    ready_servers: Reading = MISSING
    pools: Mapping[str, PoolObservation] = field(default_factory=dict)

    @property
    def key(self) -> ModelKey:
        return (self.namespace, self.model)

    @property
    def starting_pools(self) -> tuple[str, ...]:
        """Expected pools whose servers have not been scraped yet (pods just started)."""
        return tuple(sorted(p for p, o in self.pools.items() if o.expected and o.state == DataState.MISSING))


@dataclass(frozen=True)
class Observation:
    """All models at one instant."""

    time: float
    models: Mapping[ModelKey, ModelObservation]

    def get(self, namespace: str, model: str) -> ModelObservation | None:
        return self.models.get((namespace, model))
