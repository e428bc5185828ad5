"""Continuous verification of the hard rule (issue 9 item 4): no pod of a confidential or restricted model runs on a
node whose ``hybridrec.io/tenancy`` label is not ``private``, whatever its pool says.

Every other layer (placement, render's required affinity, the admission policy) acts before a pod is bound; this one
checks what is bound *now*, so a node relabelled from private to public under a running pod (finding 3) or a pool
whose nodeSelector picks public nodes (finding 4) is caught as soon as the watch shows it.

* Node, pod and pool events, and a model's ``spec.dataSensitivity`` changing, ``poke`` the guard (pods are indexed
  when hybridrec created them, ask for a GPU, or carry ``hybridrec.io/model``: a user's look-alike pod receives the
  model's traffic too); one coroutine runs the check, so a burst of events costs one pass over
  the indexes (no API reads). It also runs every ``resync_seconds`` and when this replica takes the lease.
* Only the leader acts. On a violation it deletes the pod at once (grace period 0, uid precondition) when hybridrec
  created it (``core.sensitivity.created_by_hybridrec``: our labels and owner chain); the Deployment's replacement
  can only land on a private node (required affinity). A user's pod is reported, never touched.
* Each offending pod is counted once in ``hybridrec_sensitive_placement_violations_total`` and gets one Warning event
  on its model; the model's ``SensitivePlacementViolation`` condition is True while a violation remains and False
  (``ViolationResolved``, still naming the last pod and node) afterwards.
* A pool whose selected nodes carry another tenancy gets ``TenancyMismatch=True`` naming them and an event (False
  and a Normal event once they agree). Those nodes give it no capacity (``core.capacity``), so no replica is planned
  onto them; the reconcile of the pool keeps the condition (it starts from the freshest status, ours included).

* The same loop checks, at its first pass and once per interval, that the admission policies it relies on are in
  force (``controller/admission_audit.py``): a deleted or weakened binding is a metric, an alert, a log line and an
  ``AdmissionGuarded=False`` condition on every sensitive model.

The decisions are pure (``core.sensitivity``, ``core.conditions``, ``core.capacity``, ``core.admission``); this
module does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from hybridrec_operator.api.models import API_VERSION, SENSITIVE
from hybridrec_operator.controller import metrics
from hybridrec_operator.controller.admission_audit import AdmissionAudit
from hybridrec_operator.controller.kube import api_message
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.core import capacity, conditions
from hybridrec_operator.core.objects import POOL_KIND, RMD_KIND, fresher, meta_of
from hybridrec_operator.core.sensitivity import (
    TENANCY_LABEL,
    TRAINED_MODEL_LABEL,
    Violation,
    created_by_hybridrec,
    placement_violations,
    training_job_of_hybridrec,
)

log = logging.getLogger("hybridrec.operator.guard")

REASON = conditions.SENSITIVE_PLACEMENT_VIOLATION
_SENSITIVE = frozenset(s.value for s in SENSITIVE)
# A pod whose node, model or Deployment the indexes do not show (yet) is acted on only after this long: never act on
# a startup race (a private node not listed yet, our own pod taken for a user's).
UNKNOWN_NODE_GRACE_S = 5.0
_CAS_ATTEMPTS = 4  # status patches are compare-and-swap; a concurrent reconcile's write makes us re-read


@dataclass(frozen=True)
class Outcome:
    """What the guard did about one offending pod."""

    deleted: bool
    failure: str = ""  # the API server's answer when a delete of our own pod failed (retried)

    @property
    def settled(self) -> bool:
        return not self.failure

    def describe(self, v: Violation) -> str:
        return v.describe(deleted=self.deleted, failure=self.failure)


@dataclass
class PlacementGuard:
    """The invariant check of one operator process (built by ``app.start``, driven by ``handlers.py``)."""

    runtime: Runtime
    interval: float = 60.0  # a pass even without events (missed events, a takeover without a clean handover)
    reasons: set[str] = field(default_factory=set)
    # (namespace, pod, node) -> what was done: an Outcome. One count and one event per pod; a failed delete is retried.
    acted: dict[tuple[str, str, str], Outcome] = field(default_factory=dict)
    node_tenancy: dict[str, str | None] = field(default_factory=dict)  # what node events last showed
    model_sensitivity: dict[str, str] = field(default_factory=dict)  # namespace/name -> spec.dataSensitivity seen
    unknown_since: dict[tuple[str, str, str], float] = field(default_factory=dict)  # violations on unindexed nodes
    checks: int = 0
    # Whether the admission policies are in force: checked at the first pass and then once per interval, on this
    # loop (controller/admission_audit.py), never per event.
    admission: AdmissionAudit = field(default_factory=AdmissionAudit)
    admission_due: float = float("-inf")  # monotonic time of the next admission check
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- what wakes it (event loop only) ----------------------------------------------------------------------
    def poke(self, reason: str) -> None:
        self.reasons.add(reason)
        self._wake.set()

    def on_node(self, type_: str | None, body: Mapping[str, Any], name: str) -> None:
        """A node appeared, went or changed its tenancy label (heartbeats and other label churn are ignored)."""
        tenancy = None if type_ == "DELETED" else (meta_of(body).get("labels") or {}).get(TENANCY_LABEL)
        if type_ == "DELETED":
            self.node_tenancy.pop(name, None)
        elif name in self.node_tenancy and self.node_tenancy[name] == tenancy:
            return
        else:
            self.node_tenancy[name] = tenancy
        self.poke(f"node {name}")

    def on_model(self, type_: str | None, body: Mapping[str, Any], namespace: str, name: str) -> None:
        """A model appeared, went or changed its spec.dataSensitivity: its pods (ours, or a user's that carry its
        label) may have become sensitive without any pod or node event. Status writes and other spec edits are
        ignored (no pass per event)."""
        key = f"{namespace}/{name}"
        sensitivity = "" if type_ == "DELETED" else str((body.get("spec") or {}).get("dataSensitivity", ""))
        if type_ == "DELETED":
            self.model_sensitivity.pop(key, None)
        elif self.model_sensitivity.get(key) == sensitivity:
            return
        else:
            self.model_sensitivity[key] = sensitivity
        self.poke(f"model {key}")  # raised: its pods may violate now; lowered or gone: a violation may be resolved

    def on_pod(self, type_: str | None, body: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        """A model's pod was bound, changed or went (a deletion may resolve a violation)."""
        if ((labels.get("hybridrec.io/model") or labels.get(TRAINED_MODEL_LABEL))
                and ((body.get("spec") or {}).get("nodeName") or type_ == "DELETED")):
            self.poke("pod")

    async def run(self) -> None:
        while True:
            # The admission check keeps its period even when events keep waking the loop, or none do.
            wait = (min(self.interval, max(0.0, self.admission_due - time.monotonic()))
                    if self.runtime.leader.is_leader else self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            reasons, self.reasons = self.reasons, set()
            if not self.runtime.leader.is_leader:
                continue  # a standby never acts; taking the lease pokes us
            try:
                await self.check(sorted(reasons) or ["resync"])
            except asyncio.CancelledError:
                raise
            except Exception:
                # The guard must outlive any one failure; it retries shortly.
                log.exception("placement check failed; retrying in 1 s")
                self.runtime.loop.call_later(1.0, self.poke, "retry")
            if time.monotonic() >= self.admission_due:
                self.admission_due = time.monotonic() + self.interval
                try:
                    await self.admission.check(self)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # As above; the next interval tries again.
                    log.exception("admission policy check failed; next try in %.0f s", self.interval)

    # ---- one pass ----------------------------------------------------------------------------------------------
    async def check(self, reasons: list[str]) -> list[Violation]:
        """Find and act on every violation the indexes show now; returns them (for tests and logs)."""
        rt = self.runtime
        self.checks += 1
        nodes, pods = rt.nodes(), rt.pods()
        bodies = {key: body for key in rt.model_keys() if (body := rt.rmd_body(key)) is not None}
        sensitive = {key for key, body in bodies.items()
                     if str((body.get("spec") or {}).get("dataSensitivity", "")) in _SENSITIVE}
        found = placement_violations(pods, nodes, sensitive)
        known = {str(meta_of(n).get("name")) for n in nodes}
        # Retraining pods belong to a Job, not to one of the model's Deployments: their owner is checked on the API.
        trainers = {(str(meta_of(p).get("namespace")), str(meta_of(p).get("name"))) for p in pods
                    if (meta_of(p).get("labels") or {}).get(TRAINED_MODEL_LABEL)}
        now = time.monotonic()
        deferred: set[tuple[str, str, str]] = set()
        for v in found:
            ref = (v.namespace, v.pod, v.node)
            previous = self.acted.get(ref)
            if previous is not None and previous.settled:
                continue
            ours = [c for (kind, _), c in rt.children(v.namespace, v.model).items() if kind == "Deployment"]
            unindexed = v.node not in known or v.model_key not in bodies or (not ours and (v.namespace, v.pod) not in trainers)
            if unindexed and now - self.unknown_since.setdefault(ref, now) < UNKNOWN_NODE_GRACE_S:
                # At startup the watches fill the indexes in any order: a pod may be listed before its node (which
                # may be private), its model or its Deployment (without which it would look like a user's pod).
                # Look again shortly rather than act on half a picture.
                rt.loop.call_later(1.0, self.poke, "indexes filling")
                deferred.add(ref)
                continue
            self.unknown_since.pop(ref, None)
            if not rt.leader.is_leader:
                return []  # lost the lease mid-pass (the elector stops us before anyone may take over)
            outcome = await self._io(self._enforce, v, ours)
            self.acted[ref] = outcome
            if not outcome.settled:
                rt.loop.call_later(2.0, self.poke, "retry a failed delete")
            if previous is not None or _reported(bodies.get(v.model_key), v):
                continue  # counted and told already (a retry of the delete, or by this replica's predecessor)
            metrics.SENSITIVE_PLACEMENT_VIOLATIONS.labels(v.namespace, v.model, v.node).inc()
            message = outcome.describe(v)
            log.warning("%s (checked on: %s)", message, _summary(reasons))
            await self._io(self._event, bodies.get(v.model_key), v, message)
        current = {(v.namespace, v.pod, v.node) for v in found}
        for ref in [r for r in self.acted if r not in current]:
            del self.acted[ref]
        for ref in [r for r in self.unknown_since if r not in current]:
            del self.unknown_since[ref]
        acted_on = [v for v in found if (v.namespace, v.pod, v.node) not in deferred]
        await self._model_conditions(acted_on, bodies, sensitive)
        await self._pools(nodes)
        return acted_on

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await self.runtime.loop.run_in_executor(self.runtime.executor, fn, *args)

    def _enforce(self, v: Violation, deployments: list[Mapping[str, Any]]) -> Outcome:
        """Delete the offending pod if hybridrec created it (worker thread)."""
        kube = self.runtime.kube
        path = _pod_path(v.namespace, v.pod)
        try:
            pod = kube.request("GET", path)  # fresh, with the ownerReferences the index does not keep
            if not created_by_hybridrec(pod, deployments) and not training_job_of_hybridrec(pod, self._job_of(pod)):
                return Outcome(deleted=False)
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                       "preconditions": {"uid": meta_of(pod).get("uid")}}
            kube.request("DELETE", path, body=options)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone already, or replaced by another pod of that name
                return Outcome(deleted=True)
            # Forbidden (RBAC without pods get/delete), a timeout...: said in the condition and event, and retried.
            log.error("could not delete pod %s/%s: %s", v.namespace, v.pod, api_message(exc))
            return Outcome(deleted=False, failure=api_message(exc))
        self.runtime.writes += 1
        return Outcome(deleted=True)

    def _job_of(self, pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The Job controlling a retraining pod, read fresh (worker thread); None for any other pod or when gone."""
        meta = meta_of(pod)
        owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        if owner is None or owner.get("kind") != "Job" or not (meta.get("labels") or {}).get(TRAINED_MODEL_LABEL):
            return None
        try:
            return self.runtime.kube.request("GET", f"/apis/batch/v1/namespaces/{meta.get('namespace')}/jobs/{owner.get('name')}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _event(self, rmd: Mapping[str, Any] | None, v: Violation, message: str) -> None:
        # On the model (where `kubectl describe rmd` shows it); on the pod when its model is gone.
        involved = ({"apiVersion": rmd.get("apiVersion", API_VERSION), "kind": RMD_KIND, "metadata": meta_of(rmd)}
                    if rmd is not None else
                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": v.pod, "namespace": v.namespace}})
        self._post(involved, "Warning", REASON, message)

    def _post(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.runtime.kube.post_event(involved, reason=reason, message=message, type_=type_,
                                         instance=self.runtime.identity)
        except ApiException as exc:  # an event is informative: the deletion and the condition are what count
            log.warning("could not post event %s: %s", reason, api_message(exc))

    async def _model_conditions(self, found: list[Violation], bodies: Mapping[str, Mapping[str, Any]],
                                sensitive: set[str]) -> None:
        by_model: dict[str, list[str]] = {}
        for v in found:
            outcome = self.acted.get((v.namespace, v.pod, v.node), Outcome(deleted=True))
            by_model.setdefault(v.model_key, []).append(outcome.describe(v))
        current = {key: (body.get("status") or {}).get("conditions") or [] for key, body in bodies.items()
                   if key in sensitive or key in by_model
                   or (conditions.get_condition((body.get("status") or {}).get("conditions") or [], REASON) or {}).get("status") == "True"}
        for key, wanted in conditions.violation_updates({k: v for k, v in by_model.items() if k in bodies}, current).items():
            written = await self._io(self._write_condition, key, bodies[key], wanted)
            if written is not None:
                self.runtime.remember_written(written)

    def _write_condition(self, key: str, body: Mapping[str, Any], wanted: tuple[str, str, str]) -> dict[str, Any] | None:
        """Set the model's SensitivePlacementViolation condition (worker thread)."""
        namespace, name = key.split("/", 1)
        return self._set_status_condition(RMD_KIND, namespace, name, body, REASON, wanted)

    async def _pools(self, nodes: list[Mapping[str, Any]]) -> None:
        """``TenancyMismatch`` of every pool whose selected nodes carry another tenancy, and an event when it
        changes. Those nodes already give the pool no capacity (``core.capacity``); the condition says why."""
        rt = self.runtime
        index = rt.indices["hybridrec_pools"]
        for pool in rt.pools():
            mismatch = capacity.tenancy_mismatch(pool, nodes)
            store = list(index[pool.name]) if pool.name in index else []
            body = fresher(store[0] if store else None, rt.written.get((POOL_KIND, "", pool.name)))
            if body is None:
                continue
            old = conditions.get_condition((body.get("status") or {}).get("conditions") or [], conditions.TENANCY_MISMATCH) or {}
            wanted = conditions.pool_tenancy_condition(pool.spec.tenancy.value, mismatch)
            if (old.get("status"), old.get("reason"), old.get("message")) == wanted or (not old and not mismatch):
                continue  # recorded already (also after a restart or a takeover), or a pool that always agreed
            written = await self._io(self._write_pool_condition, pool.name, body, wanted)
            if written is not None:
                rt.remember_written(written)
            if written is not None and (old.get("status") == "True") != bool(mismatch):
                involved = {"apiVersion": API_VERSION, "kind": POOL_KIND, "metadata": meta_of(body)}
                await self._io(self._post, involved, "Warning" if mismatch else "Normal",
                               conditions.TENANCY_MISMATCH if mismatch else "TenancyAgrees", wanted[2])

    def _write_pool_condition(self, name: str, body: Mapping[str, Any], wanted: tuple[str, str, str]) -> dict[str, Any] | None:
        """Set a pool's TenancyMismatch (worker thread). The pool's other conditions are the reconcile's
        (``Runtime.reconcile_pool``), which keeps this one: it starts from the freshest status it knows, ours included
        (``Runtime.written``)."""
        return self._set_status_condition(POOL_KIND, None, name, body, conditions.TENANCY_MISMATCH, wanted)

    def _set_status_condition(self, kind: str, namespace: str | None, name: str, body: Mapping[str, Any],
                              type_: str, wanted: tuple[str, str, str]) -> dict[str, Any] | None:
        """One condition of a model's or pool's status, compare-and-swap on resourceVersion so a reconcile's
        concurrent status write is never lost (nor ours); None when the object is gone."""
        scope = f"namespaces/{namespace}/" if namespace else ""
        plural = "recmodeldeployments" if kind == RMD_KIND else "computepools"
        path = f"/apis/{API_VERSION}/{scope}{plural}/{name}/status"
        kube = self.runtime.kube
        current: Mapping[str, Any] | None = body
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                return None
            meta = meta_of(current)
            conds = conditions.set_condition((current.get("status") or {}).get("conditions") or [], type_, *wanted,
                                             meta.get("generation"), datetime.now(UTC))
            patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"conditions": conds}}
            try:
                written = kube.request("PATCH", path, body=patch, content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status != 409:
                    raise
                current = kube.get(API_VERSION, kind, namespace, name)
                continue
            self.runtime.writes += 1
            return written
        raise RuntimeError(f"{kind} {namespace + '/' if namespace else ''}{name}: status kept changing while setting {type_}")

def _pod_path(namespace: str, name: str) -> str:
    # Pods are the one kind only the guard touches, so they are not among kube.KINDS (the reconcile's children).
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def _summary(reasons: list[str], shown: int = 4) -> str:
    return ", ".join(reasons[:shown]) + (f" and {len(reasons) - shown} more" if len(reasons) > shown else "")


def _reported(rmd: Mapping[str, Any] | None, v: Violation) -> bool:
    """The model's condition already names this pod as a violation (a restart or a takeover found it again)."""
    cond = conditions.get_condition(((rmd or {}).get("status") or {}).get("conditions") or [], REASON) or {}
    # Case-insensitive: the condition's message is a sentence, so its first "pod" is capitalised.
    return cond.get("status") == "True" and f"pod {v.namespace}/{v.pod} " in str(cond.get("message", "")).lower()
