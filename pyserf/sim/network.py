"""An in-memory lossy network and virtual clock that runs many serf machines in one process.

The simulator drives exactly the machines the agent runs, so protocol behaviour (convergence,
failure detection, Lifeguard bounds) can be tested deterministically and fast.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pyserf.memberlist import codec
from pyserf.memberlist.state import MemberlistConfig, OpenStream, SendPacket
from pyserf.memberlist.timers import Scheduler
from pyserf.serf.core import Serf, SerfConfig

Address = tuple[str, int]


@dataclass
class SimNode:
    name: str
    addr: Address
    serf: Serf
    up: bool = True
    events: list = field(default_factory=list)


class SimNetwork:
    def __init__(self, seed: int = 1, loss: float = 0.0, latency: tuple[float, float] = (
            0.0005, 0.003), compression: bool = True) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency = latency
        self.compression = compression
        self.scheduler = Scheduler()
        self.now = 0.0
        self.nodes: dict[Address, SimNode] = {}
        self.by_name: dict[str, SimNode] = {}
        self.packets_sent = 0
        self.packets_dropped = 0

    # -- building ------------------------------------------------------------------------

    def add_node(self, name: str, ip: str, port: int = 7946, tags: dict[str, str] | None = None,
                 keyring=None, **serf_overrides) -> SimNode:
        ml = MemberlistConfig(name=name, advertise_addr=ip, advertise_port=port,
                              bind_port=port, keyring=keyring,
                              enable_compression=self.compression)
        serf = Serf(SerfConfig(node_name=name, tags=dict(tags or {}), **serf_overrides), ml,
                    self.scheduler, random.Random(self.rng.random()))
        node = SimNode(name, (ip, port), serf)
        self.nodes[node.addr] = node
        self.by_name[name] = node
        serf.start(self.now)
        self._pump(node)
        return node

    def join(self, node: SimNode, target: SimNode) -> list:
        result: list = []
        node.serf.join([(target.name, target.addr)], False, self.now,
                       lambda outcome, when: result.append(outcome))
        self._pump(node)
        return result

    def crash(self, node: SimNode) -> None:
        """Stop a node without a leave: it just goes silent, like kill -9."""
        node.up = False
        node.serf.memberlist.shutdown()
        node.serf.state = node.serf.state.SHUTDOWN

    # -- running -------------------------------------------------------------------------

    def run_until(self, end: float, max_steps: int = 5_000_000) -> None:
        for _ in range(max_steps):
            wake = self.scheduler.next_wake()
            if wake is None or wake > end:
                break
            self.now = wake
            self.scheduler.run_due(wake)
            for node in list(self.nodes.values()):
                self._pump(node)
        self.now = max(self.now, end)
        self.scheduler.now = self.now

    def _pump(self, node: SimNode) -> None:
        if not node.up:
            node.serf.take_actions()
            return
        node.events.extend(node.serf.take_events())
        for action in node.serf.take_actions():
            if isinstance(action, SendPacket):
                self._deliver_packet(node, action)
            elif isinstance(action, OpenStream):
                self._deliver_stream(node, action)

    def _delay(self) -> float:
        return self.rng.uniform(*self.latency)

    def _deliver_packet(self, sender: SimNode, action: SendPacket) -> None:
        self.packets_sent += 1
        if self.loss and self.rng.random() < self.loss:
            self.packets_dropped += 1
            return
        target = self.nodes.get(tuple(action.addr))

        def arrive(when: float) -> None:
            if target is not None and target.up:
                target.serf.memberlist.receive_packet(action.data, sender.addr, when)
                self._pump(target)

        self.scheduler.call_at(self.now + self._delay(), arrive)

    def _deliver_stream(self, sender: SimNode, action: OpenStream) -> None:
        target = self.nodes.get(tuple(action.addr))

        def arrive(when: float) -> None:
            if target is None or not target.up:
                self.scheduler.call_at(when + self._delay(), lambda t: self._fail(
                    sender, action, "connect: connection refused", t))
                return
            frame = codec.stream_frame_length(action.data)
            reply = target.serf.memberlist.handle_stream(action.data[:frame or None],
                                                         (sender.addr[0], 40000), when)
            self._pump(target)

            def back(t: float) -> None:
                if sender.up:
                    if reply is None:
                        sender.serf.memberlist.stream_failed(action.stream_id, "EOF", t)
                    else:
                        sender.serf.memberlist.stream_reply(action.stream_id, reply, t)
                    self._pump(sender)

            self.scheduler.call_at(when + self._delay(), back)

        self.scheduler.call_at(self.now + self._delay(), arrive)

    def _fail(self, sender: SimNode, action: OpenStream, error: str, when: float) -> None:
        if sender.up:
            sender.serf.memberlist.stream_failed(action.stream_id, error, when)
            self._pump(sender)

    # -- observing -----------------------------------------------------------------------

    def views(self) -> dict[str, dict[str, str]]:
        """Each live node's view: member name -> status label."""
        return {n.name: {m.name: m.status.label() for m in n.serf.member_list()}
                for n in self.nodes.values() if n.up}
