"""Short-term demand forecast: level + robust trend, declared events, and a margin sized from measured variability.

Pure. Time is seconds since the epoch (UTC). The allocator provisions for the highest demand expected before
capacity started now could be ready, so a known spike finds its replicas already running.

Two entry points:

* ``demand_to_cover`` (v1): trend over the lead time with the latest raw sample as a floor.
* ``outlook`` (v2, what the simulator's hybridrec policy and the controller should use): the *level* (median of the
  last minute, so one noisy scrape does not buy a replica) plus the last minute's rising slope over the lead time,
  times ``1 + margin`` where the margin is a high quantile of how far demand actually went above that same path
  within one lead time in the recent past (``Variability``): smooth traffic gets a few percent, bursty traffic what
  its bursts need, never a fixed padding and never the maximum of raw samples. A latest sample above what was covered is a jump: the outlook
  covers it at once and flags it ``urgent`` so the allocator picks the pool ready soonest.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy.stats import norm, theilslopes

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


@dataclass
class Variability:
    """Residuals of the short-horizon forecast over one lead time, measured online: the evidence behind the margin.

    Each ``observe(t, rps)`` (events divided out by the caller) opens a window ``(t, t + lead]`` with the path the
    outlook would have predicted then (level = median of the last ``level_seconds``, plus the last minute's rising
    slope) and closes the windows that ended, recording ``max over the window of demand / path - 1``. ``margin()``
    is the ``quantile`` of the last ``window`` residuals: how far above its own forecast demand went within one
    start-up time in, e.g., 95% of the recent past. A ramp the slope predicted is not counted again as variability.
    Pure data, O(lead / step) per observation.
    """

    lead: float
    quantile: float = 0.95
    level_seconds: float = 60.0
    window: int = 480  # rises kept (2 h at a 15 s step)
    min_rises: int = 20  # until then: ``default``
    default: float = 0.1
    ceiling: float = 1.0  # a margin above +100% is a burst to react to, not capacity to hold
    robust: bool = True
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    pending: deque[list[float]] = field(default_factory=deque)  # [end, level, slope, start, largest excess]
    rises: deque[float] = field(default_factory=deque)

    def observe(self, t: float, rps: float) -> None:
        if not math.isfinite(rps) or rps < 0:
            return
        for w in self.pending:
            if t <= w[0]:
                expected = w[1] + w[2] * (t - w[3])
                w[4] = max(w[4], rps / expected - 1.0) if expected > 0 else w[4]
        while self.pending and self.pending[0][0] <= t:
            end, level, slope, start, excess = self.pending.popleft()
            if math.isfinite(excess) and excess > -1.0:
                # Signed: a window in which demand stayed below the path is evidence too (keeps median and MAD honest).
                self.rises.append(excess)
        while len(self.rises) > self.window:
            self.rises.popleft()
        self.recent.append((t, rps))
        while self.recent and self.recent[0][0] <= t - self.level_seconds:
            self.recent.popleft()
        self.pending.append([t + self.lead, self.level(), self.slope(), t, -math.inf])

    def level(self) -> float:
        """Median of the last ``level_seconds``: the demand now, without the noise of one sample."""
        return float(np.median([y for _, y in self.recent])) if self.recent else 0.0

    def slope(self) -> float:
        """Rise per second over the last ``level_seconds`` (least squares; 0 when flat or falling)."""
        if len(self.recent) < 3:
            return 0.0
        ts = np.array([r[0] for r in self.recent])
        if float(np.ptp(ts)) == 0.0:
            return 0.0
        return max(0.0, float(np.polyfit(ts - ts[-1], np.array([r[1] for r in self.recent]), 1)[0]))

    def margin(self) -> float:
        """The ``quantile`` of recent rises, bounded by the same quantile of a normal fitted robustly (median and
        1.4826 x MAD): a handful of jumps (a step, a burst) must not pad capacity for the next two hours; they are
        reacted to when they happen (``Outlook.urgent``)."""
        if len(self.rises) < self.min_rises:
            return self.default
        rises = np.fromiter(self.rises, float)
        empirical = float(np.quantile(rises, self.quantile))
        median = float(np.median(rises))
        robust = median + float(norm.ppf(self.quantile)) * 1.4826 * float(np.median(np.abs(rises - median)))
        bound = robust if self.robust else math.inf
        return float(max(0.0, min(self.ceiling, empirical, bound)))


@dataclass(frozen=True)
class Outlook:
    demand: float | None  # RPS to provision for over the lead time; None = no data (hold)
    level: float  # demand now (median of the last minute)
    margin: float  # relative safety margin applied
    urgent: bool  # the latest sample exceeds what the level + margin covered: a jump, react now


def outlook(
    history: Sequence[Sample],
    variability: Variability,
    schedule: Sequence[ScheduledEvent],
    now: float,
    lead_seconds: float,
    interval: float,
    served_capacity: float | None = None,
) -> Outlook:
    """Demand to cover over ``[now, now + lead_seconds]``: ``(level + slope) x events x (1 + margin)``.

    ``served_capacity`` (RPS the ready replicas serve within the SLO) makes an observed overload urgent even when
    the forecast would have covered it: the replicas are short now, whatever the plan said.
    """
    trend = fit_trend(history, schedule)
    if trend is None:
        return Outlook(None, 0.0, variability.margin(), False)
    level = variability.level() if variability.recent else trend.level
    margin = variability.margin()
    step = max(interval, 1.0)
    times = list(np.arange(now, now + lead_seconds + 1e-9, step)) + [now + lead_seconds]
    times += [_epoch(e.start) for e in schedule if now <= _epoch(e.start) <= now + lead_seconds]
    # Momentum: the slope of the last minute (least squares) carried over the lead time from the latest sample. The
    # 10-minute trend is robust but slow to notice a ramp that started a minute ago; this is not, and a flat or
    # falling minute adds nothing. The margin is measured against this same path (``Variability``), so it pads it.
    slope = variability.slope() if variability.recent else 0.0
    latest_level = variability.recent[-1][1] if variability.recent else level
    factors = {float(t): event_multiplier(schedule, float(t)) for t in times}
    # The margin pads exactly the path it was measured against (level + the last minute's slope, ``Variability``).
    # The 10-minute trend is not added on top: where it lies above that path (on the way down from a peak, after a
    # step) it would pad a second time what the measured margin already covers, and buy capacity nothing justified.
    # It stands in for the level only until the variability has seen samples.
    path_level = level if variability.recent else trend.at(now)
    base = max((path_level + slope * (t - now)) * f for t, f in factors.items())
    cover = base * (1.0 + margin)
    latest = max(history, key=lambda s: s.t)
    # Beyond what the level (or a steady ramp, the trend at now) and the margin explain now, whatever the slope
    # promises: a jump, urgent.
    jump = latest.rps > max(path_level, trend.at(now)) * event_multiplier(schedule, now) * (1.0 + margin)
    if jump:
        cover = max(cover, max((latest_level + slope * (t - now)) * f for t, f in factors.items()) * (1.0 + margin))
    overload = served_capacity is not None and latest.rps > served_capacity
    if jump:
        cover = max(cover, latest.rps * (1.0 + margin))
    return Outlook(cover, level, margin, jump or overload)
