"""One retraining of one sample model during the demo: train -> evaluate -> gate -> promote -> serve, for real.

The demo gives ``trending`` (public data, with lifecycle economics, so the training spend shows in its ROI) a
``spec.training`` and, as the models are deployed (just before the simulated day starts), creates a
``RecModelTrainingRun`` by hand, as a person can (the schedule is suspended so no run of its own joins in). From there everything is the
operator's and the cluster's: the run's Job is placed on a pool its data class may use, cheapest first; the pod
runner runs the project's trainer (``python -m hybridrec_server.training_job``) as the pod's container on this
machine, on MovieLens 100K read from the demo's S3 store; the operator reads the evaluation, gates it against the
serving version and the popularity baseline and, with ``promotion: auto``, rolls the new version out
make-before-break; the servers load it (verifying its manifest sha256). :class:`Retraining` starts the run, watches
its phases during the day, waits for its outcome and reads what the report shows
(:class:`~hybridrec_local.report_retraining.RetrainingRecord`).

The serving version was trained for ``--epochs`` at the start of the demo; the run trains for
:func:`retrain_epochs` on the same interactions, so it is the better version (the gate still decides).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.report_retraining import RetrainingRecord, Scores
from hybridrec_local.summary import clock

MODEL = "trending"  # public data (may train anywhere, cheapest first) with spec.economics (its ROI shows the spend)
DATA_KEY = "data/movielens-100k.inter"
RUNS = "/apis/hybridrec.io/v1alpha1/namespaces/{ns}/recmodeltrainingruns"
FINISHED = frozenset({"Promoted", "Rejected", "Failed", "RolledBack", "AwaitingPromotion"})
GATE = {"minHitRateAt10": 0.3, "minImprovement": 0.01, "beatPopularity": True}


def retrain_epochs(serving_epochs: int) -> int:
    """Epochs of the demo's run: twice the serving version's (MovieLens 100K's HR@10 still climbs there: matrix
    factorisation scores 0.38 after one epoch, 0.43 after two against popularity's 0.40, 0.63 after ten). No more:
    on a busy two-core machine an epoch takes up to ~40 s while the day's traffic runs, and the demo waits for it."""
    return min(50, 2 * serving_epochs)


def run_name(model: str = MODEL) -> str:
    return f"{model}-retrain"


def training_spec(bucket: str, model: str, epochs: int) -> dict[str, Any]:
    """The model's ``spec.training`` as the demo applies it (pure)."""
    return {
        # The nightly schedule a real deployment keeps; suspended here so only the demo's own run trains.
        "schedule": "0 3 * * *",
        "suspend": True,
        "dataUri": f"s3://{bucket}/{DATA_KEY}",
        "outputUri": f"s3://{bucket}/{model}/versions",
        "epochs": epochs,
        "resources": {"gpus": 1, "cpu": "500m", "memory": "1Gi"},
        "gate": dict(GATE),
        "promotion": "auto",
        # The day is compressed ~360x: a few real seconds of bake are an hour of simulated time.
        "bakeSeconds": 5,
        "backoffLimit": 1,
        "activeDeadlineSeconds": 900,
    }


def with_training(models: Sequence[Mapping[str, Any]], model: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rendered models with ``spec.training`` set on ``model`` (pure)."""
    out = []
    for doc in models:
        doc = copy.deepcopy(dict(doc))
        if doc.get("metadata", {}).get("name") == model:
            doc.setdefault("spec", {})["training"] = dict(spec)
        out.append(doc)
    return out


def run_manifest(name: str, namespace: str, model: str) -> dict[str, Any]:
    """A manual run: data, output, class and baseline default to the model's (the operator fills them)."""
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelTrainingRun",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"model": model, "trigger": "manual"}}


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def _scores(evaluation: Mapping[str, Any], hr: str, ndcg: str) -> Scores | None:
    if evaluation.get(hr) is None:
        return None
    return Scores(float(evaluation[hr]), float(evaluation.get(ndcg) or 0.0))


def _seconds(start: str, end: str) -> float | None:
    import datetime as dt

    try:
        a = dt.datetime.fromisoformat(start)
        b = dt.datetime.fromisoformat(end)
    except (AttributeError, ValueError):
        return None
    return (b - a).total_seconds()


def fill_from_cluster(record: RetrainingRecord, run: Mapping[str, Any], rmd: Mapping[str, Any],
                      job: Mapping[str, Any] | None) -> None:
    """Copy what the run, its model and its Job say into ``record`` (pure: objects in, fields out)."""
    from hybridrec_operator.api.models import Sensitivity, parse_rmd
    from hybridrec_operator.core.costing import lifecycle, model_lifecycle
    from hybridrec_operator.core.training import effective_sensitivity

    status = run.get("status") or {}
    spec = run.get("spec") or {}
    parsed = parse_rmd(dict(rmd))
    requested = spec.get("dataSensitivity")
    record.sensitivity = effective_sensitivity(parsed.spec, Sensitivity(requested) if requested else None).value
    record.allow_public_burst = parsed.spec.placement.allow_public_burst
    training = parsed.spec.training
    if training is not None:
        record.data_uri = spec.get("dataUri") or training.data_uri
        record.epochs = int(spec.get("epochs") or training.epochs)
        record.gate = training.gate.model_dump(by_alias=True)
        record.promotion = training.promotion
    record.pool, record.tenancy = status.get("pool", ""), status.get("tenancy") or ""
    record.placement_message = _condition(run, "Scheduled").get("message", "")
    record.phase, record.message = status.get("phase", ""), status.get("message", "")
    record.gpu_hours, record.cost = float(status.get("gpuHours") or 0.0), float(status.get("cost") or 0.0)
    record.currency = status.get("currency") or record.currency
    evaluation = status.get("evaluation") or {}
    record.new = _scores(evaluation, "hitRateAt10", "ndcgAt10")
    record.serving = _scores(evaluation, "servingHitRateAt10", "servingNdcgAt10")
    record.popularity = _scores(evaluation, "popularityHitRateAt10", "popularityNdcgAt10")
    gate = _condition(run, "GatePassed")
    if gate:
        record.gate_passed = gate.get("status") == "True"
        record.gate_reason, record.gate_message = gate.get("reason", ""), gate.get("message", "")
    previous = status.get("previous") or spec.get("baseline") or {}
    record.previous_sha256, record.previous_version = previous.get("sha256") or "", previous.get("version") or ""
    artifact = status.get("artifact") or {}
    record.new_uri, record.new_sha256 = artifact.get("uri", ""), artifact.get("sha256") or ""
    record.new_version = artifact.get("version", "")
    record.promoted_at = status.get("promotedAt") or ""
    jstatus = (job or {}).get("status") or {}
    record.job_start = jstatus.get("startTime") or status.get("startTime") or ""
    record.job_completion = jstatus.get("completionTime") or ""
    record.duration_s = _seconds(record.job_start, record.job_completion) if record.job_completion else None
    economics = parsed.spec.economics
    if economics is not None:
        first = lifecycle(economics)
        now = model_lifecycle(parsed)
        assert now is not None
        record.economics_currency = economics.currency
        record.training_first = float(first.training.amount)
        record.training_measured = float(now.training_measured.amount) if now.training_measured is not None else 0.0
        record.roi_before = float(first.roi) if first.roi is not None else None
        record.roi_after = float(now.roi) if now.roi is not None else None


@dataclass
class Retraining:
    """The demo's one retraining run of :data:`MODEL`: start it, watch it, wait for it, read it."""

    cluster: LocalCluster
    namespace: str
    record: RetrainingRecord
    servers: Callable[[], dict[str, list[str]]]  # the pod runner's ready servers by "<namespace>/<model>"

    @property
    def name(self) -> str:
        return self.record.run

    def upload_data(self, s3_url: str, bucket: str) -> int:
        """MovieLens 100K (the RecBole file the serving version was trained on) as the run's input; its row count."""
        from hybridrec_server.artifacts import s3_client
        from hybridrec_server.data import movielens_100k_path

        body = movielens_100k_path().read_bytes()
        s3_client(s3_url).put_object(Bucket=bucket, Key=DATA_KEY, Body=body)
        self.record.data_rows = max(0, body.count(b"\n") - 1)  # minus the header line
        return self.record.data_rows

    def start(self, sim_hour: float) -> None:
        self.cluster.kubectl("create", "-f", "-", input=json.dumps(run_manifest(self.name, self.namespace, MODEL)))
        self.record.created_sim_hour = sim_hour
        self.record.trigger = (f"The demo created {self.name} by hand (a RecModelTrainingRun, trigger manual) as the "
                               f"models were deployed, just before the simulated day started at {clock(sim_hour)}.")
        self.record.note_phase("Created", 0.0, sim_hour)

    def run_object(self) -> dict[str, Any]:
        return self.cluster.api_get(f"{RUNS.format(ns=self.namespace)}/{self.name}")

    def observe(self, t: float, sim_hour: float) -> str:
        """Note the run's phase at this sample (best effort: a missed read is a missed sample); the phase seen."""
        try:
            phase = str((self.run_object().get("status") or {}).get("phase") or "")
        except (OSError, ValueError, KeyError):
            return ""
        self.record.note_phase(phase, t, sim_hour)
        return phase

    def served_shas(self) -> list[str]:
        """Manifest sha256 each ready server of the model reports on its root endpoint."""
        import httpx

        shas = []
        for url in self.servers().get(f"{self.namespace}/{MODEL}", []):
            try:
                shas.append(str(httpx.get(f"{url}/", timeout=2.0, trust_env=False).json()["manifest_sha256"]))
            except (httpx.HTTPError, ValueError, KeyError):
                shas.append("unreachable")
        return sorted(shas)

    def answered_version(self) -> str:
        """The version a ready server names in a real recommendation (MovieLens user 1)."""
        import httpx

        for url in self.servers().get(f"{self.namespace}/{MODEL}", []):
            try:
                answer = httpx.post(f"{url}/v1/recommend", json={"user_id": "1", "k": 5}, timeout=3.0, trust_env=False)
                if answer.status_code == 200:
                    return str(answer.json().get("version", ""))
            except (httpx.HTTPError, ValueError):
                continue
        return ""

    def collect(self) -> RetrainingRecord:
        """Read the run, its model and its Job into the record (plus ``kubectl get rmtr -A``)."""
        run = self.run_object()
        rmd = self.cluster.api_get(f"/apis/hybridrec.io/v1alpha1/namespaces/{self.namespace}/recmodeldeployments/{MODEL}")
        job_name = (run.get("status") or {}).get("jobName") or self.name
        try:
            job: dict[str, Any] | None = self.cluster.api_get(f"/apis/batch/v1/namespaces/{self.namespace}/jobs/{job_name}")
        except (OSError, ValueError):
            job = None
        fill_from_cluster(self.record, run, rmd, job)
        self.record.served_sha256 = self.served_shas()
        self.record.answered_version = self.answered_version()
        out = self.cluster.kubectl("get", "rmtr", "-A", check=False)
        self.record.kubectl_get_rmtr = (out.stdout or out.stderr).rstrip()
        return self.record
