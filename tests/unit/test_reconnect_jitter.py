"""Why pyserf spreads its reconnect rounds (SerfConfig.reconnect_jitter), shown in the simulator.

Found by the fault lab (benchmarks/faults.py, partition120): after a partition longer than
suspicion plus GossipToTheDeadTime (30 s), nothing but serf's reconnect rounds can join the
halves again. Each agent runs one every ReconnectInterval (30 s) from its start, so agents
started together (a fleet rolled out at once, the lab's clusters) retry in lockstep, and a heal
that lands just after their common round waits for the next: up to 30 s, whatever the number
of agents. serf 0.9.4 healed a 120 s 10|10 split in 22 s that way, and its rounds drifted to
40 s because each blocks on the 10 s TCP timeout of an attempt into the partition.

With each wait drawn from 30 s * U(0.5, 1.5) the cluster makes the same number of attempts per
interval on average, but spread out: with k agents holding the other side failed (every agent,
in a 6|6 split: failed/alive = 1), one attempt lands every ~30/k s, so the heal is found within
seconds.
"""

from __future__ import annotations

import logging

import pytest

from pyserf.sim.network import SimNetwork, build_cluster

N = 12
RECONNECT = 30.0
HOLD = 120.0  # > PI + suspicion max (6 * 4 * log10(12) = 26 s) + GossipToTheDeadTime (30 s)


def all_alive(net: SimNetwork) -> bool:
    return all(len(view) == N and set(view.values()) == {"alive"}
               for view in net.views().values())


def heal_time(jitter: float, seed: int) -> float:
    """Seconds from healing a 6|6 split held HOLD s until every node lists all alive."""
    net = build_cluster(N, seed=seed, node_kwargs={"reconnect_jitter": jitter})
    # Everyone was started within 0.6 s: without jitter their rounds fall at ~30 s, 60 s, ...
    side_a = {f"n{i}" for i in range(N // 2)}
    side_b = {f"n{i}" for i in range(N // 2, N)}
    net.run_until(2.0)
    net.partition(side_a, side_b)
    # Heal 1 s after a lockstep round: the worst moment for agents that retry in lockstep.
    heal_at = (int((2.0 + HOLD) // RECONNECT) + 1) * RECONNECT + 1.0
    net.run_until(heal_at)
    failed = {(e.observer, e.subject) for e in net.events("member-failed")}
    assert len(failed) == 2 * (N // 2) ** 2, "the split must have been detected both ways"
    net.heal()
    while net.now < heal_at + RECONNECT + 15.0 and not all_alive(net):
        net.run_until(net.now + 0.25)
    assert all_alive(net), net.views()
    return net.now - heal_at


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lockstep_rounds_wait_for_the_next_round(seed: int) -> None:
    """serf's schedule: the heal is found only at the next common round, ~29 s later."""
    took = heal_time(0.0, seed)
    assert RECONNECT - 5.0 <= took <= RECONNECT + 5.0, took


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spread_rounds_find_the_heal_within_seconds(seed: int) -> None:
    """12 agents' rounds spread over 15-45 s: an attempt every ~2.5 s on average."""
    took = heal_time(0.5, seed)
    assert took <= 10.0, took


def test_spread_keeps_the_attempt_rate(caplog: pytest.LogCaptureFixture) -> None:
    """Jitter moves rounds, it adds none: over 20 intervals the 3 survivors of a crash run
    60 +- 4 rounds between them (each round logs an attempt or a throttled skip)."""
    net = build_cluster(4, seed=5, node_kwargs={"reconnect_jitter": 0.5})
    net.run_until(1.0)
    net.crash(net.by_name["n3"])
    caplog.set_level(logging.DEBUG, logger="pyserf.serf")
    start = net.now
    net.run_until(start + 20 * RECONNECT)
    rounds = [r for r in caplog.records if (
        "attempting reconnect" in r.getMessage() or "forgoing reconnect" in r.getMessage())]
    assert 56 <= len(rounds) <= 64, len(rounds)
