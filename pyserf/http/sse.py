"""Server-Sent Events for the agent's event stream: framing, the resume ring, subscribers.

Every streamed event gets an id ``<epoch>-<n>``: ``n`` counts events since the agent started
and ``epoch`` is random per agent process, so a ``Last-Event-ID`` from before a restart is
recognised as unknown rather than mistaken for a recent event. The ring keeps the last
``capacity`` events; a client resuming from an id still in it gets exactly what it missed, any
other id gets a ``gap`` event (then the ring), so it knows to re-read the member list.

The agent's event loop only ever appends to bounded queues here (never awaits a client): a
subscriber whose queue is full is marked dropped and its connection is closed by its own task.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

RING_CAPACITY = 1024
SUBSCRIBER_QUEUE = 256
# An event's JSON is bounded by serf's message limits (a member event carries at most the
# coalesced batch); one line of SSE data never holds a raw newline (JSON escapes them).


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event as streamed: its sequence number, type (``member-join``, ``user``,
    ``query``), user event / query name, and the JSON text."""

    seq: int
    type: str
    name: str
    data: str


def frame(event_id: str | None, event_type: str, data: str) -> bytes:
    """One SSE message (no ``id:`` line when ``event_id`` is None, so the client's resume
    point stays put). ``data`` must be a single line (JSON has no raw newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {data}\n\n".encode()


def comment(text: str) -> bytes:
    """An SSE comment: clients ignore it, proxies see traffic (the heartbeat)."""
    return f": {text}\n\n".encode()


class EventRing:
    """The last ``capacity`` events with increasing sequence numbers, for resumption."""

    def __init__(self, capacity: int = RING_CAPACITY, epoch: str | None = None) -> None:
        self.capacity = capacity
        self.epoch = epoch or secrets.token_hex(4)
        self.events: deque[StreamEvent] = deque(maxlen=capacity)
        self.last_seq = 0

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def append(self, event_type: str, name: str, record: dict[str, Any]) -> StreamEvent:
        self.last_seq += 1
        event = StreamEvent(self.last_seq, event_type, name,
                            json.dumps(record, separators=(",", ":")))
        self.events.append(event)
        return event

    def since(self, last_event_id: str) -> tuple[bool, list[StreamEvent]]:
        """(resumed exactly, events to replay) for a client's ``Last-Event-ID``.

        Exact: the id is this agent's and every later event is still held. Otherwise the
        whole ring is replayed after a gap (an id from another run, too old, or garbage).
        """
        epoch, _, number = last_event_id.strip().partition("-")
        if (epoch == self.epoch and number.isascii() and number.isdigit()
                and len(number) <= 19):
            seq = int(number)
            oldest = self.events[0].seq if self.events else self.last_seq + 1
            if oldest - 1 <= seq <= self.last_seq:
                return True, [e for e in self.events if e.seq > seq]
        return False, list(self.events)


@dataclass(frozen=True)
class TypeFilter:
    """``?type=member-join,user:deploy`` in serf's event-handler filter syntax."""

    matchers: tuple[Any, ...]

    def matches(self, event: StreamEvent) -> bool:
        return any(m.matches(event.type, event.name) for m in self.matchers)


class Subscriber:
    """One stream client's bounded queue, filled by the agent, drained by the client's task.

    ``push`` never blocks: when the queue is full the subscriber is dropped (``on_drop`` is
    called once, to log it) and ``wake`` lets the client's task close the connection.
    """

    def __init__(self, accepts: Callable[[StreamEvent], bool], wake: Callable[[], None],
                 on_drop: Callable[[Subscriber], None], limit: int = SUBSCRIBER_QUEUE) -> None:
        self.accepts = accepts
        self.wake = wake
        self.on_drop = on_drop
        self.limit = limit
        self.queue: deque[StreamEvent] = deque()
        self.dropped = False

    def push(self, event: StreamEvent) -> None:
        if self.dropped or not self.accepts(event):
            return
        if len(self.queue) >= self.limit:
            self.dropped = True
            self.queue.clear()
            self.on_drop(self)
        else:
            self.queue.append(event)
        self.wake()

    def extend(self, events: Iterable[StreamEvent]) -> None:
        for event in events:
            self.push(event)

    def take(self) -> list[StreamEvent]:
        out = list(self.queue)
        self.queue.clear()
        return out
