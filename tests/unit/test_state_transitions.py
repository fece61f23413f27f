"""Membership state transitions, one message at a time, with exact expectations.

memberlist side (state.go aliveNode/suspectNode/deadNode/refute): incarnation ordering, refuting
accusations about ourselves, address conflicts and reclaim, the Lifeguard suspicion deadline
(min = floor_ms(suspicion_mult * max(1, log10(n)) * probe_interval), max = max_mult * min,
k = suspicion_mult - 2 confirmations, or 0 when fewer than k other peers could confirm).

serf side (serf.go handleNodeJoin/Leave/Update and the join/leave intents): member statuses
alive/leaving/left/failed, Lamport ordering of intents, reaping after the timeouts.

These tests drive the transition functions directly on a virtual clock; they are also the test
set of the mutation campaign (scripts/mutation) for these functions.
"""

from __future__ import annotations

import random

import pytest

from pyserf.memberlist import codec, fields
from pyserf.memberlist.codec import Alive, Dead, NodeStateKind, Suspect
from pyserf.memberlist.memberlist import Memberlist
from pyserf.memberlist.profiles import LAN
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import MemberlistConfig, Node
from pyserf.serf import messages as m
from pyserf.serf.config import SerfConfig
from pyserf.serf.core import Serf
from pyserf.serf.intents import MAX_RECENT_INTENTS
from pyserf.serf.members import MemberStatus
from pyserf.serf.messages import SerfMsg

ME = "me"
MY_ADDR = "10.0.0.1"
VSN = bytes((1, 5, 2, 2, 5, 5))  # protocol min/max/cur, delegate min/max/cur


def run_until(scheduler: Scheduler, until: float) -> None:
    """Run every timer due up to ``until`` on the virtual clock (bounded)."""
    for _ in range(100_000):
        wake = scheduler.next_wake()
        if wake is None or wake > until:
            return
        scheduler.run_due(wake)


class Recorder:
    """A memberlist delegate that records the notifications it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, buf, now, source=None) -> None:
        pass

    def broadcast_queues(self) -> tuple:
        return ()

    def local_state(self, join: bool, now: float) -> bytes:
        return b""

    def merge_remote_state(self, buf, join, now, source=None) -> None:
        pass

    def notify_join(self, node: Node, now: float) -> None:
        self.calls.append(("join", node.name, now))

    def notify_leave(self, node: Node, now: float) -> None:
        self.calls.append(("leave", node.name, node.state, now))

    def notify_update(self, node: Node, now: float) -> None:
        self.calls.append(("update", node.name, node.meta, now))

    def notify_conflict(self, existing: Node, other: Node, now: float) -> None:
        self.calls.append(("conflict", existing.name, existing.addr, other.name, other.addr,
                           other.port, other.meta, other.vsn, now))

    def ack_payload(self) -> bytes | None:
        return None

    def notify_ping_complete(self, node, rtt, payload, now) -> None:
        pass


def alive(name: str, inc: int, addr: str = "10.0.0.2", port: int = 7946, meta: bytes = b"",
          vsn: bytes = VSN) -> Alive:
    return Alive(inc, name, codec.ip_to_bytes(addr), port, meta, vsn)


class ML:
    """One memberlist machine at virtual time, started at t=0 with incarnation 1."""

    def __init__(self, eager_sync: bool = False, **timing: object) -> None:
        self.scheduler = Scheduler()
        self.delegate = Recorder()
        config = MemberlistConfig(ME, MY_ADDR, 7946, timing=LAN.with_overrides(**timing),
                                  eager_sync=eager_sync, expedite_gossip=False)
        self.ml = Memberlist(config, self.delegate, self.scheduler, random.Random(7))
        self.ml.start(0.0)
        self.delegate.calls.clear()  # our own join

    @property
    def calls(self) -> list[tuple]:
        return self.delegate.calls

    def node(self, name: str) -> Node:
        return self.ml.node_map[name]

    def queued(self, name: str) -> bytes | None:
        """The broadcast queued about ``name`` (one per node: newer replaces older)."""
        item = self.ml.broadcasts._by_key.get(name)
        return None if item is None else item.msg

    def add(self, *names: str, now: float = 0.0) -> None:
        for i, name in enumerate(names):
            self.ml._alive_node(alive(name, 1, f"10.0.1.{i + 1}"), now)
        self.calls.clear()

    def run(self, until: float) -> None:
        run_until(self.scheduler, until)


# -- alive ------------------------------------------------------------------------------------


def test_a_new_node_is_added_alive_notified_and_regossiped():
    h = ML()
    a = alive("a", 3, "10.0.0.2", 8000, b"meta")
    h.ml._alive_node(a, 5.0)
    n = h.node("a")
    assert (n.addr, n.port, n.meta, n.incarnation) == ("10.0.0.2", 8000, b"meta", 3)
    assert (n.state, n.state_change) == (NodeStateKind.ALIVE, 5.0)
    assert n.vsn == VSN
    assert {x.name for x in h.ml.nodes} == {ME, "a"}
    assert h.calls == [("join", "a", 5.0)]
    assert h.queued("a") == a.encode()


def test_new_nodes_land_at_random_positions_and_all_are_kept():
    """Each newcomer goes to a uniformly random index in [0, n] (probe order differs between
    nodes); with a fixed seed, 60 newcomers must hit the front, the end and places between."""
    h = ML()
    names = [f"n{i}" for i in range(60)]
    landed = []
    for name in names:
        h.ml._alive_node(alive(name, 1), 0.0)
        landed.append([x.name for x in h.ml.nodes].index(name))
    assert sorted(x.name for x in h.ml.nodes) == sorted([ME, *names])
    assert 0 in landed
    assert any(i == k + 1 for k, i in enumerate(landed))  # at the end (k+2 nodes by then)
    assert len(set(landed)) > 20


def test_an_alive_with_an_old_or_equal_incarnation_is_ignored():
    h = ML()
    h.ml._alive_node(alive("a", 5, meta=b"one"), 1.0)
    h.calls.clear()
    h.ml.broadcasts.reset(5)
    for inc in (4, 5):
        h.ml._alive_node(alive("a", inc, meta=b"two"), 2.0)
        assert h.node("a").meta == b"one"
        assert h.node("a").incarnation == 5
    assert h.calls == []
    assert h.queued("a") is None
    h.ml._alive_node(alive("a", 6, meta=b"two"), 3.0)
    assert (h.node("a").incarnation, h.node("a").meta) == (6, b"two")
    assert h.calls == [("update", "a", b"two", 3.0)]
    # Still alive: the time of the last state change is not moved by an update.
    assert h.node("a").state_change == 1.0


def test_a_newer_alive_with_the_same_meta_is_regossiped_without_events():
    h = ML()
    h.ml._alive_node(alive("a", 1), 1.0)
    h.calls.clear()
    newer = alive("a", 2)
    h.ml._alive_node(newer, 2.0)
    assert h.calls == []
    assert h.queued("a") == newer.encode()
    assert h.node("a").incarnation == 2


def test_alive_versions_are_recorded_and_bad_ones_refused():
    h = ML()
    h.ml._alive_node(alive("a", 1, vsn=bytes((1, 5, 3, 2, 5, 4))), 1.0)
    assert h.node("a").vsn == bytes((1, 5, 3, 2, 5, 4))
    h.ml._alive_node(alive("a", 2, vsn=bytes((1, 5, 2, 2, 5, 5))), 2.0)
    assert h.node("a").vsn == VSN
    h.calls.clear()
    h.ml._alive_node(alive("b", 1, vsn=bytes((3, 1, 2, 2, 5, 5))), 3.0)  # min > max
    assert "b" not in h.ml.node_map
    assert h.calls == []
    h.ml._alive_node(alive("a", 3, vsn=b"\x01"), 3.0)  # too short
    assert h.node("a").incarnation == 2


def test_an_undecodable_address_is_ignored():
    h = ML()
    h.ml._alive_node(Alive(1, "a", b"\x01\x02\x03", 7946, b"", VSN), 1.0)
    assert "a" not in h.ml.node_map
    assert h.calls == []


def test_a_dead_node_that_comes_back_rejoins():
    h = ML()
    h.add("a")
    h.ml._dead_node(Dead(1, "a", ME), 2.0)
    h.calls.clear()
    h.ml._alive_node(alive("a", 2, "10.0.1.1"), 3.0)
    n = h.node("a")
    assert (n.state, n.state_change, n.incarnation) == (NodeStateKind.ALIVE, 3.0, 2)
    assert h.calls == [("join", "a", 3.0)]


def test_an_alive_clears_a_pending_suspicion():
    h = ML()
    h.add("a", "b", "c")
    h.ml._suspect_node(Suspect(1, "a", "b"), 1.0)
    assert "a" in h.ml._suspicions
    timer = h.ml._suspicions["a"].timer
    h.ml._alive_node(alive("a", 2, "10.0.1.1"), 2.0)
    assert "a" not in h.ml._suspicions
    assert timer.cancelled
    assert h.node("a").state == NodeStateKind.ALIVE
    h.run(100.0)
    assert h.node("a").state == NodeStateKind.ALIVE
    assert [c for c in h.calls if c[0] == "leave"] == []


def test_a_conflicting_address_for_a_live_node_is_reported_not_taken():
    h = ML()
    h.ml._alive_node(alive("a", 1, "10.0.0.2", 7946), 1.0)
    h.calls.clear()
    other_vsn = bytes((1, 5, 3, 2, 5, 5))
    h.ml._alive_node(alive("a", 9, "10.0.0.3", 7946, b"theirs", vsn=other_vsn), 2.0)
    assert h.calls == [
        ("conflict", "a", "10.0.0.2", "a", "10.0.0.3", 7946, b"theirs", other_vsn, 2.0)]
    assert (h.node("a").addr, h.node("a").incarnation) == ("10.0.0.2", 1)
    h.calls.clear()
    h.ml._alive_node(alive("a", 9, "10.0.0.2", 7947), 2.0)  # same IP, other port
    assert h.calls[0][:6] == ("conflict", "a", "10.0.0.2", "a", "10.0.0.2", 7947)
    assert h.node("a").port == 7946


def test_a_left_node_may_come_back_at_a_new_address_even_at_the_same_incarnation():
    h = ML()
    h.ml._alive_node(alive("a", 4, "10.0.0.2"), 1.0)
    h.ml._dead_node(Dead(4, "a", "a"), 2.0)  # from itself: left
    assert h.node("a").state == NodeStateKind.LEFT
    h.calls.clear()
    h.ml._alive_node(alive("a", 4, "10.0.0.9", 7000), 3.0)
    n = h.node("a")
    assert (n.addr, n.port, n.state, n.incarnation) == ("10.0.0.9", 7000, NodeStateKind.ALIVE, 4)
    assert h.calls == [("join", "a", 3.0)]


def test_a_retransmitted_old_record_is_judged_again_once_the_member_moved():
    """A record found to be old news is remembered so its retransmissions return at once;
    after the member moved to a new address the same record names the old one, a conflict."""
    h = ML()
    old = alive("a", 4, "10.0.0.2")
    h.ml._alive_node(old, 1.0)
    h.ml._alive_node(old, 1.5)  # old news now
    assert h.node("a").old_news is old
    h.ml._dead_node(Dead(4, "a", "a"), 2.0)  # left: the name may move
    h.ml._alive_node(alive("a", 4, "10.0.0.9"), 3.0)
    assert h.node("a").old_news is None
    h.calls.clear()
    h.ml._alive_node(old, 4.0)
    assert [c[0] for c in h.calls] == ["conflict"]
    assert h.node("a").addr == "10.0.0.9"


@pytest.mark.parametrize(("reclaim", "at", "taken"), [
    (0.0, 100.0, False),   # reclaim disabled: a dead node keeps its address
    (10.0, 12.0, False),   # dead for 10 s exactly: not longer than the reclaim time
    (10.0, 12.5, True),    # dead for 10.5 s > 10 s: the name may move
    (0.5, 2.6, True),      # any positive reclaim time counts, even under a second
])
def test_a_dead_node_address_is_reclaimed_only_after_the_reclaim_time(reclaim, at, taken):
    h = ML(dead_node_reclaim_time=reclaim)
    h.ml._alive_node(alive("a", 4, "10.0.0.2"), 1.0)
    h.ml._dead_node(Dead(4, "a", ME), 2.0)
    h.calls.clear()
    h.ml._alive_node(alive("a", 5, "10.0.0.9"), at)
    if taken:
        assert h.node("a").addr == "10.0.0.9"
        assert h.calls == [("join", "a", at)]
    else:
        assert h.node("a").addr == "10.0.0.2"
        assert h.calls[0][0] == "conflict"
        assert h.node("a").state == NodeStateKind.DEAD


# -- refutation ------------------------------------------------------------------------------


def test_an_alive_about_us_with_other_meta_is_refuted_past_its_incarnation():
    h = ML()
    me = h.node(ME)
    assert me.incarnation == 1
    h.ml._alive_node(alive(ME, 5, MY_ADDR, meta=b"forged"), 1.0)
    assert me.incarnation == 6
    assert me.meta == b""
    assert h.ml.awareness.score == 1
    refute = Alive(6, ME, codec.ip_to_bytes(MY_ADDR), 7946, b"", me.vsn)
    assert h.queued(ME) == refute.encode()
    assert h.calls == []


def test_an_alive_about_us_that_matches_our_state_is_not_refuted():
    h = ML()
    me = h.node(ME)
    h.ml._alive_node(Alive(1, ME, codec.ip_to_bytes(MY_ADDR), 7946, b"", me.vsn), 1.0)
    assert me.incarnation == 1
    assert h.ml.awareness.score == 0
    # Same incarnation but other versions: refuted.
    other = bytes((1, 5, 3, *me.vsn[3:]))
    h.ml._alive_node(Alive(1, ME, codec.ip_to_bytes(MY_ADDR), 7946, b"", other), 2.0)
    assert me.incarnation == 2
    # An older incarnation about us is ignored outright.
    h.ml._alive_node(Alive(1, ME, codec.ip_to_bytes(MY_ADDR), 7946, b"x", me.vsn), 3.0)
    assert me.incarnation == 2
    assert h.ml.awareness.score == 1


def test_after_leaving_alives_about_us_are_ignored():
    h = ML()
    h.ml.left = True
    h.ml._alive_node(alive(ME, 9, MY_ADDR, meta=b"x"), 1.0)
    assert h.node(ME).incarnation == 1
    assert h.ml.awareness.score == 0
    h.ml._alive_node(alive("a", 1), 1.0)  # others are still learned
    assert "a" in h.ml.node_map


def test_refute_takes_the_larger_of_ours_plus_one_and_theirs_plus_one():
    h = ML()
    me = h.node(ME)
    h.ml._refute(me, 0, 1.0)  # ours (1) + 1
    assert me.incarnation == h.ml._incarnation == 2
    h.ml._refute(me, 2, 1.0)  # theirs equals ours + 1: must go past it
    assert me.incarnation == 3
    h.ml._refute(me, 10, 1.0)
    assert me.incarnation == 11
    assert h.ml.awareness.score == 3


def test_refute_wraps_the_uint32_incarnation():
    h = ML()
    me = h.node(ME)
    h.ml._incarnation = fields.U32_MAX
    h.ml._refute(me, 0, 1.0)
    # (2^32-1)+1 wraps to 0, and the accusation at 0 must be passed: 1.
    assert me.incarnation == 1
    h.ml._incarnation = 5
    h.ml._refute(me, fields.U32_MAX, 1.0)
    assert me.incarnation == 0


# -- suspicion -------------------------------------------------------------------------------


def test_suspect_marks_the_node_and_regossips_once():
    h = ML()
    h.add("a", "b", "c", "d")  # 5 nodes with us
    s = Suspect(1, "a", "b")
    h.ml._suspect_node(s, 10.0)
    n = h.node("a")
    assert (n.state, n.state_change, n.incarnation) == (NodeStateKind.SUSPECT, 10.0, 1)
    assert h.queued("a") == s.encode()
    assert h.calls == []


def test_suspicion_timeout_with_enough_peers_is_the_maximum_then_shrinks():
    """n=5 (<10 so log10 scale is 1): min = 4 * 1 * 1.0 = 4.0 s, max = 6 * 4 = 24 s, k = 2."""
    h = ML()
    h.add("a", "b", "c", "d")
    # Accusations and confirmations come in as datagrams: this node hears its peers (one
    # that heard no one keeps its verdict to itself, tests/unit/test_isolated_verdicts.py).
    for t in (9.0, 10.0, 11.0, 12.0):
        h.ml._heard(t)
    h.ml._suspect_node(Suspect(1, "a", "b"), 10.0)
    sus = h.ml._suspicions["a"]
    assert (sus.k, sus.min, sus.max) == (2, 4.0, 24.0)
    assert sus.deadline == 34.0
    assert sus.timer.when == 34.0
    # One confirmation: 24 - 20*log(2)/log(3) = 11.3814... -> 11.381
    confirm = Suspect(1, "a", "c")
    h.ml.broadcasts.reset(11.0)
    h.ml._suspect_node(confirm, 11.0)
    assert sus.deadline == pytest.approx(21.381, abs=1e-9)
    assert sus.timer.when == sus.deadline
    assert h.queued("a") == confirm.encode()  # a new confirmation is re-gossiped
    # The same confirmer again: nothing new, nothing re-gossiped.
    h.ml.broadcasts.reset(12.0)
    h.ml._suspect_node(confirm, 12.0)
    assert h.queued("a") is None
    h.run(21.38)
    assert h.node("a").state == NodeStateKind.SUSPECT
    h.run(21.381)
    assert h.node("a").state == NodeStateKind.DEAD
    assert h.calls == [("leave", "a", NodeStateKind.DEAD, 21.381)]
    assert h.queued("a") == Dead(1, "a", ME).encode()
    assert "a" not in h.ml._suspicions


@pytest.mark.parametrize(("others", "k", "deadline"), [
    (2, 0, 4.0),   # n=3: n-2 = 1 < k=2, nobody could confirm: the minimum
    (3, 2, 24.0),  # n=4: n-2 = 2 peers can confirm: start at the maximum
])
def test_suspicion_k_depends_on_how_many_peers_could_confirm(others, k, deadline):
    h = ML()
    h.add(*[f"p{i}" for i in range(others)])
    h.ml._suspect_node(Suspect(1, "p0", "p1"), 0.0)
    sus = h.ml._suspicions["p0"]
    assert sus.k == k
    assert sus.deadline == deadline
    h.run(deadline - 0.001)
    assert h.node("p0").state == NodeStateKind.SUSPECT
    h.run(deadline)
    assert h.node("p0").state == NodeStateKind.DEAD


def test_suspicion_minimum_scales_with_log10_of_the_cluster_size():
    """n=20: min = floor_ms(4 * log10(20) * 1.0) = 5.204 s; max = 6 * 5.204 = 31.224 s."""
    h = ML()
    h.add(*[f"p{i}" for i in range(19)])
    h.ml._suspect_node(Suspect(1, "p0", "p1"), 0.0)
    sus = h.ml._suspicions["p0"]
    assert sus.min == 5.204
    assert sus.max == pytest.approx(31.224, abs=1e-9)
    assert sus.k == 2


def test_suspect_is_ignored_for_unknown_older_or_non_alive_nodes():
    h = ML()
    h.add("a", "b", "c")
    h.ml._suspect_node(Suspect(1, "zz", "b"), 1.0)
    assert "zz" not in h.ml.node_map
    h.ml._alive_node(alive("a", 5, "10.0.1.1"), 1.0)
    h.ml.broadcasts.reset(1.0)
    h.ml._suspect_node(Suspect(4, "a", "b"), 1.0)
    assert h.node("a").state == NodeStateKind.ALIVE
    assert h.queued("a") is None
    h.ml._dead_node(Dead(5, "a", ME), 2.0)
    h.ml.broadcasts.reset(3.0)
    h.ml._suspect_node(Suspect(5, "a", "b"), 3.0)
    assert h.node("a").state == NodeStateKind.DEAD
    assert "a" not in h.ml._suspicions
    assert h.queued("a") is None


def test_a_suspect_at_a_newer_incarnation_takes_it():
    h = ML()
    h.add("a", "b", "c")
    h.ml._suspect_node(Suspect(7, "a", "b"), 1.0)
    assert h.node("a").incarnation == 7
    assert h.node("a").state == NodeStateKind.SUSPECT


def test_a_suspicion_about_us_is_refuted():
    h = ML()
    h.add("a", "b", "c")
    h.ml._suspect_node(Suspect(4, ME, "a"), 1.0)
    me = h.node(ME)
    assert (me.state, me.incarnation) == (NodeStateKind.ALIVE, 5)
    assert ME not in h.ml._suspicions
    assert h.queued(ME) == Alive(5, ME, codec.ip_to_bytes(MY_ADDR), 7946, b"", me.vsn).encode()
    assert h.ml.awareness.score == 1


def test_a_refuted_suspicion_does_not_expire_into_dead():
    h = ML()
    h.add("a", "b", "c", "d")
    h.ml._suspect_node(Suspect(1, "a", "b"), 0.0)
    h.ml._alive_node(alive("a", 2, "10.0.1.1"), 1.0)
    h.ml._suspect_node(Suspect(2, "a", "b"), 2.0)  # a new suspicion, a new deadline at 26
    h.run(25.9)
    assert h.node("a").state == NodeStateKind.SUSPECT
    h.run(26.0)
    assert h.node("a").state == NodeStateKind.DEAD


def test_arm_suspicion_moves_the_timer_and_keeps_its_callback():
    h = ML()
    h.add("a", "b", "c", "d")
    h.ml._suspect_node(Suspect(1, "a", "b"), 0.0)
    sus = h.ml._suspicions["a"]
    old = sus.timer
    sus.deadline = 3.0
    h.ml._arm_suspicion("a", sus)
    assert old.cancelled
    assert sus.timer is not old
    assert (sus.timer.when, sus.timer.callback) == (3.0, old.callback)
    sus.timer = None
    h.ml._arm_suspicion("a", sus)  # no timer (already fired): nothing to move
    assert sus.timer is None


# -- dead / left ------------------------------------------------------------------------------


def test_dead_marks_notifies_and_regossips():
    h = ML()
    h.add("a")
    d = Dead(3, "a", "b")
    h.ml._dead_node(d, 4.0)
    n = h.node("a")
    assert (n.state, n.incarnation, n.state_change) == (NodeStateKind.DEAD, 3, 4.0)
    assert h.calls == [("leave", "a", NodeStateKind.DEAD, 4.0)]
    assert h.queued("a") == d.encode()
    # A second death is not news.
    h.ml.broadcasts.reset(5.0)
    h.ml._dead_node(Dead(4, "a", "b"), 5.0)
    assert len(h.calls) == 1
    assert h.queued("a") is None
    assert h.node("a").incarnation == 3


def test_dead_from_the_node_itself_is_a_leave():
    h = ML()
    h.add("a")
    h.ml._dead_node(Dead(1, "a", "a"), 4.0)
    assert h.node("a").state == NodeStateKind.LEFT
    assert h.calls == [("leave", "a", NodeStateKind.LEFT, 4.0)]


def test_dead_for_unknown_or_older_incarnations_is_ignored():
    h = ML()
    h.add("a")
    h.ml._alive_node(alive("a", 5, "10.0.1.1"), 1.0)
    h.calls.clear()
    h.ml._dead_node(Dead(1, "zz", "b"), 2.0)
    assert "zz" not in h.ml.node_map
    h.ml._dead_node(Dead(4, "a", "b"), 2.0)
    assert h.node("a").state == NodeStateKind.ALIVE
    assert h.calls == []
    h.ml._dead_node(Dead(5, "a", "b"), 2.0)  # the same incarnation kills
    assert h.node("a").state == NodeStateKind.DEAD


def test_dead_cancels_the_suspicion_timer():
    h = ML()
    h.add("a", "b", "c", "d")
    h.ml._suspect_node(Suspect(1, "a", "b"), 0.0)
    timer = h.ml._suspicions["a"].timer
    h.ml._dead_node(Dead(1, "a", "c"), 1.0)
    assert timer.cancelled
    assert "a" not in h.ml._suspicions
    assert h.calls == [("leave", "a", NodeStateKind.DEAD, 1.0)]


def test_a_dead_message_about_us_is_refuted_unless_we_are_leaving():
    h = ML()
    h.add("a")
    h.ml._dead_node(Dead(3, ME, "a"), 1.0)
    me = h.node(ME)
    assert (me.state, me.incarnation) == (NodeStateKind.ALIVE, 4)
    assert h.calls == []
    assert h.ml.awareness.score == 1
    # While leaving, our own dead message is the leave: gossiped with its completion callback.
    done: list[bool] = []
    h.ml.left = True
    leave = Dead(4, ME, ME)
    h.ml._dead_node(leave, 2.0, on_finished=done.append)
    assert me.state == NodeStateKind.LEFT
    assert h.queued(ME) == leave.encode()
    assert h.calls == [("leave", ME, NodeStateKind.LEFT, 2.0)]
    h.ml.broadcasts.reset(3.0)
    assert done == [3.0]  # finished at the time of the reset that dropped it


def test_alive_passes_its_completion_callback_to_the_broadcast():
    h = ML()
    done: list[bool] = []
    h.ml._alive_node(alive("a", 1), 1.0, on_finished=done.append)
    h.ml.broadcasts.reset(2.0)
    assert done == [2.0]


def test_eager_sync_starts_when_a_node_joins_or_rejoins():
    h = ML(eager_sync=True)
    assert h.ml._eager_timer is None
    h.ml._alive_node(alive("a", 1), 1.0)
    assert h.ml._eager_timer is not None
    assert 1.3 <= h.ml._eager_timer.when <= 1.8  # 0.3-0.8 s after the news
    assert h.ml._eager_until == 3.0


def test_no_eager_sync_for_our_own_bootstrap():
    h = ML(eager_sync=True)
    assert h.ml._eager_timer is None


# -- serf member statuses --------------------------------------------------------------------

OTHER_VSN = bytes((1, 5, 3, 2, 5, 4))


class SF:
    """One serf machine (not started: no timers of its own) fed memberlist notifications."""

    def __init__(self, **config: object) -> None:
        self.scheduler = Scheduler()
        ml_config = MemberlistConfig(ME, MY_ADDR, 7946, eager_sync=False, expedite_gossip=False)
        self.serf = Serf(SerfConfig(ME, **config), ml_config, self.scheduler, random.Random(3))

    def node(self, name: str, addr: str = "10.0.0.2", port: int = 7946,
             tags: dict[str, str] | None = None, vsn: bytes = OTHER_VSN) -> Node:
        n = Node(name, addr, port, m.encode_tags(tags or {}, 5), 1, NodeStateKind.ALIVE)
        n.set_vsn(vsn)
        return n

    def status(self, name: str) -> MemberStatus:
        return self.serf.members[name].member.status

    def events(self) -> list[tuple[str, list[str]]]:
        return [(e.type, [x.name for x in e.members]) for e in self.serf.events()]

    def run(self, until: float) -> None:
        run_until(self.scheduler, until)


def test_a_joining_member_is_alive_with_its_address_tags_and_versions():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a", "10.0.0.2", 8000, {"role": "web"}), 1.0)
    ms = h.serf.members["a"]
    mem = ms.member
    assert (mem.addr, mem.port, mem.tags, mem.status) == (
        "10.0.0.2", 8000, {"role": "web"}, MemberStatus.ALIVE)
    assert (mem.protocol_min, mem.protocol_max, mem.protocol_cur) == (1, 5, 3)
    assert (mem.delegate_min, mem.delegate_max, mem.delegate_cur) == (2, 5, 4)
    assert (ms.status_ltime, ms.leave_time) == (0, 0.0)
    events = h.serf.events()
    assert [(e.type, e.members) for e in events] == [("member-join", [mem])]
    assert events[0].members[0] is not mem  # the event carries a copy


def test_a_join_intent_seen_before_the_member_sets_its_status_time():
    h = SF()
    assert h.serf._handle_join_intent(m.Join(7, "a"), 1.0) is True
    h.serf.memberlist.delegate.notify_join(h.node("a"), 2.0)
    assert h.serf.members["a"].status_ltime == 7
    assert h.status("a") == MemberStatus.ALIVE


def test_a_leave_intent_seen_before_the_member_makes_it_leaving():
    h = SF()
    h.serf._handle_join_intent(m.Join(5, "a"), 1.0)
    assert h.serf._handle_leave_intent(m.Leave(7, "a"), 1.0) is True
    h.serf.memberlist.delegate.notify_join(h.node("a"), 2.0)
    assert h.status("a") == MemberStatus.LEAVING
    assert h.serf.members["a"].status_ltime == 7


def test_recent_intents_keep_the_newest_per_node_only():
    h = SF()
    s = h.serf
    assert s._upsert_intent("a", SerfMsg.JOIN, 5, 1.0) is True
    assert s._upsert_intent("a", SerfMsg.LEAVE, 5, 2.0) is False  # not newer
    assert s._upsert_intent("a", SerfMsg.LEAVE, 4, 2.0) is False
    assert s.recent_intents["a"] == (SerfMsg.JOIN, 5, 1.0)
    assert s._recent_intent("a", SerfMsg.JOIN) == 5
    assert s._recent_intent("a", SerfMsg.LEAVE) is None
    assert s._recent_intent("b", SerfMsg.JOIN) is None
    assert s._upsert_intent("b", SerfMsg.JOIN, 1, 2.0) is True
    assert s._upsert_intent("a", SerfMsg.LEAVE, 6, 3.0) is True
    assert list(s.recent_intents) == ["b", "a"]  # the updated one moves to the end
    assert s._recent_intent("a", SerfMsg.LEAVE) == 6


def test_recent_intents_are_bounded_oldest_first():
    h = SF()
    s = h.serf
    for i in range(MAX_RECENT_INTENTS + 2):
        s._upsert_intent(f"n{i}", SerfMsg.JOIN, 1, 0.0)
    assert len(s.recent_intents) == MAX_RECENT_INTENTS
    assert "n0" not in s.recent_intents and "n1" not in s.recent_intents
    assert "n2" in s.recent_intents
    assert f"n{MAX_RECENT_INTENTS + 1}" in s.recent_intents


def test_an_alive_member_that_disappears_has_failed():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.events()
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 9.0)
    ms = h.serf.members["a"]
    assert (ms.member.status, ms.leave_time) == (MemberStatus.FAILED, 9.0)
    assert h.serf.failed_members == [ms]
    assert h.serf.left_members == []
    assert h.events() == [("member-failed", ["a"])]


def test_a_leaving_member_that_disappears_has_left():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(3, "a"), 2.0)
    assert h.status("a") == MemberStatus.LEAVING
    h.serf.events()
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 9.0)
    ms = h.serf.members["a"]
    assert (ms.member.status, ms.leave_time) == (MemberStatus.LEFT, 9.0)
    assert h.serf.left_members == [ms]
    assert h.serf.failed_members == []
    assert h.events() == [("member-leave", ["a"])]


def test_leave_notifications_for_unknown_or_gone_members_change_nothing():
    h = SF()
    h.serf.memberlist.delegate.notify_leave(h.node("zz"), 1.0)
    assert "zz" not in h.serf.members
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    h.serf.events()
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 3.0)  # already failed
    assert h.status("a") == MemberStatus.FAILED
    assert h.serf.members["a"].leave_time == 2.0
    assert len(h.serf.failed_members) == 1
    assert h.events() == []


@pytest.mark.parametrize("how", ["failed", "left"])
def test_a_failed_or_left_member_that_comes_back_is_alive_again(how):
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a", "10.0.0.2"), 1.0)
    if how == "left":
        h.serf._handle_leave_intent(m.Leave(3, "a"), 2.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 3.0)
    h.serf.events()
    h.serf.memberlist.delegate.notify_join(h.node("a", "10.0.0.9", 7000, {"v": "2"}, vsn=VSN), 4.0)
    ms = h.serf.members["a"]
    mem = ms.member
    assert (mem.status, mem.addr, mem.port, mem.tags) == (
        MemberStatus.ALIVE, "10.0.0.9", 7000, {"v": "2"})
    assert (mem.protocol_cur, mem.delegate_cur) == (2, 5)
    assert ms.leave_time == 0.0
    assert h.serf.failed_members == [] and h.serf.left_members == []
    assert h.events() == [("member-join", ["a"])]


def test_a_join_for_an_alive_member_keeps_other_members_lists():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_join(h.node("b"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("b"), 2.0)
    h.serf.memberlist.delegate.notify_join(h.node("a", "10.0.0.3"), 3.0)
    assert [x.member.name for x in h.serf.failed_members] == ["b"]
    assert h.serf.members["a"].member.addr == "10.0.0.3"


def test_an_update_changes_address_tags_and_versions():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a", tags={"v": "1"}), 1.0)
    h.serf.events()
    h.serf.memberlist.delegate.notify_update(
        h.node("a", "10.0.0.7", 7001, {"v": "2"}, vsn=VSN), 2.0)
    mem = h.serf.members["a"].member
    assert (mem.addr, mem.port, mem.tags, mem.protocol_cur, mem.delegate_cur) == (
        "10.0.0.7", 7001, {"v": "2"}, 2, 5)
    assert mem.status == MemberStatus.ALIVE
    assert h.events() == [("member-update", ["a"])]
    h.serf.memberlist.delegate.notify_update(h.node("zz"), 3.0)
    assert "zz" not in h.serf.members
    assert h.events() == []


def test_leave_intents_are_ordered_by_lamport_time():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_join_intent(m.Join(5, "a"), 1.0)
    assert h.serf.members["a"].status_ltime == 5
    assert h.serf._handle_leave_intent(m.Leave(5, "a"), 2.0) is False  # not newer
    assert h.status("a") == MemberStatus.ALIVE
    assert h.serf._handle_leave_intent(m.Leave(6, "a"), 2.0) is True
    assert h.status("a") == MemberStatus.LEAVING
    assert h.serf.members["a"].status_ltime == 6
    assert h.serf.clock.time == 7  # witnessed: past the newest time seen


def test_a_join_intent_cancels_a_leave_in_progress():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(6, "a"), 2.0)
    assert h.serf._handle_join_intent(m.Join(6, "a"), 2.0) is False  # not newer
    assert h.status("a") == MemberStatus.LEAVING
    assert h.serf._handle_join_intent(m.Join(8, "a"), 2.0) is True
    assert h.status("a") == MemberStatus.ALIVE
    assert h.serf.members["a"].status_ltime == 8
    assert h.serf.clock.time == 9


def test_a_join_intent_does_not_revive_a_failed_member():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    assert h.serf._handle_join_intent(m.Join(4, "a"), 3.0) is True
    assert h.status("a") == MemberStatus.FAILED
    assert h.serf.members["a"].status_ltime == 4


def test_a_join_intent_for_an_unknown_member_is_remembered_once():
    h = SF()
    assert h.serf._handle_join_intent(m.Join(4, "a"), 3.0) is True
    assert h.serf._handle_join_intent(m.Join(4, "a"), 3.0) is False
    assert h.serf.recent_intents["a"] == (SerfMsg.JOIN, 4, 3.0)
    assert h.serf.clock.time == 5
    assert h.serf._handle_leave_intent(m.Leave(3, "a"), 3.0) is False
    assert h.serf.recent_intents["a"] == (SerfMsg.JOIN, 4, 3.0)


def test_a_leave_intent_for_a_failed_member_makes_it_left_at_once():
    """force-leave: serf moves a failed member to left and reports it (forced)."""
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_join(h.node("b"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    h.serf.memberlist.delegate.notify_leave(h.node("b"), 2.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(3, "a"), 3.0) is True
    ms = h.serf.members["a"]
    assert ms.member.status == MemberStatus.LEFT
    assert [x.member.name for x in h.serf.failed_members] == ["b"]
    assert h.serf.left_members == [ms]
    assert h.events() == [("member-leave", ["a"])]


def test_leave_intents_for_leaving_or_left_members_are_accepted_without_events():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(3, "a"), 2.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(4, "a"), 2.0) is True
    assert h.status("a") == MemberStatus.LEAVING
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 3.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(5, "a"), 4.0) is True
    assert h.status("a") == MemberStatus.LEFT
    assert h.serf.members["a"].status_ltime == 5
    assert h.events() == []


def test_a_leave_intent_about_ourselves_while_alive_is_refuted_with_a_join():
    h = SF()
    h.serf.start(0.0)
    h.serf.events()
    h.serf.intent_broadcasts.reset(0.0)
    before = h.serf.members[ME].status_ltime
    assert h.serf._handle_leave_intent(m.Leave(10, ME), 1.0) is False
    assert h.status(ME) == MemberStatus.ALIVE
    # The refuting join carries a time past the leave's (witnessed to 11).
    assert h.serf.members[ME].status_ltime == 11 > before
    assert h.serf.intent_broadcasts._order
    queued = [item.msg for item in h.serf.intent_broadcasts._order.values()]
    assert queued == [m.Join(11, ME).encode()]


def test_a_leave_intent_about_ourselves_while_leaving_is_taken():
    h = SF()
    h.serf.start(0.0)
    h.serf.state = h.serf.state.LEAVING
    assert h.serf._handle_leave_intent(m.Leave(10, ME), 1.0) is True
    assert h.status(ME) == MemberStatus.LEAVING


def test_a_pruning_leave_of_a_leaving_member_waits_for_the_leave_to_propagate():
    """The erase waits broadcast_timeout + leave_propagate_delay = 5 + 1 = 6 s."""
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(3, "a", prune=True), 10.0) is True
    assert h.status("a") == MemberStatus.LEAVING
    h.run(15.999)
    assert "a" in h.serf.members
    h.run(16.0)
    assert "a" not in h.serf.members
    assert h.events() == [("member-reap", ["a"])]


def test_a_pruning_leave_of_a_failed_member_erases_it_at_once():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    h.serf.coordinate_cache["a"] = h.serf.coordinates.coord.copy()
    h.serf.coordinates.latency["a"] = [0.1]
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(3, "a", prune=True), 3.0) is True
    assert "a" not in h.serf.members
    assert "a" not in h.serf.coordinate_cache
    assert "a" not in h.serf.coordinates.latency
    assert h.serf.left_members == [] and h.serf.failed_members == []
    assert h.events() == [("member-leave", ["a"]), ("member-reap", ["a"])]


def test_a_pruning_leave_of_a_left_member_erases_it_at_once():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(3, "a"), 2.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 3.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(4, "a", prune=True), 4.0) is True
    assert "a" not in h.serf.members
    assert h.serf.left_members == []
    assert h.events() == [("member-reap", ["a"])]


def test_a_delayed_prune_spares_a_member_replaced_meanwhile():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(3, "a", prune=True), 10.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 11.0)
    h.serf._handle_leave_intent(m.Leave(4, "a", prune=True), 12.0)  # erased now
    h.serf.memberlist.delegate.notify_join(h.node("a"), 13.0)  # back, as a new member state
    h.serf.events()
    h.run(20.0)  # the first prune's timer (at 16) must leave the new state alone
    assert h.status("a") == MemberStatus.ALIVE
    assert h.events() == []


def test_reap_erases_failed_and_left_members_only_after_their_timeouts():
    h = SF(reconnect_timeout=100.0, tombstone_timeout=50.0, recent_intent_timeout=30.0)
    s = h.serf
    for name in ("f", "l"):
        s.memberlist.delegate.notify_join(h.node(name), 0.0)
    s._handle_leave_intent(m.Leave(2, "l"), 0.0)
    s.memberlist.delegate.notify_leave(h.node("f"), 10.0)
    s.memberlist.delegate.notify_leave(h.node("l"), 10.0)
    s._upsert_intent("x", SerfMsg.JOIN, 1, 10.0)
    s.events()
    s._reap(40.0)  # intent age exactly 30: kept
    assert "x" in s.recent_intents
    s._reap(40.001)
    assert "x" not in s.recent_intents
    s._reap(60.0)  # left for exactly 50 s: kept
    assert "l" in s.members
    s._reap(60.5)
    assert "l" not in s.members and s.left_members == []
    assert h.events() == [("member-reap", ["l"])]
    s._reap(110.0)  # failed for exactly 100 s: kept
    assert [x.member.name for x in s.failed_members] == ["f"]
    s._reap(110.5)
    assert "f" not in s.members and s.failed_members == []
    assert h.events() == [("member-reap", ["f"])]


# -- the log lines of the transitions (serf's texts: monitor and log readers rely on them) ----


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if r.name.startswith("pyserf")]
    caplog.clear()
    return lines


def test_memberlist_transitions_log_what_memberlist_logs(caplog):
    caplog.set_level("DEBUG", logger="pyserf")
    h = ML()
    h.add("a", "b", "c", "d")  # a at 10.0.1.1
    caplog.clear()
    h.ml._alive_node(alive("a", 9, "10.0.0.3", 7000), 1.0)
    assert logged(caplog) == [("ERROR", "memberlist: Conflicting address for a. Mine: "
                                        "10.0.1.1:7946 Theirs: 10.0.0.3:7000 Old state: alive")]
    h.ml._alive_node(alive(ME, 5, MY_ADDR, meta=b"x"), 1.0)
    assert logged(caplog) == [("WARNING", "memberlist: Refuting an alive message for 'me'")]
    h.ml._suspect_node(Suspect(9, ME, "b"), 1.0)
    assert logged(caplog) == [("WARNING", "memberlist: Refuting a suspect message (from: b)")]
    h.ml._dead_node(Dead(20, ME, "c"), 1.0)
    assert logged(caplog) == [("WARNING", "memberlist: Refuting a dead message (from: c)")]
    h.ml._suspect_node(Suspect(1, "a", "b"), 2.0)
    h.ml._suspect_node(Suspect(1, "a", "c"), 2.0)
    h.run(100.0)
    assert ("INFO", "memberlist: Marking a as failed, suspect timeout reached (1 peer "
                    "confirmations)") in logged(caplog)
    h.ml._dead_node(Dead(1, "b", "b"), 3.0)
    h.ml._alive_node(alive("b", 2, "10.0.0.9", 7001), 4.0)
    assert logged(caplog) == [("INFO", "memberlist: Updating address for left or failed node b "
                                       "from 10.0.1.2:7946 to 10.0.0.9:7001")]
    h.ml._alive_node(Alive(1, "e", b"\x01\x02\x03", 7946, b"", VSN), 5.0)
    assert logged(caplog) == [("WARNING", "memberlist: Ignoring an alive message for 'e': "
                                          "address must be 4 or 16 bytes, got 3")]


def test_serf_transitions_log_what_serf_logs(caplog):
    caplog.set_level("DEBUG", logger="pyserf")
    h = SF(reconnect_timeout=10.0)
    h.serf.start(0.0)
    for name in ("a", "b", "c"):
        h.serf.memberlist.delegate.notify_join(h.node(name, "10.0.0.2"), 0.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 1.0)
    caplog.clear()
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    assert logged(caplog) == [("WARNING", "serf: Bad state when leave: 4")]
    h.serf._handle_leave_intent(m.Leave(50, ME), 2.0)
    assert ("DEBUG", "serf: Refuting an older leave intent") in logged(caplog)
    h.serf.memberlist.delegate.notify_leave(h.node("b"), 2.0)
    h.serf._handle_leave_intent(m.Leave(60, "b", prune=True), 3.0)
    assert ("INFO", "serf: EventMemberReap (forced): b 10.0.0.2") in logged(caplog)
    h.serf._reap(11.5)
    assert ("INFO", "serf: EventMemberReap: a") in logged(caplog)


def test_reap_keeps_the_later_members_after_an_expired_one():
    """The failed list is scanned whole: a recent failure before an old one does not hide it."""
    h = SF(reconnect_timeout=100.0)
    s = h.serf
    for name, at in (("recent", 50.0), ("old", 10.0), ("recent2", 60.0)):
        s.memberlist.delegate.notify_join(h.node(name), 0.0)
        s.memberlist.delegate.notify_leave(h.node(name), at)
    s.events()
    s._reap(110.5)
    assert [x.member.name for x in s.failed_members] == ["recent", "recent2"]
    assert "old" not in s.members
    assert h.events() == [("member-reap", ["old"])]


def test_an_alive_with_impossible_versions_is_dropped_counted_and_logged(caplog):
    caplog.set_level("DEBUG", logger="pyserf")
    h = ML()
    h.ml._alive_node(alive("b", 1, vsn=bytes((3, 1, 2, 2, 5, 5))), 3.0)
    assert h.ml.drops.counts == {"alive (versions)": 1}
    assert logged(caplog) == [("ERROR", "memberlist: dropped alive (versions) from b: "
                                        "impossible version ranges [3, 1, 2, 2, 5, 5]")]
    # At most one line a second per peer and kind (the drop is timed by the message's `now`).
    h.ml._alive_node(alive("b", 2, vsn=bytes((3, 1, 2, 2, 5, 5))), 3.5)
    assert h.ml.drops.counts == {"alive (versions)": 2}
    assert logged(caplog) == []


def test_an_alive_about_us_is_refuted_whatever_versions_it_claims():
    h = ML()
    h.ml._alive_node(alive(ME, 3, MY_ADDR, vsn=bytes((3, 1, 2, 2, 5, 5))), 1.0)
    assert h.node(ME).incarnation == 4
    assert h.ml.drops.counts == {}


def test_eager_sync_also_for_a_known_node_that_comes_back_but_not_for_ourselves():
    h = ML(eager_sync=True)
    h.ml.left = True
    h.ml._dead_node(Dead(1, ME, ME), 1.0)  # we left
    h.ml.left = False
    h.calls.clear()
    h.ml._alive_node(alive(ME, 5, MY_ADDR), 2.0)  # refuted; our own return is no news
    assert h.node(ME).incarnation == 6
    assert h.calls == [("join", ME, 2.0)]
    assert h.ml._eager_timer is None
    h.ml._alive_node(alive("a", 1), 3.0)
    h.ml._dead_node(Dead(1, "a", ME), 4.0)
    h.ml._eager_timer.cancel()
    h.ml._eager_timer = None
    h.ml._alive_node(alive("a", 2), 10.0)  # a known, dead node is back
    assert h.ml._eager_timer is not None
    assert 10.3 <= h.ml._eager_timer.when <= 10.8


def test_each_distinct_confirmer_counts_but_not_the_accuser():
    """n=5: k=2; min 4 s, max 24 s. Confirmations: 24 - 20*log(2)/log(3) = 11.381, then 4.0."""
    h = ML()
    h.add("a", "b", "c", "d")
    h.ml._suspect_node(Suspect(1, "a", "b"), 0.0)
    sus = h.ml._suspicions["a"]
    h.ml.broadcasts.reset(0.5)
    h.ml._suspect_node(Suspect(1, "a", "b"), 0.5)  # the accuser again
    assert (sus.count, sus.deadline) == (0, 24.0)
    assert h.queued("a") is None
    h.ml._suspect_node(Suspect(1, "a", "c"), 1.0)
    assert sus.deadline == pytest.approx(11.381, abs=1e-9)
    h.ml._suspect_node(Suspect(1, "a", "d"), 2.0)
    assert (sus.count, sus.deadline) == (2, 4.0)
    h.run(4.0)
    assert h.node("a").state == NodeStateKind.DEAD


def test_undecodable_tags_give_a_member_without_tags_and_a_counted_drop(caplog):
    caplog.set_level("INFO", logger="pyserf")
    h = SF()
    n = h.node("a")
    n.meta = bytes((m.TAG_MAGIC,)) + b"\\xc1"
    h.serf.memberlist.delegate.notify_join(n, 1.0)
    assert h.status("a") == MemberStatus.ALIVE
    assert h.serf.members["a"].member.tags == {}
    assert h.serf.drops.counts == {"serf tags": 1}
    assert [r.levelname for r in caplog.records if "dropped serf tags" in r.getMessage()] == [
        "ERROR"]
    caplog.clear()
    # within a second of the last line: counted, not logged
    h.serf.memberlist.delegate.notify_update(n, 1.5)
    assert h.serf.drops.counts == {"serf tags": 2}
    assert not [r for r in caplog.records if "dropped serf tags" in r.getMessage()]
    assert h.events() == [("member-join", ["a"]), ("member-update", ["a"])]


def test_a_leave_intent_for_an_unknown_member_is_remembered_with_its_time():
    h = SF()
    assert h.serf._handle_leave_intent(m.Leave(4, "a"), 3.0) is True
    assert h.serf.recent_intents["a"] == (SerfMsg.LEAVE, 4, 3.0)


def test_a_pruning_leave_of_a_member_already_leaving_erases_it_after_the_delay():
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf._handle_leave_intent(m.Leave(3, "a"), 2.0)
    h.serf.events()
    assert h.serf._handle_leave_intent(m.Leave(4, "a", prune=True), 10.0) is True
    h.run(15.9)
    assert h.status("a") == MemberStatus.LEAVING
    h.run(16.0)
    assert "a" not in h.serf.members
    assert h.events() == [("member-reap", ["a"])]


def test_a_forced_leave_is_logged_as_forced(caplog):
    caplog.set_level("INFO", logger="pyserf")
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a", "10.0.0.2"), 1.0)
    h.serf.memberlist.delegate.notify_leave(h.node("a"), 2.0)
    caplog.clear()
    h.serf._handle_leave_intent(m.Leave(3, "a"), 3.0)
    assert logged(caplog) == [("INFO", "serf: EventMemberLeave (forced): a 10.0.0.2")]


def test_a_goodbye_whose_leave_intent_never_arrived_is_a_leave_not_a_failure():
    """Serf reports this member failed, then left (forced) when a push-pull brings the intent."""
    h = SF()
    h.serf.memberlist.delegate.notify_join(h.node("a"), 1.0)
    h.serf.memberlist.delegate.notify_join(h.node("b"), 1.0)
    h.serf.events()
    goodbye = h.node("a")
    goodbye.state = NodeStateKind.LEFT  # memberlist: a dead message from "a" about itself
    h.serf.memberlist.delegate.notify_leave(goodbye, 2.0)
    ms = h.serf.members["a"]
    assert (ms.member.status, ms.leave_time) == (MemberStatus.LEFT, 2.0)
    assert h.serf.left_members == [ms] and h.serf.failed_members == []
    assert h.events() == [("member-leave", ["a"])]
    # The intent arriving late (gossip or push-pull) changes nothing and reports nothing.
    assert h.serf._handle_leave_intent(m.Leave(7, "a"), 3.0) is True
    assert ms.member.status == MemberStatus.LEFT and h.events() == []
    # Declared dead by someone else, it is a failure as before.
    down = h.node("b")
    down.state = NodeStateKind.DEAD
    h.serf.memberlist.delegate.notify_leave(down, 4.0)
    assert h.status("b") == MemberStatus.FAILED
    assert h.events() == [("member-failed", ["b"])]
