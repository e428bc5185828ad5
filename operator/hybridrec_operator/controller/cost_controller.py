"""The cost controller's loop (I/O): every control interval, observe -> round -> act, inside the operator process.

One round, for ALL RecModelDeployments at once:

1. read the cluster (models, pools, GPUs per pool, the replicas each model's Deployments ask for now) from the
   runtime's kopf indexes;
2. query Prometheus (``observe.py``);
3. plan the round (``core/cost_round.plan_round``, pure);
4. hand per-pool targets and the verdicts behind them to the reconciler through the :class:`ControlSeam`
   (``seam.publish`` + ``seam.request_replan``: the same queue and render/apply path as placement), post an Event
   with the decision's reason, keep the ``Observed`` condition, and publish the operator metrics.

Built at startup by ``controller/app.py`` and enabled when ``HYBRIDREC_PROMETHEUS_URL`` is set. Only the leader
runs rounds (``is_active``); a replica that becomes leader forgets what it knew and starts from what runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from hybridrec_operator.api.models import API_VERSION
from hybridrec_operator.controller.cost_metrics import MetricsPublisher
from hybridrec_operator.controller.kube import Kube
from hybridrec_operator.controller.observe import HttpPromClient, Observation, PrometheusUnavailable, observe
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.core import capacity
from hybridrec_operator.core.cost_handover import events_for, observed_condition_patch
from hybridrec_operator.core.cost_round import overloaded, plan_round
from hybridrec_operator.core.cost_types import (
    TRIGGER,
    ClusterSnapshot,
    ControllerConfig,
    ControllerState,
    ModelOutcome,
    RoundResult,
    build_snapshot,
)
from hybridrec_operator.core.objects import MODEL_LABEL, POOL_LABEL

log = logging.getLogger("hybridrec.cost_controller")


class CostController:
    """Runs rounds inside the operator process; see the module docstring."""

    def __init__(self, config: ControllerConfig, seam: ControlSeam, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.seam = seam
        self.clock = clock
        self.state = ControllerState()
        self.publisher = MetricsPublisher()
        self.prom = HttpPromClient(config.prometheus_url or "", timeout_s=min(5.0, max(1.0, config.interval_s / 2)))
        self.last_result: RoundResult | None = None
        self._active = False

    # ---- reading the cluster (event loop: the kopf indexes are not thread-safe)
    def snapshot(self, runtime: Runtime) -> ClusterSnapshot:
        pools = runtime.pools()
        nodes, pods = runtime.nodes(), runtime.pods()
        usage = capacity.pool_usage(pools, nodes, pods)
        # All models together may use what they already use plus what is free (quota and node room).
        capacity_gpus = {name: u.used_gpus + u.free_gpus for name, u in usage.items()}
        bodies, deployments = [], []
        for key in runtime.model_keys():
            namespace, name = key.split("/", 1)
            body = runtime.rmd_body(key)
            if body is None:
                continue
            bodies.append(body)
            deployments += [c for (kind, _), c in runtime.children(namespace, name).items() if kind == "Deployment"]
        # Nodes and pods too: reclaims (nodes tainted for disruption, NotReady or gone) and the pods they doom.
        return build_snapshot(bodies, pools, deployments, capacity_gpus, nodes, pods)

    def observe(self, snapshot: ClusterSnapshot, now: float) -> tuple[Observation | None, str | None]:
        try:
            return observe(self.prom, snapshot.expected_pools(), now, self.config.window_s, self.config.max_age_s), None
        except PrometheusUnavailable as exc:
            return None, str(exc)

    # ---- one round
    async def run_round(self, runtime: Runtime) -> RoundResult:
        snapshot = self.snapshot(runtime)
        if not self._active:
            # Started, restarted or took over from a peer: forget what we knew, start from what runs.
            self.state = ControllerState()
            self.seed_targets(snapshot)
            self._active = True
        now = self.clock()
        observation, error = await asyncio.to_thread(self.observe, snapshot, now)
        result, self.state = await asyncio.to_thread(plan_round, snapshot, observation, self.state, now, self.config,
                                                     prometheus_error=error)
        self.publisher.publish(result, snapshot)
        bodies = {s.key: s.body for s in snapshot.models}
        written = await asyncio.to_thread(self.record, runtime.kube, result, bodies, runtime.identity)
        # The reconcile reads models from the watch cache plus its own writes: adding ours lets the re-plans below
        # patch status on top of the Observed condition just written instead of failing on a stale resourceVersion.
        for body in written.values():
            runtime.remember_written(body)
        # No await from here to the last replan(): a worker cannot apply a target set here before its re-plan is
        # queued under this controller's trigger.
        live = {s.key for s in snapshot.models}
        for key in self.seam.publish(result.outcomes, live):
            self.replan(key)
        self.last_result = result
        self._log(result)
        return result

    async def overload(self, runtime: Runtime) -> list[str]:
        """Models overloaded since the last round (p95 above the SLO, demand above the planned capacity): a round
        is due now. Prometheus failing here is not news: the next round reports it."""
        if self.last_result is None or not self._active:
            return []
        snapshot = self.snapshot(runtime)
        observation, _ = await asyncio.to_thread(self.observe, snapshot, self.clock())
        return overloaded(snapshot, observation, self.last_result)

    def replan(self, key: str) -> None:
        """Queue the model's re-plan under this controller's trigger (the reconcile then names it in lastDecision).

        Through the runtime's queue, never a direct reconcile: the queue never runs two reconciles of one model at
        once (no self-made 409s), retries failures with backoff keeping the trigger, and keeps this trigger over
        weaker ones (resync, child events) that coalesce with it.
        """
        self.seam.request_replan(key, trigger=TRIGGER)

    def seed_targets(self, snapshot: ClusterSnapshot) -> None:
        """Make what runs the controller's target, so the reconcile keeps it until the first decision. Verdicts from
        an earlier active spell are dropped: nothing is known about what the models want until then."""
        self.seam.seed(((snap.key, snap.current) for snap in snapshot.models), drop_verdicts=True)

    def pause(self) -> None:
        self._active = False

    def record(self, kube: Any, result: RoundResult, bodies: Mapping[str, Mapping[str, Any]],
               identity: str) -> dict[str, Mapping[str, Any]]:
        """Events and the Observed condition (worker thread); returns the models written, by key.
        Failures are logged: the next round retries."""
        now = datetime.fromtimestamp(result.time, UTC)
        written: dict[str, Mapping[str, Any]] = {}
        for key, out in result.outcomes.items():
            body = bodies.get(key) or {}
            meta = body.get("metadata") or {}
            if not meta:
                continue
            involved = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": "RecModelDeployment", "metadata": meta}
            for type_, reason, message in events_for(out):
                try:
                    kube.post_event(involved, reason=reason, message=message, type_=type_, instance=identity)
                except ApiException as exc:
                    log.warning("%s: event %s not posted: %s", key, reason, exc.reason)
            try:
                new = self._patch_observed(kube, out, body, now)
            except ApiException as exc:
                log.warning("%s: Observed condition not written: %s", key, exc.reason)
                continue
            if new:
                written[key] = new
        return written

    def _patch_observed(self, kube: Any, out: ModelOutcome, body: Mapping[str, Any],
                        now: datetime) -> Mapping[str, Any] | None:
        """Write the Observed condition when it changed; the model as written, None when nothing was written."""
        meta = body.get("metadata") or {}
        path = f"/apis/hybridrec.io/v1alpha1/namespaces/{out.namespace}/recmodeldeployments/{out.name}"
        for attempt in range(3):
            status = body.get("status") or {}
            new = observed_condition_patch(status.get("conditions") or [], out, meta.get("generation"), now)
            if new is None:
                return None
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"conditions": new}}
            try:
                return kube.request("PATCH", f"{path}/status", body=patch, content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status != 409 or attempt == 2:
                    raise
                body = kube.request("GET", path)  # someone wrote in between: re-read and re-apply
                meta = body.get("metadata") or {}
        return None  # not reached: the last attempt returns or raises

    def _log(self, result: RoundResult) -> None:
        for out in result.outcomes.values():
            if out.changed or out.newly_unobserved or out.newly_observed:
                log.info("%s: %s%s", out.key, out.message, "" if out.observed else f" [{out.observed_reason}]")


async def control_loop(controller: CostController, runtime: Runtime, is_active: Callable[[], bool]) -> None:
    """Run a round every interval while this replica is the leader; never let one failure stop the loop."""
    while True:
        started = time.monotonic()
        if is_active():
            try:
                await controller.run_round(runtime)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("cost controller round failed")
        else:
            controller.pause()
        await _wait_for_next_round(controller, runtime, is_active, started)


async def _wait_for_next_round(controller: CostController, runtime: Runtime, is_active: Callable[[], bool],
                               started: float) -> None:
    """Sleep until the next interval, probing for overload every ``overload_probe_s``: an overload ends the wait."""
    interval, probe = controller.config.interval_s, controller.config.overload_probe_s
    while (left := interval - (time.monotonic() - started)) > 0.1:
        if probe <= 0 or probe >= left:
            await asyncio.sleep(left)
            return
        await asyncio.sleep(probe)
        if not is_active():
            continue
        try:
            hot = await controller.overload(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed probe only means waiting for the regular round
            log.exception("overload probe failed")
            continue
        if hot:
            log.info("overload (%s): running a round now", ", ".join(hot))
            return
    await asyncio.sleep(0.1)  # never back-to-back rounds


def seed_from_api(kube: Kube, namespaces: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """Targets = the replicas the model Deployments ask for now, listed from the API server (before the watchers
    start, so the first reconcile after a restart keeps them instead of falling back to minReplicas).

    ``namespaces``: list only these (a namespaced install may not list Deployments cluster-wide); empty: all.
    """
    query = {"labelSelector": "app.kubernetes.io/managed-by=hybridrec"}
    paths = [f"/apis/apps/v1/namespaces/{ns}/deployments" for ns in namespaces] or ["/apis/apps/v1/deployments"]
    items = [dep for path in paths for dep in kube.request("GET", path, query=query).get("items", [])]
    targets: dict[str, dict[str, int]] = {}
    for dep in items:
        meta = dep.get("metadata") or {}
        labels = meta.get("labels") or {}
        replicas = int((dep.get("spec") or {}).get("replicas") or 0)
        if labels.get(MODEL_LABEL) and labels.get(POOL_LABEL) and replicas > 0:
            targets.setdefault(f"{meta.get('namespace')}/{labels[MODEL_LABEL]}", {})[labels[POOL_LABEL]] = replicas
    return targets
