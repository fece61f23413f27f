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


class DropLog:
    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        self.logger = logger
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self._last: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def drop(self, kind: str, peer: str, reason: object, now: float) -> None:
        """Count one dropped message and log it unless this peer and kind logged recently."""
        self.counts[kind] += 1
        key = (peer, kind)
        last = self._last.get(key)
        if last is not None and now - last[0] < LOG_INTERVAL:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > MAX_TRACKED:
            self._last.popitem(last=False)
        more = f" ({suppressed} more since last report)" if suppressed else ""
        self.logger.error("%s: dropped %s from %s: %s%s", self.prefix, kind, peer,
                          str(reason)[:300], more)

    def total(self) -> int:
        return sum(self.counts.values())
