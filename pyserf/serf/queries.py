"""Queries: originating one and collecting its acks and responses, answering, relaying, and
deciding whether a received query is for this node."""

from __future__ import annotations

import ipaddress
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyserf.memberlist import codec
from pyserf.memberlist.fields import I64_MAX, U8_MAX, U16_MAX
from pyserf.memberlist.metrics import Metrics
from pyserf.memberlist.types import Address
from pyserf.serf import filters, internal_queries
from pyserf.serf import messages as m
from pyserf.serf.config import SerfError
from pyserf.serf.events import (
    Handle,
    QueryAckReceived,
    QueryFinished,
    QueryReceived,
    QueryResponseReceived,
    new_handle,
)
from pyserf.serf.members import MemberState, MemberStatus

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue
    from pyserf.memberlist.drops import DropLog
    from pyserf.memberlist.memberlist import Memberlist
    from pyserf.memberlist.timers import Scheduler
    from pyserf.serf.clock import LamportClock
    from pyserf.serf.config import SerfConfig
    from pyserf.serf.events import SerfEvent

log = logging.getLogger("pyserf.serf")

QUERY_TIMEOUT_MULT = 16


def reply_address_error(ip: str, port: int) -> str | None:
    """Why (ip, port) cannot receive a reply or a relayed response, or None. Port 0, the
    unspecified address, multicast and broadcast would make ``sendto`` fail or fan out."""
    if not 1 <= port <= U16_MAX:
        return f"port {port} is not in 1..{U16_MAX}"
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified or addr.is_multicast or addr == ipaddress.IPv4Address(0xFFFFFFFF):
        return f"address {ip} cannot receive a reply"
    return None


@dataclass(slots=True)
class QueryCollector:
    """Gathers acks and responses for a query we originated."""

    ltime: int
    id: int
    deadline: float
    request_ack: bool
    on_ack: Callable[[str, float], None]
    on_response: Callable[[str, bytes, float], None]
    on_done: Callable[[float], None]
    acks: set[str] = field(default_factory=set)
    responses: set[str] = field(default_factory=set)
    closed: bool = False
    # When set, the query finishes as soon as all of these have answered (and acked, if acks
    # were requested) instead of at the deadline.
    expected: set[str] | None = None
    needs_response: bool = True

    def complete(self) -> bool:
        if not self.expected:
            return False
        if self.needs_response and not self.expected <= self.responses:
            return False
        return not self.request_ack or self.expected <= self.acks



class Queries:
    """Serf's query handling; mixed into Serf, whose state it uses."""

    # Serf's state this part reads and writes (set by Serf.__init__).
    config: SerfConfig
    scheduler: Scheduler
    rng: random.Random
    drops: DropLog
    memberlist: Memberlist
    metrics: Metrics
    members: dict[str, MemberState]
    _events: list[SerfEvent]
    _queries: dict[int, QueryCollector]
    query_clock: LamportClock
    query_min_time: int
    query_buffer: list[tuple[int, list[int]] | None]
    query_broadcasts: BroadcastQueue

    if TYPE_CHECKING:
        def keyring_changed(self) -> None: ...

    def default_query_timeout(self) -> float:
        n = self.memberlist.num_alive()  # memberlist's NumMembers: suspects count too
        scale = max(1, math.ceil(math.log10(n + 1)))
        return self.memberlist.timing.gossip_interval * QUERY_TIMEOUT_MULT * scale

    def query(self, name: str, payload: bytes, now: float, *, filter_nodes: Sequence[str] = (),
              filter_tags: dict[str, str] | None = None, request_ack: bool = False,
              relay_factor: int = 0, timeout: float = 0.0,
              finish_early: bool = False) -> Handle:
        """Start a query (SerfError when serf would refuse it). Its acks and responses arrive
        in events() as QueryAckReceived / QueryResponseReceived naming the handle, then one
        QueryFinished (at the timeout, or once all answered when ``finish_early``)."""
        handle = new_handle()

        def report(event: QueryAckReceived | QueryResponseReceived | QueryFinished) -> None:
            self._events.append(event)  # not bound early: events() swaps the list

        self._query(name, payload, now, filter_nodes=filter_nodes, filter_tags=filter_tags,
                    request_ack=request_ack, relay_factor=relay_factor, timeout=timeout,
                    finish_early=finish_early,
                    on_ack=lambda node, when: report(QueryAckReceived(handle, node, when)),
                    on_response=lambda node, data, when: report(
                        QueryResponseReceived(handle, node, data, when)),
                    on_done=lambda when: report(QueryFinished(handle, when)))
        return handle

    def _query(self, name: str, payload: bytes, now: float, *, filter_nodes: Sequence[str] = (),
               filter_tags: dict[str, str] | None = None, request_ack: bool = False,
               relay_factor: int = 0, timeout: float = 0.0, finish_early: bool = False,
               on_ack: Callable[[str, float], None],
               on_response: Callable[[str, bytes, float], None],
               on_done: Callable[[float], None]) -> QueryCollector:
        """A query whose answers go to callbacks: serf's own use (name conflicts)."""
        if self.config.protocol_version < 4:
            raise SerfError("Feature not supported")
        if timeout <= 0:
            timeout = self.default_query_timeout()
        if not 0 <= relay_factor <= U8_MAX:
            raise SerfError(f"relay factor {relay_factor} is not in 0..{U8_MAX}")
        raw_filters: list[bytes] = []
        if filter_nodes:
            raw_filters.append(m.encode_node_filter(list(filter_nodes)))
        for tag, expr in (filter_tags or {}).items():
            raw_filters.append(m.encode_tag_filter(tag, expr))
        me = self.memberlist.local_node
        # Go's time.Duration is an int64 of nanoseconds: clamp rather than fail to encode.
        timeout_ns = min(int(timeout * 1e9), I64_MAX) if math.isfinite(timeout) else I64_MAX
        q = m.Query(self.query_clock.time, self.rng.getrandbits(31), codec.ip_to_bytes(me.addr),
                    me.port, me.name, raw_filters, m.QUERY_FLAG_ACK if request_ack else 0,
                    relay_factor, timeout_ns, name, payload)
        raw = q.encode()
        if len(raw) > self.config.query_size_limit:
            raise SerfError(f"query exceeds limit of {self.config.query_size_limit} bytes")
        collector = QueryCollector(q.ltime, q.id, now + timeout, request_ack, on_ack,
                                   on_response, on_done)
        if finish_early:
            # Beyond serf (its issue #509): stop waiting once every live member the filters
            # select has answered. _serf_ping is answered by acks alone.
            collector.expected = self.expected_responders(list(filter_nodes), filter_tags)
            collector.needs_response = name != internal_queries.PING
        self._queries[q.ltime] = collector
        self.scheduler.call_at(collector.deadline, lambda when: self._close_query(collector, when))
        self._handle_query(q, now)
        self.query_broadcasts.queue(raw, now=now)
        return collector

    def expected_responders(self, filter_nodes: Sequence[str] = (),
                            filter_tags: dict[str, str] | None = None) -> set[str]:
        """Live members a query with these filters reaches: who can possibly answer it."""
        names = set()
        for name, ms in self.members.items():
            if ms.member.status != MemberStatus.ALIVE:
                continue
            if filter_nodes and name not in filter_nodes:
                continue
            try:
                if any(filters.compile_search(expr).search(ms.member.tags.get(tag, "")) is None
                       for tag, expr in (filter_tags or {}).items()):
                    continue
            except filters.FilterError:
                return set()
            names.add(name)
        return names

    def respond(self, query: QueryReceived, payload: bytes, now: float) -> None:
        # serf's order: size first, then already sent, then the deadline.
        resp = m.QueryResponse(query.ltime, query.id, self.config.node_name, 0, payload)
        raw = resp.encode()
        if len(raw) > self.config.query_response_size_limit:
            raise SerfError(f"response exceeds limit of {self.config.query_response_size_limit}"
                            " bytes")
        if query.responded:
            raise SerfError("response already sent")
        if now > query.deadline:
            raise SerfError("response is past the deadline")
        self.memberlist.send_user_packet(query.source_addr, raw, now)
        self._relay_response(query.relay_factor, query.source_addr, query.source_node, raw, now)
        query.responded = True

    def _handle_query(self, q: m.Query, now: float) -> bool:
        self.query_clock.witness(q.ltime)
        if q.ltime < self.query_min_time:
            return False
        size = len(self.query_buffer)
        current = self.query_clock.time
        if current > size and q.ltime < current - size:
            log.warning("serf: received old query %s from time %d (current: %d)",
                        q.name, q.ltime, current)
            return False
        idx = q.ltime % size
        seen = self.query_buffer[idx]
        if seen is not None and seen[0] == q.ltime:
            if q.id in seen[1]:
                return False
            if len(seen[1]) >= m.MAX_SLOT_EVENTS:
                self.drops.drop("serf query (slot full)", q.source_node or "a peer",
                                f"more than {m.MAX_SLOT_EVENTS} queries at time {q.ltime}", now)
                return False
            seen[1].append(q.id)
        else:
            self.query_buffer[idx] = (q.ltime, [q.id])
        self.metrics.incr("serf.queries")
        self.metrics.incr("serf.queries." + q.name)
        rebroadcast = not q.flags & m.QUERY_FLAG_NO_BROADCAST
        if not self._should_process(q.filter_records(), q.source_node or "a peer", now):
            return rebroadcast
        source = (codec.ip_from_bytes(q.addr), q.port)
        error = reply_address_error(*source)
        if error:
            # Serf would deliver it and fail every send; a query nobody can answer is dropped.
            self.drops.drop("serf query (reply address)", q.source_node or "a peer", error, now)
            return rebroadcast
        if q.flags & m.QUERY_FLAG_ACK:
            ack = m.QueryResponse(q.ltime, q.id, self.config.node_name, m.QUERY_FLAG_ACK, None)
            raw = ack.encode()
            self.memberlist.send_user_packet(source, raw, now)
            self._relay_response(q.relay_factor, source, q.source_node, raw, now)
        received = QueryReceived(q.ltime, q.name, q.payload, q.id, source, q.source_node,
                                 now + q.timeout_ns / 1e9, q.relay_factor)
        if internal_queries.is_internal(q.name):
            internal_queries.handle(self, received, now)
        else:
            self._events.append(received)
        return rebroadcast

    def _should_process(self, records: list[m.Filter], peer: str, now: float) -> bool:
        """Serf's shouldProcessQuery: every filter must select this node. Tag filters are Go
        regexps (RE2, unanchored); a filter serf cannot decode or compile selects nobody."""
        for record in records:
            if isinstance(record, m.NodeFilter):
                if self.config.node_name not in record.names:
                    return False
            elif isinstance(record, m.TagFilter):
                try:
                    pattern = filters.compile_search(record.expr)
                except filters.FilterError as exc:
                    self.drops.drop("serf query filter", peer, exc.go_error, now)
                    return False
                if pattern.search(self.config.tags.get(record.tag, "")) is None:
                    return False
            else:
                self.drops.drop("serf query filter", peer, record.reason, now)
                return False
        return True

    def _relay_response(self, relay_factor: int, dest: Address, dest_name: str,
                        raw: bytes, now: float) -> None:
        if relay_factor == 0:
            return
        members = [ms.member for ms in self.members.values()]
        if len(members) < relay_factor + 1:
            return
        relay = m.Relay(codec.ip_to_bytes(dest[0]), dest[1], dest_name, raw).encode()
        if len(relay) > self.config.query_response_size_limit:
            log.error("serf: relayed response exceeds limit of %d bytes",
                      self.config.query_response_size_limit)
            return
        nodes = {n.name: n for n in self.memberlist.nodes}
        candidates = [x for x in members if x.status == MemberStatus.ALIVE
                      and x.name != self.config.node_name and x.protocol_max >= 5]
        for member in self.rng.sample(candidates, min(relay_factor, len(candidates))):
            self.memberlist.send_user_packet((member.addr, member.port), relay, now,
                                             nodes.get(member.name))

    def _handle_query_response(self, resp: m.QueryResponse, now: float) -> None:
        collector = self._queries.get(resp.ltime)
        if collector is None:
            log.warning("serf: reply for non-running query (LTime: %d, ID: %d) From: %s",
                        resp.ltime, resp.id, resp.from_)
            return
        if collector.id != resp.id:
            log.warning("serf: query reply ID mismatch (Local: %d, Response: %d)",
                        collector.id, resp.id)
            return
        if collector.closed:
            return
        if resp.flags & m.QUERY_FLAG_ACK:
            if resp.from_ in collector.acks:
                self.metrics.incr("serf.query_duplicate_acks")
            else:
                self.metrics.incr("serf.query_acks")
                collector.acks.add(resp.from_)
                collector.on_ack(resp.from_, now)
        elif resp.from_ in collector.responses:
            self.metrics.incr("serf.query_duplicate_responses")
        else:
            self.metrics.incr("serf.query_responses")
            collector.responses.add(resp.from_)
            collector.on_response(resp.from_, resp.payload or b"", now)
        if collector.complete():
            self._close_query(collector, now)

    def _close_query(self, collector: QueryCollector, now: float) -> None:
        if collector.closed:
            return
        collector.closed = True
        if self._queries.get(collector.ltime) is collector:
            del self._queries[collector.ltime]
        collector.on_done(now)

