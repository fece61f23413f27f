"""The typed decode boundary: read msgpack map fields with Go's widths and bounded sizes.

Every message from a peer is decoded once into a typed record through these readers before any
state machine sees it. A value that does not fit the Go field it mirrors (a port above 65535, a
negative incarnation, a map where a list belongs, a 1 MB node name) raises ``DecodeError``; the
caller drops the message, counts it and moves on. Go's decoder refuses the same values, so a
message pyserf drops is one serf could not have used either.

Bodies come from ``msgpack.unpackb(raw=True)``: keys are bytes, and Go's "raw" strings arrive as
bytes too (old-spec msgpack does not tell strings from byte slices).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, TypeVar

U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

# Go's strings are unbounded; these bounds are ours. A datagram holds at most 64 KiB anyway, but a
# push-pull stream can carry 20 MiB, and names end up in logs, snapshots and handler environments.
MAX_NAME_BYTES = 512  # serf validates <= 128 when validate_node_names is set; we allow more
MAX_TEXT_BYTES = 64 * 1024
MAX_LIST_ITEMS = 4096
# Parsed addresses by their packed bytes: every alive and push-pull entry names one, and
# ipaddress costs microseconds per parse. Bounded (cleared when full) because peers choose them;
# the size suits one agent like the decode memos' (the simulator grows all of them together).
ADDRESS_CACHE_LIMIT = 4096
_ip_texts: dict[bytes, str] = {}
# The text of an address ``ip_text`` already parsed, or None.
known_ip_text = _ip_texts.get
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(memo: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Store ``value`` in a memo whose keys peers choose: emptied when it holds ``limit``
    entries, so it stays bounded without the bookkeeping of an LRU (a miss only costs a
    decode again). The decode and encode memos of codec and serf's messages use this."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value


# A msgpack map as decoded off the wire: keys and values are whatever a peer sent (raw=True:
# byte strings, but also numbers or nil), narrowed by the readers below.
WireMap = dict[object, object]


class DecodeError(ValueError):
    """A message that does not follow the wire format; it is dropped, counted and logged."""


def _field(key: bytes) -> str:
    return key.decode("ascii", "replace")


def uint(body: WireMap, key: bytes, max_value: int) -> int:
    """An unsigned integer field no larger than ``max_value`` (missing or nil reads as 0)."""
    return _integer(body, key, 0, max_value)


def int64(body: WireMap, key: bytes) -> int:
    """A signed 64-bit integer field (Go's int64 / time.Duration)."""
    return _integer(body, key, I64_MIN, I64_MAX)


def _integer(body: WireMap, key: bytes, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int):
        raise DecodeError(f"field {_field(key)} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise DecodeError(f"field {_field(key)} value {value} does not fit {low}..{high}")
    return value


def flag(body: WireMap, key: bytes) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if isinstance(value, (bool, int)):
        return bool(value)
    raise DecodeError(f"field {_field(key)} must be a bool, got {type(value).__name__}")


def blob(body: WireMap, key: bytes, max_len: int = MAX_TEXT_BYTES) -> bytes:
    """A byte-slice field; Go also accepts an array of small integers for ``[]uint8``."""
    value = body.get(key)
    if value is None:
        return b""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (list, tuple)):
        if len(value) > max_len:
            raise DecodeError(f"field {_field(key)} is longer than {max_len} bytes")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U8_MAX
                   for v in value):
            raise DecodeError(f"field {_field(key)} must be bytes")
        return bytes(value)
    if not isinstance(value, bytes):
        raise DecodeError(f"field {_field(key)} must be bytes, got {type(value).__name__}")
    if len(value) > max_len:
        raise DecodeError(f"field {_field(key)} is longer than {max_len} bytes")
    return value


def text(body: WireMap, key: bytes, max_len: int = MAX_TEXT_BYTES) -> str:
    """A string field, at most ``max_len`` bytes; invalid UTF-8 is replaced, not refused
    (Go strings may hold any bytes)."""
    value = body.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise DecodeError(f"field {_field(key)} must be a string, got {type(value).__name__}")
    if len(raw) > max_len:
        raise DecodeError(f"field {_field(key)} is longer than {max_len} bytes")
    return raw.decode("utf-8", "replace") if isinstance(value, bytes) else value


def name_error(name: str) -> str | None:
    """Why ``name`` cannot be a node name, or None. Control characters are refused so that a
    name can never split a log line, a snapshot line or a handler's stdin record."""
    # A character is at most 4 UTF-8 bytes, so short names skip the encode.
    if len(name) * 4 > MAX_NAME_BYTES and \
            len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"node name is longer than {MAX_NAME_BYTES} bytes"
    if _CONTROL.search(name):
        return f"node name {name!r} contains control characters"
    return None


def node_name(body: WireMap, key: bytes, required: bool = True) -> str:
    """A node name field: bounded, no control characters, present when ``required``."""
    name = text(body, key, MAX_NAME_BYTES)
    if not name:
        if required:
            raise DecodeError(f"field {_field(key)} must name a node")
        return name
    error = name_error(name)
    if error:
        raise DecodeError(error)
    return name


def ip_bytes(body: WireMap, key: bytes, required: bool = True) -> bytes:
    """An IP address as Go's ``net.IP``: 4 or 16 bytes (empty allowed when not required)."""
    raw = blob(body, key, 16)
    if not raw and not required:
        return raw
    if len(raw) not in (4, 16):
        raise DecodeError(f"field {_field(key)} must be a 4 or 16 byte IP, got {len(raw)} bytes")
    return raw


def ip_text(raw: bytes) -> str:
    """A 4- or 16-byte address as text; an IPv4-mapped IPv6 address is shown as IPv4."""
    found = _ip_texts.get(raw)
    if found is not None:
        return found
    if len(raw) == 4:
        found = str(ipaddress.IPv4Address(raw))
    elif len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
        found = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    else:
        raise DecodeError(f"address must be 4 or 16 bytes, got {len(raw)}")
    remember(_ip_texts, bytes(raw), found, ADDRESS_CACHE_LIMIT)
    return found


def seq(body: WireMap, key: bytes, max_items: int = MAX_LIST_ITEMS) -> list[object]:
    """A list field of at most ``max_items`` entries (missing or nil reads as empty)."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"field {_field(key)} must be a list, got {type(value).__name__}")
    _check_entries(key, value, max_items)
    return value


def mapping(body: WireMap, key: bytes, max_items: int = MAX_LIST_ITEMS) -> WireMap:
    """A map field of at most ``max_items`` entries (missing or nil reads as empty)."""
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"field {_field(key)} must be a map, got {type(value).__name__}")
    _check_entries(key, value, max_items)
    return value


def _check_entries(key: bytes, value: list[object] | WireMap, max_items: int) -> None:
    if len(value) > max_items:
        raise DecodeError(f"field {_field(key)} has more than {max_items} entries")


def item_text(value: Any, what: str, max_len: int = MAX_TEXT_BYTES) -> str:
    """A bare msgpack value (a list item or a map key) that must be a string."""
    if not isinstance(value, (bytes, str)):
        raise DecodeError(f"{what} must be a string, got {type(value).__name__}")
    return text({b"v": value}, b"v", max_len)
