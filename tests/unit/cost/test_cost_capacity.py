"""Capacity model: hint first, learns from (RPS per replica, p95), robust to noise and warm-up, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from hybridrec_operator.core.capacity_model import CapacityModel, headroom_for


def feed(model: CapacityModel, pairs: list[tuple[float, float]], replicas: int = 4, t0: float = 0.0, step: float = 30.0) -> float:
    """Feed (rps per replica, p95) pairs with the replica count unchanged; returns the time after the last one."""
    model.observe(t0, None, None, replicas)  # registers the replica count: the warm-up starts here
    t = t0 + model.warmup_seconds
    for rps, p95 in pairs:
        model.observe(t, rps, p95, replicas)
        t += step
    return t


def test_starts_from_the_hint() -> None:
    assert CapacityModel(hint=100, slo_ms=50).rps_per_replica == 100


def test_learns_more_capacity_when_higher_loads_meet_the_slo() -> None:
    m = CapacityModel(hint=100, slo_ms=50)
    feed(m, [(150, 30)] * 30)
    assert 140 < m.rps_per_replica <= 150


def test_learns_less_capacity_when_loads_miss_the_slo() -> None:
    m = CapacityModel(hint=100, slo_ms=50)
    feed(m, [(80, 100)] * 30)  # 80 RPS per replica already gives p95 = 2x SLO
    assert m.rps_per_replica == pytest.approx(40, rel=0.1)


def test_a_few_noisy_samples_do_not_move_the_estimate() -> None:
    rng = np.random.default_rng(1)
    pairs = [(float(r), float(p)) for r, p in zip(rng.normal(90, 5, 40), rng.normal(30, 3, 40))]
    pairs[10] = (90, 400)  # GC pause
    pairs[20] = (95, 300)
    m = CapacityModel(hint=100, slo_ms=50)
    feed(m, pairs)
    assert m.rps_per_replica == pytest.approx(100, rel=0.05)


def test_samples_during_warm_up_are_ignored() -> None:
    m = CapacityModel(hint=100, slo_ms=50)
    m.observe(0, None, None, 4)
    m.observe(10, 20, 500, 5)  # replica change: cold replicas, terrible p95
    for t in range(20, 120, 10):
        m.observe(t, 20, 500, 5)
    assert m.rps_per_replica == 100
    assert not m.samples


def test_estimate_is_bounded_around_the_hint() -> None:
    m = CapacityModel(hint=100, slo_ms=50)
    feed(m, [(10_000, 5)] * 60)
    assert m.rps_per_replica == 400
    m2 = CapacityModel(hint=100, slo_ms=50)
    feed(m2, [(10, 5000)] * 60)
    assert m2.rps_per_replica == 25


def test_headroom_grows_as_p95_approaches_the_slo() -> None:
    assert headroom_for(None, 50) == 0.05
    assert headroom_for(20, 50) == 0.05
    assert headroom_for(50, 50) == pytest.approx(0.25)
    assert headroom_for(500, 50) == pytest.approx(0.55)
