"""Retraining I/O: schedule runs, create their Jobs, read their results, gate, keep the run's status and cost.

Decisions are ``core/training.py``'s; this module reads the cluster, asks, and writes. One pass
(``TrainingController.sync``) lists the models with ``spec.training``, their runs, the pools, and for each active run
its Job and pods; the operator runs a pass every ``interval`` seconds and at once when a run or a training Job
changes (handlers.py pokes it). Only the leader acts.

What it writes, and nothing else:

* ``RecModelTrainingRun`` objects for due schedules (owned by their model, labelled managed-by hybridrec), their
  status, and deletes of finished runs beyond ``historyLimit`` that it created;
* one ``batch/v1`` Job per run (owned by the run: deleting a run deletes its Job and pods); a Job of the run's name
  that hybridrec did not create is never touched: the run fails with ``JobNameTaken``;
* events on the run for every transition and failure.

It never edits a model's spec (its RBAC cannot). ``promotion: manual``: a version that passes the gate waits in
``AwaitingPromotion`` and the run's message says the one command that promotes it (a spec.model patch).
``promotion: auto``: it writes the model's ``status.promotedModel``, which the serving reconcile renders over
spec.model (``core/training.served_model``; the Deployments roll with maxUnavailable 0, make-before-break). Either
way, once the servers run the version the run is Promoting; with every Deployment rolled out and the model Ready
through ``bakeSeconds`` it is Promoted; not rolled out ``max(bakeSeconds, 120 s)`` after the promotion, or its
error ratio risen within ``bakeSeconds``, it is RolledBack (status.promotedModel restored to what served before).
The promotion and bake reads and writes are ``controller/training_promotion.py``'s; what a Job and its pods say is
``controller/training_jobs.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from hybridrec_operator.api.models import (
    API_VERSION,
    RecModelDeployment,
    TrainingSpend,
    parse_pool,
    parse_rmd,
)
from hybridrec_operator.api.training_run import (
    TERMINAL_PHASES,
    RecModelTrainingRun,
    RunPhase,
    parse_run,
)
from hybridrec_operator.controller import metrics as m
from hybridrec_operator.controller.kube import Kube, api_message
from hybridrec_operator.controller.observe import HttpPromClient, PromClient
from hybridrec_operator.controller.training_jobs import (
    JobView,
    owned_by,
    owner_ref,
    parse_time,
)
from hybridrec_operator.controller.training_promotion import Promotion, bake_status
from hybridrec_operator.core import training as core
from hybridrec_operator.core.conditions import set_condition, timestamp
from hybridrec_operator.core.cost_types import ControllerConfig
from hybridrec_operator.core.placement import PoolView

log = logging.getLogger("hybridrec.training")

RUNS = "/apis/hybridrec.io/v1alpha1"
MANAGED_BY = "app.kubernetes.io/managed-by"
SCHEDULED_ANNOTATION = "hybridrec.io/scheduled-at"


class TrainingController:
    """One pass over every model with ``spec.training`` and every run. Synchronous (call it in an executor)."""

    def __init__(self, kube: Kube, *, extra_env: Mapping[str, str] | None = None, identity: str = "",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), namespaces: Iterable[str] = (),
                 prom: PromClient | None = None) -> None:
        self.kube = kube
        # Promotion and bake (controller/training_promotion.py); without Prometheus the error ratio is not checked.
        self.promotion = Promotion(kube, prom)
        self.extra_env = dict(extra_env or {})
        self.identity = identity
        self.clock = clock
        self.namespaces = list(namespaces)
        self.cost_labels: set[tuple[str, ...]] = set()

    # ------------------------------------------------------------------------------------------- reading
    def _list(self, prefix: str, plural: str, selector: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else None
        namespaces = [namespace] if namespace else (self.namespaces or [None])
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            path = f"{prefix}/namespaces/{ns}/{plural}" if ns else f"{prefix}/{plural}"
            body = self.kube.request("GET", path, query=query)
            kind = body.get("kind", "").removesuffix("List")
            items += [{"apiVersion": body.get("apiVersion"), "kind": kind, **i} for i in body.get("items", [])]
        return items

    def pool_views(self) -> list[PoolView]:
        views = []
        for obj in self.kube.request("GET", f"{RUNS}/computepools").get("items", []):
            try:
                pool = parse_pool(obj)
            except ValidationError:
                continue
            status = obj.get("status") or {}
            free = status.get("freeGpus") if "freeGpus" in status else pool.spec.max_gpus
            views.append(PoolView(pool.name, pool.spec, int(free)))
        return views

    def _job_view(self, namespace: str, name: str) -> JobView:
        try:
            job = self.kube.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
            return JobView(None)
        pods = self._list("/api/v1", "pods", f"{core.RUN_LABEL}={name}", namespace)
        return JobView(job, pods)

    # ------------------------------------------------------------------------------------------- writing
    def _event(self, obj: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
        try:
            self.kube.post_event(obj, reason=reason, message=message, type_="Warning" if warning else "Normal",
                                 instance=self.identity)
        except ApiException as exc:  # an event is best effort; the condition carries the same sentence
            log.warning("event %s on %s not posted: %s", reason, obj["metadata"]["name"], api_message(exc))

    def _patch_status(self, obj: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self.kube.request("PATCH", f"{RUNS}/namespaces/{meta['namespace']}/recmodeltrainingruns/{meta['name']}/status",
                          body={"status": status}, content_type="application/merge-patch+json")

    # ------------------------------------------------------------------------------------------- the pass
    def sync(self) -> None:
        now = self.clock()
        rmds = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self._list(RUNS, "recmodeldeployments")}
        runs = self._list(RUNS, "recmodeltrainingruns")
        pools = self.pool_views()
        by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for obj in runs:
            by_model.setdefault((obj["metadata"]["namespace"], (obj.get("spec") or {}).get("model", "")), []).append(obj)
        parsed: dict[tuple[str, str], RecModelDeployment] = {}
        spends: dict[tuple[str, str], TrainingSpend | None] = {}
        for key, obj in rmds.items():
            try:
                rmd = parse_rmd(obj)
            except ValidationError:
                continue  # the serving reconcile reports an unusable model
            parsed[key] = rmd
            spends[key] = rmd.status.training_spend if rmd.status is not None else None
            if rmd.spec.training is not None:
                spends[key] = self.schedule(obj, rmd, by_model.get(key, []), now, spends[key])
        for obj in runs:
            key = (obj["metadata"]["namespace"], (obj.get("spec") or {}).get("model", ""))
            try:
                self.reconcile_run(obj, rmds.get(key), pools, now)
            except ApiException as exc:
                log.warning("training run %s/%s: %s", key[0], obj["metadata"]["name"], api_message(exc))
        for key, rmd in parsed.items():
            if key in by_model or spends[key] is not None:
                try:
                    self._update_spend(rmd, by_model.get(key, []), spends[key])
                except ApiException as exc:
                    log.warning("training spend of %s/%s: %s", key[0], key[1], api_message(exc))
        self.forget_missing({(o["metadata"]["namespace"], o["metadata"]["name"]) for o in runs})

    def _update_spend(self, rmd: RecModelDeployment, run_objs: list[dict[str, Any]], spend: TrainingSpend | None) -> None:
        """The model's status.trainingSpend: every placed run's measured cost, pruned runs included (the lifecycle ROI
        reads it). ``run_objs`` were read at the start of the pass: a cost measured during it counts at the next."""
        runs = []
        for obj in run_objs:
            try:
                runs.append(parse_run(obj))
            except ValidationError:
                continue
        new = core.training_spend(runs, spend)
        if new != spend:
            self._set_model_status(rmd, {"trainingSpend": new.to_wire()})

    def schedule(self, obj: Mapping[str, Any], rmd: RecModelDeployment, run_objs: list[dict[str, Any]], now: datetime,
                 spend: TrainingSpend | None = None) -> TrainingSpend | None:
        """Create the run of the latest due fire time, unless a run is active (no overlap); prune old runs, their
        measured cost kept in the model's status.trainingSpend first. Returns the model's spend after pruning."""
        training = rmd.spec.training
        assert training is not None
        runs = [parse_run(r) for r in run_objs]
        ours = [r for r in run_objs if ((r["metadata"].get("labels") or {}).get(MANAGED_BY) == "hybridrec" and owned_by(r, obj))]
        ours_parsed = {r.name: r for r in (parse_run(o) for o in ours)}
        for name in core.runs_to_prune(list(ours_parsed.values()), training.history_limit):
            uid = next(r["metadata"]["uid"] for r in ours if r["metadata"]["name"] == name)
            retired = core.retire(spend or TrainingSpend(), ours_parsed[name])
            if retired != (spend or TrainingSpend()):
                # Before the delete: a run deleted with its cost not yet kept would vanish from the lifecycle cost.
                self._set_model_status(rmd, {"trainingSpend": retired.to_wire()})
                spend = retired
            self.kube.request("DELETE", f"{RUNS}/namespaces/{rmd.namespace}/recmodeltrainingruns/{name}",
                              body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                                    "preconditions": {"uid": uid}})
        if training.suspend:
            return spend
        stamps = [parse_time((r["metadata"].get("annotations") or {}).get(SCHEDULED_ANNOTATION)) for r in run_objs]
        after = max([s for s in stamps if s] or [parse_time(obj["metadata"].get("creationTimestamp")) or now])
        when = core.due_time(training.schedule, after, now)
        if when is None:
            return spend
        if not core.has_active_run(runs):  # concurrencyPolicy Forbid: else this fire time is skipped
            self.create_run(obj, rmd, "schedule", when)
        return spend

    def create_run(self, obj: Mapping[str, Any], rmd: RecModelDeployment, trigger: str, when: datetime) -> str | None:
        name = core.run_name(rmd.name, when)
        training = rmd.spec.training
        assert training is not None
        body = {
            "apiVersion": API_VERSION, "kind": "RecModelTrainingRun",
            "metadata": {"name": name, "namespace": rmd.namespace, "ownerReferences": [owner_ref(obj)],
                         "labels": {MANAGED_BY: "hybridrec", core.TRAINED_MODEL_LABEL: rmd.name},
                         "annotations": {SCHEDULED_ANNOTATION: timestamp(when)}},
            "spec": {"model": rmd.name, "trigger": trigger, "dataUri": training.data_uri, "outputUri": training.output_uri,
                     "dataSensitivity": core.effective_sensitivity(rmd.spec).value,
                     "architecture": rmd.spec.model.architecture.value, "epochs": training.epochs,
                     "baseline": core.served_model(rmd).to_wire()},
        }
        try:
            created = self.kube.request("POST", f"{RUNS}/namespaces/{rmd.namespace}/recmodeltrainingruns", body=body)
        except ApiException as exc:
            if exc.status == 409:
                return None  # this fire time has its run already
            raise
        self._event(obj, "TrainingScheduled", f"training run {name} created for the schedule '{training.schedule}'")
        return str(created["metadata"]["name"])

    # --------------------------------------------------------------------------------------- one run
    def reconcile_run(self, obj: dict[str, Any], rmd_obj: Mapping[str, Any] | None, pools: list[PoolView], now: datetime) -> None:
        run = parse_run(obj)
        status = run.status.model_copy() if run.status else None
        phase = status.phase if status else RunPhase.PENDING
        if phase in TERMINAL_PHASES:
            self._publish_cost(run)
            return
        if rmd_obj is None:
            return self._finish(obj, RunPhase.FAILED, "ModelNotFound", f"RecModelDeployment {run.spec.model} does not exist", now)
        try:
            rmd = parse_rmd(dict(rmd_obj))
        except ValidationError as exc:
            return self._finish(obj, RunPhase.FAILED, "ModelInvalid", f"the model's spec is invalid: {exc.errors()[0]['msg']}", now)
        if rmd.spec.training is None and run.spec.trigger == "schedule":
            return self._finish(obj, RunPhase.FAILED, "TrainingRemoved", "the model no longer has spec.training", now)
        job_name = status.job_name if status else ""
        if not job_name:
            return self._start(obj, run, rmd, pools, now)
        view = self._job_view(run.namespace, job_name)
        if view.job is None:
            return self._finish(obj, RunPhase.FAILED, "JobDeleted", f"Job {job_name} was deleted before the run finished", now)
        if not owned_by(view.job, obj):
            return self._finish(obj, RunPhase.FAILED, "JobNameTaken",
                                f"a Job named {job_name} exists that hybridrec did not create for this run; it is left alone", now)
        pool = next((p for p in pools if p.name == status.pool), None) if status else None
        if pool is None and phase in (RunPhase.PENDING, RunPhase.RUNNING) and not any(
                (p.get("status") or {}).get("phase") == "Running" for p in view.pods):
            # The pool vanished under a run that is not training now: its pods can never be placed again.
            self._delete_job(view.job)
            return self._finish(obj, RunPhase.FAILED, "PoolGone", f"ComputePool {status.pool if status else ''} was "
                                "deleted before the run could train; the next scheduled run is placed anew", now)
        self._advance(obj, run, rmd, view, pool, now)

    def _start(self, obj: dict[str, Any], run: RecModelTrainingRun, rmd: RecModelDeployment, pools: list[PoolView], now: datetime) -> None:
        sensitivity = core.effective_sensitivity(rmd.spec, run.spec.data_sensitivity)
        where = core.choose_pool(rmd.spec, pools, sensitivity)
        training = rmd.spec.training
        if where.pool is None:
            conditions = set_condition(_conditions(obj), "Scheduled", False,
                                       "NoAdmissiblePool", where.message, None, now)
            if _condition(obj, "Scheduled").get("message") != where.message:
                self._event(obj, "NoAdmissiblePool", where.message, warning=True)
            self._patch_status(obj, {"phase": RunPhase.PENDING.value, "message": where.message, "conditions": conditions})
            return
        pool = where.pool
        data_uri = run.spec.data_uri or (training.data_uri if training else None)
        output_base = run.spec.output_uri or (training.output_uri if training else None)
        if not data_uri or not output_base:
            return self._finish(obj, RunPhase.FAILED, "NoData", "neither the run nor the model's spec.training names "
                                "dataUri and outputUri", now)
        inputs = core.JobInputs(
            data_uri=data_uri, output_uri=core.run_output_uri(output_base, run.name),
            architecture=(run.spec.architecture or rmd.spec.model.architecture).value,
            epochs=run.spec.epochs or (training.epochs if training else 10), image=rmd.spec.serving.image,
            serving_uri=(run.spec.baseline or core.served_model(rmd)).uri,
            serving_sha256=(run.spec.baseline or core.served_model(rmd)).sha256,
            version=run.name, extra_env=self.extra_env)
        job = core.build_job(rmd, run, pool, sensitivity, inputs, owner_ref(obj))
        claim = core.build_claim_template(rmd, run, pool, sensitivity, owner_ref(obj))
        try:
            if claim is not None:  # a DRA pool: the pods claim their GPUs from it, so it comes first
                try:
                    self.kube.request("POST", f"/apis/resource.k8s.io/v1/namespaces/{run.namespace}/"
                                      "resourceclaimtemplates", body=claim)
                except ApiException as exc:
                    if exc.status != 409:  # 409: created by a pass whose status write was lost
                        raise
            self.kube.request("POST", f"/apis/batch/v1/namespaces/{run.namespace}/jobs", body=job)
        except ApiException as exc:
            if exc.status != 409:
                message = f"the Job could not be created: {api_message(exc)}"
                self._event(obj, "JobCreateFailed", message, warning=True)
                self._patch_status(obj, {"message": message, "conditions": set_condition(
                    _conditions(obj), "Scheduled", False, "JobCreateFailed", message, None, now)})
                return
            # 409: ours from a pass whose status write was lost, or someone else's: the next pass tells them apart.
        self._event(obj, "TrainingStarted", where.message)
        self._patch_status(obj, {
            "phase": RunPhase.PENDING.value, "message": where.message, "pool": pool.name, "tenancy": pool.spec.tenancy.value,
            "jobName": run.name, "startTime": timestamp(now), "currency": pool.spec.pricing.currency,
            "previous": (run.spec.baseline or core.served_model(rmd)).to_wire(),
            "conditions": set_condition(_conditions(obj), "Scheduled", True, "PoolChosen", where.message, None, now)})

    def _advance(self, obj: dict[str, Any], run: RecModelTrainingRun, rmd: RecModelDeployment, view: JobView,
                 pool: PoolView | None, now: datetime) -> None:
        status = run.status
        assert status is not None
        training = rmd.spec.training
        gate = training.gate if training else core.EvaluationGate()
        obs, bake = view.observation(), None
        if status.phase in (RunPhase.AWAITING_PROMOTION, RunPhase.PROMOTING) and status.artifact is not None:
            # Promoted: the servers run this run's version, by a person's spec.model or by status.promotedModel (auto).
            obs, bake = self.promotion.observe(rmd, status, obs, now)
        transition = core.advance(status.phase, obs, gate, training.promotion if training else "manual",
                                  training.bake_seconds if training else 0)
        patch: dict[str, Any] = {}
        artifact = status.artifact.to_wire() if status.artifact else None
        if obs.evaluation is not None and status.evaluation is None:
            result = view.result() or {}
            patch["evaluation"] = obs.evaluation.to_wire()
            artifact = {"uri": result.get("uri", ""), "architecture": result.get("architecture", rmd.spec.model.architecture.value),
                        "sha256": result.get("sha256"), "version": str(result.get("version", run.name))}
            patch["artifact"] = {k: v for k, v in artifact.items() if v is not None}
        transition = self.promotion.act(rmd, run, transition, artifact)
        if bake is not None and (status.bake is None or status.bake.message != bake.message):
            patch["bake"] = bake_status(bake, timestamp(now))
        if transition.phase == RunPhase.PROMOTING and status.phase != RunPhase.PROMOTING:
            patch["promotedAt"] = timestamp(now)
        hours = core.gpu_hours(view.spans(pool.spec.gpu.resource_name if pool else "nvidia.com/gpu"), now)
        if pool is not None and hours != status.gpu_hours:
            patch["gpuHours"] = round(hours, 6)
            patch["cost"] = core.run_cost(hours, pool.spec.pricing.price_per_gpu_hour)
        if transition.phase != status.phase or transition.message != status.message:
            patch.update({"phase": transition.phase.value, "message": transition.message,
                          "conditions": _run_conditions(obj, transition, now)})
            if transition.phase != status.phase:
                failed = transition.phase in (RunPhase.FAILED, RunPhase.REJECTED, RunPhase.ROLLED_BACK)
                self._event(obj, transition.reason, transition.message, warning=failed)
            if transition.phase in TERMINAL_PHASES | {RunPhase.AWAITING_PROMOTION} and not status.completion_time:
                patch["completionTime"] = timestamp(now)
        if patch:
            self._patch_status(obj, patch)
        self._publish_cost(run, patch.get("cost", status.cost), status.pool, status.currency)

    def _set_model_status(self, rmd: RecModelDeployment, fields: Mapping[str, Any]) -> None:
        self.promotion.set_model_status(rmd, fields)

    def _delete_job(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        try:
            self.kube.request("DELETE", f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}",
                              body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                                    "preconditions": {"uid": meta["uid"]}})
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _finish(self, obj: dict[str, Any], phase: RunPhase, reason: str, message: str, now: datetime) -> None:
        transition = core.Transition(phase, reason, message)
        self._event(obj, reason, message, warning=phase in (RunPhase.FAILED, RunPhase.REJECTED))
        self._patch_status(obj, {"phase": phase.value, "message": message, "completionTime": timestamp(now),
                                 "conditions": _run_conditions(obj, transition, now)})

    def _publish_cost(self, run: RecModelTrainingRun, cost: float | None = None, pool: str | None = None,
                      currency: str | None = None) -> None:
        status = run.status
        cost = cost if cost is not None else (status.cost if status else 0.0)
        pool = pool if pool is not None else (status.pool if status else "")
        currency = currency or (status.currency if status else "USD")
        if not pool:
            return
        labels = (run.namespace, run.spec.model, run.name, pool, currency)
        m.TRAINING_COST.labels(*labels).set(cost)
        self.cost_labels.add(labels)

    def forget_missing(self, present: set[tuple[str, str]]) -> None:
        """Remove the cost series of runs that no longer exist (pruned or deleted)."""
        for labels in list(self.cost_labels):
            if (labels[0], labels[2]) not in present:
                m.TRAINING_COST.remove(*labels)
                self.cost_labels.discard(labels)


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in _conditions(obj) if c.get("type") == type_), {})


# Conditions of a run: Trained (the Job produced a version), GatePassed (its scores), Promoted.
def _run_conditions(obj: Mapping[str, Any], t: core.Transition, now: datetime) -> list[dict[str, Any]]:
    conditions = _conditions(obj)
    trained = {RunPhase.FAILED: False, RunPhase.REJECTED: True, RunPhase.AWAITING_PROMOTION: True,
               RunPhase.PROMOTING: True, RunPhase.PROMOTED: True, RunPhase.ROLLED_BACK: True}
    if t.phase in trained:
        ok = trained[t.phase]
        conditions = set_condition(conditions, "Trained", ok, "Trained" if ok else t.reason,
                                   "a new version was written" if ok else t.message, None, now)
    if t.phase == RunPhase.REJECTED:
        conditions = set_condition(conditions, "GatePassed", False, t.reason, t.message, None, now)
    elif t.phase in (RunPhase.AWAITING_PROMOTION, RunPhase.PROMOTING, RunPhase.PROMOTED, RunPhase.ROLLED_BACK):
        if not _condition({"status": {"conditions": conditions}}, "GatePassed").get("status") == "True":
            conditions = set_condition(conditions, "GatePassed", True, "GatePassed", t.message.split("; ")[0], None, now)
    promoted = {RunPhase.AWAITING_PROMOTION: (False, "AwaitingPromotion"), RunPhase.PROMOTING: (False, "Baking"),
                RunPhase.PROMOTED: (True, "Promoted"), RunPhase.ROLLED_BACK: (False, t.reason),
                RunPhase.REJECTED: (False, t.reason), RunPhase.FAILED: (False, t.reason)}
    if t.phase in promoted:
        ok, reason = promoted[t.phase]
        conditions = set_condition(conditions, "Promoted", ok, reason, t.message, None, now)
    return conditions


# ------------------------------------------------------------------------------------------------ the loop

INTERVAL_ENV = "HYBRIDREC_TRAINING_INTERVAL_SECONDS"  # a pass at least this often (default 30; 0: retraining off)
S3_ENDPOINT_ENV = "HYBRIDREC_TRAINING_S3_ENDPOINT"  # given to training pods as AWS_ENDPOINT_URL (on-prem S3, MinIO)


class TrainingLoop:
    """Runs ``TrainingController.sync`` in a thread every ``interval`` seconds and at once when poked (a run or a
    training Job changed); only while this replica leads (``leader.is_leader``)."""

    def __init__(self, controller: TrainingController, leader: Any, interval: float) -> None:
        self.controller = controller
        self.leader = leader
        self.interval = interval
        self.wake = asyncio.Event()

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self.wake.clear()
            if not self.leader.is_leader:
                continue
            try:
                await asyncio.to_thread(self.controller.sync)
            except ApiException as exc:  # the CRD not installed yet, RBAC not granted yet: tried again next pass
                log.warning("training pass failed: %s", api_message(exc))
            except Exception:  # noqa: BLE001 - a bug in one pass must not stop retraining for good
                log.exception("training pass failed")


def start_loop(kube: Kube, leader: Any, *, identity: str,
               namespaces: Iterable[str]) -> tuple[TrainingLoop, asyncio.Task[Any]] | None:
    """The loop of one operator process and its task (the caller cancels it at shutdown); None when
    HYBRIDREC_TRAINING_INTERVAL_SECONDS is 0 (retraining off in this operator)."""
    interval = float(os.environ.get(INTERVAL_ENV, "30"))
    if interval <= 0:
        return None
    endpoint = os.environ.get(S3_ENDPOINT_ENV, "")
    # The Prometheus the cost controller reads (its config, HYBRIDREC_PROMETHEUS_URL): the bake window's error ratios.
    url = ControllerConfig.from_env(os.environ).prometheus_url
    controller = TrainingController(kube, extra_env={"AWS_ENDPOINT_URL": endpoint} if endpoint else {},
                                    identity=identity, namespaces=namespaces,
                                    prom=HttpPromClient(url, timeout_s=5.0) if url else None)
    loop = TrainingLoop(controller, leader, interval)
    return loop, asyncio.create_task(loop.run(), name="hybridrec-training")
