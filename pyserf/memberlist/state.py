"""The SWIM + Lifeguard membership machine, wire-compatible with hashicorp/memberlist 0.2.x.

Sans-I/O: it is fed packets, stream payloads and the current time, and queues actions
(datagrams to send, streams to open) that the caller drains with ``take_actions``. Timers live in
a shared ``Scheduler``; the caller sleeps until ``scheduler.next_wake()`` and then calls
``scheduler.run_due(now)``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast, overload

import msgpack

from pyserf.gocompat.hostport import join_host_port
from pyserf.memberlist import codec, fields, security
from pyserf.memberlist.awareness import Awareness
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.catchup import (
    MERGE_SYNC_FANOUT,
    BurstSettler,
    CatchUpBudget,
    merge_sync_targets,
)
from pyserf.memberlist.codec import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    MsgType,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)
from pyserf.memberlist.drops import DropLog
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.memberlist.profiles import LAN, Timing, push_pull_scale, suspicion_timeout
from pyserf.memberlist.suspicion import Suspicion
from pyserf.memberlist.timers import Scheduler, Timer

log = logging.getLogger("pyserf.memberlist")

PROTOCOL_MIN = 1
PROTOCOL_MAX = 5
PROTOCOL_CUR = 2
MAX_PUSH_PULL_REQUESTS = 128
# Nothing heard for this many probe intervals: we, not our peers, were cut off. A node of a
# live cluster hears acks and gossip several times per interval.
SILENCE_PROBES = 2
EXPEDITE_MIN_GAP = 0.05
# What one datagram may expand to. memberlist compresses a message that already fits a UDP
# packet, so nothing legitimate decompresses past 64 KiB; without a budget, LZW's ~2,700x ratio
# and compounds of compressed compounds turn 72 KB into hundreds of MiB.
MAX_PACKET_EXPANSION = 128 * 1024
MAX_PACKET_MESSAGES = 1024  # messages per datagram, counting every compound part
MAX_NESTING = 4  # compress(compound(...)) is the deepest memberlist itself sends
# Datagrams shorter than this are sent uncompressed (serf accepts both): measured on a 50-node
# join storm's traffic, none of 1,425 datagrams under 80 bytes (pings, acks) shrank and 5 % of
# the 2,529 under 160 did, by a few bytes; from 220 bytes on every one did, by 20-60 %.
COMPRESS_MIN_SIZE = 160
# Catch-up syncs per membership change, cluster-wide (see _start_eager_sync), and the least
# time between two of one node's; CatchUpBudget caps how many one node runs.
EAGER_SYNCS = 2.0
EAGER_MIN_GAP = 1.0

Address = tuple[str, int]
_ALIVE = int(MsgType.ALIVE)
_USER = int(MsgType.USER)


# ---------------------------------------------------------------------------------------------
# data


@dataclass(slots=True)
class Node:
    name: str
    addr: str
    port: int
    meta: bytes = b""
    incarnation: int = 0
    state: NodeStateKind = NodeStateKind.DEAD
    state_change: float = 0.0
    pmin: int = 0
    pmax: int = 0
    pcur: int = 0
    dmin: int = 0
    dmax: int = 0
    dcur: int = 0

    @property
    def address(self) -> Address:
        return (self.addr, self.port)

    @property
    def vsn(self) -> bytes:
        return bytes((self.pmin, self.pmax, self.pcur, self.dmin, self.dmax, self.dcur))

    def set_vsn(self, vsn: bytes) -> None:
        if len(vsn) >= 6:
            self.pmin, self.pmax, self.pcur, self.dmin, self.dmax, self.dcur = vsn[:6]

    def dead_or_left(self) -> bool:
        return self.state in (NodeStateKind.DEAD, NodeStateKind.LEFT)


@dataclass(slots=True)
class SendPacket:
    addr: Address
    data: bytes


@dataclass(slots=True)
class OpenStream:
    """Connect to ``addr``, write ``data``, read one reply message, then report back."""

    stream_id: int
    addr: Address
    data: bytes
    deadline: float


@dataclass
class MemberlistConfig:
    name: str
    advertise_addr: str
    advertise_port: int
    bind_port: int = 7946
    timing: Timing = LAN
    keyring: security.Keyring | None = None
    enable_compression: bool = True
    delegate_versions: tuple[int, int, int] = (2, 5, 5)
    # pyserf extension: gossip new messages at once instead of at the next tick.
    expedite_gossip: bool = True
    # pyserf extension: after our join, and on some of the joins we hear of (~2 nodes per
    # change cluster-wide), run an extra push-pull so a node that missed an alive by gossip
    # catches up in about a second, not at the next periodic sync (30 s+).
    eager_sync: bool = True


class Delegate(Protocol):
    """What the layer above (serf) provides; every call is synchronous and does no I/O."""

    def node_meta(self, limit: int) -> bytes: ...
    def notify_msg(self, buf: bytes, now: float, source: Address | None = None) -> None: ...
    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]: ...
    def drop_broadcasts(self) -> None: ...
    def has_broadcasts(self) -> bool: ...
    def local_state(self, join: bool) -> bytes: ...
    def merge_remote_state(self, buf: bytes, join: bool, now: float,
                           source: Address | None = None) -> None: ...
    def notify_join(self, node: Node, now: float) -> None: ...
    def notify_leave(self, node: Node, now: float) -> None: ...
    def notify_update(self, node: Node, now: float) -> None: ...
    def notify_conflict(self, existing: Node, other: Node, now: float) -> None: ...
    def ack_payload(self) -> bytes | None: ...
    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes | None) -> None: ...


@dataclass(slots=True)
class _AckHandler:
    on_ack: Callable[[bytes | None, float], None]
    on_nack: Callable[[float], None] | None
    timer: Timer | None = None


@dataclass(slots=True)
class _Probe:
    target: Node
    seq: int
    sent: float
    deadline: float
    acked: bool = False
    nacks: int = 0
    expected_nacks: int = 0
    indirect: bool = False
    tcp_pending: bool = False
    tcp_ok: bool = False
    finished: bool = False
    timers: tuple[Timer, ...] = ()


@dataclass(slots=True)
class _StreamWait:
    on_reply: Callable[[int, bytes, float], None]
    on_error: Callable[[str, float], None]


@dataclass
class JoinOutcome:
    contacted: int = 0
    errors: list[str] = field(default_factory=list)


class StreamError(Exception):
    """A stream could not be read; the message goes back to the peer as an err reply."""


# ---------------------------------------------------------------------------------------------


class Memberlist:
    def __init__(self, config: MemberlistConfig, delegate: Delegate, scheduler: Scheduler,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.timing = config.timing
        self.delegate = delegate
        self.scheduler = scheduler
        self.rng = rng or random.Random()
        self.nodes: list[Node] = []
        self.node_map: dict[str, Node] = {}
        self.awareness = Awareness(self.timing.awareness_max_multiplier)
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry sets a recorder
        self.broadcasts = BroadcastQueue(self.timing.retransmit_mult, lambda: len(self.nodes),
                                         self.gossip_soon)
        self._expedited: Timer | None = None
        self._last_gossip = -1.0
        self._suspicions: dict[str, Suspicion] = {}
        # When a peer last got a message through to us, and the last few silences (spans
        # with nothing heard for longer than SILENCE_PROBES probe intervals), to tell whether
        # an accusation of ours was raised while we were the one cut off.
        self._heard_at = -math.inf
        self._silences: deque[tuple[float, float]] = deque(maxlen=4)
        self._ack_handlers: dict[int, _AckHandler] = {}
        self._streams: dict[int, _StreamWait] = {}
        self._actions: list[SendPacket | OpenStream] = []
        self._seq = 0
        self._stream_seq = 0
        self._incarnation = 0
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._loops: dict[str, Timer] = {}
        self.left = False
        # Set while leaving: queued broadcasts may be dropped once nobody is left to hear them.
        self.draining = False
        self.shutdown_done = False
        self.drops = DropLog(log, "memberlist")
        self._eager_timer: Timer | None = None
        # Until when a catch-up sync that brought news is followed by another one.
        self._eager_until = 0.0
        self._last_eager = -math.inf
        self._news = 0  # members that joined or came back, as we heard of them
        self._eager_budget = CatchUpBudget(self.timing.push_pull_interval)
        # One sync after a burst of members learned by gossip (see BurstSettler).
        self._settler = BurstSettler(self.timing.push_pull_interval)
        self._settle_timer: Timer | None = None
        # Syncs after a join exchange that merged two clusters (see merge_sync_targets).
        self._merge_budget = CatchUpBudget(self.timing.push_pull_interval,
                                           burst=2 * MERGE_SYNC_FANOUT)
        # While a push-pull's state is merged: news it brings needs no sync of its own. And
        # how many members the last merge taught us: a catch-up sync that found some is
        # evidence that gossip is behind.
        self._merging = False
        self._merge_news = 0
        self._pending_push_pulls = 0
        self._vsn_verdicts: dict[bytes, str | None] = {}
        # Bumped whenever a member's state or the member list changes; the gossip candidates
        # are rebuilt only then (or when a dead member ages out of gossip).
        self._changes = 0
        # (changes, nodes, built at, oldest dead member's state change, candidates)
        self._candidates: tuple[int, list[Node], float, float | None, list[Node]] | None = None
        # Members in self.nodes that are dead or left, and where we are in it: while no one is
        # down, the candidates are everyone but us, with no list to build.
        self._down = 0
        self._me_at: int | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def local_node(self) -> Node:
        return self.node_map[self.config.name]

    def start(self, now: float) -> None:
        """Register ourselves as alive and start the probe, gossip and push-pull loops."""
        self._incarnation = (self._incarnation + 1) & fields.U32_MAX
        vsn = bytes((PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CUR, *self.config.delegate_versions))
        alive = Alive(self._incarnation, self.config.name,
                      codec.ip_to_bytes(self.config.advertise_addr), self.config.advertise_port,
                      self.delegate.node_meta(codec.META_MAX_SIZE), vsn)
        self._alive_node(alive, now, bootstrap=True)
        t = self.timing
        self._every("probe", t.probe_interval, self._probe_tick, now)
        self._loops["gossip"] = self.scheduler.call_at(
            now + self.rng.uniform(0, t.gossip_interval), self._gossip_tick)
        self._schedule_push_pull(now + self.rng.uniform(0, t.push_pull_interval))

    def take_actions(self) -> list[SendPacket | OpenStream]:
        actions, self._actions = self._actions, []
        return actions

    def num_nodes(self) -> int:
        return len(self.nodes)

    def num_alive(self) -> int:
        """Nodes not known to be dead or gone, ourselves included (memberlist NumMembers)."""
        return sum(1 for n in self.nodes if not n.dead_or_left())

    def alive_members(self) -> list[Node]:
        return [n for n in self.nodes if n.state == NodeStateKind.ALIVE]

    def any_alive(self) -> bool:
        name = self.config.name
        return any(n.name != name and not n.dead_or_left() for n in self.nodes)

    def join(self, targets: list[tuple[str, Address]], now: float,
             on_done: Callable[[JoinOutcome, float], None]) -> None:
        """Push-pull (Join=true) with each ``(name, (ip, port))`` target; report once done."""
        outcome = JoinOutcome()
        remaining = len(targets)
        if remaining == 0:
            on_done(outcome, now)
            return

        def one_done(error: str | None, when: float, ip: str) -> None:
            nonlocal remaining
            if error is None:
                outcome.contacted += 1
            else:
                outcome.errors.append(f"Failed to join {ip}: {error}")
                log.debug("memberlist: Failed to join %s: %s", ip, error)
            remaining -= 1
            if remaining == 0:
                if outcome.contacted:
                    outcome.errors.clear()
                    self._start_eager_sync(when, follow_up=True)
                on_done(outcome, when)

        for _name, address in targets:
            self._push_pull(address, True, now, functools.partial(_with_ip, one_done, address[0]))

    def leave(self, now: float, timeout: float, on_done: Callable[[str | None, float], None]
              ) -> None:
        """Broadcast our own graceful death and report when it went out (or timed out)."""
        if self.left:
            on_done(None, now)
            return
        self.left = True
        me = self.node_map.get(self.config.name)
        if me is None:
            on_done(None, now)
            return
        waiter = _Once(on_done)
        dead = Dead(me.incarnation, me.name, me.name)
        self._dead_node(dead, now, on_finished=lambda: waiter.fire(None, self.scheduler.now))
        self.send_to_live_nodes(dead.encode())
        if self.any_alive():
            self.scheduler.call_at(now + timeout, lambda t: waiter.fire(
                "timeout waiting for leave broadcast", t))
        else:
            waiter.fire(None, now)

    def update_node(self, now: float, timeout: float,
                    on_done: Callable[[str | None, float], None]) -> None:
        """Re-announce ourselves with fresh meta (tags) under a new incarnation."""
        me = self.local_node
        self._incarnation = (max(self._incarnation, me.incarnation) + 1) & fields.U32_MAX
        waiter = _Once(on_done)
        alive = Alive(self._incarnation, me.name, codec.ip_to_bytes(me.addr), me.port,
                      self.delegate.node_meta(codec.META_MAX_SIZE), me.vsn)
        self._alive_node(alive, now, bootstrap=True,
                         on_finished=lambda: waiter.fire(None, self.scheduler.now))
        if self.any_alive():
            self.scheduler.call_at(now + timeout, lambda t: waiter.fire(
                "timeout waiting for update broadcast", t))
        else:
            waiter.fire(None, now)

    def shutdown(self) -> None:
        self.shutdown_done = True
        for timer in self._loops.values():
            timer.cancel()
        self._loops.clear()
        for handler in self._ack_handlers.values():
            if handler.timer:
                handler.timer.cancel()
        self._ack_handlers.clear()
        for suspicion in self._suspicions.values():
            if suspicion.timer:
                suspicion.timer.cancel()
        self._suspicions.clear()

    def send_user_packet(self, addr: Address, serf_msg: bytes, node: Node | None = None) -> None:
        """Send a serf message directly (query responses, relays) without piggybacking."""
        self._raw_send(addr, codec.encode_user(serf_msg), node)

    def send_to_live_nodes(self, msg: bytes) -> None:
        """Send one message straight to every live peer, on top of gossiping it.

        Used for goodbyes: a leave reaches everyone in one round trip instead of spreading
        over several gossip rounds. Gossip still carries it to anyone a datagram missed.
        """
        name = self.config.name
        for node in self.nodes:
            if node.name != name and node.state == NodeStateKind.ALIVE:
                self._raw_send(node.address, msg, node)

    def gossip_soon(self) -> None:
        """Something new was queued: gossip it now rather than at the next tick.

        Every hop of an epidemic otherwise waits half a gossip interval on average. One
        expedited round per burst; retransmit limits still cap how often each message goes.
        """
        if self.shutdown_done or not self._loops:
            return  # not started (or stopped): start() schedules the first round
        # Batch bursts: at most one extra round per gap after the previous round.
        when = max(self.scheduler.now, self._last_gossip + EXPEDITE_MIN_GAP)
        tick = self._loops.get("gossip")
        if tick is None:
            # The gossip loop sleeps while there is nothing to say; wake it.
            self._loops["gossip"] = self.scheduler.call_at(when, self._gossip_tick)
            return
        if self._expedited is not None or not self.config.expedite_gossip:
            return
        if tick is not None and tick.when - when < EXPEDITE_MIN_GAP:
            return  # the regular round is about to run anyway
        self._expedited = self.scheduler.call_at(when, self._expedited_gossip)

    def _gossip_tick(self, now: float) -> None:
        """Regular gossip round; the loop stops while no broadcast is queued anywhere, which
        saves five wake-ups a second per idle agent (gossip_soon restarts it)."""
        started = self.metrics.start()
        self._gossip(now)
        self.metrics.measure_since("memberlist.gossip", started)
        if len(self.broadcasts) or self.delegate.has_broadcasts():
            self._loops["gossip"] = self.scheduler.call_at(now + self.timing.gossip_interval,
                                                           self._gossip_tick)
        else:
            self._loops.pop("gossip", None)

    def _expedited_gossip(self, now: float) -> None:
        self._expedited = None
        started = self.metrics.start()
        self._gossip(now)
        self.metrics.measure_since("memberlist.gossip", started)

    def push_pull_now(self, now: float) -> None:
        """Run one anti-entropy exchange with a random live node."""
        self._periodic_push_pull(now, reschedule=False)

    # -- input: packets --------------------------------------------------------------------

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        """Handle one datagram. Nothing a peer sends can raise out of here: a message that
        does not decode is dropped and counted, and so is one that trips an internal error."""
        self.scheduler.now = now
        if self.shutdown_done or not data:
            return
        self.metrics.incr("memberlist.udp.received", len(data))
        peer = _peer_text(source)
        keyring = self.config.keyring
        if keyring is not None:
            try:
                data = security.decrypt(keyring, data, b"")
            except ValueError as exc:
                self.drops.drop("packet (decrypt)", peer, exc, now)
                return
        try:
            if data and data[0] == MsgType.HAS_CRC:
                data = codec.strip_crc(data)
            self._handle_command(data, source, now, 0, _Budget())
            self._heard(now)
        except DecodeError as exc:
            self.drops.drop("packet", peer, exc, now)
        except Exception as exc:
            log.debug("memberlist: internal error handling a packet from %s", peer, exc_info=True)
            self.drops.drop("packet (internal error)", peer, exc, now)

    def _handle_command(self, data: bytes, source: Address, now: float, depth: int,
                        budget: _Budget) -> None:
        if not data:
            raise DecodeError("empty message")
        if depth > MAX_NESTING:
            raise DecodeError("messages nested too deeply")
        budget.messages -= 1
        if budget.messages < 0:
            raise DecodeError(f"more than {MAX_PACKET_MESSAGES} messages in one packet")
        kind = data[0]
        # Most messages are alives and serf's user messages: tested first, and the body is
        # sliced only where needed (the alive decoder is memoised by the whole message).
        if kind == _ALIVE:
            # The type byte says which record decode_gossip returns.
            self._alive_node(cast(Alive, codec.decode_gossip(data)), now)
            return
        body = data[1:]
        if kind == _USER:
            self.delegate.notify_msg(body, now, source)
        elif kind == MsgType.COMPOUND:
            parts, truncated = codec.split_compound(body)
            if truncated:
                self.drops.drop("compound part (truncated)", _peer_text(source),
                                f"{truncated} truncated messages", now)
            for part in parts:
                try:
                    if part and part[0] == _ALIVE and depth < MAX_NESTING and budget.messages > 0:
                        # The usual part, without a call of its own: the checks below are
                        # the ones _handle_command makes before it gets to an alive.
                        budget.messages -= 1
                        self._alive_node(cast(Alive, codec.decode_gossip(part)), now)
                    else:
                        self._handle_command(part, source, now, depth + 1, budget)
                except DecodeError as exc:
                    if budget.messages < 0:
                        raise
                    self.drops.drop("compound part", _peer_text(source), exc, now)
        elif kind == MsgType.COMPRESS:
            if budget.expansion <= 0:
                raise DecodeError("packet expands past its decompression budget")
            try:
                inner = codec.decompress_body(body, budget.expansion)
            except DecodeError:
                budget.expansion = 0  # a failed expansion spent the rest of the allowance
                raise
            budget.expansion -= len(inner)
            self._handle_command(inner, source, now, depth + 1, budget)
        elif kind == MsgType.PING:
            self._handle_ping(Ping.decode(codec.unpack_body(body)), source)
        elif kind == MsgType.INDIRECT_PING:
            self._handle_indirect_ping(IndirectPing.decode(codec.unpack_body(body)), source, now)
        elif kind == MsgType.ACK:
            self._handle_ack(Ack.decode(codec.unpack_body(body)), now)
        elif kind == MsgType.NACK:
            self._handle_nack(Nack.decode(codec.unpack_body(body)), now)
        elif kind == MsgType.SUSPECT:
            self._suspect_node(cast(Suspect, codec.decode_gossip(data)), now)
        elif kind == MsgType.DEAD:
            self._dead_node(cast(Dead, codec.decode_gossip(data)), now)
        else:
            raise DecodeError(f"msg type ({kind}) not supported")

    def _reply_address(self, source_addr: bytes, source_port: int, fallback: Address) -> Address:
        if source_addr and source_port:
            try:
                return (codec.ip_from_bytes(source_addr), source_port)
            except DecodeError:
                pass
        return fallback

    def _handle_ping(self, ping: Ping, source: Address) -> None:
        if ping.node and ping.node != self.config.name:
            log.warning("memberlist: Got ping for unexpected node '%s' from=%s:%d",
                        ping.node, *source)
            return
        ack = Ack(ping.seq_no, self.delegate.ack_payload())
        self._send_piggybacked(self._reply_address(ping.source_addr, ping.source_port, source),
                               ack.encode())

    def _handle_indirect_ping(self, ind: IndirectPing, source: Address, now: float) -> None:
        reply_to = self._reply_address(ind.source_addr, ind.source_port, source)
        try:
            target = (codec.ip_from_bytes(ind.target), ind.port)
        except DecodeError as exc:
            log.error("memberlist: Bad indirect ping target: %s", exc)
            return
        seq = self._next_seq()
        me = self.local_node
        answered = False

        def on_ack(payload: bytes | None, when: float) -> None:
            nonlocal answered
            answered = True
            self._send_piggybacked(reply_to, Ack(ind.seq_no, None).encode())

        self._set_ack_handler(seq, on_ack, None, now + self.timing.probe_timeout)
        ping = Ping(seq, ind.node, codec.ip_to_bytes(me.addr), me.port, me.name)
        self._send_piggybacked(target, ping.encode())
        if ind.nack:
            def maybe_nack(when: float) -> None:
                if not answered:
                    self._send_piggybacked(reply_to, Nack(ind.seq_no).encode())
            self.scheduler.call_at(now + self.timing.probe_timeout, maybe_nack)

    def _handle_ack(self, ack: Ack, now: float) -> None:
        handler = self._ack_handlers.pop(ack.seq_no, None)
        if handler is None:
            return
        if handler.timer:
            handler.timer.cancel()
        handler.on_ack(ack.payload, now)

    def _handle_nack(self, nack: Nack, now: float) -> None:
        handler = self._ack_handlers.get(nack.seq_no)
        if handler is not None and handler.on_nack is not None:
            handler.on_nack(now)

    def _set_ack_handler(self, seq: int, on_ack: Callable[[bytes | None, float], None],
                         on_nack: Callable[[float], None] | None, expires: float) -> None:
        handler = _AckHandler(on_ack, on_nack)

        def expire(when: float) -> None:
            if self._ack_handlers.get(seq) is handler:
                del self._ack_handlers[seq]

        handler.timer = self.scheduler.call_at(expires, expire)
        self._ack_handlers[seq] = handler

    # -- input: streams --------------------------------------------------------------------

    def handle_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        """Answer one incoming stream message; returns the reply payload (or None)."""
        self.scheduler.now = now
        if self.shutdown_done:
            return None
        peer = _peer_text(source)
        try:
            kind, body = self._open_stream_message(data)
            self._heard(now)
        except (StreamError, DecodeError) as exc:
            self.drops.drop("stream", peer, exc, now)
            return self._stream_payload(codec.encode_err(str(exc)[:codec.MAX_ERROR_TEXT]))
        except Exception as exc:
            log.debug("memberlist: internal error opening a stream from %s", peer, exc_info=True)
            self.drops.drop("stream (internal error)", peer, exc, now)
            return None
        try:
            if kind == MsgType.PUSH_PULL:
                if self._pending_push_pulls >= MAX_PUSH_PULL_REQUESTS:
                    log.error("memberlist: Too many pending push/pull requests")
                    return None
                remote = PushPull.decode_stream(body)
                log.debug("memberlist: Stream connection from=%s", peer)
                reply = self._stream_payload(self._local_state(remote.join))
                self._merge_remote(remote, now, source)
                return reply
            if kind == MsgType.PING:
                ping = Ping.decode(codec.unpack_body(body))
                if ping.node and ping.node != self.config.name:
                    log.warning("memberlist: Got ping for unexpected node %s from=%s",
                                ping.node, peer)
                    return None
                return self._stream_payload(Ack(ping.seq_no, None).encode())
            if kind == MsgType.USER:
                header_len = _msgpack_len(body)
                self.delegate.notify_msg(body[header_len:], now, source)
                return None
            raise DecodeError(f"invalid stream msgType ({kind})")
        except DecodeError as exc:
            self.drops.drop("stream", peer, exc, now)
        except Exception as exc:
            log.debug("memberlist: internal error handling a stream from %s", peer, exc_info=True)
            self.drops.drop("stream (internal error)", peer, exc, now)
        return None

    def stream_reply(self, stream_id: int, data: bytes, now: float) -> None:
        """The reply to a stream we opened."""
        self.scheduler.now = now
        wait = self._streams.pop(stream_id, None)
        if wait is None:
            return
        try:
            kind, body = self._open_stream_message(data)
            self._heard(now)
        except (StreamError, DecodeError) as exc:
            wait.on_error(str(exc), now)
            return
        except Exception as exc:
            log.exception("memberlist: internal error reading a stream reply")
            wait.on_error(f"internal error: {exc}", now)
            return
        try:
            wait.on_reply(kind, body, now)
        except Exception as exc:
            # The reply was hostile in a way decoding did not catch; whoever waits (a join,
            # a fallback ping) must still hear an outcome.
            log.exception("memberlist: internal error handling a stream reply")
            wait.on_error(f"internal error: {exc}", now)

    def stream_failed(self, stream_id: int, error: str, now: float) -> None:
        self.scheduler.now = now
        wait = self._streams.pop(stream_id, None)
        if wait is not None:
            try:
                wait.on_error(error, now)
            except Exception:
                log.exception("memberlist: internal error reporting a failed stream")

    def _open_stream_message(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            raise StreamError("EOF")
        keyring = self.config.keyring
        if data[0] == MsgType.ENCRYPT:
            if keyring is None:
                raise StreamError("Remote state is encrypted and encryption is not configured")
            try:
                data = security.decrypt(keyring, data[5:], data[:5])
            except ValueError as exc:
                raise StreamError(str(exc)) from exc
        elif keyring is not None:
            raise StreamError("Encryption is configured but remote state is not encrypted")
        if not data:
            raise StreamError("empty stream message")
        if data[0] == MsgType.COMPRESS:
            data = codec.decompress_body(data[1:])
            if not data:
                raise StreamError("empty compressed stream message")
        return data[0], data[1:]

    def _stream_payload(self, msg: bytes) -> bytes:
        if self.config.enable_compression:
            msg = codec.compress(msg)
        keyring = self.config.keyring
        if keyring is not None:
            length = len(msg) + security.ENCRYPTION_OVERHEAD_V1
            header = bytes((MsgType.ENCRYPT,)) + length.to_bytes(4, "big")
            msg = header + security.encrypt(keyring, msg, header)
        return msg

    def _open_stream(self, addr: Address, msg: bytes, deadline: float,
                     on_reply: Callable[[int, bytes, float], None],
                     on_error: Callable[[str, float], None]) -> None:
        self._stream_seq += 1
        sid = self._stream_seq
        self._streams[sid] = _StreamWait(on_reply, on_error)
        self._actions.append(OpenStream(sid, addr, self._stream_payload(msg), deadline))

    # -- push-pull -------------------------------------------------------------------------

    def _local_state(self, join: bool) -> bytes:
        entry = codec.node_state_entry
        entries = [entry(n.name, n.addr, n.port, n.meta, n.incarnation, n.state, n.pmin, n.pmax,
                         n.pcur, n.dmin, n.dmax, n.dcur) for n in self.nodes]
        return codec.encode_push_pull(join, entries, self.delegate.local_state(join))

    def _push_pull(self, addr: Address, join: bool, now: float,
                   on_done: Callable[[str | None, float], None]) -> None:
        self._pending_push_pulls += 1
        settled = False

        def finish(error: str | None, when: float) -> None:
            # Exactly once per exchange, even when handling the reply itself failed.
            nonlocal settled
            if not settled:
                settled = True
                self._pending_push_pulls -= 1
                self.metrics.sample("memberlist.pushPullNode", (when - now) * 1000.0)
                on_done(error, when)

        def on_reply(kind: int, body: bytes, when: float) -> None:
            if kind == MsgType.ERR:
                try:
                    message = fields.text(codec.unpack_body(body), b"Error",
                                          codec.MAX_ERROR_TEXT)
                except DecodeError:
                    message = "malformed error reply"
                finish(f"remote error: {message}", when)
                return
            if kind != MsgType.PUSH_PULL:
                finish(f"expected push-pull reply, got message type {kind}", when)
                return
            try:
                remote = PushPull.decode_stream(body)
            except DecodeError as exc:
                finish(str(exc), when)
                return
            self._merge_remote(remote, when, addr)
            finish(None, when)

        on_error = finish
        self._open_stream(addr, self._local_state(join), now + self.timing.tcp_timeout,
                          on_reply, on_error)

    def _merge_remote(self, remote: PushPull, now: float, source: Address) -> None:
        admitted = self._admissible(remote.nodes, source, now)
        merge_syncs: list[str] = []
        if remote.join and self.config.eager_sync and not self.left:
            merge_syncs = merge_sync_targets(admitted, self.node_map, self.config.name,
                                             source[0], self.rng)
        news, self._merging = self._news, True
        try:
            self._merge_state(admitted, now)
        finally:
            self._merging = False
            self._merge_news = self._news - news
        for name in merge_syncs:
            if self._merge_budget.spend(now, len(self.nodes)):
                self.scheduler.call_at(now + self.rng.uniform(0.05, 0.3),
                                       functools.partial(self._merge_sync, name))
        if remote.user_state:
            self.delegate.merge_remote_state(remote.user_state, remote.join, now, source)

    def _settle(self, now: float) -> None:
        """The settling sync after a burst, once no member has been heard of for a while."""
        due = self._settler.due()
        if now < due:
            self._settle_timer = self.scheduler.call_at(due, self._settle)
            return
        self._settle_timer = None
        if self.left or self.shutdown_done:
            return
        if self._settler.take(now, len(self.nodes)):
            self._push_pull_random_peer(now)

    def _merge_sync(self, name: str, now: float) -> None:
        node = self.node_map.get(name)
        if node is None or node.state != NodeStateKind.ALIVE or self.left or self.shutdown_done:
            return

        def done(error: str | None, when: float) -> None:
            if error:
                log.error("memberlist: Push/Pull with %s failed: %s", name, error)

        self._push_pull(node.address, False, now, done)

    def _version_error(self, vsn: bytes) -> str | None:
        """Why a member announcing ``vsn`` cannot be in our cluster, or None.

        memberlist checks every member's versions against every other member's on each
        push-pull, so a member with an impossible range, once admitted, fails every later
        exchange (and serf panics on a short Vsn). We admit only members whose ranges are
        well formed and overlap our own current versions.
        """
        # Nearly every member announces the same few version ranges: remember the verdicts.
        if vsn in self._vsn_verdicts:
            return self._vsn_verdicts[vsn]
        error = self._check_versions(vsn)
        if len(self._vsn_verdicts) >= 64:
            self._vsn_verdicts.clear()
        self._vsn_verdicts[bytes(vsn)] = error
        return error

    def _check_versions(self, vsn: bytes) -> str | None:
        if len(vsn) < 6:
            return f"version field has {len(vsn)} bytes, not 6"
        pmin, pmax, pcur, dmin, dmax, dcur = vsn[:6]
        if not (1 <= pmin <= pcur <= pmax and dmin <= dcur <= dmax):
            return f"impossible version ranges {list(vsn[:6])}"
        mine = self._own_vsn()
        if not (pmin <= mine[2] <= pmax and mine[0] <= pcur <= mine[1]):
            return f"protocol version {pcur} in [{pmin}, {pmax}] is incompatible with ours"
        if not (dmin <= mine[5] <= dmax and mine[3] <= dcur <= mine[4]):
            return (f"delegate protocol version {dcur} in [{dmin}, {dmax}] is incompatible "
                    "with ours")
        return None

    def _own_vsn(self) -> bytes:
        return bytes((PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CUR, *self.config.delegate_versions))

    def _admissible(self, remote: list[PushNodeState], source: Address, now: float
                    ) -> list[PushNodeState]:
        """The remote states we can merge. memberlist refuses a whole push-pull when any alive
        member's versions clash with any other's; we leave out just the members we could not
        admit (see ``_version_error``), so one bad entry relayed by an honest peer cannot stop
        every exchange with it."""
        keep = []
        for r in remote:
            error = None
            if r.state == NodeStateKind.ALIVE and r.name != self.config.name:
                error = self._version_error(r.vsn)
            if error:
                self.drops.drop("push-pull node (versions)", _peer_text(source),
                                f"{r.name}: {error}", now)
            else:
                keep.append(r)
        return keep

    def _merge_state(self, remote: list[PushNodeState], now: float) -> None:
        name = self.config.name
        node_map, verdicts, known_ip = self.node_map, self._vsn_verdicts, fields.known_ip_text
        bind_port = self.config.bind_port
        for r in remote:
            if r.state == NodeStateKind.ALIVE:
                port = r.port or bind_port  # memberlist fills in its own port, too
                # _alive_node's first test, before building the record: most entries of an
                # exchange are members we already know at least this well.
                state = node_map.get(r.name)
                if (state is not None and r.incarnation <= state.incarnation
                        and port == state.port and r.name != name
                        and verdicts.get(r.vsn, False) is None
                        and known_ip(r.addr) == state.addr):
                    continue
                self._alive_node(Alive(r.incarnation, r.name, r.addr, port, r.meta, r.vsn), now)
            elif r.state == NodeStateKind.LEFT:
                self._dead_node(Dead(r.incarnation, r.name, r.name), now)
            elif r.state in (NodeStateKind.DEAD, NodeStateKind.SUSPECT):
                # A peer's opinion that a node is dead is only a suspicion to us.
                self._suspect_node(Suspect(r.incarnation, r.name, name), now)

    def _schedule_push_pull(self, when: float) -> None:
        self._loops["push-pull"] = self.scheduler.call_at(when, self._periodic_push_pull)

    def _periodic_push_pull(self, now: float, reschedule: bool = True) -> None:
        if reschedule:
            interval = push_pull_scale(self.timing.push_pull_interval, len(self.nodes))
            self._schedule_push_pull(now + interval)
        self._push_pull_random_peer(now)

    def _push_pull_random_peer(self, now: float,
                               then: Callable[[float], None] | None = None) -> None:
        """Push-pull with one live peer picked at random; ``then(when)`` after a success."""
        candidates = [n for n in self.nodes
                      if n.name != self.config.name and n.state == NodeStateKind.ALIVE]
        if not candidates:
            return
        node = self.rng.choice(candidates)

        def done(error: str | None, when: float) -> None:
            if error:
                log.error("memberlist: Push/Pull with %s failed: %s", node.name, error)
            elif then is not None:
                then(when)

        self._push_pull(node.address, False, now, done)

    def _start_eager_sync(self, now: float, follow_up: bool = False) -> None:
        """A member joined (or came back): maybe run one catch-up push-pull soon.

        Every node hears of every change by gossip or in a push-pull; on gossip it takes it
        with odds EAGER_SYNCS / N: about EAGER_SYNCS extra exchanges cluster-wide per change,
        as many as the join push-pull itself. ``follow_up`` (our own join just completed)
        syncs once more: the seed's view was a snapshot and the joins racing ours are missing
        from it. Whatever the churn, one node runs no more than its CatchUpBudget allows.
        """
        if not self.config.eager_sync or self.shutdown_done:
            return
        if not follow_up and self.rng.random() * len(self.nodes) >= EAGER_SYNCS:
            return
        self._eager_until = max(self._eager_until, now + (3.0 if follow_up else 2.0))
        self._arm_eager_sync(now + self.rng.uniform(0.3, 0.8))

    def _arm_eager_sync(self, when: float) -> None:
        if self._eager_timer is not None and not self._eager_timer.cancelled:
            return  # one pending sync covers every change heard before it runs
        when = max(when, self._last_eager + EAGER_MIN_GAP)
        if not self._eager_budget.available(when, len(self.nodes)):
            return  # spent: the periodic sync catches us up
        self._eager_timer = self.scheduler.call_at(when, self._eager_sync)

    def _eager_sync(self, now: float) -> None:
        self._eager_timer = None
        if self.left or self.shutdown_done:
            return
        if not self._eager_budget.spend(now, len(self.nodes)):
            return
        self._last_eager = now

        def again(when: float) -> None:
            # The peer knew members gossip had not brought us: we may be behind yet. Members
            # merely still turning up elsewhere are no such evidence: in a long storm they
            # always are, and syncing on that kept every node syncing once a second for all
            # of it. The budget caps the chain whatever the evidence.
            if self._merge_news and when < self._eager_until:
                self._arm_eager_sync(when + self.rng.uniform(0.7, 1.2))

        self._push_pull_random_peer(now, again)

    # -- probing ---------------------------------------------------------------------------

    def _every(self, name: str, interval: float, fn: Callable[[float], None], now: float) -> None:
        """Run ``fn`` every ``interval`` seconds after a random stagger."""
        def tick(when: float) -> None:
            self._loops[name] = self.scheduler.call_at(when + interval, tick)
            fn(when)

        self._loops[name] = self.scheduler.call_at(now + self.rng.uniform(0, interval), tick)

    def _probe_tick(self, now: float) -> None:
        if self._probe is not None and not self._probe.finished:
            return  # the previous (awareness-scaled) probe is still running
        checked = 0
        while True:
            if checked >= len(self.nodes):
                return
            if self._probe_index >= len(self.nodes):
                self._reset_nodes(now)
                self._probe_index = 0
                checked += 1
                continue
            node = self.nodes[self._probe_index]
            self._probe_index += 1
            if node.name == self.config.name or node.dead_or_left():
                checked += 1
                continue
            self._probe_node(node, now)
            return

    def _reset_nodes(self, now: float) -> None:
        """Forget nodes dead for longer than GossipToTheDeadTime, then reshuffle."""
        limit = self.timing.gossip_to_the_dead_time
        keep = []
        for n in self.nodes:
            if n.dead_or_left() and now - n.state_change > limit and n.name != self.config.name:
                self.node_map.pop(n.name, None)
            else:
                keep.append(n)
        self.rng.shuffle(keep)
        self.nodes = keep
        self._down = sum(1 for n in keep if n.dead_or_left())
        self._me_at = next((i for i, n in enumerate(keep) if n.name == self.config.name), None)

    def _probe_node(self, node: Node, now: float) -> None:
        interval = self.awareness.scale(self.timing.probe_interval)
        if interval > self.timing.probe_interval:
            self.metrics.incr("memberlist.degraded.probe")
        seq = self._next_seq()
        probe = _Probe(node, seq, now, now + interval)
        self._probe = probe
        me = self.local_node
        ping = Ping(seq, node.name, codec.ip_to_bytes(me.addr), me.port, me.name)

        def on_ack(payload: bytes | None, when: float) -> None:
            if probe.finished:
                return
            probe.acked = True
            if not probe.indirect:
                self.delegate.notify_ping_complete(node, when - probe.sent, payload)
            self._finish_probe(probe, -1 if not probe.indirect else 0, when)

        def on_nack(when: float) -> None:
            probe.nacks += 1

        self._set_ack_handler(seq, on_ack, on_nack, probe.deadline)
        if node.state == NodeStateKind.ALIVE:
            self._send_piggybacked(node.address, ping.encode())
        else:
            # Tell a suspect about the accusation so it can refute it.
            suspect = Suspect(node.incarnation, node.name, self.config.name)
            self._raw_send(node.address, codec.make_compound([ping.encode(), suspect.encode()]),
                           node)
        probe.timers = (
            self.scheduler.call_at(now + self.timing.probe_timeout,
                                   lambda when: self._probe_indirect(probe, ping, when)),
            self.scheduler.call_at(probe.deadline,
                                   lambda when: self._probe_deadline(probe, when)))

    def _probe_indirect(self, probe: _Probe, ping: Ping, now: float) -> None:
        if probe.finished:
            return
        log.debug("memberlist: Failed ping: %s (timeout reached)", probe.target.name)
        probe.indirect = True
        target = probe.target
        peers = [n for n in self.nodes if n.name not in (self.config.name, target.name)
                 and n.state == NodeStateKind.ALIVE]
        peers = self.rng.sample(peers, min(self.timing.indirect_checks, len(peers)))
        me = self.local_node
        for peer in peers:
            nack = peer.pmax >= 4
            probe.expected_nacks += int(nack)
            ind = IndirectPing(probe.seq, codec.ip_to_bytes(target.addr), target.port,
                               target.name, nack, codec.ip_to_bytes(me.addr), me.port, me.name)
            self._send_piggybacked(peer.address, ind.encode())
        if not self.timing.disable_tcp_pings and target.pmax >= 3:
            probe.tcp_pending = True

            def tcp_reply(kind: int, body: bytes, when: float) -> None:
                probe.tcp_pending = False
                try:
                    ok = kind == MsgType.ACK and \
                        Ack.decode(codec.unpack_body(body)).seq_no == probe.seq
                except DecodeError:
                    ok = False
                if not ok:
                    log.error("memberlist: Failed fallback ping: unexpected reply")
                probe.tcp_ok = ok
                if when >= probe.deadline:
                    self._probe_deadline(probe, when)

            def tcp_error(error: str, when: float) -> None:
                probe.tcp_pending = False
                log.debug("memberlist: Failed fallback ping: %s", error)
                if when >= probe.deadline:
                    self._probe_deadline(probe, when)

            self._open_stream(target.address, ping.encode(), probe.deadline, tcp_reply,
                              tcp_error)

    def _probe_deadline(self, probe: _Probe, now: float) -> None:
        if probe.finished:
            return
        if probe.tcp_ok:
            log.warning("memberlist: Was able to connect to %s but other probes failed, "
                        "network may be misconfigured", probe.target.name)
            self._finish_probe(probe, 0, now)
            return
        if probe.tcp_pending and now < probe.deadline + 0.5:
            return  # the fallback reports shortly (its deadline is ours)
        delta = 0
        if probe.expected_nacks > 0:
            delta = max(0, probe.expected_nacks - probe.nacks)
        else:
            delta = 1
        self._finish_probe(probe, delta, now)
        target = probe.target
        log.info("memberlist: Suspect %s has failed, no acks received", target.name)
        self._suspect_node(Suspect(target.incarnation, target.name, self.config.name), now)

    def _finish_probe(self, probe: _Probe, awareness_delta: int, now: float) -> None:
        probe.finished = True
        for timer in probe.timers:
            timer.cancel()  # an answered probe needs no more wake-ups
        self.metrics.sample("memberlist.probeNode", (now - probe.sent) * 1000.0)
        self._apply_awareness(awareness_delta)
        self._ack_handlers.pop(probe.seq, None)

    # -- gossip ----------------------------------------------------------------------------

    def _gossip(self, now: float) -> None:
        self._last_gossip = now
        candidates = self._gossip_candidates(now)
        if not candidates:
            if self.draining:
                # Everyone else is gone: what we wanted to say on the way out has no audience,
                # so finish it instead of making the leave wait for its timeout.
                self.broadcasts.reset()
                self.delegate.drop_broadcasts()
            return
        targets = self.rng.sample(candidates, min(self.timing.gossip_nodes, len(candidates)))
        avail = self.timing.udp_buffer_size - COMPOUND_HEADER_OVERHEAD
        if self.config.keyring is not None:
            avail -= security.ENCRYPTION_OVERHEAD_V1
        for node in targets:
            msgs = self._get_broadcasts(COMPOUND_OVERHEAD, avail)
            if not msgs:
                return
            payload = msgs[0] if len(msgs) == 1 else codec.make_compound(msgs)
            self._raw_send(node.address, payload, node)

    def _gossip_candidates(self, now: float) -> Sequence[Node]:
        """Who may get gossip: others alive or suspect, or dead for at most
        GossipToTheDeadTime. Rebuilt (O(N)) only after a change or when the earliest dead
        member in the list ages out, not on each of the five rounds a second."""
        me_at = self._me_at
        if self._down == 0 and me_at is not None:
            return _AllBut(self.nodes, me_at)
        dead_limit = self.timing.gossip_to_the_dead_time
        cached = self._candidates
        if cached is not None:
            changes, nodes, built, oldest_dead, candidates = cached
            if (changes == self._changes and nodes is self.nodes and now >= built
                    and (oldest_dead is None or now - oldest_dead <= dead_limit)):
                return candidates
        name = self.config.name
        candidates = [n for n in self.nodes if n.name != name and (
            n.state in (NodeStateKind.ALIVE, NodeStateKind.SUSPECT)
            or (n.state == NodeStateKind.DEAD and now - n.state_change <= dead_limit))]
        dead = [n.state_change for n in candidates if n.state == NodeStateKind.DEAD]
        self._candidates = (self._changes, self.nodes, now, min(dead) if dead else None,
                            candidates)
        return candidates

    def _get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        msgs = self.broadcasts.get(overhead, limit)
        used = sum(len(m) + overhead for m in msgs)
        # Serf messages travel as memberlist user messages: one more byte each.
        user = self.delegate.get_broadcasts(overhead + 1, limit - used)
        msgs.extend(codec.encode_user(m) for m in user)
        return msgs

    def _send_piggybacked(self, addr: Address, msg: bytes) -> None:
        avail = self.timing.udp_buffer_size - COMPOUND_HEADER_OVERHEAD - len(msg)
        if self.config.keyring is not None:
            avail -= security.ENCRYPTION_OVERHEAD_V1
        extra = self._get_broadcasts(COMPOUND_OVERHEAD, avail)
        if extra:
            msg = codec.make_compound([msg, *extra[:254]])
        self._raw_send(addr, msg, None)

    def _raw_send(self, addr: Address, msg: bytes, node: Node | None) -> None:
        if not 0 < addr[1] <= fields.U16_MAX:
            # Rate limited: a peer can name port 0 in indirect pings as often as it likes.
            self.drops.drop("send (invalid port)", _peer_text(addr), "not sending",
                            self.scheduler.now)
            return
        if self.config.enable_compression and len(msg) >= COMPRESS_MIN_SIZE:
            compressed = codec.compress(msg)
            if len(compressed) < len(msg):
                msg = compressed
        if node is not None and node.pmax >= 5:
            msg = codec.add_crc(msg)
        if self.config.keyring is not None:
            msg = security.encrypt(self.config.keyring, msg, b"")
        self.metrics.incr("memberlist.udp.sent", len(msg))
        self._actions.append(SendPacket(addr, msg))

    # -- state transitions -----------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _broadcast(self, node_name: str, msg: bytes,
                   on_finished: Callable[[], None] | None = None) -> None:
        self.broadcasts.queue(msg, key=node_name, on_finished=on_finished)

    def _apply_awareness(self, delta: int) -> None:
        before = self.awareness.score
        self.awareness.apply_delta(delta)
        if self.awareness.score != before:
            self.metrics.gauge("memberlist.health.score", self.awareness.score)

    def _refute(self, me: Node, accused: int, now: float) -> None:
        # Incarnations are uint32 on the wire and wrap as memberlist's do.
        inc = (self._incarnation + 1) & fields.U32_MAX
        if accused >= inc:
            inc = (accused + 1) & fields.U32_MAX
        self._incarnation = inc
        me.incarnation = inc
        self._apply_awareness(1)
        alive = Alive(inc, me.name, codec.ip_to_bytes(me.addr), me.port, me.meta, me.vsn)
        self._broadcast(me.name, alive.encode())

    def _alive_node(self, a: Alive, now: float, bootstrap: bool = False,
                    on_finished: Callable[[], None] | None = None) -> None:
        local_name = self.config.name
        state = self.node_map.get(a.node)
        if (state is not None and a.incarnation <= state.incarnation and a.port == state.port
                and not bootstrap and a.node != local_name
                and self._vsn_verdicts.get(a.vsn, False) is None
                and fields.known_ip_text(a.addr) == state.addr):
            # Old news of a member we know at that address with admissible versions, the bulk
            # of a join storm's gossip: the checks below would end in the same silent return.
            return
        if self.left and a.node == local_name:
            return
        if not bootstrap and a.node != local_name:
            error = self._version_error(a.vsn)
            if error:
                # An impossible or incompatible range would make every later push-pull fail
                # the cluster-wide version check: one bad member must not poison the cluster.
                self.drops.drop("alive (versions)", a.node, error, now)
                return
        try:
            addr = codec.ip_from_bytes(a.addr)
        except DecodeError as exc:
            log.warning("memberlist: Ignoring an alive message for '%s': %s", a.node, exc)
            return
        updates_node = False
        learned_new = False
        if state is None:
            state = Node(a.node, addr, a.port, a.meta, state=NodeStateKind.DEAD)
            state.set_vsn(a.vsn)
            self.node_map[a.node] = state
            # Insert at a random position so probe order differs between nodes.
            offset = self.rng.randint(0, len(self.nodes)) if self.nodes else 0
            self.nodes.append(state)
            self.nodes[offset], self.nodes[-1] = self.nodes[-1], self.nodes[offset]
            self._changes += 1
            self._down += 1  # until the state below is set
            if a.node == local_name:
                self._me_at = offset
            elif self._me_at == offset:
                self._me_at = len(self.nodes) - 1
            learned_new = a.node != local_name
        elif state.addr != addr or state.port != a.port:
            reclaim = (self.timing.dead_node_reclaim_time > 0 and
                       now - state.state_change > self.timing.dead_node_reclaim_time)
            if state.state == NodeStateKind.LEFT or (
                    state.state == NodeStateKind.DEAD and reclaim):
                log.info("memberlist: Updating address for left or failed node %s from %s:%d "
                         "to %s:%d", state.name, state.addr, state.port, addr, a.port)
                updates_node = True
            else:
                log.error("memberlist: Conflicting address for %s. Mine: %s:%d Theirs: %s:%d "
                          "Old state: %s", state.name, state.addr, state.port, addr, a.port,
                          state.state.name.lower())
                other = Node(a.node, addr, a.port, a.meta)
                other.set_vsn(a.vsn)
                self.delegate.notify_conflict(state, other, now)
                return
        is_local = state.name == local_name
        if a.incarnation <= state.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < state.incarnation and is_local:
            return
        suspicion = self._suspicions.pop(a.node, None)
        if suspicion is not None and suspicion.timer:
            suspicion.timer.cancel()
        old_state, old_meta = state.state, state.meta
        if not bootstrap and is_local:
            if (a.incarnation == state.incarnation and a.meta == state.meta
                    and a.vsn == state.vsn):
                return
            self._refute(state, a.incarnation, now)
            log.warning("memberlist: Refuting an alive message for '%s'", a.node)
        else:
            self._broadcast(a.node, a.encode(), on_finished)
            state.set_vsn(a.vsn)
            state.incarnation = a.incarnation
            state.meta = a.meta
            state.addr = addr
            state.port = a.port
            if state.state != NodeStateKind.ALIVE:
                if state.state in (NodeStateKind.DEAD, NodeStateKind.LEFT):
                    self._down -= 1
                state.state = NodeStateKind.ALIVE
                state.state_change = now
                self._changes += 1
        self.metrics.incr("memberlist.msg.alive")
        if old_state in (NodeStateKind.DEAD, NodeStateKind.LEFT):
            self.delegate.notify_join(state, now)
            if learned_new or not is_local:
                self._news += 1
                if not self._merging:
                    # Learned in a push-pull, it came with that exchange's catch-up.
                    self._start_eager_sync(now)
                    if (self._settler.heard(now) and self.config.eager_sync
                            and self._settle_timer is None):
                        self._settle_timer = self.scheduler.call_at(self._settler.due(),
                                                                    self._settle)
        elif old_meta != state.meta:
            self.delegate.notify_update(state, now)

    def _suspect_node(self, s: Suspect, now: float) -> None:
        state = self.node_map.get(s.node)
        if state is None or s.incarnation < state.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            if suspicion.confirm(s.from_):
                self._broadcast(s.node, s.encode())
                self._arm_suspicion(s.node, suspicion)
            return
        if state.state != NodeStateKind.ALIVE:
            return
        if state.name == self.config.name:
            self._refute(state, s.incarnation, now)
            log.warning("memberlist: Refuting a suspect message (from: %s)", s.from_)
            return
        self._broadcast(s.node, s.encode())
        self.metrics.incr("memberlist.msg.suspect")
        state.incarnation = s.incarnation
        state.state = NodeStateKind.SUSPECT
        state.state_change = now
        self._changes += 1
        change_time = now
        t = self.timing
        n = len(self.nodes)
        k = t.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        min_timeout = suspicion_timeout(t.suspicion_mult, n, t.probe_interval)
        suspicion = Suspicion(s.from_, k, min_timeout, t.suspicion_max_timeout_mult * min_timeout,
                              now)
        self._suspicions[s.node] = suspicion

        def expire(when: float) -> None:
            if self._suspicions.get(s.node) is not suspicion:
                return
            del self._suspicions[s.node]
            node = self.node_map.get(s.node)
            if node and node.state == NodeStateKind.SUSPECT and node.state_change == change_time:
                if k > 0 and suspicion.count < k:
                    self.metrics.incr("memberlist.degraded.timeout")
                log.info("memberlist: Marking %s as failed, suspect timeout reached (%d peer "
                         "confirmations)", node.name, suspicion.count)
                # An accusation raised while we heard from no one says more about us than
                # about the accused, who never heard it and could not refute: the verdict
                # stays in our own view. Gossiped (as serf's memberlist does), it reaches the
                # others first thing after a heal and they fail a healthy member until it
                # refutes (the fault lab's isolated node: 18 agents, ~0.05 s each).
                self._dead_node(Dead(node.incarnation, node.name, self.config.name), when,
                                gossip=not self._cut_off_at(suspicion.start))

        suspicion.timer = self.scheduler.call_at(suspicion.deadline, expire)

    def _arm_suspicion(self, name: str, suspicion: Suspicion) -> None:
        """Move the suspicion timer to its (earlier) new deadline after a confirmation."""
        old = suspicion.timer
        if old is not None:
            old.cancel()
            suspicion.timer = self.scheduler.call_at(suspicion.deadline, old.callback)

    def _heard(self, now: float) -> None:
        if now - self._heard_at > SILENCE_PROBES * self.timing.probe_interval:
            self._silences.append((self._heard_at, now))
        self._heard_at = now

    def _cut_off_at(self, when: float) -> bool:
        """Did we hear from no peer around ``when`` (silent since, or inside a silence)?"""
        return self._heard_at < when or any(a <= when <= b for a, b in self._silences)

    def _dead_node(self, d: Dead, now: float,
                   on_finished: Callable[[], None] | None = None, gossip: bool = True) -> None:
        state = self.node_map.get(d.node)
        if state is None or d.incarnation < state.incarnation:
            return
        suspicion = self._suspicions.pop(d.node, None)
        if suspicion is not None and suspicion.timer:
            suspicion.timer.cancel()
        if state.dead_or_left():
            return
        if state.name == self.config.name:
            if not self.left:
                self._refute(state, d.incarnation, now)
                log.warning("memberlist: Refuting a dead message (from: %s)", d.from_)
                return
            self._broadcast(d.node, d.encode(), on_finished)
        elif gossip:
            self._broadcast(d.node, d.encode())
        self.metrics.incr("memberlist.msg.dead")
        state.incarnation = d.incarnation
        state.state = NodeStateKind.LEFT if d.node == d.from_ else NodeStateKind.DEAD
        state.state_change = now
        self._changes += 1
        self._down += 1
        self.delegate.notify_leave(state, now)


class _AllBut(Sequence[Node]):
    """``nodes`` without the entry at ``skip``, in order, without copying: what the gossip
    candidates are while every other member is alive or suspect (``random.sample`` draws
    from it exactly as from the list)."""

    __slots__ = ("nodes", "skip")

    def __init__(self, nodes: list[Node], skip: int) -> None:
        self.nodes = nodes
        self.skip = skip

    def __len__(self) -> int:
        return len(self.nodes) - 1

    @overload
    def __getitem__(self, index: int) -> Node: ...
    @overload
    def __getitem__(self, index: slice) -> list[Node]: ...

    def __getitem__(self, index: int | slice) -> Node | list[Node]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.nodes[index + 1 if index >= self.skip else index]


def _with_ip(one_done: Callable[[str | None, float, str], None], ip: str,
             error: str | None, when: float) -> None:
    """A join's push-pull outcome, told which address it was for."""
    one_done(error, when, ip)


class _Once:
    """Calls ``fn`` the first time ``fire`` is called; later calls are ignored."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[str | None, float], None]) -> None:
        self.fn: Callable[[str | None, float], None] | None = fn

    def fire(self, error: str | None, now: float) -> None:
        if self.fn is not None:
            fn, self.fn = self.fn, None
            fn(error, now)


def _msgpack_len(data: bytes) -> int:
    """Length of the first msgpack object in ``data`` (a reliable user message header)."""
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data)
    try:
        unpacker.skip()
    except (msgpack.OutOfData, ValueError) as exc:
        raise DecodeError(f"malformed user message header: {exc}") from exc
    return unpacker.tell()


class _Budget:
    """What is left of one datagram's allowance for expansion and message count."""

    __slots__ = ("expansion", "messages")

    def __init__(self) -> None:
        self.expansion = MAX_PACKET_EXPANSION
        self.messages = MAX_PACKET_MESSAGES


def _peer_text(addr: Address) -> str:
    return join_host_port(str(addr[0]), addr[1])
