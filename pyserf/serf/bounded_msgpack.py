"""Bounded msgpack decoding for serf's messages.

Before msgpack builds any object from a long message, ``check_shape`` walks the bytes and bounds
the number of values and the nesting depth, so a message made of thousands of empty arrays cannot
turn its input into many times its size in Python objects.
"""

from __future__ import annotations

from typing import Any

import msgpack

from pyserf.memberlist.fields import DecodeError, WireMap

# Values in one gossip message. A datagram holds at most 64 KiB; a stream user message could be
# bigger, and a query's node filter names at most messages.MAX_FILTER_NODES nodes.
MAX_MESSAGE_OBJECTS = 16 * 1024

# Serf's deepest message (push-pull: state > Events > slot > Events > event > field) nests 6.
MAX_DEPTH = 16


# Fixed sizes of msgpack's non-container, non-string formats, by leading byte.
_FIXED_SIZE = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
               0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}
# Formats followed by a big-endian length: leading byte -> (length bytes, extra type bytes).
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),
          0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)}
# Containers with an explicit count: leading byte -> (count bytes, values per entry).
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def check_shape(data: bytes, max_objects: int, max_depth: int = MAX_DEPTH,
                start: int = 0) -> int:
    """Walk one msgpack value starting at ``start`` without building it; return where it ends.

    Raises DecodeError if it is truncated, holds more than ``max_objects`` values or nests
    deeper than ``max_depth``. Strings are skipped by length, so the cost is linear in the number
    of values, and stops at the budget."""
    n = len(data)
    i = start
    objects = 0
    pending = [1]  # values still to read at each open nesting level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if i >= n:
            raise DecodeError("msgpack value is truncated")
        objects += 1
        if objects > max_objects:
            raise DecodeError(f"message holds more than {max_objects} values")
        b = data[i]
        count = 0
        if b <= 0x7F or b >= 0xE0:
            i += 1
            continue
        if b <= 0x8F:
            count, i = (b & 0x0F) * 2, i + 1
        elif b <= 0x9F:
            count, i = b & 0x0F, i + 1
        elif b <= 0xBF:
            i += 1 + (b & 0x1F)
            continue
        elif b in _FIXED_SIZE:
            i += _FIXED_SIZE[b]
            continue
        elif b in _SIZED:
            width, extra = _SIZED[b]
            length = int.from_bytes(data[i + 1:i + 1 + width], "big")
            i += 1 + width + extra + length
            continue
        elif b in _CONTAINER:
            width, per_entry = _CONTAINER[b]
            if i + 1 + width > n:
                raise DecodeError("msgpack value is truncated")
            count = int.from_bytes(data[i + 1:i + 1 + width], "big") * per_entry
            i += 1 + width
        else:
            raise DecodeError(f"invalid msgpack byte 0x{b:02x}")
        if count:
            if len(pending) > max_depth:
                raise DecodeError(f"message nests deeper than {max_depth} levels")
            pending.append(count)
    if i > n:
        raise DecodeError("msgpack value is truncated")
    return i


def unpack_value(data: bytes, max_objects: int = MAX_MESSAGE_OBJECTS) -> Any:
    """One msgpack value (raw strings as bytes), bounded in values and depth. Like Go's
    decoder, it reads one value and ignores whatever follows."""
    if len(data) > max_objects:
        # Every value takes at least a byte, so only a longer message can exceed the budget;
        # shorter ones skip the walk (msgpack's own stack limit bounds their depth).
        data = data[:check_shape(data, max_objects)]
    try:
        return msgpack.unpackb(data, raw=True, strict_map_key=False)
    except msgpack.ExtraData as exc:
        # msgpack-types' stub omits the attribute ExtraData.__init__ sets.
        return exc.unpacked  # type: ignore[attr-defined]
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"malformed msgpack value: {exc}") from exc


def decode_body(data: bytes, max_objects: int = MAX_MESSAGE_OBJECTS) -> WireMap:
    """A message body: one bounded msgpack map."""
    body = unpack_value(data, max_objects)
    if not isinstance(body, dict):
        raise DecodeError(f"message body must be a map, got {type(body).__name__}")
    return body
