"""Fixtures for the cost tests: the four sample pools of manifests/samples/simulate."""

from __future__ import annotations

import pytest
from cost_builders import SAMPLES

from hybridrec_operator.api.models import ComputePool
from hybridrec_operator.core.planner import PoolState, clear_solution_cache
from hybridrec_operator.sim.simulate import parse_objects


@pytest.fixture(scope="session")
def sample_pools() -> list[ComputePool]:
    pools, _ = parse_objects([(SAMPLES / "pools.yaml").read_text()])
    return pools


@pytest.fixture(scope="session")
def pool_states(sample_pools: list[ComputePool]) -> list[PoolState]:
    return [PoolState(p.name, p.spec, p.spec.max_gpus) for p in sample_pools]


@pytest.fixture(autouse=True)
def _fresh_solver_cache() -> None:
    # Solutions are memoised by problem; a test that breaks the solver must not be answered from the cache.
    clear_solution_cache()
