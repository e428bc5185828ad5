"""Issue 9, finding 5/6: no input the schema admits makes placement or costing raise (``budget.maxPerHour: 1e308``
overflowed ``math.floor`` and was retried forever). Specs are drawn anywhere inside the API's bounds, edges included,
and validated by the models, so the test follows the schema rather than a hand-picked list."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec_operator.api.models import (
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_PER_HOUR,
    MAX_PER_MONTH,
    ComputePoolSpec,
    Economics,
    RecModelDeploymentSpec,
)
from hybridrec_operator.core.costing import Money, SpendTracker, cost_per_1k_requests, cost_per_hour, lifecycle
from hybridrec_operator.core.placement import PoolView, plan_placement


def bounded(hi: float) -> st.SearchStrategy[float]:
    """Floats in [0, hi] with the edges and the subnormals (the smallest positive price makes the largest ratio)."""
    return st.one_of(
        st.sampled_from([0.0, 5e-324, 1e-300, 1e-9, hi]),
        st.floats(min_value=0.0, max_value=hi, allow_nan=False, allow_infinity=False),
    )


@st.composite
def pool_specs(draw: st.DrawFn) -> ComputePoolSpec:
    tenancy = draw(st.sampled_from(["private", "public"]))
    allowed = ["public", "internal", "confidential", "restricted"] if tenancy == "private" else ["public", "internal"]
    return ComputePoolSpec.model_validate({
        "tenancy": tenancy,
        "provider": "onprem",
        "pricing": {"pricePerGpuHour": draw(bounded(1000.0)), "capacityType": draw(st.sampled_from(["on-demand", "spot", "reserved"]))},
        "maxGpus": draw(st.integers(0, 100_000)),
        "allowedSensitivity": draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=len(allowed), unique=True)),
    })


@st.composite
def model_specs(draw: st.DrawFn) -> RecModelDeploymentSpec:
    lo = draw(st.integers(0, 1000))
    hi = draw(st.integers(max(1, lo), 1000))
    raw: dict[str, Any] = {
        "model": {"uri": "s3://hybridrec-models/m/", "architecture": "two-tower"},
        "dataSensitivity": draw(st.sampled_from(["public", "internal", "confidential", "restricted"])),
        "resources": {"gpus": draw(st.integers(1, 16))},
        "scaling": {"minReplicas": lo, "maxReplicas": hi,
                    "targetRpsPerReplica": draw(st.floats(min_value=1e-300, max_value=1e6))},
    }
    if draw(st.booleans()):
        raw["budget"] = {"maxPerHour": draw(bounded(MAX_PER_HOUR)), "maxPerMonth": draw(bounded(MAX_PER_MONTH))}
    if raw["dataSensitivity"] in ("public", "internal"):
        raw["placement"] = {"allowPublicBurst": draw(st.booleans())}
    return RecModelDeploymentSpec.model_validate(raw)


@st.composite
def economics(draw: st.DrawFn) -> Economics:
    count, amount, rate = bounded(MAX_COUNT), bounded(MAX_AMOUNT), st.floats(0, 1)
    return Economics.model_validate({
        "training": {"gpus": draw(count), "hours": draw(count), "pricePerGpuHour": draw(amount)},
        "deployment": {"gpus": draw(count), "tps": draw(count), "unitCost": draw(amount)},
        "maintenance": {"people": draw(count), "hours": draw(count), "ratePerHour": draw(amount)},
        "businessValue": {"requests": draw(count), "clickThroughRate": draw(rate), "conversionRate": draw(rate),
                          "valuePerConversion": draw(amount)},
    })


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=model_specs(), pools=st.lists(pool_specs(), min_size=0, max_size=5),
       frees=st.lists(st.integers(-5, 100_000), min_size=5, max_size=5), wanted=st.integers(0, 1000),
       current=st.lists(st.integers(0, 1000), min_size=5, max_size=5))
def test_plan_placement_is_total(spec: RecModelDeploymentSpec, pools: list[ComputePoolSpec], frees: list[int],
                                 wanted: int, current: list[int]) -> None:
    views = [PoolView(name=f"pool-{i}", spec=p, free_gpus=frees[i]) for i, p in enumerate(pools)]
    plan = plan_placement(spec, views, wanted, current={f"pool-{i}": current[i] for i in range(len(pools))})
    assert 0 <= plan.placed <= wanted and plan.shortfall == wanted - plan.placed
    assert math.isfinite(plan.cost_per_hour) and plan.summary
    if spec.budget is not None and spec.budget.max_per_hour is not None:
        assert plan.cost_per_hour <= spec.budget.max_per_hour * (1 + 1e-9) + 1e-6
    # Costing of the same plan is total too.
    by_name = {v.name: v.spec for v in views}
    total = cost_per_hour(plan.replicas_by_pool(), spec.resources.gpus, by_name)
    assert math.isfinite(float(total))
    cost_per_1k_requests(total, 1e-300)
    tracker = SpendTracker()
    tracker.observe(0.0, total)
    tracker.hour_utilisation(spec.budget)
    tracker.month_utilisation(3600.0 * 24 * 31, spec.budget)


@settings(max_examples=200, deadline=None)
@given(econ=economics())
def test_lifecycle_is_total(econ: Economics) -> None:
    lc = lifecycle(econ)
    assert lc.total_cost.amount >= 0 and lc.benefit.amount >= 0
    if lc.roi is not None:
        assert math.isfinite(float(lc.roi))
    assert math.isfinite(float(lc.net))
    str(lc.net)


@settings(max_examples=100, deadline=None)
@given(price=bounded(1000.0), gpus=st.integers(1, 16), replicas=st.integers(0, 1000))
def test_money_of_any_admitted_price_is_finite(price: float, gpus: int, replicas: int) -> None:
    spec = ComputePoolSpec.model_validate({"tenancy": "private", "provider": "onprem", "pricing": {"pricePerGpuHour": price},
                                           "maxGpus": 1, "allowedSensitivity": ["public"]})
    amount = cost_per_hour({"p": replicas}, gpus, {"p": spec})
    assert isinstance(amount, Money) and math.isfinite(float(amount))
