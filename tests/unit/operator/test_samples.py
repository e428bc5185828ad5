"""The sample manifests parse with api.py and place the way the README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import CapacityType, Sensitivity, Tenancy, parse_pool, parse_rmd
from hybridrec_operator.core.placement import PoolView, desired_replicas, plan_placement

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]


def test_pools_match_the_contract() -> None:
    pools = {p.name: p for p in map(parse_pool, docs("pools.yaml"))}
    expected = {
        "onprem-a100": (Tenancy.PRIVATE, 0.90, CapacityType.RESERVED, 8, {"public", "internal", "confidential", "restricted"}),
        "onprem-t4": (Tenancy.PRIVATE, 0.35, CapacityType.RESERVED, 4, {"public", "internal", "confidential"}),
        "aws-spot-l4": (Tenancy.PUBLIC, 1.20, CapacityType.SPOT, 12, {"public", "internal"}),
        "gcp-ondemand-a100": (Tenancy.PUBLIC, 3.67, CapacityType.ON_DEMAND, 16, {"public", "internal"}),
    }
    assert set(pools) == set(expected)
    for name, (tenancy, price, capacity, max_gpus, allowed) in expected.items():
        spec = pools[name].spec
        assert (spec.tenancy, spec.pricing.price_per_gpu_hour, spec.pricing.capacity_type, spec.max_gpus) == (tenancy, price, capacity, max_gpus)
        assert {s.value for s in spec.allowed_sensitivity} == allowed
        assert spec.pricing.currency == "USD"
        assert spec.node_selector == {"hybridrec.io/pool": name}
        tolerations = [t.to_wire() for t in spec.tolerations]
        if tenancy == Tenancy.PUBLIC:
            assert tolerations == [{"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public", "effect": "NoSchedule"}]
        else:
            assert tolerations == []
    assert pools["aws-spot-l4"].spec.startup_seconds == 90 and pools["gcp-ondemand-a100"].spec.startup_seconds == 120


def test_models_match_the_contract() -> None:
    models = {m.name: m for m in map(parse_rmd, docs("models.yaml"))}
    assert set(models) == {"account-recs", "homepage-recs", "trending"}
    expected = {
        "account-recs": (Sensitivity.RESTRICTED, "two-tower", 50, 1, 4, False),
        "homepage-recs": (Sensitivity.INTERNAL, "two-tower", 80, 2, 10, True),
        "trending": (Sensitivity.PUBLIC, "matrix-factorization", 100, 1, 6, False),
    }
    for name, (sensitivity, arch, slo, lo, hi, burst) in expected.items():
        m = models[name]
        assert m.namespace == "default"
        assert m.spec.model.uri == f"s3://hybridrec-models/{name}/"
        assert (m.spec.data_sensitivity, m.spec.model.architecture.value, m.spec.slo.p95_latency_ms) == (sensitivity, arch, slo)
        assert (m.spec.scaling.min_replicas, m.spec.scaling.max_replicas, m.spec.scaling.target_rps_per_replica) == (lo, hi, 20)
        assert (m.spec.resources.gpus, m.spec.resources.cpu, m.spec.resources.memory) == (1, "500m", "1Gi")
        assert m.spec.placement.allow_public_burst is burst
    econ = models["trending"].spec.economics
    assert econ is not None
    assert econ.training.gpus * econ.training.hours * econ.training.price_per_gpu_hour == 480
    assert econ.deployment.gpus * econ.deployment.tps * econ.deployment.unit_cost == pytest.approx(10)
    assert econ.maintenance.people * econ.maintenance.hours * econ.maintenance.rate_per_hour == 100
    bv = econ.business_value
    assert bv.requests * bv.click_through_rate * bv.conversion_rate * bv.value_per_conversion == pytest.approx(150)


@pytest.mark.parametrize(
    ("model", "pool"), [("account-recs", "onprem-a100"), ("homepage-recs", "onprem-t4"), ("trending", "onprem-t4")]
)
def test_samples_place_where_expected(model: str, pool: str) -> None:
    pools = [PoolView(p.name, p.spec, free_gpus=p.spec.max_gpus) for p in map(parse_pool, docs("pools.yaml"))]
    rmd = next(m for m in map(parse_rmd, docs("models.yaml")) if m.name == model)
    wanted = desired_replicas(rmd.spec, None)
    plan = plan_placement(rmd.spec, pools, wanted)
    assert plan.replicas_by_pool() == {pool: wanted}
    assert plan.shortfall == 0 and not plan.problems
