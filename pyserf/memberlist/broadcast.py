"""Transmit-limited broadcast queue: each message is piggybacked a bounded number of times.

Selection order follows memberlist: fewest transmissions first, then larger messages, then
newest. A message keyed by a node name replaces any older queued message about that node.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from pyserf.memberlist.profiles import retransmit_limit


class Broadcast:
    __slots__ = ("key", "msg", "transmits", "seq", "on_finished")

    def __init__(self, key: str | None, msg: bytes, seq: int,
                 on_finished: Callable[[], None] | None) -> None:
        self.key = key
        self.msg = msg
        self.transmits = 0
        self.seq = seq
        self.on_finished = on_finished

    def finish(self) -> None:
        if self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback()


class BroadcastQueue:
    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int],
                 on_queued: Callable[[], None] | None = None) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.on_queued = on_queued
        self._items: list[Broadcast] = []
        self._by_key: dict[str, Broadcast] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, msg: bytes, key: str | None = None,
              on_finished: Callable[[], None] | None = None) -> None:
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._items.remove(old)
                old.finish()
        item = Broadcast(key, msg, next(self._seq), on_finished)
        self._items.append(item)
        if key is not None:
            self._by_key[key] = item
        if self.on_queued is not None:
            self.on_queued()

    def get(self, overhead: int, limit: int) -> list[bytes]:
        """Take messages fitting in ``limit`` bytes (each costing ``overhead`` extra)."""
        items = self._items
        if not items or limit <= overhead:
            return []
        max_transmits = retransmit_limit(self.retransmit_mult, self.num_nodes())
        items.sort(key=lambda b: (b.transmits, -len(b.msg), -b.seq))
        used = 0
        out: list[bytes] = []
        finished: list[Broadcast] = []
        for item in items:
            size = len(item.msg) + overhead
            if used + size > limit:
                if limit - used <= overhead:
                    break
                continue
            used += size
            out.append(item.msg)
            item.transmits += 1
            if item.transmits >= max_transmits:
                finished.append(item)
        for item in finished:
            self._remove(item)
            item.finish()
        return out

    def _remove(self, item: Broadcast) -> None:
        self._items.remove(item)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]

    def prune(self, max_retain: int) -> None:
        """Drop the oldest messages above ``max_retain`` (serf's queue-depth guard)."""
        if len(self._items) <= max_retain:
            return
        self._items.sort(key=lambda b: b.seq)
        for item in self._items[: len(self._items) - max_retain]:
            self._remove(item)
            item.finish()

    def reset(self) -> None:
        for item in list(self._items):
            item.finish()
        self._items.clear()
        self._by_key.clear()
