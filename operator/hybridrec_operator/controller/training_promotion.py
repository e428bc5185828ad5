"""Promotion and bake of a trained version (I/O): what the servers run, whether the rollout completed, the error
ratios Prometheus saw, and the writes that promote or roll back (the model's ``status.promotedModel``).

Decisions are ``core/training.py``'s (``advance``, ``judge_bake``); this module reads and writes. After a promotion
(the run is Promoting), each pass:

* checks the rollout: every Deployment of the model renders the new manifest sha256 with all replicas updated and
  available (the Deployments roll with maxUnavailable 0: make-before-break). Not rolled out
  ``max(bakeSeconds, 120 s)`` after the promotion: rolled back;
* reads from Prometheus (the one the cost controller reads, ``HYBRIDREC_PROMETHEUS_URL``) the error ratio (5xx and
  429 of ``/v1/recommend``, as ``observe.build_queries`` counts errors) of the servers running the new version since
  the promotion, and of the servers running any other version over the ``PREVIOUS_WINDOW_SECONDS`` before it. Which
  server runs which version is ``hybridrec_server_model_info{version}`` joined on ``instance``. A rise beyond
  ``maxErrorRatio`` or the previous ratio + ``maxErrorRatioIncrease``: rolled back. Missing readings never roll back.

A rollback writes ``status.promotedModel`` back to what served before the run (or clears it when that is spec.model),
so the Deployments roll back the same make-before-break way. A person's spec.model is never edited.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from hybridrec_operator.api.models import RecModelDeployment
from hybridrec_operator.api.training_run import (
    RecModelTrainingRun,
    RecModelTrainingRunStatus,
    RunPhase,
)
from hybridrec_operator.controller.kube import Kube
from hybridrec_operator.controller.observe import (
    SERVER_JOB,
    PromClient,
    PrometheusUnavailable,
    parse_vector,
)
from hybridrec_operator.controller.training_jobs import parse_time
from hybridrec_operator.core import training as core

RUNS = "/apis/hybridrec.io/v1alpha1"
MANAGED_BY = "app.kubernetes.io/managed-by"
# A promoted version not rolled out this long after its promotion (or after bakeSeconds, if longer) is rolled back.
ROLLOUT_DEADLINE_SECONDS = 120.0
REQUESTS = "hybridrec_server_requests_total"
MODEL_INFO = "hybridrec_server_model_info"
ERROR_CODES = "5..|429"  # what observe.build_queries counts as errors


def _quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ratio_queries(namespace: str, model: str, version: str, window_s: int, *, new: bool) -> tuple[str, str]:
    """(requests, errors) of ``/v1/recommend`` over ``window_s`` by the servers of the model whose loaded version is
    ``version`` (``new``) or any other version (not ``new``); the join keeps a server's counters only while its
    ``hybridrec_server_model_info`` names that version."""
    sel = f"job={_quote(SERVER_JOB)},namespace={_quote(namespace)},model={_quote(model)}"
    servers = f"max by (instance) ({MODEL_INFO}{{{sel},version{'=' if new else '!='}{_quote(version)}}})"
    window = f"{max(int(window_s), 1)}s"

    def total(extra: str) -> str:
        return f'sum(increase({REQUESTS}{{{sel},endpoint="recommend"{extra}}}[{window}]) * on (instance) group_left {servers})'

    return total(""), total(f",code=~{_quote(ERROR_CODES)}")


def _sum(prom: PromClient, expr: str, at: float) -> float | None:
    series = parse_vector(prom.query(expr, at), ())
    return series.get(())


def read_error_ratios(prom: PromClient, namespace: str, model: str, version: str, promoted_at: datetime,
                      now: datetime) -> core.ErrorRatios:
    """The new version's error ratio since ``promoted_at`` and the previous versions' before it."""
    since = max(int((now - promoted_at).total_seconds()), 1)
    try:
        readings = []
        for new, window, at in ((True, since, now), (False, core.PREVIOUS_WINDOW_SECONDS, promoted_at)):
            total_q, errors_q = ratio_queries(namespace, model, version, window, new=new)
            total = _sum(prom, total_q, at.timestamp())
            errors = _sum(prom, errors_q, at.timestamp()) if total else None
            # No error series at all while requests were counted: nothing failed.
            readings.append((total or 0.0, (errors or 0.0) / total if total else None))
    except PrometheusUnavailable as exc:
        return core.ErrorRatios(unavailable=f"Prometheus did not answer ({exc})")
    (new_requests, new_ratio), (previous_requests, previous_ratio) = readings
    return core.ErrorRatios(new=new_ratio, new_requests=new_requests, previous=previous_ratio,
                            previous_requests=previous_requests)


def ready(rmd: RecModelDeployment) -> bool:
    status = rmd.status
    return bool(status and any(c.type == "Ready" and c.status == "True" for c in status.conditions))


class Promotion:
    """Reads and writes of one run's promotion; ``prom`` None: no Prometheus, the error ratio is not checked."""

    def __init__(self, kube: Kube, prom: PromClient | None = None) -> None:
        self.kube = kube
        self.prom = prom

    def observe(self, rmd: RecModelDeployment, status: RecModelTrainingRunStatus, obs: core.Observation,
                now: datetime) -> tuple[core.Observation, core.BakeVerdict | None]:
        """``obs`` with what the servers run (the run is AwaitingPromotion or Promoting with an artifact), and the
        bake verdict of a Promoting run whose version is served."""
        assert status.artifact is not None
        training = rmd.spec.training
        sha = status.artifact.sha256
        serving = core.served_model(rmd).sha256 == sha
        since = parse_time(status.promoted_at)
        seconds = (now - since).total_seconds() if since else 0.0
        rolled, detail = self.rolled_out(rmd, sha) if serving else (False, "")
        failed, bake = None, None
        if status.phase == RunPhase.PROMOTING:
            if not serving:
                failed = "the model no longer serves this version (its spec.model changed)"
            elif not rolled and seconds >= max(training.bake_seconds if training else 0, ROLLOUT_DEADLINE_SECONDS):
                failed = f"the new version is not rolled out {seconds:.0f}s after its promotion ({detail})"
            else:
                ratios = None
                if self.prom is not None and since is not None:
                    ratios = read_error_ratios(self.prom, rmd.namespace, rmd.name, status.artifact.version or "", since, now)
                bake = core.judge_bake(ratios, training.max_error_ratio if training else None,
                                       training.max_error_ratio_increase if training else 0.02)
        return replace(obs, promote_requested=serving, serving_new_version=serving and rolled and ready(rmd),
                       seconds_since_promotion=seconds, rollout_failed=failed, bake=bake), bake

    def act(self, rmd: RecModelDeployment, run: RecModelTrainingRun, transition: core.Transition,
            artifact: dict[str, Any] | None) -> core.Transition:
        """Promote (auto) or roll back as ``transition`` says; returns it with the message a person reads."""
        status = run.status
        assert status is not None
        if transition.action == "promote" and status.phase in (RunPhase.PENDING, RunPhase.RUNNING):
            # promotion: auto. Only over the version the run was compared with: if spec.model changed since, the
            # scores say nothing about the new baseline and a person decides.
            served = core.served_model(rmd)
            if status.previous is not None and (status.previous.uri, status.previous.sha256) != (served.uri, served.sha256):
                transition = core.Transition(RunPhase.AWAITING_PROMOTION, "AwaitingPromotion", transition.message.replace(
                    "; rolling it out", "; not rolled out automatically: the served version changed since the run started"))
            else:
                self.set_promoted(rmd, {"run": run.name, "model": artifact, "replaces": rmd.spec.model.to_wire()})
        if transition.action == "rollback":
            promoted = rmd.status.promoted_model if rmd.status else None
            if promoted is not None and promoted.run == run.name:
                # Back to what served before (make-before-break again): spec.model, or an earlier promoted version.
                previous = status.previous
                if previous is None or (previous.uri, previous.sha256) == (rmd.spec.model.uri, rmd.spec.model.sha256):
                    self.set_promoted(rmd, None)
                else:
                    self.set_promoted(rmd, {"run": previous.version or "previous", "model": previous.to_wire(),
                                            "replaces": rmd.spec.model.to_wire()})
        if transition.phase == status.phase == RunPhase.AWAITING_PROMOTION:
            transition = replace(transition, message=status.message)  # still waiting: the same sentence and command
        elif transition.phase == RunPhase.AWAITING_PROMOTION and artifact:
            command = (f"kubectl patch rmd {rmd.name} -n {rmd.namespace} --type merge -p "
                       f"'{json.dumps({'spec': {'model': artifact}}, separators=(',', ':'))}'")
            transition = replace(transition, message=transition.message.split("; set the model")[0] + f"; promote it with: {command}")
        return transition

    def set_promoted(self, rmd: RecModelDeployment, promoted: dict[str, Any] | None) -> None:
        """Write (or clear) the model's status.promotedModel: the serving reconcile renders it over spec.model."""
        self.set_model_status(rmd, {"promotedModel": promoted})

    def set_model_status(self, rmd: RecModelDeployment, fields: Mapping[str, Any]) -> None:
        self.kube.request("PATCH", f"{RUNS}/namespaces/{rmd.namespace}/recmodeldeployments/{rmd.name}/status",
                          body={"status": dict(fields)}, content_type="application/merge-patch+json")

    def rolled_out(self, rmd: RecModelDeployment, sha: str | None) -> tuple[bool, str]:
        """Whether every Deployment of the model runs ``sha`` with all its replicas updated and available (the
        Deployments roll with maxUnavailable 0: old pods serve until new ones are ready), and what is missing."""
        missing = []
        body = self.kube.request("GET", f"/apis/apps/v1/namespaces/{rmd.namespace}/deployments",
                                 query={"labelSelector": f"{core.MODEL_LABEL}={rmd.name},{MANAGED_BY}=hybridrec"})
        for dep in body.get("items", []):
            name, spec, st = dep["metadata"]["name"], dep.get("spec") or {}, dep.get("status") or {}
            env = {e.get("name"): e.get("value") for c in spec["template"]["spec"].get("containers", []) for e in c.get("env") or []}
            want = int(spec.get("replicas", 1))
            if env.get("HYBRIDREC_MODEL_SHA256") != sha:
                missing.append(f"{name} not yet rendered with it")
            elif st.get("observedGeneration", 0) < dep["metadata"].get("generation", 0) or \
                    st.get("updatedReplicas", 0) < want or st.get("availableReplicas", 0) < want or st.get("replicas", 0) > want:
                missing.append(f"{name}: {st.get('updatedReplicas', 0)}/{want} updated, {st.get('availableReplicas', 0)} available")
        return not missing, "; ".join(missing)


def bake_status(verdict: core.BakeVerdict, now: str) -> dict[str, Any]:
    """The run's status.bake; an unknown ratio is null (the merge patch deletes the field: absent, never 0)."""
    out: dict[str, Any] = {"message": verdict.message, "observedAt": now}
    out["newErrorRatio"] = round(verdict.new, 6) if verdict.new is not None else None
    out["previousErrorRatio"] = round(verdict.previous, 6) if verdict.previous is not None else None
    return out
