"""What ``hybridrec demo run`` records: a :class:`Timeline` of samples taken every few seconds (offered and served
traffic, p95 from Prometheus, running replicas per pool from the real pods, $/h, the operator's decisions), with the
pools and models it applied. Plain data, written to and read back from ``timeline.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

TIMELINE_FILE = "timeline.json"


@dataclass
class PoolInfo:
    """A ComputePool as applied by the demo; ``spec`` is its wire form, so the placement check can re-parse it."""

    name: str
    tenancy: str
    price_per_gpu_hour: float
    currency: str
    capacity_type: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """A RecModelDeployment as applied by the demo."""

    name: str
    namespace: str
    sensitivity: str
    slo_p95_ms: float
    allow_public_burst: bool = False
    budget_per_hour: float | None = None
    budget_currency: str = "USD"
    gpus_per_replica: int = 1


@dataclass
class ModelSample:
    """What was observed for one model at one instant."""

    offered_rps: float = 0.0
    served_rps: float = 0.0
    error_rps: float = 0.0
    p95_ms: float | None = None  # server side, from Prometheus
    client_p95_ms: float | None = None  # measured by the load generator
    replicas_by_pool: dict[str, int] = field(default_factory=dict)  # running pods, from the API server
    desired_by_pool: dict[str, int] = field(default_factory=dict)  # status.placements[].desired
    cost_per_hour: float = 0.0
    cost_by_pool: dict[str, float] = field(default_factory=dict)


@dataclass
class Sample:
    t: float  # real seconds since the traffic started
    sim_hour: float  # simulated clock (may pass 24: the day wraps)
    models: dict[str, ModelSample] = field(default_factory=dict)


@dataclass
class DecisionRecord:
    """One decision the operator took, from a Kubernetes Event or a change of ``status.lastDecision``."""

    t: float
    sim_hour: float
    model: str
    source: str  # "event" or "status"
    trigger: str
    message: str


@dataclass
class FlashSale:
    model: str
    start_hour: float
    end_hour: float
    multiplier: float


@dataclass
class Timeline:
    """Everything the report needs; JSON round-trips through :meth:`to_json` / :meth:`from_json`."""

    started_at: str
    real_seconds: float
    start_hour: float
    currency: str
    pools: list[PoolInfo]
    models: list[ModelInfo]
    sale: FlashSale | None = None
    samples: list[Sample] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    kubectl_get_rmd: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, raw: str) -> Timeline:
        data = json.loads(raw)
        return cls(
            started_at=data["started_at"],
            real_seconds=data["real_seconds"],
            start_hour=data["start_hour"],
            currency=data["currency"],
            pools=[PoolInfo(**p) for p in data["pools"]],
            models=[ModelInfo(**m) for m in data["models"]],
            sale=FlashSale(**data["sale"]) if data.get("sale") else None,
            samples=[
                Sample(t=s["t"], sim_hour=s["sim_hour"], models={k: ModelSample(**v) for k, v in s["models"].items()})
                for s in data["samples"]
            ],
            decisions=[DecisionRecord(**d) for d in data["decisions"]],
            kubectl_get_rmd=data.get("kubectl_get_rmd", ""),
            notes=list(data.get("notes", [])),
        )

    def pool(self, name: str) -> PoolInfo | None:
        return next((p for p in self.pools if p.name == name), None)

    def model(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)
