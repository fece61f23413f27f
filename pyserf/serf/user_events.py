"""User events: sending one, the recent-events buffer that drops duplicates, and holding
gossiped events while a join that ignores old events waits for its push-pull."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyserf.memberlist.metrics import Metrics
from pyserf.serf import messages as m
from pyserf.serf.config import SerfError
from pyserf.serf.events import (
    Handle,
    SerfEvent,
    UserEventQueued,
    UserEventReceived,
    new_handle,
)

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue
    from pyserf.memberlist.drops import DropLog
    from pyserf.serf.clock import LamportClock
    from pyserf.serf.config import SerfConfig

log = logging.getLogger("pyserf.serf")

USER_EVENT_SIZE_HARD_LIMIT = 9216

# Bytes of names and payloads kept in the recent-events buffer (which push-pull shares). Go keeps
# whatever arrives. The first event at each Lamport time is always kept (512 slots of 9 KiB:
# 4.6 MiB), so a flood cannot lock out fresh events; further events sharing a time, which only
# a flood produces in bulk, are refused past this budget.
MAX_EVENT_BUFFER_BYTES = 16 * 1024 * 1024
# While a join that ignores old events waits for its push-pull, gossiped user events are held
# back (serf accepts them before it learns the cluster's event time, replaying history it was
# told to skip); bounded by count and by bytes.
MAX_HELD_EVENTS = 1024
MAX_HELD_EVENT_BYTES = 1024 * 1024


class UserEvents:
    """Serf's user event handling; mixed into Serf, whose state it uses."""

    # Serf's state this part reads and writes (set by Serf.__init__).
    config: SerfConfig
    drops: DropLog
    metrics: Metrics
    _events: list[SerfEvent]
    event_clock: LamportClock
    event_min_time: int
    event_buffer: list[tuple[int, list[tuple[str, bytes]]] | None]
    _event_buffer_bytes: int
    event_broadcasts: BroadcastQueue
    _held_events: list[tuple[m.UserEvent, bytes]]
    _held_event_bytes: int

    if TYPE_CHECKING:
        def _rebroadcast(self, queue: BroadcastQueue, buf: bytes, now: float) -> None: ...

    def user_event(self, name: str, payload: bytes, coalesce: bool, now: float) -> Handle:
        """Fire a user event: delivered here and queued for gossip at once, which a
        UserEventQueued naming the handle reports. An event over the size limits raises
        SerfError (nothing is sent and no handle is made)."""
        limit = self.config.user_event_size_limit
        size = len(name.encode()) + len(payload)
        if size > limit:
            raise SerfError(f"user event exceeds configured limit of {limit} bytes before "
                            "encoding")
        if size > USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"user event exceeds sane limit of {USER_EVENT_SIZE_HARD_LIMIT} "
                            "bytes before encoding")
        msg = m.UserEvent(self.event_clock.time, name, payload, coalesce)
        raw = msg.encode()
        if len(raw) > limit:
            raise SerfError(f"encoded user event exceeds configured limit of {limit} bytes "
                            "after encoding")
        self.event_clock.increment()
        self._handle_user_event(msg, now)
        self.event_broadcasts.queue(raw, now=now)
        handle = new_handle()
        self._events.append(UserEventQueued(handle, None, now))
        return handle

    def _handle_user_event(self, msg: m.UserEvent, now: float) -> bool:
        self.event_clock.witness(msg.ltime)
        if msg.ltime < self.event_min_time:
            return False
        size = len(self.event_buffer)
        current = self.event_clock.time
        if current > size and msg.ltime < current - size:
            log.warning("serf: received old event %s from time %d (current: %d)",
                        msg.name, msg.ltime, current)
            return False
        idx = msg.ltime % size
        seen = self.event_buffer[idx]
        item = (msg.name, msg.payload)
        cost = len(msg.name) + len(msg.payload)
        if seen is not None and seen[0] == msg.ltime:
            if item in seen[1]:
                return False
            if self._event_buffer_bytes + cost > MAX_EVENT_BUFFER_BYTES:
                self.drops.drop("serf user-event (buffer full)", "a peer", f"recent events "
                                f"hold {self._event_buffer_bytes} bytes", now)
                return False
            if len(seen[1]) >= m.MAX_SLOT_EVENTS:
                self.drops.drop("serf user-event (slot full)", "a peer", f"more than "
                                f"{m.MAX_SLOT_EVENTS} events at time {msg.ltime}", now)
                return False
            seen[1].append(item)
        else:
            if seen is not None:
                self._event_buffer_bytes -= sum(len(n) + len(p) for n, p in seen[1])
            self.event_buffer[idx] = (msg.ltime, [item])
        self._event_buffer_bytes += cost
        self.metrics.incr("serf.events")
        self.metrics.incr("serf.events." + msg.name)
        self._events.append(UserEventReceived(msg.ltime, msg.name, msg.payload, msg.cc))
        return True

    def _hold_event(self, msg: m.UserEvent, buf: bytes, now: float) -> None:
        """Keep a gossiped event until the pending join has learned the cluster's event time."""
        self.event_clock.witness(msg.ltime)
        if len(self._held_events) >= MAX_HELD_EVENTS or \
                self._held_event_bytes + len(buf) > MAX_HELD_EVENT_BYTES:
            self.drops.drop("serf user-event (held during join)", "a peer",
                            f"more than {len(self._held_events)} events wait for the join", now)
            return
        self._held_events.append((msg, buf))
        self._held_event_bytes += len(buf)

    def _release_held_events(self, now: float) -> None:
        held, self._held_events, self._held_event_bytes = self._held_events, [], 0
        for msg, buf in held:
            if self._handle_user_event(msg, now):
                self._rebroadcast(self.event_broadcasts, buf, now)

