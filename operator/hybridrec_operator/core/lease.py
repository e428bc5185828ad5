"""Leader election on a ``coordination.k8s.io/v1`` Lease: the rules, without I/O (``controller/leader.py`` reads and
writes the Lease and keeps the clock).

The convention is client-go's (``k8s.io/client-go/tools/leaderelection``), so ``kubectl get lease`` reads the same
as for any Kubernetes controller:

* ``spec.holderIdentity`` names the replica that acts; ``spec.renewTime`` is refreshed by it every retry period;
  ``spec.acquireTime`` and ``spec.leaseTransitions`` change only when the holder changes.
* A candidate never compares ``renewTime`` with its own wall clock (clocks of two machines disagree). It notes, on
  its own monotonic clock, when it last saw the record change; the lease has expired when the record stayed the
  same for ``leaseDurationSeconds`` since then.
* Writes are compare-and-swap on ``metadata.resourceVersion``: of two candidates writing at once, one gets 409.
* A holder releases on a clean shutdown by clearing ``holderIdentity``, so a successor takes over at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


def micro_time(moment: datetime) -> str:
    """A Lease time (``MicroTime``: RFC 3339 with microseconds, UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class Sighting:
    """A record as this candidate last saw it, and when (its own monotonic clock)."""

    record: LeaseRecord
    at: float


def observe(last: Sighting | None, record: LeaseRecord, now: float) -> Sighting:
    """The sighting after reading ``record`` at ``now``: its time moves only when the record changed (a live
    holder renews, so its record keeps changing; a dead one's record stays the same)."""
    if last is not None and last.record == record:
        return last
    return Sighting(record, now)


def expired(sighting: Sighting, now: float, default_duration: float) -> bool:
    """Whether the holder seen in ``sighting`` lost the lease by ``now`` (or nobody holds it)."""
    if not sighting.record.holder:
        return True
    duration = sighting.record.duration_seconds or default_duration
    return sighting.at + duration <= now


def claim(current: Sighting | None, identity: str, now: float, wall: datetime,
          duration_seconds: int) -> LeaseRecord | None:
    """The record to write to take or keep the lease, or None while another holder's lease runs.

    ``current`` is None when no Lease exists (the record then creates it).
    """
    stamp = micro_time(wall)
    if current is None:
        return LeaseRecord(identity, duration_seconds, stamp, stamp, 0)
    record = current.record
    if record.holder == identity:
        return replace(record, duration_seconds=duration_seconds, renew_time=stamp)
    if not expired(current, now, duration_seconds):
        return None
    return LeaseRecord(identity, duration_seconds, stamp, stamp, record.transitions + 1)


def release(record: LeaseRecord, identity: str, wall: datetime) -> LeaseRecord | None:
    """The record that hands the lease back on shutdown (None when someone else holds it by now)."""
    if record.holder != identity:
        return None
    return replace(record, holder="", duration_seconds=1, renew_time=micro_time(wall))
