"""memberlist message encoding: type bytes, msgpack bodies, compound, CRC and compression.

Gossip traffic follows go-msgpack's old spec: strings and byte slices are both written as
"raw" strings (never str8, never bin), so bodies are packed with ``use_bin_type=False`` and
unpacked with ``raw=True``; text fields are decoded by name.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from pyserf.memberlist import lzw
from pyserf.memberlist.fields import DecodeError


class MsgType(IntEnum):
    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13


class NodeStateKind(IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


LZW_ALGO = 0
# Largest decompressed payload we accept; guards against compression bombs.
MAX_DECOMPRESSED = 32 * 1024 * 1024
COMPOUND_HEADER_OVERHEAD = 2
COMPOUND_OVERHEAD = 2  # per part: a u16 length
META_MAX_SIZE = 512


# ---------------------------------------------------------------------------------------------
# field access helpers for raw-decoded maps


def _get(body: dict, key: bytes, default: Any) -> Any:
    return body.get(key, default)


def get_str(body: dict, key: bytes) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise DecodeError(f"field {key.decode()} must be a string, got {type(value).__name__}")


def get_bytes(body: dict, key: bytes) -> bytes:
    value = body.get(key)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return bytes(value)  # Go also accepts an int array for []uint8
    raise DecodeError(f"field {key.decode()} must be bytes, got {type(value).__name__}")


def get_int(body: dict, key: bytes) -> int:
    value = body.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    raise DecodeError(f"field {key.decode()} must be an integer, got {type(value).__name__}")


def get_bool(body: dict, key: bytes) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if isinstance(value, (bool, int)):
        return bool(value)
    raise DecodeError(f"field {key.decode()} must be a bool, got {type(value).__name__}")


def unpack_body(data: bytes) -> dict:
    try:
        body = msgpack.unpackb(data, raw=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"malformed msgpack body: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError("message body is not a map")
    return body


def unpack_any(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=True, strict_map_key=False)
    except Exception as exc:
        raise DecodeError(f"malformed msgpack value: {exc}") from exc


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)


def encode(msg_type: int, body: dict) -> bytes:
    return bytes((msg_type,)) + pack(body)


# ---------------------------------------------------------------------------------------------
# addresses


def ip_to_bytes(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def ip_from_bytes(raw: bytes) -> str:
    """Accept 4-byte and 16-byte forms; an IPv4-mapped IPv6 address is shown as IPv4."""
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
        return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    raise DecodeError(f"address must be 4 or 16 bytes, got {len(raw)}")


# ---------------------------------------------------------------------------------------------
# message bodies


@dataclass(slots=True)
class Ping:
    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"Node": self.node, "SeqNo": self.seq_no}
        if self.source_addr:
            body["SourceAddr"] = self.source_addr
        if self.source_node:
            body["SourceNode"] = self.source_node
        if self.source_port:
            body["SourcePort"] = self.source_port
        return encode(MsgType.PING, body)

    @classmethod
    def decode(cls, body: dict) -> Ping:
        return cls(get_int(body, b"SeqNo"), get_str(body, b"Node"), get_bytes(body, b"SourceAddr"),
                   get_int(body, b"SourcePort"), get_str(body, b"SourceNode"))


@dataclass(slots=True)
class IndirectPing:
    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"Nack": self.nack, "Node": self.node, "Port": self.port,
                                "SeqNo": self.seq_no}
        if self.source_addr:
            body["SourceAddr"] = self.source_addr
        if self.source_node:
            body["SourceNode"] = self.source_node
        if self.source_port:
            body["SourcePort"] = self.source_port
        body["Target"] = self.target
        return encode(MsgType.INDIRECT_PING, body)

    @classmethod
    def decode(cls, body: dict) -> IndirectPing:
        return cls(get_int(body, b"SeqNo"), get_bytes(body, b"Target"), get_int(body, b"Port"),
                   get_str(body, b"Node"), get_bool(body, b"Nack"), get_bytes(body, b"SourceAddr"),
                   get_int(body, b"SourcePort"), get_str(body, b"SourceNode"))


@dataclass(slots=True)
class Ack:
    seq_no: int
    payload: bytes | None = None

    def encode(self) -> bytes:
        return encode(MsgType.ACK, {"Payload": self.payload, "SeqNo": self.seq_no})

    @classmethod
    def decode(cls, body: dict) -> Ack:
        payload = body.get(b"Payload")
        return cls(get_int(body, b"SeqNo"), get_bytes(body, b"Payload") if payload else None)


@dataclass(slots=True)
class Nack:
    seq_no: int

    def encode(self) -> bytes:
        return encode(MsgType.NACK, {"SeqNo": self.seq_no})

    @classmethod
    def decode(cls, body: dict) -> Nack:
        return cls(get_int(body, b"SeqNo"))


@dataclass(slots=True)
class Suspect:
    incarnation: int
    node: str
    from_: str

    def encode(self) -> bytes:
        return encode(MsgType.SUSPECT,
                      {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node})

    @classmethod
    def decode(cls, body: dict) -> Suspect:
        return cls(get_int(body, b"Incarnation"), get_str(body, b"Node"), get_str(body, b"From"))


@dataclass(slots=True)
class Dead:
    incarnation: int
    node: str
    from_: str

    def encode(self) -> bytes:
        return encode(MsgType.DEAD,
                      {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node})

    @classmethod
    def decode(cls, body: dict) -> Dead:
        return cls(get_int(body, b"Incarnation"), get_str(body, b"Node"), get_str(body, b"From"))


@dataclass(slots=True)
class Alive:
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: bytes

    def encode(self) -> bytes:
        return encode(MsgType.ALIVE, {"Addr": self.addr, "Incarnation": self.incarnation,
                                      "Meta": self.meta, "Node": self.node, "Port": self.port,
                                      "Vsn": self.vsn})

    @classmethod
    def decode(cls, body: dict) -> Alive:
        return cls(get_int(body, b"Incarnation"), get_str(body, b"Node"), get_bytes(body, b"Addr"),
                   get_int(body, b"Port"), get_bytes(body, b"Meta"), get_bytes(body, b"Vsn"))


@dataclass(slots=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: int
    vsn: bytes

    def to_wire(self) -> dict:
        return {"Addr": self.addr, "Incarnation": self.incarnation, "Meta": self.meta,
                "Name": self.name, "Port": self.port, "State": self.state, "Vsn": self.vsn}

    @classmethod
    def decode(cls, body: dict) -> PushNodeState:
        return cls(get_str(body, b"Name"), get_bytes(body, b"Addr"), get_int(body, b"Port"),
                   get_bytes(body, b"Meta"), get_int(body, b"Incarnation"),
                   get_int(body, b"State"), get_bytes(body, b"Vsn"))


@dataclass(slots=True)
class PushPull:
    join: bool
    nodes: list[PushNodeState] = field(default_factory=list)
    user_state: bytes = b""

    def encode(self) -> bytes:
        parts = [bytes((MsgType.PUSH_PULL,)),
                 pack({"Join": self.join, "Nodes": len(self.nodes),
                       "UserStateLen": len(self.user_state)})]
        parts.extend(pack(n.to_wire()) for n in self.nodes)
        parts.append(self.user_state)
        return b"".join(parts)

    @classmethod
    def decode_stream(cls, data: bytes) -> PushPull:
        """Decode the body that follows the push-pull type byte."""
        unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(data) + 1)
        unpacker.feed(data)
        try:
            header = next(unpacker)
            if not isinstance(header, dict):
                raise DecodeError("push-pull header is not a map")
            count = get_int(header, b"Nodes")
            user_len = get_int(header, b"UserStateLen")
            if count < 0 or count > 1_000_000 or user_len < 0:
                raise DecodeError("push-pull header has impossible sizes")
            nodes = []
            for _ in range(count):
                raw = next(unpacker)
                if not isinstance(raw, dict):
                    raise DecodeError("push-pull node state is not a map")
                nodes.append(PushNodeState.decode(raw))
        except StopIteration as exc:
            raise DecodeError("push-pull message is truncated") from exc
        except (msgpack.ExtraData, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"malformed push-pull: {exc}") from exc
        offset = unpacker.tell()
        user_state = data[offset:offset + user_len]
        if len(user_state) != user_len:
            raise DecodeError("push-pull user state is truncated")
        return cls(get_bool(header, b"Join"), nodes, user_state)


def encode_err(message: str) -> bytes:
    return encode(MsgType.ERR, {"Error": message})


def encode_user(payload: bytes) -> bytes:
    return bytes((MsgType.USER,)) + payload


# ---------------------------------------------------------------------------------------------
# wrappers


def make_compound(messages: list[bytes]) -> bytes:
    if len(messages) > 255:
        raise ValueError("a compound message holds at most 255 parts")
    header = bytes((MsgType.COMPOUND, len(messages)))
    lengths = b"".join(struct.pack(">H", len(m)) for m in messages)
    return header + lengths + b"".join(messages)


def split_compound(data: bytes) -> tuple[list[bytes], int]:
    """Split a compound body (after the type byte); returns (parts, number truncated)."""
    if not data:
        raise DecodeError("missing compound length byte")
    count = data[0]
    if len(data) < 1 + 2 * count:
        raise DecodeError("truncated compound length slice")
    offset = 1 + 2 * count
    parts: list[bytes] = []
    for i in range(count):
        (length,) = struct.unpack_from(">H", data, 1 + 2 * i)
        if offset + length > len(data):
            return parts, count - i
        parts.append(data[offset:offset + length])
        offset += length
    return parts, 0


def add_crc(data: bytes) -> bytes:
    return bytes((MsgType.HAS_CRC,)) + struct.pack(">I", zlib.crc32(data)) + data


def strip_crc(data: bytes) -> bytes:
    """Verify and strip a CRC wrapper (data starts with the HAS_CRC type byte)."""
    if len(data) < 5:
        raise DecodeError("CRC wrapper is truncated")
    (expected,) = struct.unpack_from(">I", data, 1)
    payload = data[5:]
    if zlib.crc32(payload) != expected:
        raise DecodeError("invalid checksum")
    return payload


def compress(data: bytes) -> bytes:
    return encode(MsgType.COMPRESS, {"Algo": LZW_ALGO, "Buf": lzw.compress(data)})


def decompress_body(body_bytes: bytes) -> bytes:
    """Decode a compress message body (after the type byte) into the wrapped message."""
    body = unpack_body(body_bytes)
    algo = get_int(body, b"Algo")
    if algo != LZW_ALGO:
        raise DecodeError(f"cannot decompress unknown algorithm {algo}")
    try:
        return lzw.decompress(get_bytes(body, b"Buf"), MAX_DECOMPRESSED)
    except ValueError as exc:
        raise DecodeError(f"failed to decompress payload: {exc}") from exc


def stream_frame_length(buf: bytes) -> int | None:
    """Length of the first complete stream message in ``buf``, or None if more is needed.

    The sender of a stream keeps its side open while waiting for our reply, so the reader
    has to know where a message ends without relying on EOF.
    """
    if not buf:
        return None
    kind = buf[0]
    if kind == MsgType.ENCRYPT:
        if len(buf) < 5:
            return None
        (length,) = struct.unpack_from(">I", buf, 1)
        total = 5 + length
        return total if len(buf) >= total else None
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
    unpacker.feed(buf[1:])
    try:
        if kind in (MsgType.COMPRESS, MsgType.PING, MsgType.ACK, MsgType.ERR):
            unpacker.skip()
            return 1 + unpacker.tell()
        if kind == MsgType.PUSH_PULL:
            header = unpacker.unpack()
            if not isinstance(header, dict):
                raise DecodeError("push-pull header is not a map")
            for _ in range(max(0, get_int(header, b"Nodes"))):
                unpacker.skip()
            total = 1 + unpacker.tell() + max(0, get_int(header, b"UserStateLen"))
            return total if len(buf) >= total else None
        if kind == MsgType.USER:
            header = unpacker.unpack()
            if not isinstance(header, dict):
                raise DecodeError("user message header is not a map")
            total = 1 + unpacker.tell() + max(0, get_int(header, b"UserMsgLen"))
            return total if len(buf) >= total else None
    except msgpack.OutOfData:
        return None
    except (msgpack.FormatError, msgpack.StackError, ValueError) as exc:
        raise DecodeError(f"malformed stream message: {exc}") from exc
    raise DecodeError(f"unsupported stream message type {kind}")
