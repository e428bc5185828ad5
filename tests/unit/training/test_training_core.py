"""Retraining decisions (core/training.py) and the training API (api/training.py, api/training_run.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hybridrec_operator.api import training as training_api
from hybridrec_operator.api.models import SENSITIVE, ComputePoolSpec, RecModelDeployment, Sensitivity, Tenancy
from hybridrec_operator.api.training import EvaluationGate
from hybridrec_operator.api.training_run import Evaluation, RecModelTrainingRun, RunPhase, parse_run
from hybridrec_operator.core import training as tr
from hybridrec_operator.core.placement import PoolView

ALL = ["public", "internal", "confidential", "restricted"]


def pool(name: str, tenancy: str = "private", price: float = 1.0, *, spot: bool = False, free: int = 8,
         allowed: list[str] | None = None) -> PoolView:
    if allowed is None:
        allowed = ALL if tenancy == "private" else ["public", "internal"]
    spec = ComputePoolSpec.model_validate({
        "tenancy": tenancy, "provider": "onprem" if tenancy == "private" else "aws",
        "nodeSelector": {"hybridrec.io/pool": name},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "pricing": {"pricePerGpuHour": price, "capacityType": "spot" if spot else "on-demand"},
        "maxGpus": 8, "allowedSensitivity": allowed,
    })
    return PoolView(name=name, spec=spec, free_gpus=free)


def rmd(sensitivity: str = "public", *, training: dict[str, Any] | None = None, burst: bool = False,
        preferred: list[str] | None = None) -> RecModelDeployment:
    return RecModelDeployment.model_validate({
        "metadata": {"name": "movies", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "model": {"uri": "s3://models/movies/v1/", "architecture": "two-tower", "sha256": "a" * 64},
            "dataSensitivity": sensitivity,
            "placement": {"allowPublicBurst": burst, "preferredPools": preferred or []},
            "training": {"schedule": "0 3 * * *", "dataUri": "s3://data/movies/interactions.csv",
                         "outputUri": "s3://models/movies/versions", **(training or {})},
        },
    })


def run(name: str = "movies-202601010300", phase: str | None = None, created: str = "2026-01-01T03:00:00Z") -> RecModelTrainingRun:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
                           "spec": {"model": "movies", "trigger": "schedule"}}
    if phase:
        obj["status"] = {"phase": phase}
    return parse_run(obj)


POOLS = [pool("onprem", "private", 2.0), pool("cloud-spot", "public", 0.5, spot=True), pool("cloud-od", "public", 1.2)]


def inputs() -> tr.JobInputs:
    return tr.JobInputs(data_uri="s3://data/x.csv", output_uri="s3://models/movies/versions/r/", architecture="two-tower",
                        epochs=5, image="img", serving_uri="s3://models/movies/v1/", serving_sha256="a" * 64, version="r")


# ------------------------------------------------------------------------------------------------------ API


def test_sensitivity_order_matches_the_models_enum() -> None:
    assert list(training_api.SENSITIVITY_ORDER) == [s.value for s in Sensitivity]


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * *", "0 0 1 JAN MON", "5 4 * * 0-6"])
def test_cron_accepted(cron: str) -> None:
    assert rmd(training={"schedule": cron}).spec.training.schedule == cron  # type: ignore[union-attr]


@pytest.mark.parametrize("cron", ["every day", "0 3 * *", "61 * * * *", "0 3 * * * * *"])
def test_malformed_cron_refused(cron: str) -> None:
    with pytest.raises(ValidationError, match="cron expression"):
        rmd(training={"schedule": cron})


@pytest.mark.parametrize("model,training,ok", [
    ("confidential", "public", False), ("restricted", "confidential", False), ("internal", "public", False),
    ("public", "restricted", True), ("confidential", "confidential", True), ("internal", None, True),
])
def test_training_input_never_less_strict_than_the_model(model: str, training: str | None, ok: bool) -> None:
    extra = {"dataSensitivity": training} if training else {}
    if ok:
        rmd(model, training=extra)
    else:
        with pytest.raises(ValidationError, match="cannot be less strict"):
            rmd(model, training=extra)


def test_impossible_gate_refused_and_uris_checked() -> None:
    with pytest.raises(ValidationError):
        rmd(training={"gate": {"minHitRateAt10": 1.5}})
    with pytest.raises(ValidationError):
        rmd(training={"dataUri": "/tmp/local.csv"})


def test_run_crd_has_printer_columns_and_immutable_spec() -> None:
    from hybridrec_operator.api.crds import recmodeltrainingrun_crd

    crd = recmodeltrainingrun_crd()
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:3] == ["Model", "Phase", "Pool"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": "self == oldSelf", "message": "a training run's spec is immutable: create a new run"} in spec["x-kubernetes-validations"]
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert any("63" in r["rule"] for r in rules)


# ------------------------------------------------------------------------------------------------ placement


def test_restricted_model_trains_on_the_private_pool_even_when_public_is_cheaper() -> None:
    model = rmd("restricted")
    where = tr.choose_pool(model.spec, POOLS, tr.effective_sensitivity(model.spec))
    assert where.pool is not None and where.pool.name == "onprem"
    assert "public pool" in where.excluded["cloud-spot"] or "does not allow" in where.excluded["cloud-spot"]


def test_public_model_trains_on_the_cheapest_spot_pool() -> None:
    model = rmd("public")
    where = tr.choose_pool(model.spec, POOLS, tr.effective_sensitivity(model.spec))
    assert where.pool is not None and where.pool.name == "cloud-spot"


def test_internal_needs_burst_for_public_pools() -> None:
    assert tr.choose_pool(rmd("internal").spec, POOLS, Sensitivity.INTERNAL).pool.name == "onprem"  # type: ignore[union-attr]
    assert tr.choose_pool(rmd("internal", burst=True).spec, POOLS, Sensitivity.INTERNAL).pool.name == "cloud-spot"  # type: ignore[union-attr]


def test_stricter_training_input_keeps_a_public_model_private() -> None:
    model = rmd("internal", burst=True, training={"dataSensitivity": "restricted"})
    sensitivity = tr.effective_sensitivity(model.spec)
    assert sensitivity == Sensitivity.RESTRICTED
    assert tr.choose_pool(model.spec, POOLS, sensitivity).pool.name == "onprem"  # type: ignore[union-attr]


def test_a_run_asking_for_a_weaker_class_gets_the_models() -> None:
    assert tr.effective_sensitivity(rmd("confidential").spec, Sensitivity.PUBLIC) == Sensitivity.CONFIDENTIAL


def test_no_pool_with_room_is_a_reasoned_refusal() -> None:
    model = rmd("restricted")
    where = tr.choose_pool(model.spec, [pool("onprem", free=0), POOLS[1]], Sensitivity.RESTRICTED)
    assert where.pool is None
    assert "no pool may train restricted data now" in where.message and "no room" in where.message


def test_preferred_pool_first() -> None:
    model = rmd("public", preferred=["cloud-od"])
    assert tr.choose_pool(model.spec, POOLS, Sensitivity.PUBLIC).pool.name == "cloud-od"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------- Job


def test_job_has_retries_failure_policy_affinity_and_owner() -> None:
    model = rmd("restricted")
    owner = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun", "name": "r", "uid": "x", "controller": True}
    job = tr.build_job(model, run(), POOLS[0], Sensitivity.RESTRICTED, inputs(), owner)
    spec = job["spec"]
    assert spec["backoffLimit"] == 3 and spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [tr.EXIT_BAD_INPUT]
    pod = spec["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]
    assert pod["nodeSelector"] == {"hybridrec.io/pool": "onprem"}
    assert spec["template"]["metadata"]["labels"]["hybridrec.io/sensitivity"] == "restricted"
    assert "hybridrec.io/model" not in spec["template"]["metadata"]["labels"]  # not a serving replica
    assert job["metadata"]["ownerReferences"] == [owner]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["HYBRIDREC_TRAIN_OUTPUT_URI"] == "s3://models/movies/versions/r/"
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"


def test_a_run_on_a_dra_pool_claims_its_gpus_from_a_template_owned_by_the_run() -> None:
    view = pool("onprem-dra")
    spec = view.spec.model_copy(update={"gpu": view.spec.gpu.model_validate(
        {"dra": {"deviceClassName": "gpu.example.com", "selectors": ["device.attributes['gpu.example.com'].model == 'A100'"]}})})
    dra_pool = PoolView(name=view.name, spec=spec, free_gpus=8)
    owner = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun", "name": "r", "uid": "x", "controller": True}
    model = rmd("restricted")
    template = tr.build_claim_template(model, run(), dra_pool, Sensitivity.RESTRICTED, owner)
    assert template is not None and template["kind"] == "ResourceClaimTemplate"
    assert template["metadata"]["ownerReferences"] == [owner]  # goes with the run, like its Job
    assert template["metadata"]["labels"]["hybridrec.io/sensitivity"] == "restricted"
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["deviceClassName"] == "gpu.example.com" and exactly["count"] == 1 and exactly["selectors"]
    job = tr.build_job(model, run(), dra_pool, Sensitivity.RESTRICTED, inputs(), owner)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    assert container["resources"]["claims"] == [{"name": "gpu"}]
    assert not any("/" in key for key in container["resources"]["requests"])  # no extended resource to wait for
    assert job["spec"]["template"]["metadata"]["annotations"]  # the device count capacity adds up
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]
    assert tr.build_claim_template(model, run(), POOLS[0], Sensitivity.RESTRICTED) is None  # extended-resource pool


def test_rendering_a_sensitive_run_onto_a_public_pool_raises() -> None:
    with pytest.raises(ValueError, match="may not train"):
        tr.build_job(rmd("confidential"), run(), POOLS[1], Sensitivity.CONFIDENTIAL, inputs())


sensitivities = st.sampled_from(list(Sensitivity))


@st.composite
def pool_views(draw: st.DrawFn) -> list[PoolView]:
    views = []
    for i in range(draw(st.integers(1, 5))):
        tenancy = draw(st.sampled_from(["private", "public"]))
        allowed_choices = ALL if tenancy == "private" else ["public", "internal"]
        allowed = draw(st.lists(st.sampled_from(allowed_choices), min_size=1, max_size=len(allowed_choices), unique=True))
        views.append(pool(f"p{i}", tenancy, draw(st.floats(0, 10)), spot=draw(st.booleans()), free=draw(st.integers(0, 4)),
                          allowed=allowed))
    return views


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(model_class=sensitivities, training_class=st.one_of(st.none(), sensitivities), requested=st.one_of(st.none(), sensitivities),
       burst=st.booleans(), views=pool_views())
def test_property_a_sensitive_run_never_renders_onto_a_public_pool(
    model_class: Sensitivity, training_class: Sensitivity | None, requested: Sensitivity | None, burst: bool,
    views: list[PoolView],
) -> None:
    order = list(Sensitivity)
    if training_class is not None and order.index(training_class) < order.index(model_class):
        training_class = model_class  # the schema refuses a weaker training class
    if model_class in SENSITIVE:
        burst = False  # the schema refuses burst for sensitive models
    model = rmd(model_class.value, burst=burst, training={"dataSensitivity": training_class.value} if training_class else {})
    sensitivity = tr.effective_sensitivity(model.spec, requested)
    assert order.index(sensitivity) >= order.index(model_class)
    where = tr.choose_pool(model.spec, views, sensitivity)
    for view in views:
        if sensitivity in SENSITIVE and view.spec.tenancy == Tenancy.PUBLIC:
            assert where.pool is None or where.pool.name != view.name
            with pytest.raises(ValueError):
                tr.build_job(model, run(), view, sensitivity, inputs())
    if where.pool is not None:
        job = tr.build_job(model, run(), where.pool, sensitivity, inputs())
        terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        values = terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
        if sensitivity in SENSITIVE:
            assert values == ["private"]


# -------------------------------------------------------------------------------------------------- schedule


def test_due_time_collapses_missed_slots_and_names_are_stable() -> None:
    after = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert tr.due_time("0 3 * * *", after, datetime(2026, 1, 1, 2, 59, tzinfo=UTC)) is None
    assert tr.due_time("0 3 * * *", after, datetime(2026, 1, 3, 4, 0, tzinfo=UTC)) == datetime(2026, 1, 3, 3, 0, tzinfo=UTC)
    assert tr.run_name("movies", datetime(2026, 1, 3, 3, 0, tzinfo=UTC)) == "movies-202601030300"


def test_no_overlap_and_pruning() -> None:
    assert tr.has_active_run([run(phase="Running")]) and tr.has_active_run([run()])
    assert not tr.has_active_run([run(phase="Rejected"), run(phase="AwaitingPromotion")])
    runs = [run(f"movies-20260101030{i}", "Promoted", f"2026-01-01T03:0{i}:00Z") for i in range(5)] + [run("movies-x", "Running")]
    assert tr.runs_to_prune(runs, 2) == ["movies-202601010302", "movies-202601010301", "movies-202601010300"]


# ------------------------------------------------------------------------------------------------------- gate


def ev(new: float, serving: float | None = 0.5, popularity: float = 0.3) -> Evaluation:
    return Evaluation(hit_rate_at10=new, ndcg_at10=new / 2, serving_hit_rate_at10=serving, popularity_hit_rate_at10=popularity)


def test_gate() -> None:
    gate = EvaluationGate(min_hit_rate_at10=0.4, min_improvement=0.01)
    assert tr.judge(ev(0.52), gate).passed
    no = tr.judge(ev(0.505), gate)
    assert not no.passed and no.reason == "NoImprovement" and "0.5050" in no.message and "0.5000" in no.message
    assert tr.judge(ev(0.35, serving=None), gate).reason == "BelowMinimum"
    assert tr.judge(ev(0.45, serving=None, popularity=0.46), gate).reason == "BelowPopularity"
    assert tr.judge(ev(0.45, serving=None), gate).passed  # first version: nothing to improve on


# --------------------------------------------------------------------------------------------- state machine


GATE = EvaluationGate(min_improvement=0.0)


def test_state_machine_auto_promotes_and_bakes() -> None:
    t = tr.advance(RunPhase.PENDING, tr.Observation(job_exists=True, job_active=True), GATE, "auto", 60)
    assert t.phase == RunPhase.RUNNING
    t = tr.advance(RunPhase.RUNNING, tr.Observation(job_exists=True, job_succeeded=True, evaluation=ev(0.6)), GATE, "auto", 60)
    assert (t.phase, t.action) == (RunPhase.PROMOTING, "promote")
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=30), GATE, "auto", 60)
    assert t.phase == RunPhase.PROMOTING and t.action is None
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=61), GATE, "auto", 60)
    assert t.phase == RunPhase.PROMOTED


def test_state_machine_rolls_back_a_failing_rollout() -> None:
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(rollout_failed="error ratio 0.20 > 0.05"), GATE, "auto", 60)
    assert (t.phase, t.action) == (RunPhase.ROLLED_BACK, "rollback") and "0.20" in t.message


def test_state_machine_manual_waits_for_the_annotation() -> None:
    t = tr.advance(RunPhase.RUNNING, tr.Observation(job_succeeded=True, evaluation=ev(0.6)), GATE, "manual", 60)
    assert t.phase == RunPhase.AWAITING_PROMOTION and "spec.model" in t.message
    assert tr.advance(t.phase, tr.Observation(), GATE, "manual", 60).phase == RunPhase.AWAITING_PROMOTION
    t = tr.advance(t.phase, tr.Observation(promote_requested=True), GATE, "manual", 60)
    assert (t.phase, t.action) == (RunPhase.PROMOTING, "promote")


def test_state_machine_failures_name_their_cause() -> None:
    t = tr.advance(RunPhase.RUNNING, tr.Observation(job_failed="BackoffLimitExceeded: exit 2 (no such key)"), GATE, "auto", 0)
    assert t.phase == RunPhase.FAILED and "no such key" in t.message
    t = tr.advance(RunPhase.RUNNING, tr.Observation(job_succeeded=True), GATE, "auto", 0)
    assert (t.phase, t.reason) == (RunPhase.FAILED, "ResultUnreadable")
    t = tr.advance(RunPhase.RUNNING, tr.Observation(job_succeeded=True, evaluation=ev(0.4)), GATE, "auto", 0)
    assert t.phase == RunPhase.REJECTED and "serving version keeps serving" in t.message and t.action is None
    assert tr.advance(RunPhase.REJECTED, tr.Observation(promote_requested=True), GATE, "auto", 0).phase == RunPhase.REJECTED


# ------------------------------------------------------------------------------------------------------- cost


def test_measured_cost_counts_every_pod_including_reclaimed_ones() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pods = [tr.PodSpan(t0, t0 + timedelta(minutes=30), 2), tr.PodSpan(t0 + timedelta(minutes=31), None, 2)]
    hours = tr.gpu_hours(pods, t0 + timedelta(minutes=61))
    assert hours == pytest.approx(2.0)
    assert tr.run_cost(hours, 0.5) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------- served version


def test_a_promoted_version_is_served_while_the_spec_still_names_the_one_it_replaced() -> None:
    from hybridrec_operator.core.render import server_env

    model = rmd("public")
    new = {"uri": "s3://models/movies/versions/r/", "architecture": "two-tower", "sha256": "b" * 64, "version": "r"}
    promoted = RecModelDeployment.model_validate({
        **model.model_dump(by_alias=True, mode="json", exclude_none=True),
        "status": {"promotedModel": {"run": "r", "model": new, "replaces": model.spec.model.to_wire()}}})
    env = {e["name"]: e["value"] for e in server_env(promoted, tr_pool_as_computepool())}
    assert (env["HYBRIDREC_MODEL_URI"], env["HYBRIDREC_MODEL_SHA256"]) == (new["uri"], new["sha256"])
    # A person sets another version in the spec: the spec wins, the stale promotion no longer applies.
    spec = promoted.spec.model_copy(update={"model": promoted.spec.model.model_copy(update={"sha256": "c" * 64})})
    moved = promoted.model_copy(update={"spec": spec})
    assert tr.served_model(moved).sha256 == "c" * 64
    assert tr.served_model(model) == model.spec.model  # nothing promoted: spec.model


def tr_pool_as_computepool() -> Any:
    from hybridrec_operator.api.models import ComputePool

    return ComputePool.model_validate({"metadata": {"name": "onprem"}, "spec": POOLS[0].spec.to_wire()})


# ------------------------------------------------------------------------------------------------ bake window


def ratios(new: float | None, previous: float | None, new_requests: float = 100, previous_requests: float = 100) -> tr.ErrorRatios:
    return tr.ErrorRatios(new=new, new_requests=new_requests, previous=previous, previous_requests=previous_requests)


def test_bake_rolls_back_a_rising_error_ratio_and_names_both() -> None:
    verdict = tr.judge_bake(ratios(0.30, 0.001), None, 0.02)
    assert verdict.rollback and "0.3000" in verdict.message and "0.0010" in verdict.message
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=10, bake=verdict),
                   GATE, "auto", 60)
    assert (t.phase, t.reason, t.action) == (RunPhase.ROLLED_BACK, "ErrorRatioRose", "rollback")
    assert "0.3000" in t.message and "0.0010" in t.message and "previous version again" in t.message
    # Rolled back even after the bake time passed: the verdict of the last check wins over the clock.
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=61, bake=verdict),
                   GATE, "auto", 60)
    assert t.phase == RunPhase.ROLLED_BACK


def test_bake_tolerates_a_rise_within_the_increase_and_enforces_max_error_ratio() -> None:
    assert not tr.judge_bake(ratios(0.015, 0.0), None, 0.02).rollback
    assert tr.judge_bake(ratios(0.025, 0.0), None, 0.02).rollback
    # The absolute bound holds whatever the previous version did, even unknown.
    verdict = tr.judge_bake(ratios(0.06, None, previous_requests=0), 0.05, 0.02)
    assert verdict.rollback and "maxErrorRatio 0.0500" in verdict.message
    assert not tr.judge_bake(ratios(0.04, 0.0), 0.05, 0.5).rollback


@pytest.mark.parametrize("reading, says", [
    (None, "no Prometheus"),
    (tr.ErrorRatios(unavailable="Prometheus did not answer (HTTP 503)"), "HTTP 503"),
    (ratios(None, 0.0, new_requests=0), "too few requests"),
    (ratios(1.0, 0.0, new_requests=5), "too few requests"),
    (ratios(0.9, None, previous_requests=0), "previous version's is not known"),
])
def test_missing_metrics_never_roll_back_and_say_so(reading: tr.ErrorRatios | None, says: str) -> None:
    verdict = tr.judge_bake(reading, None, 0.02)
    assert not verdict.rollback and says in verdict.message
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=30, bake=verdict),
                   GATE, "auto", 60)
    assert t.phase == RunPhase.PROMOTING and says in t.message
    t = tr.advance(RunPhase.PROMOTING, tr.Observation(serving_new_version=True, seconds_since_promotion=61, bake=verdict),
                   GATE, "auto", 60)
    assert t.phase == RunPhase.PROMOTED and says in t.message  # promoted, and the status says what was not known


def test_bake_fields_bounded() -> None:
    from pydantic import ValidationError

    from hybridrec_operator.api.training import TrainingPolicy

    base = {"schedule": "0 3 * * *", "dataUri": "s3://data/x.csv", "outputUri": "s3://models/x"}
    policy = TrainingPolicy.model_validate(base)
    assert (policy.bake_seconds, policy.max_error_ratio, policy.max_error_ratio_increase) == (300, None, 0.02)
    for bad in ({"maxErrorRatio": 1.5}, {"maxErrorRatioIncrease": -0.1}, {"bakeSeconds": 90000}):
        with pytest.raises(ValidationError):
            TrainingPolicy.model_validate({**base, **bad})
