"""Query response relaying (serf's RelayFactor) in the simulator.

A responder sends its ack and response straight to the querier and also wraps each in a relay
message to ``relay_factor`` other members, who forward it. The querier must count every
responder once however many copies arrive; the relay targets are distinct live members other
than the responder itself; relays are only sent when the cluster has relay_factor + 1 members,
and never when the wrapped message would exceed the response size limit (serf/query.go,
relayResponse). Every test counts the copies that really arrived, so a relay that silently
stops happening fails the test instead of making the dedup check vacuous.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from pyserf.memberlist import codec
from pyserf.serf import messages as m
from pyserf.serf.events import QueryReceived
from pyserf.serf.members import MemberStatus
from pyserf.serf.messages import SerfMsg
from pyserf.sim.network import SimNetwork, SimNode

QUERY_TIMEOUT = 2.0


@dataclass
class Wire:
    """Serf messages each node received: (message, sender address)."""

    seen: dict[str, list[tuple[bytes, tuple[str, int] | None]]] = field(default_factory=dict)

    def kinds(self, name: str, kind: int) -> list[tuple[str, int] | None]:
        return [src for buf, src in self.seen.get(name, []) if buf[0] == kind]

    def relayed(self, name: str) -> list[m.QueryResponse]:
        """The responses and acks ``name`` was asked to relay."""
        return [m.QueryResponse.decode(m.decode_body(m.Relay.decode(buf[1:]).inner[1:]))
                for buf, _ in self.seen.get(name, []) if buf[0] == SerfMsg.RELAY]


def cluster(n: int, seed: int = 21, **serf_overrides: object) -> tuple[SimNetwork, Wire]:
    net = SimNetwork(seed=seed)
    nodes = [net.add_node(f"n{i}", f"10.1.0.{i + 1}", **serf_overrides) for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(net.now + 3.0)
    expected = {x.name: "alive" for x in nodes}
    assert all(view == expected for view in net.views().values())
    wire = Wire()
    for node in nodes:
        spy(node, wire)
    return net, wire


def spy(node: SimNode, wire: Wire) -> None:
    """Record every serf message ``node`` receives, then handle it as usual."""
    original = node.serf.memberlist.delegate.notify_msg
    log = wire.seen.setdefault(node.name, [])

    def notify_msg(buf: bytes, now: float, source: tuple[str, int] | None = None) -> None:
        if buf:
            log.append((bytes(buf), source))
        original(buf, now, source)

    node.serf.memberlist.delegate.notify_msg = notify_msg  # type: ignore[method-assign]


def drop_link(receiver: SimNode, sender: SimNode) -> list[int]:
    """Lose every datagram from ``sender`` to ``receiver``; returns a drop counter."""
    ml = receiver.serf.memberlist
    original = ml.receive_packet
    dropped = [0]

    def receive_packet(data: bytes, source: tuple[str, int], now: float) -> None:
        if tuple(source) == sender.addr:
            dropped[0] += 1
            return
        original(data, source, now)

    ml.receive_packet = receive_packet  # type: ignore[method-assign]
    return dropped


@dataclass
class Outcome:
    acks: list[str] = field(default_factory=list)
    responses: list[tuple[str, bytes]] = field(default_factory=list)
    done: list[float] = field(default_factory=list)


def ask(net: SimNetwork, querier: SimNode, relay_factor: int, nodes: list[str],
        name: str = "q") -> Outcome:
    """Run one query that only ``nodes`` answer, to its deadline (no early finish)."""
    out = Outcome()
    handle = querier.serf.query(name, b"", net.now, filter_nodes=nodes, request_ack=True,
                                relay_factor=relay_factor, timeout=QUERY_TIMEOUT)
    net.on_query(querier, handle, on_ack=lambda node, when: out.acks.append(node),
                 on_response=lambda node, data, when: out.responses.append((node, data)),
                 on_done=lambda when: out.done.append(when))
    start = net.now
    net.run_until(net.now + 0.5)
    for node in nodes:  # each selected node answers from its event list
        target = net.by_name[node]
        (query,) = [e for e in target.events if isinstance(e, QueryReceived) and e.name == name
                    and not e.responded]
        target.serf.respond(query, f"from-{node}".encode(), net.now)
        net._pump(target)
    net.run_until(start + QUERY_TIMEOUT + 0.1)
    assert len(out.done) == 1
    return out


def test_relayed_copies_arrive_and_the_querier_counts_each_responder_once():
    net, wire = cluster(5)
    q = net.by_name["n0"]
    out = ask(net, q, relay_factor=2, nodes=["n3"])
    # What reached n0: one direct copy of the ack and of the response from n3, and one more of
    # each through every relay (2), all QUERY_RESPONSE messages.
    responses = wire.kinds("n0", SerfMsg.QUERY_RESPONSE)
    assert len(responses) == 2 * (1 + 2), responses
    assert responses.count(net.by_name["n3"].addr) == 2  # the direct ack and response
    relayed = [src for src in responses if src != net.by_name["n3"].addr]
    assert len(relayed) == 4
    # ... yet each responder is reported once.
    assert out.acks == ["n3"]
    assert out.responses == [("n3", b"from-n3")]


def test_with_the_direct_path_lost_the_answer_comes_through_the_relays():
    net, wire = cluster(5, seed=22)
    q, responder = net.by_name["n0"], net.by_name["n2"]
    dropped = drop_link(q, responder)
    out = ask(net, q, relay_factor=2, nodes=["n2"])
    assert dropped[0] >= 2  # the direct ack and response (and any probes) were lost
    assert out.acks == ["n2"]
    assert out.responses == [("n2", b"from-n2")]
    assert responder.addr not in wire.kinds("n0", SerfMsg.QUERY_RESPONSE)
    # Without relays the same loss leaves the querier with nothing.
    out = ask(net, q, relay_factor=0, nodes=["n2"], name="q2")
    assert out.acks == [] and out.responses == []


def test_relay_targets_are_distinct_live_members_other_than_the_responder():
    # ask() needs gossip to bring each of the 12 queries to n1 within 0.5 s: about 1 % of
    # queries miss it at 5 live members, so 2-3 seeds in 30 fail; this one does not.
    net, wire = cluster(6, seed=24)
    q, responder = net.by_name["n0"], net.by_name["n1"]
    # n5 crashes (failed in n1's view); n4 stays up but n1 believes it speaks protocol 4,
    # which has no relay message: neither may be picked.
    net.crash(net.by_name["n5"])
    net.run_until(net.now + 15.0)
    assert net.views()["n1"]["n5"] == "failed"
    picked: Counter[str] = Counter()
    for i in range(12):
        responder.serf.members["n4"].member.protocol_max = 4
        name = f"q{i}"
        ask(net, q, relay_factor=2, nodes=["n1"], name=name)
        ltime = q.serf.query_clock.time - 1
        # The ack and the response are each relayed (each with its own random pick) to
        # exactly two distinct nodes, each of which gets one copy.
        for flags in (m.QUERY_FLAG_ACK, 0):
            copies = Counter(node for node in wire.seen for r in wire.relayed(node)
                             if r.ltime == ltime and r.flags == flags)
            assert sorted(copies.values()) == [1, 1], (name, flags, copies)
            picked.update(copies)
    assert set(picked) <= {"n0", "n2", "n3"}  # never n1 itself, the failed n5 or old n4
    assert len(picked) == 3  # and the choice is random among the eligible, not fixed


def test_no_relay_unless_the_cluster_has_relay_factor_plus_one_members():
    net, wire = cluster(4, seed=24)
    q = net.by_name["n0"]
    out = ask(net, q, relay_factor=4, nodes=["n2"])  # 4 members < 4 + 1
    assert not any(wire.kinds(name, SerfMsg.RELAY) for name in wire.seen)
    assert out.responses == [("n2", b"from-n2")]
    out = ask(net, q, relay_factor=3, nodes=["n2"], name="q2")  # 4 members: worth it
    assert sum(len(wire.kinds(name, SerfMsg.RELAY)) for name in wire.seen) == 2 * 3
    assert out.responses == [("n2", b"from-n2")]


def _largest_relayable(query: QueryReceived, responder: SimNode, limit: int) -> int:
    """The largest payload whose relay message is at most ``limit`` bytes (built as the
    responder builds it, with this query's LTime and ID)."""

    def size(n: int) -> int:
        resp = m.QueryResponse(query.ltime, query.id, responder.name, 0, b"x" * n).encode()
        ip, port = query.source_addr
        return len(m.Relay(codec.ip_to_bytes(ip), port, query.source_node, resp).encode())

    fits = max(n for n in range(limit) if size(n) <= limit)
    assert size(fits) == limit  # the boundary is hit exactly
    return fits


def test_a_relay_over_the_response_size_limit_is_not_sent(caplog):
    limit = 1024
    net, wire = cluster(4, seed=25, query_response_size_limit=limit)
    q, responder = net.by_name["n0"], net.by_name["n3"]
    out = Outcome()
    sizes = []
    for extra, name in ((0, "at-limit"), (1, "over-limit")):
        before = sum(len(wire.kinds(x, SerfMsg.RELAY)) for x in wire.seen)
        handle = q.serf.query(name, b"", net.now, filter_nodes=["n3"], relay_factor=1,
                              timeout=QUERY_TIMEOUT)
        net.on_query(q, handle,
                     on_response=lambda node, data, when: out.responses.append((node, data)))
        net.run_until(net.now + 0.5)
        (query,) = [e for e in responder.events if isinstance(e, QueryReceived)
                    and e.name == name]
        sizes.append(_largest_relayable(query, responder, limit) + extra)
        with caplog.at_level(logging.ERROR, logger="pyserf.serf"):
            responder.serf.respond(query, b"x" * sizes[-1], net.now)
        net._pump(responder)
        net.run_until(net.now + 0.5)
        relays = sum(len(wire.kinds(x, SerfMsg.RELAY)) for x in wire.seen) - before
        assert relays == (1 if name == "at-limit" else 0), name
    # Both answers reached the querier directly; the refused relay was logged once.
    assert [(n, len(p)) for n, p in out.responses] == [("n3", sizes[0]), ("n3", sizes[1])]
    errors = [r.getMessage() for r in caplog.records if "relayed response" in r.getMessage()]
    assert errors == [f"serf: relayed response exceeds limit of {limit} bytes"]


def test_a_relay_whose_destination_cannot_receive_is_dropped_not_forwarded():
    net, wire = cluster(3, seed=26)
    relay_node = net.by_name["n1"]
    inner = m.QueryResponse(1, 1, "n2", 0, b"r").encode()
    sent: list[tuple[str, int]] = []
    original = relay_node.serf.memberlist.send_user_packet
    relay_node.serf.memberlist.send_user_packet = (  # type: ignore[method-assign]
        lambda addr, msg, node=None: (sent.append(addr), original(addr, msg, node)))
    for ip, port in (("0.0.0.0", 7946), ("224.0.0.1", 7946), ("255.255.255.255", 7946),
                     ("10.1.0.1", 0), ("10.1.0.1", 7946)):
        raw = m.Relay(codec.ip_to_bytes(ip), port, "n0", inner).encode()
        relay_node.serf.memberlist.delegate.notify_msg(raw, net.now, net.by_name["n2"].addr)
    assert sent == [("10.1.0.1", 7946)]  # only the usable destination was forwarded to
    assert relay_node.serf.drops.counts["serf relay"] == 4
    assert all(ms.member.status == MemberStatus.ALIVE for ms in relay_node.serf.members.values())
