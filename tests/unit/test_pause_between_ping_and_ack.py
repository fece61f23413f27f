"""A node frozen (GC, SIGSTOP, a starved cgroup) between sending a ping and reading its ack
must not blame the target when it wakes past the probe deadline: the ack is waiting in its
socket buffer. The fault lab's pause scenario depends on this (no one suspects an agent that
was never paused) but can only hit the sub-millisecond window by luck; the simulator freezes
the node exactly there, every time."""

from __future__ import annotations

from pyserf.sim.network import build_cluster


def test_a_node_paused_between_its_ping_and_the_ack_suspects_nobody() -> None:
    net = build_cluster(6, seed=5)
    net.run_until(net.now + 5.0)
    node = net.by_name["n1"]
    ml = node.serf.memberlist
    for _ in range(5):
        before = ml._probe
        while ml._probe is before:  # step until the next probe's ping has gone out
            net.run_until(net.now + 0.0002)
        probe = ml._probe
        assert not probe.finished  # the ack is still on the wire: freeze now
        net.pause(node)
        net.run_until(probe.deadline + 0.5)  # 1.5 s frozen, well past the deadline
        net.resume(node)
        net.run_until(net.now + 0.1)
        assert probe.acked, probe.target.name
    assert not net.events("suspect", observer="n1")
