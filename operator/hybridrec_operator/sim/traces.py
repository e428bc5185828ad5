"""Demand traces for the simulator: the CSV format, validation with line numbers, real-trace loading and noise.

A trace is RPS per model per minute (``minute,<model>,...``). Between minutes the simulator does not hold demand
flat: ``tick_demand`` adds noise whose size is measured on the trace itself (how far each minute sits from its
neighbours), so a policy is scored on traffic as rough as the trace says it is, not on a staircase. The noise is
seeded, and every policy sees the same draw.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Trace:
    """RPS per model per minute; minute ``k`` covers ``[start + 60k, start + 60(k+1))``."""

    minutes: np.ndarray
    demand: dict[str, np.ndarray]

    def at(self, model: str, t_rel: float) -> float:
        k = min(int(t_rel // 60), len(self.minutes) - 1)
        return float(self.demand[model][k])

    @property
    def duration_seconds(self) -> float:
        return float(len(self.minutes) * 60)


class TraceError(ValueError):
    """A trace file the simulator refuses; the message names the line."""


def parse_trace_csv(text: str) -> Trace:
    """A trace from CSV text: header ``minute,<model>,...``; one row per minute, consecutive, values >= 0.

    Refused with the (1-based) line number: a missing or non-numeric value, a negative or non-finite RPS, a gap or
    disorder in the minutes, a row with the wrong number of columns.
    """
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or not lines[0] or lines[0][0].strip() != "minute":
        raise TraceError("line 1: trace CSV must start with a 'minute' column, then one RPS column per model")
    names = [c.strip() for c in lines[0][1:]]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise TraceError("line 1: model columns must be named, each once")
    minutes: list[int] = []
    rows: list[list[float]] = []
    for number, row in enumerate(lines[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(names) + 1:
            raise TraceError(f"line {number}: {len(row)} values, expected {len(names) + 1} (minute + {len(names)} model(s))")
        try:
            minute = int(row[0].strip())
        except ValueError:
            raise TraceError(f"line {number}: minute {row[0].strip()!r} is not an integer") from None
        if minutes and minute != minutes[-1] + 1:
            what = "a gap" if minute > minutes[-1] + 1 else "out of order"
            raise TraceError(f"line {number}: minute {minute} after {minutes[-1]} is {what}: minutes must be consecutive")
        values = []
        for name, cell in zip(names, row[1:]):
            try:
                v = float(cell.strip())
            except ValueError:
                raise TraceError(f"line {number}: {name} = {cell.strip()!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise TraceError(f"line {number}: {name} = {cell.strip()}: RPS must be finite and non-negative")
            values.append(v)
        minutes.append(minute)
        rows.append(values)
    if not rows:
        raise TraceError("trace CSV has no rows")
    data = np.array(rows, dtype=float)
    return Trace(np.array(minutes), {name: data[:, i] for i, name in enumerate(names)})


def trace_to_csv(trace: Trace) -> str:
    out = io.StringIO()
    names = list(trace.demand)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["minute", *names])
    for k, minute in enumerate(trace.minutes):
        writer.writerow([int(minute), *(f"{trace.demand[n][k]:.3f}" for n in names)])
    return out.getvalue()


def load_timestamp_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``timestamp,value`` CSV (the NAB corpus format) as (seconds since the first row, value); sorted by time."""
    times: list[float] = []
    values: list[float] = []
    with path.open() as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise TraceError(f"{path.name}: line 1: expected the header 'timestamp,value'")
        for number, row in enumerate(reader, start=2):
            try:
                times.append(datetime.fromisoformat(row[0].strip()).timestamp())
                values.append(float(row[1]))
            except (ValueError, IndexError):
                raise TraceError(f"{path.name}: line {number}: expected 'YYYY-MM-DD HH:MM:SS,<number>'") from None
    t = np.array(times)
    order = np.argsort(t, kind="stable")
    t, v = t[order], np.array(values)[order]
    return t - t[0], v


def demand_shape(
    path: Path, minutes: int, peak_rps: float, *, offset_minutes: int = 0, floor: float = 0.0, seed: int | None = None
) -> np.ndarray:
    """``minutes`` of a ``timestamp,value`` series from ``offset_minutes`` on, linearly interpolated to 1 minute (over
    the source's own gaps too) and scaled so its maximum is ``peak_rps``; ``floor`` (a fraction of the peak) keeps a
    quiet stretch from meaning zero traffic. Interpolation smooths what happened between the source's samples, so
    with a ``seed`` each minute gets back noise of the source's own relative variability (``relative_noise`` at its
    native step)."""
    t, v = load_timestamp_series(path)
    grid = (offset_minutes + np.arange(minutes)) * 60.0
    if grid[-1] > t[-1]:
        raise TraceError(f"{path.name}: {t[-1] / 60:.0f} minutes long, {offset_minutes + minutes} asked for")
    shape = np.interp(grid, t, v)
    if seed is not None:
        inside = (t >= grid[0]) & (t <= grid[-1])
        sigma = relative_noise(v[inside])
        shape = np.clip(shape * (1.0 + np.random.default_rng(seed).normal(0.0, sigma, size=shape.shape)), 0.0, None)
    shape = shape / shape.max()
    return peak_rps * (floor + (1.0 - floor) * shape)


def relative_noise(series: np.ndarray, window: int = 5, ceiling: float = 0.25) -> float:
    """The trace's own short-term variability: robust standard deviation (1.4826 x MAD) of each minute's relative
    deviation from the median of its ``window`` neighbours. A smooth curve gets ~0, a jittery one its jitter."""
    if len(series) < window + 2:
        return 0.0
    pad = window // 2
    padded = np.pad(series, pad, mode="edge")
    med = np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)
    ok = med > 0
    if not ok.any():
        return 0.0
    rel = series[ok] / med[ok] - 1.0
    return float(min(ceiling, 1.4826 * np.median(np.abs(rel - np.median(rel)))))


def tick_demand(trace: Trace, tick: float, *, noise: bool = True, seed: int = 0, minimum_noise: float = 0.0) -> dict[str, np.ndarray]:
    """Demand per model per tick. ``noise=False``: each minute's value, held (the v1 staircase). ``noise=True``: each
    minute's value times ``1 + e``, ``e`` normal with the trace's own relative variability (``relative_noise``, at
    least ``minimum_noise``), drawn per minute (minute-level noise: another realisation of the same traffic, so a
    policy tuned to the exact file does not look better than it is), then linearly interpolated between minute
    centres so demand changes within a minute as it does in reality; clipped at 0."""
    per_minute = max(1, int(round(60.0 / tick)))
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in sorted(trace.demand):
        minute = np.asarray(trace.demand[name], dtype=float)
        if noise:
            sigma = max(minimum_noise, relative_noise(minute))
            minute = np.clip(minute * (1.0 + rng.normal(0.0, sigma, size=minute.shape)), 0.0, None)
            centres = np.arange(len(minute)) * per_minute + (per_minute - 1) / 2.0
            out[name] = np.interp(np.arange(len(minute) * per_minute), centres, minute)
        else:
            out[name] = np.repeat(minute, per_minute)
    return out


def noise_levels(trace: Trace) -> Mapping[str, float]:
    return {name: relative_noise(v) for name, v in trace.demand.items()}
