"""An in-memory network and virtual clock that runs many serf machines in one process.

The simulator drives exactly the machines the agent runs, so protocol behaviour (convergence,
failure detection, Lifeguard bounds) can be tested deterministically and fast. Besides uniform
UDP loss it models the faults failure detectors exist for: partitions that cut UDP and TCP both
ways until healed, one-way loss on a link, lost or refused TCP connections, and nodes frozen as
by SIGSTOP (no timers run and nothing is read until they resume and catch up). Every suspicion,
refutation and member event is logged per observer, so a test can count false positives along
the way instead of only looking at the final view.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from pyserf.memberlist import codec, security
from pyserf.memberlist.codec import MsgType, NodeStateKind, Suspect
from pyserf.memberlist.profiles import LAN, Timing
from pyserf.memberlist.state import MemberlistConfig, OpenStream, SendPacket
from pyserf.memberlist.suspicion import Suspicion
from pyserf.memberlist.timers import Scheduler
from pyserf.serf.core import MemberEvent, Serf, SerfConfig

Address = tuple[str, int]
# Datagrams and connections a frozen node's kernel holds for it (a socket buffer's worth).
PAUSED_INBOX_LIMIT = 512


@dataclass
class SimNode:
    name: str
    addr: Address
    serf: Serf
    # Each node has its own timers, so one can be frozen while the others run.
    scheduler: Scheduler = field(default_factory=Scheduler)
    up: bool = True
    paused: bool = False
    events: list = field(default_factory=list)
    # What arrived while paused, handled in order on resume.
    inbox: deque = field(default_factory=deque)


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


@dataclass(slots=True)
class _Link:
    udp_loss: float = 0.0
    tcp_loss: float = 0.0


class SimNetwork:
    def __init__(self, seed: int = 1, loss: float = 0.0, latency: tuple[float, float] = (
            0.0005, 0.003), compression: bool = True, tcp_loss: float = 0.0,
            trace: bool = False) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.tcp_loss = tcp_loss
        self.latency = latency
        self.compression = compression
        # Network deliveries; each node's own timers live on its SimNode.scheduler.
        self.scheduler = Scheduler()
        self.now = 0.0
        self.nodes: dict[Address, SimNode] = {}
        self.by_name: dict[str, SimNode] = {}
        self.packets_sent = 0
        self.packets_dropped = 0
        self.streams_failed = 0
        self.log: list[SimEvent] = []
        self.trace: list[Sent] | None = [] if trace else None
        self._links: dict[tuple[str, str], _Link] = {}
        self._groups: dict[str, int] = {}
        self._refusing: set[str] = set()

    # -- building ------------------------------------------------------------------------

    def add_node(self, name: str, ip: str, port: int = 7946, tags: dict[str, str] | None = None,
                 keyring=None, timing: Timing = LAN, **serf_overrides) -> SimNode:
        ml = MemberlistConfig(name=name, advertise_addr=ip, advertise_port=port,
                              bind_port=port, keyring=keyring, timing=timing,
                              enable_compression=self.compression)
        scheduler = Scheduler()
        scheduler.now = self.now
        serf = Serf(SerfConfig(node_name=name, tags=dict(tags or {}), **serf_overrides), ml,
                    scheduler, random.Random(self.rng.random()))
        node = SimNode(name, (ip, port), serf, scheduler)
        self.nodes[node.addr] = node
        self.by_name[name] = node
        self._instrument(node)
        serf.start(self.now)
        self._pump(node)
        return node

    def join(self, node: SimNode, target: SimNode) -> list:
        result: list = []
        node.serf.join([(target.name, target.addr)], False, self.now,
                       lambda outcome, when: result.append(outcome))
        self._pump(node)
        return result

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
                self.log.append(SimEvent(now, node.name, "suspect", s.node,
                                         ml._suspicions.get(s.node)))

        def observed_refute(me, accused: int, now: float) -> None:
            refute(me, accused, now)
            self.log.append(SimEvent(now, node.name, "refute", node.name))

        ml._suspect_node = observed_suspect
        ml._refute = observed_refute

    # -- faults --------------------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        """Stop a node without a leave: it just goes silent, like kill -9."""
        node.up = False
        node.inbox.clear()
        node.serf.memberlist.shutdown()
        node.serf.state = node.serf.state.SHUTDOWN

    def pause(self, node: SimNode) -> None:
        """Freeze a node like SIGSTOP: its timers stop and what arrives waits in its buffers."""
        node.paused = True

    def resume(self, node: SimNode) -> None:
        """Thaw a paused node: it reads what its buffers held, then runs its overdue timers."""
        node.paused = False
        node.scheduler.now = self.now
        while node.inbox and node.up:
            node.inbox.popleft()(self.now)
        self._pump(node)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut UDP and TCP both ways between the named groups (nodes named in no group still
        reach everyone) until ``heal``."""
        self._groups = {name: i for i, names in enumerate(groups) for name in names}

    def heal(self) -> None:
        self._groups = {}

    def set_link(self, src: str, dst: str, udp_loss: float = 0.0, tcp_loss: float = 0.0) -> None:
        """One-way loss from ``src`` to ``dst`` (datagrams, and connections either way round
        need both directions, so a TCP loss here also breaks streams from ``dst``)."""
        if udp_loss or tcp_loss:
            self._links[(src, dst)] = _Link(udp_loss, tcp_loss)
        else:
            self._links.pop((src, dst), None)

    def isolate_inbound(self, name: str, udp: bool = True, tcp: bool = True) -> None:
        """Drop everything sent to ``name`` (its own sends still go out)."""
        for other in self.by_name:
            if other != name:
                self.set_link(other, name, float(udp), float(tcp))

    def restore_inbound(self, name: str) -> None:
        for other in self.by_name:
            self._links.pop((other, name), None)

    def refuse_tcp(self, name: str, refuse: bool = True) -> None:
        """Connections to ``name`` are refused at once (a closed port), UDP still flows."""
        if refuse:
            self._refusing.add(name)
        else:
            self._refusing.discard(name)

    def _cut(self, src: str, dst: str) -> bool:
        groups = self._groups
        return src in groups and dst in groups and groups[src] != groups[dst]

    def _udp_lost(self, src: str, dst: str) -> bool:
        if self._cut(src, dst):
            return True
        if self.loss and self.rng.random() < self.loss:
            return True
        link = self._links.get((src, dst))
        return link is not None and link.udp_loss > 0 and self.rng.random() < link.udp_loss

    def _tcp_lost(self, src: str, dst: str) -> bool:
        if self._cut(src, dst) or self._cut(dst, src):
            return True
        if self.tcp_loss and self.rng.random() < self.tcp_loss:
            return True
        for key in ((src, dst), (dst, src)):
            link = self._links.get(key)
            if link is not None and link.tcp_loss > 0 and self.rng.random() < link.tcp_loss:
                return True
        return False

    # -- running -------------------------------------------------------------------------

    def _running(self) -> Iterable[SimNode]:
        return (n for n in self.nodes.values() if n.up and not n.paused)

    def run_until(self, end: float, max_steps: int = 5_000_000) -> None:
        for node in list(self._running()):
            self._pump(node)  # whatever the caller just asked of a node goes out first
        for _ in range(max_steps):
            wake = self.scheduler.next_wake()
            wakes = []
            for node in self._running():
                when = node.scheduler.next_wake()
                if when is not None:
                    wakes.append((when, node))
                    if wake is None or when < wake:
                        wake = when
            if wake is None or wake > end:
                break
            # A timer set in the past (a node that just resumed) runs now, never back in time.
            self.now = max(self.now, wake)
            self.scheduler.run_due(self.now)
            for when, node in wakes:
                if when <= self.now and node.up and not node.paused:
                    node.scheduler.run_due(self.now)
                    self._pump(node)
        self.now = max(self.now, end)
        self.scheduler.now = self.now
        for node in self._running():
            node.scheduler.now = self.now

    def _pump(self, node: SimNode) -> None:
        if not node.up:
            node.serf.take_actions()
            return
        if node.paused:
            return
        events = node.serf.take_events()
        for event in events:
            if isinstance(event, MemberEvent):
                self.log.extend(SimEvent(self.now, node.name, event.type, member.name)
                                for member in event.members)
        node.events.extend(events)
        for action in node.serf.take_actions():
            if isinstance(action, SendPacket):
                self._deliver_packet(node, action)
            elif isinstance(action, OpenStream):
                self._deliver_stream(node, action)

    def _delay(self) -> float:
        return self.rng.uniform(*self.latency)

    def _record(self, sender: SimNode, addr: Address, transport: str, data: bytes) -> None:
        if self.trace is not None:
            self.trace.append(Sent(self.now, sender.name, tuple(addr), transport, data))

    def _at_node(self, node: SimNode, when: float, fn: Callable[[float], None]) -> None:
        """Hand ``fn`` to a node: now if it runs, on resume if it is frozen, never if dead."""
        if not node.up:
            return
        if node.paused:
            if len(node.inbox) < PAUSED_INBOX_LIMIT:
                node.inbox.append(fn)
            return
        node.scheduler.now = when
        fn(when)
        self._pump(node)

    def _deliver_packet(self, sender: SimNode, action: SendPacket) -> None:
        self.packets_sent += 1
        self._record(sender, action.addr, "udp", action.data)
        target = self.nodes.get(tuple(action.addr))
        if self._udp_lost(sender.name, target.name if target else ""):
            self.packets_dropped += 1
            return
        if target is None:
            return

        def arrive(when: float) -> None:
            self._at_node(target, when, lambda t: target.serf.memberlist.receive_packet(
                action.data, sender.addr, t))

        self.scheduler.call_at(self.now + self._delay(), arrive)

    def _deliver_stream(self, sender: SimNode, action: OpenStream) -> None:
        self._record(sender, action.addr, "tcp", action.data)
        target = self.nodes.get(tuple(action.addr))
        ml = sender.serf.memberlist

        def fail(error: str) -> Callable[[float], None]:
            def report(when: float) -> None:
                self._at_node(sender, when, lambda t: ml.stream_failed(action.stream_id,
                                                                       error, t))
            return report

        # Whatever happens below, the opener gives up at its deadline (a no-op once answered).
        self.scheduler.call_at(max(action.deadline, self.now), fail("i/o timeout"))
        if target is not None and self._tcp_lost(sender.name, target.name):
            self.streams_failed += 1
            return
        if target is None or not target.up or target.name in self._refusing:
            self.streams_failed += 1
            self.scheduler.call_at(self.now + 2 * self._delay(),
                                   fail("connect: connection refused"))
            return

        def serve(when: float) -> None:
            frame = codec.stream_frame_length(action.data)
            reply = target.serf.memberlist.handle_stream(action.data[:frame or None],
                                                         (sender.addr[0], 40000), when)

            def back(t: float) -> None:
                if reply is None:
                    self._at_node(sender, t, lambda t2: ml.stream_failed(action.stream_id,
                                                                         "EOF", t2))
                else:
                    self._at_node(sender, t, lambda t2: ml.stream_reply(action.stream_id,
                                                                        reply, t2))

            self.scheduler.call_at(when + self._delay(), back)

        self.scheduler.call_at(self.now + self._delay(),
                               lambda when: self._at_node(target, when, serve))

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


def udp_messages(data: bytes, keyring: security.Keyring | None = None) -> list[bytes]:
    """The memberlist messages one datagram carries (compound and compressed parts opened),
    each starting with its type byte; for counting what a node actually sent."""
    if keyring is not None:
        data = security.decrypt(keyring, data, b"")
    out: list[bytes] = []
    pending = [data]
    while pending:
        msg = pending.pop()
        if not msg:
            continue
        if msg[0] == MsgType.HAS_CRC:
            msg = codec.strip_crc(msg)
        if msg[0] == MsgType.COMPOUND:
            parts, _ = codec.split_compound(msg[1:])
            pending.extend(reversed(parts))
        elif msg[0] == MsgType.COMPRESS:
            pending.append(codec.decompress_body(msg[1:]))
        else:
            out.append(msg)
    return out



def build_cluster(n: int, seed: int = 7, node_kwargs: dict | None = None,
                  **net_kwargs) -> SimNetwork:
    """``n`` nodes n0..n{n-1} on 10.0.x.y, each joined to n0 in turn 50 ms apart."""
    net = SimNetwork(seed=seed, **net_kwargs)
    nodes = [net.add_node(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}", **(node_kwargs or {}))
             for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
        net.run_until(net.now + 0.05)
    return net
