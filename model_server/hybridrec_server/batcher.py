"""Asyncio dynamic batcher.

Concurrent callers ``await batcher.submit(item)``; one worker task groups queued items into a batch
of at most ``max_batch_size``, waiting at most ``max_batch_delay_ms`` after the *first* item of the
batch arrived (whichever comes first), runs ``handler(batch)`` on an executor thread so the event
loop keeps accepting requests, and resolves each caller's future with its own result.

* isolation: if the handler raises for a whole batch, each item is re-run alone so one bad item
  fails only its own caller;
* cancellation: a caller that gave up (client disconnect, timeout) cancels its future and the item
  is dropped before it reaches the model;
* back-pressure: the queue is bounded; ``submit`` raises :class:`QueueFullError` at once when full;
* drain: ``drain()`` stops new submissions and waits until everything queued has been answered;
* bounded work per call: with ``weight`` and ``max_batch_weight`` a batch also closes once the summed weight of its
  items (for the model server: ids to score) reaches the bound, so one handler call never takes much longer than a
  bound set in the settings, however large the requests (a single heavier item still runs alone).

The batcher knows nothing about HTTP or Prometheus: metrics are fed through two optional callbacks.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The bounded queue is full; the client should retry after ``retry_after_s``."""

    def __init__(self, depth: int, retry_after_s: int = 1) -> None:
        super().__init__(f"server overloaded: {depth} requests queued")
        self.retry_after_s = retry_after_s


class ShuttingDownError(RuntimeError):
    """The batcher is draining for shutdown and accepts no new work."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued_at: float


@dataclass
class BatcherStats:
    """Counters kept for tests and the benchmark."""

    batches: int = 0
    items: int = 0
    dropped_cancelled: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class DynamicBatcher(Generic[T, R]):
    """Group concurrent submissions into batches for ``handler``."""

    def __init__(
        self,
        handler: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 64,
        max_batch_delay_ms: float = 5.0,
        max_queue: int = 1024,
        executor: concurrent.futures.Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        keep_batch_sizes: bool = False,
        weight: Callable[[T], int] | None = None,
        max_batch_weight: int | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_batch_delay_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_batch_delay_ms >= 0")
        self._handler = handler
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_ms / 1000.0
        self.max_queue = max_queue
        self._own_executor = executor is None
        # One thread: the model is not re-entrant-friendly and torch already uses intra-op threads.
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batcher")
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._keep_sizes = keep_batch_sizes
        if max_batch_weight is not None and max_batch_weight < 1:
            raise ValueError("max_batch_weight must be >= 1")
        self._weight = weight if max_batch_weight is not None else None
        self.max_batch_weight = max_batch_weight
        self._queue: collections.deque[_Pending[T, R]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatcherStats()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker task on the running loop."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    @property
    def depth(self) -> int:
        """Items waiting (not counting the batch being executed)."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        """False once draining has started."""
        return self._accepting

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new items and wait until every queued item is answered. Returns False on timeout."""
        self._accepting = False
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, timeout_s: float | None = 30.0) -> None:
        """Drain, then stop the worker; leftover items (only after a timeout) get ShuttingDownError."""
        await self.drain(timeout_s)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(ShuttingDownError("server shutting down"))
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ submission
    def _check_capacity(self, n: int) -> None:
        if not self._accepting:
            raise ShuttingDownError("server shutting down")
        if len(self._queue) + n > self.max_queue:
            raise QueueFullError(len(self._queue))

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append(_Pending(item, fut, loop.time()))
        self._idle.clear()
        if len(self._queue) >= self.max_batch_size:
            self._batch_full.set()
        self._wakeup.set()
        return fut

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(len(self._queue))

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (raises the item's own exception)."""
        self._check_capacity(1)
        fut = self._enqueue(item)
        self._report_depth()
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue several items all-or-nothing (capacity is checked for the whole group) and gather results."""
        self._check_capacity(len(items))
        futures = [self._enqueue(item) for item in items]
        self._report_depth()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    # ------------------------------------------------------------------ worker
    async def _collect(self) -> list[_Pending[T, R]]:
        """Wait for a batch: full, or the oldest item has waited ``max_batch_delay``."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._idle.set()
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._queue[0].enqueued_at + self.max_batch_delay_s
        while len(self._queue) < self.max_batch_size and self._accepting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._batch_full.clear()
            try:
                await asyncio.wait_for(self._batch_full.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[_Pending[T, R]] = []
        total = 0
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue[0]
            if pending.future.done():  # cancelled by its caller while queued
                self._queue.popleft()
                self.stats.dropped_cancelled += 1
                continue
            if self._weight is not None and self.max_batch_weight is not None:
                w = max(1, self._weight(pending.item))
                if batch and total + w > self.max_batch_weight:
                    break  # the rest waits for the next call: bounded work per handler call
                total += w
            batch.append(self._queue.popleft())
        if len(self._queue) < self.max_batch_size:
            self._batch_full.clear()
        self._report_depth()
        return batch

    def _run_isolated(self, items: list[T]) -> list[R | BaseException]:
        """Run the handler on the whole batch; if it fails, re-run each item alone (executor thread)."""
        try:
            results = list(self._handler(items))
            if len(results) != len(items):
                raise RuntimeError(f"handler returned {len(results)} results for {len(items)} items")
            return results
        except Exception as batch_exc:  # noqa: BLE001 - isolate, then report per item
            if len(items) == 1:
                return [batch_exc]
            log.warning("batch of %d failed (%s); retrying items one by one", len(items), batch_exc)
            out: list[R | BaseException] = []
            for item in items:
                try:
                    out.append(self._handler([item])[0])
                except Exception as exc:  # noqa: BLE001
                    out.append(exc)
            return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            self.stats.batches += 1
            self.stats.items += len(batch)
            if self._keep_sizes:
                self.stats.batch_sizes.append(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self._run_isolated, [p.item for p in batch])
            except Exception as exc:  # executor itself broken: fail this batch, keep serving
                results = [exc] * len(batch)
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
            if not self._queue:
                self._idle.set()
