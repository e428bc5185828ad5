"""Builders for the cost tests: pools and small RecModelDeployment specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridrec_operator.api.models import ComputePoolSpec, RecModelDeploymentSpec
from hybridrec_operator.core.planner import ModelState

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples" / "simulate"


def pool_spec(tenancy: str = "private", price: float = 1.0, max_gpus: int = 8, allowed: list[str] | None = None, startup: int = 60) -> ComputePoolSpec:
    return ComputePoolSpec.model_validate(
        {
            "tenancy": tenancy,
            "provider": "onprem" if tenancy == "private" else "aws",
            "pricing": {"pricePerGpuHour": price, "currency": "USD"},
            "maxGpus": max_gpus,
            "allowedSensitivity": allowed or (["public", "internal", "confidential", "restricted"] if tenancy == "private" else ["public", "internal"]),
            "startupSeconds": startup,
        }
    )


def model_spec(sensitivity: str = "public", *, burst: bool = False, gpus: int = 1, min_r: int = 0, max_r: int = 20, rps: float = 100.0,
               window: int = 300, budget: float | None = None, forbidden: list[str] | None = None, **extra: Any) -> RecModelDeploymentSpec:
    spec: dict[str, Any] = {
        "model": {"uri": "s3://models/x/", "architecture": "two-tower"},
        "dataSensitivity": sensitivity,
        "resources": {"gpus": gpus},
        "scaling": {"minReplicas": min_r, "maxReplicas": max_r, "targetRpsPerReplica": rps, "scaleDownStabilizationSeconds": window},
        "placement": {"allowPublicBurst": burst, "forbiddenPools": forbidden or []},
        "slo": {"p95LatencyMs": 50},
    }
    if budget is not None:
        spec["budget"] = {"maxPerHour": budget, "currency": "USD"}
    spec.update(extra)
    return RecModelDeploymentSpec.model_validate(spec)


def model(key: str, spec: RecModelDeploymentSpec, demand: float | None, current: dict[str, int] | None = None, **kw: Any) -> ModelState:
    return ModelState(key=key, spec=spec, demand_rps=demand, rps_per_replica=spec.scaling.target_rps_per_replica, current=current or {}, **kw)
