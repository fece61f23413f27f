"""memberlist message encoding: type bytes, msgpack bodies, compound, CRC and compression.

Gossip traffic follows go-msgpack's old spec: strings and byte slices are both written as
"raw" strings (never str8, never bin), so bodies are packed with ``use_bin_type=False`` and
unpacked with ``raw=True``; text fields are decoded by name.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from pyserf.memberlist import fields, lzw

# DecodeError is re-exported: the decoders here raise it and callers catch codec.DecodeError.
from pyserf.memberlist.fields import DecodeError as DecodeError
from pyserf.memberlist.fields import WireMap


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
COMPOUND_HEADER_OVERHEAD = 2
COMPOUND_OVERHEAD = 2  # per part: a u16 length
META_MAX_SIZE = 512  # memberlist's MetaMaxSize
# memberlist's limits on what a peer may make us hold (net.go): push-pull state bytes and nodes,
# and the largest decompressed stream (user state plus an equal node budget).
MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024
MAX_PUSH_STATE_NODES = 1024 * 1024
MAX_DECOMPRESSED = 2 * MAX_PUSH_STATE_BYTES
# Vsn is six version bytes; memberlist reads the first six and ignores any more.
MAX_VSN_BYTES = 16
MAX_ACK_PAYLOAD = 64 * 1024  # a datagram cannot hold more
MAX_ERROR_TEXT = 4096
# Per-object bounds inside a stream message: a node state or header is a small map (names, a
# 512-byte meta, six version bytes); a compress body holds one big byte string, read by length.
MAX_STREAM_STR = 64 * 1024
MAX_STREAM_ITEMS = 1024
# A whole stream message we are willing to buffer: the push-pull state limit plus room for the
# encryption, compression and msgpack framing around it.
MAX_STREAM_BYTES = MAX_PUSH_STATE_BYTES + 64 * 1024


def unpack_body(data: bytes) -> WireMap:
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


def encode(msg_type: int, body: Mapping[str, object]) -> bytes:
    return bytes((msg_type,)) + pack(body)


# ---------------------------------------------------------------------------------------------
# addresses


_ip_packed: dict[str, bytes] = {}


def ip_to_bytes(ip: str) -> bytes:
    # Every push-pull packs each member's address: cache them (bounded like fields' reverse map).
    found = _ip_packed.get(ip)
    if found is None:
        found = ipaddress.ip_address(ip).packed
        fields.remember(_ip_packed, ip, found, fields.ADDRESS_CACHE_LIMIT)
    return found


def ip_from_bytes(raw: bytes) -> str:
    """Accept 4-byte and 16-byte forms; an IPv4-mapped IPv6 address is shown as IPv4."""
    return fields.ip_text(raw)


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
    def decode(cls, body: WireMap) -> Ping:
        return cls(fields.uint(body, b"SeqNo", fields.U32_MAX),
                   fields.node_name(body, b"Node", required=False),
                   fields.ip_bytes(body, b"SourceAddr", required=False),
                   fields.uint(body, b"SourcePort", fields.U16_MAX),
                   fields.node_name(body, b"SourceNode", required=False))


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
    def decode(cls, body: WireMap) -> IndirectPing:
        return cls(fields.uint(body, b"SeqNo", fields.U32_MAX), fields.ip_bytes(body, b"Target"),
                   fields.uint(body, b"Port", fields.U16_MAX),
                   fields.node_name(body, b"Node", required=False), fields.flag(body, b"Nack"),
                   fields.ip_bytes(body, b"SourceAddr", required=False),
                   fields.uint(body, b"SourcePort", fields.U16_MAX),
                   fields.node_name(body, b"SourceNode", required=False))


@dataclass(slots=True)
class Ack:
    seq_no: int
    payload: bytes | None = None

    def encode(self) -> bytes:
        return encode(MsgType.ACK, {"Payload": self.payload, "SeqNo": self.seq_no})

    @classmethod
    def decode(cls, body: WireMap) -> Ack:
        payload = fields.blob(body, b"Payload", MAX_ACK_PAYLOAD)
        return cls(fields.uint(body, b"SeqNo", fields.U32_MAX), payload or None)


@dataclass(slots=True)
class Nack:
    seq_no: int

    def encode(self) -> bytes:
        return encode(MsgType.NACK, {"SeqNo": self.seq_no})

    @classmethod
    def decode(cls, body: WireMap) -> Nack:
        return cls(fields.uint(body, b"SeqNo", fields.U32_MAX))


@dataclass(slots=True, frozen=True)
class Suspect:
    incarnation: int
    node: str
    from_: str

    def encode(self) -> bytes:
        return encode(MsgType.SUSPECT,
                      {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node})

    @classmethod
    def decode(cls, body: WireMap) -> Suspect:
        return cls(fields.uint(body, b"Incarnation", fields.U32_MAX),
                   fields.node_name(body, b"Node"), fields.node_name(body, b"From", required=False))


@dataclass(slots=True, frozen=True)
class Dead:
    incarnation: int
    node: str
    from_: str

    def encode(self) -> bytes:
        return encode(MsgType.DEAD,
                      {"From": self.from_, "Incarnation": self.incarnation, "Node": self.node})

    @classmethod
    def decode(cls, body: WireMap) -> Dead:
        return cls(fields.uint(body, b"Incarnation", fields.U32_MAX),
                   fields.node_name(body, b"Node"), fields.node_name(body, b"From", required=False))


@dataclass(slots=True, frozen=True)
class Alive:
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: bytes

    def encode(self) -> bytes:
        # Every node that learns a member re-encodes its alive to pass it on: in a simulated
        # cluster that is N encodings of one message, so they are memoised (bounded, like the
        # decode memos below).
        key = (self.incarnation, self.node, self.addr, self.port, self.meta, self.vsn)
        found = _alive_wire.get(key)
        if found is None:
            found = encode(MsgType.ALIVE, {"Addr": self.addr, "Incarnation": self.incarnation,
                                           "Meta": self.meta, "Node": self.node,
                                           "Port": self.port, "Vsn": self.vsn})
            fields.remember(_alive_wire, key, found, DECODE_MEMO_LIMIT)
        return found

    @classmethod
    def decode(cls, body: WireMap) -> Alive:
        return cls(fields.uint(body, b"Incarnation", fields.U32_MAX),
                   fields.node_name(body, b"Node"), fields.ip_bytes(body, b"Addr"),
                   fields.uint(body, b"Port", fields.U16_MAX),
                   fields.blob(body, b"Meta", META_MAX_SIZE),
                   fields.blob(body, b"Vsn", MAX_VSN_BYTES))


# Gossip records by their exact message bytes (type byte included). A cluster relays each
# alive, suspect and dead message to every node, often several times, and decoding plus field
# validation is a pure function of the bytes; the records are frozen so sharing them is safe.
# Bounded: cleared when full, since peers choose the bytes.
DECODE_MEMO_LIMIT = 4096
_decoded: dict[bytes, Alive | Suspect | Dead] = {}
# Alive messages by their fields (see Alive.encode).
_alive_wire: dict[tuple[int, str, bytes, int, bytes, bytes], bytes] = {}
_GOSSIP_TYPES: dict[int, type[Alive] | type[Suspect] | type[Dead]] = {
    MsgType.ALIVE: Alive, MsgType.SUSPECT: Suspect, MsgType.DEAD: Dead}


def decode_gossip(data: bytes) -> Alive | Suspect | Dead:
    """Decode an alive, suspect or dead message (``data`` starts with its type byte)."""
    if type(data) is not bytes:
        data = bytes(data)
    record = _decoded.get(data)
    if record is None:
        record = _GOSSIP_TYPES[data[0]].decode(unpack_body(data[1:]))
        fields.remember(_decoded, data, record, DECODE_MEMO_LIMIT)
    return record


@dataclass(slots=True, frozen=True)
class PushNodeState:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: int
    vsn: bytes

    def to_wire(self) -> dict[str, object]:
        return {"Addr": self.addr, "Incarnation": self.incarnation, "Meta": self.meta,
                "Name": self.name, "Port": self.port, "State": self.state, "Vsn": self.vsn}

    @classmethod
    def decode(cls, body: WireMap) -> PushNodeState:
        return cls(fields.node_name(body, b"Name"), fields.ip_bytes(body, b"Addr"),
                   fields.uint(body, b"Port", fields.U16_MAX),
                   fields.blob(body, b"Meta", META_MAX_SIZE),
                   fields.uint(body, b"Incarnation", fields.U32_MAX),
                   fields.uint(body, b"State", fields.U8_MAX),
                   fields.blob(body, b"Vsn", MAX_VSN_BYTES))


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
    def decode_stream(cls, data: bytes,
                      known: Callable[[bool], Container[bytes]] | None = None) -> PushPull:
        """Decode the body that follows the push-pull type byte.

        The node count and user state length are checked against memberlist's limits before
        anything is built, and the first malformed node state rejects the whole message.
        ``known``, given the header's join flag, names encoded entries to leave out: the
        receiver's own, which would merge as no-ops, so an exchange between members in sync
        costs a lookup per member instead of a decode and a merge.
        """
        if type(data) is not bytes:
            data = bytes(data)
        unpacker = msgpack.Unpacker(raw=True, strict_map_key=False,
                                    max_buffer_size=len(data) + 1, max_str_len=MAX_STREAM_STR,
                                    max_bin_len=MAX_STREAM_STR, max_array_len=MAX_STREAM_ITEMS,
                                    max_map_len=MAX_STREAM_ITEMS)
        unpacker.feed(data)
        try:
            header = next(unpacker)
            if not isinstance(header, dict):
                raise DecodeError("push-pull header is not a map")
            count, user_len = push_pull_sizes(header)
            own = known(fields.flag(header, b"Join")) if known is not None else ()
            nodes = []
            memo = _node_states.get
            tell, skip = unpacker.tell, unpacker.skip
            for _ in range(count):
                # Each exchange repeats most entries of the last one: decode an entry's bytes
                # once (with the same limits) and rebuild the record from the memo after.
                start = tell()
                skip()
                entry = data[start:tell()]
                if entry in own:
                    continue
                state = memo(entry)
                nodes.append(state if state is not None else _decode_node_state(entry))
        except (StopIteration, msgpack.OutOfData) as exc:
            raise DecodeError("push-pull message is truncated") from exc
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"malformed push-pull: {exc}") from exc
        offset = unpacker.tell()
        user_state = data[offset:offset + user_len]
        if len(user_state) != user_len:
            raise DecodeError("push-pull user state is truncated")
        return cls(fields.flag(header, b"Join"), nodes, user_state)


# Push-pull entries by their bytes (see decode_stream); the records are frozen, so shared.
_node_states: dict[bytes, PushNodeState] = {}


def _decode_node_state(entry: bytes) -> PushNodeState:
    raw = msgpack.unpackb(entry, raw=True, strict_map_key=False, max_str_len=MAX_STREAM_STR,
                          max_bin_len=MAX_STREAM_STR, max_array_len=MAX_STREAM_ITEMS,
                          max_map_len=MAX_STREAM_ITEMS)
    if not isinstance(raw, dict):
        raise DecodeError("push-pull node state is not a map")
    state = PushNodeState.decode(raw)
    fields.remember(_node_states, entry, state, DECODE_MEMO_LIMIT)
    return state


# Keyed by (name, addr, port, meta, incarnation, state, *vsn).
_entries: dict[tuple[str | bytes | int, ...], bytes] = {}


def node_state_entry(name: str, addr: str, port: int, meta: bytes, incarnation: int,
                     state: int, *vsn: int) -> bytes:
    """One member's encoded push-pull entry, memoised: an exchange encodes every member, and
    most are unchanged since the last one (or, in the simulator, since another node's)."""
    key: tuple[str | bytes | int, ...] = (name, addr, port, meta, incarnation, state, *vsn)
    found = _entries.get(key)
    if found is None:
        found = pack(PushNodeState(name, ip_to_bytes(addr), port, meta, incarnation, int(state),
                                   bytes(vsn)).to_wire())
        fields.remember(_entries, key, found, DECODE_MEMO_LIMIT)
    return found


def encode_push_pull(join: bool, entries: list[bytes], user_state: bytes) -> bytes:
    """What ``PushPull(join, nodes, user_state).encode()`` gives, from encoded entries."""
    return b"".join((bytes((MsgType.PUSH_PULL,)),
                     pack({"Join": join, "Nodes": len(entries), "UserStateLen": len(user_state)}),
                     *entries, user_state))


def push_pull_sizes(header: WireMap) -> tuple[int, int]:
    """(node count, user state length) of a push-pull header, within memberlist's limits."""
    count = fields.int64(header, b"Nodes")
    user_len = fields.int64(header, b"UserStateLen")
    if not 0 <= count <= MAX_PUSH_STATE_NODES:
        raise DecodeError(f"number of nodes in header ({count}) exceeds limit")
    if not 0 <= user_len <= MAX_PUSH_STATE_BYTES:
        raise DecodeError(f"user state length ({user_len}) exceeds limit")
    return count, user_len


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
    size = len(data)
    for i, length in enumerate(struct.unpack_from(f">{count}H", data, 1)):
        if offset + length > size:
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


def decompress_body(body_bytes: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Decode a compress message body (after the type byte) into the wrapped message."""
    body = unpack_body(body_bytes)
    algo = fields.int64(body, b"Algo")
    if algo != LZW_ALGO:
        raise DecodeError(f"cannot decompress unknown algorithm {algo}")
    try:
        return lzw.decompress(fields.blob(body, b"Buf", MAX_PUSH_STATE_BYTES), limit)
    except ValueError as exc:
        raise DecodeError(f"failed to decompress payload: {exc}") from exc


class StreamFramer:
    """Finds where one stream message ends, fed chunk by chunk, in time linear in its size.

    The sender of a stream keeps its side open while waiting for our reply, so the reader has
    to know where a message ends without relying on EOF. Each msgpack object is parsed once it
    is complete (a persistent unpacker keeps its place; an incomplete object costs only its
    header), and byte strings are skipped by length, so a message trickled in tiny chunks costs
    no more than one sent whole.
    """

    def __init__(self, max_bytes: int = MAX_STREAM_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self._unpacker: msgpack.Unpacker | None = None
        self._kind: int | None = None
        self._total: int | None = None  # known total length once the layout is parsed
        self._nodes_left = -1  # push-pull node states still to skip; -1 before the header
        self._user_len = 0

    def feed(self, chunk: bytes) -> bytes | None:
        """Add received bytes; returns the complete message once it is all here."""
        self.buf += chunk
        if len(self.buf) > self.max_bytes:
            raise DecodeError(f"stream message exceeds {self.max_bytes} bytes")
        if self._unpacker is not None and chunk:
            self._unpacker.feed(chunk)
        total = self._find_end()
        if total is None or len(self.buf) < total:
            return None
        return bytes(self.buf[:total])

    def _find_end(self) -> int | None:
        if self._total is not None:
            return self._total
        buf = self.buf
        if not buf:
            return None
        if self._kind is None:
            self._kind = buf[0]
            if self._kind != MsgType.ENCRYPT:
                self._start_unpacker()
        kind = self._kind
        if kind == MsgType.ENCRYPT:
            if len(buf) < 5:
                return None
            (length,) = struct.unpack_from(">I", buf, 1)
            self._total = self._checked(5 + length)
            return self._total
        unpacker = self._unpacker
        assert unpacker is not None
        try:
            if kind in (MsgType.COMPRESS, MsgType.PING, MsgType.ACK, MsgType.ERR):
                unpacker.skip()
                self._total = self._checked(1 + unpacker.tell())
            elif kind == MsgType.PUSH_PULL:
                if self._nodes_left < 0:
                    header = unpacker.unpack()
                    if not isinstance(header, dict):
                        raise DecodeError("push-pull header is not a map")
                    self._nodes_left, self._user_len = push_pull_sizes(header)
                while self._nodes_left > 0:
                    unpacker.skip()
                    self._nodes_left -= 1
                self._total = self._checked(1 + unpacker.tell() + self._user_len)
            elif kind == MsgType.USER:
                header = unpacker.unpack()
                if not isinstance(header, dict):
                    raise DecodeError("user message header is not a map")
                length = fields.int64(header, b"UserMsgLen")
                if not 0 <= length <= MAX_PUSH_STATE_BYTES:
                    raise DecodeError(f"user message length ({length}) exceeds limit")
                self._total = self._checked(1 + unpacker.tell() + length)
            else:
                raise DecodeError(f"unsupported stream message type {kind}")
        except msgpack.OutOfData:
            return None
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"malformed stream message: {exc}") from exc
        return self._total

    def _start_unpacker(self) -> None:
        limit = self.max_bytes
        self._unpacker = msgpack.Unpacker(
            raw=True, strict_map_key=False, max_buffer_size=limit, max_str_len=limit,
            max_bin_len=limit, max_array_len=MAX_STREAM_ITEMS, max_map_len=MAX_STREAM_ITEMS)
        self._unpacker.feed(bytes(self.buf[1:]))

    def _checked(self, total: int) -> int:
        if total > self.max_bytes:
            raise DecodeError(f"stream message of {total} bytes exceeds {self.max_bytes}")
        return total


def stream_frame_length(buf: bytes) -> int | None:
    """Length of the first complete stream message in ``buf``, or None if more is needed."""
    frame = StreamFramer(max(MAX_STREAM_BYTES, len(buf))).feed(buf)
    return None if frame is None else len(frame)
