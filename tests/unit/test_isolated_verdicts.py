"""A node cut off from everyone keeps its verdicts to itself.

Found by the fault lab (benchmarks/faults.py, isolate60): after a node was isolated for 60 s
and the network healed, 18 healthy agents declared a healthy member failed for ~0.05 s, in 2 of
3 runs of pyserf (serf: 0 of 3). The simulator shows why: the isolated node probes ever more
slowly (its health score is at the maximum), so it begins some suspicions late and their 6x
timeouts (31 s at 20 nodes, no one can confirm) run out just after the heal. It then gossiped
"dead" for a member nobody else doubted, which the others accepted at once (same incarnation)
until the member refuted. A node that has heard from no peer since it began to suspect is the
one that was cut off: it now marks the member failed in its own view but does not gossip it.
"""

from __future__ import annotations

import logging

import pytest

from pyserf.sim.network import SimNetwork, build_cluster

N = 20
HOLD = 60.0


def isolate_and_heal(seed: int) -> tuple[SimNetwork, float]:
    net = build_cluster(N, seed=seed)
    net.run_until(net.now + 5.0)
    net.partition([f"n{i}" for i in range(N - 1)], [f"n{N - 1}"])
    net.run_until(net.now + HOLD)
    healed = net.now
    net.heal()
    net.run_until(healed + 45.0)
    return net, healed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_members_are_not_failed_after_an_isolated_node_heals(
        seed: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    net, healed = isolate_and_heal(seed)
    lonely = f"n{N - 1}"
    # The isolated node did judge others failed in its own view (the fault was seen)...
    assert len({e.subject for e in net.events("member-failed", observer=lonely)}) >= 3
    # ... but no healthy member was failed by anyone else, before or after the heal.
    wrong = [(round(e.time - healed, 2), e.observer, e.subject)
             for e in net.events("member-failed")
             if e.observer != lonely and e.subject != lonely]
    assert wrong == []
    # And the cluster is whole again.
    assert all(set(view.values()) == {"alive"} and len(view) == N
               for view in net.views().values())


def test_a_lone_witness_that_hears_others_still_gossips_the_death() -> None:
    """The ordinary case is unchanged: a crashed node, suspected by a node that hears its
    peers, is declared failed by everyone."""
    net = build_cluster(6, seed=4)
    net.run_until(net.now + 5.0)
    net.crash(net.by_name["n5"])
    net.run_until(net.now + 40.0)
    assert {e.observer for e in net.events("member-failed", subject="n5")} == {
        f"n{i}" for i in range(5)}
