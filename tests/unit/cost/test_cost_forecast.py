"""Demand forecast: robust trend, declared events, the lead window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hybridrec_operator.api.models import ScheduledEvent
from hybridrec_operator.core.forecast import Sample, demand_to_cover, event_multiplier, fit_trend, forecast, lead_seconds

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()


def ramp(rps0: float, slope: float, n: int = 20, step: float = 30.0) -> list[Sample]:
    return [Sample(T0 + i * step, rps0 + slope * i * step) for i in range(n)]


def test_trend_extrapolates_a_ramp_and_ignores_outliers() -> None:
    history = ramp(1000, 1.0)  # +1 RPS per second
    history[5] = Sample(history[5].t, 50_000)  # one scrape caught a burst
    history[9] = Sample(history[9].t, 0)  # one scrape lost the traffic
    last = history[-1].t
    # Within one sample step of the true line 1,000 + t (least squares would be off by hundreds).
    assert forecast(history, [], last + 120) == pytest.approx(1000 + 19 * 30 + 120, abs=30)


def test_forecast_is_never_negative() -> None:
    history = ramp(500, -2.0)
    assert forecast(history, [], history[-1].t + 3600) == 0.0


def test_no_data_is_none_not_zero() -> None:
    assert fit_trend([]) is None
    assert forecast([], [], T0) is None
    assert demand_to_cover([], [], T0, 150, 30) is None


def test_events_are_divided_out_and_multiplied_back() -> None:
    sale = ScheduledEvent(name="sale", start=datetime.fromtimestamp(T0 + 300, UTC), end=datetime.fromtimestamp(T0 + 900, UTC), multiplier=3)
    # Flat 1,000 RPS trend; during the sale the observations are 3,000.
    history = [Sample(T0 + i * 30, 3000.0 if T0 + 300 <= T0 + i * 30 < T0 + 900 else 1000.0) for i in range(25)]
    assert event_multiplier([sale], T0 + 600) == 3
    trend = fit_trend(history, [sale])
    assert trend is not None and trend.slope == pytest.approx(0.0) and trend.level == pytest.approx(1000)
    assert forecast(history, [sale], T0 + 600) == pytest.approx(3000)
    assert forecast(history, [sale], T0 + 1000) == pytest.approx(1000)


def test_capacity_is_ready_before_a_declared_spike() -> None:
    start = T0 + 1000
    sale = ScheduledEvent(name="sale", start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(start + 600, UTC), multiplier=4)
    history = [Sample(T0 + i * 30, 1000.0) for i in range(20)]  # flat, ends at T0 + 570
    lead = lead_seconds([60, 120], 30)
    assert lead == 150
    # Too early: the spike is beyond now + lead.
    assert demand_to_cover(history, [sale], start - 200, lead, 30) == pytest.approx(1000)
    # Within the lead time of the slowest pool: provision for 4x already, although the sale starts between grid points.
    assert demand_to_cover(history, [sale], start - 149, lead, 30) == pytest.approx(4000)


def test_demand_to_cover_never_drops_below_what_is_served_now() -> None:
    history = ramp(3000, -5.0)  # steep decay after an event: the trend points down fast
    latest = history[-1].rps
    assert demand_to_cover(history, [], history[-1].t, 150, 30) == pytest.approx(latest)


def test_headroom_follows_the_forecasts_own_errors() -> None:
    from hybridrec_operator.core.forecast import ForecastErrors

    smooth, noisy = ForecastErrors(min_errors=5), ForecastErrors(min_errors=5)
    assert smooth.headroom(default=0.05) == 0.05  # no evidence yet
    history: list[Sample] = []
    for i in range(40):
        t = T0 + i * 30
        history.append(Sample(t, 1000.0))
        smooth.settle(history)
        smooth.record(t, 1000.0, 60)
    noisy_history = [Sample(T0 + i * 30, 1000.0 * (1.3 if i % 3 == 0 else 1.0)) for i in range(40)]
    for i in range(40):
        noisy.settle(noisy_history[: i + 1])
        noisy.record(T0 + i * 30, 1000.0, 60)
    assert smooth.headroom(default=0.05) == 0.0
    assert noisy.headroom(default=0.05) == pytest.approx(0.3)  # a third of the windows saw a 30% burst
    assert len(smooth.pending) <= 3
