"""Serf's own messages, carried inside memberlist user messages and push-pull user state.

This is serf's half of the typed decode boundary: every message a peer sends is decoded here,
once, into a record whose fields have the Go types of serf/messages.go (LamportTime uint64, query
ID uint32, Port uint16, Flags uint32, RelayFactor uint8, Timeout an int64 of nanoseconds, node
names bounded and free of control characters). A value that does not fit raises DecodeError and
the caller drops the whole message, exactly where Go's decoder would refuse it.

Bodies are read with the bounded msgpack decoder in ``bounded_msgpack``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pyserf.memberlist import codec, fields
from pyserf.memberlist.codec import pack
from pyserf.memberlist.fields import U8_MAX, U16_MAX, U32_MAX, U64_MAX, DecodeError, WireMap
from pyserf.serf.bounded_msgpack import check_shape as check_shape
from pyserf.serf.bounded_msgpack import decode_body as decode_body
from pyserf.serf.bounded_msgpack import unpack_value as unpack_value


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

# ---- bounds (Go has none of these: its decoder allocates whatever a peer declares) --------------
# Values in one push-pull state: two per member (name, status time), one per left member, and
# about ten per event slot. Room for a 64k-member cluster with full event buffers; the bytes
# themselves are already bounded by memberlist's 20 MiB push-pull limit.
MAX_STATE_OBJECTS = 256 * 1024
# Members named in a push-pull state (StatusLTimes, LeftMembers).
MAX_STATE_MEMBERS = 64 * 1024
# Event slots in a push-pull state (serf's EventBuffer, 512 by default, is configurable) and
# events within one slot: user events sharing one Lamport time, which only concurrent senders
# produce. Go has no cap; checking a new event against its slot is linear, so an unbounded
# slot would make each event cost more than the last. The same cap holds for the query IDs
# remembered per Lamport time.
MAX_EVENT_SLOTS = 8 * 1024
MAX_SLOT_EVENTS = 128
# Event and query names and payloads. Serf's own limits are smaller (UserEventSizeLimit 512,
# hard limit 9216; QuerySizeLimit 1024) but configurable per node; a datagram cannot exceed this.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_NAME_BYTES = MAX_PAYLOAD_BYTES
# Query filters: how many, how large each, and how many names a node filter lists. A serf CLI
# query carries one node filter and one filter per -tag flag.
MAX_FILTERS = 256
MAX_FILTER_BYTES = MAX_PAYLOAD_BYTES
MAX_FILTER_NODES = fields.MAX_LIST_ITEMS
# A tag filter's expression; the regexp itself is capped by filters.MAX_PATTERN_BYTES when
# compiled. Tag names and values live in memberlist meta, which is at most 512 bytes in all.
MAX_EXPR_BYTES = MAX_PAYLOAD_BYTES
MAX_TAG_BYTES = codec.META_MAX_SIZE
# Keys in a key query: AES-256 keys are 32 bytes; the list is what one node holds.
MAX_KEY_BYTES = 64
MAX_KEYS = 256


def encode(kind: int, body: Any) -> bytes:
    return bytes((kind,)) + pack(body)


# ---- serf-specific field readers ----------------------------------------------------------------


def ltime(body: WireMap, key: bytes) -> int:
    """A LamportTime: Go's uint64."""
    return fields.uint(body, key, U64_MAX)


# Member names of push-pull states, by their bytes (see PushPullState.decode); bounded.
STATE_NAMES_LIMIT = 4096
_state_names: dict[bytes, str] = {}
# StatusLTimes pairs as packed, by (name, time): every push-pull state lists every member,
# mostly at the time it had in the last one (and in a simulator, in every other node's).
_status_entries: dict[tuple[str, int], bytes] = {}


def status_entry(name: str, status_ltime: int) -> bytes:
    """One packed StatusLTimes pair of a push-pull state (see PushPullState.encode_with)."""
    key = (name, status_ltime)
    found = _status_entries.get(key)
    if found is None:
        found = pack(name) + pack(status_ltime)
        fields.remember(_status_entries, key, found, STATE_NAMES_LIMIT)
    return found


_name_bytes: dict[str, bytes] = {}


def name_bytes(name: str) -> bytes:
    """A member name as push-pull states carry it (UTF-8), one object per name while the
    memo holds it: every node keeps every member's (see Serf.status_times)."""
    found = _name_bytes.get(name)
    if found is None:
        found = name.encode()
        fields.remember(_name_bytes, name, found, STATE_NAMES_LIMIT)
    return found


def status_entries(pairs: list[tuple[str, int]]) -> list[bytes]:
    """``status_entry`` of each (name, time): one memo lookup per pair without a call each
    (a state lists every member, so this runs N times per push-pull)."""
    found = list(map(_status_entries.get, pairs))
    if None in found:
        found = [entry if entry is not None else status_entry(*pair)
                 for entry, pair in zip(found, pairs, strict=True)]
    return found  # type: ignore[return-value]  # no None left


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x80 | count,))
    if count <= U16_MAX:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


def item_name(value: Any, what: str) -> str:
    """A node name that is a list item or map key: bounded, no control characters, not empty."""
    name = fields.item_text(value, what, fields.MAX_NAME_BYTES)
    error = fields.name_error(name) if name else f"{what} is empty"
    if error:
        raise DecodeError(error)
    return name


def name_list(values: list[object], what: str) -> list[str]:
    return [item_name(v, what) for v in values]


def dict_items(value: Any, what: str, max_items: int) -> list[tuple[Any, Any]]:
    """The entries of a bare msgpack map (a list item, a slot, a filter body)."""
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a map, got {type(value).__name__}")
    if len(value) > max_items:
        raise DecodeError(f"{what} has more than {max_items} entries")
    return list(value.items())


# ---- intents and user events --------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Leave:
    ltime: int
    node: str
    prune: bool = False

    def encode(self) -> bytes:
        return encode(SerfMsg.LEAVE, {"LTime": self.ltime, "Node": self.node,
                                      "Prune": self.prune})

    @classmethod
    def decode(cls, body: WireMap) -> Leave:
        return cls(ltime(body, b"LTime"), fields.node_name(body, b"Node"),
                   fields.flag(body, b"Prune"))


@dataclass(slots=True, frozen=True)
class Join:
    ltime: int
    node: str

    def encode(self) -> bytes:
        return encode(SerfMsg.JOIN, {"LTime": self.ltime, "Node": self.node})

    @classmethod
    def decode(cls, body: WireMap) -> Join:
        return cls(ltime(body, b"LTime"), fields.node_name(body, b"Node"))


# Join and leave intents by their exact bytes (type byte included). Every node decodes each
# intent several times during a join storm; decoding is pure and the records are frozen, so one
# record can serve them all. Bounded: cleared when full, since peers choose the bytes.
INTENT_MEMO_LIMIT = 4096
_intents: dict[bytes, Join | Leave] = {}


def decode_intent(buf: bytes) -> Join | Leave:
    """Decode a join or leave intent (``buf`` starts with its type byte)."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    record = _intents.get(buf)
    if record is None:
        record = (Join if buf[0] == SerfMsg.JOIN else Leave).decode(decode_body(buf[1:]))
        fields.remember(_intents, buf, record, INTENT_MEMO_LIMIT)
    return record


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
    def decode(cls, body: WireMap) -> UserEvent:
        return cls(ltime(body, b"LTime"), fields.text(body, b"Name", MAX_EVENT_NAME_BYTES),
                   fields.blob(body, b"Payload", MAX_PAYLOAD_BYTES), fields.flag(body, b"CC"))


# ---- queries ------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class NodeFilter:
    """Only these nodes process the query (serf's filterNode, a []string)."""

    names: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class TagFilter:
    """Only nodes whose tag ``tag`` matches ``expr`` (unanchored Go regexp) process it."""

    tag: str
    expr: str


@dataclass(slots=True, frozen=True)
class BadFilter:
    """A filter serf would fail to decode: the query is not processed here, but as in serf it
    is still recorded and re-gossiped."""

    reason: str


Filter = NodeFilter | TagFilter | BadFilter


def encode_node_filter(names: list[str]) -> bytes:
    return bytes((FILTER_NODE,)) + pack(list(names))


def encode_tag_filter(tag: str, expr: str) -> bytes:
    return bytes((FILTER_TAG,)) + pack({"Expr": expr, "Tag": tag})


def parse_filter(raw: bytes) -> Filter:
    """One query filter: a type byte and a msgpack body."""
    try:
        body = unpack_value(raw[1:])
        if raw[0] == FILTER_NODE:
            if body is None:
                return NodeFilter(())
            if not isinstance(body, list):
                raise DecodeError(f"node filter must be a list, got {type(body).__name__}")
            if len(body) > MAX_FILTER_NODES:
                raise DecodeError(f"node filter names more than {MAX_FILTER_NODES} nodes")
            return NodeFilter(tuple(fields.item_text(v, "node filter name",
                                                     fields.MAX_NAME_BYTES) for v in body))
        if raw[0] == FILTER_TAG:
            if not isinstance(body, dict):
                raise DecodeError(f"tag filter must be a map, got {type(body).__name__}")
            return TagFilter(fields.text(body, b"Tag", MAX_TAG_BYTES),
                             fields.text(body, b"Expr", MAX_EXPR_BYTES))
        return BadFilter(f"unrecognized filter type: {raw[0]}")
    except DecodeError as exc:
        return BadFilter(str(exc))


def filter_list(body: WireMap, key: bytes) -> list[bytes]:
    """Serf's ``[][]byte`` filters: each a non-empty byte string (an empty one would make Go's
    ``filter[0]`` panic; an integer or a map is no byte string at all)."""
    out = []
    for item in fields.seq(body, key, MAX_FILTERS):
        raw = fields.blob({b"f": item}, b"f", MAX_FILTER_BYTES)
        if not raw:
            raise DecodeError("query filter is empty")
        out.append(raw)
    return out


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
    # The filters decoded (decode() fills it; a query built locally parses on demand).
    parsed_filters: list[Filter] | None = field(default=None, compare=False)

    def encode(self) -> bytes:
        return encode(SerfMsg.QUERY, {
            "Addr": self.addr, "Filters": self.filters or None, "Flags": self.flags,
            "ID": self.id, "LTime": self.ltime, "Name": self.name,
            "Payload": self.payload if self.payload else None, "Port": self.port,
            "RelayFactor": self.relay_factor, "SourceNode": self.source_node,
            "Timeout": self.timeout_ns})

    def filter_records(self) -> list[Filter]:
        if self.parsed_filters is None:
            self.parsed_filters = [parse_filter(raw) for raw in self.filters]
        return self.parsed_filters

    @classmethod
    def decode(cls, body: WireMap) -> Query:
        filters = filter_list(body, b"Filters")
        return cls(ltime(body, b"LTime"), fields.uint(body, b"ID", U32_MAX),
                   fields.ip_bytes(body, b"Addr"), fields.uint(body, b"Port", U16_MAX),
                   fields.node_name(body, b"SourceNode", required=False), filters,
                   fields.uint(body, b"Flags", U32_MAX),
                   fields.uint(body, b"RelayFactor", U8_MAX), fields.int64(body, b"Timeout"),
                   fields.text(body, b"Name", MAX_EVENT_NAME_BYTES),
                   fields.blob(body, b"Payload", MAX_PAYLOAD_BYTES),
                   [parse_filter(raw) for raw in filters])


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
    def decode(cls, body: WireMap) -> QueryResponse:
        return cls(ltime(body, b"LTime"), fields.uint(body, b"ID", U32_MAX),
                   fields.node_name(body, b"From"), fields.uint(body, b"Flags", U32_MAX),
                   fields.blob(body, b"Payload", MAX_PAYLOAD_BYTES) or None)


# ---- push-pull state ----------------------------------------------------------------------------

EventSlot = tuple[int, list[tuple[str, bytes]]]


def _event_slot(value: Any) -> EventSlot | None:
    """One entry of push-pull Events: nil or serf's userEvents {LTime, Events}."""
    if value is None:
        return None
    slot = dict(dict_items(value, "push-pull event slot", 16))
    items = []
    for event in fields.seq(slot, b"Events", MAX_SLOT_EVENTS):
        if not isinstance(event, dict):
            raise DecodeError(f"push-pull event must be a map, got {type(event).__name__}")
        items.append((fields.text(event, b"Name", MAX_EVENT_NAME_BYTES),
                      fields.blob(event, b"Payload", MAX_PAYLOAD_BYTES)))
    return ltime(slot, b"LTime"), items


@dataclass(slots=True)
class PushPullState:
    ltime: int
    status_ltimes: dict[str, int]
    left_members: list[str]
    event_ltime: int
    events: list[EventSlot | None]
    query_ltime: int

    def encode(self) -> bytes:
        events: list[Any] = []
        for slot in self.events:
            if slot is None:
                events.append(None)
            else:
                slot_ltime, items = slot
                events.append({"Events": [{"Name": n, "Payload": p} for n, p in items],
                               "LTime": slot_ltime})
        return encode(SerfMsg.PUSH_PULL, {
            "EventLTime": self.event_ltime, "Events": events, "LTime": self.ltime,
            "LeftMembers": self.left_members, "QueryLTime": self.query_ltime,
            "StatusLTimes": self.status_ltimes})

    @classmethod
    def encode_with(cls, status_entries: list[bytes], ltime: int, left_members: list[str],
                    event_ltime: int, events: list[EventSlot | None], query_ltime: int
                    ) -> bytes:
        """What ``encode`` gives for a state whose StatusLTimes pairs come packed already
        (``status_entry``): the map is the body's last field, so it is spliced onto a body
        encoded with an empty one."""
        body = cls(ltime, {}, left_members, event_ltime, events, query_ltime).encode()
        if body[-1] != 0x80:  # an empty fixmap: StatusLTimes must stay the last key
            raise AssertionError("StatusLTimes is no longer the last field of the state")
        return b"".join((body[:-1], _map_header(len(status_entries)), *status_entries))

    @classmethod
    def decode(cls, body: WireMap, held: Mapping[bytes, int] | None = None) -> PushPullState:
        """``held``: the receiver's own status times by name bytes. An entry equal to one of
        them (and not also listed as left) is left out of ``status_ltimes`` unread: merged, it
        would only witness a time the receiver's clock has already passed."""
        status = {}
        raw_status = fields.mapping(body, b"StatusLTimes", MAX_STATE_MEMBERS)
        items: Iterable[tuple[Any, Any]] = raw_status.items()
        if held:
            left_raw = body.get(b"LeftMembers")
            leaving = set(left_raw) if isinstance(left_raw, list) and all(
                type(x) is bytes for x in left_raw) else None
            if leaving is not None:
                items = [(k, v) for k, v in items
                         if type(v) is not int or held.get(k) != v or k in leaving]
        # Every exchange lists every member: validated names are remembered by their bytes and
        # plain in-range integers skip the general reader.
        known = _state_names.get
        for key, value in items:
            name = known(key) if type(key) is bytes else None
            if name is None:
                name = item_name(key, "StatusLTimes name")
                if type(key) is bytes:
                    fields.remember(_state_names, key, name, STATE_NAMES_LIMIT)
            status[name] = value if type(value) is int and 0 <= value <= U64_MAX \
                else ltime({b"t": value}, b"t")
        left = name_list(fields.seq(body, b"LeftMembers", MAX_STATE_MEMBERS), "left member")
        events = [_event_slot(v) for v in fields.seq(body, b"Events", MAX_EVENT_SLOTS)]
        return cls(ltime(body, b"LTime"), status, left, ltime(body, b"EventLTime"), events,
                   ltime(body, b"QueryLTime"))

    @classmethod
    def decode_state(cls, buf: bytes,
                     held: Callable[[WireMap], Mapping[bytes, int] | None] | None = None
                     ) -> PushPullState:
        """The delegate's push-pull user state: type byte, then the bounded body. ``held``
        is asked, given the body, for the status times the receiver may leave out (see
        ``decode``)."""
        if not buf or buf[0] != SerfMsg.PUSH_PULL:
            raise DecodeError(f"remote state has bad type prefix: {buf[:1].hex() or 'empty'}")
        body = decode_body(buf[1:], MAX_STATE_OBJECTS)
        return cls.decode(body, held(body) if held is not None else None)


# ---- relayed responses --------------------------------------------------------------------------


@dataclass(slots=True)
class Relay:
    """A query response (or ack) to forward to the query's origin for a node that cannot
    reach it directly. Serf only ever relays query responses, so anything else is refused:
    a relay must not turn this node into a reflector of arbitrary datagrams."""

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
        end = check_shape(data, 64)
        header = codec.unpack_any(data[:end])
        if not isinstance(header, dict):
            raise DecodeError(f"relay header must be a map, got {type(header).__name__}")
        dest = fields.mapping(header, b"DestAddr", 8)
        # DestAddr is a net.UDPAddr: IP net.IP, Port int, Zone string.
        port = fields.int64(dest, b"Port")
        if not 1 <= port <= U16_MAX:
            raise DecodeError(f"relay destination port {port} is not in 1..{U16_MAX}")
        ip = fields.ip_bytes(dest, b"IP")
        fields.text(dest, b"Zone", 64)
        inner = data[end:]
        if not inner or inner[0] != SerfMsg.QUERY_RESPONSE:
            raise DecodeError("relayed message is not a query response")
        QueryResponse.decode(decode_body(inner[1:]))
        return cls(ip, port, fields.node_name(header, b"DestName", required=False), inner)


# ---- internal query payloads --------------------------------------------------------------------


@dataclass(slots=True)
class ConflictResponse:
    """The part of serf's Member a name-conflict answer needs: where the responder sees the
    contested name."""

    name: str
    addr: bytes
    port: int

    @classmethod
    def decode(cls, payload: bytes) -> ConflictResponse | None:
        """None when the responder does not know the name (it answers with a nil Member)."""
        if not payload or payload[0] != SerfMsg.CONFLICT_RESPONSE:
            raise DecodeError(f"invalid conflict query response type: {payload[:1].hex()}")
        body = unpack_value(payload[1:])
        if body is None:
            return None
        if not isinstance(body, dict):
            raise DecodeError(f"conflict response must be a map, got {type(body).__name__}")
        decode_tag_map(body.get(b"Tags"))
        return cls(fields.node_name(body, b"Name", required=False),
                   fields.ip_bytes(body, b"Addr"), fields.uint(body, b"Port", U16_MAX))


@dataclass(slots=True)
class KeyRequest:
    key: bytes

    def encode(self) -> bytes:
        return encode(SerfMsg.KEY_REQUEST, {"Key": self.key or None})

    @classmethod
    def decode(cls, payload: bytes) -> KeyRequest:
        if not payload or payload[0] != SerfMsg.KEY_REQUEST:
            raise DecodeError("not a key request")
        return cls(fields.blob(decode_body(payload[1:]), b"Key", MAX_KEY_BYTES))


@dataclass(slots=True)
class KeyResponse:
    result: bool
    message: str
    keys: list[str]
    primary_key: str

    @classmethod
    def decode(cls, payload: bytes) -> KeyResponse:
        if not payload or payload[0] != SerfMsg.KEY_RESPONSE:
            raise DecodeError(f"Invalid key query response type: {payload[:1]!r}")
        body = decode_body(payload[1:])
        keys = [fields.item_text(k, "key", MAX_KEY_BYTES * 2)
                for k in fields.seq(body, b"Keys", MAX_KEYS)]
        return cls(fields.flag(body, b"Result"), fields.text(body, b"Message", 4096), keys,
                   fields.text(body, b"PrimaryKey", MAX_KEY_BYTES * 2))


# ---- tags (memberlist node meta) ----------------------------------------------------------------


def encode_tags(tags: dict[str, str], protocol: int) -> bytes:
    """Tags travel in memberlist node meta: magic byte + msgpack map (protocol >= 3)."""
    if protocol < 3:
        return tags.get("role", "").encode()
    return bytes((TAG_MAGIC,)) + pack(dict(tags))


def decode_tag_map(raw: Any) -> dict[str, str]:
    """Serf's map[string]string: nil is empty; any non-string key or value is an error."""
    if raw is None:
        return {}
    return {fields.item_text(k, "tag name", MAX_TAG_BYTES):
            fields.item_text(v, "tag value", MAX_TAG_BYTES)
            for k, v in dict_items(raw, "tags", MAX_TAG_BYTES)}


# Decoded tags by node meta: members often share tags, and a simulated cluster holds every
# member once per node. The dicts are shared, so members' tags are replaced, never edited in
# place. Bounded: cleared when full, since peers choose the bytes.
TAGS_MEMO_LIMIT = 4096
_tags: dict[bytes, dict[str, str]] = {}


def decode_tags_strict(meta: bytes) -> dict[str, str]:
    """Node meta as serf reads it; raises DecodeError where serf's decode fails. The dict
    returned may be shared: do not modify it."""
    tags = _tags.get(meta)
    if tags is None:
        if not meta or meta[0] != TAG_MAGIC:
            tags = {"role": fields.text({b"r": meta}, b"r", MAX_TAG_BYTES)}
        else:
            tags = decode_tag_map(unpack_value(meta[1:], MAX_TAG_BYTES))
        fields.remember(_tags, bytes(meta), tags, TAGS_MEMO_LIMIT)
    return tags


def decode_tags(meta: bytes) -> dict[str, str]:
    """Node meta as tags; meta serf cannot decode gives no tags (serf logs and keeps none)."""
    try:
        return decode_tags_strict(meta)
    except DecodeError:
        return {}
