"""Failure detection: probe one member per interval (direct ping, then indirect pings and a
stream fallback), and turn a probe nobody answered into a suspicion."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyserf.memberlist import codec
from pyserf.memberlist.base import Probe
from pyserf.memberlist.codec import (
    Ack,
    DecodeError,
    IndirectPing,
    MsgType,
    NodeStateKind,
    Ping,
    Suspect,
)
from pyserf.memberlist.state import NodeStates
from pyserf.memberlist.types import Node

log = logging.getLogger("pyserf.memberlist")


class Prober(NodeStates):
    """The probe loop: one member per interval, suspected if nobody reaches it."""

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
        probe = Probe(node, seq, now, now + interval)
        self._probe = probe
        me = self.local_node
        ping = Ping(seq, node.name, codec.ip_to_bytes(me.addr), me.port, me.name)

        def on_ack(payload: bytes | None, when: float) -> None:
            if probe.finished:
                return
            probe.acked = True
            if not probe.indirect:
                self.delegate.notify_ping_complete(node, when - probe.sent, payload, when)
            self._finish_probe(probe, -1 if not probe.indirect else 0, when)

        def on_nack(when: float) -> None:
            probe.nacks += 1

        self._set_ack_handler(seq, on_ack, on_nack, probe.deadline)
        if node.state == NodeStateKind.ALIVE:
            self._send_piggybacked(node.address, ping.encode(), now)
        else:
            # Tell a suspect about the accusation so it can refute it.
            suspect = Suspect(node.incarnation, node.name, self.config.name)
            self._raw_send(node.address, codec.make_compound([ping.encode(), suspect.encode()]),
                           node, now)
        probe.timers = (
            self.scheduler.call_at(now + self.timing.probe_timeout,
                                   lambda when: self._probe_indirect(probe, ping, when)),
            self.scheduler.call_at(probe.deadline,
                                   lambda when: self._probe_deadline(probe, when)))

    def _probe_indirect(self, probe: Probe, ping: Ping, now: float) -> None:
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
            self._send_piggybacked(peer.address, ind.encode(), now)
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

    def _probe_deadline(self, probe: Probe, now: float) -> None:
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

    def _finish_probe(self, probe: Probe, awareness_delta: int, now: float) -> None:
        probe.finished = True
        for timer in probe.timers:
            timer.cancel()  # an answered probe needs no more wake-ups
        self.metrics.sample("memberlist.probeNode", (now - probe.sent) * 1000.0)
        self._apply_awareness(awareness_delta)
        self._ack_handlers.pop(probe.seq, None)
