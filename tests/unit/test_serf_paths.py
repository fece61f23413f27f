"""serf-layer paths the rest of the unit tier left unexercised (found by branch coverage), each
checked for its outcome: configuration and operation refusals with serf's texts, leave and
force-leave in every state, intents that arrive before their member, events held during a join
and the recent-event buffer's accounting, query limits, filters and duplicate answers, the
queue-depth guard, and coordinates from pings.
"""

from __future__ import annotations

import logging

import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.codec import Alive
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import JoinOutcome, MemberlistConfig
from pyserf.serf import coordinate, ping_delegate
from pyserf.serf import messages as m
from pyserf.serf.config import SerfConfig, SerfError
from pyserf.serf.core import Serf
from pyserf.serf.events import MemberEvent, QueryReceived, ShutdownRequested, UserEventReceived
from pyserf.serf.intents import MAX_RECENT_INTENTS
from pyserf.serf.members import MemberStatus, SerfState
from pyserf.serf.user_events import MAX_HELD_EVENTS
from pyserf.sim.network import SimNetwork, SimNode


def cluster(n: int, seed: int = 1, **overrides) -> tuple[SimNetwork, list]:
    net = SimNetwork(seed=seed)
    nodes = [net.add_node(f"n{i}", f"10.0.0.{i + 1}", **overrides) for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(3.0)
    assert all(view == {f"n{i}": "alive" for i in range(n)} for view in net.views().values())
    return net, nodes


def standalone(**overrides) -> Serf:
    ml = MemberlistConfig(name="a", advertise_addr="10.0.0.1", advertise_port=7946)
    return Serf(SerfConfig(node_name="a", **overrides), ml, Scheduler())


def member_events(node, kind: str) -> list[str]:
    return [mb.name for e in node.events if isinstance(e, MemberEvent) and e.type == kind
            for mb in e.members]


def wait_for(net: SimNetwork, predicate, limit: float, step: float = 0.1) -> float:
    """Run the simulation until ``predicate()`` holds (bounded); returns the virtual time."""
    end = net.now + limit
    while not predicate():
        assert net.now < end, "condition not reached in time"
        net.run_until(net.now + step)
    return net.now


# -- configuration and operation refusals ------------------------------------------------


@pytest.mark.parametrize(("refused", "accepted", "error"), [
    ({"protocol_version": 1}, {"protocol_version": 2},
     "Protocol version '1' too low. Must be in range: [2, 5]"),
    ({"protocol_version": 6}, {"protocol_version": 5},
     "Protocol version '6' too high. Must be in range: [2, 5]"),
    ({"user_event_size_limit": 9217}, {"user_event_size_limit": 9216},
     "user event size limit exceeds limit of 9216 bytes"),
    # Encoded: magic byte, fixmap, fixstr key, str16 header (3) and the value: 7 + len.
    ({"tags": {"t": "x" * 506}}, {"tags": {"t": "x" * 505}},
     "Encoded length of tags exceeds limit of 512 bytes"),
])
def test_a_configuration_serf_refuses_is_refused_with_its_text(refused, accepted, error):
    with pytest.raises(SerfError) as exc:
        standalone(**refused)
    assert str(exc.value) == error
    assert standalone(**accepted).config.node_name == "a"  # the limit itself is fine


def test_tags_too_big_to_announce_are_refused_and_the_old_ones_kept():
    net, (a, b) = cluster(2, tags={"role": "web"})
    with pytest.raises(SerfError, match="Encoded length of tags exceeds limit of 512 bytes"):
        a.serf.set_tags({"t": "x" * 600}, net.now)
    assert a.serf.config.tags == {"role": "web"}
    assert a.serf.memberlist.delegate.node_meta(
        codec.META_MAX_SIZE) == m.encode_tags({"role": "web"}, 5)


def test_user_event_limits_before_and_after_encoding():
    net, (a,) = cluster(1)
    with pytest.raises(SerfError) as exc:
        a.serf.user_event("e", b"x" * 512, False, net.now)
    assert str(exc.value) == "user event exceeds configured limit of 512 bytes before encoding"
    # 500 bytes of name and payload fit; msgpack's field names push the encoding past 512.
    with pytest.raises(SerfError) as exc:
        a.serf.user_event("e", b"x" * 499, False, net.now)
    assert str(exc.value) == "encoded user event exceeds configured limit of 512 bytes after " \
                             "encoding"
    clock = a.serf.event_clock.time
    a.serf.user_event("e", b"x" * 400, False, net.now)
    assert a.serf.event_clock.time == clock + 1  # only an accepted event uses up a time


def test_operations_after_leave_and_shutdown_get_serfs_answers():
    net, (a, b) = cluster(2)
    out: list = []
    net.when_done(a, a.serf.leave(net.now), lambda err, when: out.append(("first", err)))
    net.when_done(a, a.serf.leave(net.now), lambda err, when: out.append(("again", err)))
    assert out == [("again", "Leave already in progress")]
    wait_for(net, lambda: len(out) == 2, 10.0)
    assert out[1] == ("first", None)
    net.when_done(a, a.serf.leave(net.now), lambda err, when: out.append(("after", err)))
    net.when_done(a, a.serf.join([("n1", b.addr)], False, net.now),
                  lambda o, when: out.append(("join", o)))
    assert out[2:] == [("after", None), ("join", JoinOutcome(
        errors=["Serf can't Join after Leave or Shutdown"]))]
    b.serf.shutdown()
    net.when_done(b, b.serf.leave(net.now), lambda err, when: out.append(("shut", err)))
    assert out[-1] == ("shut", "Leave called after Shutdown")


def test_leaving_alone_takes_just_the_propagation_delay():
    net, (a,) = cluster(1)
    done: list[float] = []
    start = net.now
    net.when_done(a, a.serf.leave(start),
                  lambda err, when: done.append(when) if err is None else None)
    net.run_until(start + 5.0)
    # Nobody to tell: no broadcast to wait for, only serf's leave_propagate_delay (1 s).
    assert done == [start + a.serf.config.leave_propagate_delay]
    assert a.serf.state == SerfState.LEFT


# -- force-leave and reaping -----------------------------------------------------------------


def test_force_leave_turns_a_failed_member_into_left_everywhere_then_prune_erases_it():
    net, (a, b, c) = cluster(3)
    net.crash(c)
    wait_for(net, lambda: all(v["n2"] == "failed" for v in net.views().values()), 30.0)
    assert a.serf.stats()["failed"] == "1" and a.serf.stats()["left"] == "0"
    done: list = []
    net.when_done(a, a.serf.force_leave("n2", False, net.now), lambda err, when: done.append(err))
    net.run_until(net.now + 3.0)
    assert done == [None]
    assert [v["n2"] for v in net.views().values()] == ["left", "left"]
    assert member_events(a, "member-leave") == member_events(b, "member-leave") == ["n2"]
    assert a.serf.stats()["failed"] == "0" and a.serf.stats()["left"] == "1"
    # A left member pruned by force-leave goes at once (not at the tombstone timeout).
    net.when_done(a, a.serf.force_leave("n2", True, net.now), lambda err, when: done.append(err))
    net.run_until(net.now + 3.0)
    assert done == [None, None]
    assert [sorted(v) for v in net.views().values()] == [["n0", "n1"], ["n0", "n1"]]
    assert member_events(a, "member-reap") == member_events(b, "member-reap") == ["n2"]
    assert a.serf.num_nodes() == 2 and a.serf.stats()["left"] == "0"


def test_force_leave_with_prune_of_a_failed_member_reaps_it_in_one_step():
    net, (a, b, c) = cluster(3, seed=2)
    net.crash(c)
    wait_for(net, lambda: all(v["n2"] == "failed" for v in net.views().values()), 30.0)
    a.serf.force_leave("n2", True, net.now)
    net.run_until(net.now + 3.0)
    assert member_events(b, "member-leave") == ["n2"]
    assert member_events(b, "member-reap") == ["n2"]
    assert "n2" not in net.views()["n1"]


def test_force_leave_with_nobody_alive_finishes_at_once():
    net, (a, b) = cluster(2)
    net.crash(b)
    wait_for(net, lambda: net.views()["n0"]["n1"] == "failed", 30.0)
    done: list = []
    net.when_done(a, a.serf.force_leave("n1", False, net.now),
                  lambda err, when: done.append((err, when)))
    assert done == [(None, net.now)]
    assert net.views()["n0"]["n1"] == "left"


def test_pruning_a_leaving_member_waits_for_its_leave_to_finish():
    net, (a, b, c) = cluster(3, seed=3)
    start = net.now
    c.serf.leave(start)
    net._pump(c)
    wait_for(net, lambda: a.serf.members["n2"].member.status == MemberStatus.LEAVING,
             1.0, step=0.01)
    a.serf.force_leave("n2", True, net.now)
    pruned_at = net.now
    delay = a.serf.config.broadcast_timeout + a.serf.config.leave_propagate_delay
    net.run_until(pruned_at + delay - 0.01)
    assert "n2" in a.serf.members  # the graceful leave still has time to finish
    net.run_until(pruned_at + delay + 0.01)
    assert "n2" not in a.serf.members
    assert member_events(a, "member-leave") == ["n2"]


# -- intents ---------------------------------------------------------------------------------


def test_a_leave_intent_that_overtakes_the_members_alive_makes_it_join_as_leaving():
    net, (a, b) = cluster(2)
    a.serf.memberlist.delegate.notify_msg(m.Leave(a.serf.clock.time + 5, "x").encode(), net.now)
    alive = Alive(1, "x", codec.ip_to_bytes("10.0.0.50"), 7946, m.encode_tags({}, 5),
                  bytes([1, 5, 2, 2, 5, 5]))
    a.serf.receive_packet(alive.encode(), b.addr, net.now)
    assert a.serf.members["x"].member.status == MemberStatus.LEAVING
    assert a.serf.members["x"].status_ltime == a.serf.clock.time - 1


def test_recent_intents_are_bounded_and_expire():
    serf = standalone()
    serf.start(0.0)
    for i in range(MAX_RECENT_INTENTS + 1):
        serf.memberlist.delegate.notify_msg(m.Join(i + 1, f"x{i}").encode(), 0.0)
    assert len(serf.recent_intents) == MAX_RECENT_INTENTS
    assert "x0" not in serf.recent_intents and f"x{MAX_RECENT_INTENTS}" in serf.recent_intents
    expiry = serf.config.recent_intent_timeout
    serf.memberlist.delegate.notify_msg(m.Join(10**6, "late").encode(), expiry - 1.0)
    # The reaper drops intents older than recent_intent_timeout and keeps the fresh one.
    serf._reap(expiry + 1.0)
    assert list(serf.recent_intents) == ["late"]


# -- user events -----------------------------------------------------------------------------


def test_events_gossiped_during_an_ignore_old_join_are_held_bounded_and_released():
    net = SimNetwork(seed=5)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    a.serf.event_clock.witness(5)
    out: list = []
    net.when_done(b, b.serf.join([("a", a.addr)], True, net.now), lambda o, when: out.append(o))
    # Events gossiped to b before its join reply: 8 Lamport times of 128 events fill the
    # held buffer (1,024); one more is dropped and counted.
    events = [m.UserEvent(10 + i // 128, f"e{i}", b"", False) for i in range(MAX_HELD_EVENTS)]
    for ev in [*events, m.UserEvent(30, "extra", b"", False)]:
        b.serf.memberlist.delegate.notify_msg(ev.encode(), net.now)
    assert b.serf.drops.counts["serf user-event (held during join)"] == 1
    assert not [e for e in b.serf.events() if isinstance(e, UserEventReceived)]
    net.run_until(net.now + 1.0)
    assert out and out[0].contacted == 1
    released = [e for e in b.events if isinstance(e, UserEventReceived)]
    # All newer than the cluster's event time (6) when b joined: delivered and gossiped on.
    assert sorted(e.name for e in released) == sorted(ev.name for ev in events)


def test_a_recycled_event_slot_gives_back_its_bytes():
    serf = standalone()
    serf.start(0.0)
    size = len(serf.event_buffer)
    serf.memberlist.delegate.notify_msg(m.UserEvent(3, "first", b"x" * 100, False).encode(), 0.0)
    assert serf._event_buffer_bytes == len("first") + 100
    serf.memberlist.delegate.notify_msg(
        m.UserEvent(3 + size, "second", b"y" * 10, False).encode(), 0.0)
    # Same slot (ltime mod the buffer size): the first event's bytes no longer count.
    assert serf.event_buffer[3] == (3 + size, [("second", b"y" * 10)])
    assert serf._event_buffer_bytes == len("second") + 10


# -- queries ---------------------------------------------------------------------------------


def _query(net: SimNetwork, node: SimNode, now: float, **kwargs) -> dict:
    seen: dict = {"acks": [], "responses": [], "done": []}
    kwargs.setdefault("timeout", 5.0)
    net.on_query(node, node.serf.query("q", b"", now, **kwargs),
                 on_ack=lambda node, when: seen["acks"].append(node),
                 on_response=lambda node, payload, when: seen["responses"].append(node),
                 on_done=lambda when: seen["done"].append(when))
    return seen


def test_query_refusals_use_serfs_texts():
    net, (a,) = cluster(1)
    with pytest.raises(SerfError, match=r"^relay factor 256 is not in 0\.\.255$"):
        _query(net, a, net.now, relay_factor=256)
    with pytest.raises(SerfError, match="^query exceeds limit of 1024 bytes$"):
        a.serf.query("q", b"x" * 1100, net.now)
    old = SimNetwork(seed=6).add_node("old", "10.0.0.9", protocol_version=3)
    with pytest.raises(SerfError, match="^Feature not supported$"):
        _query(net, old, 0.0)


def test_a_tag_filtered_query_reaches_only_the_matching_members():
    net = SimNetwork(seed=7)
    nodes = [net.add_node(f"n{i}", f"10.0.0.{i + 1}", tags={"role": role})
             for i, role in enumerate(["web", "db", "web-2", "cache"])]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(3.0)
    a = nodes[0]
    net.crash(nodes[3])
    wait_for(net, lambda: net.views()["n0"]["n3"] == "failed", 30.0)
    assert a.serf.expected_responders([], {"role": "^web"}) == {"n0", "n2"}
    assert a.serf.expected_responders(["n1", "n2"], {"role": "web"}) == {"n2"}
    assert a.serf.expected_responders([], {"role": "cache"}) == set()  # n3 is not alive
    assert a.serf.expected_responders([], {"role": "(("}) == set()  # bad regexp: nobody
    seen = _query(net, a, net.now, filter_tags={"role": "^web"}, request_ack=True)
    net.run_until(net.now + 2.0)
    assert sorted(seen["acks"]) == ["n0", "n2"]
    received = {n.name: [e.name for e in n.events if isinstance(e, QueryReceived)]
                for n in nodes[:3]}
    assert received == {"n0": ["q"], "n1": [], "n2": ["q"]}


def test_duplicate_answers_count_once_and_late_ones_are_ignored(caplog):
    net, (a, b) = cluster(2)
    seen = _query(net, a, net.now, request_ack=True)
    q = next(e for e in a.events if isinstance(e, QueryReceived))
    ack = m.QueryResponse(q.ltime, q.id, "n1", m.QUERY_FLAG_ACK, None).encode()
    resp = m.QueryResponse(q.ltime, q.id, "n1", 0, b"r").encode()
    for raw in (ack, ack, resp, resp):  # a relayed copy arrives besides the direct one
        a.serf.memberlist.delegate.notify_msg(raw, net.now)
    net._pump(a)  # the answers come out as events
    assert seen["acks"] == ["n1"] and seen["responses"] == ["n1"]
    net.run_until(net.now + 6.0)
    assert len(seen["done"]) == 1
    with caplog.at_level(logging.WARNING, "pyserf.serf"):
        a.serf.memberlist.delegate.notify_msg(resp, net.now)
    net._pump(a)
    assert seen["responses"] == ["n1"]
    assert f"reply for non-running query (LTime: {q.ltime}, ID: {q.id}) From: n1" in caplog.text


def test_responding_twice_is_refused():
    net, (a, b) = cluster(2)
    _query(net, a, net.now)
    net.run_until(net.now + 0.5)
    q = next(e for e in b.events if isinstance(e, QueryReceived))
    b.serf.respond(q, b"one", net.now)
    with pytest.raises(SerfError, match="^response already sent$"):
        b.serf.respond(q, b"two", net.now)


def test_a_relayed_response_too_big_for_the_limit_goes_only_direct(caplog):
    net, (a, b, c) = cluster(3)
    _query(net, a, net.now, relay_factor=1)
    net.run_until(net.now + 0.5)
    q = next(e for e in b.events if isinstance(e, QueryReceived))
    b.serf.actions()
    # The response fits its 1,024-byte limit exactly; wrapped in a relay message it does not.
    payload = b"p" * 1024
    while len(m.QueryResponse(q.ltime, q.id, "n1", 0, payload).encode()) > 1024:
        payload = payload[:-1]
    with caplog.at_level(logging.ERROR, "pyserf.serf"):
        b.serf.respond(q, payload, net.now)
    assert "relayed response exceeds limit of 1024 bytes" in caplog.text
    sent = [x for x in b.serf.actions() if hasattr(x, "addr")]
    assert [tuple(x.addr) for x in sent] == [a.addr]  # direct to the origin only


def test_queries_older_than_the_snapshot_clock_are_not_delivered_again():
    net, (a, b) = cluster(2)
    b.serf.restore_clocks(0, 0, 100)
    for ltime in (50, 101):
        q = m.Query(ltime, ltime, codec.ip_to_bytes("10.0.0.1"), 7946, "n0", [], 0, 0,
                    10**9, f"q{ltime}", b"")
        b.serf.memberlist.delegate.notify_msg(q.encode(), net.now)
    assert [e.name for e in b.serf.events() if isinstance(e, QueryReceived)] == ["q101"]


def test_a_name_conflict_at_protocol_3_cannot_vote_and_keeps_running(caplog):
    net = SimNetwork(seed=8)
    a = net.add_node("a", "10.0.0.1", protocol_version=3)
    me = a.serf.memberlist.local_node
    other = type(me)("a", "10.0.0.9", 7946)
    with caplog.at_level(logging.ERROR, "pyserf.serf"):
        a.serf.memberlist.delegate.notify_conflict(me, other, net.now)
    assert "Failed to start name resolution query: Feature not supported" in caplog.text
    assert not a.serf._resolving_conflict
    assert not [e for e in a.serf.events() if isinstance(e, ShutdownRequested)]


# -- periodic guards -------------------------------------------------------------------------


def test_the_queue_depth_guard_prunes_to_max_queue_depth(caplog):
    net = SimNetwork(seed=9)
    a = net.add_node("a", "10.0.0.1", max_queue_depth=100)
    # Alone, nothing is gossiped away: the event queue only grows.
    for i in range(200):
        a.serf.user_event(f"e{i}", b"", False, net.now)
    assert len(a.serf.event_broadcasts) == 200
    with caplog.at_level(logging.WARNING, "pyserf.serf"):
        net.run_until(a.serf.config.queue_check_interval + 0.01)
    assert len(a.serf.event_broadcasts) == 100
    assert "serf: Event queue depth: 200" in caplog.text
    assert "serf: Event queue depth (200) exceeds limit (100), dropping messages!" in caplog.text


# -- coordinates -----------------------------------------------------------------------------


def test_pings_without_or_with_an_unusable_coordinate_leave_ours_alone():
    net, (a, b) = cluster(2)
    node = a.serf.memberlist.node_map["n1"]
    before = a.serf.coordinates.coord.copy()
    cache = dict(a.serf.coordinate_cache)
    a.serf.memberlist.delegate.notify_ping_complete(node, 0.01, None, net.now)
    assert a.serf.drops.total() == 0  # an ack without a coordinate is normal, not a bad message
    theirs = coordinate.Coordinate.from_wire(b.serf.coordinates.coord.to_wire())
    a.serf.memberlist.delegate.notify_ping_complete(
        node, -1.0, ping_delegate.encode_ack_payload(theirs), net.now)
    assert a.serf.coordinates.coord.to_wire() == before.to_wire()
    assert a.serf.coordinate_cache.keys() == cache.keys()
    a.serf.memberlist.delegate.notify_ping_complete(
        node, 0.01, ping_delegate.encode_ack_payload(theirs), net.now)
    assert a.serf.coordinate_cache["n1"].to_wire() == theirs.to_wire()


def test_the_serf_accessors_report_the_local_view():
    net, (a, b) = cluster(2, tags={"role": "web"})
    me = a.serf.local_member()
    assert (me.name, me.addr, me.port, me.tags, me.status) == (
        "n0", "10.0.0.1", 7946, {"role": "web"}, MemberStatus.ALIVE)
    me.tags["role"] = "changed"  # a copy: the member list is not edited through it
    assert a.serf.local_member().tags == {"role": "web"}
    assert a.serf.num_nodes() == 2 and not a.serf.encryption_enabled()
    stats = a.serf.stats()
    assert (stats["members"], stats["encrypted"], stats["health_score"]) == ("2", "false", "0")


def test_the_owner_of_a_contested_name_wins_the_vote_and_odd_answers_do_not_count(caplog):
    net, (a, b, c) = cluster(3)
    me = b.serf.memberlist.local_node
    impostor = type(me)("n1", "10.0.0.9", 7946)
    with caplog.at_level(logging.INFO, "pyserf.serf"):
        b.serf.memberlist.delegate.notify_conflict(me, impostor, net.now)
        (collector,) = b.serf._queries.values()
        # Besides the real answers: one that does not decode and one from a member that
        # does not know the name (a nil Member); neither is a vote.
        for sender, payload in (("x1", b"\x00junk"),
                                ("x2", m.encode(m.SerfMsg.CONFLICT_RESPONSE, None))):
            b.serf.memberlist.delegate.notify_msg(
                m.QueryResponse(collector.ltime, collector.id, sender, 0,
                                payload).encode(), net.now)
        net.run_until(net.now + b.serf.default_query_timeout() + 0.5)
    assert b.serf.drops.counts["serf conflict response"] == 1
    # n0 and n2 both see n1 at 10.0.0.2 (b's own answer is not a vote): 2 of 2.
    assert "serf: majority in name conflict resolution [2 / 2]" in caplog.text
    assert not [e for e in b.events if isinstance(e, ShutdownRequested)]
    assert not b.serf._resolving_conflict
