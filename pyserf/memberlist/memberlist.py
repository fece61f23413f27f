"""The SWIM + Lifeguard membership machine, wire-compatible with hashicorp/memberlist 0.2.x.

Sans-I/O: it is fed packets, stream payloads and the current time, and queues actions
(datagrams to send, streams to open) that the caller drains with ``take_actions``. Timers live in
a shared ``Scheduler``; the caller sleeps until ``scheduler.next_wake()`` and then calls
``scheduler.run_due(now)``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from pyserf.memberlist import codec, fields
from pyserf.memberlist.codec import Alive, Dead, NodeStateKind
from pyserf.memberlist.dispatch import Dispatcher
from pyserf.memberlist.gossip import Gossiper
from pyserf.memberlist.probe import Prober
from pyserf.memberlist.types import (
    PROTOCOL_CUR,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Address,
    JoinOutcome,
    Node,
    OpenStream,
    SendPacket,
)

log = logging.getLogger("pyserf.memberlist")


class Memberlist(Dispatcher, Prober, Gossiper):
    """The machine: the public API over the mechanisms it composes."""

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
        self._dead_node(dead, now, on_finished=lambda when: waiter.fire(None, when))
        self.send_to_live_nodes(dead.encode(), now)
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
                         on_finished=lambda when: waiter.fire(None, when))
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

    def send_user_packet(self, addr: Address, serf_msg: bytes, now: float,
                         node: Node | None = None) -> None:
        """Send a serf message directly (query responses, relays) without piggybacking."""
        self._raw_send(addr, codec.encode_user(serf_msg), node, now)

    def send_to_live_nodes(self, msg: bytes, now: float) -> None:
        """Send one message straight to every live peer, on top of gossiping it.

        Used for goodbyes: a leave reaches everyone in one round trip instead of spreading
        over several gossip rounds. Gossip still carries it to anyone a datagram missed.
        """
        name = self.config.name
        for node in self.nodes:
            if node.name != name and node.state == NodeStateKind.ALIVE:
                self._raw_send(node.address, msg, node, now)

    def push_pull_now(self, now: float) -> None:
        """Run one anti-entropy exchange with a random live node."""
        self._periodic_push_pull(now, reschedule=False)


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
