"""Dynamic batcher behaviour: timing, size cap, ordering, isolation, cancellation, back-pressure, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Coroutine, TypeVar

import pytest

from hybridrec_server.batcher import DynamicBatcher, QueueFullError, ShuttingDownError

T = TypeVar("T")


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async test body on a fresh loop (no pytest-asyncio needed)."""
    return asyncio.run(coro_fn())


class Recorder:
    """Handler that doubles numbers, records batches and the thread it ran on, and can be held."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[Any]) -> list[Any]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on!r}")
        return [x * 2 for x in items]


async def wait_entered(rec: Recorder) -> None:
    """Wait (without blocking the loop) until the handler is executing."""
    for _ in range(500):
        if rec.entered.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("handler never started")


def test_lone_request_waits_about_max_delay() -> None:
    async def body() -> float:
        b = DynamicBatcher(Recorder(), max_batch_size=8, max_batch_delay_ms=60)
        b.start()
        started = time.perf_counter()
        assert await b.submit(21) == 42
        elapsed = time.perf_counter() - started
        await b.stop()
        return elapsed

    elapsed = run(body)
    assert 0.055 <= elapsed < 0.5


def test_full_batch_does_not_wait_for_delay() -> None:
    async def body() -> tuple[float, list[list[int]]]:
        rec = Recorder()
        b = DynamicBatcher(rec, max_batch_size=4, max_batch_delay_ms=5_000)
        b.start()
        started = time.perf_counter()
        results = await asyncio.gather(*(b.submit(i) for i in range(4)))
        assert results == [0, 2, 4, 6]
        elapsed = time.perf_counter() - started
        await b.stop()
        return elapsed, rec.batches

    elapsed, batches = run(body)
    assert elapsed < 1.0
    assert batches == [[0, 1, 2, 3]]


def test_max_batch_size_respected_and_results_go_to_their_callers() -> None:
    async def body() -> tuple[list[int], Recorder, DynamicBatcher[int, int]]:
        rec = Recorder()
        sizes: list[int] = []
        b = DynamicBatcher(rec, max_batch_size=8, max_batch_delay_ms=20, on_batch=sizes.append)
        b.start()
        results = await asyncio.gather(*(b.submit(i) for i in range(100)))
        await b.stop()
        assert results == [2 * i for i in range(100)]
        return sizes, rec, b

    sizes, rec, b = run(body)
    assert max(sizes) == 8 and sum(sizes) == 100
    assert all(len(batch) <= 8 for batch in rec.batches)
    # arrival order is kept inside and across batches
    assert [x for batch in rec.batches for x in batch] == list(range(100))
    assert b.stats.items == 100


def test_handler_runs_off_the_event_loop_thread() -> None:
    async def body() -> tuple[int, Recorder]:
        rec = Recorder()
        b = DynamicBatcher(rec, max_batch_size=2, max_batch_delay_ms=1)
        b.start()
        await b.submit(1)
        await b.stop()
        return threading.get_ident(), rec

    loop_thread, rec = run(body)
    assert rec.threads and loop_thread not in rec.threads


def test_one_bad_request_does_not_fail_the_batch() -> None:
    async def body() -> list[Any]:
        rec = Recorder(fail_on=13)
        b = DynamicBatcher(rec, max_batch_size=8, max_batch_delay_ms=50)
        b.start()
        out = await asyncio.gather(b.submit(1), b.submit(13), b.submit(3), return_exceptions=True)
        await b.stop()
        return out

    ok1, bad, ok3 = run(body)
    assert ok1 == 2 and ok3 == 6
    assert isinstance(bad, ValueError) and "13" in str(bad)


def test_cancelled_request_is_dropped_before_the_model() -> None:
    async def body() -> tuple[Recorder, DynamicBatcher[int, int], int, int]:
        rec = Recorder()
        rec.gate.clear()  # hold the first batch inside the handler
        b = DynamicBatcher(rec, max_batch_size=1, max_batch_delay_ms=0)
        b.start()
        first = asyncio.create_task(b.submit(1))
        await wait_entered(rec)
        doomed = asyncio.create_task(b.submit(2))
        kept = asyncio.create_task(b.submit(3))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0.01)
        rec.gate.set()
        r1, r3 = await first, await kept
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await b.stop()
        return rec, b, r1, r3

    rec, b, r1, r3 = run(body)
    assert (r1, r3) == (2, 6)
    assert rec.batches == [[1], [3]]
    assert b.stats.dropped_cancelled == 1


def test_queue_full_raises_immediately() -> None:
    async def body() -> tuple[list[int], list[int]]:
        rec = Recorder()
        rec.gate.clear()
        depths: list[int] = []
        b = DynamicBatcher(rec, max_batch_size=1, max_batch_delay_ms=0, max_queue=2, on_queue_depth=depths.append)
        b.start()
        running = asyncio.create_task(b.submit(1))
        await wait_entered(rec)  # item 1 left the queue and is executing
        queued = [asyncio.create_task(b.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.01)
        assert b.depth == 2
        with pytest.raises(QueueFullError) as info:
            await b.submit(4)
        assert info.value.retry_after_s >= 1
        with pytest.raises(QueueFullError):
            await b.submit_many([5])
        rec.gate.set()
        results = [await running] + [await t for t in queued]
        await b.stop()
        return results, depths

    results, depths = run(body)
    assert results == [2, 4, 6]
    assert max(depths) == 2 and depths[-1] == 0


def test_drain_finishes_queued_work_and_refuses_new() -> None:
    async def body() -> tuple[list[int], bool]:
        rec = Recorder()
        rec.gate.clear()
        b = DynamicBatcher(rec, max_batch_size=2, max_batch_delay_ms=1)
        b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(5)]
        await wait_entered(rec)
        drain = asyncio.create_task(b.drain(timeout_s=10))
        await asyncio.sleep(0.01)
        with pytest.raises(ShuttingDownError):
            await b.submit(99)
        assert not drain.done()  # still waiting for the held batch
        rec.gate.set()
        drained = await drain
        results = [await t for t in tasks]
        await b.stop()
        return results, drained

    results, drained = run(body)
    assert drained is True
    assert results == [0, 2, 4, 6, 8]


def test_submit_many_is_all_or_nothing_and_ordered() -> None:
    async def body() -> list[int]:
        b = DynamicBatcher(Recorder(), max_batch_size=3, max_batch_delay_ms=1, max_queue=10)
        b.start()
        with pytest.raises(QueueFullError):
            await b.submit_many(list(range(11)))
        assert b.depth == 0
        out = await b.submit_many(list(range(7)))
        await b.stop()
        return out

    assert run(body) == [0, 2, 4, 6, 8, 10, 12]


def test_invalid_configuration_rejected() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), max_batch_size=0)
