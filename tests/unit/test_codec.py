"""Wire encoding details that real serf depends on (see the wire-protocol reference)."""

from __future__ import annotations

import msgpack
import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.codec import Alive, DecodeError, MsgType, Ping, PushNodeState, PushPull
from pyserf.memberlist.suspicion import Suspicion
from pyserf.serf import messages


def test_ping_bytes_match_a_captured_serf_ping():
    # Captured from serf 0.9.4: keys sorted, raw strings, omitempty source fields present.
    ping = Ping(1, "b", bytes([127, 0, 0, 10]), 7946, "a")
    expected = (bytes([0, 0x85]) + b"\xa4Node\xa1b" + b"\xa5SeqNo\x01"
                + b"\xaaSourceAddr\xa4\x7f\x00\x00\x0a" + b"\xaaSourceNode\xa1a"
                + b"\xaaSourcePort\xcd\x1f\x0a")
    assert ping.encode() == expected


def test_ping_omits_empty_source_fields():
    body = msgpack.unpackb(Ping(5, "x").encode()[1:], raw=True)
    assert set(body) == {b"Node", b"SeqNo"}


def test_strings_never_use_str8_or_bin():
    long_name = "n" * 40  # str8 would be used by the new msgpack spec
    raw = Alive(1, long_name, b"\x7f\x00\x00\x01", 7946, b"\xff\x80", bytes([1, 5, 2, 2, 5, 5])
                ).encode()
    assert b"\xd9" not in raw and b"\xc4" not in raw
    assert b"\xda\x00\x28" + long_name.encode() in raw


def test_alive_round_trip_and_4_or_16_byte_addresses():
    a = Alive(3, "node", bytes([10, 0, 0, 1]), 7946, b"\xff\x80", bytes([1, 5, 2, 2, 5, 5]))
    back = Alive.decode(codec.unpack_body(a.encode()[1:]))
    assert back == a
    assert codec.ip_from_bytes(bytes([10, 0, 0, 1])) == "10.0.0.1"
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    assert codec.ip_from_bytes(mapped) == "10.0.0.1"
    with pytest.raises(DecodeError):
        codec.ip_from_bytes(b"\x01\x02\x03")


def test_go_int_array_accepted_for_vsn():
    body = {b"Incarnation": 1, b"Node": b"n", b"Addr": bytes([10, 0, 0, 1]), b"Port": 7946,
            b"Vsn": [1, 5, 2, 2, 5, 5]}
    assert Alive.decode(body).vsn == bytes([1, 5, 2, 2, 5, 5])


def test_wrong_field_types_raise_decode_error():
    with pytest.raises(DecodeError):
        Ping.decode({b"SeqNo": b"notanint"})
    with pytest.raises(DecodeError):
        codec.unpack_body(b"\xc1")
    with pytest.raises(DecodeError):
        codec.unpack_body(msgpack.packb([1, 2]))


def test_compound_round_trip_and_truncation():
    parts = [b"\x00abc", b"\x02defg", b"\x04"]
    raw = codec.make_compound(parts)
    assert raw[0] == MsgType.COMPOUND and raw[1] == 3
    assert codec.split_compound(raw[1:]) == (parts, 0)
    got, truncated = codec.split_compound(raw[1:-2])
    assert got == parts[:1] and truncated == 2
    with pytest.raises(DecodeError):
        codec.split_compound(b"\x05\x00")


def test_crc_wrapper():
    wrapped = codec.add_crc(b"\x00hello")
    assert wrapped[0] == MsgType.HAS_CRC
    assert codec.strip_crc(wrapped) == b"\x00hello"
    corrupted = wrapped[:-1] + b"X"
    with pytest.raises(DecodeError, match="checksum"):
        codec.strip_crc(corrupted)


def test_compress_wrapper_round_trip():
    msg = Ping(9, "node-with-a-long-name" * 3).encode()
    wrapped = codec.compress(msg)
    assert wrapped[0] == MsgType.COMPRESS
    assert codec.decompress_body(wrapped[1:]) == msg
    bad = codec.encode(MsgType.COMPRESS, {"Algo": 7, "Buf": b""})
    with pytest.raises(DecodeError, match="unknown algorithm"):
        codec.decompress_body(bad[1:])


def test_push_pull_round_trip_and_frame_length():
    nodes = [PushNodeState("a", bytes([127, 0, 0, 1]), 7946, b"\xff\x80", 1, 0,
                           bytes([1, 5, 2, 2, 5, 5])),
             PushNodeState("b", bytes([127, 0, 0, 2]), 7946, b"", 4, 3, bytes([1, 5, 2, 2, 5, 5]))]
    pp = PushPull(True, nodes, b"\x02user-state")
    raw = pp.encode()
    assert codec.stream_frame_length(raw) == len(raw)
    assert codec.stream_frame_length(raw[:-1]) is None
    assert codec.stream_frame_length(raw + b"trailing") == len(raw)
    back = PushPull.decode_stream(raw[1:])
    assert back == pp
    with pytest.raises(DecodeError):
        PushPull.decode_stream(raw[1:-3])
    compressed = codec.compress(raw)
    assert codec.stream_frame_length(compressed) == len(compressed)
    encrypted_header = bytes([MsgType.ENCRYPT]) + (100).to_bytes(4, "big")
    assert codec.stream_frame_length(encrypted_header + bytes(99)) is None
    assert codec.stream_frame_length(encrypted_header + bytes(100)) == 105


def test_broadcast_queue_order_limits_and_invalidation():
    finished = []
    q = BroadcastQueue(retransmit_mult=2, num_nodes=lambda: 3)  # limit 2 * ceil(log10 4) = 2
    q.queue(b"aaaa", key="n1", on_finished=lambda: finished.append("old-n1"))
    q.queue(b"bb", key="n2")
    q.queue(b"cccccc", key="n1", on_finished=lambda: finished.append("new-n1"))
    assert finished == ["old-n1"]  # replaced by the newer message about n1
    assert q.get(2, 100) == [b"cccccc", b"bb"]  # larger first among equal transmit counts
    assert q.get(2, 5) == [b"bb"]  # skips what does not fit
    assert q.get(2, 100) == [b"cccccc"]
    assert finished == ["old-n1", "new-n1"]
    assert len(q) == 0


def test_suspicion_timeout_shrinks_with_confirmations():
    s = Suspicion("accuser", k=3, min_timeout=2.0, max_timeout=12.0, now=100.0)
    assert s.deadline == 112.0
    assert not s.confirm("accuser")
    assert s.confirm("b")
    # Lifeguard: timeout = max - log(n+1)/log(k+1) * (max - min); n=1, k=3 gives
    # 12 - (ln 2 / ln 4) * 10 = 7 s after the start.
    assert s.deadline == pytest.approx(107.0)
    assert not s.confirm("b")
    assert s.confirm("c") and s.confirm("d")
    assert s.deadline == pytest.approx(102.0)
    assert not s.confirm("e")  # only k confirmations count


def test_tags_meta_encoding():
    meta = messages.encode_tags({"role": "web", "dc": "east"}, 5)
    assert meta[0] == 0xFF
    assert messages.decode_tags(meta) == {"role": "web", "dc": "east"}
    assert messages.encode_tags({}, 5) == b"\xff\x80"
    assert messages.decode_tags(b"legacy-role") == {"role": "legacy-role"}
    assert messages.encode_tags({"role": "db"}, 2) == b"db"
