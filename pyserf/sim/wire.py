"""Reading what simulated nodes put on the wire: the type a stream opens with, the messages
a datagram carries (through compound, compressed and encrypted envelopes)."""

from __future__ import annotations

from pyserf.memberlist import codec, security
from pyserf.memberlist.codec import MsgType


def stream_kind(data: bytes, keyring: security.Keyring | None = None) -> int | None:
    """The message type a stream opens with, looking through encryption and compression.

    Compressed streams are not inflated: the writer's LZW stream starts with a 9-bit clear
    code and then the first byte as a 9-bit literal, so bits 9..17 are the type."""
    try:
        if data[:1] == bytes((MsgType.ENCRYPT,)):
            if keyring is None:
                return None
            data = security.decrypt(keyring, data[5:], data[:5])
        if data[:1] == bytes((MsgType.COMPRESS,)):
            buf = codec.unpack_body(data[1:]).get(b"Buf", b"")
            if not isinstance(buf, bytes) or len(buf) < 3:
                return None
            first = (int.from_bytes(buf[:3], "little") >> 9) & 0x1FF
            return first if first < 256 else None
        return data[0] if data else None
    except (ValueError, codec.DecodeError):
        return None


def udp_messages(data: bytes, keyring: security.Keyring | None = None) -> list[bytes]:
    """The memberlist messages one datagram carries (compound and compressed parts opened),
    each starting with its type byte; for counting what a node actually sent."""
    if keyring is not None:
        data = security.decrypt(keyring, data, b"")
    out: list[bytes] = []
    pending = [data]
    while pending:
        msg = pending.pop()
        if not msg:
            continue
        if msg[0] == MsgType.HAS_CRC:
            msg = codec.strip_crc(msg)
        if msg[0] == MsgType.COMPOUND:
            parts, _ = codec.split_compound(msg[1:])
            pending.extend(reversed(parts))
        elif msg[0] == MsgType.COMPRESS:
            pending.append(codec.decompress_body(msg[1:]))
        else:
            out.append(msg)
    return out
