"""Failure-detector scenarios in the simulator: loss, frozen nodes, partitions, refutation,
Lifeguard's awareness and nacks, and encryption. Every member event is logged per observer
along the way (SimNetwork.log), so false positives are counted as they happen, not inferred from
the final view.

LAN timers: ProbeInterval PI = 1 s; for 10-16 members the minimum suspicion timeout is
SuspicionMult * log10(n) * PI = 4.0-4.8 s and the maximum SuspicionMaxTimeoutMult = 6 times that.
"""

from __future__ import annotations

import math

import pytest

from pyserf.memberlist.codec import MsgType
from pyserf.memberlist.profiles import LAN
from pyserf.memberlist.security import Keyring
from pyserf.sim.network import SimNetwork, build_cluster, udp_messages

PI = 1.0
SUSPICION_MULT = 4
SUSPICION_MAX_TIMEOUT_MULT = 6
GOSSIP_TO_THE_DEAD = 30.0
SPREAD = 0.1  # a death declared by one node reaches the rest within a few ms-latency hops
LOSSY_SPREAD = 2.0  # ... and, with 20 % loss, within a few 200 ms gossip rounds


def suspicion_min(n: int) -> float:
    return SUSPICION_MULT * max(1.0, math.log10(n)) * PI


def false_failures(net: SimNetwork, down: set[str]) -> list[tuple[str, str, float]]:
    """Every member-failed event, per observer, about a node that was never down."""
    return [(e.observer, e.subject, e.time) for e in net.log
            if e.kind == "member-failed" and e.subject not in down]


def all_alive(net: SimNetwork, n: int) -> bool:
    expected = {f"n{i}": "alive" for i in range(n)}
    return all(view == expected for view in net.views().values())


@pytest.mark.parametrize(("udp_loss", "tcp_loss"), [(0.10, 0.0), (0.20, 0.20)])
def test_lossy_network_no_false_failures_and_a_real_crash_is_still_found(udp_loss, tcp_loss):
    """Lifeguard's claim under loss: a healthy node is suspected at times but always refutes
    in time. A probe fails only when the direct ping, all three indirect pings and the TCP
    fallback are lost; the accused then hears the accusation (gossip to 3 nodes per 200 ms,
    retransmitted 8 times per node at n = 16) and refutes within a few hundred ms, far inside
    the >= 4.8 s minimum timeout. Any member-failed about a live node is a bug, so 0."""
    n = 16
    net = build_cluster(n, seed=3)  # joins are lossless; the loss starts afterwards
    net.run_until(net.now + 3.0)
    assert all_alive(net, n)
    net.loss, net.tcp_loss = udp_loss, tcp_loss
    net.run_until(net.now + 30.0)
    victim = "n9"
    crash_at = net.now
    net.crash(net.by_name[victim])
    net.run_until(crash_at + 20.0)

    assert false_failures(net, {victim}) == []
    if tcp_loss:
        # The scenario did exercise Lifeguard: live nodes were suspected and refuted.
        assert [e for e in net.events("suspect") if e.subject != victim]
        assert net.events("refute")
    failed = net.events("member-failed", victim)
    assert {e.observer for e in failed} == {f"n{i}" for i in range(n)} - {victim}
    # The death comes from the first suspicion timer to run out: it waited between Lifeguard's
    # minimum and maximum, and everyone heard within a few lossy gossip rounds.
    first_failed = min(e.time for e in failed)
    (declared,) = [e.suspicion for e in net.events("suspect", victim)
                   if e.suspicion.deadline == pytest.approx(first_failed, abs=1e-9)][:1]
    assert suspicion_min(n) - 1e-3 <= declared.deadline - declared.start <= \
        SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n)
    # A probe of the victim still running at the crash (started < PI before) can fail first.
    assert crash_at - PI <= declared.start
    assert max(e.time for e in failed) - first_failed <= LOSSY_SPREAD


def test_short_freeze_is_refuted_without_any_failure():
    """SIGSTOP for 3 s, less than the minimum suspicion timeout (4 s at n = 10): peers suspect
    the frozen node, and on SIGCONT it reads the queued accusations and refutes with a higher
    incarnation before any suspicion can expire."""
    n = 10
    net = build_cluster(n, seed=62)
    net.run_until(net.now + 5.0)
    frozen = net.by_name["n4"]
    incarnation = frozen.serf.memberlist.local_node.incarnation
    net.pause(frozen)
    net.run_until(net.now + 3.0)
    assert net.events("suspect", "n4")
    net.resume(frozen)
    net.run_until(net.now + 2 * SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n))
    assert net.events("refute", "n4")
    assert frozen.serf.memberlist.local_node.incarnation > incarnation
    assert false_failures(net, set()) == []
    assert all_alive(net, n)


def test_long_freeze_is_a_failure_then_a_rejoin_and_nothing_else():
    """Frozen for 30 s (past PI + max suspicion, 25 s): every peer declares it failed, not
    before PI + min; after SIGCONT it refutes and is alive everywhere again, and its overdue
    probe timers do not make anyone declare a healthy node failed."""
    n = 10
    net = build_cluster(n, seed=62)
    net.run_until(net.now + 5.0)
    frozen = net.by_name["n4"]
    paused_at = net.now
    net.pause(frozen)
    net.run_until(paused_at + 30.0)
    failed = net.events("member-failed", "n4")
    assert {e.observer for e in failed} == {f"n{i}" for i in range(n)} - {"n4"}
    assert all(paused_at + PI + suspicion_min(n) <= e.time
               <= paused_at + PI + SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n) + SPREAD
               for e in failed)
    net.resume(frozen)
    resumed_at = net.now
    while net.now < resumed_at + 5.0 and not all_alive(net, n):
        net.run_until(net.now + 0.1)
    assert all_alive(net, n), net.views()
    assert net.events("refute", "n4")
    net.run_until(resumed_at + 2 * SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n))
    assert false_failures(net, {"n4"}) == []
    assert all(e.time < resumed_at for e in net.events("member-failed"))
    assert all_alive(net, n)


def test_partition_six_four_fails_both_ways_and_reconnect_heals_it():
    """A 6 + 4 split for 60 s: longer than any suspicion (<= PI + 24 s at n = 10) and than
    GossipToTheDeadTime (30 s), so afterwards nobody gossips to the other side any more and only
    serf's reconnect loop (every ReconnectInterval = 30 s, one random failed member, with
    probability failed/alive) can join the halves again."""
    n = 10
    reconnect_interval = 30.0
    net = build_cluster(n, seed=61)
    net.run_until(net.now + 5.0)
    side_a = {f"n{i}" for i in range(6)}
    side_b = {f"n{i}" for i in range(6, n)}
    net.partition(side_a, side_b)
    cut_at = net.now
    net.run_until(cut_at + 60.0)

    failed = net.events("member-failed")
    pairs = {(e.observer, e.subject) for e in failed}
    assert pairs == {(o, s) for o in side_a for s in side_b} | \
        {(o, s) for o in side_b for s in side_a}
    for e in failed:
        same_side = side_a if e.observer in side_a else side_b
        first_suspected = min(s.time for s in net.events("suspect", e.subject)
                              if s.observer in same_side)
        assert cut_at + PI <= first_suspected
        assert first_suspected + suspicion_min(n) - SPREAD <= e.time <= \
            first_suspected + SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n) + SPREAD
    assert 60.0 - max(e.time - cut_at for e in failed) > GOSSIP_TO_THE_DEAD

    net.heal()
    healed_at = net.now
    while net.now < healed_at + reconnect_interval + 5.0 and not all_alive(net, n):
        net.run_until(net.now + 0.25)
    assert all_alive(net, n), net.views()
    assert net.events("member-leave") == []
    assert all(e.subject in side_b if e.observer in side_a else e.subject in side_a
               for e in net.events("member-join") if e.time > healed_at)


def test_wrongly_suspected_node_refutes_with_a_higher_incarnation():
    """Everything sent to n5 is lost for 3 s (one way: its own packets still go out), so peers'
    probes of it fail and they suspect it. Once it hears again, the accusation (gossiped, and
    carried in every probe of a suspect) reaches it and it refutes before the 4 s minimum."""
    n = 10
    net = build_cluster(n, seed=63)
    net.run_until(net.now + 5.0)
    accused = net.by_name["n5"]
    incarnation = accused.serf.memberlist.local_node.incarnation
    net.isolate_inbound("n5")
    net.run_until(net.now + 3.0)
    net.restore_inbound("n5")
    net.run_until(net.now + 2 * SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n))
    suspected = net.events("suspect", "n5")
    assert suspected
    refuted = net.events("refute", "n5")
    assert refuted and refuted[0].time - min(e.time for e in suspected) < suspicion_min(n)
    assert accused.serf.memberlist.local_node.incarnation > incarnation
    for node in net.nodes.values():
        member = node.serf.memberlist.node_map["n5"]
        assert member.incarnation == accused.serf.memberlist.local_node.incarnation
    assert false_failures(net, set()) == []
    assert all_alive(net, n)


def test_nacks_keep_a_healthy_prober_calm_when_the_target_is_dead():
    """Lifeguard: when a probe fails but the three indirect helpers each send a nack (they
    could not reach the target either), the fault is the target's, not ours: the prober's
    health score must not rise (without nacks it rises by 3 per failed probe).

    A helper nacks ProbeTimeout after the indirect ping, which itself goes out ProbeTimeout
    into the probe, so the nack arrives at 2 * ProbeTimeout + 2 latencies. With LAN's 0.5 s
    that is just after the ProbeInterval deadline (1 s), in memberlist as here, and the nacks
    are never counted; with ProbeTimeout = 0.4 s they arrive at ~0.8 s, in time."""
    n = 8
    timing = LAN.with_overrides(probe_timeout=0.4)
    assert 2 * timing.probe_timeout + 2 * 0.003 < timing.probe_interval
    net = build_cluster(n, seed=71, compression=False, trace=True,
                        node_kwargs={"timing": timing})
    net.run_until(net.now + 5.0)
    mark = len(net.trace)
    net.crash(net.by_name["n5"])
    end = net.now + 12.0
    while net.now < end:
        net.run_until(net.now + 0.5)
        assert [node.serf.memberlist.awareness.score for node in net.nodes.values()
                if node.up] == [0] * (n - 1)
    sent = [(p.src, m[0]) for p in net.trace[mark:] if p.transport == "udp"
            for m in udp_messages(p.data)]
    indirect = [src for src, kind in sent if kind == MsgType.INDIRECT_PING]
    nacks = [src for src, kind in sent if kind == MsgType.NACK]
    assert indirect and len(nacks) == len(indirect)
    assert {e.observer for e in net.events("member-failed", "n5")} == \
        {f"n{i}" for i in range(n)} - {"n5"}


def test_node_with_a_bad_network_causes_no_false_failures_about_others():
    """n2 hears nothing for 20 s. It accuses the others; they refute (they hear the accusation,
    n2's sends still go out). Its health score rises to the maximum, slowing its probing. The
    healthy nodes never declare each other failed, only n2, which really is unreachable."""
    n = 8
    net = build_cluster(n, seed=53)
    net.run_until(net.now + 5.0)
    net.isolate_inbound("n2")
    net.run_until(net.now + 20.0)
    assert net.by_name["n2"].serf.memberlist.awareness.score == 7
    accused = {e.subject for e in net.events("suspect", observer="n2")}
    assert accused
    assert {e.observer for e in net.events("refute")} >= accused
    healthy = {f"n{i}" for i in range(n)} - {"n2"}
    assert [e for e in net.events("member-failed") if e.observer in healthy
            and e.subject != "n2"] == []
    net.restore_inbound("n2")
    restored_at = net.now
    # The others hold n2 failed, and their news of it is long spent: it comes back by a
    # reconnect round (every 30 s * U(0.5, 1.5) per node, pyserf spreads them) or a push-pull
    # (every 30 s), whichever falls first.
    while net.now < restored_at + 45.0 and not all_alive(net, n):
        net.run_until(net.now + 0.1)
    assert all_alive(net, n), net.views()


def test_encrypted_cluster_refuses_a_wrong_key():
    """Every node holds the cluster key. A newcomer with another key cannot join (the push-pull
    cannot be decrypted); a member whose key goes wrong has every datagram dropped, is declared
    failed, and no healthy member is."""
    good, bad = Keyring([b"k" * 16]), Keyring([b"x" * 16])
    n = 5
    net = build_cluster(n, seed=81, node_kwargs={"keyring": good})
    net.run_until(net.now + 3.0)
    assert all_alive(net, n)
    assert all(node.serf.encryption_enabled() for node in net.nodes.values())

    intruder = net.add_node("intruder", "10.0.9.1", keyring=bad)
    outcome = net.join(intruder, net.by_name["n0"])
    net.run_until(net.now + 3.0)
    assert outcome and outcome[0].contacted == 0
    assert "No installed keys could decrypt the message" in outcome[0].errors[0]
    assert net.by_name["n0"].serf.memberlist.drops.counts["stream"] == 1
    assert all("intruder" not in view for name, view in net.views().items()
               if name != "intruder")
    net.crash(intruder)

    stale = net.by_name["n3"]
    stale.serf.memberlist.config.keyring = bad
    before = sum(node.serf.memberlist.drops.counts["packet (decrypt)"]
                 for node in net.nodes.values() if node.up)
    net.run_until(net.now + 2 * SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n))
    after = sum(node.serf.memberlist.drops.counts["packet (decrypt)"]
                for node in net.nodes.values() if node.up)
    assert after > before
    assert {e.observer for e in net.events("member-failed", "n3")} >= \
        {f"n{i}" for i in range(n)} - {"n3"}
    assert [e for e in net.events("member-failed") if e.observer != "n3"
            and e.subject != "n3"] == []


def test_tcp_fallback_bridges_udp_loss_until_tcp_is_refused():
    """Datagrams to n6 are lost but its memberlist port accepts streams: every failed UDP probe
    of it is rescued by the TCP fallback ping, so over a whole failure window (PI to start a
    probe, PI to fail it, the 4 s minimum suspicion) nobody suspects it. Once its port refuses
    connections too, the fallback fails and it is suspected, then declared failed between
    PI - ProbeTimeout + min and PI + max after the refusal (it cannot hear the accusation to
    refute it)."""
    n = 10
    net = build_cluster(n, seed=91)
    net.run_until(net.now + 5.0)
    net.isolate_inbound("n6", udp=True, tcp=False)
    window = PI + PI + suspicion_min(n)
    net.run_until(net.now + 2 * window)
    assert net.events("suspect", "n6") == []
    assert net.events("member-failed") == []
    net.refuse_tcp("n6")
    refused_at = net.now
    net.run_until(refused_at + PI + SUSPICION_MAX_TIMEOUT_MULT * suspicion_min(n) + SPREAD)
    assert net.events("suspect", "n6")
    failed = net.events("member-failed", "n6")
    assert {e.observer for e in failed} >= {f"n{i}" for i in range(n)} - {"n6"}
    # The first probe to miss its fallback opened it after the refusal: ProbeTimeout into a
    # probe that ends PI after it began.
    earliest = refused_at + PI - LAN.probe_timeout + suspicion_min(n)
    assert all(earliest <= e.time for e in failed)
    assert false_failures(net, {"n6"}) == []


def test_a_scenario_plays_without_automatic_cycle_collection(monkeypatch) -> None:
    """Full collections walked the whole N*N state again and again (~20% of a 500-node
    join's CPU); a run plays with them off and puts the collector back as it found it."""
    import gc

    from pyserf.sim import scenarios
    during: list[bool] = []
    play = scenarios._play

    def watched(run):
        during.append(gc.isenabled())
        return play(run)

    monkeypatch.setattr(scenarios, "_play", watched)
    assert gc.isenabled()
    report = scenarios.simulate(scenarios.Options(nodes=8, scenario="join"))
    assert report["converged"]
    assert during == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        scenarios.simulate(scenarios.Options(nodes=4, scenario="join"))
        assert not gc.isenabled()  # left off when it was off
    finally:
        gc.enable()
