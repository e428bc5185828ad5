"""The sample ComputePools and RecModelDeployments as the demo applies them (pure): the scenario's start-up times,
quotas, rates and budgets, the models pointed at the demo's artifacts, the flash sale as a declared event, and the
pool/model records the timeline keeps.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.demo.errors import DemoError
from hybridrec_local.demo.scenario import Scenario
from hybridrec_local.timeline import ModelInfo, PoolInfo


def docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty documents of a multi-document YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render_pools(pools: Sequence[Mapping[str, Any]], scenario: Scenario) -> list[dict[str, Any]]:
    """The sample ComputePools with the demo's start-up time (a local server is ready in seconds) and quotas."""
    out = []
    for pool in pools:
        doc = copy.deepcopy(dict(pool))
        spec = doc.setdefault("spec", {})
        spec["startupSeconds"] = scenario.pool_startup_seconds
        name = doc.get("metadata", {}).get("name", "")
        if name in scenario.pool_max_gpus:
            spec["maxGpus"] = scenario.pool_max_gpus[name]
        out.append(doc)
    return out


def sale_event(scenario: Scenario, traffic_start: dt.datetime) -> dict[str, Any] | None:
    """The flash sale as a ``spec.scaling.schedule`` entry in wall-clock time, given when the traffic starts."""
    sale = scenario.sale
    if sale is None:
        return None
    start = traffic_start + dt.timedelta(seconds=scenario.real_offset(sale.start_hour))
    end = traffic_start + dt.timedelta(seconds=scenario.real_offset(sale.end_hour))
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"name": sale.name, "start": start.astimezone(dt.timezone.utc).strftime(fmt),
            "end": end.astimezone(dt.timezone.utc).strftime(fmt), "multiplier": sale.multiplier}


@dataclass(frozen=True)
class Artifact:
    """A model pushed to the demo's S3 store."""

    uri: str
    sha256: str
    architecture: str
    version: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


def render_models(models: Sequence[Mapping[str, Any]], scenario: Scenario,
                  artifacts: Mapping[str, Artifact]) -> list[dict[str, Any]]:
    """The sample RecModelDeployments pointed at the demo's artifacts, with the scenario's per-replica rate.

    ``artifacts`` maps an architecture to its artifact. The flash sale is declared later (:func:`sale_event`), when
    the traffic start time is known.
    """
    out = []
    for model in models:
        doc = copy.deepcopy(dict(model))
        spec = doc.setdefault("spec", {})
        arch = spec.get("model", {}).get("architecture", "two-tower")
        art = artifacts.get(arch)
        if art is None:
            raise DemoError("preparing the manifests", f"no {arch} artifact for {doc['metadata']['name']}")
        spec["model"] = {**spec.get("model", {}), "uri": art.uri, "sha256": art.sha256, "version": art.version}
        name = doc["metadata"]["name"]
        scaling = spec.setdefault("scaling", {})
        if scenario.scale_down_stabilization_s is not None:
            scaling["scaleDownStabilizationSeconds"] = scenario.scale_down_stabilization_s
        traffic = next((m for m in scenario.models if m.name == name), None)
        if traffic is not None and traffic.target_rps_per_replica is not None:
            scaling["targetRpsPerReplica"] = traffic.target_rps_per_replica
        if traffic is not None and traffic.max_replicas is not None:
            scaling["maxReplicas"] = traffic.max_replicas
            scaling["minReplicas"] = min(int(scaling.get("minReplicas", 1)), traffic.max_replicas)
        if traffic is not None and traffic.budget_per_hour is not None:
            spec["budget"] = {**(spec.get("budget") or {}), "maxPerHour": traffic.budget_per_hour, "currency": "USD"}
        spec.setdefault("scaling", {}).pop("schedule", None)
        out.append(doc)
    return out


def pool_infos(pools: Sequence[Mapping[str, Any]]) -> list[PoolInfo]:
    from hybridrec_operator.api.models import parse_pool

    out = []
    for raw in pools:
        p = parse_pool(raw)
        out.append(PoolInfo(name=p.name, tenancy=p.spec.tenancy.value, price_per_gpu_hour=p.spec.pricing.price_per_gpu_hour,
                            currency=p.spec.pricing.currency, capacity_type=p.spec.pricing.capacity_type.value,
                            spec=p.spec.to_wire()))
    return out


def model_infos(models: Sequence[Mapping[str, Any]]) -> list[ModelInfo]:
    from hybridrec_operator.api.models import parse_rmd

    out = []
    for raw in models:
        m = parse_rmd(raw)
        budget = m.spec.budget
        out.append(ModelInfo(
            name=m.name, namespace=m.namespace, sensitivity=m.spec.data_sensitivity.value,
            slo_p95_ms=float(m.spec.slo.p95_latency_ms), allow_public_burst=m.spec.placement.allow_public_burst,
            budget_per_hour=budget.max_per_hour if budget else None, budget_currency=budget.currency if budget else "USD",
            gpus_per_replica=m.spec.resources.gpus))
    return out
