"""The global allocator: optimality, hard rules, fallback, anti-flapping, budget, sensitive-first, wording."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace
from typing import Any

import pytest
from cost_builders import model, model_spec, pool_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec_operator.core import allocator_solvers, planner
from hybridrec_operator.api.models import ComputePoolSpec, GpuSpec, Pricing, Sensitivity, Tenancy
from hybridrec_operator.core.costing import CurrencyMismatchError
from hybridrec_operator.core.planner import SENSITIVITY_WEIGHT, Allocation, AllocatorMemory, ModelState, PoolState, allocate
from hybridrec_operator.core.sensitivity import pool_admits


def spend(alloc: Allocation, models: list[ModelState], pools: list[PoolState]) -> float:
    price = {p.name: p.spec.pricing.price_per_gpu_hour for p in pools}
    return sum(n * price[p] * m.spec.resources.gpus for m in models for p, n in alloc.models[m.key].replicas.items())


def assert_hard_rules(alloc: Allocation, models: list[ModelState], pools: list[PoolState]) -> None:
    by_name = {p.name: p for p in pools}
    used = dict.fromkeys(by_name, 0)
    for m in models:
        a = alloc.models[m.key]
        for name, n in a.replicas.items():
            assert n >= 0
            if n == 0:
                continue
            ok, why = pool_admits(m.spec.data_sensitivity, by_name[name].spec, allow_public_burst=m.spec.placement.allow_public_burst)
            assert ok, f"{m.key} ({m.spec.data_sensitivity}) on {name}: {why}"
            assert name not in m.spec.placement.forbidden_pools
            used[name] += n * m.spec.resources.gpus
        total = sum(a.replicas.values())
        assert total <= (m.pinned if m.pinned is not None else m.spec.scaling.max_replicas)
        if m.spec.budget and m.spec.budget.max_per_hour is not None:
            cost = sum(n * by_name[p].spec.pricing.price_per_gpu_hour * m.spec.resources.gpus for p, n in a.replicas.items())
            assert cost <= m.spec.budget.max_per_hour + 1e-9
    for name, gpus in used.items():
        assert gpus <= by_name[name].capacity_gpus, f"pool {name} over capacity"


# -------------------------------------------------------------------------------------------- optimality

SMALL_POOLS = [
    PoolState("priv-cheap", pool_spec("private", 0.5), 3),
    PoolState("priv-open", pool_spec("private", 0.9, allowed=["public", "internal", "confidential"]), 4),
    PoolState("pub-spot", pool_spec("public", 1.2), 4),
    PoolState("pub-od", pool_spec("public", 3.0), 6),
]
SMALL_MODELS = [
    ("restricted", model_spec("restricted", max_r=6)),
    ("internal", model_spec("internal", burst=True, gpus=2, max_r=6)),
    ("public", model_spec("public", max_r=6)),
]


def brute_force(wanted: list[int]) -> float:
    """Minimum of cost + weighted unmet penalty over every allocation, the allocator's objective without tie-breaks."""
    pairs = [(i, p) for i, (_, spec) in enumerate(SMALL_MODELS) for p in planner.admitted_pools(spec, SMALL_POOLS)]
    costs = [p.spec.pricing.price_per_gpu_hour * SMALL_MODELS[i][1].resources.gpus for i, p in pairs]
    unit = 2 * max(costs) + 1
    best = math.inf
    ranges = [range(0, min(6, p.capacity_gpus // SMALL_MODELS[i][1].resources.gpus) + 1) for i, p in pairs]
    for x in itertools.product(*ranges):
        used: dict[str, int] = {}
        totals = [0] * len(SMALL_MODELS)
        for (i, p), n in zip(pairs, x):
            used[p.name] = used.get(p.name, 0) + n * SMALL_MODELS[i][1].resources.gpus
            totals[i] += n
        if any(used[p.name] > p.capacity_gpus for p in SMALL_POOLS if p.name in used) or any(t > 6 for t in totals):
            continue
        unmet = sum(max(0, w - t) * unit * SENSITIVITY_WEIGHT[Sensitivity(SMALL_MODELS[i][1].data_sensitivity)] for i, (w, t) in enumerate(zip(wanted, totals)))
        best = min(best, sum(c * n for c, n in zip(costs, x)) + unmet)
    return best


@pytest.mark.parametrize("wanted", [[1, 1, 1], [3, 2, 4], [5, 3, 2], [6, 4, 6], [2, 0, 6]])
def test_milp_matches_brute_force(wanted: list[int]) -> None:
    models = [model(key, spec, demand=w * 100.0) for (key, spec), w in zip(SMALL_MODELS, wanted)]
    alloc, _ = allocate(models, SMALL_POOLS, 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.solver == "milp"
    assert_hard_rules(alloc, models, SMALL_POOLS)
    costs = [p.spec.pricing.price_per_gpu_hour * m.spec.resources.gpus for m in models for p in planner.admitted_pools(m.spec, SMALL_POOLS)]
    unit = 2 * max(costs) + 1
    penalty = sum(a.shortfall * unit * SENSITIVITY_WEIGHT[Sensitivity(m.spec.data_sensitivity)] for m, a in zip(models, alloc.models.values()))
    assert spend(alloc, models, SMALL_POOLS) + penalty == pytest.approx(brute_force(wanted), abs=1e-6)


# ---------------------------------------------------------------------------------- hard rules, property


def illegal_or_legal_pool(draw: Any, i: int) -> PoolState:
    tenancy = draw(st.sampled_from([Tenancy.PRIVATE, Tenancy.PUBLIC]))
    allowed = draw(st.lists(st.sampled_from(list(Sensitivity)), min_size=1, max_size=4, unique=True))
    # model_construct skips validation: a public pool that (illegally) admits restricted data must still be refused.
    spec = ComputePoolSpec.model_construct(
        tenancy=tenancy,
        provider="x",
        region="",
        node_selector={},
        tolerations=[],
        gpu=GpuSpec(),
        pricing=Pricing(price_per_gpu_hour=draw(st.sampled_from([0.3, 0.9, 1.2, 3.67])), currency="USD"),
        max_gpus=8,
        allowed_sensitivity=allowed,
        startup_seconds=60,
    )
    return PoolState(f"pool-{i}", spec, draw(st.integers(0, 8)))


@st.composite
def scenarios(draw: Any) -> tuple[list[ModelState], list[PoolState]]:
    pools = [illegal_or_legal_pool(draw, i) for i in range(draw(st.integers(1, 4)))]
    names = [p.name for p in pools]
    models = []
    for k in range(draw(st.integers(1, 3))):
        sens = draw(st.sampled_from(list(Sensitivity)))
        burst = sens in (Sensitivity.PUBLIC, Sensitivity.INTERNAL) and draw(st.booleans())
        budget = draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 5.0])))
        forbidden = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        spec = model_spec(sens.value, burst=burst, gpus=draw(st.integers(1, 2)), max_r=draw(st.integers(1, 6)), budget=budget, forbidden=forbidden)
        current = {n: draw(st.integers(0, 3)) for n in draw(st.lists(st.sampled_from(names), max_size=3, unique=True))}
        demand = draw(st.one_of(st.none(), st.floats(0, 1000)))
        pinned = draw(st.one_of(st.none(), st.integers(0, spec.scaling.max_replicas)))
        models.append(model(f"m{k}", spec, demand, current, pinned=pinned))
    return models, pools


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(["auto", "greedy"]))
def test_hard_rules_hold_whatever_pools_are_offered(scenario: tuple[list[ModelState], list[PoolState]], solver: str) -> None:
    models, pools = scenario
    alloc, memory = allocate(models, pools, 1000.0, AllocatorMemory(), solver=solver)  # type: ignore[arg-type]
    assert_hard_rules(alloc, models, pools)
    # A second round from the new state (make-before-break overlap included) keeps every rule too.
    again = [model(m.key, m.spec, m.demand_rps, {p: n for p, n in alloc.models[m.key].replicas.items() if n}, pinned=m.pinned) for m in models]
    alloc2, _ = allocate(again, pools, 1030.0, memory, solver=solver)  # type: ignore[arg-type]
    assert_hard_rules(alloc2, again, pools)


def test_restricted_data_never_lands_on_a_public_pool_even_if_it_is_cheapest() -> None:
    illegal = ComputePoolSpec.model_construct(**{**pool_spec("public", 0.01).__dict__, "allowed_sensitivity": list(Sensitivity)})
    pools = [PoolState("cheap-public", illegal, 100), PoolState("private", pool_spec("private", 5.0), 2)]
    m = model("acct", model_spec("restricted", rps=100), demand=1000)
    alloc, _ = allocate([m], pools, 0.0, AllocatorMemory())
    assert alloc.models["acct"].replicas == {"private": 2}
    assert alloc.models["acct"].slo_at_risk and alloc.models["acct"].shortfall == 9


# -------------------------------------------------------------------------------------------- fallback


def test_greedy_fallback_when_the_solver_times_out(monkeypatch: pytest.MonkeyPatch, pool_states: list[PoolState]) -> None:
    calls: list[dict[str, Any]] = []

    def timed_out(*args: Any, **kwargs: Any) -> SimpleNamespace:
        calls.append(kwargs["options"])
        return SimpleNamespace(status=1, x=None, message="Time limit reached")

    monkeypatch.setattr(allocator_solvers, "milp", timed_out)
    models = [
        model("acct", model_spec("restricted", rps=200), 1500),
        model("home", model_spec("internal", burst=True, rps=200), 3000),
    ]
    alloc, _ = allocate(models, pool_states, 0.0, AllocatorMemory(), time_limit=0.25)
    assert calls and calls[0]["time_limit"] == 0.25
    assert alloc.solver == "greedy"
    assert_hard_rules(alloc, models, pool_states)
    # Most sensitive first, cheapest pool with room: the restricted model fills onprem-a100 (8 replicas of 1 GPU).
    assert alloc.models["acct"].replicas == {"onprem-a100": 8}
    assert sum(alloc.models["home"].replicas.values()) == 16
    assert alloc.models["home"].replicas["onprem-t4"] == 4 and alloc.models["home"].replicas["aws-spot-l4"] == 12


def test_greedy_fallback_when_the_solver_raises(monkeypatch: pytest.MonkeyPatch, pool_states: list[PoolState]) -> None:
    def broken(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(status=4, x=None, message="HiGHS error")

    monkeypatch.setattr(allocator_solvers, "milp", broken)
    alloc, _ = allocate([model("t", model_spec("public", rps=100), 250)], pool_states, 0.0, AllocatorMemory())
    assert alloc.solver == "greedy" and alloc.models["t"].replicas == {"onprem-t4": 3, "onprem-a100": 0, "aws-spot-l4": 0, "gcp-ondemand-a100": 0}


# ----------------------------------------------------------------------------------------- anti-flapping


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    pools = [PoolState("p", pool_spec("private", 1.0), 100)]
    spec = model_spec("public", rps=100, window=300, max_r=50)
    memory = AllocatorMemory()
    current: dict[str, int] = {}
    history = []
    for t, demand in [(0, 500), (30, 1000), (60, 100), (90, 100), (300, 100), (330, 100)]:
        alloc, memory = allocate([model("m", spec, demand, current)], pools, float(t), memory, headroom=0.0)
        current = {p: n for p, n in alloc.models["m"].replicas.items() if n}
        history.append((t, current.get("p", 0), alloc.models["m"].direction))
    assert history == [(0, 5, "up"), (30, 10, "up"), (60, 10, "hold"), (90, 10, "hold"), (300, 10, "hold"), (330, 1, "down")]


def test_moves_wait_for_the_dwell_time_and_are_capped_per_interval() -> None:
    pools = [PoolState("cheap", pool_spec("private", 0.5), 10), PoolState("dear", pool_spec("public", 3.0), 10)]
    spec = model_spec("public", rps=100)
    memory = AllocatorMemory(placed_at={("m", "dear"): 0.0})
    # Same demand, cheaper room available: moving saves money but replicas arrived 60 s ago.
    alloc, memory = allocate([model("m", spec, 500, {"dear": 5})], pools, 60.0, memory, headroom=0.0, min_dwell_seconds=120)
    assert alloc.models["m"].direction == "hold" and alloc.models["m"].replicas == {"dear": 5, "cheap": 0}
    alloc, memory = allocate([model("m", spec, 500, {"dear": 5})], pools, 130.0, memory, headroom=0.0, min_dwell_seconds=120, max_moves_per_interval=2)
    a = alloc.models["m"]
    assert a.direction == "move" and "saves" in a.reason
    # The plan moves 2 (the cap); make-before-break keeps the 2 sources until the destination is up.
    assert a.replicas == {"dear": 5, "cheap": 2} and a.placed == 5
    # Before cheap's start-up time has passed and with its pods not ready: no decrease, no new move.
    alloc, memory = allocate([model("m", spec, 500, {"dear": 5, "cheap": 2}, ready={"dear": 5, "cheap": 0})], pools, 160.0, memory, headroom=0.0)
    assert alloc.models["m"].replicas == {"dear": 5, "cheap": 2}
    # Destination ready: the sources go.
    alloc, memory = allocate([model("m", spec, 500, {"dear": 5, "cheap": 2}, ready={"dear": 5, "cheap": 2})], pools, 170.0, memory, headroom=0.0)
    assert alloc.models["m"].replicas == {"dear": 3, "cheap": 2}
    # The model moved at t=130: the next cost-only move waits for the dwell time.
    alloc, memory = allocate([model("m", spec, 500, {"dear": 3, "cheap": 2})], pools, 200.0, memory, headroom=0.0, min_dwell_seconds=120)
    assert alloc.models["m"].replicas == {"dear": 3, "cheap": 2}


def test_moves_across_models_respect_the_global_cap() -> None:
    pools = [PoolState("cheap", pool_spec("private", 0.5), 20), PoolState("dear", pool_spec("public", 3.0), 20)]
    models = [model(f"m{i}", model_spec("public", rps=100), 300, {"dear": 3}) for i in range(3)]
    alloc, _ = allocate(models, pools, 1000.0, AllocatorMemory(), headroom=0.0, max_moves_per_interval=2)
    moved = sum(a.replicas.get("cheap", 0) for a in alloc.models.values())
    assert moved == 2


def test_missing_data_holds_the_allocation() -> None:
    pools = [PoolState("p", pool_spec("private", 1.0), 10), PoolState("q", pool_spec("private", 0.1), 10)]
    alloc, _ = allocate([model("m", model_spec("public", min_r=1), None, {"p": 4})], pools, 10_000.0, AllocatorMemory())
    a = alloc.models["m"]
    assert a.replicas == {"p": 4, "q": 0} and a.direction == "hold" and "no fresh metrics" in a.reason and not a.slo_at_risk


def test_pinned_total_is_honoured_at_the_cheapest_place() -> None:
    pools = [PoolState("p", pool_spec("private", 1.0), 10), PoolState("q", pool_spec("private", 0.1), 3)]
    alloc, _ = allocate([model("m", model_spec("public"), 5000, {}, pinned=4)], pools, 0.0, AllocatorMemory())
    assert alloc.models["m"].replicas == {"p": 1, "q": 3}


# ----------------------------------------------------------------------------------- budget, sensitivity


def test_budget_is_a_hard_cap() -> None:
    pools = [PoolState("p", pool_spec("private", 1.0), 10)]
    alloc, _ = allocate([model("m", model_spec("public", rps=100, budget=2.5), 500)], pools, 0.0, AllocatorMemory(), headroom=0.0)
    a = alloc.models["m"]
    assert a.replicas == {"p": 2} and a.budget_limited and a.slo_at_risk and a.shortfall == 3
    assert "budget 2.50 USD/h reached" in a.reason


def test_sensitive_models_get_private_capacity_first() -> None:
    pools = [PoolState("private", pool_spec("private", 1.0), 4), PoolState("public", pool_spec("public", 2.0), 0)]
    models = [model("pub", model_spec("public", rps=100), 400), model("acct", model_spec("restricted", rps=100), 400)]
    alloc, _ = allocate(models, pools, 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["acct"].replicas == {"private": 4}
    assert alloc.models["pub"].shortfall == 4 and alloc.models["acct"].shortfall == 0


def test_a_sensitive_shortfall_moves_others_out_even_within_their_dwell_time() -> None:
    pools = [PoolState("private", pool_spec("private", 1.0), 4), PoolState("public", pool_spec("public", 2.0), 8)]
    home, acct = model_spec("internal", burst=True, rps=100), model_spec("restricted", rps=100)
    memory = AllocatorMemory(placed_at={("home", "private"): 990.0})  # home's replicas arrived 10 s ago
    models = [model("home", home, 400, {"private": 4}), model("acct", acct, 200, {})]
    alloc, _ = allocate(models, pools, 1000.0, memory, headroom=0.0)
    assert alloc.models["acct"].replicas == {"private": 2}
    # The freed private GPUs went to the restricted model, so there is no room for a make-before-break overlap.
    assert alloc.models["home"].replicas == {"private": 2, "public": 2}
    assert "frees capacity for more sensitive data" in alloc.models["home"].reason


def test_pools_in_several_currencies_are_refused() -> None:
    eur = pool_spec("private", 1.0).model_copy(update={"pricing": Pricing(price_per_gpu_hour=1.0, currency="EUR")})
    pools = [PoolState("usd", pool_spec("private", 1.0), 4), PoolState("eur", eur, 4)]
    with pytest.raises(CurrencyMismatchError):
        allocate([model("m", model_spec(), 100)], pools, 0.0, AllocatorMemory())


# ---------------------------------------------------------------------------------------------- wording


def test_decision_reads_as_one_sentence(pool_states: list[PoolState]) -> None:
    acct = model("acct", model_spec("restricted", rps=200), 1200, {"onprem-a100": 6})
    home_spec = model_spec("internal", burst=True, rps=390, forbidden=["onprem-t4", "gcp-ondemand-a100"])
    home = model("home", home_spec, 3900, {"onprem-a100": 2, "aws-spot-l4": 6}, p95_ms=71.0)
    alloc, _ = allocate([acct, home], pool_states, 0.0, AllocatorMemory(), headroom=0.0)
    assert alloc.models["home"].reason == (
        "p95 71 ms > SLO 50 ms, forecast 3,900 RPS: +2 replicas on aws-spot-l4 (public, 1.20 USD/GPU-h); private pool onprem-a100 full"
    )
    assert alloc.models["acct"].reason == "forecast 1,200 RPS needs 6 replicas at 200 RPS each: 6 replicas unchanged"
