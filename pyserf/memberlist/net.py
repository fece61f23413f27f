"""The sending side: datagrams (compression, CRC, encryption, piggybacked gossip), ack handlers
for pings in flight, and stream framing for the streams we open and answer."""

from __future__ import annotations

from collections.abc import Callable

from pyserf.memberlist import codec, fields, security
from pyserf.memberlist.base import AckHandler, MemberlistBase, StreamWait
from pyserf.memberlist.broadcast import BroadcastQueue, get_from_all
from pyserf.memberlist.codec import COMPOUND_HEADER_OVERHEAD, COMPOUND_OVERHEAD, MsgType
from pyserf.memberlist.types import Address, Node, OpenStream, SendPacket, StreamError, peer_text

# Datagrams shorter than this are sent uncompressed (serf accepts both): measured on a 50-node
# join storm's traffic, none of 1,425 datagrams under 80 bytes (pings, acks) shrank and 5 % of
# the 2,529 under 160 did, by a few bytes; from 220 bytes on every one did, by 20-60 %.
COMPRESS_MIN_SIZE = 160


class Net(MemberlistBase):
    """Sending: datagrams, piggybacked gossip, ack handlers and stream framing."""

    def _broadcast_queues(self) -> list[BroadcastQueue]:
        """Ours, then the delegate's (serf's intents, queries and events)."""
        return [self.broadcasts, *self.delegate.broadcast_queues()]

    def _get_broadcasts(self, overhead: int, limit: int, now: float) -> list[bytes]:
        """Messages for one datagram from every queue, in one order: fewest transmissions
        first, and on a tie ours before serf's (the largest that fits, newest first, within
        one queue and tier). hashicorp/memberlist fills a datagram from its own queue before
        asking serf's, as pyserf did: once a backlog of its retransmissions (200 after a
        200-node join storm, each sent 12 times) rode only the regular rounds, a new user
        event waited behind it for seconds."""
        ours, *theirs = self._broadcast_queues()
        if not any(map(len, theirs)):
            return ours.get(overhead, limit, now)
        # Serf messages travel as memberlist user messages: one more byte each.
        mine, *user = get_from_all([(ours, overhead), *((q, overhead + 1) for q in theirs)],
                                   limit, now)
        for msgs in user:
            mine.extend(map(codec.encode_user, msgs))
        return mine

    def _send_piggybacked(self, addr: Address, msg: bytes, now: float) -> None:
        avail = self.timing.udp_buffer_size - COMPOUND_HEADER_OVERHEAD - len(msg)
        if self.config.keyring is not None:
            avail -= security.ENCRYPTION_OVERHEAD_V1
        extra = self._get_broadcasts(COMPOUND_OVERHEAD, avail, now)
        if extra:
            msg = codec.make_compound([msg, *extra[:254]])
        self._raw_send(addr, msg, None, now)

    def _raw_send(self, addr: Address, msg: bytes, node: Node | None, now: float) -> None:
        if not 0 < addr[1] <= fields.U16_MAX:
            # Rate limited: a peer can name port 0 in indirect pings as often as it likes.
            self.drops.drop("send (invalid port)", peer_text(addr), "not sending", now)
            return
        if self.config.enable_compression and len(msg) >= COMPRESS_MIN_SIZE:
            compressed = codec.compress(msg)
            if len(compressed) < len(msg):
                msg = compressed
        if node is not None and node.pmax >= 5:
            msg = codec.add_crc(msg)
        if self.config.keyring is not None:
            msg = security.encrypt(self.config.keyring, msg, b"")
        self.metrics.incr("memberlist.udp.sent", len(msg))
        self._actions.append(SendPacket(addr, msg))

    def _set_ack_handler(self, seq: int, on_ack: Callable[[bytes | None, float], None],
                         on_nack: Callable[[float], None] | None, expires: float) -> None:
        handler = AckHandler(on_ack, on_nack)

        def expire(when: float) -> None:
            if self._ack_handlers.get(seq) is handler:
                del self._ack_handlers[seq]

        handler.timer = self.scheduler.call_at(expires, expire)
        self._ack_handlers[seq] = handler

    def _stream_payload(self, msg: bytes) -> bytes:
        if self.config.enable_compression:
            msg = codec.compress(msg)
        keyring = self.config.keyring
        if keyring is not None:
            length = len(msg) + security.ENCRYPTION_OVERHEAD_V1
            header = bytes((MsgType.ENCRYPT,)) + length.to_bytes(4, "big")
            msg = header + security.encrypt(keyring, msg, header)
        return msg

    def _open_stream_message(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            raise StreamError("EOF")
        keyring = self.config.keyring
        if data[0] == MsgType.ENCRYPT:
            if keyring is None:
                raise StreamError("Remote state is encrypted and encryption is not configured")
            try:
                data = security.decrypt(keyring, data[5:], data[:5])
            except ValueError as exc:
                raise StreamError(str(exc)) from exc
        elif keyring is not None:
            raise StreamError("Encryption is configured but remote state is not encrypted")
        if not data:
            raise StreamError("empty stream message")
        if data[0] == MsgType.COMPRESS:
            data = codec.decompress_body(data[1:])
            if not data:
                raise StreamError("empty compressed stream message")
        return data[0], data[1:]

    def _open_stream(self, addr: Address, msg: bytes, deadline: float,
                     on_reply: Callable[[int, bytes, float], None],
                     on_error: Callable[[str, float], None]) -> None:
        self._stream_seq += 1
        sid = self._stream_seq
        self._streams[sid] = StreamWait(on_reply, on_error)
        self._actions.append(OpenStream(sid, addr, self._stream_payload(msg), deadline))
