"""Malformed packets and streams are dropped with a log line; they never raise or lose state."""

from __future__ import annotations

import random

import msgpack

from pyserf.memberlist import codec
from pyserf.memberlist.codec import Alive, MsgType, Ping, PushPull
from pyserf.serf import messages
from pyserf.sim.network import SimNetwork


def _corpus() -> list[bytes]:
    vsn = bytes([1, 5, 2, 2, 5, 5])
    alive = Alive(9, "intruder", bytes([10, 0, 0, 9]), 7946, b"\xff\x80", vsn).encode()
    ping = Ping(7, "a", bytes([10, 0, 0, 2]), 7946, "b").encode()
    event = codec.encode_user(messages.UserEvent(3, "deploy", b"x", True).encode())
    leave = codec.encode_user(messages.Leave(5, "b").encode())
    query = codec.encode_user(messages.Query(2, 42, bytes([10, 0, 0, 2]), 7946, "b", [], 1, 0,
                                             10**9, "q", b"p").encode())
    compound = codec.make_compound([ping, alive, event])
    return [alive, ping, event, leave, query, compound, codec.compress(compound),
            codec.add_crc(compound)]


def _mutations(rng: random.Random, data: bytes) -> list[bytes]:
    out = [data[:n] for n in range(0, len(data), max(1, len(data) // 7))]
    for _ in range(30):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        out.append(bytes(buf))
    return out


def test_fuzzed_packets_never_raise_and_state_survives():
    net = SimNetwork(seed=1)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    net.join(b, a)
    net.run_until(2.0)
    rng = random.Random(5)
    packets = []
    for data in _corpus():
        packets.extend(_mutations(rng, data))
    packets += [b"", b"\x07", b"\x07\xff", b"\x09\x80", b"\x0c\x00", bytes([200]) * 9,
                bytes([MsgType.USER, messages.SerfMsg.RELAY]) + b"\x81\xa8DestAddr\x05",
                bytes([MsgType.PING]) + msgpack.packb({"SeqNo": "x", "Node": 5}),
                bytes([MsgType.ALIVE]) + msgpack.packb({"Addr": b"\x01", "Vsn": "no"}),
                bytes([MsgType.COMPOUND, 255]) + b"\x00" * 10]
    for data in packets:
        a.serf.memberlist.receive_packet(data, ("10.0.0.66", 7946), net.now)
        net._pump(a)
    net.run_until(net.now + 3.0)
    assert net.views()["a"]["b"] == "alive"
    assert net.views()["b"]["a"] == "alive"


def test_fuzzed_streams_get_an_error_reply_or_none():
    net = SimNetwork(seed=2)
    a = net.add_node("a", "10.0.0.1")
    rng = random.Random(9)
    good = PushPull(True, [], b"").encode()
    streams = _mutations(rng, good) + _mutations(rng, codec.compress(good))
    streams += [b"\x06\x83\xa4Join\xc3\xa5Nodes\xce\xff\xff\xff\xff\xacUserStateLen\x00",
                b"\x0a\x00\x00\x00\x05hello", b"\x0d\x81\xa5Error\x05"]
    for data in streams:
        reply = a.serf.memberlist.handle_stream(data, ("10.0.0.66", 40000), net.now)
        assert reply is None or isinstance(reply, bytes)
    assert [m.name for m in a.serf.member_list()] == ["a"]
