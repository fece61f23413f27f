"""The decoders' memos and the simulator's fast paths change cost, never results.

Gossip records, push-pull entries, serf intents and tags are remembered by their bytes; the
gossip candidates are not rebuilt on every round. Each test compares with the plain path.
"""

from __future__ import annotations

import random

import pytest

from pyserf.memberlist import codec, fields
from pyserf.memberlist.codec import Alive, DecodeError, NodeStateKind, PushNodeState, PushPull
from pyserf.serf import messages
from pyserf.sim.network import SimNetwork, build_cluster

VSN = bytes((1, 5, 2, 2, 5, 5))


def test_a_gossip_record_is_decoded_once_and_cannot_be_changed():
    data = Alive(3, "memo-a", bytes((10, 0, 0, 1)), 7946, b"", VSN).encode()
    first = codec.decode_gossip(data)
    assert first == Alive.decode(codec.unpack_body(data[1:]))
    assert codec.decode_gossip(bytes(data)) is first  # equal bytes, shared record
    with pytest.raises(AttributeError):
        first.incarnation = 4  # type: ignore[misc]


def test_a_bad_gossip_message_is_refused_every_time_and_never_remembered():
    bad = Alive(3, "bad\x07name", bytes((10, 0, 0, 1)), 7946, b"", VSN).encode()
    for _ in range(2):
        with pytest.raises(DecodeError, match="control characters"):
            codec.decode_gossip(bad)
    assert bad not in codec._decoded


def test_the_gossip_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(codec, "DECODE_MEMO_LIMIT", 8)
    for i in range(50):
        codec.decode_gossip(Alive(i, f"bound-{i}", bytes((10, 0, 0, 1)), 7946, b"",
                                  VSN).encode())
        assert len(codec._decoded) <= 8


def test_push_pull_entries_decode_the_same_from_the_memo():
    nodes = [PushNodeState(f"pp-{i}", bytes((10, 0, 0, i)), 7946, b"\xff\x80", i, i % 4, VSN)
             for i in range(5)]
    body = PushPull(True, nodes, b"user").encode()[1:]
    assert PushPull.decode_stream(body) == PushPull(True, nodes, b"user")
    again = PushPull.decode_stream(body)  # every entry from the memo now
    assert again == PushPull(True, nodes, b"user")
    for cut in (len(body) - 5, len(body) // 2):
        with pytest.raises(DecodeError, match="truncated"):
            PushPull.decode_stream(body[:cut])
    # A memoised entry inside a message that is bad elsewhere does not make it good.
    bad = PushPull(True, [*nodes, PushNodeState("x\x00", b"\x01\x02\x03\x04", 1, b"", 1, 0,
                                                VSN)]).encode()[1:]
    with pytest.raises(DecodeError, match="control characters"):
        PushPull.decode_stream(bad)


def test_encoded_push_pull_entries_match_the_record_encoding():
    state = PushNodeState("enc", bytes((192, 168, 1, 9)), 7000, b"m", 9, 1, VSN)
    entry = codec.node_state_entry("enc", "192.168.1.9", 7000, b"m", 9, NodeStateKind.SUSPECT,
                                   *VSN)
    assert codec.encode_push_pull(False, [entry], b"st") == \
        PushPull(False, [state], b"st").encode()


def test_memoised_alive_encodings_match_the_fields_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(codec, "DECODE_MEMO_LIMIT", 8)
    for i in range(40):
        alive = Alive(i, f"enc-{i % 12}", bytes((10, 0, 0, i)), 7946 + i, b"m" * (i % 3), VSN)
        plain = codec.encode(codec.MsgType.ALIVE, {
            "Addr": alive.addr, "Incarnation": alive.incarnation, "Meta": alive.meta,
            "Node": alive.node, "Port": alive.port, "Vsn": alive.vsn})
        assert alive.encode() == plain
        assert alive.encode() is alive.encode()  # remembered
        assert codec.decode_gossip(plain) == alive
        assert len(codec._alive_wire) <= 8
    # A changed field is another message, not the remembered one.
    assert Alive(1, "enc-1", bytes((10, 0, 0, 1)), 7947, b"m", VSN).encode() != \
        Alive(2, "enc-1", bytes((10, 0, 0, 1)), 7947, b"m", VSN).encode()


@pytest.mark.parametrize("members", [0, 1, 15, 16, 300, 65_536])
def test_serf_states_from_packed_entries_match_the_plain_encoding(members):
    rng = random.Random(members)
    status = {f"m{i}": rng.choice((0, 1, 2**32, 2**64 - 1, rng.randrange(2**64)))
              for i in range(members)}
    events: list[messages.EventSlot | None] = [None, (5, [("deploy", b"\x00x")]), None]
    plain = messages.PushPullState(7, status, ["gone"], 9, events, 11).encode()
    pairs = list(status.items())
    for name, ltime in pairs[::2]:  # half of them remembered before, half packed now
        messages.status_entry(name, ltime)
    entries = messages.status_entries(pairs)
    assert entries == [messages.status_entry(name, ltime) for name, ltime in pairs]
    assert messages.PushPullState.encode_with(entries, 7, ["gone"], 9, events, 11) == plain
    decoded = messages.PushPullState.decode_state(plain)
    assert decoded.status_ltimes == status and decoded.left_members == ["gone"]


def test_the_serf_status_entry_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(messages, "STATE_NAMES_LIMIT", 8)
    for i in range(50):
        assert messages.status_entry(f"s{i}", i) == codec.pack(f"s{i}") + codec.pack(i)
        assert len(messages._status_entries) <= 8


def test_addresses_round_trip_through_the_caches():
    for ip in ("10.1.2.3", "::1", "fe80::1", "::ffff:10.9.8.7"):
        raw = codec.ip_to_bytes(ip)
        assert raw == codec.ip_to_bytes(ip)
        text = codec.ip_from_bytes(raw)
        assert text == (ip if ip != "::ffff:10.9.8.7" else "10.9.8.7")
        assert fields.known_ip_text(raw) == text
    with pytest.raises(DecodeError):
        codec.ip_from_bytes(b"\x01\x02\x03")


def test_intents_and_tags_are_shared_records():
    join = messages.Join(12, "intent-a").encode()
    first = messages.decode_intent(join)
    assert first == messages.Join(12, "intent-a") and messages.decode_intent(join) is first
    leave = messages.decode_intent(messages.Leave(13, "intent-a", True).encode())
    assert leave == messages.Leave(13, "intent-a", True)
    meta = messages.encode_tags({"role": "web", "dc": "x"}, 5)
    tags = messages.decode_tags_strict(meta)
    assert tags == {"role": "web", "dc": "x"} and messages.decode_tags_strict(meta) is tags
    with pytest.raises(DecodeError):
        messages.decode_tags_strict(b"\xff\x93")  # magic, then not a map: refused each time
    with pytest.raises(DecodeError):
        messages.decode_tags_strict(b"\xff\x93")


def _reference_candidates(ml, now: float) -> list:
    """The gossip candidates as the plain filter computes them."""
    limit = ml.timing.gossip_to_the_dead_time
    return [n for n in ml.nodes if n.name != ml.config.name and (
        n.state in (NodeStateKind.ALIVE, NodeStateKind.SUSPECT)
        or (n.state == NodeStateKind.DEAD and now - n.state_change <= limit))]


def test_gossip_candidates_follow_every_state_change():
    net = build_cluster(12, seed=5)
    net.run_until(net.now + 5)
    rng = random.Random(3)
    nodes = list(net.by_name.values())
    for step in range(40):
        victim = rng.choice(nodes[1:])
        if victim.up and rng.random() < 0.3:
            net.crash(victim)
        net.run_until(net.now + rng.uniform(0.1, 8))
        for node in nodes:
            if not node.up:
                continue
            ml = node.serf.memberlist
            got = ml._gossip_candidates(net.now)
            assert list(got) == _reference_candidates(ml, net.now), step
            assert len(got) == len(list(got))
            if got:
                assert got[-1] is list(got)[-1] and got[0] is list(got)[0]
    # Dead members age out of the candidates with time alone (no state change).
    ml = nodes[0].serf.memberlist
    later = net.now + ml.timing.gossip_to_the_dead_time + 1
    assert list(ml._gossip_candidates(later)) == _reference_candidates(ml, later)
    assert all(n.state != NodeStateKind.DEAD for n in ml._gossip_candidates(later))


def test_the_simulator_sends_uncompressed_and_estimates_the_wire():
    net = SimNetwork(seed=2, compression_sample=4)
    nodes = [net.add_node(f"n{i}", f"10.0.0.{i + 1}") for i in range(8)]
    start = net.snapshot_counters()
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(net.now + 10)
    assert all(not n.serf.memberlist.config.enable_compression for n in nodes)
    end = net.snapshot_counters()
    delta = end.delta(start)
    assert 0 < delta["udp_sampled_compressed"] <= delta["udp_sampled_bytes"]
    assert 0 < delta["tcp_sampled_compressed"] < delta["tcp_sampled_bytes"]
    rates = end.rates(start)
    assert 0 < rates["compressed_bytes_per_node_s_est"] < rates["bytes_per_node_s"]
    squeezed = SimNetwork(seed=2, compression=True)
    squeezed.add_node("a", "10.0.0.1")
    b = squeezed.add_node("b", "10.0.0.2")
    squeezed.join(b, squeezed.by_name["a"])
    squeezed.run_until(5)
    total = squeezed.snapshot_counters().total
    assert total["udp_sampled_bytes"] == total["tcp_sampled_bytes"] == 0  # sent compressed
