"""The demo's retraining: the spec it applies, what it reads back from a run, and the report's Retraining section."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_local.demo import retraining as rt
from hybridrec_local.demo.files import MODELS_FILE, POOLS_FILE
from hybridrec_local.demo.manifests import pool_infos
from hybridrec_local.report import write_report
from hybridrec_local.report_retraining import (
    RETRAINING_FILE,
    RetrainingRecord,
    placement_reason,
    pool_options,
    render_section,
    summary_line,
)
from hybridrec_local.timeline import ModelInfo, ModelSample, Sample, Timeline
from hybridrec_operator.api.models import parse_rmd

OLD_SHA, NEW_SHA = "a" * 64, "b" * 64


def _pools() -> list[Any]:
    return pool_infos([d for d in yaml.safe_load_all(POOLS_FILE.read_text()) if d])


def _trending() -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all(MODELS_FILE.read_text()) if d and d["metadata"]["name"] == rt.MODEL)
    doc = copy.deepcopy(doc)
    doc["spec"]["model"].update({"uri": "s3://hybridrec-demo/matrix-factorization/", "sha256": OLD_SHA, "version": "v1"})
    return rt.with_training([doc], rt.MODEL, rt.training_spec("hybridrec-demo", rt.MODEL, 4))[0]


def _run(phase: str = "Promoted") -> dict[str, Any]:
    """A run's object as the operator leaves it after an automatic promotion."""
    return {
        "metadata": {"name": "trending-retrain", "namespace": "default"},
        "spec": {"model": "trending", "trigger": "manual", "dataSensitivity": "public", "epochs": 4},
        "status": {
            "phase": phase, "message": "the new version served 5s", "pool": "onprem-t4", "tenancy": "private",
            "jobName": "trending-retrain", "startTime": "2030-01-01T00:00:00Z", "gpuHours": 0.01, "cost": 0.0035,
            "currency": "USD", "promotedAt": "2030-01-01T00:00:40Z",
            "evaluation": {"hitRateAt10": 0.6, "ndcgAt10": 0.34, "servingHitRateAt10": 0.42, "servingNdcgAt10": 0.23,
                           "popularityHitRateAt10": 0.40, "popularityNdcgAt10": 0.22},
            "artifact": {"uri": "s3://hybridrec-demo/trending/versions/trending-retrain/", "architecture": "matrix-factorization",
                         "sha256": NEW_SHA, "version": "trending-retrain"},
            "previous": {"uri": "s3://hybridrec-demo/matrix-factorization/", "architecture": "matrix-factorization",
                         "sha256": OLD_SHA, "version": "v1"},
            "conditions": [
                {"type": "Scheduled", "status": "True", "reason": "PoolChosen",
                 "message": "training public data on private pool onprem-t4 at 0.35 USD/GPU-hour"},
                {"type": "GatePassed", "status": "True", "reason": "GatePassed",
                 "message": "new HR@10 0.6000, serving HR@10 0.4200, popularity HR@10 0.4000: passes the gate"},
            ],
        },
    }


def _filled() -> RetrainingRecord:
    record = RetrainingRecord(model=rt.MODEL, namespace="default", run="trending-retrain", data_rows=100000,
                              serving_epochs=1)
    rmd = _trending()
    rmd["status"] = {"trainingSpend": {"cost": {"USD": 0.0035}, "gpuHours": 0.01, "runs": 1}}
    job = {"status": {"startTime": "2030-01-01T00:00:01Z", "completionTime": "2030-01-01T00:00:31Z"}}
    rt.fill_from_cluster(record, _run(), rmd, job)
    return record


def test_the_demo_training_spec_is_a_valid_auto_promoting_policy_with_a_suspended_schedule() -> None:
    training = parse_rmd(_trending()).spec.training
    assert training is not None
    assert training.promotion == "auto" and training.suspend
    assert training.data_uri == f"s3://hybridrec-demo/{rt.DATA_KEY}" and training.epochs == 4
    assert training.gate.min_improvement > 0 and training.gate.beat_popularity
    # The run trains longer than the serving version did, so it has something to improve on.
    assert all(rt.retrain_epochs(e) > e for e in (1, 4, 20))


def test_fill_from_cluster_reads_the_run_its_job_and_the_roi_effect() -> None:
    r = _filled()
    assert (r.phase, r.pool, r.tenancy, r.sensitivity) == ("Promoted", "onprem-t4", "private", "public")
    assert r.new is not None and r.serving is not None and r.popularity is not None
    assert (r.new.hr10, r.serving.hr10, r.popularity.ndcg10) == (0.6, 0.42, 0.22)
    assert r.gate_passed and r.gate_reason == "GatePassed" and r.gate["minImprovement"] == rt.GATE["minImprovement"]
    assert (r.previous_sha256, r.new_sha256) == (OLD_SHA, NEW_SHA)
    assert r.duration_s == pytest.approx(30.0)
    assert r.economics_currency == "USD" and r.training_first == pytest.approx(480.0) and r.training_measured == pytest.approx(0.0035)
    # benefit 150 / (480 + 10 + 100) before; the measured run adds to the cost, so the ROI falls.
    assert r.roi_before == pytest.approx(150 / 590)
    assert r.roi_after == pytest.approx(150 / 590.0035) and r.roi_after < r.roi_before


def test_placement_reason_lists_the_pools_the_class_may_use_by_the_one_rule() -> None:
    r = _filled()
    options = pool_options(r, _pools())
    assert [o.name for o in options if o.admitted] == ["onprem-t4", "onprem-a100", "aws-spot-l4", "gcp-ondemand-a100"]
    assert "cheapest" in placement_reason(r, _pools())
    r.sensitivity, r.pool = "restricted", "onprem-a100"
    refused = {o.name: o.reason for o in pool_options(r, _pools()) if not o.admitted}
    assert refused["aws-spot-l4"] and refused["onprem-t4"] == "pool does not allow restricted data"
    r.sensitivity, r.pool = "public", "onprem-a100"  # the cheaper onprem-t4 was full
    assert "onprem-t4 (0.35) had no free GPU when" in placement_reason(r, _pools())
    r.pool = "gcp-ondemand-a100"
    assert "aws-spot-l4 (1.2) had no free GPU or cost more with its expected reclaim cost" in placement_reason(r, _pools())


def test_the_section_shows_the_numbers_and_escapes_the_operators_messages() -> None:
    r = _filled()
    r.message = "<script>x</script>"
    html = render_section(r, _pools())
    for text in ("0.6000", "0.4200", "0.4000", OLD_SHA, NEW_SHA, "0.003500 USD", "onprem-t4", "Promoted", "passed"):
        assert text in html, text
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "promoted" in summary_line(r) and NEW_SHA[:12] in summary_line(r)
    r.created_sim_hour = 4.0
    r.note_phase("Running", 1.0, 4.4)
    r.note_phase("Running", 3.0, 5.2)  # the same phase again is not a new entry
    r.note_phase("Promoting", 70.0, 29.0)  # after the simulated day
    html = render_section(r, _pools())
    assert [p.phase for p in r.phases] == ["Running", "Promoting"] and r.promoted_sim_hour == 29.0
    assert "Running at\n04:24" in html and "Promoting at\nthe end of the day" in html and "after the simulated day" in html
    skipped = RetrainingRecord(model="trending", namespace="default", skipped="--no-train")
    assert "No retraining run" in render_section(skipped, _pools())


def test_write_report_writes_the_section_and_round_trips_the_record(tmp_path: Path) -> None:
    models = [ModelInfo("trending", "default", "public", 100.0)]
    samples = [Sample(t=float(i), sim_hour=4.0 + i, models={"trending": ModelSample(
        offered_rps=1, served_rps=1, p95_ms=10.0, replicas_by_pool={"onprem-t4": 1}, cost_per_hour=0.35,
        cost_by_pool={"onprem-t4": 0.35})}) for i in range(3)]
    tl = Timeline(started_at="2030-01-01T00:00:00+00:00", real_seconds=30.0, start_hour=4.0, currency="USD",
                  pools=_pools(), models=models, samples=samples)
    r = _filled()
    html = write_report(tl, tmp_path, r).read_text()
    assert "<h2>Retraining</h2>" in html and NEW_SHA in html
    assert RetrainingRecord.from_json((tmp_path / RETRAINING_FILE).read_text()) == r
