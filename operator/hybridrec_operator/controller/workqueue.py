"""The operator's de-duplicating work queue (level-triggered, as client-go's): every watch event only enqueues a
key (``rmd:<ns>/<name>`` or ``pool:<name>``); the runtime's workers drain it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from hybridrec_operator.core.decide import CONTROLLER_TRIGGER

# The trigger a reconcile reports (status.lastDecision.trigger) names who decided what it applies. When adds of one
# key coalesce, a user's change or the cost controller's target outranks the echoes, capacity events and resyncs
# that merely arrive in the same moment; between equal ranks the first add's trigger is kept.
TRIGGER_RANK: Mapping[str, int] = {"created": 2, "spec changed": 2, CONTROLLER_TRIGGER: 1}


def stronger_trigger(held: str | None, new: str) -> str:
    """The trigger a coalesced queue entry keeps: ``new`` only when it ranks above the one already held."""
    if held is None or TRIGGER_RANK.get(new, 0) > TRIGGER_RANK.get(held, 0):
        return new
    return held


class WorkQueue:
    """De-duplicating work queue (as client-go's): a key is never processed twice at once, bursts coalesce.

    Coalesced adds keep the most important trigger (:func:`stronger_trigger`). Event-loop only (use
    ``loop.call_soon_threadsafe`` from threads).
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: dict[str, str] = {}  # key -> trigger, queued and not yet taken
        self._active: set[str] = set()
        self._dirty: dict[str, str] = {}  # re-queue after the running reconcile of the key finishes
        self._timers: dict[str, tuple[float, asyncio.TimerHandle, str]] = {}  # key -> (due, handle, trigger)
        self.failures: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: str, trigger: str, delay: float = 0.0) -> None:
        if delay > 0:
            due = time.monotonic() + delay
            current = self._timers.get(key)
            if current and current[0] <= due:  # an earlier wake-up is already set: it carries the stronger trigger
                self._timers[key] = (current[0], current[1], stronger_trigger(current[2], trigger))
                return
            if current:  # this one is earlier: it replaces the timer, keeping the old trigger only if that ranks higher
                current[1].cancel()
                trigger = stronger_trigger(trigger, current[2])
            handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
            self._timers[key] = (due, handle, trigger)
            return
        if key in self._pending:
            self._pending[key] = stronger_trigger(self._pending[key], trigger)
            return
        if key in self._active:
            self._dirty[key] = stronger_trigger(self._dirty.get(key), trigger)
            return
        self._pending[key] = trigger
        self._queue.put_nowait(key)

    def _fire(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            self.add(key, timer[2])

    async def get(self) -> tuple[str, str]:
        key = await self._queue.get()
        trigger = self._pending.pop(key)
        self._active.add(key)
        return key, trigger

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self.add(key, self._dirty.pop(key))

    def forget(self, key: str) -> None:
        """Drop retries and timers of a key whose object is gone."""
        self.failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer[1].cancel()

    def clear_timers(self) -> None:
        for _, handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
