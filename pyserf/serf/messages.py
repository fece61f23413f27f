"""Serf's own messages, carried inside memberlist user messages and push-pull user state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from pyserf.memberlist.codec import (
    DecodeError,
    get_bool,
    get_bytes,
    get_int,
    get_str,
    pack,
    unpack_body,
)


class SerfMsg(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


QUERY_FLAG_ACK = 1
QUERY_FLAG_NO_BROADCAST = 2
FILTER_NODE = 0
FILTER_TAG = 1
TAG_MAGIC = 0xFF


def encode(kind: int, body: dict) -> bytes:
    return bytes((kind,)) + pack(body)


@dataclass(slots=True)
class Leave:
    ltime: int
    node: str
    prune: bool = False

    def encode(self) -> bytes:
        return encode(SerfMsg.LEAVE, {"LTime": self.ltime, "Node": self.node,
                                      "Prune": self.prune})

    @classmethod
    def decode(cls, body: dict) -> Leave:
        return cls(get_int(body, b"LTime"), get_str(body, b"Node"), get_bool(body, b"Prune"))


@dataclass(slots=True)
class Join:
    ltime: int
    node: str

    def encode(self) -> bytes:
        return encode(SerfMsg.JOIN, {"LTime": self.ltime, "Node": self.node})

    @classmethod
    def decode(cls, body: dict) -> Join:
        return cls(get_int(body, b"LTime"), get_str(body, b"Node"))


@dataclass(slots=True)
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    cc: bool

    def encode(self) -> bytes:
        return encode(SerfMsg.USER_EVENT, {"CC": self.cc, "LTime": self.ltime, "Name": self.name,
                                           "Payload": self.payload})

    @classmethod
    def decode(cls, body: dict) -> UserEvent:
        return cls(get_int(body, b"LTime"), get_str(body, b"Name"), get_bytes(body, b"Payload"),
                   get_bool(body, b"CC"))


@dataclass(slots=True)
class Query:
    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: list[bytes]
    flags: int
    relay_factor: int
    timeout_ns: int
    name: str
    payload: bytes

    def encode(self) -> bytes:
        return encode(SerfMsg.QUERY, {
            "Addr": self.addr, "Filters": self.filters or None, "Flags": self.flags,
            "ID": self.id, "LTime": self.ltime, "Name": self.name,
            "Payload": self.payload if self.payload else None, "Port": self.port,
            "RelayFactor": self.relay_factor, "SourceNode": self.source_node,
            "Timeout": self.timeout_ns})

    @classmethod
    def decode(cls, body: dict) -> Query:
        raw_filters = body.get(b"Filters") or []
        if not isinstance(raw_filters, list):
            raise DecodeError("field Filters must be a list")
        filters = [f if isinstance(f, bytes) else bytes(f) for f in raw_filters]
        return cls(get_int(body, b"LTime"), get_int(body, b"ID"), get_bytes(body, b"Addr"),
                   get_int(body, b"Port"), get_str(body, b"SourceNode"), filters,
                   get_int(body, b"Flags"), get_int(body, b"RelayFactor"),
                   get_int(body, b"Timeout"), get_str(body, b"Name"),
                   get_bytes(body, b"Payload"))


@dataclass(slots=True)
class QueryResponse:
    ltime: int
    id: int
    from_: str
    flags: int
    payload: bytes | None

    def encode(self) -> bytes:
        return encode(SerfMsg.QUERY_RESPONSE, {"Flags": self.flags, "From": self.from_,
                                               "ID": self.id, "LTime": self.ltime,
                                               "Payload": self.payload})

    @classmethod
    def decode(cls, body: dict) -> QueryResponse:
        return cls(get_int(body, b"LTime"), get_int(body, b"ID"), get_str(body, b"From"),
                   get_int(body, b"Flags"), get_bytes(body, b"Payload") or None)


@dataclass(slots=True)
class PushPullState:
    ltime: int
    status_ltimes: dict[str, int]
    left_members: list[str]
    event_ltime: int
    events: list[tuple[int, list[tuple[str, bytes]]] | None]
    query_ltime: int

    def encode(self) -> bytes:
        events: list[Any] = []
        for slot in self.events:
            if slot is None:
                events.append(None)
            else:
                ltime, items = slot
                events.append({"Events": [{"Name": n, "Payload": p} for n, p in items],
                               "LTime": ltime})
        return encode(SerfMsg.PUSH_PULL, {
            "EventLTime": self.event_ltime, "Events": events, "LTime": self.ltime,
            "LeftMembers": self.left_members, "QueryLTime": self.query_ltime,
            "StatusLTimes": self.status_ltimes})

    @classmethod
    def decode(cls, body: dict) -> PushPullState:
        raw_times = body.get(b"StatusLTimes") or {}
        raw_left = body.get(b"LeftMembers") or []
        raw_events = body.get(b"Events") or []
        if not isinstance(raw_times, dict) or not isinstance(raw_left, list) \
                or not isinstance(raw_events, list):
            raise DecodeError("push-pull state has fields of the wrong type")
        status = {}
        for k, v in raw_times.items():
            if not isinstance(v, int):
                raise DecodeError("StatusLTimes values must be integers")
            status[k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)] = v
        left = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                for x in raw_left]
        events: list[tuple[int, list[tuple[str, bytes]]] | None] = []
        for slot in raw_events:
            if slot is None:
                events.append(None)
                continue
            if not isinstance(slot, dict):
                raise DecodeError("push-pull event slot is not a map")
            items = []
            for e in slot.get(b"Events") or []:
                if isinstance(e, dict):
                    items.append((get_str(e, b"Name"), get_bytes(e, b"Payload")))
            events.append((get_int(slot, b"LTime"), items))
        return cls(get_int(body, b"LTime"), status, left, get_int(body, b"EventLTime"), events,
                   get_int(body, b"QueryLTime"))


@dataclass(slots=True)
class Relay:
    dest_ip: bytes
    dest_port: int
    dest_name: str
    inner: bytes = field(default=b"")

    def encode(self) -> bytes:
        header = pack({"DestAddr": {"IP": self.dest_ip, "Port": self.dest_port, "Zone": ""},
                       "DestName": self.dest_name})
        return bytes((SerfMsg.RELAY,)) + header + self.inner

    @classmethod
    def decode(cls, data: bytes) -> Relay:
        unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
        unpacker.feed(data)
        try:
            header = unpacker.unpack()
        except Exception as exc:
            raise DecodeError(f"malformed relay header: {exc}") from exc
        if not isinstance(header, dict):
            raise DecodeError("relay header is not a map")
        dest = header.get(b"DestAddr") or {}
        if not isinstance(dest, dict):
            raise DecodeError("relay DestAddr is not a map")
        return cls(get_bytes(dest, b"IP"), get_int(dest, b"Port"), get_str(header, b"DestName"),
                   data[unpacker.tell():])


def decode_body(data: bytes) -> dict:
    return unpack_body(data)


def encode_tags(tags: dict[str, str], protocol: int) -> bytes:
    """Tags travel in memberlist node meta: magic byte + msgpack map (protocol >= 3)."""
    if protocol < 3:
        return tags.get("role", "").encode()
    return bytes((TAG_MAGIC,)) + pack(dict(tags))


def decode_tags(meta: bytes) -> dict[str, str]:
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": meta.decode("utf-8", "replace")}
    try:
        raw = msgpack.unpackb(meta[1:], raw=True, strict_map_key=False)
    except Exception:
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, v in raw.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        out[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out
