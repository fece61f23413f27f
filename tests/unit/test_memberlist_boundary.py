"""The memberlist decode boundary: hostile values are dropped and counted, nothing else changes.

Each case here is an attack that once broke a pyserf agent (issue 8): a port that does not fit
uint16 closed the UDP transport, a 2^32-1 incarnation made the refute unpackable, nested
compressed compounds expanded 72 KB into hundreds of MiB, a push-pull header declaring a million
nodes built a million objects, a trickled push-pull was re-parsed on every chunk, and a malformed
push-pull reply left a join waiting forever.
"""

from __future__ import annotations

import time

import msgpack
import pytest

from pyserf.memberlist import codec, fields, lzw
from pyserf.memberlist.codec import MsgType, NodeStateKind, PushPull
from pyserf.memberlist.dispatch import MAX_PACKET_EXPANSION
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import JoinOutcome, OpenStream, SendPacket
from pyserf.serf.events import JoinFinished
from pyserf.sim.network import SimNetwork

VSN = bytes([1, 5, 2, 2, 5, 5])
ATTACKER = ("10.0.0.66", 7946)


def raw(kind: int, body: dict) -> bytes:
    """A memberlist message built by hand, so values the encoders refuse can be sent."""
    return bytes((kind,)) + msgpack.packb(body, use_bin_type=False)


def pair(seed: int = 1) -> tuple[SimNetwork, object, object]:
    net = SimNetwork(seed=seed)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    net.join(b, a)
    net.run_until(2.0)
    return net, a, b


def deliver(net: SimNetwork, node, data: bytes) -> list:
    node.serf.memberlist.receive_packet(data, ATTACKER, net.now)
    return node.serf.actions()


def sends_to(actions: list, addr: tuple[str, int]) -> list[SendPacket]:
    return [x for x in actions if isinstance(x, SendPacket) and tuple(x.addr) == addr]


@pytest.mark.parametrize("port", [70000, -1, 2**64 - 1])
def test_ping_with_a_port_outside_uint16_is_dropped_and_counted(port):
    net, a, _ = pair()
    ml = a.serf.memberlist
    before = ml.drops.total()
    actions = deliver(net, a, raw(MsgType.PING, {"SeqNo": 1, "Node": "a",
                                                "SourceAddr": bytes([10, 0, 0, 9]),
                                                "SourcePort": port}))
    assert actions == []
    assert ml.drops.total() == before + 1
    # A well-formed ping right after is answered at its source address.
    actions = deliver(net, a, raw(MsgType.PING, {"SeqNo": 2, "Node": "a"}))
    assert len(sends_to(actions, ATTACKER)) == 1


def test_alive_with_a_bad_port_never_enters_the_member_list():
    net, a, b = pair()
    alive = raw(MsgType.ALIVE, {"Incarnation": 1, "Node": "evil", "Addr": bytes([10, 0, 0, 7]),
                                "Port": 70000, "Meta": b"", "Vsn": VSN})
    deliver(net, a, alive)
    net.run_until(net.now + 3.0)
    assert "evil" not in net.views()["a"] and "evil" not in net.views()["b"]
    assert all(0 < n.port <= 0xFFFF for n in a.serf.memberlist.nodes)


@pytest.mark.parametrize("body", [
    {"SeqNo": "x", "Node": 5},
    {"SeqNo": [1], "Node": {"a": 1}},
    {"SeqNo": 1.5},
    {"SeqNo": 2**32},
    {"SeqNo": 1, "Node": "a", "SourceAddr": 12345, "SourcePort": 7946},
    {"SeqNo": 1, "Node": "a", "SourceAddr": [1, 2, 300, 4], "SourcePort": 7946},
    {"SeqNo": 1, "Node": "x" * 600},
    {"SeqNo": 1, "Node": "a\nb"},
])
def test_wrong_types_in_a_ping_are_dropped(body):
    net, a, _ = pair()
    ml = a.serf.memberlist
    before = ml.drops.total()
    assert deliver(net, a, raw(MsgType.PING, body)) == []
    assert ml.drops.total() == before + 1


def test_unhashable_map_keys_and_deep_nesting_are_dropped():
    net, a, _ = pair()
    ml = a.serf.memberlist
    before = ml.drops.total()
    # fixmap of 1 whose key is an array (msgpack-python cannot hash it)
    deliver(net, a, bytes((MsgType.ALIVE,)) + b"\x81\x91\x01\x02")
    deliver(net, a, bytes((MsgType.ALIVE,)) + b"\x91" * 5000 + b"\xc0")
    assert ml.drops.total() == before + 2
    net.run_until(net.now + 2.0)
    assert net.views()["a"] == {"a": "alive", "b": "alive"}


@pytest.mark.parametrize("kind", [MsgType.SUSPECT, MsgType.DEAD, MsgType.ALIVE])
def test_incarnation_at_the_uint32_maximum_about_ourselves_wraps_and_encodes(kind):
    net, a, b = pair()
    body = {"Incarnation": fields.U32_MAX, "Node": "a", "From": "b"}
    if kind == MsgType.ALIVE:
        body = {"Incarnation": fields.U32_MAX, "Node": "a", "Addr": bytes([10, 0, 0, 1]),
                "Port": 7946, "Meta": b"\xff\x80", "Vsn": VSN}
    deliver(net, a, raw(kind, body))
    ml = a.serf.memberlist
    me = ml.local_node
    assert 0 <= me.incarnation <= fields.U32_MAX
    assert me.state == NodeStateKind.ALIVE
    # Everything that encodes our own state still works.
    state = ml._local_state(False, net.now)
    assert PushPull.decode_stream(state[1:]).nodes
    c = net.add_node("c", "10.0.0.3")
    result: list[JoinOutcome] = net.join(c, a)
    net.run_until(net.now + 3.0)
    assert result and result[0].contacted == 1
    assert 0 <= ml._incarnation <= fields.U32_MAX


@pytest.mark.parametrize("incarnation", [2**32, -1, 2**64 - 1])
def test_incarnation_outside_uint32_is_a_decode_error(incarnation):
    net, a, _ = pair()
    before = a.serf.memberlist.local_node.incarnation
    deliver(net, a, raw(MsgType.SUSPECT, {"Incarnation": incarnation, "Node": "a", "From": "b"}))
    assert a.serf.memberlist.local_node.incarnation == before


def _lzw_bomb(size: int) -> bytes:
    return codec.compress(bytes(size))


def test_nested_compressed_compounds_stay_within_the_packet_budget(monkeypatch):
    net, a, _ = pair()
    # Each part decompresses to ~60 KB of zero bytes; 72 KB of these once became ~180 MiB.
    bomb = _lzw_bomb(60_000)
    inner = codec.make_compound([bomb] * 200)
    packets = [codec.make_compound([codec.compress(inner)] * 40)[:65_000],
               codec.compress(codec.make_compound([codec.compress(inner)] * 3))]
    expanded: list[int] = []
    real = lzw.decompress

    def counting(data: bytes, max_output: int = codec.MAX_DECOMPRESSED) -> bytes:
        out = real(data, max_output)
        expanded[-1] += len(out)
        return out

    monkeypatch.setattr(lzw, "decompress", counting)
    for packet in packets:
        expanded.append(0)
        deliver(net, a, packet)
    assert all(0 < total <= MAX_PACKET_EXPANSION for total in expanded), expanded
    net.run_until(net.now + 1.0)
    assert net.views()["a"]["b"] == "alive"


def test_decompression_honours_the_callers_limit():
    with pytest.raises(codec.DecodeError):
        codec.decompress_body(codec.compress(bytes(100_000))[1:], 50_000)
    assert len(lzw.decompress(lzw.compress(bytes(1000)), 1000)) == 1000


def test_push_pull_declaring_a_million_nodes_is_refused_cheaply():
    net, a, _ = pair()
    header = msgpack.packb({"Join": False, "Nodes": 10**6, "UserStateLen": 0})
    stream = bytes((MsgType.PUSH_PULL,)) + header + b"\x80" * 10**6
    started = time.process_time()
    reply = a.serf.memberlist.handle_stream(stream, ATTACKER, net.now)
    assert time.process_time() - started < 5.0
    assert reply is None
    over = bytes((MsgType.PUSH_PULL,)) + msgpack.packb(
        {"Join": False, "Nodes": codec.MAX_PUSH_STATE_NODES + 1, "UserStateLen": 0})
    with pytest.raises(codec.DecodeError, match="exceeds limit"):
        codec.StreamFramer().feed(over)
    assert net.views()["a"] == {"a": "alive", "b": "alive"}


def test_stream_framer_finds_the_end_whatever_the_chunking():
    nodes = [codec.PushNodeState(f"n{i}", bytes([10, 1, i // 256, i % 256]), 7946, b"\xff\x80",
                                 1, 0, VSN) for i in range(300)]
    message = PushPull(False, nodes, b"user-state").encode()
    for size in (1, 3, 64, 4096, len(message)):
        framer = codec.StreamFramer()
        frames = [framer.feed(message[i:i + size]) for i in range(0, len(message), size)]
        assert frames[-1] == message and all(f is None for f in frames[:-1])
    compressed = codec.compress(message)
    framer = codec.StreamFramer()
    assert [framer.feed(compressed[i:i + 5]) for i in range(0, len(compressed), 5)][-1] \
        == compressed


def test_stream_framer_is_linear_for_a_trickled_big_object():
    # One node state whose meta is 8 MiB, trickled in 1 KiB chunks: the old reader re-parsed
    # the whole buffer per chunk (quadratic). Count the work as CPU time against a whole feed.
    body = msgpack.packb({"Join": False, "Nodes": 1, "UserStateLen": 0}) + msgpack.packb(
        {"Name": "n", "Meta": bytes(8 * 1024 * 1024)})
    message = bytes((MsgType.PUSH_PULL,)) + body
    t0 = time.process_time()
    codec.StreamFramer().feed(message)
    whole = time.process_time() - t0
    framer = codec.StreamFramer()
    t0 = time.process_time()
    for i in range(0, len(message), 1024):
        framer.feed(message[i:i + 1024])
    trickled = time.process_time() - t0
    # 8,192 chunks; quadratic re-parsing would cost thousands of times the whole feed.
    assert trickled < 50 * whole + 2.0


def test_stream_framer_refuses_more_than_its_limit():
    framer = codec.StreamFramer(max_bytes=1000)
    with pytest.raises(codec.DecodeError):
        framer.feed(bytes((MsgType.ENCRYPT,)) + (5000).to_bytes(4, "big"))
    framer = codec.StreamFramer(max_bytes=1000)
    with pytest.raises(codec.DecodeError):
        for _ in range(20):
            framer.feed(bytes((MsgType.PUSH_PULL,)) + b"\x83" + b"\x00" * 100)


def join_outcomes(node, handle) -> list[JoinOutcome]:
    """The outcomes the node's machine reported for the join behind ``handle``."""
    return [e.outcome for e in node.serf.events()
            if isinstance(e, JoinFinished) and e.handle == handle]


def test_a_join_answered_by_a_malformed_push_pull_reports_an_error():
    net = SimNetwork(seed=3)
    a = net.add_node("a", "10.0.0.1")
    handle = a.serf.join([("x", ("10.0.0.99", 7946))], False, net.now)
    streams = [x for x in a.serf.actions() if isinstance(x, OpenStream)]
    assert len(streams) == 1
    bad_replies = [
        raw(MsgType.PUSH_PULL, {"Join": False, "Nodes": 1, "UserStateLen": 0})
        + msgpack.packb({"Name": "z", "Addr": bytes([10, 0, 0, 9]), "Port": 70000}),
    ]
    ml = a.serf.memberlist
    ml.stream_reply(streams[0].stream_id, bad_replies[0], net.now)
    outcomes = join_outcomes(a, handle)
    assert len(outcomes) == 1 and outcomes[0].contacted == 0 and outcomes[0].errors
    assert ml._pending_push_pulls == 0


def test_a_join_whose_merge_raises_still_reports_once(monkeypatch):
    net = SimNetwork(seed=4)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    handle = a.serf.join([("b", b.addr)], False, net.now)
    (stream,) = [x for x in a.serf.actions() if isinstance(x, OpenStream)]
    reply = b.serf.memberlist.handle_stream(stream.data, a.addr, net.now)

    def explode(*args, **kwargs):
        raise RuntimeError("bug in merge")

    monkeypatch.setattr(a.serf.memberlist, "_merge_remote", explode)
    a.serf.memberlist.stream_reply(stream.stream_id, reply, net.now)
    outcomes = join_outcomes(a, handle)
    assert len(outcomes) == 1 and outcomes[0].contacted == 0
    assert a.serf.memberlist._pending_push_pulls == 0


def test_an_exception_inside_a_delegate_never_escapes_receive_packet(monkeypatch):
    net, a, _ = pair()

    def explode(buf, now, source):
        raise KeyError("bug")

    monkeypatch.setattr(a.serf.memberlist, "delegate", type("D", (), {
        "notify_msg": staticmethod(explode)})())
    before = a.serf.memberlist.drops.total()
    a.serf.memberlist.receive_packet(codec.encode_user(b"\x03\x80"), ATTACKER, net.now)
    assert a.serf.memberlist.drops.total() == before + 1


def test_a_failing_timer_callback_does_not_starve_the_others():
    scheduler = Scheduler()
    ran: list[str] = []

    def bad(now: float) -> None:
        raise ValueError("boom")

    scheduler.call_at(1.0, bad)
    scheduler.call_at(1.0, lambda now: ran.append("second"))
    scheduler.call_at(2.0, lambda now: ran.append("third"))
    assert scheduler.run_due(2.0) == 3
    assert ran == ["second", "third"]


def test_drop_logging_is_rate_limited_per_peer_and_kind(caplog):
    net, a, _ = pair()
    ml = a.serf.memberlist
    caplog.set_level("ERROR", logger="pyserf.memberlist")
    before = ml.drops.total()
    for _ in range(500):
        ml.receive_packet(b"\xff\x00", ATTACKER, net.now)
    lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert ml.drops.total() == before + 500
    assert len(lines) == 1
    ml.receive_packet(b"\xff\x00", ATTACKER, net.now + 1.5)
    assert "499 more" in caplog.records[-1].getMessage()


def test_sends_to_port_zero_are_never_queued():
    net, a, _ = pair()
    ml = a.serf.memberlist
    ml.send_user_packet(("10.0.0.9", 0), b"\x03\x80", net.now)
    assert [x for x in ml.take_actions() if isinstance(x, SendPacket)] == []


@pytest.mark.parametrize("vsn", [b"", b"\x01", bytes([1, 5, 2, 2, 5]), bytes([0, 5, 2, 2, 5, 5]),
                                 bytes([3, 2, 2, 2, 5, 5]), bytes([1, 5, 9, 2, 5, 5]),
                                 bytes([1, 5, 2, 5, 2, 5]), bytes([3, 5, 3, 2, 5, 5]),
                                 bytes([1, 5, 2, 9, 9, 9])])
def test_a_member_with_bad_versions_cannot_poison_later_push_pulls(vsn):
    net, a, b = pair()
    bad = {"Incarnation": 1, "Node": "poison", "Addr": bytes([10, 0, 0, 7]), "Port": 7946,
           "Meta": b"", "Vsn": vsn}
    deliver(net, a, raw(MsgType.ALIVE, bad))
    # ... and inside a push-pull an honest-looking peer relays.
    header = {"Join": False, "Nodes": 1, "UserStateLen": 0}
    stream = raw(MsgType.PUSH_PULL, header) + msgpack.packb(
        {"Name": "poison2", "Addr": bytes([10, 0, 0, 8]), "Port": 7946, "Meta": b"",
         "Incarnation": 1, "State": 0, "Vsn": vsn})
    assert a.serf.memberlist.handle_stream(stream, ATTACKER, net.now) is not None
    names = {n.name for n in a.serf.memberlist.nodes}
    assert not names & {"poison", "poison2"}
    c = net.add_node("c", "10.0.0.3")
    result = net.join(c, a)
    net.run_until(net.now + 3.0)
    assert result and result[0].contacted == 1 and not result[0].errors
    assert net.views()["c"] == {"a": "alive", "b": "alive", "c": "alive"}
