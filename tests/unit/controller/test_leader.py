"""Leader election on a Lease (core/lease.py rules, controller/leader.py elector) against a fake clock and an
in-memory Lease store that behaves like the API server's: create fails when the Lease exists, replace fails when
the resourceVersion moved (optimistic concurrency)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridrec_operator.controller.leader import Conflict, LeaderElector
from hybridrec_operator.core.lease import LeaseRecord, Sighting, claim, expired, micro_time, observe, release

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """Monotonic seconds, moved by hand; the wall clock follows it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.now)


class FakeLeases:
    """One Lease, with resourceVersion compare-and-swap; ``down`` makes every call fail like an unreachable server."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False
        self.writes = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("API server unreachable")

    def get(self) -> tuple[LeaseRecord, str] | None:
        self._check()
        return None if self.record is None else (self.record, str(self.version))

    def create(self, record: LeaseRecord) -> str:
        self._check()
        if self.record is not None:
            raise Conflict("already exists")
        return self._write(record)

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        self._check()
        if resource_version != str(self.version):
            raise Conflict("the object has been modified")
        return self._write(record)

    def _write(self, record: LeaseRecord) -> str:
        self.record, self.version, self.writes = record, self.version + 1, self.writes + 1
        return str(self.version)


def elector(store: FakeLeases, clock: Clock, name: str, events: list[str] | None = None) -> LeaderElector:
    log = events if events is not None else []
    return LeaderElector(store, name, duration=15, renew_deadline=10, retry=2, clock=clock, wall=clock.wall,
                         on_started=lambda: log.append(f"{name} started"), on_stopped=lambda: log.append(f"{name} stopped"))


def step(*candidates: LeaderElector) -> list[bool]:
    async def run() -> list[bool]:
        return [await c.step() for c in candidates]

    return asyncio.run(run())


def test_exactly_one_of_two_candidates_leads_and_the_lease_reads_like_client_go() -> None:
    store, clock, events = FakeLeases(), Clock(), []
    a, b = elector(store, clock, "a", events), elector(store, clock, "b", events)
    assert step(a, b) == [True, False]
    assert store.record == LeaseRecord("a", 15, micro_time(clock.wall()), micro_time(clock.wall()), 0)
    assert store.record.spec()["renewTime"].endswith("Z") and store.record.spec()["holderIdentity"] == "a"
    # The holder renews every retry period; the standby keeps seeing the record change and never takes over.
    for _ in range(20):
        clock.now += 2
        assert step(a, b) == [True, False]
    assert store.record.holder == "a" and store.record.transitions == 0
    assert store.record.acquire_time == micro_time(EPOCH + timedelta(seconds=1000))  # unchanged by renewals
    assert events == ["a started"]


def test_a_killed_leader_is_replaced_once_the_lease_duration_has_passed() -> None:
    store, clock, events = FakeLeases(), Clock(), []
    a, b = elector(store, clock, "a", events), elector(store, clock, "b", events)
    step(a, b)
    # a is killed -9: it renews no more. b sees the same record and waits out the lease duration on its own clock.
    for _ in range(7):
        clock.now += 2
        assert step(b) == [False]  # 14 s: not yet
    clock.now += 2
    assert step(b) == [True]  # 16 s > 15 s since b last saw the record change
    assert store.record.holder == "b" and store.record.transitions == 1
    assert store.record.acquire_time == micro_time(clock.wall())
    assert events == ["a started", "b started"]


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_may_take_over() -> None:
    store, clock, events = FakeLeases(), Clock(), []
    a, b = elector(store, clock, "a", events), elector(store, clock, "b", events)
    step(a, b)
    store.down = True  # a cannot reach the API server; b neither, so b's view is frozen at its last sighting
    clock.now += 8
    assert step(a) == [True]  # within the renew deadline: still acting
    clock.now += 2.5
    assert a.is_leader is False  # 10.5 s without a renewal: stopped acting, without waiting for a call to return
    assert step(a) == [False] and events == ["a started", "a stopped"]
    store.down = False
    clock.now += 5  # 15.5 s since b last saw the record change
    assert step(b, a) == [True, False]  # b takes over; a, back, sees b hold it and stays a standby
    assert store.record.holder == "b" and events == ["a started", "a stopped", "b started"]


def test_a_candidate_wakes_when_the_lease_it_saw_expires() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    step(a, b)
    assert a.next_delay() == 2  # the holder renews every retry period
    assert 2 <= b.next_delay() <= 2.4  # a candidate retries with jitter...
    clock.now += 14.5
    assert b.next_delay() == pytest.approx(0.51)  # ...but no later than the expiry of the lease it saw (+10 ms)
    clock.now += 0.51
    assert step(b) == [True]


def test_concurrent_writers_cannot_both_win() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    step(a, b)

    class Racing:
        """c's view of the store: b writes between c's read and c's write."""

        def get(self) -> tuple[LeaseRecord, str] | None:
            seen = store.get()
            assert b._try_acquire_or_renew()  # noqa: SLF001 - b takes the lease right after c read it
            return seen

        create, replace = store.create, store.replace

    clock.now += 16  # a died: both b and c find the lease expired
    c = LeaderElector(Racing(), "c", duration=15, renew_deadline=10, retry=2, clock=clock, wall=clock.wall)
    c._sighting = Sighting(store.record, clock.now - 16)  # type: ignore[arg-type]  # noqa: SLF001 - c saw it 16 s ago
    with pytest.raises(Conflict):  # c's write carries the resourceVersion b just replaced
        c._try_acquire_or_renew()  # noqa: SLF001
    assert store.record is not None and store.record.holder == "b" and store.record.transitions == 1
    assert step(c) == [False] and not c.is_leader  # the elector turns the conflict into "not leader"


def test_releasing_hands_over_at_once() -> None:
    store, clock, events = FakeLeases(), Clock(), []
    a, b = elector(store, clock, "a", events), elector(store, clock, "b", events)
    step(a, b)
    asyncio.run(a.release())
    assert store.record is not None and store.record.holder == "" and not a.is_leader
    clock.now += 2
    assert step(b) == [True] and store.record.transitions == 1


def test_the_rules_alone() -> None:
    now = 50.0
    held = Sighting(LeaseRecord("x", 15, "t0", "t0", 3), at=40.0)
    assert claim(held, "y", now, EPOCH, 15) is None  # 10 s of 15 gone
    assert claim(held, "y", 56.0, EPOCH, 15) == LeaseRecord("y", 15, micro_time(EPOCH), micro_time(EPOCH), 4)
    assert claim(held, "x", now, EPOCH, 15) == LeaseRecord("x", 15, "t0", micro_time(EPOCH), 3)  # renew
    assert claim(None, "y", now, EPOCH, 15) == LeaseRecord("y", 15, micro_time(EPOCH), micro_time(EPOCH), 0)
    assert expired(Sighting(LeaseRecord(), at=now), now, 15)  # nobody holds it
    assert observe(held, held.record, 99.0) is held  # unchanged record: the sighting keeps its time
    assert observe(held, LeaseRecord("x", 15, "t0", "t1", 3), 99.0).at == 99.0
    assert release(held.record, "y", EPOCH) is None  # only the holder releases
    assert release(held.record, "x", EPOCH).holder == ""  # type: ignore[union-attr]
    assert LeaseRecord.from_lease({"spec": held.record.spec()}) == held.record


def test_a_nonsensical_timing_is_refused() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(FakeLeases(), "a", duration=10, renew_deadline=10, retry=2)


def test_configuration_of_the_election(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from hybridrec_operator.controller import config as config_module
    from hybridrec_operator.controller.config import OperatorConfig

    defaults = OperatorConfig.from_env({})
    assert defaults.leader_election and defaults.lease_name == "hybridrec"
    assert (defaults.lease_duration_seconds, defaults.lease_renew_deadline_seconds, defaults.lease_retry_seconds) == (15, 10, 2)
    assert not OperatorConfig.from_env({"HYBRIDREC_LEADER_ELECTION": "false"}).leader_election  # not bool("false")
    with pytest.raises(ValueError, match="not a boolean"):
        OperatorConfig.from_env({"HYBRIDREC_LEADER_ELECTION": "maybe"})
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        OperatorConfig.from_env({"HYBRIDREC_LEASE_DURATION_SECONDS": "5"})
    # The Lease's namespace: configured, else $POD_NAMESPACE, else the pod's ServiceAccount, else default.
    assert OperatorConfig(lease_namespace="ops").lease_namespace_or_default({"POD_NAMESPACE": "x"}) == "ops"
    assert defaults.lease_namespace_or_default({"POD_NAMESPACE": "x"}) == "x"
    sa = tmp_path / "namespace"
    sa.write_text("hybridrec-system\n")
    monkeypatch.setattr(config_module, "SERVICEACCOUNT_NAMESPACE", sa)
    assert defaults.lease_namespace_or_default({}) == "hybridrec-system"
    monkeypatch.setattr(config_module, "SERVICEACCOUNT_NAMESPACE", tmp_path / "absent")
    assert defaults.lease_namespace_or_default({}) == "default"


def test_the_cli_refuses_a_lease_timing_that_could_let_two_replicas_act(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hybridrec_operator.cli.operator import operator_app

    for name in ("HYBRIDREC_LEASE_DURATION_SECONDS", "HYBRIDREC_LEASE_RENEW_DEADLINE_SECONDS", "HYBRIDREC_LEADER_ELECTION"):
        monkeypatch.setenv(name, "")  # the CLI writes its options into the environment: restore it afterwards
        monkeypatch.delenv(name)
    result = CliRunner().invoke(operator_app, ["run", "--lease-duration", "5", "--lease-renew-deadline", "8"])
    assert result.exit_code != 0 and "renew deadline" in result.output
