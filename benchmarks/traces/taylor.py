"""Demand traces from a real diurnal series: Taylor's half-hourly electricity demand (England and Wales, 2000).

``pmdarima.datasets.load_taylor()`` ships the 4,032 half-hourly points (12 weeks) inside the package, so no
download is needed. Each builder returns a ``Trace`` at 1-minute steps (linear interpolation) scaled to RPS.
Run ``python -m benchmarks.traces.taylor --out /tmp/taylor.csv`` to write one as CSV for ``hybridrec simulate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hybridrec_operator.sim.simulate import Trace, trace_to_csv

HALF_HOURS_PER_DAY = 48


def taylor_half_hourly() -> np.ndarray:
    from pmdarima.datasets import load_taylor

    return np.asarray(load_taylor(), dtype=float)


def to_minutes(half_hourly: np.ndarray) -> np.ndarray:
    """Linear interpolation of half-hourly points to 1-minute steps (the last half hour holds its value)."""
    x = np.arange(len(half_hourly)) * 30.0
    return np.interp(np.arange(len(half_hourly) * 30), x, half_hourly)


def diurnal(days: int = 7, peak_rps: float = 4000.0, shift_half_hours: int = 0, series: np.ndarray | None = None) -> np.ndarray:
    """``days`` of demand (RPS per minute) whose maximum is ``peak_rps``; ``shift`` rotates the daily phase."""
    raw = taylor_half_hourly() if series is None else series
    window = np.roll(raw, -shift_half_hours)[: days * HALF_HOURS_PER_DAY]
    minutes = to_minutes(window)
    return minutes / minutes.max() * peak_rps


def flash_sale(demand: np.ndarray, start_minute: int, multiplier: float = 4.0, ramp: int = 10, hold: int = 30, decay: int = 30) -> np.ndarray:
    """Demand times a sale profile: up to ``multiplier`` within ``ramp`` minutes, held ``hold``, back to 1 over ``decay``."""
    profile = np.ones_like(demand)
    s = start_minute
    profile[s : s + ramp] = np.linspace(1.0, multiplier, ramp, endpoint=False)
    profile[s + ramp : s + ramp + hold] = multiplier
    profile[s + ramp + hold : s + ramp + hold + decay] = np.linspace(multiplier, 1.0, decay, endpoint=False)
    return demand * profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--peak", type=float, default=4000.0)
    parser.add_argument("--model", default="trending")
    args = parser.parse_args()
    demand = diurnal(args.days, args.peak)
    args.out.write_text(trace_to_csv(Trace(np.arange(len(demand)), {args.model: demand})))


if __name__ == "__main__":
    main()
