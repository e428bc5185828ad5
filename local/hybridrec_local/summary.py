"""The numbers a recorded :class:`~hybridrec_local.timeline.Timeline` adds up to (pure, unit-tested on hand-made
timelines): spend by model and pool, SLO attainment, public replicas around the flash sale, placement violations,
and the summary lines the demo prints. Money always carries its currency code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hybridrec_operator.api.models import Sensitivity, parse_pool
from hybridrec_operator.core.sensitivity import pool_admits

from hybridrec_local.timeline import Sample, Timeline


def money(amount: float, currency: str) -> str:
    """``12.34 USD``: every amount shown carries its currency."""
    return f"{amount:,.2f} {currency}"


def clock(sim_hour: float) -> str:
    """``HH:MM`` of a simulated hour (wraps at 24)."""
    minutes = int(round(sim_hour * 60)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _sim_steps(samples: Sequence[Sample]) -> Iterable[tuple[Sample, float]]:
    """Each sample with the simulated hours until the next one (the last sample covers nothing)."""
    for cur, nxt in zip(samples, samples[1:]):
        yield cur, max(0.0, nxt.sim_hour - cur.sim_hour)


def spend_by_model(timeline: Timeline) -> dict[str, float]:
    """Money spent per model over the simulated period: $/h held until the next sample x simulated hours."""
    spend = {m.name: 0.0 for m in timeline.models}
    for sample, hours in _sim_steps(timeline.samples):
        for name, ms in sample.models.items():
            spend[name] = spend.get(name, 0.0) + ms.cost_per_hour * hours
    return spend


def spend_by_pool(timeline: Timeline) -> dict[str, float]:
    """Money spent per pool over the simulated period."""
    spend = {p.name: 0.0 for p in timeline.pools}
    for sample, hours in _sim_steps(timeline.samples):
        for ms in sample.models.values():
            for pool, cost in ms.cost_by_pool.items():
                spend[pool] = spend.get(pool, 0.0) + cost * hours
    return spend


def simulated_hours(timeline: Timeline) -> float:
    if len(timeline.samples) < 2:
        return 0.0
    return timeline.samples[-1].sim_hour - timeline.samples[0].sim_hour


def peak_provisioning_spend(timeline: Timeline) -> dict[str, float]:
    """What each model would have cost had its peak $/h been provisioned for the whole period (static sizing)."""
    hours = simulated_hours(timeline)
    out: dict[str, float] = {}
    for m in timeline.models:
        peak = max((s.models[m.name].cost_per_hour for s in timeline.samples if m.name in s.models), default=0.0)
        out[m.name] = peak * hours
    return out


@dataclass(frozen=True)
class Violation:
    t: float
    sim_hour: float
    model: str
    pool: str
    replicas: int
    reason: str


def placement_violations(timeline: Timeline) -> list[Violation]:
    """Every observed running replica on a pool its data class may not use (asks the one sensitivity rule)."""
    specs = {p.name: parse_pool({"metadata": {"name": p.name}, "spec": p.spec}).spec for p in timeline.pools if p.spec}
    out: list[Violation] = []
    for sample in timeline.samples:
        for name, ms in sample.models.items():
            info = timeline.model(name)
            if info is None:
                continue
            for pool, replicas in ms.replicas_by_pool.items():
                if replicas <= 0:
                    continue
                spec = specs.get(pool)
                if spec is None:
                    out.append(Violation(sample.t, sample.sim_hour, name, pool, replicas, "unknown pool"))
                    continue
                ok, reason = pool_admits(Sensitivity(info.sensitivity), spec, allow_public_burst=info.allow_public_burst)
                if not ok:
                    out.append(Violation(sample.t, sample.sim_hour, name, pool, replicas, reason))
    return out


def tenancy_replicas(timeline: Timeline, sample: Sample, model: str) -> tuple[int, int]:
    """(private, public) running replicas of ``model`` in ``sample``."""
    ms = sample.models.get(model)
    if ms is None:
        return 0, 0
    private = public = 0
    for pool, n in ms.replicas_by_pool.items():
        info = timeline.pool(pool)
        if info is not None and info.tenancy == "public":
            public += n
        else:
            private += n
    return private, public


def in_sale(timeline: Timeline, sim_hour: float) -> bool:
    sale = timeline.sale
    return sale is not None and sale.start_hour <= sim_hour < sale.end_hour


def max_public_replicas(timeline: Timeline, model: str, *, during_sale: bool) -> int:
    """Largest number of public replicas of ``model`` seen inside (or outside) the flash sale window."""
    return max(
        (tenancy_replicas(timeline, s, model)[1] for s in timeline.samples if in_sale(timeline, s.sim_hour) == during_sale),
        default=0,
    )


def slo_attainment(timeline: Timeline) -> dict[str, tuple[int, int]]:
    """Per model: (samples with p95 within SLO, samples with a p95 at all). Server-side p95, client p95 as fallback."""
    out: dict[str, tuple[int, int]] = {}
    for m in timeline.models:
        ok = total = 0
        for s in timeline.samples:
            ms = s.models.get(m.name)
            p95 = None if ms is None else (ms.p95_ms if ms.p95_ms is not None else ms.client_p95_ms)
            if p95 is None or (ms is not None and ms.served_rps <= 0):
                continue
            total += 1
            ok += p95 <= m.slo_p95_ms
        out[m.name] = (ok, total)
    return out


def first_public_replica_hour(timeline: Timeline, model: str) -> float | None:
    """Simulated hour when ``model`` first ran a public replica, or None."""
    return next((s.sim_hour for s in timeline.samples if tenancy_replicas(timeline, s, model)[1] > 0), None)


def last_public_replica_hour(timeline: Timeline, model: str) -> float | None:
    """Simulated hour of the last observation with a public replica of ``model``, or None."""
    return next((s.sim_hour for s in reversed(timeline.samples) if tenancy_replicas(timeline, s, model)[1] > 0), None)


def summary_lines(timeline: Timeline) -> list[str]:
    """Plain sentences for the terminal and the report: what happened and what it cost."""
    cur = timeline.currency
    hours = simulated_hours(timeline)
    spend = spend_by_model(timeline)
    static = peak_provisioning_spend(timeline)
    lines = [
        f"Simulated {hours:.1f} h in {timeline.real_seconds:.0f} s of real time; "
        f"total spend {money(sum(spend.values()), cur)} vs {money(sum(static.values()), cur)} "
        "had every model kept its peak capacity all day."
    ]
    for m in timeline.models:
        line = f"{m.name} ({m.sensitivity}): spent {money(spend.get(m.name, 0.0), cur)}"
        if m.budget_per_hour is not None and hours > 0:
            line += f" (budget {money(m.budget_per_hour, m.budget_currency)}/h = {money(m.budget_per_hour * hours, m.budget_currency)} for the period)"
        lines.append(line + ".")
    violations = placement_violations(timeline)
    if violations:
        v = violations[0]
        lines.append(f"PLACEMENT VIOLATION: {len(violations)} observation(s), first {v.model} on {v.pool} at {clock(v.sim_hour)}: {v.reason}.")
    else:
        sensitive = [m.name for m in timeline.models if m.sensitivity in ("restricted", "confidential")]
        if sensitive:
            lines.append(f"{', '.join(sensitive)} never ran on a public pool ({len(timeline.samples)} observations).")
    sale = timeline.sale
    if sale is not None:
        inside = max_public_replicas(timeline, sale.model, during_sale=True)
        outside = max_public_replicas(timeline, sale.model, during_sale=False)
        first = first_public_replica_hour(timeline, sale.model)
        last = last_public_replica_hour(timeline, sale.model)
        when = ""
        if first is not None and last is not None:
            lead = sale.start_hour - first
            when = (f"; public replicas from {clock(first)}"
                    + (f" ({lead * 60:.0f} simulated minutes before the sale)" if lead > 0 else "")
                    + f" to {clock(last)}")
        lines.append(
            f"Flash sale {clock(sale.start_hour)}-{clock(sale.end_hour)} (x{sale.multiplier:g}) on {sale.model}: "
            f"up to {inside} public replica(s) during the sale, {outside} outside it{when}."
        )
    return lines
