"""The machine description every benchmark result carries (Linux /proc, with portable fallbacks)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo, or None where it cannot be read."""
    try:
        line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        return int(line.split()[1]) / 2**20
    except (OSError, StopIteration, ValueError):
        return None
