"""The operator's runtime: indexes -> snapshots, the reconcile (decide, then apply), the workers and the resync.

* **Indexes.** kopf keeps in-memory indexes of Nodes, GPU/hybridrec Pods, ComputePools, RecModelDeployments and
  the children (Deployments, Services, PodDisruptionBudgets labelled ``app.kubernetes.io/managed-by=hybridrec``).
  Reconciles read these snapshots; they never list or get from the API server.
* **One work queue, level-triggered.** Every watch event only *enqueues* a key (``rmd:<ns>/<name>`` or
  ``pool:<name>``) into a de-duplicating queue; ``HYBRIDREC_WORKERS`` coroutines drain it. A model's reconcile
  re-plans from scratch (``core.decide.decide``), server-side applies only the children that differ from the live
  object, deletes Deployments of pools it no longer uses and patches status only when it changed. Re-running it
  changes nothing. ONE cluster-wide resync loop (``HYBRIDREC_RESYNC_SECONDS``) instead of a per-object kopf timer.
* **Leadership.** Only the leader (``controller/leader.py``) reconciles: the workers and the resync of a standby
  replica drop what they take (its watches stay warm); the new leader re-plans everything when it takes over.
* Failures are retried by the queue with the backoff ``kube.classify`` gives (``kopf.TemporaryError``);
  ``kopf.PermanentError`` waits for the next change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from hybridrec_operator.api.models import API_VERSION, ComputePool, parse_pool
from hybridrec_operator.controller import dra, metrics
from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.kube import Kube, api_message, classify, retry_delay
from hybridrec_operator.controller.pools import PoolReconciler
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.controller.workqueue import WorkQueue
from hybridrec_operator.core import conditions
from hybridrec_operator.core.decide import (
    ChildFailure,
    ModelDecision,
    ModelSnapshot,
    conflict,
    decide,
    failed_decision,
    needs_lookup,
    settle_children,
    validation_message,
)
from hybridrec_operator.core.objects import (
    POOL_KIND,
    RMD_KIND,
    claim_pods,
    describe,
    fresher,
    meta_of,
    model_key,
    model_of,
    owned_by,
    placements_of,
)
from hybridrec_operator.core.pricing import PoolPrice, apply_price

log = logging.getLogger("hybridrec.operator")

GROUP_VERSION = API_VERSION  # hybridrec.io/v1alpha1
LEADER_TRIGGER = "leader elected"
# The kopf indexes of children (labelled app.kubernetes.io/managed-by=hybridrec), registered in handlers.py.
CHILD_INDEXES = ("hybridrec_deployments", "hybridrec_services", "hybridrec_pdbs", "hybridrec_networkpolicies",
                 "hybridrec_resourceclaimtemplates")
# The kopf indexes of every object of the children's kinds, whoever made it: (namespace, name) -> its controller
# ownerReference and managed-by label (handlers.py). They spare the GET before a child's first apply.
NAME_INDEXES = {"Deployment": "hybridrec_deployment_names", "Service": "hybridrec_service_names",
                "PodDisruptionBudget": "hybridrec_pdb_names", "NetworkPolicy": "hybridrec_networkpolicy_names",
                "ResourceClaimTemplate": "hybridrec_resourceclaimtemplate_names"}


class Leadership(Protocol):
    """Whether this replica may act now (``leader.LeaderElector`` or ``leader.AlwaysLeader``)."""

    @property
    def is_leader(self) -> bool: ...


@dataclass
class Runtime(PoolReconciler):
    """The operator's process-wide state, created at startup."""

    config: OperatorConfig
    kube: Kube
    indices: Mapping[str, Any]
    loop: asyncio.AbstractEventLoop
    executor: concurrent.futures.ThreadPoolExecutor
    seam: ControlSeam
    leader: Leadership
    identity: str
    queue: WorkQueue = field(default_factory=WorkQueue)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # Our own writes, so a reconcile running before the watch shows them does not write again.
    written: dict[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)  # (kind, ns, name) -> body
    planned: dict[str, dict[str, int]] = field(default_factory=dict)  # model key -> pool -> replicas
    avoid: dict[str, dict[str, float]] = field(default_factory=dict)  # model key -> pool -> avoid until (monotonic)
    metric_labels: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    fingerprints: dict[str, Any] = field(default_factory=dict)  # node name -> what capacity depends on
    shortfall: set[str] = field(default_factory=set)  # models with CapacityShortfall
    desired: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # last rendered children
    prices: dict[str, PoolPrice] = field(default_factory=dict)  # opencost pools' prices (controller/pricing.py)
    writes: int = 0
    # Whether kopf has listed every watched kind into the indexes (handlers.py sets it: kopf calls no event handler
    # before that). Until then a child's first apply is preceded by a GET, as the name indexes may be incomplete.
    indexed: bool = False
    lookups: int = 0  # GETs made before a child's first apply (benchmarks count them)

    # ---- entry points for the seam, the leader and the cost controller ---------------------------------------
    def request_replan(self, key: str, trigger: str = "controller", delay: float = 0.0) -> None:
        """Queue a re-plan of ``<namespace>/<name>``; thread-safe (installed into the seam at startup).

        Called on the operator's event loop (the cost controller's rounds) the key is queued at once, so no worker
        can apply a target just set under another trigger before this one is queued.
        """
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # a plain thread
            on_loop = False
        if on_loop:
            self.queue.add(f"rmd:{key}", trigger, delay)
        else:
            self.loop.call_soon_threadsafe(self.queue.add, f"rmd:{key}", trigger, delay)

    def started_leading(self) -> None:
        """This replica became the leader: re-plan every model and pool (events seen while standing by were
        dropped, and the previous leader may have died mid-reconcile)."""
        self.replan_models(LEADER_TRIGGER)
        self.replan_pools()

    def model_keys(self) -> list[str]:
        return [model_key(ns, name) for ns, name in list(self._index("hybridrec_rmds"))]

    def remember_written(self, body: Mapping[str, Any]) -> None:
        """An object written outside the reconcile (the cost controller's status patch): reconciles read it until
        the watch shows something at least as fresh."""
        meta = meta_of(body)
        ref = (str(body.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
        self.written[ref] = fresher(self.written.get(ref), body) or body

    # ---- snapshots ---------------------------------------------------------------------------------------------
    def _index(self, name: str) -> Any:
        return self.indices[name]

    def _store(self, index: str, key: Any) -> list[Any]:
        idx = self.indices.get(index) or {}
        return list(idx[key]) if key in idx else []

    def must_look_up(self, namespace: str, decision: ModelDecision) -> set[tuple[str, str]]:
        """The children of ``decision.unseen`` to read before their first apply (event loop: kopf indexes are not
        thread-safe): those the name indexes cannot vouch for (core/decide.needs_lookup)."""
        out = set()
        for kind, name in decision.unseen:
            index = NAME_INDEXES.get(kind)
            synced = self.indexed and index is not None and index in self.indices
            entries = self._store(index, (namespace, name)) if synced and index else []
            if needs_lookup(entries, synced=synced, uid=decision.uid):
                out.add((kind, name))
        return out

    def rmd_body(self, key: str) -> Mapping[str, Any] | None:
        namespace, name = key.split("/", 1)
        bodies = self._store("hybridrec_rmds", (namespace, name))
        return fresher(bodies[0] if bodies else None, self.written.get((RMD_KIND, namespace, name)))

    def pools(self) -> list[ComputePool]:
        """The pools as planners see them: an opencost pool carries the price OpenCost gives it (core/pricing.py)."""
        return [apply_price(p, self.prices.get(p.name)) for p in self.spec_pools()]

    def spec_pools(self) -> list[ComputePool]:
        """The pools as their specs say (static prices)."""
        pools = []
        for body in (b for store in self._index("hybridrec_pools").values() for b in store):
            try:
                pools.append(parse_pool(fresher(body, self.written.get((POOL_KIND, "", meta_of(body)["name"]))) or body))
            except ValidationError as exc:
                log.warning("ignoring ComputePool %s: %s", meta_of(body).get("name"), validation_message(exc))
        return sorted(pools, key=lambda p: p.name)

    def nodes(self) -> list[Mapping[str, Any]]:
        """The nodes; with a DRA pool, each node's free devices of its class in allocatable (controller/dra.py)."""
        return dra.nodes(self.indices, self._store("hybridrec_nodes", None), self.pods())

    def pods(self) -> list[Mapping[str, Any]]:
        return self._store("hybridrec_pods", None)

    def children(self, namespace: str, name: str) -> dict[tuple[str, str], Mapping[str, Any]]:
        live: dict[tuple[str, str], Mapping[str, Any]] = {}
        for index in CHILD_INDEXES:
            for body in self._store(index, (namespace, name)):
                ref = (body["kind"], meta_of(body)["name"])
                live[ref] = fresher(body, self.written.get((body["kind"], namespace, ref[1]))) or body
        # Applied a moment ago and not yet seen by the watch: still counts as live (no second apply).
        for (kind, ns, child), body in list(self.written.items()):
            if ns == namespace and kind != RMD_KIND and (kind, child) not in live and model_of(body) == name:
                live[(kind, child)] = body
        return live

    def model_snapshot(self, key: str, body: Mapping[str, Any]) -> ModelSnapshot:
        namespace, name = key.split("/", 1)
        pods = self.pods()
        pools = self.pools()
        # Other models' planned replicas: our own recent plans, else what their status says.
        planned: dict[str, dict[str, int]] = {}
        gpus_of: dict[str, int] = {}
        for (ns, other), store in self._index("hybridrec_rmds").items():
            other_key = model_key(ns, other)
            if other_key == key:
                continue
            for other_body in store:
                planned[other_key] = self.planned.get(other_key) or placements_of(other_body.get("status"))
                gpus_of[other_key] = int(((other_body.get("spec") or {}).get("resources") or {}).get("gpus") or 1)
        claims = claim_pods(planned, gpus_of, {p.name: p.spec.gpu.counted_resource for p in pools}, pods)
        now = time.monotonic()
        avoid = frozenset(p for p, until in self.avoid.get(key, {}).items() if until > now)
        return ModelSnapshot(
            key=key, body=body, pools=pools, nodes=self.nodes(), pods=pods + claims,
            own_pods=self._store("hybridrec_pods", (namespace, name)), children=self.children(namespace, name),
            target=self.seam.targets.get(key), verdict=self.seam.verdicts.get(key), slo=self.seam.slo.get(key),
            avoid=avoid,
        )

    # ---- the reconcile ------------------------------------------------------------------------------------------
    async def reconcile(self, item: str, trigger: str) -> None:
        kind, _, key = item.partition(":")
        if kind == "rmd":
            await self.reconcile_model(key, trigger)
        elif kind == "pool":
            await self.reconcile_pool(key)

    async def reconcile_model(self, key: str, trigger: str) -> None:
        started = time.perf_counter()
        body = self.rmd_body(key)
        if body is None or meta_of(body).get("deletionTimestamp"):
            self.forget_model(key)
            return
        snap = self.model_snapshot(key, body)
        now = datetime.now(UTC)
        try:
            decision = decide(snap, now=now, trigger=trigger, grace_seconds=self.config.pending_grace_seconds)
        except Exception as exc:  # noqa: BLE001 - an input the code cannot compute with: a condition, not a crash loop
            log.exception("%s: the reconcile could not plan the model", key)
            decision = failed_decision(snap, f"the reconcile failed ({type(exc).__name__}: {exc})", now,
                                       reason=conditions.RECONCILE_FAILED)
        if decision.plan is not None:
            # Record the plan before any await: a concurrent reconcile of another model must see these GPUs taken.
            self.planned[key] = decision.plan.replicas_by_pool()
        if decision.newly_stuck:
            until = time.monotonic() + self.config.stuck_cooldown_seconds
            self.avoid.setdefault(key, {}).update({p: until for p in decision.newly_stuck})
        # What the watch already vouches for needs no GET before its first apply.
        decision.unseen = self.must_look_up(key.split("/", 1)[0], decision)
        try:
            results, errors = await self.loop.run_in_executor(self.executor, self.execute, body, decision)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind=RMD_KIND).observe(time.perf_counter() - started)
        for written in results:
            self.written[(written["kind"], meta_of(written).get("namespace", ""), meta_of(written)["name"])] = written
        namespace = key.split("/", 1)[0]
        for child in decision.desired:
            self.desired[(child["kind"], namespace, child["metadata"]["name"])] = child
        for _, kind, ns, name, _ in decision.deletes:
            self.desired.pop((kind, ns, name), None)
        self.record(key, body, decision)
        if decision.requeue_after is not None:
            self.queue.add(f"rmd:{key}", "pods pending", decision.requeue_after)
        if errors:
            # Every failure is on the model already (conditions and events); retry with the backoff the first
            # one calls for (a refusal that will repeat waits for the resync or the next change).
            raise classify(errors[0])
        if decision.error:
            raise kopf.PermanentError(decision.error)

    def execute(self, body: Mapping[str, Any], decision: ModelDecision) -> tuple[list[dict[str, Any]], list[ApiException]]:
        """Carry out a decision (worker thread) in the order that fails safe, each step whatever the others did:

        1. remove what the spec forbids (Deployments: scaled to zero, then deleted; uid preconditions);
        2. write the status (compare-and-swap on the resourceVersion);
        3. apply what the plan wants; a child in ``decision.unseen`` (not vouched for by the indexes) is first looked
           up, and one that exists without our controller ownerReference is a conflict, left alone;
        4. record every failure as ChildrenApplied/ChildConflict conditions, then post the events.

        Returns the written objects and the API errors met (all of them already on the model's status and events).
        """
        meta = meta_of(body)
        namespace = str(meta.get("namespace") or "")
        written: list[dict[str, Any]] = []
        errors: list[ApiException] = []
        failures: list[ChildFailure] = list(decision.conflicts)
        for api_version, kind, ns, name, uid in decision.deletes:
            if kind == "Deployment" and uid:
                try:
                    self.kube.scale_to_zero(ns, name, uid=uid)
                except ApiException as exc:
                    # Only a head start for its pods: the admission policy refuses any update of a Deployment whose
                    # pods could reach public nodes once its model is sensitive, so the delete must not wait on it.
                    log.info("%s: could not scale %s to zero before deleting it: %s", decision.key,
                             describe(kind, ns, name), api_message(exc))
            try:
                self.kube.delete(api_version, kind, ns, name, uid=uid or None)
                self.written.pop((kind, ns, name), None)
            except ApiException as exc:
                errors.append(exc)
                failures.append(ChildFailure("DeleteFailed", f"{describe(kind, ns, name)} could not be deleted: {api_message(exc)}"))
        status_path = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/recmodeldeployments/{meta['name']}/status"
        latest: Mapping[str, Any] = body
        status_error: ApiException | None = None
        if decision.status is not None:
            status = {k: v for k, v in decision.status.items() if v is not None}
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
            # resourceVersion makes it a compare-and-swap: a concurrent writer's update is never silently lost.
            try:
                latest = self.kube.request("PATCH", status_path, body=patch, content_type="application/merge-patch+json")
                written.append(dict(latest))
            except ApiException as exc:
                status_error = exc
        for child in decision.applies:
            kind, name = child["kind"], child["metadata"]["name"]
            try:
                if (kind, name) in decision.unseen:
                    self.lookups += 1
                    existing = self.kube.get(child["apiVersion"], kind, namespace, name)
                    if existing is not None and not owned_by(existing, decision.uid):
                        failures.append(conflict(kind, namespace, name, existing, str(meta["name"])))
                        continue
                written.append(self.kube.apply(child))
            except ApiException as exc:
                errors.append(exc)
                failures.append(ChildFailure("ApplyFailed", f"{describe(kind, namespace, name)} could not be applied: {api_message(exc)}"))
        events = list(decision.events)
        if status_error is None:
            conds = list((latest.get("status") or {}).get("conditions") or [])
            settled, more = settle_children(conds, failures, decision.generation, datetime.now(UTC))
            events += more
            if settled is not None:
                patch = {"metadata": {"resourceVersion": meta_of(latest).get("resourceVersion")},
                         "status": {"conditions": settled}}
                try:
                    written.append(self.kube.request("PATCH", status_path, body=patch,
                                                     content_type="application/merge-patch+json"))
                except ApiException as exc:
                    status_error = exc
        involved = {"apiVersion": body.get("apiVersion", API_VERSION), "kind": RMD_KIND, "metadata": meta}
        for type_, reason, message in events:
            try:
                self.kube.post_event(involved, reason=reason, message=message, type_=type_, instance=self.identity)
            except ApiException as exc:  # an event is informative: never fail a reconcile over it
                log.warning("could not post event %s for %s: %s", reason, decision.key, api_message(exc))
        self.writes += len(decision.applies) + len(decision.deletes) + (decision.status is not None) + len(events)
        if status_error is not None:
            errors.insert(0, status_error)  # a stale status is retried first (409: re-read and decide again)
        for failure in failures:
            if failure.reason != "ChildConflict":
                log.warning("%s: %s", decision.key, failure.message)
        return written, errors

    def record(self, key: str, body: Mapping[str, Any], decision: ModelDecision) -> None:
        """Metrics and in-memory bookkeeping after a successful reconcile."""
        namespace, name = key.split("/", 1)
        plan = decision.plan
        if plan is None:
            return
        sensitivity = str((body.get("spec") or {}).get("dataSensitivity", ""))
        status = decision.status or body.get("status") or {}
        ready = {p["pool"]: p.get("ready", 0) for p in status.get("placements") or []}
        labels: set[tuple[str, ...]] = set()
        for a in plan.assignments:
            for state, value in (("desired", a.replicas), ("ready", ready.get(a.pool, 0))):
                metrics.REPLICAS.labels(namespace, name, a.pool, a.tenancy.value, sensitivity, state).set(value)
                labels.add(("replicas", namespace, name, a.pool, a.tenancy.value, sensitivity, state))
            metrics.COST_PER_HOUR.labels(namespace, name, a.pool, a.tenancy.value, a.currency).set(a.cost_per_hour)
            labels.add(("cost", namespace, name, a.pool, a.tenancy.value, a.currency))
        metrics.SHORTFALL.labels(namespace, name, sensitivity).set(plan.shortfall - plan.budget_shortfall)
        labels.add(("shortfall", namespace, name, sensitivity))
        for stale in self.metric_labels.get(key, set()) - labels:
            _remove_metric(stale)
        self.metric_labels[key] = labels
        if decision.placement_changed:
            metrics.DECISIONS.labels(namespace, name, decision.direction, "placement").inc()
        if plan.shortfall - plan.budget_shortfall > 0:
            self.shortfall.add(key)
        else:
            self.shortfall.discard(key)

    def forget_model(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        self.planned.pop(key, None)
        self.avoid.pop(key, None)
        self.shortfall.discard(key)
        self.queue.forget(f"rmd:{key}")
        self.written.pop((RMD_KIND, namespace, name), None)
        for ref in [r for r, child in self.desired.items() if r[1] == namespace and model_of(child) == name]:
            self.desired.pop(ref, None)
        for stale in self.metric_labels.pop(key, set()):
            _remove_metric(stale)

    # ---- workers --------------------------------------------------------------------------------------------
    async def worker(self) -> None:
        while True:
            item, trigger = await self.queue.get()
            try:
                if not self.leader.is_leader:
                    continue  # standby: the leader does it; taking over re-plans everything
                await self.reconcile(item, trigger)
                self.queue.failures.pop(item, None)
            except asyncio.CancelledError:
                raise
            except kopf.PermanentError as exc:
                self.queue.failures.pop(item, None)
                metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason="permanent").inc()
                log.warning("%s: %s (waiting for the object to change)", item, exc)
            except Exception as exc:  # noqa: BLE001 - one bad object must never stop the others
                attempt = self.queue.failures.get(item, 0)
                self.queue.failures[item] = attempt + 1
                if isinstance(exc, ApiException):
                    exc = classify(exc, attempt=attempt)
                if isinstance(exc, kopf.PermanentError):
                    metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason="permanent").inc()
                    log.error("%s: %s", item, exc)
                    continue
                delay = exc.delay if isinstance(exc, kopf.TemporaryError) and exc.delay else retry_delay(1.0, attempt)
                reason = "temporary" if isinstance(exc, kopf.TemporaryError) else "unexpected"
                metrics.RECONCILE_ERRORS.labels(kind=_kind_of(item), reason=reason).inc()
                if reason == "unexpected":
                    log.exception("%s: unexpected error, retrying in %.1fs", item, delay)
                else:
                    log.info("%s: %s; retrying in %.1fs", item, exc, delay)
                self.queue.add(item, trigger, delay)
            finally:
                self.queue.done(item)

    async def resync(self) -> None:
        """The one cluster-wide periodic mechanism: re-plan every model (a no-op when nothing changed)."""
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            if not self.leader.is_leader:
                continue
            for (namespace, name) in list(self._index("hybridrec_rmds")):
                self.queue.add(f"rmd:{model_key(namespace, name)}", "resync")
            for pool in list(self._index("hybridrec_pools")):
                self.queue.add(f"pool:{pool}", "resync")

    def replan_models(self, trigger: str, *, keys: Iterable[str] | None = None) -> None:
        keys = keys if keys is not None else self.model_keys()
        for key in keys:
            self.queue.add(f"rmd:{key}", trigger)

    def replan_pools(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else list(self._index("hybridrec_pools")):
            self.queue.add(f"pool:{name}", "capacity", self.config.pool_status_delay)


def _kind_of(item: str) -> str:
    return POOL_KIND if item.startswith("pool:") else RMD_KIND


def _remove_metric(labels: tuple[str, ...]) -> None:
    gauge = {"replicas": metrics.REPLICAS, "cost": metrics.COST_PER_HOUR, "shortfall": metrics.SHORTFALL}[labels[0]]
    with contextlib.suppress(KeyError):
        gauge.remove(*labels[1:])

