"""Spot reclaims and the margin, issue 10 follow-up: one spot price rule for placement and allocator, a rate learned
from notices in the simulator, doomed nodes offer no room, and the margin pads only the path it was measured on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cost_builders import model, model_spec
from test_cost_outlook import fed
from test_cost_per_pool import gpu_pool

from hybridrec_operator.core import placement
from hybridrec_operator.core.capacity import node_ready
from hybridrec_operator.core.forecast import outlook
from hybridrec_operator.core.planner import AllocatorMemory, PoolState, allocate, spot_risk_per_hour
from hybridrec_operator.sim.simulate import Reclaims, Trace, make_policy, parse_objects, run_policy
from hybridrec_operator.sim.cluster import capacities
from test_cost_sim_v2 import SCENARIOS


def test_placement_and_allocator_price_spot_with_one_rule() -> None:
    spot = gpu_pool("spot", "NVIDIA-L4", 1.0, tenancy="public", capacity_type="spot", startup=90, reclaims=None)
    # Nothing observed yet: both use the spot prior.
    assert spot_risk_per_hour(spot, 2) == pytest.approx(placement.spot_risk_per_hour(spot.spec, 2))
    assert placement.effective_price(spot.spec) == pytest.approx(1.0 + spot_risk_per_hour(spot, 1))
    assert spot_risk_per_hour(spot, 1) == pytest.approx(placement.SPOT_PRIOR_RECLAIMS_PER_HOUR * 2 * 90 / 3600)
    # Observed: both use the observation, whatever the prior.
    seen = PoolState("spot", spot.spec, spot.capacity_gpus, 0.2)
    assert spot_risk_per_hour(seen, 1) == pytest.approx(placement.spot_risk_per_hour(spot.spec, 1, 0.2))
    assert placement.effective_price(spot.spec, 0.2) == pytest.approx(1.0 + 0.2 * 2 * 90 / 3600)
    # A pool that is not spot carries no prior.
    steady = gpu_pool("steady", "NVIDIA-L4", 1.0, tenancy="public", startup=90, reclaims=None)
    assert spot_risk_per_hour(steady, 1) == 0.0 and placement.effective_price(steady.spec) == 1.0


def test_a_spare_replica_only_where_a_reclaim_within_a_lead_is_likelier_than_the_margin_leaves_out() -> None:
    steady = gpu_pool("steady", "NVIDIA-L4", 0.90, tenancy="public", startup=60)

    def placed(replicas: int, rate: float) -> dict[str, int]:
        spot = gpu_pool("spot", "NVIDIA-L4", 0.45, tenancy="public", capacity_type="spot", startup=90, reclaims=rate)
        m = replace(model("m", model_spec("public", rps=100), 100.0 * replicas, {"spot": replicas},
                          ready={"spot": replicas}), lead_seconds=150.0)
        alloc, _ = allocate([m], [spot, steady], 0.0, AllocatorMemory(), headroom=0.0)
        return {p: n for p, n in alloc.models["m"].replicas.items() if n}

    # 2 replicas at 0.3 reclaims per node-hour: 2.5% within 150 s. A spare would cost 50% more: none.
    assert placed(2, 0.3) == {"spot": 2}
    # 10 replicas at 0.6: 22%. One spare, 10% more.
    assert placed(10, 0.6) == {"spot": 11}
    # Nothing observed (the prior only prices the pool): no spare.
    assert placed(10, None) == {"spot": 10}  # type: ignore[arg-type]


def _node(**extra: object) -> dict[str, object]:
    node: dict[str, object] = {"metadata": {"name": "n"}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    for key, value in extra.items():
        node[key] = {**node.get(key, {}), **value}  # type: ignore[dict-item]
    return node


def test_a_doomed_node_offers_no_room() -> None:
    assert node_ready(_node())
    assert not node_ready(_node(spec={"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}))
    assert not node_ready(_node(metadata={"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"}))


def test_after_a_peak_the_outlook_pads_the_level_not_the_ten_minute_trend() -> None:
    # Ten minutes up to 2,000 RPS, then four down to 1,000: the 10-minute Theil-Sen line still sits far above the
    # level. The margin was measured against level + slope, so it pads that, not the trend a second time.
    values = np.r_[np.linspace(1000, 2000, 40), np.linspace(2000, 1000, 16), np.full(8, 1000.0)]
    v, history = fed(values)
    look = outlook(history, v, [], history[-1].t, 120.0, 30.0)
    assert look.demand is not None
    assert look.demand == pytest.approx(look.level * (1 + look.margin), rel=1e-6)


def test_the_simulated_controller_learns_the_reclaim_rate_from_notices() -> None:
    pools, models = parse_objects([(SCENARIOS / "spot.yaml").read_text()])
    trace = Trace(np.arange(120), {"trending": np.full(120, 4000.0)})
    policy = make_policy("hybridrec", {"trending": 4000.0}, pools, models, capacities(models, pools))
    run_policy(policy, trace, pools, models, reclaims=Reclaims(6.0, seed=3))
    learned = {p.name: policy.reclaims.rate_per_hour(p.name) for p in pools}  # type: ignore[attr-defined]
    assert learned["aws-spot-l4"] > 0 and learned["aws-ondemand-l4"] == 0 and learned["onprem-a100"] == 0
    # 6 per pool-hour over ~10 spot nodes: about 0.6 per node-hour, learned within a factor of two.
    assert 0.25 < learned["aws-spot-l4"] < 1.5
