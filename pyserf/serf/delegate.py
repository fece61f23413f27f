"""The memberlist delegate: what memberlist calls on serf (node meta, broadcasts, user
messages, push-pull state, member changes, name conflicts, ping coordinates). A separate object
so these calls are not part of Serf's own API."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pyserf.gocompat.hostport import join_host_port
from pyserf.memberlist import codec
from pyserf.memberlist.codec import NodeStateKind
from pyserf.memberlist.fields import U64_MAX, DecodeError, WireMap
from pyserf.memberlist.types import Address, Node
from pyserf.serf import internal_queries, ping_delegate
from pyserf.serf import messages as m
from pyserf.serf.clock import ltime_add
from pyserf.serf.config import SerfError
from pyserf.serf.events import ShutdownRequested
from pyserf.serf.members import Member, MemberState, MemberStatus, copy_versions
from pyserf.serf.messages import SerfMsg
from pyserf.serf.queries import reply_address_error
from pyserf.serf.user_events import USER_EVENT_SIZE_HARD_LIMIT

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue
    from pyserf.serf.core import Serf

log = logging.getLogger("pyserf.serf")

# A message we gossip on has to fit a datagram to be piggybacked at all; anything larger could
# only sit in a broadcast queue. (Streams may carry 20 MiB user messages.)
MAX_GOSSIPED_MESSAGE = 64 * 1024

# A failed member back within this long counts as a flap (serf's FlapTimeout).
FLAP_TIMEOUT = 60.0

# How the drop log names each serf message kind.
DROP_KIND: dict[int, str] = {SerfMsg.LEAVE: "serf leave", SerfMsg.JOIN: "serf join",
             SerfMsg.PUSH_PULL: "serf push-pull", SerfMsg.USER_EVENT: "serf user-event",
             SerfMsg.QUERY: "serf query", SerfMsg.QUERY_RESPONSE: "serf query-response",
             SerfMsg.RELAY: "serf relay"}

# serf's names for the gossiped kinds, as its debug log shows them.
_GO_TYPE_NAME: dict[int, str] = {SerfMsg.LEAVE: "messageLeaveType", SerfMsg.JOIN: "messageJoinType",
                 SerfMsg.USER_EVENT: "messageUserEventType", SerfMsg.QUERY: "messageQueryType"}



def _peer_text(source: Address | None) -> str:
    return join_host_port(str(source[0]), source[1]) if source else "a peer"



class SerfDelegate:
    """Memberlist's delegate for one Serf."""

    def __init__(self, serf: Serf) -> None:
        self.serf = serf

    def node_meta(self, limit: int) -> bytes:
        meta = m.encode_tags(self.serf.config.tags, self.serf.config.protocol_version)
        if len(meta) > limit:
            raise SerfError(f"Node tags '{self.serf.config.tags}' exceeds length limit of {limit}")
        return meta

    def broadcast_queues(self) -> Sequence[BroadcastQueue]:
        serf = self.serf
        return serf.intent_broadcasts, serf.query_broadcasts, serf.event_broadcasts

    def local_state(self, join: bool, now: float) -> bytes:
        """Our push-pull user state. Never raises: on an internal error the peer gets no serf
        state this round rather than a broken stream."""
        try:
            return self._local_state()
        except Exception as exc:
            log.debug("serf: failed to encode local state", exc_info=True)
            self.serf.drops.drop("serf local state (internal error)", "self", exc, now)
            return b""

    def _local_state(self) -> bytes:
        # A member that is leaving is reported among the left members with its leave time
        # minus one: receivers turn that back into the very same leave intent. Reported as a
        # plain status time (as serf does) it would act as a join intent at the leave's own
        # time and make the real leave intent look stale, so a graceful leave racing a
        # push-pull would end up as "failed".
        members = self.serf.members
        leaving_status = MemberStatus.LEAVING
        marked = self.serf.marked_leaving
        for name in list(marked):
            ms = members.get(name)
            if ms is None or ms.member.status != leaving_status:
                marked.discard(name)
        # In the members' order, like every list of the state; looked for only while some
        # member is marked leaving (rare), not among all members at every exchange.
        leaving = [name for name, ms in members.items()
                   if ms.member.status == leaving_status and ms.status_ltime > 0] if marked else []
        if leaving:
            lowered = set(leaving)
            entries = m.status_entries([(name, ms.status_ltime - (name in lowered))
                                        for name, ms in members.items()])
        else:
            entries = [ms.wire or self._pack_status(name, ms) for name, ms in members.items()]
        left = [ms.member.name for ms in self.serf.left_members] + leaving
        return m.PushPullState.encode_with(
            entries, ltime=self.serf.clock.time, left_members=left,
            event_ltime=self.serf.event_clock.time, events=list(self.serf.event_buffer),
            query_ltime=self.serf.query_clock.time)

    @staticmethod
    def _pack_status(name: str, ms: MemberState) -> bytes:
        ms.wire = wire = m.status_entry(name, ms.status_ltime)
        return wire

    def _contained(self, kind: str, peer: str, now: float, fn: Callable[[], None]) -> None:
        """Run one delegate callback; nothing it raises reaches memberlist. A DecodeError is
        a refused message, anything else an internal error; both are counted and logged
        (rate limited) and the message is dropped."""
        try:
            fn()
        except DecodeError as exc:
            self.serf.drops.drop(kind, peer, exc, now)
        except Exception as exc:
            log.debug("serf: internal error handling %s from %s", kind, peer, exc_info=True)
            self.serf.drops.drop(f"{kind} (internal error)", peer, exc, now)

    def merge_remote_state(self, buf: bytes, join: bool, now: float,
                           source: Address | None = None) -> None:
        self._contained("serf push-pull", _peer_text(source), now,
                        lambda: self._merge_remote_state(buf, join, now))

    def _merge_remote_state(self, buf: bytes, join: bool, now: float) -> None:
        # Decoded whole before anything changes; entries equal to ours are left out.
        pp = m.PushPullState.decode_state(buf, self._held_status_ltimes)
        # Witness the clocks first; minus one since no message with that time was sent yet.
        if pp.ltime > 0:
            self.serf.clock.witness(pp.ltime - 1)
        if pp.event_ltime > 0:
            self.serf.event_clock.witness(pp.event_ltime - 1)
        if pp.query_ltime > 0:
            self.serf.query_clock.witness(pp.query_ltime - 1)
        left = set(pp.left_members)
        for name in pp.left_members:
            leave_time = ltime_add(pp.status_ltimes.get(name, 0), 1)  # wraps as Go's does
            self.serf._handle_leave_intent(m.Leave(leave_time, name), now)
        members, witness = self.serf.members, self.serf.clock.witness
        for name, ltime in pp.status_ltimes.items():
            if name not in left:
                ms = members.get(name)
                if ms is not None and ltime <= ms.status_ltime:
                    witness(ltime)  # all _handle_join_intent does with old news
                    continue
                self.serf._handle_join_intent(m.Join(ltime, name), now)
        if join and self.serf._join_ignore > 0 and pp.event_ltime > self.serf.event_min_time:
            self.serf.event_min_time = pp.event_ltime
        for slot in pp.events:
            if slot is None:
                continue
            ltime, items = slot
            for name, payload in items:
                self.serf._handle_user_event(m.UserEvent(ltime, name, payload, False), now)

    def _held_status_ltimes(self, body: WireMap) -> Mapping[bytes, int] | None:
        """Our status times by name bytes (kept up to date in Serf.status_times), for a
        push-pull decode to leave out the entries equal to them; None when leaving them out
        could differ from merging them.

        Merging an entry equal to ours only witnesses its time, a no-op while our clock is past
        every status time we hold (``status_ltime_top`` bounds them all: no pass over the
        members per exchange). The other guard keeps the clock from wrapping during the merge
        (every witness adds one; a self-refute per left entry naming us adds one too), where
        skipped witnesses would matter."""
        members = self.serf.members
        raw = body.get(b"StatusLTimes")
        left = body.get(b"LeftMembers")
        if not members or not isinstance(raw, dict) or not isinstance(left, list | None):
            return None
        clock = self.serf.clock.time
        try:
            top = max(raw.values(), default=0)
        except TypeError:  # a value that is not a number: the full decode names it
            return None
        sender_clock = body.get(b"LTime")  # witnessed before the entries
        margin = len(left or ()) + 2
        if (type(top) is not int or type(sender_clock) is not int
                or max(top, clock, sender_clock) + margin >= U64_MAX):
            return None
        return self.serf.status_times if self.serf.status_ltime_top < clock else None

    def notify_msg(self, buf: bytes, now: float, source: Address | None = None) -> None:
        """A serf message from memberlist (``source`` is the sender's address when known)."""
        if not buf:
            return
        self.serf.metrics.sample("serf.msgs.received", len(buf))
        # What _contained does, without building its closure and peer text per message.
        try:
            self._notify_msg(buf, now)
        except DecodeError as exc:
            self.serf.drops.drop(DROP_KIND.get(buf[0], "serf message"), _peer_text(source), exc,
                                 now)
        except Exception as exc:
            kind, peer = DROP_KIND.get(buf[0], "serf message"), _peer_text(source)
            log.debug("serf: internal error handling %s from %s", kind, peer, exc_info=True)
            self.serf.drops.drop(f"{kind} (internal error)", peer, exc, now)

    def _notify_msg(self, buf: bytes, now: float) -> None:
        kind = buf[0]
        if kind in self.serf._gossiped:
            if len(buf) > MAX_GOSSIPED_MESSAGE:
                raise DecodeError(f"{len(buf)}-byte message cannot be gossiped "
                                  f"(limit {MAX_GOSSIPED_MESSAGE})")
            record_type, handle, queue = self.serf._gossiped[kind]
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
            if isinstance(msg, m.UserEvent) and self.serf._join_ignore:
                self.serf._hold_event(msg, bytes(buf), now)
            elif handle(msg, now):
                self.serf._rebroadcast(queue, bytes(buf), now)
        elif kind == SerfMsg.QUERY_RESPONSE:
            self.serf._handle_query_response(m.QueryResponse.decode(m.decode_body(buf[1:])),
                                             now)
        elif kind == SerfMsg.RELAY:
            relay = m.Relay.decode(buf[1:])
            dest = (codec.ip_from_bytes(relay.dest_ip), relay.dest_port)
            error = reply_address_error(*dest)
            if error:
                raise DecodeError(f"relay destination: {error}")
            log.debug("serf: Relaying response to addr: %s:%d", *dest)
            self.serf.memberlist.send_user_packet(dest, relay.inner, now)
        else:
            raise DecodeError(f"unknown serf message type {kind}")

    def notify_join(self, node: Node, now: float) -> None:
        # What _contained does, without a closure: every node learns every member this way.
        try:
            self._notify_join(node, now)
        except DecodeError as exc:
            self.serf.drops.drop("serf member-join", node.name, exc, now)
        except Exception as exc:
            log.debug("serf: internal error handling serf member-join from %s", node.name,
                      exc_info=True)
            self.serf.drops.drop("serf member-join (internal error)", node.name, exc, now)

    def _node_tags(self, node: Node, now: float) -> dict[str, str]:
        """Tags from node meta. As in serf, meta that does not decode as map[string]string
        gives a member without tags, and a logged error."""
        try:
            return m.decode_tags_strict(node.meta)
        except DecodeError as exc:
            self.serf.drops.drop("serf tags", node.name, f"Failed to decode tags: {exc}", now)
            return {}

    def _notify_join(self, node: Node, now: float) -> None:
        tags = self._node_tags(node, now)
        ms = self.serf.members.get(node.name)
        if ms is None:
            ms = MemberState(Member(node.name, node.addr, node.port, tags, MemberStatus.ALIVE))
            # The intent that arrived before the member did (join or leave, the latest only).
            intent = self.serf.recent_intents.get(node.name)
            if intent is not None:
                self.serf._set_status_ltime(ms, intent[1])
                if intent[0] == SerfMsg.LEAVE:
                    self.serf._mark_leaving(ms)
            self.serf.members[node.name] = ms
            self.serf.status_times[m.name_bytes(node.name)] = ms.status_ltime
            old_status = MemberStatus.NONE
        else:
            old_status = ms.member.status
            if old_status == MemberStatus.FAILED and now - ms.leave_time < FLAP_TIMEOUT:
                self.serf.metrics.incr("serf.member.flap")
            ms.member.status = MemberStatus.ALIVE
            ms.leave_time = 0.0
            ms.member.addr, ms.member.port, ms.member.tags = node.addr, node.port, tags
        copy_versions(ms.member, node)
        if old_status in (MemberStatus.FAILED, MemberStatus.LEFT):
            serf = self.serf
            serf.failed_members = [x for x in serf.failed_members if x.member.name != node.name]
            serf.left_members = [x for x in serf.left_members if x.member.name != node.name]
        self.serf._emit_member_event("member-join", ms.member)

    def notify_leave(self, node: Node, now: float) -> None:
        self._contained("serf member-leave", node.name, now,
                        lambda: self._notify_leave(node, now))

    def _notify_leave(self, node: Node, now: float) -> None:
        ms = self.serf.members.get(node.name)
        if ms is None:
            return
        # memberlist marks a node LEFT only after its own goodbye (a dead message about
        # itself), which serf sends once its leave intent has gone out. Serf 0.9 reports a
        # failure when that intent missed this node, and corrects it to a forced leave at the
        # next push-pull; a goodbye is a leave, so it is reported as one from the start.
        if ms.member.status == MemberStatus.LEAVING or (
                ms.member.status == MemberStatus.ALIVE and node.state == NodeStateKind.LEFT):
            ms.member.status = MemberStatus.LEFT
            ms.leave_time = now
            self.serf.left_members.append(ms)
            self.serf._emit_member_event("member-leave", ms.member)
        elif ms.member.status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.FAILED
            ms.leave_time = now
            self.serf.failed_members.append(ms)
            self.serf._emit_member_event("member-failed", ms.member)
        else:
            log.warning("serf: Bad state when leave: %d", ms.member.status)

    def notify_update(self, node: Node, now: float) -> None:
        self._contained("serf member-update", node.name, now,
                        lambda: self._notify_update(node, now))

    def _notify_update(self, node: Node, now: float) -> None:
        ms = self.serf.members.get(node.name)
        if ms is None:
            return
        tags = self._node_tags(node, now)
        ms.member.addr, ms.member.port = node.addr, node.port
        ms.member.tags = tags
        copy_versions(ms.member, node)
        self.serf._emit_member_event("member-update", ms.member)

    def notify_conflict(self, existing: Node, other: Node, now: float) -> None:
        self._contained("serf conflict", other.name, now,
                        lambda: self._notify_conflict(existing, other, now))

    def _notify_conflict(self, existing: Node, other: Node, now: float) -> None:
        if existing.name != self.serf.config.node_name:
            log.warning("serf: Name conflict for '%s' both %s:%d and %s:%d are claiming",
                        existing.name, existing.addr, existing.port, other.addr, other.port)
            return
        log.error("serf: Node name conflicts with another node at %s:%d. Names must be "
                  "unique! (Resolution enabled: %s)", other.addr, other.port,
                  str(not self.serf.config.disable_name_resolution).lower())
        if not self.serf.config.disable_name_resolution and not self.serf._resolving_conflict:
            self._resolve_name_conflict(now)

    def _resolve_name_conflict(self, now: float) -> None:
        """Ask the cluster who it thinks owns our name; shut down if we are the minority."""
        me = self.serf.memberlist.local_node
        tally = {"responses": 0, "matching": 0}

        def on_response(node: str, payload: bytes, when: float) -> None:
            try:
                answer = m.ConflictResponse.decode(payload)
            except DecodeError as exc:
                self.serf.drops.drop("serf conflict response", node,
                                f"Failed to decode conflict query response: {exc}", when)
                return
            if answer is None:
                return  # the responder does not know the name
            tally["responses"] += 1
            if codec.ip_from_bytes(answer.addr) == me.addr and answer.port == me.port:
                tally["matching"] += 1

        def on_done(when: float) -> None:
            self.serf._resolving_conflict = False
            matching, responses = tally["matching"], tally["responses"]
            if matching >= responses // 2 + 1:
                log.info("serf: majority in name conflict resolution [%d / %d]", matching,
                         responses)
                return
            log.warning("serf: minority in name conflict resolution, quiting [%d / %d]",
                        matching, responses)
            self.serf._events.append(ShutdownRequested("minority in name conflict resolution"))

        self.serf._resolving_conflict = True
        try:
            self.serf._query(internal_queries.CONFLICT, self.serf.config.node_name.encode(), now,
                       on_ack=lambda node, when: None, on_response=on_response,
                       on_done=on_done)
        except SerfError as exc:
            self.serf._resolving_conflict = False
            log.error("serf: Failed to start name resolution query: %s", exc)

    def ack_payload(self) -> bytes | None:
        return ping_delegate.encode_ack_payload(self.serf.coordinates.coord)

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes | None,
                             now: float) -> None:
        """A direct ping finished: move our coordinate and remember the peer's."""
        if not payload:
            return
        self._contained("serf coordinate", node.name, now,
                        lambda: self._ping_complete(node, rtt, payload))

    def _ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        theirs = ping_delegate.decode_ack_payload(payload)
        before = self.serf.coordinates.coord.copy()
        try:
            self.serf.coordinates.update(node.name, theirs, rtt)
        except ValueError as exc:  # serf logs these at TRACE: a rejected, not a bad, message
            self.serf.metrics.incr("serf.coordinate.rejected")
            log.debug("serf: Rejected coordinate from %s: %s", node.name, exc)
            return
        self.serf.metrics.sample("serf.coordinate.adjustment-ms",
                                 before.distance_to(self.serf.coordinates.coord) * 1.0e3)
        self.serf.coordinate_cache[node.name] = theirs
        self.serf.coordinate_cache[self.serf.config.node_name] = self.serf.coordinates.coord.copy()
