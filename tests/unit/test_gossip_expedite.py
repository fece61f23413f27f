"""When gossip goes out before the next regular round (pyserf's expedited gossip): at once while
everything queued fits in one datagram, at the regular rounds behind a larger backlog."""

from __future__ import annotations

from pyserf.memberlist.codec import MsgType
from pyserf.memberlist.gossip import EXPEDITE_MIN_GAP
from pyserf.memberlist.profiles import LAN
from pyserf.sim.network import SimNetwork, udp_messages


def quiet_cluster(n: int = 5) -> SimNetwork:
    net = SimNetwork(seed=5, compression=False, trace=True)
    nodes = [net.add_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(15.0)  # joined, and the join's gossip long finished
    assert not any(len(q) for node in nodes for q in node.serf.memberlist._broadcast_queues())
    return net


def fire(net: SimNetwork, origin: str, name: str, payload: bytes = b"x") -> None:
    node = net.by_name[origin]
    net.when_done(node, node.serf.user_event(name, payload, False, net.now), lambda *_: None)


def first_sent(net: SimNetwork, origin: str, marker: bytes, since: int) -> float:
    return min(p.time for p in net.trace[since:] if p.src == origin and p.transport == "udp"
               and any(m[0] == MsgType.USER and marker in m for m in udp_messages(p.data)))


def gossip_rounds(net: SimNetwork, origin: str, since: int) -> int:
    """Instants at which ``origin`` sent datagrams to several members at once: gossip rounds
    (a probe sends one datagram at a time)."""
    per_instant: dict[float, int] = {}
    for p in net.trace[since:]:
        if p.src == origin and p.transport == "udp":
            per_instant[p.time] = per_instant.get(p.time, 0) + 1
    return sum(1 for count in per_instant.values() if count > 1)


def test_a_message_behind_a_small_queue_goes_before_the_next_round():
    net = quiet_cluster()
    mark = len(net.trace)
    start = net.now
    fire(net, "n2", "first")  # wakes the sleeping gossip loop: a round at once
    net.run_until(start + 0.06)
    fire(net, "n2", "second")  # the next regular round is ~140 ms away
    net.run_until(start + 1.0)
    assert first_sent(net, "n2", b"first", mark) - start < 0.01
    assert first_sent(net, "n2", b"second", mark) - (start + 0.06) < EXPEDITE_MIN_GAP
    assert LAN.gossip_interval - 0.06 > EXPEDITE_MIN_GAP  # so that the check above can fail


def test_behind_a_backlog_new_messages_ride_the_regular_rounds():
    """A join storm's backlog: every new message used to add a round (one per 50 ms), raising
    the rate of datagrams while every agent fights for CPU. Fifty new messages in one second
    behind a backlog of several datagrams now leave in the five regular rounds."""
    net = quiet_cluster()
    origin = net.by_name["n2"]
    start = net.now
    queued = lambda: sum(q.nbytes for q in origin.serf.memberlist._broadcast_queues())  # noqa: E731
    for i in range(120):  # each goes 4 times, 3 datagrams a round: ~2 s of full rounds
        fire(net, "n2", f"backlog-{i}", b"." * 60)
    net.run_until(start + 0.01)
    mark = len(net.trace)
    for i in range(50):
        net.run_until(start + 0.01 + 0.02 * i)
        fire(net, "n2", f"new-{i}")
    net.run_until(start + 1.01)
    # 1 s of regular rounds at 200 ms: 5, or 6 when the window catches both ends.
    assert gossip_rounds(net, "n2", mark) <= 6
    assert queued() > LAN.udp_buffer_size  # still a backlog at the end
