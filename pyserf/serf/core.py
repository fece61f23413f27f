"""The serf layer: member statuses, Lamport-clocked intents, user events and queries.

Sans-I/O like the memberlist machine below it: it is the memberlist delegate, shares the same
scheduler, and reports what happened as events in ``take_events()``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN
from pyserf.gocompat.hostport import join_host_port
from pyserf.memberlist import codec
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.codec import DecodeError
from pyserf.memberlist.drops import DropLog
from pyserf.memberlist.fields import I64_MAX, U8_MAX, U16_MAX, U64_MAX
from pyserf.memberlist.state import Address, JoinOutcome, Memberlist, MemberlistConfig, Node
from pyserf.memberlist.timers import Scheduler
from pyserf.serf import coordinate, filters, internal_queries
from pyserf.serf import messages as m
from pyserf.serf.clock import LamportClock, ltime_add
from pyserf.serf.messages import SerfMsg

log = logging.getLogger("pyserf.serf")

USER_EVENT_SIZE_HARD_LIMIT = 9216
# A message we gossip on has to fit a datagram to be piggybacked at all; anything larger could
# only sit in a broadcast queue. (Streams may carry 20 MiB user messages.)
MAX_GOSSIPED_MESSAGE = 64 * 1024
# Bytes each broadcast queue may hold besides serf's depth limit (max_queue_depth, which serf
# enforces every 30 s): 4,096 messages of 9 KiB would otherwise be 37 MiB per queue.
MAX_QUEUE_BYTES = 8 * 1024 * 1024
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
QUERY_TIMEOUT_MULT = 16
# Intents about nodes we do not know yet, kept for recent_intent_timeout. Serf's recentIntents
# map is unbounded; here a peer naming a fresh node in every message evicts the oldest entry.
MAX_RECENT_INTENTS = 16 * 1024

# How the drop log names each serf message kind.
DROP_KIND = {SerfMsg.LEAVE: "serf leave", SerfMsg.JOIN: "serf join",
             SerfMsg.PUSH_PULL: "serf push-pull", SerfMsg.USER_EVENT: "serf user-event",
             SerfMsg.QUERY: "serf query", SerfMsg.QUERY_RESPONSE: "serf query-response",
             SerfMsg.RELAY: "serf relay"}

# serf's names for the gossiped kinds, as its debug log shows them.
_GO_TYPE_NAME = {SerfMsg.LEAVE: "messageLeaveType", SerfMsg.JOIN: "messageJoinType",
                 SerfMsg.USER_EVENT: "messageUserEventType", SerfMsg.QUERY: "messageQueryType"}


def reply_address_error(ip: str, port: int) -> str | None:
    """Why (ip, port) cannot receive a reply or a relayed response, or None. Port 0, the
    unspecified address, multicast and broadcast would make ``sendto`` fail or fan out."""
    if not 1 <= port <= U16_MAX:
        return f"port {port} is not in 1..{U16_MAX}"
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified or addr.is_multicast or addr == ipaddress.IPv4Address(0xFFFFFFFF):
        return f"address {ip} cannot receive a reply"
    return None


def _peer_text(source: Address | None) -> str:
    return join_host_port(str(source[0]), source[1]) if source else "a peer"


class MemberStatus(IntEnum):
    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4

    def label(self) -> str:
        return self.name.lower()


class SerfState(IntEnum):
    ALIVE = 0
    LEAVING = 1
    LEFT = 2
    SHUTDOWN = 3


@dataclass(slots=True)
class Member:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    protocol_min: int = 1
    protocol_max: int = 5
    protocol_cur: int = 2
    delegate_min: int = 2
    delegate_max: int = 5
    delegate_cur: int = 5

    def copy(self) -> Member:
        return Member(self.name, self.addr, self.port, dict(self.tags), self.status,
                      self.protocol_min, self.protocol_max, self.protocol_cur,
                      self.delegate_min, self.delegate_max, self.delegate_cur)


@dataclass(slots=True)
class _MemberState:
    member: Member
    status_ltime: int = 0
    leave_time: float = 0.0


# ---- events reported upwards ------------------------------------------------------------------

MEMBER_EVENT_LOG = {"member-join": "EventMemberJoin", "member-leave": "EventMemberLeave",
                    "member-failed": "EventMemberFailed", "member-update": "EventMemberUpdate",
                    "member-reap": "EventMemberReap"}


@dataclass(slots=True)
class MemberEvent:
    type: str  # member-join, member-leave, member-failed, member-update, member-reap
    members: list[Member]


@dataclass(slots=True)
class UserEventReceived:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(slots=True)
class QueryReceived:
    ltime: int
    name: str
    payload: bytes
    id: int
    source_addr: Address
    source_node: str
    deadline: float
    relay_factor: int
    responded: bool = False


@dataclass(slots=True)
class ShutdownRequested:
    """The serf layer decided this agent must stop (it lost a name conflict)."""

    reason: str


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


@dataclass
class SerfConfig:
    node_name: str
    tags: dict[str, str] = field(default_factory=dict)
    protocol_version: int = SERF_PROTOCOL_MAX
    broadcast_timeout: float = 5.0
    leave_propagate_delay: float = 1.0
    reap_interval: float = 15.0
    reconnect_interval: float = 30.0
    # Each wait for the next reconnect round is reconnect_interval * U(1 - j, 1 + j). serf
    # waits exactly the interval, so agents started together (a fleet rolled out at once)
    # retry in lockstep and a healed partition waits for their common next round: up to a
    # whole interval. Spread out, the same number of attempts finds the heal within seconds.
    reconnect_jitter: float = 0.5
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    recent_intent_timeout: float = 300.0
    queue_check_interval: float = 30.0
    max_queue_depth: int = 4096
    event_buffer: int = 512
    query_buffer: int = 512
    user_event_size_limit: int = 512
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    disable_name_resolution: bool = False


class SerfError(Exception):
    """An operation was refused; the message is what serf says in the same situation."""


class Serf:
    def __init__(self, config: SerfConfig, ml_config: MemberlistConfig, scheduler: Scheduler,
                 rng: random.Random | None = None) -> None:
        if not SERF_PROTOCOL_MIN <= config.protocol_version <= SERF_PROTOCOL_MAX:
            raise SerfError(
                f"Protocol version '{config.protocol_version}' too "
                f"{'low' if config.protocol_version < SERF_PROTOCOL_MIN else 'high'}. Must be in "
                f"range: [{SERF_PROTOCOL_MIN}, {SERF_PROTOCOL_MAX}]")
        if config.user_event_size_limit > USER_EVENT_SIZE_HARD_LIMIT:
            raise SerfError(f"user event size limit exceeds limit of {USER_EVENT_SIZE_HARD_LIMIT}"
                            " bytes")
        self.config = config
        if len(m.encode_tags(config.tags, config.protocol_version)) > codec.META_MAX_SIZE:
            raise SerfError(
                f"Encoded length of tags exceeds limit of {codec.META_MAX_SIZE} bytes")
        self.scheduler = scheduler
        self.rng = rng or random.Random()
        ml_config.delegate_versions = (SERF_PROTOCOL_MIN, SERF_PROTOCOL_MAX,
                                       config.protocol_version)
        self.memberlist = Memberlist(ml_config, self, scheduler, self.rng)
        self.members: dict[str, _MemberState] = {}
        self.failed_members: list[_MemberState] = []
        self.left_members: list[_MemberState] = []
        self.recent_intents: dict[str, tuple[int, int, float]] = {}  # name -> (type, ltime, t)
        self.clock = LamportClock()
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self.event_min_time = 0
        self.query_min_time = 0
        self.event_buffer: list[tuple[int, list[tuple[str, bytes]]] | None] = \
            [None] * config.event_buffer
        self._event_buffer_bytes = 0
        self.query_buffer: list[tuple[int, list[int]] | None] = [None] * config.query_buffer
        num = lambda: len(self.members)  # noqa: E731
        mult = ml_config.timing.retransmit_mult
        soon = self.memberlist.gossip_soon
        self.intent_broadcasts = BroadcastQueue(mult, num, soon)
        self.event_broadcasts = BroadcastQueue(mult, num, soon)
        self.query_broadcasts = BroadcastQueue(mult, num, soon)
        self.state = SerfState.ALIVE
        self._events: list[MemberEvent | UserEventReceived | QueryReceived
                           | ShutdownRequested] = []
        self._queries: dict[int, QueryCollector] = {}  # by LTime
        self._join_ignore = 0
        self._held_events: list[tuple[m.UserEvent, bytes]] = []
        self._held_event_bytes = 0
        self.on_keyring_changed: Callable[[], None] | None = None
        # Messages refused at the decode boundary, counted by kind, logged at most once a second
        # per peer and kind.
        self.drops = DropLog(log, "serf")
        # Gossiped kinds: record type, handler (True = new, gossip it on), rebroadcast queue.
        self._gossiped: dict[int, tuple[Any, Callable[[Any, float], bool], BroadcastQueue]] = {
            SerfMsg.LEAVE: (m.Leave, lambda x, now: self._handle_leave_intent(x, now),
                            self.intent_broadcasts),
            SerfMsg.JOIN: (m.Join, lambda x, now: self._handle_join_intent(x, now),
                           self.intent_broadcasts),
            SerfMsg.USER_EVENT: (m.UserEvent, lambda x, now: self._handle_user_event(x),
                                 self.event_broadcasts),
            SerfMsg.QUERY: (m.Query, lambda x, now: self._handle_query(x, now),
                            self.query_broadcasts),
        }
        self.coordinates = coordinate.VivaldiClient(self.rng)
        self.coordinate_cache: dict[str, coordinate.Coordinate] = {
            config.node_name: self.coordinates.coord.copy()}
        self._resolving_conflict = False
        self._loops: list = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.clock.increment()
        self.event_clock.increment()
        self.query_clock.increment()
        self.memberlist.start(now)
        c = self.config
        self._every(c.reap_interval, self._reap, now)
        self._every(c.reconnect_interval, self._reconnect, now, c.reconnect_jitter)
        self._every(c.queue_check_interval, self._check_queues, now)

    def restore_clocks(self, clock: int, event_clock: int, query_clock: int) -> None:
        """Continue from a snapshot: never re-deliver events or queries seen before. A value
        that is no uint64 (a damaged snapshot) is ignored; the others wrap as in Go."""
        values = []
        for what, value in (("clock", clock), ("event clock", event_clock),
                            ("query clock", query_clock)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= U64_MAX:
                log.warning("serf: ignoring snapshot %s %r: not a uint64", what, value)
                value = None
            values.append(value)
        clock, event_clock, query_clock = values
        if clock is not None:
            self.clock.witness(clock)
        if event_clock is not None:
            self.event_clock.witness(event_clock)
            self.event_min_time = max(self.event_min_time, ltime_add(event_clock, 1))
        if query_clock is not None:
            self.query_clock.witness(query_clock)
            self.query_min_time = max(self.query_min_time, ltime_add(query_clock, 1))

    def _every(self, interval: float, fn: Callable[[float], None], now: float,
               jitter: float = 0.0) -> None:
        # Its own generator, seeded by the node name: drawing from self.rng would shift every
        # other random choice of this machine (and the simulator's seeded runs).
        spread = random.Random(f"{self.config.node_name}:{len(self._loops)}")

        def wait() -> float:
            return interval * (1.0 + jitter * (2.0 * spread.random() - 1.0))

        def tick(when: float) -> None:
            if self.state == SerfState.SHUTDOWN:
                return
            self._loops[idx] = self.scheduler.call_at(when + wait(), tick)
            fn(when)

        idx = len(self._loops)
        self._loops.append(self.scheduler.call_at(now + wait(), tick))

    def take_events(self) -> list[MemberEvent | UserEventReceived | QueryReceived]:
        events, self._events = self._events, []
        return events

    def take_actions(self) -> list:
        return self.memberlist.take_actions()

    def shutdown(self) -> None:
        if self.state != SerfState.LEFT:
            log.warning("serf: Shutdown without a Leave")
        self.state = SerfState.SHUTDOWN
        for timer in self._loops:
            timer.cancel()
        self.memberlist.shutdown()

    # -- queries about state ---------------------------------------------------------------

    def local_member(self) -> Member:
        return self.members[self.config.node_name].member.copy()

    def member_list(self) -> list[Member]:
        return [ms.member.copy() for ms in self.members.values()]

    def num_nodes(self) -> int:
        return len(self.members)

    def encryption_enabled(self) -> bool:
        return self.memberlist.config.keyring is not None

    def stats(self) -> dict[str, str]:
        return {
            "members": str(len(self.members)),
            "failed": str(len(self.failed_members)),
            "left": str(len(self.left_members)),
            "health_score": str(self.memberlist.awareness.score),
            "member_time": str(self.clock.time),
            "event_time": str(self.event_clock.time),
            "query_time": str(self.query_clock.time),
            "intent_queue": str(len(self.intent_broadcasts)),
            "event_queue": str(len(self.event_broadcasts)),
            "query_queue": str(len(self.query_broadcasts)),
            "encrypted": str(self.encryption_enabled()).lower(),
            "coordinate_resets": str(self.coordinates.resets),
        }

    def default_query_timeout(self) -> float:
        n = self.memberlist.num_alive()  # memberlist's NumMembers: suspects count too
        scale = max(1, math.ceil(math.log10(n + 1)))
        return self.memberlist.timing.gossip_interval * QUERY_TIMEOUT_MULT * scale

    # -- operations ------------------------------------------------------------------------

    def join(self, targets: list[tuple[str, Address]], ignore_old: bool, now: float,
             on_done: Callable[[JoinOutcome, float], None]) -> None:
        if self.state != SerfState.ALIVE:
            outcome = JoinOutcome(errors=["Serf can't Join after Leave or Shutdown"])
            on_done(outcome, now)
            return
        if ignore_old:
            self._join_ignore += 1

        def done(outcome: JoinOutcome, when: float) -> None:
            if ignore_old:
                self._join_ignore -= 1
                if not self._join_ignore:
                    self._release_held_events(when)
            if outcome.contacted:
                self._broadcast_join(self.clock.time)
            on_done(outcome, when)

        self.memberlist.join(targets, now, done)

    def leave(self, now: float, on_done: Callable[[str | None, float], None]) -> None:
        """Graceful leave: intent, then memberlist leave, then a short propagation delay."""
        if self.state == SerfState.LEFT:
            on_done(None, now)
            return
        if self.state == SerfState.LEAVING:
            on_done("Leave already in progress", now)
            return
        if self.state == SerfState.SHUTDOWN:
            on_done("Leave called after Shutdown", now)
            return
        self.state = SerfState.LEAVING
        self.memberlist.draining = True
        msg = m.Leave(self.clock.time, self.config.node_name)
        self.clock.increment()
        self._handle_leave_intent(msg, now)
        timeout = self.config.broadcast_timeout

        def after_memberlist(error: str | None, when: float) -> None:
            if error:
                on_done(error, when)
                return

            def finished(t: float) -> None:
                if self.state != SerfState.SHUTDOWN:
                    self.state = SerfState.LEFT
                on_done(None, t)

            self.scheduler.call_at(when + self.config.leave_propagate_delay, finished)

        def after_intent(error: str | None, when: float) -> None:
            if error:
                on_done(error, when)
                return
            self.memberlist.leave(when, timeout, after_memberlist)

        if self._has_alive_members():
            raw = msg.encode()
            self._broadcast_and_wait(self.intent_broadcasts, raw, now, timeout,
                                     "timeout while waiting for graceful leave", after_intent)
            # The memberlist goodbye follows only once the intent has finished gossiping, so
            # sending the intent directly too keeps the order and saves the epidemic's hops.
            self.memberlist.send_to_live_nodes(codec.encode_user(raw))
        else:
            after_intent(None, now)

    def force_leave(self, node: str, prune: bool, now: float,
                    on_done: Callable[[str | None, float], None]) -> None:
        msg = m.Leave(self.clock.time, node, prune)
        self.clock.increment()
        self._handle_leave_intent(msg, now)
        if not self._has_alive_members():
            on_done(None, now)
            return
        self._broadcast_and_wait(self.intent_broadcasts, msg.encode(), now,
                                 self.config.broadcast_timeout,
                                 "timed out broadcasting node removal", on_done)

    def set_tags(self, tags: dict[str, str], now: float,
                 on_done: Callable[[str | None, float], None]) -> None:
        if len(m.encode_tags(tags, self.config.protocol_version)) > codec.META_MAX_SIZE:
            raise SerfError(
                f"Encoded length of tags exceeds limit of {codec.META_MAX_SIZE} bytes")
        self.config.tags = dict(tags)
        self.memberlist.update_node(now, self.config.broadcast_timeout, on_done)

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
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
        self._handle_user_event(msg)
        self.event_broadcasts.queue(raw)

    def query(self, name: str, payload: bytes, now: float, *, filter_nodes: list[str] = (),
              filter_tags: dict[str, str] | None = None, request_ack: bool = False,
              relay_factor: int = 0, timeout: float = 0.0, finish_early: bool = False,
              on_ack: Callable[[str, float], None],
              on_response: Callable[[str, bytes, float], None],
              on_done: Callable[[float], None]) -> QueryCollector:
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
        self.query_broadcasts.queue(raw)
        return collector

    def expected_responders(self, filter_nodes: list[str] = (),
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
        self.memberlist.send_user_packet(query.source_addr, raw)
        self._relay_response(query.relay_factor, query.source_addr, query.source_node, raw)
        query.responded = True

    # -- helpers ---------------------------------------------------------------------------

    def _broadcast_and_wait(self, queue: BroadcastQueue, raw: bytes, now: float, timeout: float,
                            timeout_error: str,
                            on_done: Callable[[str | None, float], None]) -> None:
        fired = False

        def finish(error: str | None, when: float) -> None:
            nonlocal fired
            if not fired:
                fired = True
                on_done(error, when)

        queue.queue(raw, on_finished=lambda: finish(None, self.scheduler.now))
        self.scheduler.call_at(now + timeout, lambda t: finish(timeout_error, t))

    def _has_alive_members(self) -> bool:
        name = self.config.node_name
        return any(ms.member.status == MemberStatus.ALIVE and n != name
                   for n, ms in self.members.items())

    def _broadcast_join(self, ltime: int) -> None:
        msg = m.Join(ltime, self.config.node_name)
        self.clock.witness(ltime)
        self._handle_join_intent(msg, self.scheduler.now)
        self.intent_broadcasts.queue(msg.encode())

    def _emit_member_event(self, kind: str, member: Member, suffix: str = "") -> None:
        label = MEMBER_EVENT_LOG[kind]
        if kind in ("member-update",):
            log.info("serf: %s: %s", label, member.name)
        else:
            log.info("serf: %s%s: %s %s", label, suffix, member.name, member.addr)
        self._events.append(MemberEvent(kind, [member.copy()]))

    def _upsert_intent(self, node: str, kind: int, ltime: int, now: float) -> bool:
        existing = self.recent_intents.get(node)
        if existing is None or ltime > existing[1]:
            self.recent_intents.pop(node, None)  # re-inserted last: the dict is oldest-first
            self.recent_intents[node] = (kind, ltime, now)
            while len(self.recent_intents) > MAX_RECENT_INTENTS:
                del self.recent_intents[next(iter(self.recent_intents))]
            return True
        return False

    def _recent_intent(self, node: str, kind: int) -> int | None:
        existing = self.recent_intents.get(node)
        if existing is not None and existing[0] == kind:
            return existing[1]
        return None

    # -- memberlist delegate ----------------------------------------------------------------

    def node_meta(self, limit: int) -> bytes:
        meta = m.encode_tags(self.config.tags, self.config.protocol_version)
        if len(meta) > limit:
            raise SerfError(f"Node tags '{self.config.tags}' exceeds length limit of {limit}")
        return meta

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        msgs = self.intent_broadcasts.get(overhead, limit)
        used = sum(len(x) + overhead for x in msgs)
        msgs.extend(q := self.query_broadcasts.get(overhead, limit - used))
        used += sum(len(x) + overhead for x in q)
        msgs.extend(self.event_broadcasts.get(overhead, limit - used))
        return msgs

    def keyring_changed(self) -> None:
        """Hook for the agent to persist the keyring file after a key query changed it."""
        if self.on_keyring_changed is not None:
            self.on_keyring_changed()

    def has_broadcasts(self) -> bool:
        return bool(len(self.intent_broadcasts) or len(self.event_broadcasts)
                    or len(self.query_broadcasts))

    def drop_broadcasts(self) -> None:
        for queue in (self.intent_broadcasts, self.query_broadcasts, self.event_broadcasts):
            queue.reset()

    def local_state(self, join: bool) -> bytes:
        """Our push-pull user state. Never raises: on an internal error the peer gets no serf
        state this round rather than a broken stream."""
        try:
            return self._local_state()
        except Exception as exc:
            log.debug("serf: failed to encode local state", exc_info=True)
            self.drops.drop("serf local state (internal error)", "self", exc,
                            self.scheduler.now)
            return b""

    def _local_state(self) -> bytes:
        # A member that is leaving is reported among the left members with its leave time
        # minus one: receivers turn that back into the very same leave intent. Reported as a
        # plain status time (as serf does) it would act as a join intent at the leave's own
        # time and make the real leave intent look stale, so a graceful leave racing a
        # push-pull would end up as "failed".
        status_ltimes = {}
        left = [ms.member.name for ms in self.left_members]
        for name, ms in self.members.items():
            if ms.member.status == MemberStatus.LEAVING and ms.status_ltime > 0:
                status_ltimes[name] = ms.status_ltime - 1
                left.append(name)
            else:
                status_ltimes[name] = ms.status_ltime
        state = m.PushPullState(
            ltime=self.clock.time,
            status_ltimes=status_ltimes,
            left_members=left,
            event_ltime=self.event_clock.time,
            events=list(self.event_buffer),
            query_ltime=self.query_clock.time)
        return state.encode()

    def _contained(self, kind: str, peer: str, now: float, fn: Callable[[], None]) -> None:
        """Run one delegate callback; nothing it raises reaches memberlist. A DecodeError is
        a refused message, anything else an internal error; both are counted and logged
        (rate limited) and the message is dropped."""
        try:
            fn()
        except DecodeError as exc:
            self.drops.drop(kind, peer, exc, now)
        except Exception as exc:
            log.debug("serf: internal error handling %s from %s", kind, peer, exc_info=True)
            self.drops.drop(f"{kind} (internal error)", peer, exc, now)

    def merge_remote_state(self, buf: bytes, join: bool, now: float,
                           source: Address | None = None) -> None:
        self._contained("serf push-pull", _peer_text(source), now,
                        lambda: self._merge_remote_state(buf, join, now))

    def _merge_remote_state(self, buf: bytes, join: bool, now: float) -> None:
        pp = m.PushPullState.decode_state(buf)  # decoded whole before anything changes
        # Witness the clocks first; minus one since no message with that time was sent yet.
        if pp.ltime > 0:
            self.clock.witness(pp.ltime - 1)
        if pp.event_ltime > 0:
            self.event_clock.witness(pp.event_ltime - 1)
        if pp.query_ltime > 0:
            self.query_clock.witness(pp.query_ltime - 1)
        left = set(pp.left_members)
        for name in pp.left_members:
            leave_time = ltime_add(pp.status_ltimes.get(name, 0), 1)  # wraps as Go's does
            self._handle_leave_intent(m.Leave(leave_time, name), now)
        members, witness = self.members, self.clock.witness
        for name, ltime in pp.status_ltimes.items():
            if name not in left:
                ms = members.get(name)
                if ms is not None and ltime <= ms.status_ltime:
                    witness(ltime)  # all _handle_join_intent does with old news
                    continue
                self._handle_join_intent(m.Join(ltime, name), now)
        if join and self._join_ignore > 0 and pp.event_ltime > self.event_min_time:
            self.event_min_time = pp.event_ltime
        for slot in pp.events:
            if slot is None:
                continue
            ltime, items = slot
            for name, payload in items:
                self._handle_user_event(m.UserEvent(ltime, name, payload, False))

    def notify_msg(self, buf: bytes, now: float, source: Address | None = None) -> None:
        """A serf message from memberlist (``source`` is the sender's address when known)."""
        if not buf:
            return
        # What _contained does, without building its closure and peer text per message.
        try:
            self._notify_msg(buf, now)
        except DecodeError as exc:
            self.drops.drop(DROP_KIND.get(buf[0], "serf message"), _peer_text(source), exc, now)
        except Exception as exc:
            kind, peer = DROP_KIND.get(buf[0], "serf message"), _peer_text(source)
            log.debug("serf: internal error handling %s from %s", kind, peer, exc_info=True)
            self.drops.drop(f"{kind} (internal error)", peer, exc, now)

    def _notify_msg(self, buf: bytes, now: float) -> None:
        kind = buf[0]
        if kind in self._gossiped:
            if len(buf) > MAX_GOSSIPED_MESSAGE:
                raise DecodeError(f"{len(buf)}-byte message cannot be gossiped "
                                  f"(limit {MAX_GOSSIPED_MESSAGE})")
            record_type, handle, queue = self._gossiped[kind]
            if kind == SerfMsg.JOIN or kind == SerfMsg.LEAVE:
                msg = m.decode_intent(buf)  # relayed to every node: memoised by its bytes
            else:
                msg = record_type.decode(m.decode_body(buf[1:]))
            if isinstance(msg, m.UserEvent) and \
                    len(msg.name.encode()) + len(msg.payload) > USER_EVENT_SIZE_HARD_LIMIT:
                raise DecodeError(f"user event exceeds sane limit of "
                                  f"{USER_EVENT_SIZE_HARD_LIMIT} bytes")
            log.debug("serf: %s: %s", _GO_TYPE_NAME[kind],
                      msg.node if isinstance(msg, m.Leave | m.Join) else msg.name)
            if isinstance(msg, m.UserEvent) and self._join_ignore:
                self._hold_event(msg, bytes(buf), now)
            elif handle(msg, now):
                self._rebroadcast(queue, bytes(buf), now)
        elif kind == SerfMsg.QUERY_RESPONSE:
            self._handle_query_response(m.QueryResponse.decode(m.decode_body(buf[1:])))
        elif kind == SerfMsg.RELAY:
            relay = m.Relay.decode(buf[1:])
            dest = (codec.ip_from_bytes(relay.dest_ip), relay.dest_port)
            error = reply_address_error(*dest)
            if error:
                raise DecodeError(f"relay destination: {error}")
            log.debug("serf: Relaying response to addr: %s:%d", *dest)
            self.memberlist.send_user_packet(dest, relay.inner)
        else:
            raise DecodeError(f"unknown serf message type {kind}")

    def _rebroadcast(self, queue: BroadcastQueue, buf: bytes, now: float) -> None:
        queue.queue(buf)
        dropped = queue.prune(self.config.max_queue_depth, MAX_QUEUE_BYTES)
        if dropped:
            self.drops.drop("serf broadcast (queue full)", "rebroadcast", f"dropped "
                            f"{dropped} oldest queued messages", now)

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
            if self._handle_user_event(msg):
                self._rebroadcast(self.event_broadcasts, buf, now)

    def notify_join(self, node: Node, now: float) -> None:
        self._contained("serf member-join", node.name, now,
                        lambda: self._notify_join(node, now))

    def _node_tags(self, node: Node, now: float) -> dict[str, str]:
        """Tags from node meta. As in serf, meta that does not decode as map[string]string
        gives a member without tags, and a logged error."""
        try:
            return m.decode_tags_strict(node.meta)
        except DecodeError as exc:
            self.drops.drop("serf tags", node.name, f"Failed to decode tags: {exc}", now)
            return {}

    def _notify_join(self, node: Node, now: float) -> None:
        tags = self._node_tags(node, now)
        ms = self.members.get(node.name)
        if ms is None:
            ms = _MemberState(Member(node.name, node.addr, node.port, tags, MemberStatus.ALIVE))
            join_ltime = self._recent_intent(node.name, SerfMsg.JOIN)
            if join_ltime is not None:
                ms.status_ltime = join_ltime
            leave_ltime = self._recent_intent(node.name, SerfMsg.LEAVE)
            if leave_ltime is not None:
                ms.member.status = MemberStatus.LEAVING
                ms.status_ltime = leave_ltime
            self.members[node.name] = ms
            old_status = MemberStatus.NONE
        else:
            old_status = ms.member.status
            ms.member.status = MemberStatus.ALIVE
            ms.leave_time = 0.0
            ms.member.addr, ms.member.port, ms.member.tags = node.addr, node.port, tags
        self._copy_versions(ms.member, node)
        if old_status in (MemberStatus.FAILED, MemberStatus.LEFT):
            self.failed_members = [x for x in self.failed_members if x.member.name != node.name]
            self.left_members = [x for x in self.left_members if x.member.name != node.name]
        self._emit_member_event("member-join", ms.member)

    def notify_leave(self, node: Node, now: float) -> None:
        self._contained("serf member-leave", node.name, now,
                        lambda: self._notify_leave(node, now))

    def _notify_leave(self, node: Node, now: float) -> None:
        ms = self.members.get(node.name)
        if ms is None:
            return
        if ms.member.status == MemberStatus.LEAVING:
            ms.member.status = MemberStatus.LEFT
            ms.leave_time = now
            self.left_members.append(ms)
            self._emit_member_event("member-leave", ms.member)
        elif ms.member.status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.FAILED
            ms.leave_time = now
            self.failed_members.append(ms)
            self._emit_member_event("member-failed", ms.member)
        else:
            log.warning("serf: Bad state when leave: %d", ms.member.status)

    def notify_update(self, node: Node, now: float) -> None:
        self._contained("serf member-update", node.name, now,
                        lambda: self._notify_update(node, now))

    def _notify_update(self, node: Node, now: float) -> None:
        ms = self.members.get(node.name)
        if ms is None:
            return
        tags = self._node_tags(node, now)
        ms.member.addr, ms.member.port = node.addr, node.port
        ms.member.tags = tags
        self._copy_versions(ms.member, node)
        self._emit_member_event("member-update", ms.member)

    def notify_conflict(self, existing: Node, other: Node, now: float) -> None:
        self._contained("serf conflict", other.name, now,
                        lambda: self._notify_conflict(existing, other, now))

    def _notify_conflict(self, existing: Node, other: Node, now: float) -> None:
        if existing.name != self.config.node_name:
            log.warning("serf: Name conflict for '%s' both %s:%d and %s:%d are claiming",
                        existing.name, existing.addr, existing.port, other.addr, other.port)
            return
        log.error("serf: Node name conflicts with another node at %s:%d. Names must be "
                  "unique! (Resolution enabled: %s)", other.addr, other.port,
                  str(not self.config.disable_name_resolution).lower())
        if not self.config.disable_name_resolution and not self._resolving_conflict:
            self._resolve_name_conflict(now)

    def _resolve_name_conflict(self, now: float) -> None:
        """Ask the cluster who it thinks owns our name; shut down if we are the minority."""
        me = self.memberlist.local_node
        tally = {"responses": 0, "matching": 0}

        def on_response(node: str, payload: bytes, when: float) -> None:
            try:
                answer = m.ConflictResponse.decode(payload)
            except DecodeError as exc:
                self.drops.drop("serf conflict response", node,
                                f"Failed to decode conflict query response: {exc}", when)
                return
            if answer is None:
                return  # the responder does not know the name
            tally["responses"] += 1
            if codec.ip_from_bytes(answer.addr) == me.addr and answer.port == me.port:
                tally["matching"] += 1

        def on_done(when: float) -> None:
            self._resolving_conflict = False
            matching, responses = tally["matching"], tally["responses"]
            if matching >= responses // 2 + 1:
                log.info("serf: majority in name conflict resolution [%d / %d]", matching,
                         responses)
                return
            log.warning("serf: minority in name conflict resolution, quiting [%d / %d]",
                        matching, responses)
            self._events.append(ShutdownRequested("minority in name conflict resolution"))

        self._resolving_conflict = True
        try:
            self.query(internal_queries.CONFLICT, self.config.node_name.encode(), now,
                       on_ack=lambda node, when: None, on_response=on_response,
                       on_done=on_done)
        except SerfError as exc:
            self._resolving_conflict = False
            log.error("serf: Failed to start name resolution query: %s", exc)

    def ack_payload(self) -> bytes | None:
        return coordinate.encode_ack_payload(self.coordinates.coord)

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes | None) -> None:
        """A direct ping finished: move our coordinate and remember the peer's."""
        if not payload:
            return
        self._contained("serf coordinate", node.name, self.scheduler.now,
                        lambda: self._ping_complete(node, rtt, payload))

    def _ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        theirs = coordinate.decode_ack_payload(payload)
        try:
            self.coordinates.update(node.name, theirs, rtt)
        except ValueError as exc:  # serf logs these at TRACE: a rejected, not a bad, message
            log.debug("serf: Rejected coordinate from %s: %s", node.name, exc)
            return
        self.coordinate_cache[node.name] = theirs
        self.coordinate_cache[self.config.node_name] = self.coordinates.coord.copy()

    @staticmethod
    def _copy_versions(member: Member, node: Node) -> None:
        member.protocol_min, member.protocol_max, member.protocol_cur = \
            node.pmin, node.pmax, node.pcur
        member.delegate_min, member.delegate_max, member.delegate_cur = \
            node.dmin, node.dmax, node.dcur

    # -- intents ---------------------------------------------------------------------------

    def _handle_leave_intent(self, msg: m.Leave, now: float) -> bool:
        self.clock.witness(msg.ltime)
        ms = self.members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, SerfMsg.LEAVE, msg.ltime, now)
        if msg.ltime <= ms.status_ltime:
            return False
        if msg.node == self.config.node_name and self.state == SerfState.ALIVE:
            log.debug("serf: Refuting an older leave intent")
            self._broadcast_join(self.clock.time)
            return False
        ms.status_ltime = msg.ltime
        status = ms.member.status
        if status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.LEAVING
            if msg.prune:
                self._prune(ms, now)
            return True
        if status == MemberStatus.FAILED:
            ms.member.status = MemberStatus.LEFT
            self.failed_members = [x for x in self.failed_members if x is not ms]
            self.left_members.append(ms)
            self._emit_member_event("member-leave", ms.member, " (forced)")
            if msg.prune:
                self._prune(ms, now)
            return True
        if status in (MemberStatus.LEAVING, MemberStatus.LEFT):
            if msg.prune:
                self._prune(ms, now)
            return True
        return False

    def _prune(self, ms: _MemberState, now: float) -> None:
        def erase(when: float) -> None:
            if self.members.get(ms.member.name) is not ms:
                return
            log.info("serf: EventMemberReap (forced): %s %s", ms.member.name, ms.member.addr)
            self.left_members = [x for x in self.left_members if x is not ms]
            self._erase(ms)

        if ms.member.status == MemberStatus.LEAVING:
            # Let the graceful leave finish before the member disappears.
            delay = self.config.broadcast_timeout + self.config.leave_propagate_delay
            self.scheduler.call_at(now + delay, erase)
        else:
            erase(now)

    def _erase(self, ms: _MemberState) -> None:
        self.members.pop(ms.member.name, None)
        self.coordinates.forget(ms.member.name)
        self.coordinate_cache.pop(ms.member.name, None)
        self._events.append(MemberEvent("member-reap", [ms.member.copy()]))

    def _handle_join_intent(self, msg: m.Join, now: float) -> bool:
        self.clock.witness(msg.ltime)
        ms = self.members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, SerfMsg.JOIN, msg.ltime, now)
        if msg.ltime <= ms.status_ltime:
            return False
        ms.status_ltime = msg.ltime
        if ms.member.status == MemberStatus.LEAVING:
            ms.member.status = MemberStatus.ALIVE
        return True

    # -- user events -----------------------------------------------------------------------

    def _handle_user_event(self, msg: m.UserEvent) -> bool:
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
                                f"hold {self._event_buffer_bytes} bytes", self.scheduler.now)
                return False
            if len(seen[1]) >= m.MAX_SLOT_EVENTS:
                self.drops.drop("serf user-event (slot full)", "a peer", f"more than "
                                f"{m.MAX_SLOT_EVENTS} events at time {msg.ltime}",
                                self.scheduler.now)
                return False
            seen[1].append(item)
        else:
            if seen is not None:
                self._event_buffer_bytes -= sum(len(n) + len(p) for n, p in seen[1])
            self.event_buffer[idx] = (msg.ltime, [item])
        self._event_buffer_bytes += cost
        self._events.append(UserEventReceived(msg.ltime, msg.name, msg.payload, msg.cc))
        return True

    # -- queries ---------------------------------------------------------------------------

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
            self.memberlist.send_user_packet(source, raw)
            self._relay_response(q.relay_factor, source, q.source_node, raw)
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
                        raw: bytes) -> None:
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
            self.memberlist.send_user_packet((member.addr, member.port), relay,
                                             nodes.get(member.name))

    def _handle_query_response(self, resp: m.QueryResponse) -> None:
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
        now = self.scheduler.now
        if resp.flags & m.QUERY_FLAG_ACK:
            if resp.from_ not in collector.acks:
                collector.acks.add(resp.from_)
                collector.on_ack(resp.from_, now)
        elif resp.from_ not in collector.responses:
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

    # -- periodic --------------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        def reap(old: list[_MemberState], timeout: float) -> list[_MemberState]:
            keep = []
            for ms in old:
                if now - ms.leave_time <= timeout:
                    keep.append(ms)
                    continue
                log.info("serf: EventMemberReap: %s", ms.member.name)
                self._erase(ms)
            return keep

        self.failed_members = reap(self.failed_members, self.config.reconnect_timeout)
        self.left_members = reap(self.left_members, self.config.tombstone_timeout)
        expiry = self.config.recent_intent_timeout
        for name in [n for n, (_, _, t) in self.recent_intents.items() if now - t > expiry]:
            del self.recent_intents[name]

    def _reconnect(self, now: float) -> None:
        failed = len(self.failed_members)
        if failed == 0:
            return
        alive = max(1, len(self.members) - failed - len(self.left_members))
        if self.rng.random() > failed / alive:
            log.debug("serf: forgoing reconnect for random throttling")
            return
        ms = self.rng.choice(self.failed_members)
        member = ms.member
        log.info("serf: attempting reconnect to %s %s:%d", member.name, member.addr, member.port)
        self.memberlist.join([(member.name, (member.addr, member.port))], now,
                             lambda outcome, when: None)

    def _check_queues(self, now: float) -> None:
        for name, queue in (("Intent", self.intent_broadcasts), ("Event", self.event_broadcasts),
                            ("Query", self.query_broadcasts)):
            depth = len(queue)
            if depth >= 128:
                log.warning("serf: %s queue depth: %d", name, depth)
            if depth > self.config.max_queue_depth:
                log.warning("serf: %s queue depth (%d) exceeds limit (%d), dropping messages!",
                            name, depth, self.config.max_queue_depth)
                queue.prune(self.config.max_queue_depth)
