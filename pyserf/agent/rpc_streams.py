"""The RPC commands that open a stream (monitor, stream, query) and those that act on one
(respond, stop).

A stream's records go out under the ``Seq`` of the request that opened it, through a
:class:`Feed`: a bounded buffer drained by its own task, so a client that reads slowly loses
records (with serf's warning) instead of growing the agent's memory. A session may hold
:data:`~pyserf.agent.rpc_limits.MAX_CLIENT_STREAMS` streams; closing it stops them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyserf.agent import logs
from pyserf.agent.event_filter import EventFilter, parse_event_filter
from pyserf.agent.rpc_commands import member_record
from pyserf.agent.rpc_limits import SUBSCRIBER_BUFFER
from pyserf.agent.rpc_session import warn
from pyserf.serf import internal_queries
from pyserf.serf.config import SerfError
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived

if TYPE_CHECKING:
    from pyserf.agent.rpc_session import Session

log = logging.getLogger("pyserf.agent")

# Queries registered for `respond` per client; serf forgets each at its deadline, and so
# do we, but a flood of long-lived queries must not grow the table without bound.
MAX_PENDING_QUERIES = 4096
# A query that everyone answered ends early (serf waits out its timeout); its "done" record
# trails the last answer by this much, so serf's CLI reads every answer before it closes its
# channels (measured: with no gap it lost the last answer 1 run in 10-20; 0.1 s was still
# short on a loaded 2-core machine).
QUERY_DONE_GRACE = 0.25


class Feed:
    """One subscription's outgoing records: a buffer of :data:`SUBSCRIBER_BUFFER` drained
    by its own task, as serf gives every monitor and event stream a channel of 512 and a
    goroutine. When the client reads too slowly the buffer fills and new records are dropped
    with serf's warning, at most once a second."""

    def __init__(self, session: Session, seq: int, what: str) -> None:
        self.session = session
        self.seq = seq
        self.what = what
        self.items: deque[Any] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.finishing = False
        self.throttle = logs.Throttle()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def push(self, record: Any) -> None:
        if self.closed or self.finishing:
            return
        if len(self.items) >= SUBSCRIBER_BUFFER:
            warn(self.throttle, logging.WARNING, "Dropping %s to %s", self.what, self.session)
            return
        self.items.append(record)
        self.wakeup.set()

    def finish(self) -> None:
        """Send what is queued, then end (a query that is done)."""
        self.finishing = True
        self.wakeup.set()

    def stop(self) -> None:
        self.closed = True
        self.items.clear()
        self.task.cancel()

    async def _run(self) -> None:
        try:
            while not self.closed:
                await self.wakeup.wait()
                self.wakeup.clear()
                while self.items and not self.closed:
                    self.session.send(self.seq, body=self.items.popleft(), has_body=True)
                    await self.session.writer.drain()
                if self.finishing:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead socket, or a record that cannot be packed
            if not self.session.closed:
                log.error("agent.ipc: Failed to stream %s to %s: %s", self.what, self.session,
                          exc)
                self.session.close()


async def cmd_monitor(session: Session, seq: int, body: dict) -> None:
    try:
        level = logs.parse_level(body["LogLevel"] or "INFO")
    except ValueError:
        session.send(seq, f"Unknown log level: {body['LogLevel'].upper()[:64]}")
        return
    if session.monitor_seq is not None:
        session.send(seq, "Monitor already exists")
        return
    handler = session.agent.log_handler
    if handler is None:
        session.send(seq)
        return
    feed = Feed(session, seq, "logs")

    def on_line(line: str) -> None:
        feed.push({"Log": line})

    def stop() -> None:
        handler.unsubscribe(on_line)
        feed.stop()
        session.monitor_seq = None

    if not session.add_stream(seq, stop):
        feed.stop()
        return
    session.send(seq)
    session.monitor_seq = seq
    handler.subscribe(level, on_line)


async def cmd_stream(session: Session, seq: int, body: dict) -> None:
    filters = parse_event_filter(body["Type"] or "*")
    if not all(f.valid() for f in filters):
        session.send(seq, "Invalid event filter")
        return
    if seq in session.streams:
        session.send(seq, "Stream with given sequence exists")
        return
    feed = Feed(session, seq, "event")

    def on_event(event: Any) -> None:
        record = _event_record(session, event, filters)
        if record is not None:
            feed.push(record)

    unsubscribe: Callable[[], None] | None = None  # set once the stream is accepted

    def stop() -> None:
        if unsubscribe is not None:
            unsubscribe()
        feed.stop()

    if not session.add_stream(seq, stop):
        feed.stop()
        return
    session.send(seq)
    unsubscribe = session.agent.subscribe(on_event)


def _event_record(session: Session, event: Any, filters: list[EventFilter]) -> dict | None:
    """The stream record of ``event``, or None when no filter passes it."""
    if isinstance(event, MemberEvent):
        kind, name = event.type, ""
    elif isinstance(event, UserEventReceived):
        kind, name = "user", event.name
    elif isinstance(event, QueryReceived):
        kind, name = "query", event.name
    else:
        return None
    if not any(f.matches(kind, name) for f in filters):
        return None
    if isinstance(event, MemberEvent):
        return {"Event": event.type, "Members": [member_record(x) for x in event.members]}
    if isinstance(event, UserEventReceived):
        return {"Event": "user", "LTime": event.ltime, "Name": event.name,
                "Payload": event.payload or None, "Coalesce": event.coalesce}
    # An empty payload goes out as nil, as serf's (it prints "Payload: <nil>", not
    # "[]byte(nil)").
    return {"Event": "query", "ID": _register_query(session, event), "LTime": event.ltime,
            "Name": event.name, "Payload": event.payload or None}


def _register_query(session: Session, event: QueryReceived) -> int:
    """Remember a streamed query for `respond` until its deadline, as serf does (a query
    already past it gets an ID that matches nothing)."""
    loop = asyncio.get_running_loop()
    session.next_query_id += 1
    qid = session.next_query_id
    if event.deadline <= loop.time():
        return qid
    while len(session.query_ids) >= MAX_PENDING_QUERIES:
        del session.query_ids[next(iter(session.query_ids))]
    session.query_ids[qid] = event
    loop.call_at(event.deadline, session.query_ids.pop, qid, None)
    return qid


async def cmd_respond(session: Session, seq: int, body: dict) -> None:
    # The query stays until its deadline, so a second answer gets serf's "already sent".
    query = session.query_ids.get(body["ID"])
    if query is None:
        session.send(seq, "No pending queries matching ID")
        return
    try:
        session.agent.respond(query, body["Payload"])
    except SerfError as exc:
        session.send(seq, internal_queries.respond_error(exc))
        return
    session.send(seq)


async def cmd_stop(session: Session, seq: int, body: dict) -> None:
    stop = session.streams.pop(body["Stop"], None)
    if stop is not None:
        stop()
    session.send(seq)


async def cmd_query(session: Session, seq: int, body: dict) -> None:
    name, payload = body["Name"], body["Payload"]
    if name.startswith("_serf_") and not (name == "_serf_ping" and not payload):
        session.send(seq, "Queries cannot contain the '_serf_' prefix")
        return
    if seq in session.streams:
        session.send(seq, "Stream with given sequence exists")
        return
    # ("WaitFull" is a pyserf field asking for serf's wait-out-the-timeout behaviour;
    # serf agents ignore unknown fields.)
    finish_early = not body["WaitFull"]
    feed = Feed(session, seq, "query response")

    def on_ack(node: str, when: float) -> None:
        feed.push({"Type": "ack", "From": node, "Payload": None})

    def on_response(node: str, data: bytes, when: float) -> None:
        feed.push({"Type": "response", "From": node, "Payload": data})

    def finish() -> None:
        session.streams.pop(seq, None)
        feed.push({"Type": "done", "From": "", "Payload": None})
        feed.finish()

    def on_done(when: float) -> None:
        # serf's CLI closes its ack and response channels on "done" and may then miss a
        # record still in flight; serf never hits this as it waits out the timeout.
        asyncio.get_running_loop().call_later(QUERY_DONE_GRACE, finish)

    try:
        collector = session.agent.start_query(
            name, payload, filter_nodes=body["FilterNodes"], filter_tags=body["FilterTags"],
            request_ack=body["RequestAck"], relay_factor=body["RelayFactor"],
            timeout=body["Timeout"] / 1e9, finish_early=finish_early, on_ack=on_ack,
            on_response=on_response, on_done=on_done)
    except SerfError as exc:
        feed.stop()
        session.send(seq, str(exc))
        return

    def stop() -> None:
        collector.closed = True
        feed.stop()

    if not feed.finishing and not session.add_stream(seq, stop):
        stop()
        return
    session.send(seq)

COMMANDS = {
    "monitor": cmd_monitor,
    "stream": cmd_stream,
    "respond": cmd_respond,
    "stop": cmd_stop,
    "query": cmd_query,
}
