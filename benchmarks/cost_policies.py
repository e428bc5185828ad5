"""Cost-policy benchmark: hybridrec against HPA-like, KEDA at 0.8x, static peak and a perfect-foresight oracle.

Scenarios (3 days by default, 15 s ticks, minute-level noise of each trace's own variability, seeded):
  1. diurnal       - Taylor's half-hourly electricity demand (traces/taylor.py), one public model, the 4 sample pools;
  2. bursty        - NAB Twitter_volume_AAPL (real tweet volume, rare 20x bursts), same model and pools;
  3. mix           - 4 models on the sample pools: restricted account-recs (NAB FB) and confidential claims-recs
                     (NAB IBM) sharing the private pools, internal homepage-recs (NAB UPS) bursting to public pools,
                     public trending (Taylor, shifted);
  4. heterogeneous - NAB ec2_network_in on T4 / L4 / A100 pools whose replicas serve 100 / 300 / 1,000 RPS
                     (scaling.capacityHints): cheapest per GPU-hour is not cheapest per request;
  5. spot          - NAB Twitter_volume_UPS on a cheap spot L4 pool that loses a node 2 times per pool-hour
                     (30-120 s notice), an on-demand L4 pool and a small private pool.
Plus the allocator's solve time for 50 models x 8 pools (p99 over random problems, no memo).

Usage:  python benchmarks/cost_policies.py [--days 3] [--out /tmp/hybridrec-bench]
Writes benchmarks/results/cost_policies.md (small) and PNG plots + JSON into --out (not into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model, memory_gib  # noqa: E402
from traces.taylor import diurnal  # noqa: E402

from hybridrec_operator.api.models import ComputePool, ComputePoolSpec, RecModelDeployment, RecModelDeploymentSpec  # noqa: E402
from hybridrec_operator.core.planner import AllocatorMemory, ModelState, PoolState, allocate, clear_solution_cache  # noqa: E402
from hybridrec_operator.sim.simulate import (  # noqa: E402
    Reclaims,
    Trace,
    demand_shape,
    parse_objects,
    simulate,
    summary_rows,
    write_plots,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "manifests" / "samples" / "simulate"
SCENARIOS = ROOT / "benchmarks" / "traces" / "scenarios"
NAB = ROOT / "benchmarks" / "traces" / "nab"
RESULTS = ROOT / "benchmarks" / "results" / "cost_policies.md"
POLICIES = ("hybridrec", "hpa", "keda", "static-peak", "oracle")
ORACLE_TARGET = {"diurnal": 1.25, "mix": 1.25}
SOLVE_P99_TARGET_MS = 200.0
SPOT_RECLAIMS_PER_POOL_HOUR = 2.0


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    trace: Trace
    pools: list[ComputePool]
    models: list[RecModelDeployment]
    reclaims: Reclaims = Reclaims()


def with_scaling(rmd: RecModelDeployment, **scaling: Any) -> RecModelDeployment:
    spec = rmd.spec.model_copy(update={"scaling": rmd.spec.scaling.model_copy(update=scaling)})
    return rmd.model_copy(update={"spec": spec})


def nab(name: str, days: int, peak: float) -> np.ndarray:
    return demand_shape(NAB / f"{name}.csv", days * 1440, peak, floor=0.05)


def scenarios(days: int) -> list[Scenario]:
    pools, sample_models = parse_objects([(SAMPLES / "pools.yaml").read_text(), (SAMPLES / "models.yaml").read_text()])
    trending = with_scaling(next(m for m in sample_models if m.name == "trending"), max_replicas=40, schedule=[])
    minutes = np.arange(days * 1440)
    _, mix_models = parse_objects([(SCENARIOS / "mix-models.yaml").read_text()])
    hetero_pools, hetero_models = parse_objects([(SCENARIOS / "hetero.yaml").read_text()])
    spot_pools, spot_models = parse_objects([(SCENARIOS / "spot.yaml").read_text()])
    sample = "the 4 sample pools (onprem-a100 8 GPUs 0.90/h, onprem-t4 4 GPUs 0.35/h, aws-spot-l4 12 GPUs 1.20/h, gcp-ondemand-a100 16 GPUs 3.67/h)"
    return [
        Scenario("diurnal", f"Taylor diurnal, peak 4,000 RPS, `trending` (public, 400 RPS/replica), {sample}",
                 Trace(minutes, {"trending": diurnal(days, 4000.0)}), pools, [trending]),
        Scenario("bursty", f"NAB Twitter_volume_AAPL, peak 4,000 RPS, `trending`, {sample}",
                 Trace(minutes, {"trending": nab("Twitter_volume_AAPL", days, 4000.0)}), pools, [trending]),
        Scenario(
            "mix",
            "restricted `account-recs` (NAB FB, peak 1,000 RPS, 200/replica), confidential `claims-recs` (NAB IBM, 800, 200), "
            "internal+burst `homepage-recs` (NAB UPS, 2,000, 200), public `trending` (Taylor shifted 4 h, 3,200, 400); "
            + sample,
            Trace(minutes, {
                "account-recs": nab("Twitter_volume_FB", days, 1000.0),
                "claims-recs": nab("Twitter_volume_IBM", days, 800.0),
                "homepage-recs": nab("Twitter_volume_UPS", days, 2000.0),
                "trending": diurnal(days, 3200.0, shift_half_hours=8),
            }),
            pools,
            mix_models,
        ),
        Scenario(
            "heterogeneous",
            "NAB ec2_network_in_257a54, peak 8,000 RPS, `ranker` (public; 100 / 300 / 1,000 RPS per replica on T4 / L4 / A100); "
            "onprem-t4 8 GPUs 0.35/h 45 s, cloud-l4 16 GPUs 0.80/h 90 s, cloud-a100 8 GPUs 2.50/h 240 s",
            Trace(minutes, {"ranker": nab("ec2_network_in_257a54", days, 8000.0)}),
            hetero_pools,
            hetero_models,
        ),
        Scenario(
            "spot",
            f"NAB Twitter_volume_UPS, peak 8,000 RPS, `trending` (400 RPS/replica); aws-spot-l4 24 GPUs 0.45/h (spot, "
            f"{SPOT_RECLAIMS_PER_POOL_HOUR:g} reclaims per pool-hour, 30-120 s notice), aws-ondemand-l4 24 GPUs 1.10/h, onprem-a100 4 GPUs 0.90/h",
            Trace(minutes, {"trending": nab("Twitter_volume_UPS", days, 8000.0)}),
            spot_pools,
            spot_models,
            Reclaims(SPOT_RECLAIMS_PER_POOL_HOUR, seed=7),
        ),
    ]


# ------------------------------------------------------------------------------------------ solve time


def _random_problem(rng: random.Random, n_models: int, n_pools: int) -> tuple[list[ModelState], list[PoolState]]:
    sensitivities = ["public", "internal", "confidential", "restricted"]
    pools = []
    for j in range(n_pools):
        private = j < n_pools // 2
        spec = ComputePoolSpec.model_validate({
            "tenancy": "private" if private else "public",
            "provider": "onprem" if private else "aws",
            "gpu": {"model": ["Tesla-T4", "NVIDIA-L4", "NVIDIA-A100"][j % 3]},
            "pricing": {"pricePerGpuHour": round(rng.uniform(0.3, 4.0), 2), "capacityType": "spot" if j % 4 == 3 else "on-demand"},
            "maxGpus": rng.randint(24, 64),
            "allowedSensitivity": sensitivities if private else sensitivities[:2],
            "startupSeconds": rng.choice([45, 60, 90, 120, 240]),
        })
        pools.append(PoolState(f"pool-{j}", spec, spec.max_gpus, 1.0 if j % 4 == 3 else 0.0))
    models = []
    for i in range(n_models):
        sens = rng.choice(sensitivities)
        spec = RecModelDeploymentSpec.model_validate({
            "model": {"uri": "s3://models/x/", "architecture": "two-tower"},
            "dataSensitivity": sens,
            "resources": {"gpus": 1},
            "placement": {"allowPublicBurst": sens == "internal" and rng.random() < 0.5},
            "scaling": {"minReplicas": 1, "maxReplicas": 40, "targetRpsPerReplica": 200,
                        "capacityHints": [{"gpuModel": "NVIDIA-A100", "rpsPerReplica": 800}, {"gpuModel": "Tesla-T4", "rpsPerReplica": 100}]},
        })
        current = {p.name: rng.randint(0, 3) for p in rng.sample(pools, 2)}
        rps = {p.name: {"Tesla-T4": 100.0, "NVIDIA-L4": 250.0, "NVIDIA-A100": 800.0}[p.spec.gpu.model] for p in pools}
        # Demand sized so the cluster runs at roughly 60-80% of its GPUs: busy, not overloaded.
        models.append(ModelState(f"m{i}", spec, rng.uniform(50, 1500), 200.0, current, rps_per_pool=rps, urgent=rng.random() < 0.1))
    return models, pools


def _spend(allocation: Any, models: list[ModelState], pools: list[PoolState]) -> tuple[float, int]:
    price = {p.name: p.spec.pricing.price_per_gpu_hour for p in pools}
    cost = sum(n * price[p] for a in allocation.models.values() for p, n in a.replicas.items())
    return cost, sum(a.shortfall for a in allocation.models.values())


def solve_times(rounds: int = 60, n_models: int = 50, n_pools: int = 8, quality: int = 8) -> tuple[np.ndarray, list[str]]:
    """Solve times (ms) with the default time limit; for the first ``quality`` problems also the hourly cost and
    shortfall against a 5 s solve, so a time-limited answer's quality is on record."""
    rng = random.Random(0)
    out = []
    notes = []
    for r in range(rounds):
        models, pools = _random_problem(rng, n_models, n_pools)
        clear_solution_cache()
        allocation, _ = allocate(models, pools, 1000.0, AllocatorMemory())
        out.append(allocation.solve_seconds)
        if r < quality:
            clear_solution_cache()
            best, _ = allocate(models, pools, 1000.0, AllocatorMemory(), time_limit=5.0)
            (c1, s1), (c2, s2) = _spend(allocation, models, pools), _spend(best, models, pools)
            notes.append(f"{c1 / c2:.4f}x cost, shortfall {s1} vs {s2}")
    return np.array(out) * 1000.0, notes


# ----------------------------------------------------------------------------------------------- report


def machine() -> str:
    gib = memory_gib()
    mem = f", {gib:.0f} GiB RAM" if gib else ""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"SciPy {scipy.__version__} (HiGHS via scipy.optimize.milp), NumPy {np.__version__}"
    )


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdicts(key: str, rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(target, met, figures) for hybridrec in one scenario."""
    h, hpa, keda = rows["hybridrec"], rows["hpa"], rows["keda"]
    out = [
        ("cost < HPA-like", h["cost"] < hpa["cost"], f"{h['x_hpa']:.3f}x"),
        ("cost < KEDA@0.8", h["cost"] < keda["cost"], f"{h['x_keda']:.3f}x"),
        ("SLO min < HPA-like", h["slo_violation_minutes"] < hpa["slo_violation_minutes"],
         f"{h['slo_violation_minutes']} vs {hpa['slo_violation_minutes']}"),
        ("SLO min < KEDA@0.8", h["slo_violation_minutes"] < keda["slo_violation_minutes"],
         f"{h['slo_violation_minutes']} vs {keda['slo_violation_minutes']}"),
        ("zero sensitive violations", h["sensitive_violations"] == 0, f"{h['sensitive_violations']:.0f}"),
    ]
    if key in ORACLE_TARGET:
        out.append((f"cost <= {ORACLE_TARGET[key]:.2f}x oracle", h["x_oracle"] <= ORACLE_TARGET[key], f"{h['x_oracle']:.3f}x"))
    return out


def run_scenario(s: Scenario, out_dir: Path, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    t0 = time.perf_counter()
    results = simulate(s.trace, s.pools, s.models, POLICIES, noise=True, seed=seed, reclaims=s.reclaims)
    wall = time.perf_counter() - t0
    write_plots(results, out_dir, stem=s.key)
    rows = summary_rows(results)
    extra = {
        "slo_by_model": {name: results[name].slo_violation_by_model for name in ("hybridrec", "hpa", "keda")},
        "cost_by_pool": {name: {p: round(c, 2) for p, c in r.cost_by_pool.items()} for name, r in results.items()},
        "per_1k": {
            name: {
                p: round(r.cost_by_pool[p] / (r.served_by_pool[p] / 1000.0), 6)
                for p in r.cost_by_pool
                if r.served_by_pool.get(p, 0) > 0
            }
            for name, r in results.items()
            if r.served_by_pool
        },
    }
    return rows, extra, wall


def main(argv: list[str] | None = None, progress: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hybridrec-bench"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios simulated in parallel processes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    bench_t0 = time.perf_counter()
    sections: list[str] = []
    summary: list[str] = []
    raw: dict[str, Any] = {}
    chosen = [s for s in scenarios(args.days) if not args.only or s.key in args.only]
    # Scenarios are independent: ``--jobs`` runs them in parallel processes (same figures, seeded per scenario).
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_scenario, s, args.out, args.seed) for s in chosen]
        outcomes = [f.result() for f in futures]
    for s, (rows_list, extra, wall) in zip(chosen, outcomes):
        rows = {r["policy"]: r for r in rows_list}
        raw[s.key] = {"rows": rows_list, **extra}
        lines = [
            f"### {s.key}: {s.title}",
            "",
            f"{len(s.trace.minutes):,} minutes; simulated in {wall:.0f} s.",
            "",
            "| policy | cost (USD) | x oracle | x HPA | x KEDA | SLO-violation min | sensitive viol. (replica-min) | moves | reclaims | solve ms mean / p99 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows_list:
            solve = "-" if r["solve_ms_mean"] is None else f"{r['solve_ms_mean']:.1f} / {r['solve_ms_p99']:.0f}"
            lines.append(
                f"| {r['policy']} | {r['cost']:,.1f} | {fmt(r['x_oracle'], '.3f')} | {fmt(r['x_hpa'], '.3f')} | {fmt(r['x_keda'], '.3f')} | "
                f"{r['slo_violation_minutes']:,} | {r['sensitive_violations']:,.0f} | {r['moves']:,} | {r['reclaims']:,} | {solve} |"
            )
        names = [m.name for m in s.models]
        if len(names) > 1:
            split = "; ".join(f"{p} " + "/".join(str(extra["slo_by_model"][p].get(n, 0)) for n in names) for p in ("hybridrec", "hpa", "keda"))
            lines += ["", f"SLO-violation minutes per model ({'/'.join(names)}): {split}."]
        per_1k = extra["per_1k"].get("hybridrec", {})
        if per_1k:
            lines += ["", "hybridrec cost per 1,000 requests served, per pool: " + ", ".join(f"{p} {v:.5f}" for p, v in per_1k.items()) + "."]
        checks = verdicts(s.key, rows)
        lines += ["", "Targets: " + "; ".join(f"{t}: {'met' if ok else 'MISSED'} ({fig})" for t, ok, fig in checks) + ".", ""]
        summary.append(
            f"| {s.key} | {rows['hybridrec']['x_oracle']:.3f} | {rows['hybridrec']['x_hpa']:.3f} | {rows['hybridrec']['x_keda']:.3f} | "
            f"{rows['hybridrec']['slo_violation_minutes']} / {rows['hpa']['slo_violation_minutes']} / {rows['keda']['slo_violation_minutes']} | "
            f"{rows['hybridrec']['sensitive_violations']:.0f} | {sum(ok for _, ok, _ in checks)}/{len(checks)} |"
        )
        sections.append("\n".join(lines))
        progress(sections[-1])
    solves, quality = solve_times()
    p99 = float(np.quantile(solves, 0.99))
    solve_line = (
        f"Allocator solve time, 50 models x 8 pools (60 random problems, memo cleared, HiGHS, default 0.1 s limit): median "
        f"{np.median(solves):.0f} ms, p99 {p99:.0f} ms, max {solves.max():.0f} ms; target p99 <= {SOLVE_P99_TARGET_MS:.0f} ms: "
        f"{'met' if p99 <= SOLVE_P99_TARGET_MS else 'MISSED'}. Against a 5 s solve of the first {len(quality)} problems "
        f"(cost per hour, replicas short): {'; '.join(quality)}."
    )
    progress(solve_line)
    raw["solve_ms"] = solves.tolist()
    (args.out / "cost_policies.json").write_text(json.dumps(raw, indent=2))
    total = time.perf_counter() - bench_t0
    header = f"""# Cost policies: hybridrec vs baselines (simulated, real traces)

Generated by `python benchmarks/cost_policies.py --days {args.days} --seed {args.seed}` on {started:%Y-%m-%d %H:%M} UTC in {total:.0f} s.
Machine: {machine()}.

## Summary

| scenario | hybridrec x oracle | x HPA-like | x KEDA@0.8 | SLO-violation min hybridrec / HPA / KEDA | sensitive viol. | targets met |
|---|---:|---:|---:|---:|---:|---:|
""" + "\n".join(summary) + f"""

{solve_line}

## How it is measured

`hybridrec simulate`'s engine (`hybridrec_operator/sim/`) replays each trace in 15 s ticks. Demand: each minute's
value times `1 + e`, `e` normal with the trace's own relative minute-to-minute variability (seed {args.seed}), interpolated
between minute centres. Pods cost money from creation and serve only once ready (`startupSeconds`); pool quotas
(`maxGpus`) and prices as in the scenario's YAML; one ready replica of a model on a pool serves that pool's capacity
(`scaling.capacityHints` for the pool's `gpu.model`, else `targetRpsPerReplica`). Latency: a queueing
approximation of a batching replica (`sim/latency.py`, p95 = SLO exactly at a replica's capacity, steep above it,
backlog beyond 1.1x, calibrated on `benchmarks/results/serving.md`); an SLO-violation minute is a model-minute in
which p95 exceeded the target at some tick. Spot reclaims take one pod after a 30-120 s notice; hybridrec watches
notices (replaces first), the baselines learn when the pod dies.

Policies: **hybridrec** = `forecast.outlook` (level = median of the last minute plus the slope of the last minute
carried over the lead time, margin = 95th percentile of how far demand went above that same level+slope path
within one lead time over the last 2 h, bounded by the same quantile of a robustly fitted normal), a round at once
on overload, scale-down stabilisation of one lead time, and the global MILP allocator (`planner.allocate`, the
operator's code) with per-(model, pool) capacity and spot pools priced by their reclaim risk
(`placement.spot_risk_per_hour`, the rate learned from the notices seen, as the controller does), replacements
started at a reclaim notice, fastest-ready pools when urgent. **hpa** = Kubernetes defaults on GPU
utilisation 70% (10% tolerance, scale-up max(100%, 4 pods)/15 s, 300 s scale-down stabilisation), new pods on the
cheapest admitted pool per GPU-hour with room. **keda** = the same machinery on RPS per replica with the threshold
at 0.8x `targetRpsPerReplica`. **static-peak** = the peak x 1.05 all the time. **oracle** = perfect foresight, no
start-up delay: each minute the cheapest allocation covering that minute's highest tick: a lower bound for any
policy that meets the SLO.

"""
    footer = """
Plots (cost per hour and replicas over time, per scenario) and the raw numbers (per-model SLO minutes, cost and cost
per 1,000 requests per pool) are written to `--out` (default /tmp/hybridrec-bench), not to the repository.
"""
    args.results.write_text(header + "## Scenarios\n\n" + "\n".join(sections) + footer)
    progress(f"wrote {args.results} ({total:.0f} s)")


if __name__ == "__main__":
    main()
