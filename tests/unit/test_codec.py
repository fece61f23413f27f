"""Wire encoding details that real serf depends on (see the wire-protocol reference).

The first part decodes every datagram and stream that real serf 0.9.4 agents exchanged in
tests/fixtures/serf-0.9.4 (written by scripts/capture-serf-fixtures; its README says how),
checks the decoded fields against an independent msgpack decode and against the captured
scenario, and re-encodes each message to the very bytes serf sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.codec import Alive, DecodeError, MsgType, Ping, PushNodeState, PushPull
from pyserf.memberlist.security import Keyring, decrypt, parse_key_b64
from pyserf.memberlist.suspicion import Suspicion
from pyserf.serf import messages
from pyserf.serf.messages import SerfMsg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "serf-0.9.4"
CAPTURES = ["wire-plain.json", "wire-encrypted.json"]


@cache
def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def capture_keyring(capture: dict) -> Keyring | None:
    return Keyring([parse_key_b64(capture["key"])]) if capture["key"] else None


def datagrams(capture: dict) -> list[tuple[dict, bytes, bytes]]:
    """(record, bytes on the wire, plaintext) of every captured datagram."""
    ring = capture_keyring(capture)
    out = []
    for record in capture["datagrams"]:
        wire = base64.b64decode(record["data"])
        out.append((record, wire, decrypt(ring, wire) if ring else wire))
    return out


def streams(capture: dict) -> list[tuple[dict, bytes, bytes]]:
    """(record, bytes on the wire, plaintext) of both directions of every captured stream.

    An encrypted stream is [0x0a][u32 length][blob] with the 5 header bytes as AAD."""
    ring = capture_keyring(capture)
    out = []
    for record in capture["streams"]:
        for direction in ("request", "response"):
            wire = base64.b64decode(record[direction])
            plain = decrypt(ring, wire[5:], wire[:5]) if ring else wire
            out.append((record, wire, plain))
    return out


@dataclass
class Part:
    """One message found in a datagram: a wrapper (crc, compress, compound) or a leaf."""

    kind: str  # MsgType name in lower case; user messages as "user:<serf type>"
    raw: bytes  # the message, type byte first
    record: dict  # the datagram it came in


def unwrap(raw: bytes, record: dict) -> Iterator[Part]:
    """Every message inside raw, outermost first, with pyserf's codec doing the unwrapping."""
    kind = MsgType(raw[0])
    if kind is MsgType.USER:
        yield Part(f"user:{SerfMsg(raw[1]).name.lower()}", raw, record)
        if raw[1] == SerfMsg.RELAY:
            yield from unwrap(codec.encode_user(messages.Relay.decode(raw[2:]).inner), record)
        return
    yield Part(kind.name.lower(), raw, record)
    if kind is MsgType.HAS_CRC:
        yield from unwrap(codec.strip_crc(raw), record)
    elif kind is MsgType.COMPRESS:
        yield from unwrap(codec.decompress_body(raw[1:]), record)
    elif kind is MsgType.COMPOUND:
        parts, truncated = codec.split_compound(raw[1:])
        assert truncated == 0
        for part in parts:
            yield from unwrap(part, record)


@cache
def all_parts(name: str) -> tuple[Part, ...]:
    """Every message in every datagram of the capture file `name` (decoded once per run)."""
    return tuple(part for record, _, plain in datagrams(load_fixture(name))
                 for part in unwrap(plain, record))


def parts_of(name: str, kind: str) -> list[Part]:
    return [part for part in all_parts(name) if part.kind == kind]


def advertised_ip(capture: dict, node: str) -> bytes:
    return codec.ip_to_bytes(capture["nodes"][node]["advertise"].rsplit(":", 1)[0])


# Every kind the scenario makes serf send; a capture without one of them proves nothing about it.
EXPECTED_KINDS = {
    "ping", "indirect_ping", "ack", "nack", "suspect", "alive", "dead", "compound", "compress",
    "has_crc", "user:join", "user:leave", "user:user_event", "user:query",
    "user:query_response", "user:relay",
}
# memberlist message -> (pyserf class, {attribute: msgpack key}); the keys are Go's field names.
MEMBERLIST_FIELDS: dict[str, tuple[Any, dict[str, bytes]]] = {
    "ping": (codec.Ping, {"seq_no": b"SeqNo", "node": b"Node", "source_addr": b"SourceAddr",
                          "source_port": b"SourcePort", "source_node": b"SourceNode"}),
    "indirect_ping": (codec.IndirectPing, {
        "seq_no": b"SeqNo", "target": b"Target", "port": b"Port", "node": b"Node",
        "nack": b"Nack", "source_addr": b"SourceAddr", "source_port": b"SourcePort",
        "source_node": b"SourceNode"}),
    "ack": (codec.Ack, {"seq_no": b"SeqNo", "payload": b"Payload"}),
    "nack": (codec.Nack, {"seq_no": b"SeqNo"}),
    "suspect": (codec.Suspect, {"incarnation": b"Incarnation", "node": b"Node",
                                "from_": b"From"}),
    "dead": (codec.Dead, {"incarnation": b"Incarnation", "node": b"Node", "from_": b"From"}),
    "alive": (codec.Alive, {"incarnation": b"Incarnation", "node": b"Node", "addr": b"Addr",
                            "port": b"Port", "meta": b"Meta", "vsn": b"Vsn"}),
}
# serf message (inside a memberlist user message) -> the same.
SERF_FIELDS: dict[str, tuple[Any, dict[str, bytes]]] = {
    "user:join": (messages.Join, {"ltime": b"LTime", "node": b"Node"}),
    "user:leave": (messages.Leave, {"ltime": b"LTime", "node": b"Node", "prune": b"Prune"}),
    "user:user_event": (messages.UserEvent, {"ltime": b"LTime", "name": b"Name",
                                             "payload": b"Payload", "cc": b"CC"}),
    "user:query": (messages.Query, {
        "ltime": b"LTime", "id": b"ID", "addr": b"Addr", "port": b"Port",
        "source_node": b"SourceNode", "filters": b"Filters", "flags": b"Flags",
        "relay_factor": b"RelayFactor", "timeout_ns": b"Timeout", "name": b"Name",
        "payload": b"Payload"}),
    "user:query_response": (messages.QueryResponse, {
        "ltime": b"LTime", "id": b"ID", "from_": b"From", "flags": b"Flags",
        "payload": b"Payload"}),
}
FIELDS = {**MEMBERLIST_FIELDS, **SERF_FIELDS}


def go_value(value: Any, like: Any) -> Any:
    """A value from the independent msgpack decode, in the type pyserf's attribute has."""
    if isinstance(like, str) and isinstance(value, bytes):
        return value.decode()
    if isinstance(like, bytes) and isinstance(value, list):
        return bytes(value)  # Go may send []uint8 as an array
    if like is None and value == b"":
        return None
    if isinstance(like, list) and value is None:
        return []
    return value


def body_start(part: Part) -> int:
    """Where the msgpack body starts: after the type byte, and the serf type byte if any."""
    return 2 if part.kind.startswith("user:") else 1


def decoded(part: Part) -> Any:
    """The pyserf record for a leaf message."""
    cls = FIELDS[part.kind][0]
    if part.kind in MEMBERLIST_FIELDS:
        return cls.decode(codec.unpack_body(part.raw[1:]))
    return cls.decode(messages.decode_body(part.raw[2:]))


def encoded(part: Part, record: Any) -> bytes:
    raw = record.encode()
    return codec.encode_user(raw) if part.kind.startswith("user:") else raw


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_holds_every_kind_of_message(name: str) -> None:
    kinds = {part.kind for part in all_parts(name)}
    assert kinds >= EXPECTED_KINDS, EXPECTED_KINDS - kinds
    assert len(load_fixture(name)["streams"]) == 2  # the two join push-pulls


@pytest.mark.parametrize("name", CAPTURES)
def test_serf_wrappers_rebuild_byte_for_byte(name: str) -> None:
    counts = {"compound": 0, "has_crc": 0, "compress": 0}
    for part in all_parts(name):
        if part.kind == "compound":
            inner, _ = codec.split_compound(part.raw[1:])
            assert codec.make_compound(inner) == part.raw
        elif part.kind == "has_crc":
            assert codec.add_crc(codec.strip_crc(part.raw)) == part.raw
        elif part.kind == "compress":
            assert codec.compress(codec.decompress_body(part.raw[1:])) == part.raw
        else:
            continue
        counts[part.kind] += 1
    assert min(counts.values()) > 0, counts


@pytest.mark.parametrize("name", CAPTURES)
def test_serf_messages_field_by_field_and_byte_exact(name: str) -> None:
    """pyserf's decode agrees with a plain msgpack decode on every field, and its encode gives
    back serf's bytes (Go's key order, string types and empty-field handling)."""
    seen = set()
    for part in all_parts(name):
        if part.kind not in FIELDS:
            continue
        seen.add(part.kind)
        body = msgpack.unpackb(part.raw[body_start(part):], raw=True)
        record = decoded(part)
        for attr, key in FIELDS[part.kind][1].items():
            ours = getattr(record, attr)
            default = 0 if isinstance(ours, int) else type(ours)() if ours is not None else None
            assert ours == go_value(body.get(key, default), ours), (part.kind, attr)
        assert set(body) <= set(FIELDS[part.kind][1].values())
        assert encoded(part, record) == part.raw, part.kind
    assert seen == set(FIELDS)


def test_captured_scenario_reads_back() -> None:
    """The fields say what the capture script made serf do (its README lists the steps)."""
    name = "wire-plain.json"
    capture = load_fixture(name)
    addr_a = advertised_ip(capture, "A")
    alive = [decoded(p) for p in parts_of(name, "alive")]
    assert {a.node for a in alive} == {"A", "B", "C"}
    for a in alive:
        assert (a.addr, a.port) == (advertised_ip(capture, a.node), 7946)
        assert messages.decode_tags_strict(a.meta)["name"] == a.node
        assert len(a.vsn) == 6 and a.vsn[0] <= a.vsn[2] <= a.vsn[1]  # pmin <= pcur <= pmax
    b_alive = [a for a in alive if a.node == "B"]
    changed = [a for a in b_alive if messages.decode_tags(a.meta).get("role") == "changed"]
    assert changed and min(a.incarnation for a in changed) > min(a.incarnation for a in b_alive)

    pings = [(p.record, decoded(p)) for p in parts_of(name, "ping")]
    for record, ping in pings:
        assert (ping.node, ping.source_node) == (record["dst"], record["src"])
        assert ping.source_addr == advertised_ip(capture, record["src"])
    probes = {ping.seq_no for _, ping in pings}
    probes |= {decoded(p).seq_no for p in parts_of(name, "indirect_ping")}
    assert {decoded(p).seq_no for p in parts_of(name, "ack")} <= probes

    # C was killed: suspected and declared dead by the others; B left: it declared itself dead.
    leave_seen = {k: v for k, v in capture["steps"][-2].items() if k != "t"}
    assert leave_seen == {"step": "leave-seen", "node": "B", "status": "left"}
    assert {(s.node, s.from_ in {"A", "B"}) for s in map(decoded, parts_of(name, "suspect"))
            } == {("C", True)}
    dead = {(d.node, d.from_) for d in map(decoded, parts_of(name, "dead"))}
    assert ("B", "B") in dead and {n for n, _ in dead} == {"B", "C"}
    assert any(n == "C" and f in {"A", "B"} for n, f in dead)
    assert {decoded(p).node for p in parts_of(name, "user:leave")} == {"B"}
    assert {decoded(p).node for p in parts_of(name, "user:join")} >= {"B", "C"}

    events = {(e.name, e.payload, e.cc) for e in map(decoded, parts_of(name, "user:user_event"))}
    assert events == {("deploy", b"v2", True)}  # `serf event` coalesces by default
    queries = {q.id: q for q in map(decoded, parts_of(name, "user:query"))}
    assert sorted((q.name, q.payload, q.relay_factor) for q in queries.values()) == [
        ("cq", b"q1", 0), ("cq", b"q2", 1)]
    for q in queries.values():
        assert (q.source_node, q.addr, q.port) == ("A", addr_a, 7946)
        assert q.timeout_ns == 1_000_000_000 and q.flags & messages.QUERY_FLAG_ACK
    responses = [decoded(p) for p in parts_of(name, "user:query_response")]
    for r in responses:
        query = queries[r.id]
        if r.flags & messages.QUERY_FLAG_ACK:
            assert r.payload is None
        else:
            # The `cat` handler echoes its stdin, to which serf adds a missing final newline.
            assert r.payload == query.payload + b"\n"
    assert {r.from_ for r in responses if not r.flags & messages.QUERY_FLAG_ACK} == {"A", "B", "C"}
    for part in parts_of(name, "user:relay"):
        relay = messages.Relay.decode(part.raw[2:])
        assert (relay.dest_ip, relay.dest_port, relay.dest_name) == (addr_a, 7946, "A")
        assert queries[messages.QueryResponse.decode(
            messages.decode_body(relay.inner[1:])).id].relay_factor == 1
        assert codec.encode_user(relay.encode()) == part.raw


@pytest.mark.parametrize("name", CAPTURES)
def test_serf_push_pull_streams_decode_and_re_encode(name: str) -> None:
    capture = load_fixture(name)
    for _, _, plain in streams(capture):
        assert plain[0] == MsgType.COMPRESS  # serf 0.9.4 always compresses streams
        inner = codec.decompress_body(plain[1:])
        assert codec.stream_frame_length(plain) == len(plain)
        assert inner[0] == MsgType.PUSH_PULL
        push_pull = PushPull.decode_stream(inner[1:])
        assert push_pull.join is True
        assert push_pull.encode() == inner  # header, node states and user state, byte exact
        names = {n.name for n in push_pull.nodes}
        assert names <= {"A", "B", "C"} and names
        for node in push_pull.nodes:
            assert node.addr == advertised_ip(capture, node.name) and node.port == 7946
            assert node.state == codec.NodeStateKind.ALIVE
        state = messages.PushPullState.decode_state(push_pull.user_state)
        assert set(state.status_ltimes) == names
        assert state.encode() == push_pull.user_state
    assert {record["dst"] for record in capture["streams"]} == {"A"}  # both joins went to A


def test_ping_bytes_match_a_captured_serf_ping():
    # Keys sorted, raw strings, omitempty source fields present: built anew from what the
    # scenario fixes, compared with the first ping serf sent in the capture.
    capture = load_fixture("wire-plain.json")
    sent = parts_of("wire-plain.json", "ping")[0]
    seq_no = msgpack.unpackb(sent.raw[1:], raw=True)[b"SeqNo"]
    src, dst = sent.record["src"], sent.record["dst"]
    ping = Ping(seq_no, dst, advertised_ip(capture, src), 7946, src)
    assert ping.encode() == sent.raw


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
    q.queue(b"aaaa", key="n1", on_finished=lambda when: finished.append(("old-n1", when)),
            now=1.0)
    q.queue(b"bb", key="n2", now=1.0)
    q.queue(b"cccccc", key="n1", on_finished=lambda when: finished.append(("new-n1", when)),
            now=2.0)
    assert finished == [("old-n1", 2.0)]  # replaced by the newer message about n1
    assert q.get(2, 100, 3.0) == [b"cccccc", b"bb"]  # larger first among equal transmits
    assert q.get(2, 5, 4.0) == [b"bb"]  # skips what does not fit
    assert q.get(2, 100, 5.0) == [b"cccccc"]
    assert finished == [("old-n1", 2.0), ("new-n1", 5.0)]
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
