"""Which replica acts: leader election on a ``coordination.k8s.io/v1`` Lease (rules in ``core/lease.py``).

Every replica keeps watching (its kopf indexes stay warm); only the holder of the Lease reconciles, writes and runs
the cost controller. The holder renews every ``retry`` seconds; when it could not renew for ``renew_deadline``
seconds it stops acting at once (:attr:`LeaderElector.is_leader` turns False on its own clock, even while a call to
the API server hangs), which is before any other replica may take the Lease over (``duration`` > ``renew_deadline``).
A replica that becomes the holder calls ``on_started`` (the runtime then re-plans every model).

Why not ``kubernetes.leaderelection`` from the official client: it runs its callbacks in threads, never returns to
candidacy after losing the lease, keeps no ``leaseTransitions`` and calls ``sys.exit`` on a bad configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from hybridrec_operator.controller.kube import Kube, api_message, object_path
from hybridrec_operator.core.lease import LeaseRecord, Sighting, claim, observe, release

log = logging.getLogger("hybridrec.leader")


class Conflict(Exception):
    """Someone else wrote the Lease first (HTTP 409): re-read and decide again."""


class LeaseStore(Protocol):
    """Reads and compare-and-swap writes of one Lease (blocking; the elector calls it from a thread)."""

    def get(self) -> tuple[LeaseRecord, str] | None: ...  # record and resourceVersion; None when absent
    def create(self, record: LeaseRecord) -> str: ...  # new resourceVersion; Conflict when it exists
    def replace(self, record: LeaseRecord, resource_version: str) -> str: ...  # Conflict when it changed


class KubeLeaseStore:
    """The Lease ``namespace/name`` on the API server."""

    API_VERSION = "coordination.k8s.io/v1"

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.path = object_path(self.API_VERSION, "Lease", namespace, name)

    def _body(self, record: LeaseRecord, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "hybridrec"}}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": self.API_VERSION, "kind": "Lease", "metadata": meta, "spec": record.spec()}

    def get(self) -> tuple[LeaseRecord, str] | None:
        lease = self.kube.get(self.API_VERSION, "Lease", self.namespace, self.name)
        if lease is None:
            return None
        return LeaseRecord.from_lease(lease), str(lease["metadata"].get("resourceVersion", ""))

    def create(self, record: LeaseRecord) -> str:
        return self._write("POST", object_path(self.API_VERSION, "Lease", self.namespace), self._body(record))

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        # PUT with resourceVersion: the API server refuses it (409) when anyone wrote since we read.
        return self._write("PUT", self.path, self._body(record, resource_version))

    def _write(self, method: str, path: str, body: dict[str, Any]) -> str:
        try:
            written = self.kube.request(method, path, body=body)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(api_message(exc)) from exc
            raise
        return str((written.get("metadata") or {}).get("resourceVersion", ""))


class AlwaysLeader:
    """Leader election off (``--standalone``): this replica always acts."""

    is_leader = True
    identity = "standalone"


class LeaderElector:
    """A candidate for one Lease; :meth:`run` until cancelled, then :meth:`release`."""

    def __init__(self, store: LeaseStore, identity: str, *, duration: float = 15.0, renew_deadline: float = 10.0,
                 retry: float = 2.0, on_started: Callable[[], None] | None = None,
                 on_stopped: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not duration > renew_deadline > retry > 0:
            raise ValueError("lease duration > renew deadline > retry period > 0 is required")
        self.store, self.identity = store, identity
        self.duration, self.renew_deadline, self.retry = duration, renew_deadline, retry
        self.on_started, self.on_stopped = on_started, on_stopped
        self.clock, self.wall = clock, wall
        self._sighting: Sighting | None = None
        self._version: str | None = None
        self._leading = False  # the last write was ours (the deadline still applies)
        self._acting = False  # what was last reported through on_started/on_stopped
        self._renewed_at = float("-inf")

    @property
    def is_leader(self) -> bool:
        """Holding the lease and renewed within the renew deadline (checked now, not at the last attempt)."""
        return self._leading and self.clock() - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str:
        """Who holds the lease as last seen ("" when unknown or released)."""
        return self._sighting.record.holder if self._sighting else ""

    async def step(self) -> bool:
        """One attempt to acquire or renew; True when this replica holds the lease afterwards."""
        try:
            held = await asyncio.to_thread(self._try_acquire_or_renew)
        except Conflict:
            held = False  # lost a race: the next attempt re-reads
        except Exception as exc:  # noqa: BLE001 - the API server may be away for a moment; the deadline decides
            reason = api_message(exc) if isinstance(exc, ApiException) else str(exc)
            log.warning("leader election: lease %s unavailable: %s", getattr(self.store, "name", "?"), reason)
            held = False
        self._transition(held)
        return self.is_leader

    def _try_acquire_or_renew(self) -> bool:
        now = self.clock()
        found = self.store.get()
        if found is None:
            self._sighting, self._version = None, None
        else:
            record, self._version = found
            self._sighting = observe(self._sighting, record, now)
        wanted = claim(self._sighting, self.identity, now, self.wall(), int(round(self.duration)))
        if wanted is None:
            return False  # another holder's lease still runs
        if self._version is None:
            self._version = self.store.create(wanted)
        else:
            self._version = self.store.replace(wanted, self._version)
        self._sighting = Sighting(wanted, now)
        self._renewed_at = now
        return True

    def _transition(self, held: bool) -> None:
        if held:
            self._leading = True
        elif self.holder not in ("", self.identity):
            self._leading = False  # someone else holds it now
        acting = self.is_leader  # False too when our renewals missed the deadline
        if acting and not self._acting:
            log.info("leader election: %s holds lease %s (transitions %d): this replica acts now", self.identity,
                     getattr(self.store, "name", "?"), self._sighting.record.transitions if self._sighting else 0)
            if self.on_started is not None:
                self.on_started()
        elif self._acting and not acting:
            log.warning("leader election: %s no longer holds lease %s (holder %r): this replica stops acting",
                        self.identity, getattr(self.store, "name", "?"), self.holder)
            if self.on_stopped is not None:
                self.on_stopped()
        self._acting = acting

    def next_delay(self) -> float:
        """Seconds until the next attempt: the holder renews every retry period; a candidate retries with jitter
        (so candidates do not hit the API server in step), but no later than the moment the lease it saw expires,
        so a dead holder is replaced one lease duration after its last renewal was seen, not up to a retry later."""
        if self._leading:
            return self.retry
        delay = self.retry * (1 + 0.2 * random.random())
        if self._sighting is not None and self._sighting.record.holder:
            duration = self._sighting.record.duration_seconds or self.duration
            delay = min(delay, max(0.05, self._sighting.at + duration - self.clock() + 0.01))
        return delay

    async def run(self) -> None:
        """Acquire, then keep renewing; forever (cancel to stop)."""
        while True:
            await self.step()
            await asyncio.sleep(self.next_delay())

    async def release(self) -> None:
        """Hand the lease back (clean shutdown): a successor takes over without waiting for the lease to expire."""
        if not self._leading:
            return
        self._leading = self._acting = False
        try:
            await asyncio.to_thread(self._release)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("leader election: could not release the lease: %s", exc)

    def _release(self) -> None:
        found = self.store.get()
        if found is None:
            return
        record, version = found
        handed = release(record, self.identity, self.wall())
        if handed is not None:
            self.store.replace(handed, version)
            log.info("leader election: %s released the lease", self.identity)
