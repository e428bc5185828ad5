"""The operator's work queue and peering gate, without a cluster."""

from __future__ import annotations

import asyncio
import logging

from hybridrec_operator.handlers import PeeringGate, WorkQueue


def test_keys_coalesce_and_are_never_processed_twice_at_once() -> None:
    async def scenario() -> list[tuple[str, str]]:
        q = WorkQueue()
        q.add("rmd:a", "created")
        q.add("rmd:a", "pods pending")  # coalesces with the queued one, first trigger wins
        q.add("pool:x", "capacity")
        taken = [await q.get()]
        q.add("rmd:a", "deployment changed")  # while a is being processed: re-queued after done()
        assert len(q) == 1
        taken.append(await q.get())
        q.done("rmd:a")
        taken.append(await q.get())
        return taken

    assert asyncio.run(scenario()) == [("rmd:a", "created"), ("pool:x", "capacity"), ("rmd:a", "deployment changed")]


def test_delayed_adds_keep_the_earliest_wake_up() -> None:
    async def scenario() -> tuple[str, str]:
        q = WorkQueue()
        q.add("rmd:a", "retry", 5.0)
        q.add("rmd:a", "pods pending", 0.05)  # earlier: replaces the 5 s timer
        q.add("rmd:a", "resync", 1.0)  # later than the pending one: ignored
        return await asyncio.wait_for(q.get(), timeout=1.0)

    assert asyncio.run(scenario()) == ("rmd:a", "pods pending")


def test_forget_cancels_retries() -> None:
    async def scenario() -> int:
        q = WorkQueue()
        q.add("rmd:gone", "retry", 0.05)
        q.forget("rmd:gone")
        await asyncio.sleep(0.1)
        return len(q)

    assert asyncio.run(scenario()) == 0


def test_peering_gate_follows_kopf_pause_and_resume() -> None:
    async def scenario() -> list[bool]:
        gate = PeeringGate(active=False)
        logger = logging.getLogger(PeeringGate.LOGGER)
        logger.addHandler(gate)
        logger.setLevel(logging.INFO)
        seen = [gate.active]
        try:
            logger.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
            seen.append(gate.active)
            logger.info("Pausing operations in favour of [<Peer x: priority=9>].")
            seen.append(gate.active)
        finally:
            logger.removeHandler(gate)
        return seen

    assert asyncio.run(scenario()) == [False, True, False]
