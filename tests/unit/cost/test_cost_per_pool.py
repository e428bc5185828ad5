"""Capacity per (model, pool): hints, measurements, cost per request, fastest-ready pools, spot risk, hard rules."""

from __future__ import annotations

from typing import Any

import pytest
from cost_builders import model, model_spec, pool_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cost_planner import assert_hard_rules

from hybridrec_operator.api.models import ComputePoolSpec, RecModelDeploymentSpec, Sensitivity, Tenancy
from hybridrec_operator.core.capacity_model import CapacityModel, contradicts_hint, hint_for, resolve
from hybridrec_operator.core.planner import AllocatorMemory, ModelState, PoolState, allocate, cost_per_1k_requests, spot_risk_per_hour

HINTS = [{"gpuModel": "Tesla-T4", "rpsPerReplica": 100}, {"gpuModel": "NVIDIA-A100", "rpsPerReplica": 1000}]


def gpu_pool(name: str, gpu: str, price: float, *, tenancy: str = "private", max_gpus: int = 32, startup: int = 60,
             capacity_type: str = "on-demand", reclaims: float | None = 0.0) -> PoolState:
    spec = pool_spec(tenancy, price, max_gpus, startup=startup)
    spec = ComputePoolSpec.model_validate({**spec.to_wire(), "gpu": {"model": gpu}, "pricing": {"pricePerGpuHour": price, "capacityType": capacity_type}})
    return PoolState(name, spec, max_gpus, reclaims)


def hinted(sensitivity: str = "public", **kw: Any) -> RecModelDeploymentSpec:
    """A model of 200 RPS per replica by default, 100 on a T4, 1,000 on an A100."""
    wire = model_spec(sensitivity, rps=200, **kw).to_wire()
    wire["scaling"]["capacityHints"] = HINTS
    return RecModelDeploymentSpec.model_validate(wire)


def per_pool(spec: RecModelDeploymentSpec, pools: list[PoolState]) -> dict[str, float]:
    return {p.name: resolve(spec, p.spec).rps_per_replica for p in pools}


def test_the_a100_is_cheaper_per_request_than_the_t4() -> None:
    # A T4 at 0.35/h serving 100 RPS costs 0.97 per million requests; an A100 at 2.50/h serving 1,000 RPS 0.69.
    t4, a100 = gpu_pool("t4", "Tesla-T4", 0.35), gpu_pool("a100", "NVIDIA-A100", 2.5)
    spec = hinted(max_r=40)
    assert cost_per_1k_requests(2.5, 1000) < cost_per_1k_requests(0.35, 100)
    m = model("m", spec, 1000.0, rps_per_pool=per_pool(spec, [t4, a100]))
    alloc, _ = allocate([m], [t4, a100], 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["m"].replicas == {"t4": 0, "a100": 1}
    assert alloc.models["m"].capacity_rps == {"a100": 1000.0}
    per_1k = alloc.models["m"].cost_per_1k_requests
    assert per_1k["a100"] == pytest.approx(2.5 / 3600) and per_1k["t4"] == pytest.approx(0.35 / 360)
    # Demand the A100 pool cannot hold spills to the T4s, 100 RPS at a time.
    small = gpu_pool("a100", "NVIDIA-A100", 2.5, max_gpus=1)
    m = model("m", spec, 1250.0, rps_per_pool=per_pool(spec, [t4, small]))
    alloc, _ = allocate([m], [t4, small], 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["m"].replicas == {"t4": 3, "a100": 1}
    assert alloc.models["m"].shortfall == 0 and not alloc.models["m"].slo_at_risk


def test_greedy_fallback_also_ranks_pools_per_request() -> None:
    t4, a100 = gpu_pool("t4", "Tesla-T4", 0.35), gpu_pool("a100", "NVIDIA-A100", 2.5)
    spec = hinted(max_r=40)
    m = model("m", spec, 1000.0, rps_per_pool=per_pool(spec, [t4, a100]))
    alloc, _ = allocate([m], [t4, a100], 0.0, AllocatorMemory(), headroom=0.0, solver="greedy")
    assert alloc.solver == "greedy" and alloc.models["m"].replicas == {"t4": 0, "a100": 1}


def test_min_replicas_is_a_count_whatever_the_gpu() -> None:
    a100 = gpu_pool("a100", "NVIDIA-A100", 2.5)
    spec = hinted(min_r=3, max_r=10)
    alloc, _ = allocate([model("m", spec, 100.0, rps_per_pool=per_pool(spec, [a100]))], [a100], 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["m"].replicas == {"a100": 3}


def test_measurements_override_hints_and_a_pool_without_them_is_priced_from_its_hint() -> None:
    t4, l4 = gpu_pool("t4", "Tesla-T4", 0.35), gpu_pool("l4", "NVIDIA-L4", 0.8)
    spec = hinted()
    assert hint_for(spec, t4.spec) == 100 and hint_for(spec, l4.spec) == 200  # no hint for L4: targetRpsPerReplica
    assert resolve(spec, t4.spec).source == "hint" and resolve(spec, l4.spec).source == "default"
    learned = CapacityModel.from_spec(spec, t4.spec)
    assert learned.rps_per_replica == 100 and not learned.measured
    assert resolve(spec, t4.spec, learned).source == "hint"  # no evidence yet: never infinite, never a guess
    for t in range(0, 3000, 30):  # 180 RPS per replica at p95 20 ms < SLO 50 ms, steadily
        learned.observe(float(t), 180.0, 20.0, 2)
    capacity = resolve(spec, t4.spec, learned)
    assert capacity.source == "measured" and capacity.rps_per_replica > 150
    assert contradicts_hint(capacity)  # worth an event: the measurement says the hint is wrong


def test_a_jump_goes_to_the_pool_ready_soonest_then_migrates_to_the_cheapest() -> None:
    # The cheap pool takes 240 s to start; the dearer private one 45 s.
    fast, slow = gpu_pool("fast", "Tesla-T4", 1.0, startup=45), gpu_pool("slow", "Tesla-T4", 0.5, startup=240, tenancy="public")
    spec = model_spec("public", rps=100, max_r=20, window=0)
    memory = AllocatorMemory()
    alloc, memory = allocate([model("m", spec, 100.0)], [fast, slow], 0.0, memory, headroom=0.0)
    assert alloc.models["m"].replicas == {"fast": 0, "slow": 1}
    current = {"slow": 1}
    alloc, memory = allocate([model("m", spec, 500.0, current, urgent=True)], [fast, slow], 30.0, memory, headroom=0.0)
    assert alloc.models["m"].replicas == {"fast": 4, "slow": 1} and alloc.models["m"].direction == "up"
    # Calm again: replicas move to the cheaper pool, at most 2 per round, after the dwell time, make-before-break.
    current = {"fast": 4, "slow": 1}
    t = 30.0
    for _ in range(20):
        t += 30.0
        alloc, memory = allocate([model("m", spec, 500.0, current, ready=current)], [fast, slow], t, memory, headroom=0.0)
        current = {p: n for p, n in alloc.models["m"].replicas.items() if n}
    assert current == {"slow": 5}


def test_spot_risk_is_priced_in() -> None:
    spot = gpu_pool("spot", "NVIDIA-L4", 1.0, tenancy="public", capacity_type="spot", startup=120, reclaims=2.0)
    steady = gpu_pool("steady", "NVIDIA-L4", 1.05, tenancy="public", startup=120)
    assert spot_risk_per_hour(spot, 1) == pytest.approx(2.0 * 1.0 * 2 * 120 / 3600)
    alloc, _ = allocate([model("m", model_spec("public", rps=100), 300.0)], [spot, steady], 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["m"].replicas == {"spot": 0, "steady": 3}
    calm = PoolState("spot", spot.spec, spot.capacity_gpus, 0.0)
    alloc, _ = allocate([model("m", model_spec("public", rps=100), 300.0)], [calm, steady], 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["m"].replicas == {"spot": 3, "steady": 0}


# ---------------------------------------------------------------------------------------- hard rules


SENS = [s.value for s in Sensitivity]
GPUS = ["Tesla-T4", "NVIDIA-L4", "NVIDIA-A100"]


@st.composite
def heterogeneous(draw: st.DrawFn) -> tuple[list[ModelState], list[PoolState]]:
    pools = []
    for j in range(draw(st.integers(1, 5))):
        tenancy = draw(st.sampled_from(["private", "public"]))
        pools.append(gpu_pool(
            f"p{j}", draw(st.sampled_from(GPUS)), draw(st.floats(0.1, 5.0)), tenancy=tenancy, max_gpus=draw(st.integers(0, 12)),
            startup=draw(st.sampled_from([30, 60, 240])), reclaims=draw(st.sampled_from([0.0, 1.0])),
        ))
    models = []
    for i in range(draw(st.integers(1, 4))):
        sens = draw(st.sampled_from(SENS))
        spec = hinted(sens, burst=sens in ("public", "internal") and draw(st.booleans()), gpus=draw(st.integers(1, 2)), max_r=draw(st.integers(1, 12)))
        current = {p.name: draw(st.integers(0, 3)) for p in pools if draw(st.booleans())}
        models.append(model(f"m{i}", spec, draw(st.floats(0, 5000)), current, rps_per_pool=per_pool(spec, pools), urgent=draw(st.booleans())))
    return models, pools


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heterogeneous(), st.sampled_from(["auto", "greedy"]))
def test_no_sensitive_replica_on_a_public_pool_and_no_quota_exceeded(scenario: tuple[list[ModelState], list[PoolState]], solver: str) -> None:
    models, pools = scenario
    alloc, memory = allocate(models, pools, 0.0, AllocatorMemory(), solver=solver)  # type: ignore[arg-type]
    assert_hard_rules(alloc, models, pools)  # admitted pools only, quotas, max replicas, budgets
    for m in models:
        if m.spec.data_sensitivity in (Sensitivity.CONFIDENTIAL, Sensitivity.RESTRICTED):
            assert all(next(p for p in pools if p.name == name).spec.tenancy == Tenancy.PRIVATE for name, n in alloc.models[m.key].replicas.items() if n)
    # The next round, from the new state, calm: migrations toward the cheapest per request keep every rule too.
    again = [model(m.key, m.spec, m.demand_rps, {p: n for p, n in alloc.models[m.key].replicas.items() if n}, rps_per_pool=m.rps_per_pool) for m in models]
    alloc2, _ = allocate(again, pools, 300.0, memory, solver=solver)  # type: ignore[arg-type]
    assert_hard_rules(alloc2, again, pools)
