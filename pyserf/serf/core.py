"""The serf machine: ``Serf``, the one object an I/O shell drives.

Sans-I/O like the memberlist machine below it (they share one scheduler). A shell feeds it
datagrams, streams, stream results and timer ticks, each with the time, sends what
``actions()`` returns and handles what ``events()`` returns (typed records, see events.py).
Operations return a Handle; their outcomes arrive as events naming it.

Where each mechanism lives: members.py (member model), events.py (what is reported),
config.py, intents.py (join/leave intents), user_events.py, queries.py, keymanager.py,
reaper.py (reap, reconnect, queue depth), delegate.py (what memberlist calls on serf),
ping_delegate.py and coordinate.py (Vivaldi), coalesce.py, snapshot.py, internal_queries.py
(the ``_serf_`` queries), messages.py (wire records), filters.py, clock.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN
from pyserf.memberlist import codec
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.drops import DropLog
from pyserf.memberlist.fields import U64_MAX
from pyserf.memberlist.memberlist import Memberlist
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.memberlist.timers import Scheduler, Timer
from pyserf.memberlist.types import Address, JoinOutcome, MemberlistConfig, OpenStream, SendPacket
from pyserf.serf import coordinate
from pyserf.serf import messages as m
from pyserf.serf.clock import LamportClock, ltime_add
from pyserf.serf.config import SerfConfig, SerfError
from pyserf.serf.delegate import SerfDelegate
from pyserf.serf.events import (
    MEMBER_EVENT_LOG,
    ForceLeaveFinished,
    Handle,
    JoinFinished,
    KeyringChanged,
    LeaveFinished,
    MemberEvent,
    SerfEvent,
    TagsSet,
    new_handle,
)
from pyserf.serf.intents import Intents
from pyserf.serf.keymanager import KeyManager
from pyserf.serf.members import Member, MemberState, MemberStatus, SerfState
from pyserf.serf.messages import SerfMsg
from pyserf.serf.queries import Queries, QueryCollector
from pyserf.serf.reaper import Reaper
from pyserf.serf.user_events import USER_EVENT_SIZE_HARD_LIMIT, UserEvents

log = logging.getLogger("pyserf.serf")

# Bytes each broadcast queue may hold besides serf's depth limit (max_queue_depth, which serf
# enforces every 30 s): 4,096 messages of 9 KiB would otherwise be 37 MiB per queue.
MAX_QUEUE_BYTES = 8 * 1024 * 1024

# serf's counter per member event (a leave is counted under the member's new status, "left").
_MEMBER_METRICS = {"member-join": "serf.member.join", "member-leave": "serf.member.left",
                   "member-failed": "serf.member.failed", "member-update": "serf.member.update"}


class Serf(Intents, UserEvents, Queries, KeyManager, Reaper):
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
        # What memberlist calls on serf lives in its own object, off Serf's API.
        self.memberlist = Memberlist(ml_config, SerfDelegate(self), scheduler, self.rng)
        self.metrics: Metrics = NULL_METRICS
        self.members: dict[str, MemberState] = {}
        self.failed_members: list[MemberState] = []
        self.left_members: list[MemberState] = []
        self.recent_intents: dict[str, tuple[int, int, float]] = {}  # name -> (type, ltime, t)
        self.status_times: dict[bytes, int] = {}
        self.marked_leaving: set[str] = set()
        self.status_ltime_top = 0
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
        sent = lambda msg: self.metrics.sample("serf.msgs.sent", len(msg))  # noqa: E731
        self.intent_broadcasts = BroadcastQueue(mult, num, soon, sent)
        self.event_broadcasts = BroadcastQueue(mult, num, soon, sent)
        self.query_broadcasts = BroadcastQueue(mult, num, soon, sent)
        self.state = SerfState.ALIVE
        self._events: list[SerfEvent] = []
        self._queries: dict[int, QueryCollector] = {}  # by LTime
        self._join_ignore = 0
        self._held_events: list[tuple[m.UserEvent, bytes]] = []
        self._held_event_bytes = 0
        # Messages refused at the decode boundary, counted by kind, logged at most once a second
        # per peer and kind.
        self.drops = DropLog(log, "serf")
        # Gossiped kinds: record type, handler (True = new, gossip it on), rebroadcast queue.
        self._gossiped: dict[int, tuple[Any, Callable[[Any, float], bool], BroadcastQueue]] = {
            SerfMsg.LEAVE: (m.Leave, lambda x, now: self._handle_leave_intent(x, now),
                            self.intent_broadcasts),
            SerfMsg.JOIN: (m.Join, lambda x, now: self._handle_join_intent(x, now),
                           self.intent_broadcasts),
            SerfMsg.USER_EVENT: (m.UserEvent, lambda x, now: self._handle_user_event(x, now),
                                 self.event_broadcasts),
            SerfMsg.QUERY: (m.Query, lambda x, now: self._handle_query(x, now),
                            self.query_broadcasts),
        }
        self.coordinates = coordinate.VivaldiClient(self.rng)
        self.coordinate_cache: dict[str, coordinate.Coordinate] = {
            config.node_name: self.coordinates.coord.copy()}
        self._resolving_conflict = False
        self._loops: list[Timer] = []

    # -- lifecycle -------------------------------------------------------------------------

    def use_metrics(self, metrics: Metrics) -> None:
        """Count into ``metrics`` (serf's and memberlist's names) from now on."""
        self.metrics = self.memberlist.metrics = metrics

    def start(self, now: float) -> None:
        self.clock.increment()
        self.event_clock.increment()
        self.query_clock.increment()
        self.memberlist.start(now)
        c = self.config
        self._every(c.reap_interval, self._reap, now)
        self._every(c.reconnect_interval, self._reconnect, now, c.reconnect_jitter)
        self._every(c.queue_check_interval, self._check_queues, now)

    def restore_clocks(self, clock: object, event_clock: object, query_clock: object) -> None:
        """Continue from a snapshot: never re-deliver events or queries seen before. A value
        that is no uint64 (a damaged snapshot) is ignored; the others wrap as in Go."""
        values: list[int | None] = []
        for what, value in (("clock", clock), ("event clock", event_clock),
                            ("query clock", query_clock)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= U64_MAX:
                log.warning("serf: ignoring snapshot %s %r: not a uint64", what, value)
                values.append(None)
            else:
                values.append(value)
        restored_clock, restored_event, restored_query = values
        if restored_clock is not None:
            self.clock.witness(restored_clock)
        if restored_event is not None:
            self.event_clock.witness(restored_event)
            self.event_min_time = max(self.event_min_time, ltime_add(restored_event, 1))
        if restored_query is not None:
            self.query_clock.witness(restored_query)
            self.query_min_time = max(self.query_min_time, ltime_add(restored_query, 1))

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

    # -- the facade: the only way an I/O shell drives this machine ---------------------------
    # Input: datagrams, inbound streams, the results of streams we opened, and the timer. Output:
    # actions() (datagrams to send, streams to open) and events() (what happened). Every input
    # takes the time; nothing here reads a clock.

    def receive_packet(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram from ``addr``; nothing a peer sends raises out of here."""
        self.memberlist.receive_packet(data, addr, now)

    def receive_stream(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """One inbound stream message; returns the reply to write back (or None)."""
        return self.memberlist.handle_stream(data, addr, now)

    def stream_reply(self, stream_id: int, data: bytes, now: float) -> None:
        """The reply on a stream this machine asked to open (an OpenStream action)."""
        self.memberlist.stream_reply(stream_id, data, now)

    def stream_failed(self, stream_id: int, error: str, now: float) -> None:
        """A stream this machine asked to open failed (dial, write, read or deadline)."""
        self.memberlist.stream_failed(stream_id, error, now)

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``; call it at (or after) get_timer()."""
        self.scheduler.run_due(now)

    def get_timer(self) -> float | None:
        """When handle_timer must next be called, or None when nothing is scheduled."""
        return self.scheduler.next_wake()

    def actions(self) -> list[SendPacket | OpenStream]:
        """Datagrams to send and streams to open, oldest first; each is returned once."""
        return self.memberlist.take_actions()

    def events(self) -> list[SerfEvent]:
        """What happened since the last call, oldest first; each is returned once."""
        events, self._events = self._events, []
        return events

    def shutdown(self) -> None:
        if self.state != SerfState.LEFT:
            log.warning("serf: Shutdown without a Leave")
        self.state = SerfState.SHUTDOWN
        for timer in self._loops:
            timer.cancel()
        self.memberlist.shutdown()

    # -- queries about state ---------------------------------------------------------------

    def local_member(self) -> Member[MemberStatus]:
        return self.members[self.config.node_name].member.copy()

    def member_list(self) -> list[Member[MemberStatus]]:
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

    def keyring_changed(self) -> None:
        """A key query changed the keyring: reported so the agent can persist it."""
        self._events.append(KeyringChanged())

    # -- operations ------------------------------------------------------------------------

    def join(self, targets: list[tuple[str, Address]], ignore_old: bool, now: float) -> Handle:
        """Join through ``targets``; a JoinFinished naming the handle reports the outcome."""
        handle = new_handle()
        self._join(targets, ignore_old, now,
                   lambda outcome, when: self._events.append(JoinFinished(handle, outcome, when)))
        return handle

    def leave(self, now: float) -> Handle:
        """Graceful leave; a LeaveFinished naming the handle reports the outcome."""
        handle = new_handle()
        self._leave(now, lambda error, when: self._events.append(LeaveFinished(handle, error,
                                                                               when)))
        return handle

    def force_leave(self, node: str, prune: bool, now: float) -> Handle:
        """Mark ``node`` left (and erase it when ``prune``); a ForceLeaveFinished follows."""
        handle = new_handle()
        self._force_leave(node, prune, now, lambda error, when: self._events.append(
            ForceLeaveFinished(handle, error, when)))
        return handle

    def set_tags(self, tags: dict[str, str], now: float) -> Handle:
        """Replace this node's tags (SerfError when they do not fit); a TagsSet follows."""
        handle = new_handle()
        self._set_tags(tags, now,
                       lambda error, when: self._events.append(TagsSet(handle, error, when)))
        return handle

    def _join(self, targets: list[tuple[str, Address]], ignore_old: bool, now: float,
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
                self._broadcast_join(self.clock.time, when)
            on_done(outcome, when)

        self.memberlist.join(targets, now, done)

    def _leave(self, now: float, on_done: Callable[[str | None, float], None]) -> None:
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
            self.memberlist.send_to_live_nodes(codec.encode_user(raw), now)
        else:
            after_intent(None, now)

    def _force_leave(self, node: str, prune: bool, now: float,
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

    def _set_tags(self, tags: dict[str, str], now: float,
                  on_done: Callable[[str | None, float], None]) -> None:
        if len(m.encode_tags(tags, self.config.protocol_version)) > codec.META_MAX_SIZE:
            raise SerfError(
                f"Encoded length of tags exceeds limit of {codec.META_MAX_SIZE} bytes")
        self.config.tags = dict(tags)
        self.memberlist.update_node(now, self.config.broadcast_timeout, on_done)

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

        queue.queue(raw, on_finished=lambda when: finish(None, when), now=now)
        self.scheduler.call_at(now + timeout, lambda t: finish(timeout_error, t))

    def _has_alive_members(self) -> bool:
        name = self.config.node_name
        return any(ms.member.status == MemberStatus.ALIVE and n != name
                   for n, ms in self.members.items())

    def _emit_member_event(self, kind: str, member: Member[MemberStatus], suffix: str = "") -> None:
        if not suffix:  # serf counts no forced leave (a failed member's leave intent)
            self.metrics.incr(_MEMBER_METRICS.get(kind, "serf.member.other"))
        label = MEMBER_EVENT_LOG[kind]
        if kind in ("member-update",):
            log.info("serf: %s: %s", label, member.name)
        else:
            log.info("serf: %s%s: %s %s", label, suffix, member.name, member.addr)
        self._events.append(MemberEvent(kind, [member.copy()]))

    def _rebroadcast(self, queue: BroadcastQueue, buf: bytes, now: float) -> None:
        queue.queue(buf, now=now)
        dropped = queue.prune(self.config.max_queue_depth, MAX_QUEUE_BYTES, now=now)
        if dropped:
            self.drops.drop("serf broadcast (queue full)", "rebroadcast", f"dropped "
                            f"{dropped} oldest queued messages", now)

