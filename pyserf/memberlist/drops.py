"""Accounting for messages dropped at the decode boundary.

A hostile peer can send thousands of bad messages a second; logging each would itself be a
denial of service (disk, CPU, a monitor client's buffer). Every drop is counted by kind, and a
log line is written at most once per second per (peer, kind), with the number suppressed since.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

LOG_INTERVAL = 1.0
# Remember this many (peer, kind) pairs for rate limiting; the oldest is forgotten first, so
# spoofed source addresses cannot grow the table.
MAX_TRACKED = 4096


class RateLimit:
    """At most one report per ``interval`` seconds; counts the occurrences held back. Time is
    passed in, so the sans-I/O machines and the asyncio shell share it."""

    __slots__ = ("interval", "suppressed", "_last")

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last: float | None = None

    def allow_at(self, now: float) -> int | None:
        """None to stay quiet; otherwise how many occurrences were held back since the last
        report that got through."""
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return None
        self._last = now
        held, self.suppressed = self.suppressed, 0
        return held


class DropLog:
    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        self.logger = logger
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self._limits: OrderedDict[tuple[str, str], RateLimit] = OrderedDict()

    def drop(self, kind: str, peer: str, reason: object, now: float) -> None:
        """Count one dropped message and log it unless this peer and kind logged recently."""
        self.counts[kind] += 1
        key = (peer, kind)
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = RateLimit()
            while len(self._limits) > MAX_TRACKED:
                self._limits.popitem(last=False)
        else:
            self._limits.move_to_end(key)
        held = limit.allow_at(now)
        if held is None:
            return
        more = f" ({held} more since last report)" if held else ""
        self.logger.error("%s: dropped %s from %s: %s%s", self.prefix, kind, peer,
                          str(reason)[:300], more)

    def total(self) -> int:
        return sum(self.counts.values())
