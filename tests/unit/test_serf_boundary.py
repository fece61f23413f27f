"""Serf's decode boundary: every hostile message is dropped and counted, and changes nothing.

Each case sends one message that is decodable msgpack but does not fit serf's Go types (wrong
types, values out of width, oversized fields, names with control characters), then checks that
nothing raised, the message was counted as a drop of its kind, the serf state is exactly what
it was, and the node still encodes its state and gossips.
"""

from __future__ import annotations

import copy
import logging
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyserf.memberlist import codec
from pyserf.memberlist.fields import U64_MAX
from pyserf.memberlist.types import Node, SendPacket
from pyserf.serf import internal_queries
from pyserf.serf import messages as m
from pyserf.serf.clock import LamportClock
from pyserf.serf.config import SerfError
from pyserf.serf.coordinate import Coordinate
from pyserf.serf.delegate import DROP_KIND
from pyserf.serf.events import QueryReceived, UserEventReceived
from pyserf.serf.messages import SerfMsg
from pyserf.serf.ping_delegate import encode_ack_payload
from pyserf.sim.network import SimNetwork, SimNode

NEWLINE_NAME = "x\nleave\nclock: 18446744073709551615"


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=False)


def msg(kind: int, body: Any) -> bytes:
    return bytes((kind,)) + pack(body)


def cluster() -> tuple[SimNetwork, SimNode, SimNode]:
    net = SimNetwork(seed=4)
    a = net.add_node("a", "10.0.0.1", tags={"role": "web"})
    b = net.add_node("b", "10.0.0.2")
    net.join(b, a)
    net.run_until(2.0)
    assert net.views()["a"] == {"a": "alive", "b": "alive"}
    return net, a, b


def serf_state(node: SimNode) -> Any:
    s = node.serf
    return copy.deepcopy((
        {n: (ms.member.status, ms.status_ltime, ms.member.tags, ms.member.addr, ms.member.port)
         for n, ms in s.members.items()},
        s.clock.time, s.event_clock.time, s.query_clock.time, s.event_min_time,
        s.query_min_time, s.recent_intents, s.event_buffer, s.query_buffer,
        len(s.intent_broadcasts), len(s.event_broadcasts), len(s.query_broadcasts),
        s._events, s.coordinates.coord, s.coordinate_cache))


def assert_still_works(net: SimNetwork, a: SimNode, b: SimNode) -> None:
    """a encodes its push-pull state, sets tags, sends an event and a query that b sees."""
    state = m.PushPullState.decode_state(a.serf.memberlist.delegate.local_state(False, net.now))
    assert state.ltime == a.serf.clock.time
    done: list = []
    net.when_done(a, a.serf.set_tags({"role": "after"}, net.now),
                  lambda error, when: done.append(error))
    a.serf.user_event("after-attack", b"ok", False, net.now)
    net.on_query(a, a.serf.query("after-query", b"", net.now))
    net.run_until(net.now + 3.0)
    assert done == [None]
    assert any(isinstance(e, UserEventReceived) and e.name == "after-attack" for e in b.events)
    assert any(isinstance(e, QueryReceived) and e.name == "after-query" for e in b.events)
    assert {x.name: x.tags for x in b.serf.member_list()}["a"] == {"role": "after"}


def deliver(node: SimNode, data: bytes, now: float) -> None:
    node.serf.memberlist.delegate.notify_msg(data, now)


def assert_dropped_whole(send: Callable[[SimNode, float], None], kind: str) -> None:
    """On a fresh cluster, ``send`` one hostile message to a: it is counted once as a drop of
    ``kind``, a's serf state is exactly as before, and a still works."""
    net, a, b = cluster()
    before = serf_state(a)
    send(a, net.now)
    net._pump(a)
    assert a.serf.drops.counts[kind] == 1
    assert serf_state(a) == before
    assert_still_works(net, a, b)


# ---- one hostile field at a time, per message type ----------------------------------------------

VALID = {
    SerfMsg.LEAVE: {"LTime": 50, "Node": "b", "Prune": False},
    SerfMsg.JOIN: {"LTime": 50, "Node": "zz"},
    SerfMsg.USER_EVENT: {"LTime": 9, "Name": "deploy", "Payload": b"x", "CC": False},
    SerfMsg.QUERY: {"LTime": 9, "ID": 7, "Addr": bytes([10, 0, 0, 2]), "Port": 7946,
                    "SourceNode": "b", "Filters": None, "Flags": 0, "RelayFactor": 0,
                    "Timeout": 10**9, "Name": "q", "Payload": b"p"},
    SerfMsg.QUERY_RESPONSE: {"LTime": 9, "ID": 7, "From": "b", "Flags": 0, "Payload": b"r"},
}

WRONG_TYPES = ["text", [1], {"k": 1}, 1.5]
HOSTILE: list[tuple[int, str, Any]] = [
    *((k, "LTime", v) for k in VALID for v in [*WRONG_TYPES, -1]),
    *((k, "Node", v) for k in (SerfMsg.LEAVE, SerfMsg.JOIN)
      for v in [5, [b"b"], {"n": 1}, NEWLINE_NAME, "n" * 600, "", "tab\tname"]),
    (SerfMsg.LEAVE, "Prune", "yes"),
    (SerfMsg.LEAVE, "Prune", [1]),
    (SerfMsg.USER_EVENT, "Name", 7),
    (SerfMsg.USER_EVENT, "Name", ["deploy"]),
    (SerfMsg.USER_EVENT, "Payload", 5),
    (SerfMsg.USER_EVENT, "Payload", {"x": 1}),
    (SerfMsg.USER_EVENT, "Payload", b"x" * (m.MAX_PAYLOAD_BYTES + 1)),
    (SerfMsg.USER_EVENT, "CC", "yes"),
    (SerfMsg.QUERY, "ID", 2**32),
    (SerfMsg.QUERY, "ID", -1),
    (SerfMsg.QUERY, "Port", 65536),
    (SerfMsg.QUERY, "Port", 70000),
    (SerfMsg.QUERY, "Port", -1),
    (SerfMsg.QUERY, "Port", "7946"),
    (SerfMsg.QUERY, "Flags", 2**32),
    (SerfMsg.QUERY, "RelayFactor", 256),
    (SerfMsg.QUERY, "RelayFactor", -1),
    (SerfMsg.QUERY, "Timeout", 2**63),
    (SerfMsg.QUERY, "Timeout", "1s"),
    (SerfMsg.QUERY, "Addr", b"\x01\x02\x03"),
    (SerfMsg.QUERY, "Addr", 5),
    (SerfMsg.QUERY, "Addr", None),
    (SerfMsg.QUERY, "SourceNode", NEWLINE_NAME),
    (SerfMsg.QUERY, "Filters", 10**9),
    (SerfMsg.QUERY, "Filters", [10**9]),
    (SerfMsg.QUERY, "Filters", [{"Tag": "role"}]),
    (SerfMsg.QUERY, "Filters", [b""]),
    (SerfMsg.QUERY, "Filters", b"\x01abc"),
    (SerfMsg.QUERY, "Filters", [b"\x00\x90"] * (m.MAX_FILTERS + 1)),
    (SerfMsg.QUERY, "Filters", [b"\x01" + b"x" * (m.MAX_FILTER_BYTES + 1)]),
    (SerfMsg.QUERY, "Name", 5),
    (SerfMsg.QUERY, "Payload", [300]),
    (SerfMsg.QUERY_RESPONSE, "ID", 2**32),
    (SerfMsg.QUERY_RESPONSE, "From", ""),
    (SerfMsg.QUERY_RESPONSE, "From", NEWLINE_NAME),
    (SerfMsg.QUERY_RESPONSE, "Flags", -1),
    (SerfMsg.QUERY_RESPONSE, "Payload", 5),
]


@pytest.mark.parametrize(("kind", "key", "value"), HOSTILE,
                         ids=[f"{SerfMsg(k).name}-{f}-{str(v)[:20]!r}" for k, f, v in HOSTILE])
def test_hostile_field_is_dropped_counted_and_changes_nothing(kind, key, value):
    body = dict(VALID[kind], **{key: value})
    assert_dropped_whole(lambda node, now: deliver(node, msg(kind, body), now), DROP_KIND[kind])


@pytest.mark.parametrize("kind", list(VALID), ids=[SerfMsg(k).name for k in VALID])
def test_the_valid_form_of_each_message_is_accepted(kind):
    """The control for the cases above: the unmodified message is not dropped."""
    net, a, b = cluster()
    deliver(a, msg(kind, VALID[kind]), net.now)
    assert a.serf.drops.total() == 0


def test_valid_messages_take_effect():
    net, a, b = cluster()
    deliver(a, msg(SerfMsg.USER_EVENT, VALID[SerfMsg.USER_EVENT]), net.now)
    deliver(a, msg(SerfMsg.QUERY, VALID[SerfMsg.QUERY]), net.now)
    net._pump(a)
    assert [e.name for e in a.events if isinstance(e, UserEventReceived)] == ["deploy"]
    assert [e.name for e in a.events if isinstance(e, QueryReceived)] == ["q"]
    assert a.serf.event_clock.time == 10 and a.serf.query_clock.time == 10


def test_through_memberlist_a_hostile_serf_message_is_a_serf_drop():
    bad = codec.encode_user(msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], Port=70000)))
    assert_dropped_whole(lambda node, now: node.serf.receive_packet(
        bad, ("10.0.0.66", 7946), now), "serf query")


def test_garbage_and_unknown_types_are_dropped():
    net, a, b = cluster()
    before = serf_state(a)
    for data in (b"\x00", b"\x00\xc1", b"\x03\x93\x01\x02\x03", b"\x04\xdd\xff\xff\xff\xff",
                 bytes([SerfMsg.PUSH_PULL]) + pack({}), b"\x63junk", b"\x05\x81"):
        deliver(a, data, net.now)
    assert a.serf.drops.total() == 7
    assert serf_state(a) == before


def test_integer_filter_does_not_allocate():
    net, a, b = cluster()
    before = serf_state(a)
    data = msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], Filters=[10**9]))
    tracemalloc.start()
    try:
        deliver(a, data, net.now)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert a.serf.drops.counts["serf query"] == 1
    assert serf_state(a) == before


def test_values_that_nest_or_multiply_are_refused_before_msgpack_builds_them():
    net, a, b = cluster()
    before = serf_state(a)
    # 200k empty arrays: 200 KB of input would be ~13 MB of Python lists.
    wide = b"\x83\xa5LTime\x01\xa4Node\xa1b\xa5Extra\xdd" + (200_000).to_bytes(4, "big")
    deliver(a, bytes([SerfMsg.JOIN]) + wide + b"\x90" * 200_000, net.now)
    deep = b"\x91" * 10_000 + b"\x00"
    deliver(a, bytes([SerfMsg.JOIN]) + b"\x81\xa5Extra" + deep, net.now)
    declared = b"\x81\xacStatusLTimes\xdf\x00\x10\x00\x00"  # a map of 10^6 entries, no body
    a.serf.memberlist.delegate.merge_remote_state(
        bytes([SerfMsg.PUSH_PULL]) + declared, False, net.now)
    assert a.serf.drops.counts["serf join"] == 2
    assert a.serf.drops.counts["serf push-pull"] == 1
    assert serf_state(a) == before


# ---- query filters ------------------------------------------------------------------------------


def query_with_filters(filters: list[bytes], ltime: int = 9) -> bytes:
    return msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], LTime=ltime, Filters=filters))


@pytest.mark.parametrize("expr", ["(?:){4294967294}", "(a)\\1", "(?=web)", "x" * 5000])
def test_tag_filter_go_would_refuse_selects_nobody(expr):
    net, a, b = cluster()
    deliver(a, query_with_filters([m.encode_tag_filter("role", expr)]), net.now)
    net._pump(a)
    assert not any(isinstance(e, QueryReceived) for e in a.events)
    assert a.serf.drops.counts["serf query filter"] == 1
    # As in serf, the query itself is recorded and gossiped on; only processing is refused.
    assert a.serf.drops.counts["serf query"] == 0
    assert len(a.serf.query_broadcasts) == 1


def test_tag_filters_match_with_go_semantics():
    net, a, b = cluster()
    for ltime, expr, wanted in ((9, "(a*)*$", True), (10, "^w.b$", True), (11, "^db", False),
                                (12, "(?i)WEB", True), (13, "web$", True)):
        deliver(a, query_with_filters([m.encode_tag_filter("role", expr)], ltime), net.now)
        net._pump(a)
        got = any(isinstance(e, QueryReceived) and e.ltime == ltime for e in a.events)
        assert got == wanted, expr


def test_node_filters():
    net, a, b = cluster()
    deliver(a, query_with_filters([m.encode_node_filter(["b", "c"])], 9), net.now)
    deliver(a, query_with_filters([m.encode_node_filter(["a"])], 10), net.now)
    deliver(a, query_with_filters([b"\x00" + pack(5)], 11), net.now)  # not a list
    deliver(a, query_with_filters([b"\x07" + pack([])], 12), net.now)  # unknown filter type
    net._pump(a)
    assert [e.ltime for e in a.events if isinstance(e, QueryReceived)] == [10]
    assert a.serf.drops.counts["serf query filter"] == 2


# ---- push-pull state ----------------------------------------------------------------------------

VALID_STATE = {"LTime": 3, "StatusLTimes": {"b": 2}, "LeftMembers": [], "EventLTime": 2,
               "Events": [None], "QueryLTime": 2}

HOSTILE_STATE = [
    ("LTime", -1), ("LTime", "x"), ("EventLTime", [1]), ("QueryLTime", 1.5),
    ("StatusLTimes", [1]), ("StatusLTimes", {"b": -1}), ("StatusLTimes", {"b": "2"}),
    ("StatusLTimes", {5: 1}), ("StatusLTimes", {NEWLINE_NAME: 1}),
    ("StatusLTimes", {f"n{i}": 1 for i in range(m.MAX_STATE_MEMBERS + 1)}),
    ("LeftMembers", 5), ("LeftMembers", [5]), ("LeftMembers", ["a\nb"]), ("LeftMembers", "b"),
    ("LeftMembers", [""]),
    ("Events", 5), ("Events", [5]), ("Events", [{"LTime": -1}]),
    ("Events", [{"LTime": 1, "Events": [5]}]),
    ("Events", [{"LTime": 1, "Events": [{"Name": 5}]}]),
    ("Events", [{"LTime": 1, "Events": {"Name": "x"}}]),
]


@pytest.mark.parametrize(("key", "value"), HOSTILE_STATE,
                         ids=[f"{k}-{str(v)[:20]!r}" for k, v in HOSTILE_STATE])
def test_hostile_push_pull_state_is_dropped_whole(key, value):
    state = msg(SerfMsg.PUSH_PULL, dict(VALID_STATE, **{key: value}))
    assert_dropped_whole(
        lambda node, now: node.serf.memberlist.delegate.merge_remote_state(state, False, now),
        "serf push-pull")


def test_push_pull_with_a_bad_prefix_or_nothing_is_dropped():
    net, a, b = cluster()
    before = serf_state(a)
    a.serf.memberlist.delegate.merge_remote_state(b"", False, net.now)
    a.serf.memberlist.delegate.merge_remote_state(msg(SerfMsg.JOIN, VALID_STATE), False, net.now)
    assert a.serf.drops.counts["serf push-pull"] == 2
    assert serf_state(a) == before


# ---- relays -------------------------------------------------------------------------------------

RESPONSE = msg(SerfMsg.QUERY_RESPONSE, VALID[SerfMsg.QUERY_RESPONSE])


def relay(ip: Any = bytes([10, 0, 0, 2]), port: Any = 7946, inner: bytes = RESPONSE,
          dest: Any = None) -> bytes:
    dest = {"IP": ip, "Port": port, "Zone": ""} if dest is None else dest
    return bytes([SerfMsg.RELAY]) + pack({"DestAddr": dest, "DestName": "b"}) + inner


HOSTILE_RELAYS = {
    "port-0": relay(port=0), "port-70000": relay(port=70000), "port-negative": relay(port=-1),
    "port-text": relay(port="7946"), "ip-3-bytes": relay(ip=b"\x01\x02\x03"),
    "ip-unspecified": relay(ip=bytes(4)), "ip-broadcast": relay(ip=b"\xff" * 4),
    "ip-multicast": relay(ip=bytes([224, 0, 0, 1])), "ip-int": relay(ip=5),
    "dest-not-a-map": relay(dest=5), "no-inner": relay(inner=b""),
    "inner-user-event": relay(inner=msg(SerfMsg.USER_EVENT, VALID[SerfMsg.USER_EVENT])),
    "inner-bad-response": relay(inner=bytes([SerfMsg.QUERY_RESPONSE]) + pack({"ID": -1})),
    "truncated-header": bytes([SerfMsg.RELAY]) + b"\x82\xa8DestAddr",
}


def sent_packets(node: SimNode) -> list[SendPacket]:
    return [x for x in node.serf.actions() if isinstance(x, SendPacket)]


@pytest.mark.parametrize("name", sorted(HOSTILE_RELAYS))
def test_hostile_relay_is_dropped_and_sends_nothing(name):
    net, a, b = cluster()
    net.run_until(net.now + 1.0)
    a.serf.actions()
    before = serf_state(a)
    deliver(a, HOSTILE_RELAYS[name], net.now)
    assert sent_packets(a) == []
    assert a.serf.drops.counts["serf relay"] == 1
    assert serf_state(a) == before


def test_valid_relay_is_forwarded():
    net, a, b = cluster()
    net.run_until(net.now + 1.0)
    a.serf.actions()
    deliver(a, relay(), net.now)
    assert [p.addr for p in sent_packets(a)] == [("10.0.0.2", 7946)]
    assert a.serf.drops.total() == 0


def test_query_whose_reply_address_cannot_be_used_is_not_processed():
    net, a, b = cluster()
    deliver(a, msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], Port=0, Flags=1)), net.now)
    net._pump(a)
    assert not any(isinstance(e, QueryReceived) for e in a.events)
    assert a.serf.drops.counts["serf query (reply address)"] == 1


# ---- Lamport times at the top of uint64 ---------------------------------------------------------


def test_lamport_clock_wraps_as_go_does():
    clock = LamportClock()
    clock.witness(U64_MAX)
    assert clock.time == 0  # Go: CompareAndSwap(cur, v+1) with v+1 wrapping
    assert clock.increment() == 1
    clock.witness(0)
    assert clock.time == 1  # older than ours: ignored
    clock.witness(1)
    assert clock.time == 2  # equal: moves past it
    clock.time = U64_MAX
    assert clock.increment() == 0


LTIME_MAX_ABOUT_US = {
    "leave-about-us": msg(SerfMsg.LEAVE, {"LTime": U64_MAX, "Node": "a"}),
    "join-about-us": msg(SerfMsg.JOIN, {"LTime": U64_MAX, "Node": "a"}),
    "user-event": msg(SerfMsg.USER_EVENT, dict(VALID[SerfMsg.USER_EVENT], LTime=U64_MAX)),
    "query": msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], LTime=U64_MAX)),
    "query-response": msg(SerfMsg.QUERY_RESPONSE,
                          dict(VALID[SerfMsg.QUERY_RESPONSE], LTime=U64_MAX)),
}


@pytest.mark.parametrize("name", sorted(LTIME_MAX_ABOUT_US))
def test_ltime_max_is_witnessed_and_everything_still_encodes(name):
    net, a, b = cluster()
    deliver(a, LTIME_MAX_ABOUT_US[name], net.now)
    assert a.serf.drops.total() == 0
    for clock in (a.serf.clock, a.serf.event_clock, a.serf.query_clock):
        assert 0 <= clock.time <= U64_MAX
    assert net.views()["a"]["a"] == "alive"  # a leave about ourselves is refuted
    assert_still_works(net, a, b)
    # A join intent at 2^64-1 is gossiped on and makes every later intent about us look old
    # (uint64 order, as in serf), so b ignores our leave intent; serf would then record our
    # departure as a failure, pyserf still sees our own goodbye as a leave.
    assert_leaves(net, a, b)


def assert_leaves(net: SimNetwork, a: SimNode, b: SimNode, seen_as: str = "left") -> None:
    done: list = []
    net.when_done(a, a.serf.leave(net.now), lambda error, when: done.append(error))
    net._pump(a)
    net.run_until(net.now + 10.0)
    assert done == [None]
    assert net.views()["b"]["a"] == seen_as


@pytest.mark.parametrize("key", ["LTime", "EventLTime", "QueryLTime"])
def test_push_pull_clocks_at_uint64_max(key):
    net, a, b = cluster()
    state = dict(VALID_STATE, **{key: U64_MAX})
    a.serf.memberlist.delegate.merge_remote_state(msg(SerfMsg.PUSH_PULL, state), False, net.now)
    clock = {"LTime": a.serf.clock, "EventLTime": a.serf.event_clock,
             "QueryLTime": a.serf.query_clock}[key]
    assert clock.time == U64_MAX  # witnessed max - 1, so now at the top of the range
    assert_still_works(net, a, b)  # each operation increments through the wrap
    assert_leaves(net, a, b)


def test_push_pull_leave_time_wraps_instead_of_overflowing():
    net, a, b = cluster()
    state = dict(VALID_STATE, StatusLTimes={"a": U64_MAX, "b": U64_MAX}, LeftMembers=["a", "b"])
    a.serf.memberlist.delegate.merge_remote_state(msg(SerfMsg.PUSH_PULL, state), False, net.now)
    assert a.serf.drops.total() == 0
    assert net.views()["a"] == {"a": "alive", "b": "alive"}  # leave time wrapped to 0: stale
    assert_still_works(net, a, b)


def test_snapshot_clocks_out_of_range_are_ignored_and_max_wraps():
    net, a, b = cluster()
    before = (a.serf.clock.time, a.serf.event_clock.time, a.serf.query_clock.time)
    a.serf.restore_clocks(U64_MAX + 1, -1, "7")
    assert (a.serf.clock.time, a.serf.event_clock.time, a.serf.query_clock.time) == before
    a.serf.restore_clocks(U64_MAX, U64_MAX, U64_MAX)
    assert a.serf.clock.time == 0 and a.serf.event_min_time <= U64_MAX
    assert_still_works(net, a, b)


# ---- tags, coordinates, internal queries --------------------------------------------------------


@pytest.mark.parametrize("meta", [
    b"\xff" + pack({"role": 5}), b"\xff" + pack({5: "x"}), b"\xff" + pack([1, 2]),
    b"\xff" + pack({"role": ["web"]}), b"\xff\xc1", b"\xff" + pack({"r": "x" * 600})],
    ids=["int-value", "int-key", "list", "list-value", "invalid", "long-value"])
def test_tags_serf_cannot_decode_give_an_untagged_member(meta):
    net, a, b = cluster()
    node = Node("c", "10.0.0.3", 7946, meta)
    a.serf.memberlist.delegate.notify_join(node, net.now)
    assert {x.name: x.tags for x in a.serf.member_list()}["c"] == {}
    assert a.serf.drops.counts["serf tags"] == 1
    assert m.decode_tags(b"\xff" + pack({"role": "web"})) == {"role": "web"}


def ack_payload(body: Any) -> bytes:
    return b"\x01" + pack(body)


GOOD_COORD = Coordinate().to_wire()
HOSTILE_COORDS = {
    "nan": ack_payload(dict(GOOD_COORD, Vec=[math.nan] * 8)),
    "inf-height": ack_payload(dict(GOOD_COORD, Height=math.inf)),
    "nine-dims": ack_payload(dict(GOOD_COORD, Vec=[0.0] * 9)),
    "huge-vec": b"\x01\x84\xa3Vec\xdd\x00\x10\x00\x00" + b"\x00" * 100,
    "text": ack_payload(dict(GOOD_COORD, Error="1")),
    "bool": ack_payload(dict(GOOD_COORD, Vec=[True] * 8)),
    "version": b"\x02" + pack(GOOD_COORD),
    "not-a-map": ack_payload([1, 2]),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_COORDS))
def test_hostile_coordinates_are_dropped(name):
    net, a, b = cluster()
    before = serf_state(a)
    a.serf.memberlist.delegate.notify_ping_complete(
        Node("b", "10.0.0.2", 7946), 0.01, HOSTILE_COORDS[name], net.now)
    assert a.serf.drops.counts["serf coordinate"] == 1
    assert serf_state(a) == before


def test_extreme_finite_coordinates_never_raise():
    net, a, b = cluster()
    huge = ack_payload(dict(GOOD_COORD, Vec=[1e300] * 8, Height=1e300, Adjustment=-1e300))
    for _ in range(5):
        a.serf.memberlist.delegate.notify_ping_complete(Node("b", "10.0.0.2", 7946), 0.01, huge,
                                                       net.now)
    assert a.serf.coordinates.coord.valid()
    assert encode_ack_payload(a.serf.coordinates.coord)


@pytest.mark.parametrize("payload", [
    b"", b"\x03", bytes([SerfMsg.KEY_RESPONSE]) + pack({"Keys": 5}),
    bytes([SerfMsg.KEY_RESPONSE]) + pack({"Keys": [{"k": 1}]}),
    bytes([SerfMsg.KEY_RESPONSE]) + pack({"Keys": ["k"] * (m.MAX_KEYS + 1)}),
    bytes([SerfMsg.KEY_RESPONSE]) + pack({"Result": "yes"}),
    bytes([SerfMsg.KEY_RESPONSE]) + pack({"Message": 5})])
def test_hostile_key_responses_count_as_errors(payload):
    op = internal_queries.KeyOperation(2)
    assert not op.add("x", payload)
    assert op.num_err == 1 and op.keys == {} and "x" in op.messages
    assert op.add("y", bytes([SerfMsg.KEY_RESPONSE]) + pack({"Result": True, "Keys": ["k"]}))
    assert op.keys == {"k": 1}


@pytest.mark.parametrize("payload", [
    b"", bytes([SerfMsg.KEY_REQUEST]) + pack({"Key": 5}),
    bytes([SerfMsg.KEY_REQUEST]) + pack({"Key": b"k" * 65}),
    bytes([SerfMsg.KEY_REQUEST]) + b"\xc1"])
def test_hostile_key_requests_are_decode_errors(payload):
    with pytest.raises(m.DecodeError):
        m.KeyRequest.decode(payload)
    assert m.KeyRequest.decode(internal_queries.key_request(b"k" * 32)).key == b"k" * 32


def test_conflict_responses():
    good = {"Name": "a", "Addr": bytes([10, 0, 0, 1]), "Port": 7946, "Tags": {"role": "web"}}
    assert m.ConflictResponse.decode(msg(SerfMsg.CONFLICT_RESPONSE, good)).port == 7946
    assert m.ConflictResponse.decode(msg(SerfMsg.CONFLICT_RESPONSE, None)) is None
    for bad in (dict(good, Port=70000), dict(good, Addr=b"\x01"), dict(good, Tags={"r": 1}),
                [1], dict(good, Name=NEWLINE_NAME)):
        with pytest.raises(m.DecodeError):
            m.ConflictResponse.decode(msg(SerfMsg.CONFLICT_RESPONSE, bad))


# ---- containment and rate-limited logging -------------------------------------------------------


def test_an_internal_error_in_a_handler_is_contained(monkeypatch):
    net, a, b = cluster()

    def broken(*args: Any) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(a.serf, "_handle_user_event", broken)
    deliver(a, msg(SerfMsg.USER_EVENT, VALID[SerfMsg.USER_EVENT]), net.now)
    monkeypatch.setattr(a.serf, "_handle_join_intent", broken)
    a.serf.memberlist.delegate.merge_remote_state(
        msg(SerfMsg.PUSH_PULL, VALID_STATE), False, net.now)
    monkeypatch.setattr(a.serf, "_emit_member_event", broken)
    a.serf.memberlist.delegate.notify_join(Node("c", "10.0.0.3", 7946, b""), net.now)
    a.serf.memberlist.delegate.notify_leave(Node("b", "10.0.0.2", 7946), net.now)
    assert a.serf.drops.counts["serf user-event (internal error)"] == 1
    assert a.serf.drops.counts["serf push-pull (internal error)"] == 1
    assert a.serf.drops.counts["serf member-join (internal error)"] == 1
    assert a.serf.drops.counts["serf member-leave (internal error)"] == 1


def test_drops_are_logged_at_most_once_a_second(caplog):
    net, a, b = cluster()
    bad = msg(SerfMsg.JOIN, {"LTime": "x", "Node": "b"})
    with caplog.at_level(logging.ERROR, logger="pyserf.serf"):
        for i in range(100):
            a.serf.memberlist.delegate.notify_msg(bad, net.now + i * 0.001, ("10.0.0.66", 7946))
        a.serf.memberlist.delegate.notify_msg(bad, net.now + 1.5, ("10.0.0.66", 7946))
    assert a.serf.drops.counts["serf join"] == 101
    lines = [r.getMessage() for r in caplog.records if "dropped serf join" in r.getMessage()]
    assert len(lines) == 2
    assert "10.0.0.66:7946" in lines[0] and "99 more" in lines[1]


@pytest.mark.parametrize("timeout_ns", [-(2**63), -1, 0])
def test_query_with_negative_timeout_is_delivered_already_expired(timeout_ns):
    """Go computes the deadline as now + Timeout: a negative one has passed, and serf refuses
    the response ("response is past the deadline")."""
    net, a, b = cluster()
    deliver(a, msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], Timeout=timeout_ns)), net.now)
    net._pump(a)
    query = next(e for e in a.events if isinstance(e, QueryReceived))
    net.run_until(net.now + 0.001)
    with pytest.raises(SerfError, match="past the deadline"):
        a.serf.respond(query, b"late", net.now)
    assert a.serf.drops.total() == 0


_leaf = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
         | st.text(max_size=300) | st.binary(max_size=70_000)
         | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20)))
_values = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=20)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=20), max_leaves=60)


@settings(max_examples=200, deadline=None)
@given(_values, st.booleans())
def test_shape_check_walks_exactly_one_msgpack_value(value, bin_type):
    """check_shape must accept every well-formed value (and end where msgpack ends), or the
    boundary would refuse messages serf accepts."""
    data = msgpack.packb(value, use_bin_type=bin_type)
    assert m.check_shape(data + b"\xc0trailing", 10**6) == len(data)
    if len(data) > 1:
        with pytest.raises(m.DecodeError):
            m.check_shape(data[:-1], 10**6)


def test_events_and_queries_sharing_one_lamport_time_are_capped():
    net, a, b = cluster()
    for i in range(m.MAX_SLOT_EVENTS + 5):
        deliver(a, msg(SerfMsg.USER_EVENT, dict(VALID[SerfMsg.USER_EVENT], Name=f"e{i}")),
                net.now)
        deliver(a, msg(SerfMsg.QUERY, dict(VALID[SerfMsg.QUERY], ID=i)), net.now)
    net._pump(a)
    assert sum(isinstance(e, UserEventReceived) for e in a.events) == m.MAX_SLOT_EVENTS
    assert sum(isinstance(e, QueryReceived) for e in a.events) == m.MAX_SLOT_EVENTS
    assert a.serf.drops.counts["serf user-event (slot full)"] == 5
    assert a.serf.drops.counts["serf query (slot full)"] == 5
    m.PushPullState.decode_state(a.serf.memberlist.delegate.local_state(False, net.now))
