"""Input: datagrams and streams from peers, decoded (within a budget) and handed to the
mechanism each message is for; pings, indirect pings, acks and nacks are answered here."""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import cast

import msgpack

from pyserf.memberlist import codec, security
from pyserf.memberlist.codec import (
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    MsgType,
    Nack,
    Ping,
    PushPull,
    Suspect,
)
from pyserf.memberlist.pushpull import MAX_PUSH_PULL_REQUESTS, PushPullSync
from pyserf.memberlist.types import Address, StreamError, peer_text

log = logging.getLogger("pyserf.memberlist")

# What one datagram may expand to. memberlist compresses a message that already fits a UDP
# packet, so nothing legitimate decompresses past 64 KiB; without a budget, LZW's ~2,700x ratio
# and compounds of compressed compounds turn 72 KB into hundreds of MiB.
MAX_PACKET_EXPANSION = 128 * 1024
MAX_PACKET_MESSAGES = 1024  # messages per datagram, counting every compound part
MAX_NESTING = 4  # compress(compound(...)) is the deepest memberlist itself sends

_ALIVE = int(MsgType.ALIVE)
_USER = int(MsgType.USER)


class Dispatcher(PushPullSync):
    """Packets and streams from peers, each message to the mechanism it is for."""

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        """Handle one datagram. Nothing a peer sends can raise out of here: a message that
        does not decode is dropped and counted, and so is one that trips an internal error."""
        if self.shutdown_done or not data:
            return
        self.metrics.incr("memberlist.udp.received", len(data))
        peer = peer_text(source)
        keyring = self.config.keyring
        if keyring is not None:
            try:
                data = security.decrypt(keyring, data, b"")
            except ValueError as exc:
                self.drops.drop("packet (decrypt)", peer, exc, now)
                return
        try:
            if data and data[0] == MsgType.HAS_CRC:
                data = codec.strip_crc(data)
            self._handle_command(data, source, now, 0, _Budget())
            self._heard(now)
        except DecodeError as exc:
            self.drops.drop("packet", peer, exc, now)
        except Exception as exc:
            log.debug("memberlist: internal error handling a packet from %s", peer, exc_info=True)
            self.drops.drop("packet (internal error)", peer, exc, now)

    def _handle_command(self, data: bytes, source: Address, now: float, depth: int,
                        budget: _Budget) -> None:
        if not data:
            raise DecodeError("empty message")
        if depth > MAX_NESTING:
            raise DecodeError("messages nested too deeply")
        budget.messages -= 1
        if budget.messages < 0:
            raise DecodeError(f"more than {MAX_PACKET_MESSAGES} messages in one packet")
        kind = data[0]
        # Most messages are alives and serf's user messages: tested first, and the body is
        # sliced only where needed (the alive decoder is memoised by the whole message).
        if kind == _ALIVE:
            # The type byte says which record decode_gossip returns.
            self._alive_node(cast(Alive, codec.decode_gossip(data)), now)
            return
        body = data[1:]
        if kind == _USER:
            self.delegate.notify_msg(body, now, source)
        elif kind == MsgType.COMPOUND:
            parts, truncated = codec.split_compound(body)
            if truncated:
                self.drops.drop("compound part (truncated)", peer_text(source),
                                f"{truncated} truncated messages", now)
            for part in parts:
                try:
                    if part and part[0] == _ALIVE and depth < MAX_NESTING and budget.messages > 0:
                        # The usual part, without a call of its own: the checks below are
                        # the ones _handle_command makes before it gets to an alive.
                        budget.messages -= 1
                        self._alive_node(cast(Alive, codec.decode_gossip(part)), now)
                    else:
                        self._handle_command(part, source, now, depth + 1, budget)
                except DecodeError as exc:
                    if budget.messages < 0:
                        raise
                    self.drops.drop("compound part", peer_text(source), exc, now)
        elif kind == MsgType.COMPRESS:
            if budget.expansion <= 0:
                raise DecodeError("packet expands past its decompression budget")
            try:
                inner = codec.decompress_body(body, budget.expansion)
            except DecodeError:
                budget.expansion = 0  # a failed expansion spent the rest of the allowance
                raise
            budget.expansion -= len(inner)
            self._handle_command(inner, source, now, depth + 1, budget)
        elif kind == MsgType.PING:
            self._handle_ping(Ping.decode(codec.unpack_body(body)), source, now)
        elif kind == MsgType.INDIRECT_PING:
            self._handle_indirect_ping(IndirectPing.decode(codec.unpack_body(body)), source, now)
        elif kind == MsgType.ACK:
            self._handle_ack(Ack.decode(codec.unpack_body(body)), now)
        elif kind == MsgType.NACK:
            self._handle_nack(Nack.decode(codec.unpack_body(body)), now)
        elif kind == MsgType.SUSPECT:
            self._suspect_node(cast(Suspect, codec.decode_gossip(data)), now)
        elif kind == MsgType.DEAD:
            self._dead_node(cast(Dead, codec.decode_gossip(data)), now)
        else:
            raise DecodeError(f"msg type ({kind}) not supported")

    def _reply_address(self, source_addr: bytes, source_port: int, fallback: Address) -> Address:
        if source_addr and source_port:
            try:
                return (codec.ip_from_bytes(source_addr), source_port)
            except DecodeError:
                pass
        return fallback

    def _handle_ping(self, ping: Ping, source: Address, now: float) -> None:
        if ping.node and ping.node != self.config.name:
            log.warning("memberlist: Got ping for unexpected node '%s' from=%s:%d",
                        ping.node, *source)
            return
        ack = Ack(ping.seq_no, self.delegate.ack_payload())
        self._send_piggybacked(self._reply_address(ping.source_addr, ping.source_port, source),
                               ack.encode(), now)

    def _handle_indirect_ping(self, ind: IndirectPing, source: Address, now: float) -> None:
        reply_to = self._reply_address(ind.source_addr, ind.source_port, source)
        try:
            target = (codec.ip_from_bytes(ind.target), ind.port)
        except DecodeError as exc:
            log.error("memberlist: Bad indirect ping target: %s", exc)
            return
        seq = self._next_seq()
        me = self.local_node
        answered = False

        def on_ack(payload: bytes | None, when: float) -> None:
            nonlocal answered
            answered = True
            self._send_piggybacked(reply_to, Ack(ind.seq_no, None).encode(), when)

        self._set_ack_handler(seq, on_ack, None, now + self.timing.probe_timeout)
        ping = Ping(seq, ind.node, codec.ip_to_bytes(me.addr), me.port, me.name)
        self._send_piggybacked(target, ping.encode(), now)
        if ind.nack:
            def maybe_nack(when: float) -> None:
                if not answered:
                    self._send_piggybacked(reply_to, Nack(ind.seq_no).encode(), when)
            self.scheduler.call_at(now + self.timing.probe_timeout, maybe_nack)

    def _handle_ack(self, ack: Ack, now: float) -> None:
        handler = self._ack_handlers.pop(ack.seq_no, None)
        if handler is None:
            return
        if handler.timer:
            handler.timer.cancel()
        handler.on_ack(ack.payload, now)

    def _handle_nack(self, nack: Nack, now: float) -> None:
        handler = self._ack_handlers.get(nack.seq_no)
        if handler is not None and handler.on_nack is not None:
            handler.on_nack(now)

    def handle_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        """Answer one incoming stream message; returns the reply payload (or None)."""
        if self.shutdown_done:
            return None
        peer = peer_text(source)
        try:
            kind, body = self._open_stream_message(data)
            self._heard(now)
        except (StreamError, DecodeError) as exc:
            self.drops.drop("stream", peer, exc, now)
            return self._stream_payload(codec.encode_err(str(exc)[:codec.MAX_ERROR_TEXT]))
        except Exception as exc:
            log.debug("memberlist: internal error opening a stream from %s", peer, exc_info=True)
            self.drops.drop("stream (internal error)", peer, exc, now)
            return None
        try:
            if kind == MsgType.PUSH_PULL:
                if self._pending_push_pulls >= MAX_PUSH_PULL_REQUESTS:
                    log.error("memberlist: Too many pending push/pull requests")
                    return None
                # As memberlist does, our state goes back as it was before the merge; encoded
                # first, it tells the decoder which of the peer's entries it can leave out.
                replies: list[bytes] = []

                def own_entries(join: bool) -> Container[bytes]:
                    state, own = self._encode_local_state(join, now)
                    replies.append(state)
                    return () if join else own()

                remote = PushPull.decode_stream(body, own_entries)
                log.debug("memberlist: Stream connection from=%s", peer)
                reply = self._stream_payload(replies[0])
                self._merge_remote(remote, now, source)
                return reply
            if kind == MsgType.PING:
                ping = Ping.decode(codec.unpack_body(body))
                if ping.node and ping.node != self.config.name:
                    log.warning("memberlist: Got ping for unexpected node %s from=%s",
                                ping.node, peer)
                    return None
                return self._stream_payload(Ack(ping.seq_no, None).encode())
            if kind == MsgType.USER:
                header_len = _msgpack_len(body)
                self.delegate.notify_msg(body[header_len:], now, source)
                return None
            raise DecodeError(f"invalid stream msgType ({kind})")
        except DecodeError as exc:
            self.drops.drop("stream", peer, exc, now)
        except Exception as exc:
            log.debug("memberlist: internal error handling a stream from %s", peer, exc_info=True)
            self.drops.drop("stream (internal error)", peer, exc, now)
        return None

    def stream_reply(self, stream_id: int, data: bytes, now: float) -> None:
        """The reply to a stream we opened."""
        wait = self._streams.pop(stream_id, None)
        if wait is None:
            return
        try:
            kind, body = self._open_stream_message(data)
            self._heard(now)
        except (StreamError, DecodeError) as exc:
            wait.on_error(str(exc), now)
            return
        except Exception as exc:
            log.exception("memberlist: internal error reading a stream reply")
            wait.on_error(f"internal error: {exc}", now)
            return
        try:
            wait.on_reply(kind, body, now)
        except Exception as exc:
            # The reply was hostile in a way decoding did not catch; whoever waits (a join,
            # a fallback ping) must still hear an outcome.
            log.exception("memberlist: internal error handling a stream reply")
            wait.on_error(f"internal error: {exc}", now)

    def stream_failed(self, stream_id: int, error: str, now: float) -> None:
        wait = self._streams.pop(stream_id, None)
        if wait is not None:
            try:
                wait.on_error(error, now)
            except Exception:
                log.exception("memberlist: internal error reporting a failed stream")


def _msgpack_len(data: bytes) -> int:
    """Length of the first msgpack object in ``data`` (a reliable user message header)."""
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data)
    try:
        unpacker.skip()
    except (msgpack.OutOfData, ValueError) as exc:
        raise DecodeError(f"malformed user message header: {exc}") from exc
    return unpacker.tell()


class _Budget:
    """What is left of one datagram's allowance for expansion and message count."""

    __slots__ = ("expansion", "messages")

    def __init__(self) -> None:
        self.expansion = MAX_PACKET_EXPANSION
        self.messages = MAX_PACKET_MESSAGES
