"""Plots of a simulation: cost per hour and total replicas over time, one line per policy (small PNGs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hybridrec_operator.sim.engine import PolicyResult


def write_plots(results: Mapping[str, PolicyResult], out_dir: Path, stem: str = "simulation") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for what in ("cost", "replicas"):
        fig, ax = plt.subplots(figsize=(9, 3.2), dpi=80)
        for name, r in results.items():
            hours = r.minutes / 60.0
            y = r.cost_per_hour if what == "cost" else sum(r.replicas.values())
            ax.plot(hours, y, label=name, linewidth=0.8)
        ax.set_xlabel("hours")
        ax.set_ylabel(f"cost per hour ({next(iter(results.values())).currency})" if what == "cost" else "replicas (all models)")
        ax.legend(fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stem}_{what}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
