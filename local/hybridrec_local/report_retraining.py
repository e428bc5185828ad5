"""The report's "Retraining" section: one retraining run the demo started, as the cluster recorded it (pure).

:class:`RetrainingRecord` is what the demo read from the API server, the servers and the model's lifecycle economics
(``demo/retraining.py`` fills it); it round-trips through ``retraining.json`` next to the report. The functions here
turn it into the rows and sentences the report shows: where the run trained and why (the pools its data class may
use, by the one rule ``sensitivity.pool_admits``, and their prices), what it cost, its scores against the serving
version and the popularity baseline, the gate's verdict, the promotion and what the training spend did to the ROI.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from hybridrec_operator.api.models import Sensitivity, parse_pool
from hybridrec_operator.core.sensitivity import pool_admits

from hybridrec_local.timeline import PoolInfo

RETRAINING_FILE = "retraining.json"


@dataclass
class Scores:
    """HR@10 / NDCG@10 on the run's held-out split (each user's last interaction against 99 sampled items)."""

    hr10: float
    ndcg10: float


@dataclass
class PhaseSeen:
    """A phase of the run the demo observed, and when (real seconds since the traffic started; simulated hour)."""

    phase: str
    t: float
    sim_hour: float


@dataclass
class RetrainingRecord:
    """One retraining run as the demo observed it; empty fields mean the cluster never reported them."""

    model: str
    namespace: str
    run: str = ""
    trigger: str = ""
    skipped: str = ""  # why no run happened (e.g. --no-train); the section then says so and nothing else
    created_sim_hour: float | None = None
    data_uri: str = ""
    data_rows: int = 0
    epochs: int = 0
    serving_epochs: int = 0
    sensitivity: str = ""  # the class the run was placed by (the run's spec.dataSensitivity)
    allow_public_burst: bool = False
    pool: str = ""
    tenancy: str = ""
    placement_message: str = ""  # the operator's own sentence (condition Scheduled)
    phase: str = ""
    message: str = ""
    job_start: str = ""
    job_completion: str = ""
    duration_s: float | None = None  # the Job's startTime -> completionTime, as Kubernetes recorded them
    gpu_hours: float = 0.0
    cost: float = 0.0
    currency: str = "USD"
    new: Scores | None = None
    serving: Scores | None = None
    popularity: Scores | None = None
    gate: dict[str, Any] = field(default_factory=dict)  # the model's spec.training.gate as applied
    gate_passed: bool | None = None
    gate_reason: str = ""
    gate_message: str = ""
    promotion: str = ""  # auto | manual
    previous_sha256: str = ""
    previous_version: str = ""
    new_uri: str = ""
    new_sha256: str = ""
    new_version: str = ""
    promoted_at: str = ""  # the run's status.promotedAt (wall clock, UTC)
    promoted_sim_hour: float | None = None  # when the demo first saw the run Promoting (the servers on the new version)
    served_sha256: list[str] = field(default_factory=list)  # what each ready server of the model reported afterwards
    answered_version: str = ""  # the version a /v1/recommend answer named afterwards
    phases: list[PhaseSeen] = field(default_factory=list)
    economics_currency: str = ""  # spec.economics.currency: the ROI's (runs priced in another one are left out)
    training_first: float | None = None  # economics.training (typed by the user: the first version)
    training_measured: float | None = None  # status.trainingSpend.cost[currency]: every run's measured cost
    roi_before: float | None = None  # core/costing's lifecycle ROI with economics.training only
    roi_after: float | None = None  # ... and with the measured retraining spend summed in
    kubectl_get_rmtr: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, raw: str) -> RetrainingRecord:
        data = json.loads(raw)
        for key in ("new", "serving", "popularity"):
            if data.get(key) is not None:
                data[key] = Scores(**data[key])
        data["phases"] = [PhaseSeen(**p) for p in data.get("phases", [])]
        return cls(**data)

    def note_phase(self, phase: str, t: float, sim_hour: float) -> None:
        """Record ``phase`` when it differs from the last one seen."""
        if phase and (not self.phases or self.phases[-1].phase != phase):
            self.phases.append(PhaseSeen(phase, t, sim_hour))
        if phase == "Promoting" and self.promoted_sim_hour is None:
            self.promoted_sim_hour = sim_hour


# ------------------------------------------------------------------------------------------------ figures


@dataclass(frozen=True)
class PoolOption:
    """A pool as the run's data class sees it: may it train there (the one sensitivity rule), and at what price."""

    name: str
    tenancy: str
    capacity_type: str
    price: float
    currency: str
    admitted: bool
    reason: str
    chosen: bool


def pool_options(record: RetrainingRecord, pools: list[PoolInfo]) -> list[PoolOption]:
    """Every pool with ``pool_admits``' verdict for the run's class; admitted pools first, cheapest first."""
    if not record.sensitivity:
        return []
    out = []
    for p in pools:
        ok, why = pool_admits(Sensitivity(record.sensitivity), parse_pool({"metadata": {"name": p.name}, "spec": p.spec}).spec,
                              allow_public_burst=record.allow_public_burst)
        out.append(PoolOption(p.name, p.tenancy, p.capacity_type, p.price_per_gpu_hour, p.currency, ok,
                              "may train here" if ok else why, p.name == record.pool))
    return sorted(out, key=lambda o: (not o.admitted, o.price, o.name))


def placement_reason(record: RetrainingRecord, pools: list[PoolInfo]) -> str:
    """Why the run trained where it did, in one sentence built from the options and the operator's choice."""
    options = pool_options(record, pools)
    admitted = [o for o in options if o.admitted]
    chosen = next((o for o in options if o.chosen), None)
    if chosen is None:
        return record.placement_message or "the run was never placed"
    refused = [o for o in options if not o.admitted]
    parts = [f"{record.sensitivity} data may train on {len(admitted)} of {len(options)} pools"]
    if refused:
        parts.append("not on " + ", ".join(f"{o.name} ({o.reason})" for o in refused))
    cheaper = [o for o in admitted if o.price < chosen.price]
    if not cheaper:
        parts.append(f"{chosen.name} is the cheapest of them at {chosen.price:g} {chosen.currency}/GPU-hour")
    else:
        # The operator takes the cheapest admissible pool with room, spot priced with its expected reclaim cost.
        why = [f"{o.name} ({o.price:g}) had no free GPU" + (" or cost more with its expected reclaim cost"
                                                             if o.capacity_type == "spot" else "") for o in cheaper]
        parts.append(f"{chosen.name} at {chosen.price:g} {chosen.currency}/GPU-hour, as the cheaper "
                     + ", ".join(why) + " when the run was placed")
    return "; ".join(parts)


def summary_line(record: RetrainingRecord) -> str:
    """One line for the demo's "What happened" list."""
    if record.skipped:
        return f"Retraining of {record.model}: skipped ({record.skipped})."
    if not record.run:
        return f"Retraining of {record.model}: no run."
    scores = ""
    if record.new is not None:
        scores = (f"HR@10 {record.new.hr10:.3f} vs serving "
                  f"{record.serving.hr10:.3f}" if record.serving else f"HR@10 {record.new.hr10:.3f}")
        if record.popularity is not None:
            scores += f" vs popularity {record.popularity.hr10:.3f}"
    what = {
        "Promoted": f"promoted, {_short(record.previous_sha256)} -> {_short(record.new_sha256)}",
        "Rejected": f"rejected by the gate ({record.gate_reason})",
    }.get(record.phase, record.phase or "never ran")
    return (f"Retraining of {record.model}: run {record.run} trained on {record.pool or '?'} "
            f"({record.tenancy or '?'}), {scores}; {what}; measured cost {record.cost:.6f} {record.currency} "
            f"({record.gpu_hours:.5f} GPU-h).")


def _short(sha: str) -> str:
    return sha[:12] if sha else "?"


# --------------------------------------------------------------------------------------------------- HTML

_SECTION = """<h2>Retraining</h2>
{% if r.skipped %}<p>No retraining run in this demo: {{ r.skipped }}.</p>{% else %}
<p>{{ r.trigger }} The operator placed its Job, the pod runner ran the project's trainer on this machine as the pod's
container, the operator read the evaluation from the pod's termination message, gated it and
{% if r.promotion == "auto" %}promoted it automatically (status.promotedModel; the Deployments roll make-before-break){% else %}waited for a person to promote it{% endif %}.</p>
<table>
<tr><th>run</th><td>{{ r.namespace }}/{{ r.run }} (model {{ r.model }}, {{ r.epochs }} epochs max on {{ r.data_rows }} interactions from {{ r.data_uri }}; the serving version had {{ r.serving_epochs }})</td></tr>
<tr><th>outcome</th><td><span class="{{ 'ok' if r.phase == 'Promoted' else 'bad' }}">{{ r.phase or "unknown" }}</span>{% if r.message %}: {{ r.message }}{% endif %}</td></tr>
<tr><th>pool</th><td>{{ r.pool or "none" }} ({{ r.tenancy or "?" }}): {{ reason }}</td></tr>
<tr><th>operator's placement</th><td>{{ r.placement_message }}</td></tr>
<tr><th>duration</th><td>{% if r.duration_s is not none %}{{ "%.1f"|format(r.duration_s) }} s (the Job's start to its completion: {{ r.job_start }} &rarr; {{ r.job_completion }}){% else %}not completed{% endif %}</td></tr>
<tr><th>measured cost</th><td>{{ "%.5f"|format(r.gpu_hours) }} GPU-hours x the pool's price = <b>{{ "%.6f"|format(r.cost) }} {{ r.currency }}</b> (status.gpuHours, status.cost; gauge hybridrec_training_cost)</td></tr>
</table>
{% if r.new %}<h3>Evaluation on the held-out split</h3>
<table><tr><th>version</th><th>HR@10</th><th>NDCG@10</th></tr>
<tr><td>new ({{ r.new_version or r.run }})</td><td class="num">{{ "%.4f"|format(r.new.hr10) }}</td><td class="num">{{ "%.4f"|format(r.new.ndcg10) }}</td></tr>
{% if r.serving %}<tr><td>serving ({{ r.previous_version or "?" }})</td><td class="num">{{ "%.4f"|format(r.serving.hr10) }}</td><td class="num">{{ "%.4f"|format(r.serving.ndcg10) }}</td></tr>{% endif %}
{% if r.popularity %}<tr><td>popularity baseline</td><td class="num">{{ "%.4f"|format(r.popularity.hr10) }}</td><td class="num">{{ "%.4f"|format(r.popularity.ndcg10) }}</td></tr>{% endif %}
</table>{% endif %}
<p>Gate (minHitRateAt10 {{ r.gate.get("minHitRateAt10", 0) }}, minImprovement {{ r.gate.get("minImprovement", 0) }}, beatPopularity {{ r.gate.get("beatPopularity", true)|lower }}):
{% if r.gate_passed is none %}not judged{% elif r.gate_passed %}<span class="ok">passed</span>{% else %}<span class="bad">refused ({{ r.gate_reason }})</span>{% endif %}{% if r.gate_message %} &mdash; {{ r.gate_message }}{% endif %}</p>
{% if r.new_sha256 %}<h3>Promotion</h3>
<table>
<tr><th>from</th><td><code>{{ r.previous_sha256 }}</code> ({{ r.previous_version }})</td></tr>
<tr><th>to</th><td><code>{{ r.new_sha256 }}</code> ({{ r.new_version }}, {{ r.new_uri }})</td></tr>
<tr><th>when</th><td>{% if r.promoted_at %}{{ r.promoted_at }}{% else %}not promoted{% endif %}{% if r.promoted_sim_hour is not none %}
({% if r.created_sim_hour is not none and r.promoted_sim_hour >= r.created_sim_hour + 24 %}after the simulated day{% else %}simulated {{ clock(r.promoted_sim_hour) }}{% endif %}){% endif %}</td></tr>
<tr><th>servers afterwards</th><td>{% if r.served_sha256 %}{% for s in r.served_sha256 %}<code>{{ s }}</code> {% endfor %}{% else %}none ready{% endif %}{% if r.answered_version %}; /v1/recommend answered with version {{ r.answered_version }}{% endif %}</td></tr>
</table>{% endif %}
{% if r.phases %}<p>Phases seen (simulated time, real seconds since the day started): {% for p in r.phases %}{{ p.phase }} at
{% if r.created_sim_hour is not none and p.sim_hour >= r.created_sim_hour + 24 %}the end of the day{% else %}{{ clock(p.sim_hour) }}{% endif %}
(+{{ "%.0f"|format(p.t) }} s){{ ", " if not loop.last }}{% endfor %}.</p>{% endif %}
{% if roi_before is not none and roi_after is not none %}<h3>Training spend and ROI</h3>
<table><tr><th></th><th>training</th><th>lifecycle ROI</th></tr>
<tr><td>first version only (economics.training)</td><td class="num">{{ "%.6f"|format(r.training_first) }} {{ r.economics_currency }}</td><td class="num">{{ "%.7f"|format(roi_before) }}</td></tr>
<tr><td>+ measured retraining (status.trainingSpend)</td><td class="num">{{ "%.6f"|format(r.training_first + (r.training_measured or 0)) }} {{ r.economics_currency }}</td><td class="num">{{ "%.7f"|format(roi_after) }}</td></tr>
</table>
<p>The retraining spend moved the ROI by {{ "%+.7f"|format(roi_after - roi_before) }} (benefit / (training + deployment + maintenance)).</p>{% endif %}
{% if options %}<h3>Where the run's data class may train</h3>
<table><tr><th>pool</th><th>tenancy</th><th>capacity</th><th>price</th><th>verdict</th></tr>
{% for o in options %}<tr><td>{{ o.name }}{% if o.chosen %} <b>(chosen)</b>{% endif %}</td><td>{{ o.tenancy }}</td><td>{{ o.capacity_type }}</td><td class="num">{{ "%.2f"|format(o.price) }} {{ o.currency }}/GPU-h</td><td>{{ o.reason }}</td></tr>{% endfor %}
</table>{% endif %}
{% if r.kubectl_get_rmtr %}<h3>kubectl get rmtr -A</h3><pre>{{ r.kubectl_get_rmtr }}</pre>{% endif %}
{% endif %}
"""


def render_section(record: RetrainingRecord, pools: list[PoolInfo]) -> str:
    """The section's HTML (autoescaped: names and the operator's messages are data, not markup)."""
    from jinja2 import Environment

    from hybridrec_local.summary import clock

    env = Environment(autoescape=True)
    env.globals["clock"] = clock
    return env.from_string(_SECTION).render(r=record, reason=placement_reason(record, pools),
                                            options=pool_options(record, pools), roi_before=record.roi_before,
                                            roi_after=record.roi_after)
