"""An in-memory network and virtual clock that runs many serf machines in one process.

The simulator drives exactly the machines the agent runs, so protocol behaviour (convergence,
failure detection, Lifeguard bounds) can be tested deterministically and fast. Besides loss
(global, per link, per node, and bursty) and configurable latency it models the faults failure
detectors exist for: partitions that cut UDP and TCP both ways until healed, one-way loss on a
link, lost or refused TCP connections, and nodes frozen as by SIGSTOP (no timers run and
nothing is read until they resume and catch up). Every suspicion, refutation and member event
is logged per observer (or handed to listeners), so a test can count false positives along the
way instead of only looking at the final view.

The engine is event-driven: one heap holds every delivery and, per node, the time its own
scheduler next needs to run. A node is pumped only when something arrives for it or one of its
timers is due, so the cost of a run grows with the traffic, not with traffic times nodes.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from pyserf.memberlist import codec, fields, security
from pyserf.memberlist.codec import MsgType, NodeStateKind, Suspect
from pyserf.memberlist.profiles import LAN, Timing
from pyserf.memberlist.suspicion import Suspicion
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import MemberlistConfig, OpenStream, SendPacket
from pyserf.serf.config import SerfConfig
from pyserf.serf.core import Serf
from pyserf.serf.events import (
    OPERATION_RESULTS,
    QUERY_RESULTS,
    Handle,
    JoinFinished,
    KeyOperationFinished,
    MemberEvent,
    QueryAckReceived,
    QueryResponseReceived,
)
from pyserf.sim.counters import CounterSnapshot, NodeCounters, snapshot
from pyserf.sim.faults import NetworkFaults
from pyserf.sim.links import GilbertElliott, Latency, Link, Sampler
from pyserf.sim.wire import stream_kind
from pyserf.sim.wire import udp_messages as udp_messages  # where tests have imported it

Address = tuple[str, int]


def _address(addr: Address | list[str | int]) -> Address:
    """An address as the nodes dict keys it; an action may carry it as a list."""
    return cast(Address, tuple(addr))
# Datagrams and connections a frozen node's kernel holds for it (a socket buffer's worth).
PAUSED_INBOX_LIMIT = 512
# What a handler on a node is called with: the node, the virtual time, then its arguments.
Handler = Callable[..., None]


@dataclass(eq=False)
class SimNode:
    name: str
    addr: Address
    serf: Serf
    # Each node has its own timers, so one can be frozen while the others run.
    scheduler: Scheduler = field(default_factory=Scheduler)
    up: bool = True
    paused: bool = False
    events: list = field(default_factory=list)
    # What arrived while paused (handler, args), handled in order on resume.
    inbox: deque = field(default_factory=deque)
    counters: NodeCounters = field(default_factory=NodeCounters)
    # How often the engine handed this node input or ran its timers.
    pumps: int = 0
    # The scheduler wake the global heap holds an entry for; older entries are stale.
    wake_at: float | None = None
    # Optional: the agent's coalescing pipeline and an in-memory snapshot recorder.
    pipeline: Any = None
    snapshot: Any = None
    snapshot_lines: list[str] | None = None


@dataclass(slots=True)
class SimEvent:
    """Something one node concluded about another, at virtual time ``time``.

    ``kind`` is ``suspect`` (the observer started suspecting ``subject``), ``refute`` (the
    observer, accused, re-asserted itself; ``subject`` is the observer), or a serf member event
    type (``member-failed``, ``member-leave``, ``member-join``, ...). For ``suspect``,
    ``suspicion`` is the observer's Lifeguard timer, which keeps counting confirmations."""

    time: float
    observer: str
    kind: str
    subject: str
    suspicion: Suspicion | None = None


class Sent(NamedTuple):
    """One datagram or stream as it left its sender (recorded when tracing is on)."""

    time: float
    src: str
    dst: Address
    transport: str  # "udp" or "tcp"
    data: bytes


class SimNetwork(NetworkFaults):
    """The simulated network.

    ``latency``: ``(lo, hi)`` uniform seconds, a ``Latency`` or a callable(rng) -> seconds.
    ``loss``/``tcp_loss``: probability each datagram / connection is lost. ``burst``: a
    ``GilbertElliott`` chain all datagrams step through (network-wide congestion); per link
    use ``set_link(..., burst=...)``. ``record_log``: keep ``log`` and each node's
    ``events`` (off for big runs; ``listeners`` still see every SimEvent). ``coalesce``: each
    node's events pass through the agent's EventPipeline, so ``node.events`` holds what
    handlers would see. ``snapshots``: record each node's snapshot lines in memory.

    ``compression``: nodes LZW-compress what they send, as the agent does. Off by default:
    serf's receivers take uncompressed messages too; with the pure-Python codec LZW was three
    quarters of a 200-node join's CPU (the compiled one adds ~25 %), and a report must not
    depend on which codec the build has. Every ``compression_sample``-th datagram and stream
    is then compressed on the side only to be measured (counters' ``*_sampled_*``), which
    gives the wire's size estimate (``rates()['compressed_bytes_per_node_s_est']``); 0 turns
    that off."""

    def __init__(self, seed: int = 1, loss: float = 0.0,
                 latency: Latency | tuple[float, float] | Sampler = (0.0005, 0.003),
                 compression: bool = False, tcp_loss: float = 0.0, trace: bool = False,
                 burst: GilbertElliott | None = None, record_log: bool = True,
                 listeners: Iterable[Callable[[SimEvent], None]] = (),
                 coalesce: bool = False, snapshots: bool = False,
                 compression_sample: int = 64) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.tcp_loss = tcp_loss
        self.latency = Latency.of(latency)
        self.burst = burst
        self.compression = compression
        self.compression_sample = compression_sample
        self._udp_seen = 0
        self._tcp_seen = 0
        self.record_log = record_log
        # Operations (join, leave, ...) waiting for the event that reports their outcome.
        self._operations: dict[Handle, Callable[[Any, float], None]] = {}
        self._queries: dict[Handle, tuple[Callable[..., None], ...]] = {}
        self.listeners: list[Callable[[SimEvent], None]] = list(listeners)
        self.coalesce = coalesce
        self.snapshots = snapshots
        self.now = 0.0
        self.nodes: dict[Address, SimNode] = {}
        self.by_name: dict[str, SimNode] = {}
        self.packets_sent = 0
        self.packets_dropped = 0  # lost on the way (loss, partitions)
        self.packets_received = 0  # handed to a machine
        self.packets_undelivered = 0  # to no node, a dead node, or a full paused inbox
        self.packets_in_flight = 0
        self.streams_failed = 0
        self.steps = 0
        self.log: list[SimEvent] = []
        self.trace: list[Sent] | None = [] if trace else None
        # (when, seq, node, handler, args): handler None is a wake-up of node's own timers,
        # node None a network-level callback handler(now, *args).
        self._heap: list[tuple[float, int, SimNode | None, Handler | None, tuple]] = []
        self._seq = itertools.count()
        self._links: dict[tuple[str, str], Link] = {}
        self._node_loss: dict[str, tuple[float, float]] = {}
        self._groups: dict[str, int] = {}
        self._refusing: set[str] = set()

    # -- building ------------------------------------------------------------------------

    def add_node(self, name: str, ip: str, port: int = 7946, tags: dict[str, str] | None = None,
                 keyring=None, timing: Timing = LAN, **serf_overrides) -> SimNode:
        ml = MemberlistConfig(name=name, advertise_addr=ip, advertise_port=port,
                              bind_port=port, keyring=keyring, timing=timing,
                              enable_compression=self.compression)
        scheduler = Scheduler()
        serf = Serf(SerfConfig(node_name=name, tags=dict(tags or {}), **serf_overrides), ml,
                    scheduler, random.Random(self.rng.random()))
        node = SimNode(name, (ip, port), serf, scheduler)
        if self.coalesce:
            from pyserf.serf.coalesce import EventPipeline
            node.pipeline = EventPipeline(scheduler, self._handled(node))
        if self.snapshots:
            from pyserf.serf.snapshot import SnapshotState, Snapshotter
            node.snapshot = Snapshotter(SnapshotState())
            node.snapshot_lines = []
        self.nodes[node.addr] = node
        self.by_name[name] = node
        _grow_memos(len(self.nodes))
        self._instrument(node)
        serf.start(self.now)
        self._pump(node)
        return node

    def _handled(self, node: SimNode) -> Callable[[Any], None]:
        def emit(event: Any) -> None:
            if self.record_log:
                node.events.append(event)
        return emit

    def join(self, node: SimNode, target: SimNode) -> list:
        result: list = []
        self.when_done(node, node.serf.join([(target.name, target.addr)], False, self.now),
                       lambda outcome, when: result.append(outcome))
        return result

    def when_done(self, node: SimNode, handle: Handle,
                  callback: Callable[[Any, float], None]) -> None:
        """Call ``callback(outcome, when)`` once the event reporting the operation behind
        ``handle`` comes out of ``node``'s machine (the outcome: a JoinOutcome, a KeyOperation,
        else the error text or None). Pumps the node now, as a shell does after an operation:
        what it queued goes out, and an outcome known at once is reported at once."""
        self._operations[handle] = callback
        self._pump(node)

    def on_query(self, node: SimNode, handle: Handle, *,
                 on_ack: Callable[[str, float], None] = lambda node, when: None,
                 on_response: Callable[[str, bytes, float], None] = lambda node, data, when: None,
                 on_done: Callable[[float], None] = lambda when: None) -> None:
        """Route the answers to the query behind ``handle`` (started on ``node``) to these
        callbacks as they come out of its machine, and pump the node now."""
        self._queries[handle] = (on_ack, on_response, on_done)
        self._pump(node)

    def _emit(self, event: SimEvent) -> None:
        if self.record_log:
            self.log.append(event)
        for listener in self.listeners:
            listener(event)

    def _instrument(self, node: SimNode) -> None:
        """Log when this node starts suspecting someone and when it refutes an accusation.

        The machines report neither as an event, so the two transitions are observed around
        the memberlist's own handlers; what they do is unchanged."""
        ml = node.serf.memberlist
        suspect_node, refute = ml._suspect_node, ml._refute

        def observed_suspect(s: Suspect, now: float) -> None:
            before = ml.node_map.get(s.node)
            was = before.state if before is not None else None
            suspect_node(s, now)
            after = ml.node_map.get(s.node)
            if was != NodeStateKind.SUSPECT and after is not None and \
                    after.state == NodeStateKind.SUSPECT:
                self._emit(SimEvent(now, node.name, "suspect", s.node,
                                    ml._suspicions.get(s.node)))

        def observed_refute(me, accused: int, now: float) -> None:
            refute(me, accused, now)
            self._emit(SimEvent(now, node.name, "refute", node.name))

        # Deliberately dynamic: the observer wraps this node's methods in place.
        ml._suspect_node = observed_suspect  # type: ignore[method-assign]
        ml._refute = observed_refute  # type: ignore[method-assign]

    # -- faults --------------------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        """Stop a node without a leave: it just goes silent, like kill -9."""
        node.up = False
        self.packets_undelivered += sum(1 for h, _ in node.inbox if h == self._h_packet)
        node.inbox.clear()
        node.serf.shutdown()  # the machine stops its timers; nothing it queued goes out

    def pause(self, node: SimNode) -> None:
        """Freeze a node like SIGSTOP: its timers stop and what arrives waits in its buffers."""
        node.paused = True

    def resume(self, node: SimNode) -> None:
        """Thaw a paused node: it reads what its buffers held, then runs its overdue timers."""
        node.paused = False
        while node.inbox and node.up:
            handler, args = node.inbox.popleft()
            handler(node, self.now, *args)
        self._pump(node)  # queues its overdue timers on the heap at their (past) times

    # -- running -------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(now)`` at virtual time ``when`` (a scripted fault, a probe)."""
        heapq.heappush(self._heap, (when, next(self._seq), None, callback, ()))

    def _push(self, when: float, node: SimNode | None, handler: Handler | None,
              args: tuple) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), node, handler, args))

    def run_until(self, end: float, max_steps: int = 5_000_000) -> None:
        for node in self.nodes.values():
            if node.up and not node.paused:
                self._pump(node)  # whatever the caller just asked of a node goes out first
        self._run(end, max_steps)

    def _run(self, end: float, max_steps: int = 5_000_000) -> None:
        heap = self._heap
        pop = heapq.heappop
        at_node = self._at_node
        pump = self._pump
        for _ in range(max_steps):
            if not heap or heap[0][0] > end:
                break
            when, _, node, handler, args = pop(heap)
            if handler is None:
                assert node is not None  # a wake-up entry always names its node
                if node.wake_at != when:
                    continue  # superseded: the node's next wake moved after this was queued
                node.wake_at = None
                if not node.up or node.paused:
                    continue  # resume queues the node's timers again
                # A timer set in the past (a node that just resumed) runs now, never back.
                now = self.now = max(self.now, when)
                node.serf.handle_timer(now)
                pump(node)
            else:
                now = self.now = max(self.now, when)
                if node is None:
                    handler(now, *args)
                else:
                    at_node(node, now, handler, args)
            self.steps += 1
        self.now = max(self.now, end)

    def _pump(self, node: SimNode) -> None:
        serf = node.serf
        if not node.up:
            serf.actions()
            return
        if node.paused:
            return
        node.pumps += 1
        events = serf.events()
        if events:
            self._on_events(node, events)
        if node.snapshot is not None and node.snapshot_lines is not None:
            node.snapshot_lines.extend(node.snapshot.on_clock(serf.clock.time))
        for action in serf.actions():
            if isinstance(action, SendPacket):
                self._deliver_packet(node, action)
            elif isinstance(action, OpenStream):
                self._deliver_stream(node, action)
        wake = serf.get_timer()
        if wake is not None and wake != node.wake_at:
            node.wake_at = wake
            heapq.heappush(self._heap, (wake, next(self._seq), node, None, ()))

    def _on_events(self, node: SimNode, events: list) -> None:
        observe = self.record_log or self.listeners
        now = self.now
        for event in events:
            if type(event) is not MemberEvent:  # member events, nearly all, skip these checks
                if isinstance(event, OPERATION_RESULTS):
                    callback = self._operations.pop(event.handle, None)
                    if callback is not None:
                        callback(event.outcome if isinstance(event, JoinFinished)
                                 else event.result if isinstance(event, KeyOperationFinished)
                                 else event.error, event.at)
                    continue
                if isinstance(event, QUERY_RESULTS):
                    self._query_answer(event)
                    continue
            if observe and isinstance(event, MemberEvent):
                for member in event.members:
                    self._emit(SimEvent(now, node.name, event.type, member.name))
            if node.snapshot is not None and node.snapshot_lines is not None:
                node.snapshot_lines.extend(node.snapshot.on_event(event))
            if node.pipeline is not None:
                node.pipeline.feed(event, now)
            elif self.record_log:
                node.events.append(event)

    def _query_answer(self, event: Any) -> None:
        routes = self._queries.get(event.handle)
        if routes is None:
            return
        on_ack, on_response, on_done = routes
        if isinstance(event, QueryAckReceived):
            on_ack(event.node, event.at)
        elif isinstance(event, QueryResponseReceived):
            on_response(event.node, event.payload, event.at)
        else:
            del self._queries[event.handle]
            on_done(event.at)

    def _record(self, sender: SimNode, addr: Address, transport: str, data: bytes) -> None:
        if self.trace is not None:
            self.trace.append(Sent(self.now, sender.name, _address(addr), transport, data))

    def _at_node(self, node: SimNode, now: float, handler: Handler, args: tuple) -> None:
        """Hand input to a node: now if it runs, on resume if it is frozen, never if dead."""
        if not node.up:
            return
        if node.paused:
            if len(node.inbox) < PAUSED_INBOX_LIMIT:
                node.inbox.append((handler, args))
            return
        handler(node, now, *args)
        self._pump(node)

    # Handlers: what a node does with one input, called with the node's time already set.

    def _h_packet(self, node: SimNode, now: float, data: bytes, src: Address) -> None:
        self.packets_received += 1
        counters = node.counters
        counters.udp_received += 1
        counters.udp_bytes_received += len(data)
        node.serf.receive_packet(data, src, now)

    def _arrive_packet(self, now: float, node: SimNode, data: bytes, src: Address) -> None:
        self.packets_in_flight -= 1
        if not node.up or (node.paused and len(node.inbox) >= PAUSED_INBOX_LIMIT):
            self.packets_undelivered += 1
            return
        self._at_node(node, now, self._h_packet, (data, src))

    def _sent_packet(self, sender: SimNode, action: SendPacket) -> bytes:
        """Count (trace, sample) a datagram leaving ``sender``; returns it."""
        self.packets_sent += 1
        data = action.data
        counters = sender.counters
        counters.udp_sent += 1
        counters.udp_bytes_sent += len(data)
        if self.trace is not None:
            self._record(sender, action.addr, "udp", data)
        if self.compression_sample and self._sample_due(sender, False):
            self._sample_compression(sender, data, False)
        return data

    def _goes_out(self, sender: SimNode, target: str | None) -> bool:
        """Whether a datagram to ``target`` (None: no node there) is on its way; counts it
        lost or undelivered if not, in flight if so."""
        if self._udp_lost(sender.name, target or ""):
            self.packets_dropped += 1
            return False
        if target is None:
            self.packets_undelivered += 1
            return False
        self.packets_in_flight += 1
        return True

    def _sample_due(self, sender: SimNode, stream: bool) -> bool:
        """Whether this datagram (stream) is in the compressed sample: every
        ``compression_sample``-th one the network carries."""
        if stream:
            self._tcp_seen += 1
            return self._tcp_seen % self.compression_sample == 0
        self._udp_seen += 1
        return self._udp_seen % self.compression_sample == 0

    def _deliver_packet(self, sender: SimNode, action: SendPacket) -> None:
        data = self._sent_packet(sender, action)
        addr = action.addr
        target = self.nodes.get(addr if type(addr) is tuple else _address(addr))
        if not self._goes_out(sender, target.name if target else None):
            return
        assert target is not None  # _goes_out sends nothing to no node
        heapq.heappush(self._heap, (self.now + self._delay(sender.name, target.name),
                                    next(self._seq), None, self._arrive_packet,
                                    (target, data, sender.addr)))

    def _sample_compression(self, sender: SimNode, data: bytes, stream: bool) -> None:
        """Count what ``data`` would have been on the wire had ``sender`` compressed it as the
        agent does: datagrams only when that is smaller, CRC and encryption around it."""
        config = sender.serf.memberlist.config
        if config.enable_compression or not data:
            return
        keyring = config.keyring
        overhead = 0
        try:
            if keyring is not None:
                if stream:
                    data = security.decrypt(keyring, data[5:], data[:5])
                    overhead = 5 + security.ENCRYPTION_OVERHEAD_V1
                else:
                    data = security.decrypt(keyring, data, b"")
                    overhead = security.ENCRYPTION_OVERHEAD_V1
        except ValueError:
            return
        if not stream and data[:1] == bytes((MsgType.HAS_CRC,)):
            data = data[5:]
            overhead += 5
        size = len(codec.compress(data))
        if not stream:
            size = min(size, len(data))
        counters = sender.counters
        if stream:
            counters.tcp_sampled_bytes += len(data) + overhead
            counters.tcp_sampled_compressed += size + overhead
        else:
            counters.udp_sampled_bytes += len(data) + overhead
            counters.udp_sampled_compressed += size + overhead

    def _h_stream_failed(self, node: SimNode, now: float, stream_id: int, error: str) -> None:
        node.serf.stream_failed(stream_id, error, now)

    def _h_stream_back(self, node: SimNode, now: float, stream_id: int,
                       reply: bytes | None) -> None:
        if reply is None:
            node.serf.stream_failed(stream_id, "EOF", now)
        else:
            node.counters.tcp_bytes_received += len(reply)
            node.serf.stream_reply(stream_id, reply, now)

    def _h_serve(self, node: SimNode, now: float, sender: SimNode, action: OpenStream,
                 push_pull: bool) -> None:
        reply = self._serve(node, now, action.data, sender.addr, push_pull)
        self._push(now + self._delay(node.name, sender.name), sender, self._h_stream_back,
                   (action.stream_id, reply))

    def _serve(self, node: SimNode, now: float, data: bytes, opener: Address,
               push_pull: bool) -> bytes | None:
        """Hand a stream ``opener`` opened to ``node``; its reply (None: it closed it)."""
        counters = node.counters
        counters.streams_served += 1
        counters.tcp_bytes_received += len(data)
        frame = codec.stream_frame_length(data)
        reply = node.serf.receive_stream(data[:frame or None], (opener[0], 40000), now)
        if reply is not None:
            counters.tcp_bytes_sent += len(reply)
            if push_pull:
                counters.push_pulls_served += 1
                counters.push_pull_bytes += len(reply)
        return reply

    def _deliver_stream(self, sender: SimNode, action: OpenStream) -> None:
        target = self.nodes.get(_address(action.addr))
        push_pull = self._opened_stream(sender, action)
        if target is not None and self._tcp_lost(sender.name, target.name):
            self.streams_failed += 1
            return
        if target is None or not target.up or target.name in self._refusing:
            self.streams_failed += 1
            self._push(self.now + 2 * self._delay(sender.name, target.name if target else ""),
                       sender, self._h_stream_failed,
                       (action.stream_id, "connect: connection refused"))
            return
        self._push(self.now + self._delay(sender.name, target.name), target, self._h_serve,
                   (sender, action, push_pull))

    def _opened_stream(self, sender: SimNode, action: OpenStream) -> bool:
        """Count (trace, sample) a stream ``sender`` opens and queue the opener's timeout;
        whether it is a push-pull."""
        self._record(sender, action.addr, "tcp", action.data)
        counters = sender.counters
        counters.streams_opened += 1
        counters.tcp_bytes_sent += len(action.data)
        push_pull = stream_kind(action.data, sender.serf.memberlist.config.keyring) \
            == MsgType.PUSH_PULL
        if push_pull:
            counters.push_pulls += 1
            counters.push_pull_bytes += len(action.data)
        if self.compression_sample and self._sample_due(sender, True):
            self._sample_compression(sender, action.data, True)
        # Whatever happens next, the opener gives up at its deadline (a no-op once answered).
        self._push(max(action.deadline, self.now), sender, self._h_stream_failed,
                   (action.stream_id, "i/o timeout"))
        return push_pull

    # -- observing -----------------------------------------------------------------------

    def views(self) -> dict[str, dict[str, str]]:
        """Each live node's view: member name -> status label."""
        return {n.name: {m.name: m.status.label() for m in n.serf.member_list()}
                for n in self.nodes.values() if n.up}

    def events(self, kind: str, subject: str | None = None,
               observer: str | None = None) -> list[SimEvent]:
        return [e for e in self.log if e.kind == kind
                and (subject is None or e.subject == subject)
                and (observer is None or e.observer == observer)]

    def snapshot_counters(self) -> CounterSnapshot:
        """Every node's traffic counters now; two snapshots give rates (``rates``)."""
        return snapshot(self.now, {n.name: n.counters for n in self.nodes.values()})


def _grow_memos(nodes: int) -> None:
    """Let the decoders' memos hold what a cluster this big relays (the defaults suit one
    agent): a memo that is cleared more often than its entries recur saves nothing."""
    from pyserf.serf import messages
    want = 4 * nodes
    fields.ADDRESS_CACHE_LIMIT = max(fields.ADDRESS_CACHE_LIMIT, want)
    codec.DECODE_MEMO_LIMIT = max(codec.DECODE_MEMO_LIMIT, want)
    messages.INTENT_MEMO_LIMIT = max(messages.INTENT_MEMO_LIMIT, want)
    messages.TAGS_MEMO_LIMIT = max(messages.TAGS_MEMO_LIMIT, want)
    messages.STATE_NAMES_LIMIT = max(messages.STATE_NAMES_LIMIT, want)


def build_cluster(n: int, seed: int = 7, node_kwargs: dict | None = None,
                  **net_kwargs) -> SimNetwork:
    """``n`` nodes n0..n{n-1} on 10.0.x.y, each joined to n0 in turn 50 ms apart."""
    net = SimNetwork(seed=seed, **net_kwargs)
    nodes = [net.add_node(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}", **(node_kwargs or {}))
             for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
        net._run(net.now + 0.05)  # join pumped the joiner; no one else was touched
    return net
