"""Short-term demand forecast: a robust linear trend plus declared events (``spec.scaling.schedule``).

Pure. Time is seconds since the epoch (UTC). The allocator provisions for ``demand_to_cover``: the highest demand
expected before capacity started now could be ready, so a known spike finds its replicas already running.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy.stats import theilslopes

from hybridrec_operator.api.models import ScheduledEvent

# With fewer samples a slope is noise; the level alone (median) is the forecast.
MIN_SAMPLES_FOR_TREND = 4


@dataclass(frozen=True)
class Sample:
    t: float
    rps: float


@dataclass(frozen=True)
class Trend:
    """``level`` RPS at time ``t0`` changing by ``slope`` RPS per second, with declared events divided out."""

    t0: float
    level: float
    slope: float

    def at(self, t: float) -> float:
        return max(0.0, self.level + self.slope * (t - self.t0))


def _epoch(moment: datetime) -> float:
    # A schedule without a zone means UTC (Kubernetes timestamps are UTC).
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def event_multiplier(schedule: Sequence[ScheduledEvent], t: float) -> float:
    """Product of the multipliers of the events active at ``t`` (events are independent effects); 1 when none."""
    factor = 1.0
    for event in schedule:
        if _epoch(event.start) <= t < _epoch(event.end):
            factor *= event.multiplier
    return factor


def fit_trend(history: Sequence[Sample], schedule: Sequence[ScheduledEvent] = ()) -> Trend | None:
    """Theil-Sen trend of the demand with declared events divided out; ``None`` without data.

    Theil-Sen (median of pairwise slopes) shrugs off up to ~29% outliers, e.g. a scrape that caught a burst.
    """
    points = [(s.t, s.rps / event_multiplier(schedule, s.t)) for s in history if math.isfinite(s.rps) and s.rps >= 0]
    if not points:
        return None
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    t_end = float(t.max())
    if len(points) < MIN_SAMPLES_FOR_TREND or float(np.ptp(t)) == 0.0:
        return Trend(t_end, float(np.median(y)), 0.0)
    slope, intercept, _, _ = theilslopes(y, t - t_end)
    return Trend(t_end, max(0.0, float(intercept)), float(slope))


def forecast(history: Sequence[Sample], schedule: Sequence[ScheduledEvent], t: float) -> float | None:
    """Expected RPS at ``t``: trend x declared multiplier, never negative; ``None`` without data."""
    trend = fit_trend(history, schedule)
    if trend is None:
        return None
    return trend.at(t) * event_multiplier(schedule, t)


def lead_seconds(startup_seconds: Sequence[int | float], interval: float) -> float:
    """How far ahead to provision: the slowest allowed pool's start-up time plus one control interval."""
    return float(max(startup_seconds, default=0)) + interval


def demand_to_cover(
    history: Sequence[Sample], schedule: Sequence[ScheduledEvent], now: float, lead_seconds: float, interval: float
) -> float | None:
    """The highest demand expected in ``[now, now + lead_seconds]``; ``None`` without data (hold, do not guess).

    Evaluated every ``interval`` and at every event start inside the window, so an event that begins between two grid
    points is not missed. The latest observation is a floor, both as seen and with the future multiplier applied: the
    trend of a short window lags a ramp, and after an event ends demand decays from where it is, not from the trend.
    """
    trend = fit_trend(history, schedule)
    if trend is None:
        return None
    step = max(interval, 1.0)
    times = list(np.arange(now, now + lead_seconds + 1e-9, step)) + [now + lead_seconds]
    times += [_epoch(e.start) for e in schedule if now <= _epoch(e.start) <= now + lead_seconds]
    latest = max(history, key=lambda s: s.t)
    latest_level = latest.rps / event_multiplier(schedule, latest.t)
    best = 0.0
    for t in times:
        factor = event_multiplier(schedule, float(t))
        best = max(best, trend.at(float(t)) * factor, latest_level * factor, latest.rps)
    return best


@dataclass
class ForecastErrors:
    """How much more demand arrived than was provisioned for: the evidence behind the headroom.

    Each round ``record`` the demand provisioned for over ``[t, t + lead]``; once that window has passed, ``settle``
    compares it with the highest demand actually observed in it. ``headroom()`` is a high quantile of the relative
    shortfalls: near zero on smooth, well-forecast traffic, larger on noisy or surprising traffic, so capacity is
    not padded by a fixed margin where the forecast is already right.
    """

    window: int = 240  # settled errors kept (2 h at a 30 s interval)
    quantile: float = 0.9  # a rare jump (a few rounds) is for the trend to learn, not for permanent padding
    min_errors: int = 60  # until then (30 min at 30 s): the default headroom
    pending: list[tuple[float, float, float]] = field(default_factory=list)  # (start, end, provisioned RPS)
    errors: list[float] = field(default_factory=list)

    def record(self, t: float, provisioned_rps: float | None, lead_seconds: float) -> None:
        if provisioned_rps is not None and provisioned_rps > 0:
            self.pending.append((t, t + lead_seconds, provisioned_rps))

    def settle(self, history: Sequence[Sample]) -> None:
        """Score every pending forecast whose window ``history`` now covers."""
        if not history:
            return
        latest = max(s.t for s in history)
        still = []
        for start, end, provisioned in self.pending:
            if end > latest:
                still.append((start, end, provisioned))
                continue
            seen = [s.rps for s in history if start <= s.t <= end]
            if seen:
                self.errors.append(max(0.0, max(seen) / provisioned - 1.0))
        self.pending = still
        del self.errors[: max(0, len(self.errors) - self.window)]

    def headroom(self, default: float, ceiling: float = 0.5) -> float:
        if len(self.errors) < self.min_errors:
            return default
        return float(min(ceiling, np.quantile(self.errors, self.quantile)))
