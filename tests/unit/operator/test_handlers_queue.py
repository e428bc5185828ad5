"""The operator's work queue, the seam's re-plan requests and the leadership gate of the workers, without a cluster."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.controller.workqueue import WorkQueue
from hybridrec_operator.core.decide import CONTROLLER_TRIGGER


class Switch:
    """A leadership the test flips by hand."""

    def __init__(self, is_leader: bool) -> None:
        self.is_leader = is_leader


def runtime(loop: asyncio.AbstractEventLoop | None, seam: ControlSeam, leader: Any) -> Runtime:
    """A runtime without an API server: the queue, the seam and the leadership are real."""
    return Runtime(config=OperatorConfig(), kube=None, indices={"hybridrec_rmds": {}, "hybridrec_pools": {}},  # type: ignore[arg-type]
                   loop=loop, executor=None, seam=seam, leader=leader, identity="unit")  # type: ignore[arg-type]


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


def test_only_the_leader_reconciles_and_taking_over_replans_everything() -> None:
    """The workers follow the leadership (a Lease, see test_leader.py): a standby drops what it takes, the leader
    reconciles, and becoming leader queues every model and pool again."""

    async def scenario() -> list[Any]:
        seen: list[str] = []
        switch = Switch(False)
        rt = runtime(asyncio.get_running_loop(), ControlSeam(), switch)
        rt.indices = {"hybridrec_rmds": {("shop", "a"): [{}], ("shop", "b"): [{}]}, "hybridrec_pools": {"t4": [{}]}}

        async def reconcile(item: str, trigger: str) -> None:
            seen.append(f"{item}/{trigger}")

        rt.reconcile = reconcile  # type: ignore[method-assign]
        worker = asyncio.create_task(rt.worker())
        rt.queue.add("rmd:shop/a", "created")
        await asyncio.sleep(0.01)
        standby = (list(seen), len(rt.queue))
        switch.is_leader = True
        rt.config = OperatorConfig(pool_status_delay=0.01)
        rt.started_leading()
        await asyncio.sleep(0.1)
        worker.cancel()
        return [standby, sorted(seen)]

    standby, acted = asyncio.run(scenario())
    assert standby == ([], 0)  # taken off the queue, not reconciled
    assert acted == ["pool:t4/capacity", "rmd:shop/a/leader elected", "rmd:shop/b/leader elected"]


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


def test_request_replan_queues_at_once_on_the_loop_and_through_the_loop_from_threads() -> None:
    seam = ControlSeam()

    async def scenario() -> tuple[int, int, list[tuple[str, str]]]:
        rt = runtime(asyncio.get_running_loop(), seam, Switch(True))
        seam.install(rt.request_replan)
        queue = rt.queue
        assert seam.request_replan("shop/a", trigger=CONTROLLER_TRIGGER)
        on_loop = len(queue)  # queued before any other task could run
        thread = threading.Thread(target=seam.request_replan, args=("shop/b",), kwargs={"trigger": CONTROLLER_TRIGGER})
        thread.start()
        thread.join()
        from_thread = len(queue)  # not yet: the loop has not run the callback
        await asyncio.sleep(0)
        return on_loop, from_thread, [await queue.get(), await queue.get()]

    on_loop, from_thread, taken = asyncio.run(scenario())
    assert (on_loop, from_thread) == (1, 1)
    assert taken == [("rmd:shop/a", CONTROLLER_TRIGGER), ("rmd:shop/b", CONTROLLER_TRIGGER)]
    seam.install(None)
    assert seam.request_replan("shop/a") is False  # the operator is not running in this process
