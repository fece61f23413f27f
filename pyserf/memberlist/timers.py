"""A deterministic timer wheel for the sans-I/O machines.

The machines never sleep: they schedule callbacks at absolute times, and the caller (the
asyncio shell or the simulator) asks for ``next_wake()`` and calls ``run_due(now)``. The
scheduler keeps no clock of its own: every callback gets the ``now`` of the run that fires it,
and every other input carries its own ``now``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("pyserf.memberlist")


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[float], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()

    def call_at(self, when: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._counter), timer))
        return timer

    def next_wake(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every timer due at ``now`` (including ones scheduled by callbacks); a callback
        that raises is logged and the rest still run."""
        ran = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            timer.cancelled = True
            try:
                timer.callback(now)
            except Exception:
                # One failing callback must not starve the timers behind it (probes, gossip).
                log.exception("memberlist: internal error in a timer callback")
            ran += 1
        return ran

    def clear(self) -> None:
        self._heap.clear()
