"""Independent encoders for the gossip wire format, used to build hostile inputs.

They are written from the protocol description rather than reusing pyserf's codec, so a bug in
pyserf's own encoders cannot hide the same bug in its decoders, and so the tests keep working
while the codec is refactored. Bodies are msgpack maps packed the way go-msgpack's old spec does
(strings and byte slices both as raw strings).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack

from pyserf.memberlist import lzw

# memberlist message types (memberlist net.go)
PING, INDIRECT_PING, ACK, SUSPECT, ALIVE, DEAD, PUSH_PULL, COMPOUND, USER, COMPRESS, ENCRYPT, \
    NACK, HAS_CRC, ERR = range(14)
# serf message types (serf messages.go)
S_LEAVE, S_JOIN, S_PUSH_PULL, S_USER_EVENT, S_QUERY, S_QUERY_RESPONSE, S_CONFLICT_RESPONSE, \
    S_KEY_REQUEST, S_KEY_RESPONSE, S_RELAY = range(10)
FILTER_NODE, FILTER_TAG = 0, 1
TAG_MAGIC = 0xFF
# A valid version vector: protocol 1..5 (current 2), delegate 2..5 (current 5).
VSN = bytes([1, 5, 2, 2, 5, 5])

U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)


def msg(kind: int, body: Any) -> bytes:
    """A type byte followed by a msgpack body (any value: hostile bodies need not be maps)."""
    return bytes((kind,)) + pack(body)


def compound(parts: list[bytes]) -> bytes:
    parts = parts[:255]
    return bytes((COMPOUND, len(parts))) + b"".join(
        struct.pack(">H", len(p) & 0xFFFF) for p in parts) + b"".join(parts)


def compress(inner: bytes, algo: int = 0) -> bytes:
    return msg(COMPRESS, {"Algo": algo, "Buf": lzw.compress(inner)})


def with_crc(inner: bytes, corrupt: bool = False) -> bytes:
    crc = zlib.crc32(inner) ^ (1 if corrupt else 0)
    return bytes((HAS_CRC,)) + struct.pack(">I", crc) + inner


def user(serf_msg: bytes) -> bytes:
    return bytes((USER,)) + serf_msg


def push_pull(nodes: list[Any], user_state: bytes = b"", join: bool = False,
              header: dict | None = None) -> bytes:
    """A push-pull stream message: header map, one map per node state, raw user state."""
    head = header if header is not None else {
        "Join": join, "Nodes": len(nodes), "UserStateLen": len(user_state)}
    return bytes((PUSH_PULL,)) + pack(head) + b"".join(pack(n) for n in nodes) + user_state


def node_state(name: str, addr: bytes, port: int, incarnation: int = 1, state: int = 0,
               meta: bytes = b"", vsn: bytes = VSN) -> dict:
    return {"Name": name, "Addr": addr, "Port": port, "Meta": meta,
            "Incarnation": incarnation, "State": state, "Vsn": vsn}


def alive(name: str, addr: bytes, port: int, incarnation: int = 1, meta: bytes = b"",
          vsn: bytes = VSN) -> bytes:
    return msg(ALIVE, {"Incarnation": incarnation, "Node": name, "Addr": addr, "Port": port,
                       "Meta": meta, "Vsn": vsn})


def serf_push_pull(ltime: int = 1, status: dict | None = None, left: list | None = None,
                   event_ltime: int = 1, events: list | None = None,
                   query_ltime: int = 1) -> bytes:
    return msg(S_PUSH_PULL, {"LTime": ltime, "StatusLTimes": status or {},
                             "LeftMembers": left or [], "EventLTime": event_ltime,
                             "Events": events or [], "QueryLTime": query_ltime})


def relay(dest_ip: bytes, dest_port: int, dest_name: str, inner: bytes) -> bytes:
    return bytes((S_RELAY,)) + pack({"DestAddr": {"IP": dest_ip, "Port": dest_port, "Zone": ""},
                                     "DestName": dest_name}) + inner


def node_filter(names: Any) -> bytes:
    return bytes((FILTER_NODE,)) + pack(names)


def tag_filter(tag: Any, expr: Any) -> bytes:
    return bytes((FILTER_TAG,)) + pack({"Tag": tag, "Expr": expr})


def query(ltime: int, qid: int, addr: bytes, port: int, name: str = "q", payload: bytes = b"",
          filters: list | None = None, flags: int = 0, relay_factor: int = 0,
          source: str = "src", timeout_ns: int = 10**9) -> bytes:
    return msg(S_QUERY, {"LTime": ltime, "ID": qid, "Addr": addr, "Port": port,
                         "SourceNode": source, "Filters": filters, "Flags": flags,
                         "RelayFactor": relay_factor, "Timeout": timeout_ns, "Name": name,
                         "Payload": payload})


def query_response(ltime: int, qid: int, from_: str, payload: bytes | None = None,
                   flags: int = 0) -> bytes:
    return msg(S_QUERY_RESPONSE, {"LTime": ltime, "ID": qid, "From": from_, "Flags": flags,
                                  "Payload": payload})


def tags_meta(tags: dict) -> bytes:
    return bytes((TAG_MAGIC,)) + pack(tags)


def unwrap_stream(data: bytes) -> tuple[int, bytes]:
    """(type, body) of a stream message we received, undoing the compress wrapper."""
    if not data:
        raise ValueError("empty stream message")
    if data[0] == COMPRESS:
        body = msgpack.unpackb(data[1:], raw=True, strict_map_key=False)
        data = lzw.decompress(body[b"Buf"])
    return data[0], data[1:]


def decode_push_pull(body: bytes) -> tuple[dict, list[dict], bytes]:
    """Decode a push-pull body (after its type byte) strictly: the peer must be able to."""
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
    unpacker.feed(body)
    header = unpacker.unpack()
    nodes = [unpacker.unpack() for _ in range(header[b"Nodes"])]
    offset = unpacker.tell()
    user_state = body[offset:offset + header[b"UserStateLen"]]
    if len(user_state) != header[b"UserStateLen"]:
        raise ValueError("user state shorter than its header says")
    return header, nodes, user_state
