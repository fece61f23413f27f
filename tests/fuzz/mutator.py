"""A structure-aware mutator for atheris: edits msgpack fields, not just bytes.

Byte-level mutation rarely turns a valid msgpack uint16 into a 2^32 or a string into a map,
yet those are the hostile inputs that matter. Half the time this mutator unwraps the message
(compress, CRC, compound, user, push-pull layout), replaces one msgpack value somewhere inside
with a boundary integer, a value of another type or a large container, and wraps it back up
with lengths and checksums fixed; the other half it leaves to libFuzzer's byte mutations.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import atheris
import msgpack

from pyserf.memberlist import lzw
from tests.fuzz import wire

BOUNDARY_INTS = [0, 1, -1, 255, 256, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 2**32, 2**63,
                 2**64 - 1, -(2**63)]


def hostile_value(rng: random.Random) -> Any:
    choice = rng.randrange(9)
    if choice <= 2:
        return rng.choice(BOUNDARY_INTS)
    if choice == 3:
        return rng.choice([b"", b"x\nleave\nclock: 1", b"\x00" * 5, bytes(rng.randrange(40))])
    if choice == 4:
        return rng.choice([[], [0] * rng.randrange(1, 600), [b"a", 1, None]])
    if choice == 5:
        return rng.choice([{}, {b"k": {b"k": [1]}}, {i: None for i in range(rng.randrange(300))}])
    return rng.choice([None, True, False, 1.5, "ünï"])


def _mutate_value(value: Any, rng: random.Random) -> Any:
    """Replace one randomly chosen node of a decoded msgpack tree."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        value[key] = _mutate_value(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        value[i] = _mutate_value(value[i], rng)
        return value
    return hostile_value(rng)


def _objects(data: bytes) -> tuple[list[Any], bytes]:
    """Consecutive msgpack values at the start of ``data`` and the raw tail after them."""
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    values: list[Any] = []
    offset = 0
    try:
        for value in unpacker:
            values.append(value)
            offset = unpacker.tell()
            if len(values) >= 64:
                break
    except Exception:  # noqa: BLE001 - whatever parsed is what we mutate
        pass
    return values, data[offset:]


def _unwrap(kind: int, body: bytes, rng: random.Random, depth: int) -> bytes | None:
    """Mutate inside a memberlist wrapper (compress, CRC, compound, user); None if not one."""
    if kind == wire.COMPRESS:
        try:
            inner = lzw.decompress(msgpack.unpackb(body, raw=True)[b"Buf"], 1 << 20)
        except Exception:  # noqa: BLE001 - not a well-formed wrapper: mutate it as msgpack
            return None
        return wire.compress(mutate_message(inner, rng, depth + 1))
    if kind == wire.HAS_CRC and len(body) > 4:
        return wire.with_crc(mutate_message(body[4:], rng, depth + 1))
    if kind == wire.COMPOUND and body:
        count = min(body[0], (len(body) - 1) // 2)
        lengths = [struct.unpack_from(">H", body, 1 + 2 * i)[0] for i in range(count)]
        offset, parts = 1 + 2 * count, []
        for length in lengths:
            parts.append(body[offset:offset + length])
            offset += length
        if parts:
            i = rng.randrange(len(parts))
            parts[i] = mutate_message(parts[i], rng, depth + 1)
            return wire.compound(parts)
    if kind == wire.USER and body[:1] and body[0] <= wire.S_RELAY:
        return bytes((kind,)) + mutate_message(body, rng, depth + 1, serf=True)
    return None


def mutate_message(data: bytes, rng: random.Random, depth: int = 0, serf: bool = False
                   ) -> bytes:
    """One structural mutation of a memberlist (or, with ``serf``, a serf) message."""
    if not data or depth > 4:
        return data
    kind, body = data[0], data[1:]
    if not serf and rng.random() < 0.8:
        unwrapped = _unwrap(kind, body, rng, depth)
        if unwrapped is not None:
            return unwrapped
    values, tail = _objects(body)
    # What follows the msgpack values: a push-pull's serf state or a relay's inner message.
    nested_tail = (kind == wire.PUSH_PULL and not serf) or (kind == wire.S_RELAY and serf)
    if nested_tail and tail and rng.random() < 0.5:
        tail = mutate_message(tail, rng, depth + 1, serf=True)
        if not serf and values and isinstance(values[0], dict) and rng.random() < 0.8:
            values[0][b"UserStateLen"] = len(tail)
    elif values:
        i = rng.randrange(len(values))
        values[i] = _mutate_value(values[i], rng)
    else:
        return data
    try:
        return bytes((kind,)) + b"".join(wire.pack(v) for v in values) + tail
    except Exception:  # noqa: BLE001 - e.g. a value msgpack will not re-pack
        return data


def custom_mutator(prefix: int = 0, serf: bool = False):
    """An atheris custom mutator; ``prefix`` bytes (a target's flags) are kept as they are."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5 or len(data) <= prefix:
            return atheris.Mutate(data, max_size)
        out = data[:prefix] + mutate_message(data[prefix:], rng, serf=serf)
        return out[:max_size]

    return mutate
