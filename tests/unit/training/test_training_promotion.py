"""The bake window's PromQL (controller/training_promotion.py): which servers' counters count for which version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridrec_operator.controller.observe import PrometheusUnavailable
from hybridrec_operator.controller.training_promotion import ratio_queries, read_error_ratios


def test_queries_join_counters_to_the_version_each_server_loaded() -> None:
    total, errors = ratio_queries("shop", "movie-recs", "movie-recs-2026", 90, new=True)
    assert 'hybridrec_server_model_info{job="hybridrec-server",namespace="shop",model="movie-recs",version="movie-recs-2026"}' in total
    assert "[90s]" in total and "on (instance) group_left" in total and 'endpoint="recommend"' in total
    assert 'code=~"5..|429"' in errors and "code" not in total
    old_total, _ = ratio_queries("shop", "movie-recs", 'odd"version', 300, new=False)
    assert 'version!="odd\\"version"' in old_total


class FakeProm:
    """Answers as Prometheus' HTTP API does (one vector per query), and records the instants asked."""

    def __init__(self, answers: dict[str, float | None], fail: bool = False) -> None:
        self.answers, self.fail, self.asked = answers, fail, []

    def query(self, expr: str, at: float) -> dict[str, Any]:
        if self.fail:
            raise PrometheusUnavailable("HTTP 503")
        self.asked.append((expr, at))
        key = ("new" if 'version="v2"' in expr else "old") + ("-errors" if "code=~" in expr else "")
        value = self.answers.get(key)
        result = [] if value is None else [{"metric": {}, "value": [at, str(value)]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_ratios_new_since_the_promotion_previous_before_it() -> None:
    promoted = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    now = promoted + timedelta(seconds=45)
    prom = FakeProm({"new": 200.0, "new-errors": 50.0, "old": 400.0})  # the old version had no error series at all
    r = read_error_ratios(prom, "shop", "m", "v2", promoted, now)
    assert r.new == pytest.approx(0.25) and r.new_requests == 200 and r.previous == 0.0 and r.previous_requests == 400
    assert {at for expr, at in prom.asked if 'version="v2"' in expr} == {now.timestamp()}
    assert {at for expr, at in prom.asked if 'version!="v2"' in expr} == {promoted.timestamp()}
    assert any("[45s]" in expr for expr, _ in prom.asked)
    assert read_error_ratios(FakeProm({}), "shop", "m", "v2", promoted, now).new is None  # no traffic: unknown, not 0
    assert "HTTP 503" in (read_error_ratios(FakeProm({}, fail=True), "shop", "m", "v2", promoted, now).unavailable or "")
