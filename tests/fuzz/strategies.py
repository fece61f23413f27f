"""Hypothesis strategies for structurally valid, semantically hostile messages.

Every message is a well-formed frame (type byte + msgpack body, or the push-pull layout) whose
field values are drawn from three pools per field: values of the field's Go type (boundaries
included), values a lenient decoder might accept (nil for a bool, 1 for a bool, an int list for
bytes), and values that are clearly wrong for the Go field (wrong type, negative for an unsigned
field, wider than the field). Each strategy yields ``Msg(data, valid)`` where ``valid`` is
False when some field was clearly wrong: a correct agent drops such a message and changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.fuzz import wire
from tests.fuzz.harness import OWN_NAME, PEER_NAME, PORT

BOUNDARY_INTS = [0, -1, 2**16, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -(2**63)]
GOOD, LENIENT, BAD = True, None, False


@dataclass(frozen=True)
class Msg:
    data: bytes
    valid: bool | None  # True: fine; None: depends on leniency; False: must be dropped


def _merge(*flags: bool | None) -> bool | None:
    if any(f is BAD for f in flags):
        return BAD
    if any(f is LENIENT for f in flags):
        return LENIENT
    return GOOD


# -- leaf values ------------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from([OWN_NAME, PEER_NAME, "", "x\nleave\nclock: 18446744073709551615", "a\x00b",
                     "n" * 600, "ünï", "_serf_x"]),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=200, max_size=3000),
)
# Map keys of every hashable msgpack shape (unhashable ones are written by hand below).
KEYS = st.one_of(st.text(max_size=8), st.binary(max_size=8), st.integers(-3, 3),
                 st.sampled_from(BOUNDARY_INTS), st.booleans(), st.none(), st.floats())


def nested(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any msgpack value, nested a few levels."""
    leaves = st.one_of(st.none(), st.booleans(), st.sampled_from(BOUNDARY_INTS),
                       st.integers(-(2**63), 2**64 - 1), st.floats(), st.binary(max_size=64),
                       st.text(max_size=32))
    return st.recursive(leaves, lambda c: st.one_of(
        st.lists(c, max_size=6), st.dictionaries(KEYS, c, max_size=6)), max_leaves=max_leaves)


def big_container() -> st.SearchStrategy[Any]:
    """Huge lists and maps that still fit in a few KB."""
    return st.one_of(st.integers(100, 2000).map(lambda n: [0] * n),
                     st.integers(100, 800).map(lambda n: {i: None for i in range(n)}),
                     st.integers(100, 600).map(lambda n: [[]] * n))


def _wrong(*exclude: type) -> st.SearchStrategy[Any]:
    pools = {int: st.sampled_from(BOUNDARY_INTS), bytes: st.binary(max_size=32),
             str: st.text(min_size=1, max_size=16), list: st.lists(nested(4), max_size=4),
             dict: st.dictionaries(KEYS, nested(4), max_size=4), float: st.floats(),
             bool: st.booleans()}
    return st.one_of([pool for kind, pool in pools.items() if kind not in exclude])


Pools = dict  # {GOOD | LENIENT | BAD: strategy of values}


def _uint(bits: int) -> Pools:
    top = 2**bits - 1
    return {GOOD: st.one_of(st.sampled_from([0, 1, top, top - 1]), st.integers(0, top),
                            st.none()),
            LENIENT: st.booleans(),
            BAD: st.one_of(st.sampled_from([v for v in BOUNDARY_INTS if not 0 <= v <= top]),
                           st.integers(top + 1, 2**64 - 1) if bits < 64
                           else st.integers(-(2**63), -1), _wrong(int, bool))}


def _int64() -> Pools:
    return {GOOD: st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
                            st.integers(-(2**63), 2**63 - 1)),
            BAD: st.one_of(st.sampled_from([2**63, 2**64 - 1]), _wrong(int, bool))}


def _bool() -> Pools:
    return {GOOD: st.booleans(), LENIENT: st.one_of(st.none(), st.sampled_from([0, 1, 2])),
            BAD: _wrong(bool, int)}


def _str() -> Pools:
    return {GOOD: NAMES, LENIENT: st.binary(max_size=40), BAD: _wrong(str, bytes)}


def _bytes(max_size: int = 64) -> Pools:
    return {GOOD: st.binary(max_size=max_size),
            LENIENT: st.lists(st.integers(0, 255), max_size=8), BAD: _wrong(str, bytes, list)}


def _ip(required: bool) -> Pools:
    """An address: 4 or 16 bytes; other lengths are wrong where the field must hold an IP."""
    good = st.one_of(st.sampled_from([bytes([10, 0, 0, 3]), bytes([10, 0, 0, 1]),
                                      bytes([127, 0, 0, 1]), bytes(4), bytes(16)]),
                     st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
    odd = st.binary(max_size=20).filter(lambda b: len(b) not in (4, 16))
    if required:
        return {GOOD: good, BAD: st.one_of(odd, _wrong(bytes, str, list))}
    return {GOOD: good, LENIENT: odd, BAD: _wrong(bytes, str, list)}


def _vsn() -> Pools:
    return {GOOD: st.just(wire.VSN), LENIENT: st.binary(max_size=9),
            BAD: _wrong(bytes, str, list)}


FIELD = {"u8": lambda: _uint(8), "u16": lambda: _uint(16), "u32": lambda: _uint(32),
         "u64": lambda: _uint(64), "i64": _int64, "bool": _bool, "str": _str,
         "bytes": _bytes, "ip": lambda: _ip(True), "ipopt": lambda: _ip(False), "vsn": _vsn,
         "meta": lambda: _bytes(700)}

# Field names and Go types of every message body (memberlist net.go, serf messages.go).
MEMBERLIST_BODIES = {
    wire.PING: {"SeqNo": "u32", "Node": "str", "SourceAddr": "ipopt", "SourcePort": "u16",
                "SourceNode": "str"},
    wire.INDIRECT_PING: {"SeqNo": "u32", "Target": "ipopt", "Port": "u16", "Node": "str",
                         "Nack": "bool", "SourceAddr": "ipopt", "SourcePort": "u16",
                         "SourceNode": "str"},
    wire.ACK: {"SeqNo": "u32", "Payload": "bytes"},
    wire.NACK: {"SeqNo": "u32"},
    wire.SUSPECT: {"Incarnation": "u32", "Node": "str", "From": "str"},
    wire.ALIVE: {"Incarnation": "u32", "Node": "str", "Addr": "ip", "Port": "u16",
                 "Meta": "meta", "Vsn": "vsn"},
    wire.DEAD: {"Incarnation": "u32", "Node": "str", "From": "str"},
}
SERF_BODIES = {
    wire.S_LEAVE: {"LTime": "u64", "Node": "str", "Prune": "bool"},
    wire.S_JOIN: {"LTime": "u64", "Node": "str"},
    wire.S_USER_EVENT: {"LTime": "u64", "Name": "str", "Payload": "bytes", "CC": "bool"},
    wire.S_QUERY_RESPONSE: {"LTime": "u64", "ID": "u32", "From": "str", "Flags": "u32",
                            "Payload": "bytes"},
}
QUERY_BODY = {"LTime": "u64", "ID": "u32", "Addr": "ipopt", "Port": "u16", "SourceNode": "str",
              "Flags": "u32", "RelayFactor": "u8", "Timeout": "i64", "Name": "str",
              "Payload": "bytes"}
NODE_STATE = {"Name": "str", "Addr": "ip", "Port": "u16", "Meta": "meta",
              "Incarnation": "u32", "State": "u8", "Vsn": "vsn"}


def field(kind: str, allowed: tuple[bool | None, ...] = (GOOD, LENIENT, BAD)
          ) -> st.SearchStrategy[tuple[Any, bool | None]]:
    """(value, flag) for one field of Go type ``kind``, from the allowed pools."""
    pools = FIELD[kind]()
    return st.one_of([pools[f].map(lambda v, f=f: (v, f)) for f in allowed if f in pools])


# How hostile a body is: a third are well typed, a third lenient at worst, a third anything.
MODES = [(GOOD,), (GOOD, LENIENT), (GOOD, LENIENT, BAD)]


@st.composite
def body(draw: st.DrawFn, fields: dict[str, str], pinned: dict[str, Any] | None = None
         ) -> tuple[Any, bool | None]:
    """A body map with every field present, absent, right or wrong; or not a map at all."""
    shape = draw(st.integers(0, 19))
    if shape == 0:
        value = draw(st.one_of(nested(), big_container()))
        # A map of unknown keys may decode as an empty struct; anything else cannot.
        return value, LENIENT if isinstance(value, dict) else BAD
    allowed = draw(st.sampled_from(MODES))
    out: dict[Any, Any] = {}
    flags: list[bool | None] = []
    for name, kind in fields.items():
        if pinned and name in pinned and draw(st.integers(0, 3)):
            out[name] = pinned[name]
            continue
        if draw(st.integers(0, 5)) == 0:
            continue  # absent: Go leaves the zero value
        value, flag = draw(field(kind, allowed))
        out[name] = value
        flags.append(flag)
    if shape == 1:
        out[draw(KEYS)] = draw(nested())  # an unknown extra field: ignored by Go
    return out, _merge(*flags)


def ltime_hostile() -> st.SearchStrategy[int]:
    return st.sampled_from([0, 1, 2, 2**32, 2**63, 2**64 - 2, 2**64 - 1])


@st.composite
def memberlist_message(draw: st.DrawFn) -> Msg:
    kind = draw(st.sampled_from(sorted(MEMBERLIST_BODIES)))
    pinned = {"Node": draw(st.sampled_from([OWN_NAME, PEER_NAME, "third"])),
              "Incarnation": draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]))}
    if kind == wire.ALIVE and draw(st.booleans()):
        # About ourselves, at our own address: the refute path with hostile incarnations.
        pinned.update(Node=OWN_NAME, Addr=bytes([10, 0, 0, 1]), Port=PORT, Vsn=wire.VSN)
    value, valid = draw(body(MEMBERLIST_BODIES[kind], pinned))
    return Msg(wire.msg(kind, value), valid)


@st.composite
def filters(draw: st.DrawFn) -> tuple[Any, bool | None]:
    """Query filters of every shape: node lists, tag regexes, garbage, huge lists."""
    one = st.one_of(
        st.lists(st.one_of(NAMES, st.binary(max_size=8)), max_size=5).map(wire.node_filter),
        st.tuples(st.sampled_from(["role", "dc", "none"]), st.one_of(st.sampled_from([
            "^a+!$", "(a+)+$", "(a|aa)+b", "(?:){4294967294}", "(?:a*)*c", "[", "\\", "(?P<x>",
            "a{1000}{1000}", ".*" * 200, "\\C", "(?i)A+!", "\\pL+"]), st.text(max_size=20))
        ).map(lambda t: wire.tag_filter(*t)),
        st.tuples(st.integers(0, 255), nested(6)).map(lambda t: bytes((t[0],)) + wire.pack(t[1])),
        st.binary(max_size=12),
        big_container().map(wire.node_filter),
    )
    choice = draw(st.integers(0, 9))
    if choice == 0:
        # Not a list of byte strings: ints (a length for `bytes(n)`), maps, nested values.
        return draw(st.one_of(st.sampled_from(BOUNDARY_INTS), nested(6),
                              st.lists(st.sampled_from(BOUNDARY_INTS), min_size=1, max_size=3))
                    ), LENIENT
    return draw(st.lists(one, max_size=4)), GOOD


@st.composite
def serf_message(draw: st.DrawFn, query_target: tuple[int, int] | None = None) -> Msg:
    """A serf message; ``query_target`` (LTime, ID) aims responses at a running query."""
    kind = draw(st.sampled_from([*sorted(SERF_BODIES), wire.S_QUERY, wire.S_RELAY,
                                 wire.S_PUSH_PULL]))
    if kind == wire.S_QUERY:
        name = draw(st.sampled_from(["q", "_serf_ping", "_serf_conflict", "_serf_install-key",
                                     "_serf_use-key", "_serf_remove-key", "_serf_list-keys",
                                     "_serf_other"]))
        payload = draw(st.one_of(
            st.just(OWN_NAME.encode()), st.binary(max_size=40),
            key_request().map(lambda m: m.data)))
        pinned = {"Name": name, "Payload": payload, "LTime": draw(ltime_hostile()),
                  "Addr": bytes([10, 0, 0, 3]), "Port": PORT}
        value, valid = draw(body(QUERY_BODY, pinned))
        if isinstance(value, dict) and draw(st.booleans()):
            value["Filters"], fvalid = draw(filters())
            valid = _merge(valid, fvalid)
        return Msg(wire.msg(kind, value), valid)
    if kind == wire.S_RELAY:
        header, valid = draw(body({"DestName": "str"}))
        if isinstance(header, dict):
            dest, dvalid = draw(body({"IP": "ip", "Port": "u16", "Zone": "str"}))
            header["DestAddr"] = dest
            valid = _merge(valid, dvalid)
        inner = draw(serf_message(query_target)).data if draw(st.booleans()) else b""
        return Msg(bytes((kind,)) + wire.pack(header) + inner, LENIENT if valid else valid)
    if kind == wire.S_PUSH_PULL:
        return draw(serf_state())
    pinned = {"Node": draw(st.sampled_from([OWN_NAME, PEER_NAME])), "LTime": draw(ltime_hostile())}
    if kind == wire.S_QUERY_RESPONSE and query_target is not None:
        pinned.update(LTime=query_target[0], ID=query_target[1])
        pinned["Payload"] = draw(st.one_of(conflict_response(), key_response()))
    value, valid = draw(body(SERF_BODIES[kind], pinned))
    return Msg(wire.msg(kind, value), valid)


@st.composite
def key_request(draw: st.DrawFn) -> Msg:
    value, valid = draw(body({"Key": "bytes"}, {"Key": draw(st.sampled_from(
        [bytes(16), bytes(range(16)), bytes(24), bytes(32), bytes(5), b""]))}))
    return Msg(wire.msg(wire.S_KEY_REQUEST, value), valid)


def conflict_response() -> st.SearchStrategy[bytes]:
    fields = {"Name": "str", "Addr": "ip", "Port": "u16", "Status": "u8", "ProtocolMin": "u8",
              "ProtocolMax": "u8", "ProtocolCur": "u8", "DelegateMin": "u8",
              "DelegateMax": "u8", "DelegateCur": "u8"}
    return body(fields).map(lambda b: wire.msg(wire.S_CONFLICT_RESPONSE, b[0]))


def key_response() -> st.SearchStrategy[bytes]:
    fields = {"Result": "bool", "Message": "str", "PrimaryKey": "str"}

    def build(parts: tuple[tuple[Any, Any], Any]) -> bytes:
        (value, _), keys = parts
        if isinstance(value, dict):
            value["Keys"] = keys
        return wire.msg(wire.S_KEY_RESPONSE, value)

    keys = st.one_of(st.lists(st.one_of(NAMES, st.binary(max_size=8)), max_size=5), nested(6))
    return st.tuples(body(fields), keys).map(build)


@st.composite
def serf_state(draw: st.DrawFn) -> Msg:
    """Serf's push-pull state: clocks at the maxima, status maps and event slots of any shape."""
    allowed = draw(st.sampled_from(MODES))
    flags: list[bool | None] = []
    state: dict[str, Any] = {}
    for name in ("LTime", "EventLTime", "QueryLTime"):
        value, flag = draw(st.one_of(ltime_hostile().map(lambda v: (v, GOOD)),
                                     field("u64", allowed)))
        state[name] = value
        flags.append(flag)
    event = st.fixed_dictionaries({"LTime": ltime_hostile(), "Events": st.lists(
        st.fixed_dictionaries({"Name": NAMES, "Payload": st.binary(max_size=16)}), max_size=3)})
    pools = {
        "StatusLTimes": {GOOD: st.dictionaries(st.one_of(NAMES, st.sampled_from(
            [OWN_NAME, PEER_NAME])), ltime_hostile(), max_size=5),
            LENIENT: st.dictionaries(KEYS, nested(4), max_size=4), BAD: _wrong(dict)},
        "LeftMembers": {GOOD: st.lists(st.sampled_from([OWN_NAME, PEER_NAME, "gone"]),
                                       max_size=4),
                        LENIENT: st.lists(nested(3), max_size=4), BAD: _wrong(list)},
        "Events": {GOOD: st.lists(st.one_of(st.none(), event), max_size=5),
                   LENIENT: st.one_of(st.lists(nested(4), max_size=4), big_container())},
    }
    for name, pool in pools.items():
        flag = draw(st.sampled_from([f for f in allowed if f in pool]))
        state[name] = draw(pool[flag])
        flags.append(flag)
    return Msg(wire.msg(wire.S_PUSH_PULL, state), _merge(*flags))


@st.composite
def packet(draw: st.DrawFn, query_target: tuple[int, int] | None = None, depth: int = 0) -> Msg:
    """One UDP packet: a message, a user message, or compound/compress/CRC wrapping more."""
    choice = draw(st.integers(0, 9 if depth < 3 else 5))
    if choice <= 3:
        return draw(memberlist_message())
    if choice <= 5:
        inner = draw(serf_message(query_target))
        return Msg(wire.user(inner.data), inner.valid)
    if choice <= 7:
        parts = draw(st.lists(packet(query_target, depth + 1), min_size=0, max_size=5))
        return Msg(wire.compound([p.data for p in parts]), LENIENT)
    inner = draw(packet(query_target, depth + 1))
    if choice == 8:
        return Msg(wire.compress(inner.data), inner.valid)
    corrupt = draw(st.booleans())
    return Msg(wire.with_crc(inner.data, corrupt), BAD if corrupt else inner.valid)


@st.composite
def push_pull_stream(draw: st.DrawFn) -> Msg:
    """A push-pull stream: hostile header counts, node states and serf user state."""
    nodes = []
    valid: bool | None = GOOD
    for _ in range(draw(st.integers(0, 6))):
        pinned = {"Name": draw(st.sampled_from([OWN_NAME, PEER_NAME, "third", "fourth"])),
                  "State": draw(st.sampled_from([0, 1, 2, 3])), "Vsn": wire.VSN,
                  "Addr": bytes([10, 0, 0, 4]), "Port": PORT}
        value, flag = draw(body(NODE_STATE, pinned))
        nodes.append(value)
        valid = _merge(valid, flag)
    user = draw(st.one_of(st.just(b""), serf_state().map(lambda m: m.data),
                          st.binary(max_size=32)))
    header = None
    if draw(st.integers(0, 4)) == 0:
        # The header lies about the counts, or is not a map of integers at all.
        header, _ = draw(body({"Join": "bool", "Nodes": "u32", "UserStateLen": "u32"}))
        valid = LENIENT if valid else valid
    data = wire.push_pull(nodes, user, draw(st.booleans()), header)
    if draw(st.integers(0, 4)) == 0:
        data = wire.compress(data)
    return Msg(data, valid)


@st.composite
def stream_message(draw: st.DrawFn) -> Msg:
    choice = draw(st.integers(0, 5))
    if choice <= 3:
        return draw(push_pull_stream())
    if choice == 4:
        value, valid = draw(body(MEMBERLIST_BODIES[wire.PING], {"Node": OWN_NAME}))
        return Msg(wire.msg(wire.PING, value), valid)
    inner = draw(serf_message())
    header, valid = draw(body({"UserMsgLen": "u32"}, {"UserMsgLen": len(inner.data)}))
    return Msg(bytes((wire.USER,)) + wire.pack(header) + inner.data, LENIENT)
