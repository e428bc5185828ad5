"""What the demo observes, turned into timeline samples (pure conversions; the orchestrator does the reading):
running replicas from the pods, desired replicas and $/h from the RecModelDeployments' status, p95 and cost from
Prometheus, offered and served rates from the load generator, and decisions from Events and ``status.lastDecision``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybridrec_local.demo.scenario import Scenario, offered_rps
from hybridrec_local.loadgen import OpenLoopLoad
from hybridrec_local.timeline import DecisionRecord, ModelInfo, ModelSample, Sample

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=hybridrec"


@dataclass(frozen=True)
class LoadSnapshot:
    """One model's load at one instant: the rate asked for, what was served and failed (per second), client p95."""

    offered_rps: float
    served_rps: float
    error_rps: float
    client_p95_ms: float | None


def load_snapshot(load: OpenLoopLoad, scenario: Scenario, window_s: float) -> dict[str, LoadSnapshot]:
    """Per model: the curve's rate now, and the served/failed rates and client p95 over the last ``window_s``."""
    now = min(load.elapsed_s, scenario.real_seconds)
    out = {}
    for m in scenario.models:
        served, failed, p95 = load.window(m.name, window_s)
        out[m.name] = LoadSnapshot(offered_rps(scenario, m.name, scenario.sim_hour(now)), served, failed, p95)
    return out


PROM_P95 = ('histogram_quantile(0.95, sum by (namespace, model, le) '
            '(rate(hybridrec_server_request_duration_seconds_bucket{{endpoint="recommend"}}[{w}])))')
PROM_COST = "sum by (namespace, model, pool) (hybridrec_cost_per_hour)"


def prom_vector(payload: Mapping[str, Any], labels: Sequence[str]) -> dict[tuple[str, ...], float]:
    """An instant-vector answer as {label values: value}; NaN (no traffic in the window) is left out."""
    out: dict[tuple[str, ...], float] = {}
    for item in payload.get("data", {}).get("result", []) or []:
        value = float(item["value"][1])
        if math.isfinite(value):
            out[tuple(item["metric"].get(k, "") for k in labels)] = value
    return out


def running_replicas(pods: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """{(namespace, model): {pool: running pods}} from hybridrec's pods (phase Running, not being deleted)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
            continue
        model, pool = labels.get("hybridrec.io/model"), labels.get("hybridrec.io/pool")
        if model and pool:
            per = out.setdefault((meta.get("namespace", "default"), model), {})
            per[pool] = per.get(pool, 0) + 1
    return out


def placements_of(rmd: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, float], float]:
    """(desired per pool, $/h per pool, $/h total) from a RecModelDeployment's status."""
    status = rmd.get("status") or {}
    desired: dict[str, int] = {}
    cost: dict[str, float] = {}
    for p in status.get("placements") or []:
        pool = p.get("pool")
        if pool:
            desired[pool] = int(p.get("desired", 0))
            cost[pool] = float(p.get("pricePerHour", 0.0))
    total = float(status.get("costPerHour", sum(cost.values())))
    return desired, cost, total


def build_sample(t: float, sim_hour: float, models: Sequence[ModelInfo], rmds: Sequence[Mapping[str, Any]],
                 pods: Sequence[Mapping[str, Any]], p95: Mapping[tuple[str, ...], float],
                 prom_cost: Mapping[tuple[str, ...], float], load: Mapping[str, LoadSnapshot]) -> Sample:
    """One timeline sample from what the API server, Prometheus and the load generator said at one instant.

    Replicas are the pods the API server reports Running; cost per pool comes from the operator's
    ``hybridrec_cost_per_hour`` in Prometheus, or the RMD status when Prometheus has none yet.
    """
    by_name = {(r["metadata"].get("namespace", "default"), r["metadata"]["name"]): r for r in rmds}
    running = running_replicas(pods)
    sample = Sample(t=round(t, 3), sim_hour=round(sim_hour, 4))
    for m in models:
        key = (m.namespace, m.name)
        desired, status_cost, status_total = placements_of(by_name.get(key, {}))
        cost = {pool: v for (ns, name, pool), v in prom_cost.items() if (ns, name) == key}
        if not cost:
            cost = status_cost
        total = sum(cost.values()) if cost else status_total
        snap = load.get(m.name)
        sample.models[m.name] = ModelSample(
            offered_rps=round(snap.offered_rps, 3) if snap else 0.0,
            served_rps=round(snap.served_rps, 3) if snap else 0.0,
            error_rps=round(snap.error_rps, 3) if snap else 0.0,
            p95_ms=round(p95[key] * 1000.0, 3) if key in p95 else None,
            client_p95_ms=round(snap.client_p95_ms, 3) if snap and snap.client_p95_ms is not None else None,
            replicas_by_pool=running.get(key, {}),
            desired_by_pool=desired,
            cost_per_hour=round(total, 6),
            cost_by_pool={k: round(v, 6) for k, v in cost.items()},
        )
    return sample


def new_decisions(t: float, sim_hour: float, rmds: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                  seen: set[str]) -> list[DecisionRecord]:
    """Decisions not seen before: Kubernetes Events about RecModelDeployments and changes of ``status.lastDecision``.

    ``seen`` (event uid+count, or lastDecision time+message) is updated in place.
    """
    out: list[DecisionRecord] = []
    for ev in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        if obj.get("kind") != "RecModelDeployment":
            continue
        key = f"event:{ev.get('metadata', {}).get('uid')}:{ev.get('count', 1)}"
        if key in seen:
            continue
        seen.add(key)
        out.append(DecisionRecord(t=round(t, 3), sim_hour=round(sim_hour, 4), model=obj.get("name", ""), source="event",
                                  trigger=ev.get("reason", ""), message=ev.get("message") or ev.get("note") or ""))
    for rmd in rmds:
        last = (rmd.get("status") or {}).get("lastDecision")
        if not last:
            continue
        key = f"status:{rmd['metadata']['name']}:{last.get('time')}:{last.get('message')}"
        if key in seen:
            continue
        seen.add(key)
        # The same decision is usually also an Event; keep the status copy only when no event said the same thing.
        if any(d.model == rmd["metadata"]["name"] and d.message == last.get("message") for d in out):
            continue
        out.append(DecisionRecord(t=round(t, 3), sim_hour=round(sim_hour, 4), model=rmd["metadata"]["name"], source="status",
                                  trigger=str(last.get("trigger", "")), message=str(last.get("message", ""))))
    return out
