"""The simulated network's fault model: partitions, loss (global, per link, per node, bursty),
per-link latency and refused connections. A mixin of SimNetwork, which owns the state it reads
(set in SimNetwork.__init__) and asks it, for each datagram and connection, whether it is lost
and how long it takes."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from pyserf.sim.links import GilbertElliott, Latency, Link, Sampler


class NetworkFaults:
    """Fault controls and per-delivery verdicts; every draw uses the network's seeded rng."""

    # SimNetwork's state this part reads and writes.
    rng: random.Random
    loss: float
    tcp_loss: float
    latency: Latency
    burst: GilbertElliott | None
    by_name: dict[str, Any]
    _links: dict[tuple[str, str], Link]
    _node_loss: dict[str, tuple[float, float]]
    _groups: dict[str, int]
    _refusing: set[str]

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut UDP and TCP both ways between the named groups (nodes named in no group still
        reach everyone) until ``heal``."""
        self._groups = {name: i for i, names in enumerate(groups) for name in names}

    def heal(self) -> None:
        self._groups = {}

    def set_link(self, src: str, dst: str, udp_loss: float = 0.0, tcp_loss: float = 0.0,
                 latency: Latency | tuple[float, float] | Sampler | None = None,
                 burst: GilbertElliott | None = None) -> None:
        """Traffic from ``src`` to ``dst``: one-way loss (datagrams; connections need both
        directions, so a TCP loss here also breaks streams from ``dst``), its own latency,
        and its own bursty-loss chain (a copy of ``burst``). All defaults restore the link."""
        link = Link(udp_loss, tcp_loss, None if latency is None else Latency.of(latency),
                    None if burst is None else burst.copy())
        if link.is_default():
            self._links.pop((src, dst), None)
        else:
            self._links[(src, dst)] = link

    def set_node_loss(self, name: str, udp_loss: float = 0.0, tcp_loss: float = 0.0) -> None:
        """Lose this share of every datagram (connection) to or from ``name``: a bad NIC or
        an overloaded host, on top of any global and per-link loss."""
        if udp_loss or tcp_loss:
            self._node_loss[name] = (udp_loss, tcp_loss)
        else:
            self._node_loss.pop(name, None)

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
        if self._groups and self._cut(src, dst):
            return True
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            return True
        if self._links:
            link = self._links.get((src, dst))
            if link is not None:
                if link.udp_loss > 0 and rng.random() < link.udp_loss:
                    return True
                if link.burst is not None and link.burst.lost(rng):
                    return True
        if self._node_loss:
            for name in (src, dst):
                node_loss = self._node_loss.get(name)
                if node_loss is not None and node_loss[0] > 0 and rng.random() < node_loss[0]:
                    return True
        return self.burst is not None and self.burst.lost(rng)

    def _tcp_lost(self, src: str, dst: str) -> bool:
        if self._cut(src, dst) or self._cut(dst, src):
            return True
        if self.tcp_loss and self.rng.random() < self.tcp_loss:
            return True
        for key in ((src, dst), (dst, src)):
            link = self._links.get(key)
            if link is not None and link.tcp_loss > 0 and self.rng.random() < link.tcp_loss:
                return True
        for name in (src, dst):
            node_loss = self._node_loss.get(name)
            if node_loss is not None and node_loss[1] > 0 and self.rng.random() < node_loss[1]:
                return True
        return False

    def _delay(self, src: str = "", dst: str = "") -> float:
        if self._links:
            link = self._links.get((src, dst))
            if link is not None and link.latency is not None:
                return link.latency.sample(self.rng)
        return self.latency.sample(self.rng)
