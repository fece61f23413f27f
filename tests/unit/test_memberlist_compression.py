"""Datagrams too small to gain from LZW go out uncompressed, without the attempt; bigger ones
are compressed as memberlist does, and a receiver takes either (issue 11: LZW was 35-60 % of
an agent's join-storm CPU, and 42 % of its datagrams were sent plain after a wasted try)."""

from __future__ import annotations

from pyserf.memberlist import codec
from pyserf.memberlist.codec import MsgType
from pyserf.memberlist.net import COMPRESS_MIN_SIZE
from pyserf.memberlist.types import SendPacket
from tests.unit.test_state_transitions import ML, alive

PEER = ("10.0.0.2", 7946)


def sent(h: ML) -> list[bytes]:
    return [a.data for a in h.ml.take_actions() if isinstance(a, SendPacket)]


def test_a_small_datagram_is_sent_plain_without_trying_lzw(monkeypatch):
    tries: list[int] = []
    compress = codec.compress
    monkeypatch.setattr(codec, "compress", lambda data: tries.append(len(data)) or compress(data))
    h = ML()
    ping = codec.Ping(1, "peer", codec.ip_to_bytes("10.0.0.1"), 7946, "me").encode()
    assert len(ping) < COMPRESS_MIN_SIZE
    h.ml._raw_send(PEER, ping, None, 1.0)
    assert sent(h) == [ping] and tries == []


def test_a_datagram_past_the_threshold_is_compressed_when_that_is_smaller(monkeypatch):
    h = ML()
    gossip = codec.make_compound([alive(f"node-{i}", 1, f"10.0.1.{i}").encode()
                                  for i in range(1, 6)])
    assert len(gossip) >= COMPRESS_MIN_SIZE
    h.ml._raw_send(PEER, gossip, None, 1.0)
    [data] = sent(h)
    assert data[0] == MsgType.COMPRESS and len(data) < len(gossip)
    assert codec.decompress_body(data[1:]) == gossip
    # A receiver takes the compressed datagram and a plain one alike.
    receiver = ML()
    receiver.ml.receive_packet(data, PEER, 1.0)
    receiver.ml.receive_packet(alive("plain", 1, "10.0.2.1").encode(), PEER, 1.0)
    assert {f"node-{i}" for i in range(1, 6)} | {"plain"} <= set(receiver.ml.node_map)
    assert receiver.ml.drops.counts == {}


def test_compression_off_sends_everything_plain():
    h = ML()
    h.ml.config.enable_compression = False
    gossip = codec.make_compound([alive(f"node-{i}", 1, f"10.0.1.{i}").encode()
                                  for i in range(1, 6)])
    h.ml._raw_send(PEER, gossip, None, 1.0)
    assert sent(h) == [gossip]


def test_the_threshold_sits_where_lzw_stops_paying():
    """Every datagram shape under the threshold that memberlist sends often (ping, ack,
    one alive) does not shrink; five alives do."""
    ping = codec.Ping(7, "a-node", codec.ip_to_bytes("10.0.0.1"), 7946, "b-node").encode()
    ack = codec.Ack(7, None).encode()
    one = alive("a-node-name", 3, "10.0.3.4").encode()
    for msg in (ping, ack, one):
        assert len(msg) < COMPRESS_MIN_SIZE
        assert len(codec.compress(msg)) >= len(msg)
