"""The operator's work queue and peering gate, without a cluster."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from hybridrec_operator.controller import handlers
from hybridrec_operator.controller.handlers import CONTROLLER_TRIGGER, PeeringGate, WorkQueue


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


def test_a_coalesced_key_keeps_the_most_important_trigger() -> None:
    async def scenario() -> list[tuple[str, str]]:
        q = WorkQueue()
        q.add("rmd:a", "pods pending")
        q.add("rmd:a", CONTROLLER_TRIGGER)  # the controller's target outranks an echo that came first
        q.add("rmd:a", "resync")  # ...and is not lost to a weaker one that comes later
        q.add("rmd:b", "spec changed")
        q.add("rmd:b", CONTROLLER_TRIGGER)  # a user's change outranks the controller
        taken = [await q.get(), await q.get()]
        q.add("rmd:a", "deployment drifted")  # while a runs: re-queued once done...
        q.add("rmd:a", CONTROLLER_TRIGGER)  # ...under the controller's trigger
        q.done("rmd:a")
        taken.append(await q.get())
        return taken

    assert asyncio.run(scenario()) == [("rmd:a", CONTROLLER_TRIGGER), ("rmd:b", "spec changed"), ("rmd:a", CONTROLLER_TRIGGER)]


def test_a_delayed_retry_keeps_the_stronger_trigger_of_the_timers_it_merges() -> None:
    async def scenario() -> tuple[str, str]:
        q = WorkQueue()
        q.add("rmd:a", "pods pending", 0.05)
        q.add("rmd:a", CONTROLLER_TRIGGER, 5.0)  # later: the earlier wake-up fires, but under this trigger
        return await asyncio.wait_for(q.get(), timeout=1.0)

    assert asyncio.run(scenario()) == ("rmd:a", CONTROLLER_TRIGGER)


@pytest.fixture
def restore_runtime() -> Iterator[None]:
    """The test installs a stand-in runtime (just the loop and the queue request_replan touches); put back the real one."""
    saved = handlers.RUNTIME
    yield
    handlers.RUNTIME = saved


def test_request_replan_queues_at_once_on_the_loop_and_through_the_loop_from_threads(restore_runtime: None) -> None:
    async def scenario() -> tuple[int, int, list[tuple[str, str]]]:
        queue = WorkQueue()
        handlers.RUNTIME = SimpleNamespace(loop=asyncio.get_running_loop(), queue=queue)  # type: ignore[assignment]
        assert handlers.request_replan("shop/a", trigger=CONTROLLER_TRIGGER)
        on_loop = len(queue)  # queued before any other task could run
        thread = threading.Thread(target=handlers.request_replan, args=("shop/b",), kwargs={"trigger": CONTROLLER_TRIGGER})
        thread.start()
        thread.join()
        from_thread = len(queue)  # not yet: the loop has not run the callback
        await asyncio.sleep(0)
        return on_loop, from_thread, [await queue.get(), await queue.get()]

    on_loop, from_thread, taken = asyncio.run(scenario())
    assert (on_loop, from_thread) == (1, 1)
    assert taken == [("rmd:shop/a", CONTROLLER_TRIGGER), ("rmd:shop/b", CONTROLLER_TRIGGER)]
    handlers.RUNTIME = None
    assert handlers.request_replan("shop/a") is False  # the operator is not running in this process
