"""Retraining decisions, pure (no I/O): when a run is due, where it trains, its Job, the gate, the promotion.

* **Placement.** A run trains on one pool. Which pools it may use is ``placement.allowed_pools`` (that is,
  ``sensitivity.pool_admits``) asked with the run's class: the stricter of the model's ``dataSensitivity`` and
  ``training.dataSensitivity``, whatever the spec says. So confidential/restricted input trains on private pools only;
  public input, and internal input of a model with ``allowPublicBurst``, may use public spot pools. Among the allowed
  pools with a free GPU slot: preferred pools first, then the cheapest by ``placement.effective_price`` (spot carries
  its expected reclaim cost, as for serving), private first on a tie.
* **Job.** ``batch/v1`` Job, one pod (``restartPolicy: Never``), ``backoffLimit`` from the spec and a
  ``podFailurePolicy``: a disruption (spot reclaim, preemption, node drain) is *ignored* so the replacement pod
  resumes from the last checkpoint in S3 without using a retry; exit code 2 (bad input: no such data, empty or
  corrupt file) fails the Job at once, since retrying cannot help. Every pod requires the pool's tenancy by node
  affinity; a sensitive run onto a public pool is refused here too (defence in depth, as ``render.node_affinity``).
* **Gate** and **promotion**: ``judge`` compares the new version's HR@10 with the gate and the serving version;
  ``advance`` is the run's state machine (``api/training_run.RunPhase``); ``judge_bake`` tells, within the bake
  window after a promotion, whether the new version's error ratio rose (a rollback) or could not be known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from hybridrec_operator.api.models import (
    SENSITIVE,
    ModelArtifact,
    RecModelDeployment,
    RecModelDeploymentSpec,
    Sensitivity,
    Tenancy,
    TrainingSpend,
)
from hybridrec_operator.api.training import EvaluationGate
from hybridrec_operator.api.training_run import TERMINAL_PHASES, Evaluation, RecModelTrainingRun, RunPhase
from hybridrec_operator.core import dra
from hybridrec_operator.core.placement import PoolView, allowed_pools, effective_price

MANAGER = "hybridrec"
COMPONENT = "training"
RUN_LABEL = "hybridrec.io/training-run"
MODEL_LABEL = "hybridrec.io/model"  # the serving children's label (core/render.py)
# Not hybridrec.io/model: pods with that label count as the model's serving replicas (runtime, guard, capacity).
TRAINED_MODEL_LABEL = "hybridrec.io/trained-model"
SENSITIVITY_LABEL = "hybridrec.io/sensitivity"
POOL_LABEL = "hybridrec.io/pool"
TENANCY_LABEL = "hybridrec.io/tenancy"
CONTAINER = "trainer"
ENTRY_POINT = ("python", "-m", "hybridrec_server.training_job")
# The trainer's exit codes (hybridrec_server.training_job): 2 = the input can never work, retrying cannot help.
EXIT_BAD_INPUT = 2
RUN_AS = 10001
_ORDER = list(Sensitivity)
# Phases during which a model has a run in flight: a new scheduled run waits (concurrencyPolicy Forbid).
ACTIVE_PHASES = frozenset({RunPhase.PENDING, RunPhase.RUNNING, RunPhase.PROMOTING})


# ----------------------------------------------------------------------------------------------- serving


def served_model(rmd: RecModelDeployment) -> ModelArtifact:
    """The version the model's servers run: the one a training run promoted (``status.promotedModel``) while
    ``spec.model`` is still the version it replaced, else ``spec.model``. A person's new spec.model always wins."""
    promoted = rmd.status.promoted_model if rmd.status is not None else None
    if promoted is not None and (promoted.replaces.uri, promoted.replaces.sha256) == (rmd.spec.model.uri, rmd.spec.model.sha256):
        return promoted.model
    return rmd.spec.model


# ----------------------------------------------------------------------------------------------- placement


def effective_sensitivity(spec: RecModelDeploymentSpec, requested: Sensitivity | None = None) -> Sensitivity:
    """The class a run is placed by: the strictest of the model's, its training input's and ``requested`` (a run's
    own spec). Never less strict than the model's, whatever the input."""
    classes = [spec.data_sensitivity]
    if spec.training is not None and spec.training.data_sensitivity is not None:
        classes.append(spec.training.data_sensitivity)
    if requested is not None:
        classes.append(Sensitivity(requested))
    return max(classes, key=_ORDER.index)


def training_view(spec: RecModelDeploymentSpec, sensitivity: Sensitivity) -> RecModelDeploymentSpec:
    """The model's spec as the training run sees it: its data class is the run's, its per-replica resources the
    training resources. Internal data may burst only if the model allows it and its class is still internal."""
    update: dict[str, Any] = {"data_sensitivity": sensitivity}
    if spec.training is not None:
        update["resources"] = spec.training.resources
    if sensitivity in SENSITIVE:
        update["placement"] = spec.placement.model_copy(update={"allow_public_burst": False})
    return spec.model_copy(update=update)


@dataclass(frozen=True)
class TrainingPlacement:
    pool: PoolView | None  # None: nowhere to train now
    sensitivity: Sensitivity
    excluded: Mapping[str, str]  # pool -> why the run may not train there
    message: str


def choose_pool(spec: RecModelDeploymentSpec, pools: Sequence[PoolView], sensitivity: Sensitivity) -> TrainingPlacement:
    """The pool a run of ``sensitivity`` trains on, or none with the reasons (pure)."""
    view = training_view(spec, sensitivity)
    allowed, excluded = allowed_pools(view, pools)
    excluded = dict(excluded)
    gpus = view.resources.gpus
    fits = []
    for pool in allowed:
        if pool.capacity(gpus) >= 1:
            fits.append(pool)
        else:
            excluded[pool.name] = f"no room for {gpus} GPU(s) now"
    preferred = {name: i for i, name in enumerate(view.placement.preferred_pools)}
    fits.sort(key=lambda p: (preferred.get(p.name, len(preferred)), effective_price(p.spec),
                             0 if p.spec.tenancy == Tenancy.PRIVATE else 1, p.name))
    if not fits:
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(excluded.items())) or "no ComputePool exists"
        return TrainingPlacement(None, sensitivity, excluded, f"no pool may train {sensitivity.value} data now ({why})")
    pool = fits[0]
    return TrainingPlacement(pool, sensitivity, excluded,
                             f"training {sensitivity.value} data on {pool.spec.tenancy.value} pool {pool.name} at "
                             f"{pool.spec.pricing.price_per_gpu_hour:g} {pool.spec.pricing.currency}/GPU-hour")


# --------------------------------------------------------------------------------------------------- the Job


@dataclass(frozen=True)
class JobInputs:
    """What the trainer needs: where to read, where to write, what to compare against."""

    data_uri: str
    output_uri: str  # this run's own prefix: <training.outputUri>/<run>/
    architecture: str
    epochs: int
    image: str
    serving_uri: str
    serving_sha256: str | None
    version: str
    extra_env: Mapping[str, str] = field(default_factory=dict)  # e.g. the S3 endpoint of an on-prem object store


def run_output_uri(base: str, run: str) -> str:
    """``<base>/<run>/``: a prefix of its own per run, never the serving version's."""
    return f"{base.rstrip('/')}/{run}/"


def job_labels(rmd: RecModelDeployment, run: str, pool: PoolView, sensitivity: Sensitivity) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hybridrec-trainer",
        "app.kubernetes.io/instance": rmd.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": MANAGER,
        TRAINED_MODEL_LABEL: rmd.name,
        RUN_LABEL: run,
        SENSITIVITY_LABEL: sensitivity.value,
        POOL_LABEL: pool.name,
        TENANCY_LABEL: pool.spec.tenancy.value,
    }


def build_claim_template(
    rmd: RecModelDeployment, run: RecModelTrainingRun, pool: PoolView, sensitivity: Sensitivity,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The ResourceClaimTemplate a run's pods claim their GPUs from on a DRA pool (``gpu.dra``), owned like the Job by
    the run so it goes with it; ``None`` on a pool that counts GPUs as an extended resource."""
    gpu = pool.spec.gpu.dra
    if gpu is None:
        return None
    template = dra.build_claim_template(run.name, rmd.namespace, job_labels(rmd, run.name, pool, sensitivity),
                                        gpu.device_class_name, gpu.selectors,
                                        training_view(rmd.spec, sensitivity).resources.gpus)
    if owner is not None:
        template["metadata"]["ownerReferences"] = [dict(owner)]
    return template


def build_job(
    rmd: RecModelDeployment, run: RecModelTrainingRun, pool: PoolView, sensitivity: Sensitivity, inputs: JobInputs,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Job of one run on ``pool`` (pure). Raises ``ValueError`` if ``pool`` may not take ``sensitivity``."""
    view = training_view(rmd.spec, sensitivity)
    allowed, excluded = allowed_pools(view, [pool])
    if not allowed or (sensitivity in SENSITIVE and pool.spec.tenancy != Tenancy.PRIVATE):
        # Defence in depth: choose_pool never does this; refuse to render it rather than trust the caller.
        raise ValueError(f"run {run.name}: {sensitivity.value} data may not train on pool {pool.name} "
                         f"({excluded.get(pool.name, 'public pool')})")
    training = rmd.spec.training
    resources = view.resources
    labels = job_labels(rmd, run.name, pool, sensitivity)
    claim = build_claim_template(rmd, run, pool, sensitivity)
    # A DRA pool's GPUs are devices the pod claims (its count in annotations, for capacity); others an extended resource.
    gpus = {} if claim is not None else {pool.spec.gpu.resource_name: str(resources.gpus)}
    env = {
        "HYBRIDREC_TRAIN_DATA_URI": inputs.data_uri,
        "HYBRIDREC_TRAIN_OUTPUT_URI": inputs.output_uri,
        "HYBRIDREC_TRAIN_ARCHITECTURE": inputs.architecture,
        "HYBRIDREC_TRAIN_EPOCHS": str(inputs.epochs),
        "HYBRIDREC_TRAIN_VERSION": inputs.version,
        "HYBRIDREC_SERVING_MODEL_URI": inputs.serving_uri,
        **({"HYBRIDREC_SERVING_MODEL_SHA256": inputs.serving_sha256} if inputs.serving_sha256 else {}),
        **inputs.extra_env,
    }
    tolerations = [{k: v for k, v in t.to_wire().items() if v != ""} for t in pool.spec.tolerations]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy requires it; a new pod resumes from the checkpoint
        "nodeSelector": dict(pool.spec.node_selector),
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": TENANCY_LABEL, "operator": "In", "values": [pool.spec.tenancy.value]}]}
        ]}}},
        "containers": [{
            "name": CONTAINER,
            "image": inputs.image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(ENTRY_POINT),
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "resources": {
                "requests": {"cpu": resources.cpu, "memory": resources.memory, **gpus},
                "limits": {"memory": resources.memory, **gpus},
                **({"claims": [{"name": dra.CLAIM}]} if claim is not None else {}),
            },
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if tolerations:
        pod_spec["tolerations"] = tolerations
    template_meta: dict[str, Any] = {"labels": labels}
    if claim is not None and (gpu := pool.spec.gpu.dra) is not None:
        pod_spec["resourceClaims"] = dra.pod_claims(claim["metadata"]["name"])
        template_meta["annotations"] = dra.pod_annotations(gpu.device_class_name, resources.gpus)
    metadata: dict[str, Any] = {"name": run.name, "namespace": rmd.namespace, "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": training.backoff_limit if training else 3,
            "activeDeadlineSeconds": training.active_deadline_seconds if training else 6 * 3600,
            "completions": 1,
            "parallelism": 1,
            "podFailurePolicy": {"rules": [
                # A spot reclaim, preemption or drain: not the run's fault; the next pod resumes from the checkpoint.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}},
            ]},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


# ------------------------------------------------------------------------------------------------ schedule


def due_time(schedule: str, after: datetime, now: datetime) -> datetime | None:
    """The latest fire time of ``schedule`` in (``after``, ``now``], or None (pure; UTC). Missed fire times
    collapse into one run: a model is retrained on the newest data, not once per missed slot."""
    it = croniter(schedule, after.astimezone(UTC))
    latest = None
    while (t := it.get_next(datetime)) <= now.astimezone(UTC):
        latest = t
    return latest


def run_name(model: str, when: datetime) -> str:
    """``<model>-<yyyymmddhhmm>``: one name per fire time, so creating it twice is a conflict, not two runs."""
    return f"{model}-{when.astimezone(UTC).strftime('%Y%m%d%H%M')}"


def has_active_run(runs: Iterable[RecModelTrainingRun]) -> bool:
    return any((r.status.phase if r.status else RunPhase.PENDING) in ACTIVE_PHASES for r in runs)


def runs_to_prune(runs: Iterable[RecModelTrainingRun], keep: int) -> list[str]:
    """Names of the oldest finished runs beyond ``keep`` (active and awaiting runs are never pruned)."""
    done = [r for r in runs if r.status is not None and r.status.phase in TERMINAL_PHASES]
    done.sort(key=lambda r: (str(r.metadata.get("creationTimestamp", "")), r.name), reverse=True)
    return [r.name for r in done[keep:]]


# ---------------------------------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str  # condition reason: GatePassed, BelowMinimum, NoImprovement, BelowPopularity
    message: str


def judge(evaluation: Evaluation, gate: EvaluationGate) -> GateVerdict:
    """Whether the new version may replace the serving one; the message names every score compared (pure)."""
    new = evaluation.hit_rate_at10
    serving = evaluation.serving_hit_rate_at10
    scores = f"new HR@10 {new:.4f}, serving HR@10 " + (f"{serving:.4f}" if serving is not None else "unknown") + \
        f", popularity HR@10 {evaluation.popularity_hit_rate_at10:.4f}"
    if new < gate.min_hit_rate_at10:
        return GateVerdict(False, "BelowMinimum", f"{scores}: below gate.minHitRateAt10 {gate.min_hit_rate_at10:.4f}")
    if serving is not None and new < serving + gate.min_improvement:
        return GateVerdict(False, "NoImprovement",
                           f"{scores}: needs at least {serving + gate.min_improvement:.4f} (serving + gate.minImprovement "
                           f"{gate.min_improvement:+.4f})")
    if gate.beat_popularity and new <= evaluation.popularity_hit_rate_at10:
        return GateVerdict(False, "BelowPopularity", f"{scores}: does not beat the popularity baseline")
    return GateVerdict(True, "GatePassed", f"{scores}: passes the gate")


# ------------------------------------------------------------------------------------------- state machine


@dataclass(frozen=True)
class Observation:
    """What the controller saw of one run this round."""

    job_exists: bool = False
    job_active: bool = False  # a pod of the Job runs
    job_succeeded: bool = False
    job_failed: str | None = None  # the Job's failure reason/message
    evaluation: Evaluation | None = None
    result_error: str | None = None  # the Job succeeded but its evaluation.json/manifest could not be read
    promote_requested: bool = False  # the model's spec.model now names this run's version
    serving_new_version: bool = False  # the model's pods all run the new version and are ready
    rollout_failed: str | None = None  # new pods failed readiness (not rolled out in time) or the version changed
    seconds_since_promotion: float | None = None
    bake: BakeVerdict | None = None  # the error-ratio check of the bake window (``judge_bake``); None: not checked


@dataclass(frozen=True)
class Transition:
    phase: RunPhase
    reason: str
    message: str
    action: str | None = None  # "promote" (serve the new version) or "rollback" (serve status.previous again)


def advance(phase: RunPhase, obs: Observation, gate: EvaluationGate, promotion: str, bake_seconds: int) -> Transition:
    """The next phase of a run (pure). Terminal phases stay; every failure names its cause."""
    if phase in TERMINAL_PHASES:
        return Transition(phase, "Finished", f"run is {phase.value}")
    if phase in (RunPhase.PENDING, RunPhase.RUNNING):
        if obs.job_failed is not None:
            return Transition(RunPhase.FAILED, "JobFailed", obs.job_failed)
        if obs.job_succeeded:
            if obs.result_error is not None or obs.evaluation is None:
                return Transition(RunPhase.FAILED, "ResultUnreadable", obs.result_error or "the run wrote no evaluation.json")
            verdict = judge(obs.evaluation, gate)
            if not verdict.passed:
                return Transition(RunPhase.REJECTED, verdict.reason, verdict.message + "; the serving version keeps serving")
            if promotion == "auto":
                return Transition(RunPhase.PROMOTING, "Promoting", verdict.message + "; rolling it out", action="promote")
            return Transition(RunPhase.AWAITING_PROMOTION, "AwaitingPromotion",
                              verdict.message + "; set the model's spec.model to the run's status.artifact to roll it out")
        if obs.job_active:
            return Transition(RunPhase.RUNNING, "Running", "training")
        return Transition(phase, "Pending", "waiting for the training pod")
    if phase == RunPhase.AWAITING_PROMOTION:
        if obs.promote_requested:
            return Transition(RunPhase.PROMOTING, "Promoting", "promotion requested; rolling it out", action="promote")
        return Transition(phase, "AwaitingPromotion", "passed the gate; waiting for the model's spec.model to name this version")
    # PROMOTING: make-before-break is the Deployments' (maxUnavailable 0); here only the verdict of the bake window.
    if obs.rollout_failed is not None:
        return Transition(RunPhase.ROLLED_BACK, "RolledBack", f"{obs.rollout_failed}; serving the previous version again",
                          action="rollback")
    if obs.bake is not None and obs.bake.rollback:
        return Transition(RunPhase.ROLLED_BACK, "ErrorRatioRose", f"{obs.bake.message}; serving the previous version again",
                          action="rollback")
    error_ratio = obs.bake.message if obs.bake is not None else "error ratio not checked"
    if obs.serving_new_version and (obs.seconds_since_promotion or 0.0) >= bake_seconds:
        return Transition(RunPhase.PROMOTED, "Promoted", f"the new version served {bake_seconds}s without failing "
                          f"readiness; {error_ratio}")
    return Transition(phase, "Baking", f"the new version is rolling out or within its bake window; {error_ratio}")


# ------------------------------------------------------------------------------------------------ bake window

# Fewer requests than this to the new version say nothing about its error ratio (1 error in 3 is not 33 %).
MIN_BAKE_REQUESTS = 20.0
# The previous version's error ratio: its servers' requests over this window before the promotion.
PREVIOUS_WINDOW_SECONDS = 300


@dataclass(frozen=True)
class ErrorRatios:
    """What Prometheus said about the model's ``/v1/recommend`` answers (5xx and 429 / all), per version."""

    new: float | None = None  # servers running the new version, since the promotion; None: no requests seen
    new_requests: float = 0.0  # requests those servers answered since the promotion
    previous: float | None = None  # servers running any other version, over the window before the promotion
    previous_requests: float = 0.0
    unavailable: str | None = None  # why nothing could be read (Prometheus down, refusing the query)


@dataclass(frozen=True)
class BakeVerdict:
    rollback: bool
    message: str  # names both ratios, or why the check could not be made
    new: float | None = None
    previous: float | None = None


def _ratio(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "unknown"


def judge_bake(ratios: ErrorRatios | None, max_error_ratio: float | None, max_increase: float) -> BakeVerdict:
    """Whether the new version's error ratio rose within the bake window (pure). Rolled back when it exceeds
    ``max_error_ratio`` (if set) or the previous version's by more than ``max_increase``. Metrics that are missing
    (no Prometheus, no traffic, too few requests) never roll back by themselves: the message says what is unknown."""
    if ratios is None:
        return BakeVerdict(False, "error ratio not checked: the operator has no Prometheus (HYBRIDREC_PROMETHEUS_URL)")
    if ratios.unavailable is not None:
        return BakeVerdict(False, f"error ratio unknown: {ratios.unavailable}")
    new, previous = ratios.new, ratios.previous
    both = f"error ratio {_ratio(new)} (new version, {ratios.new_requests:.0f} requests) vs {_ratio(previous)} " \
           f"(previous version, {ratios.previous_requests:.0f} requests)"
    if new is None or ratios.new_requests < MIN_BAKE_REQUESTS:
        return BakeVerdict(False, f"{both}: too few requests to the new version to judge it yet (at least "
                           f"{MIN_BAKE_REQUESTS:.0f})", new, previous)
    if max_error_ratio is not None and new > max_error_ratio:
        return BakeVerdict(True, f"{both}: above maxErrorRatio {max_error_ratio:.4f}", new, previous)
    if previous is None or ratios.previous_requests < MIN_BAKE_REQUESTS:
        bound = f"within maxErrorRatio {max_error_ratio:.4f}" if max_error_ratio is not None else "no maxErrorRatio set"
        return BakeVerdict(False, f"{both}: the previous version's is not known (too little traffic before the "
                           f"promotion), {bound}", new, previous)
    if new > previous + max_increase:
        return BakeVerdict(True, f"{both}: rose by more than maxErrorRatioIncrease {max_increase:.4f}", new, previous)
    return BakeVerdict(False, f"{both}: within the bounds", new, previous)


# ---------------------------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class PodSpan:
    """One pod of a run: when it started and stopped holding its GPUs (None: still running)."""

    start: datetime
    end: datetime | None
    gpus: int


def gpu_hours(pods: Iterable[PodSpan], now: datetime) -> float:
    """GPU-hours the run's pods held: every pod counts, reclaimed ones too (their time was paid for)."""
    total = 0.0
    for pod in pods:
        end = pod.end or now
        total += max(0.0, (end - pod.start).total_seconds()) * pod.gpus / 3600.0
    return total


def run_cost(hours: float, price_per_gpu_hour: float) -> float:
    return round(hours * price_per_gpu_hour, 6)


# ------------------------------------------------------------------------------------- the model's spend

RETIRED_NAMES_KEPT = 100  # TrainingSpend.retired_names max_length


def _counted(run: RecModelTrainingRun) -> bool:
    """A run that was placed (it has a pool): its measured cost counts, zero or not."""
    return run.status is not None and bool(run.status.pool)


def retire(spend: TrainingSpend, run: RecModelTrainingRun) -> TrainingSpend:
    """``spend`` with ``run`` (about to be pruned) moved into the retired part, once (pure): a prune retried after a
    failed delete finds the run's name in ``retired_names`` and adds nothing."""
    if run.name in spend.retired_names or not _counted(run):
        return spend
    assert run.status is not None
    retired = dict(spend.retired_cost)
    retired[run.status.currency] = round(retired.get(run.status.currency, 0.0) + run.status.cost, 6)
    return spend.model_copy(update={
        "retired_cost": retired, "retired_gpu_hours": round(spend.retired_gpu_hours + run.status.gpu_hours, 6),
        "retired_runs": spend.retired_runs + 1, "retired_names": [*spend.retired_names, run.name][-RETIRED_NAMES_KEPT:],
    })


def training_spend(runs: Iterable[RecModelTrainingRun], previous: TrainingSpend | None) -> TrainingSpend:
    """The model's measured training spend (pure): the retired part of ``previous`` plus every existing run that was
    placed and is not already retired, per currency (amounts in different currencies are never added)."""
    base = previous or TrainingSpend()
    cost = dict(base.retired_cost)
    hours, count = base.retired_gpu_hours, base.retired_runs
    for run in runs:
        if not _counted(run) or run.name in base.retired_names:
            continue
        assert run.status is not None
        cost[run.status.currency] = cost.get(run.status.currency, 0.0) + run.status.cost
        hours += run.status.gpu_hours
        count += 1
    return base.model_copy(update={"cost": {c: round(v, 6) for c, v in sorted(cost.items())},
                                   "gpu_hours": round(hours, 6), "runs": count})
