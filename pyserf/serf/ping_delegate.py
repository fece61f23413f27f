"""What serf carries in memberlist's ping acks: its Vivaldi coordinate, behind a version byte
(serf's ping delegate payload)."""

from __future__ import annotations

import msgpack

from pyserf.memberlist.fields import DecodeError
from pyserf.serf import messages
from pyserf.serf.coordinate import Coordinate

PAYLOAD_VERSION = 1
# Values in an ack's coordinate payload: a four-field map (8 values) plus the 8-vector, with
# room for fields a newer serf might add.
MAX_PAYLOAD_VALUES = 64


def encode_ack_payload(coord: Coordinate) -> bytes:
    return bytes((PAYLOAD_VERSION,)) + msgpack.packb(coord.to_wire(), use_bin_type=False)


def decode_ack_payload(payload: bytes) -> Coordinate:
    """A ping ack's payload: version byte, then a msgpack coordinate (bounded: a coordinate is
    one map of four fields and an 8-vector)."""
    if not payload:
        raise DecodeError("empty ping payload")
    if payload[0] != PAYLOAD_VERSION:
        raise DecodeError(f"Unsupported ping payload version {payload[0]}")
    body = messages.unpack_value(payload[1:], MAX_PAYLOAD_VALUES)
    if not isinstance(body, dict):
        raise DecodeError("coordinate payload is not a map")
    return Coordinate.from_wire(body)
