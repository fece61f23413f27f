"""Vivaldi network coordinates, as serf carries them in ping acks (``serf rtt``).

Dependency-free (the standard library and the wire field error) so the RPC client shares
``Coordinate`` and its distance without importing the protocol machines.

Each node keeps a coordinate (an 8-dimensional position plus a height and an adjustment); a
measured round trip to a peer pulls or pushes it like a spring, so the distance between two
coordinates estimates their RTT without measuring it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyserf.memberlist.fields import DecodeError, WireMap

DIMENSIONALITY = 8
ERROR_MAX = 1.5
CE = 0.25
CC = 0.25
ADJUSTMENT_WINDOW = 20
HEIGHT_MIN = 10.0e-6
LATENCY_FILTER = 3
GRAVITY_RHO = 150.0
ZERO_THRESHOLD = 1.0e-6
MAX_RTT = 10.0


@dataclass
class Coordinate:
    vec: list[float] = field(default_factory=lambda: [0.0] * DIMENSIONALITY)
    error: float = ERROR_MAX
    adjustment: float = 0.0
    height: float = HEIGHT_MIN

    def copy(self) -> Coordinate:
        return Coordinate(list(self.vec), self.error, self.adjustment, self.height)

    def valid(self) -> bool:
        values = [*self.vec, self.error, self.adjustment, self.height]
        return len(self.vec) == DIMENSIONALITY and all(math.isfinite(v) for v in values)

    def raw_distance(self, other: Coordinate) -> float:
        return _magnitude(_diff(self.vec, other.vec)) + self.height + other.height

    def distance(self, other: Coordinate) -> float:
        """Estimated RTT in seconds."""
        dist = self.raw_distance(other)
        adjusted = dist + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else dist

    def distance_to_ns(self, other: Coordinate) -> int:
        """Estimated RTT in integer nanoseconds, as serf's DistanceTo (truncating)."""
        if len(self.vec) != len(other.vec):
            raise ValueError("coordinate dimensionality does not match")
        return int(self.distance(other) * 1.0e9)

    def distance_to(self, other: Coordinate) -> float:
        """Estimated RTT in seconds (Go ``Duration.Seconds()`` of the truncated value)."""
        ns = self.distance_to_ns(other)
        sec, nsec = divmod(abs(ns), 1_000_000_000)
        value = float(sec) + float(nsec) / 1e9
        return -value if ns < 0 else value

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Coordinate:
        """A coordinate from an RPC ``get-coordinate`` reply, as a client reads it (lenient:
        absent fields are zero)."""
        return cls(
            vec=[float(v) for v in (rec.get("Vec") or [])],
            error=float(rec.get("Error") or 0.0),
            adjustment=float(rec.get("Adjustment") or 0.0),
            height=float(rec.get("Height") or 0.0),
        )

    def to_wire(self) -> dict[str, object]:
        return {"Adjustment": self.adjustment, "Error": self.error, "Height": self.height,
                "Vec": list(self.vec)}

    @classmethod
    def from_wire(cls, body: WireMap) -> Coordinate:
        """A coordinate as serf's ping delegate decodes it, then refused where serf's Vivaldi
        client would refuse it: the wrong dimensionality, or a NaN or infinite component
        (coordinate.go IsValid / IsCompatibleWith)."""
        def num(key: str) -> float:
            value = _get(body, key, 0.0)
            return _component(value, key)

        vec = _get(body, "Vec", None)
        if not isinstance(vec, list):
            raise DecodeError(f"coordinate Vec must be a list, got {type(vec).__name__}")
        if len(vec) != DIMENSIONALITY:
            raise DecodeError(f"coordinate has {len(vec)} dimensions, not {DIMENSIONALITY}")
        return cls([_component(v, "Vec") for v in vec], num("Error"), num("Adjustment"),
                   num("Height"))


def _get(body: WireMap, key: str, default: object) -> object:
    """A field by name; the body may come from a raw (bytes keys) or a text decode."""
    value = body.get(key.encode())
    return body.get(key, default) if value is None else value


def _component(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"coordinate {what} must be a number, got {type(value).__name__}")
    number = float(value)  # msgpack integers are at most 64-bit: always representable
    if not math.isfinite(number):
        raise DecodeError(f"coordinate {what} is not finite")
    return number


def _diff(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _magnitude(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


class VivaldiClient:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.coord = Coordinate()
        self.origin = Coordinate()
        self.rng = rng or random.Random()
        self.adjustment_samples = [0.0] * ADJUSTMENT_WINDOW
        self.adjustment_index = 0
        self.latency: dict[str, deque[float]] = {}
        self.resets = 0

    def forget(self, node: str) -> None:
        self.latency.pop(node, None)

    def update(self, node: str, other: Coordinate, rtt: float) -> Coordinate:
        """Fold in one RTT measurement to ``node`` (seconds); returns our new coordinate."""
        if not other.valid():
            raise ValueError("invalid coordinate from peer")
        if not 0 <= rtt <= MAX_RTT:
            raise ValueError(f"round trip time not in valid range, duration {rtt}s is not "
                             f"a positive value less than {MAX_RTT:g}s")
        samples = self.latency.setdefault(node, deque(maxlen=LATENCY_FILTER))
        samples.append(rtt)
        rtt = sorted(samples)[len(samples) // 2]
        self._vivaldi(other, rtt)
        self._adjustment(other, rtt)
        self._gravity()
        if not self.coord.valid():
            self.resets += 1
            self.coord = Coordinate()
        return self.coord.copy()

    def _apply_force(self, force: float, other: Coordinate) -> None:
        unit, mag = self._unit_vector_at(self.coord.vec, other.vec)
        self.coord.vec = [v + u * force for v, u in zip(self.coord.vec, unit, strict=True)]
        if mag > ZERO_THRESHOLD:
            height = (self.coord.height + other.height) * force / mag + self.coord.height
            self.coord.height = max(height, HEIGHT_MIN)

    def _unit_vector_at(self, a: list[float], b: list[float]) -> tuple[list[float], float]:
        d = _diff(a, b)
        mag = _magnitude(d)
        if mag > ZERO_THRESHOLD:
            return [x / mag for x in d], mag
        # Two nodes at the same spot: push in a random direction to separate them.
        d = [self.rng.random() - 0.5 for _ in a]
        mag = _magnitude(d)
        if mag > ZERO_THRESHOLD:
            return [x / mag for x in d], 0.0
        return [0.0] * len(a), 0.0

    def _vivaldi(self, other: Coordinate, rtt: float) -> None:
        dist = self.coord.distance(other)
        rtt = max(rtt, ZERO_THRESHOLD)
        wrongness = abs(dist - rtt) / rtt
        total_error = max(self.coord.error + other.error, ZERO_THRESHOLD)
        weight = self.coord.error / total_error
        self.coord.error = min(ERROR_MAX,
                               CE * weight * wrongness + self.coord.error * (1.0 - CE * weight))
        self._apply_force(CC * weight * (rtt - dist), other)

    def _adjustment(self, other: Coordinate, rtt: float) -> None:
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other)
        self.adjustment_index = (self.adjustment_index + 1) % ADJUSTMENT_WINDOW
        self.coord.adjustment = sum(self.adjustment_samples) / (2.0 * ADJUSTMENT_WINDOW)

    def _gravity(self) -> None:
        dist = self.origin.distance(self.coord)
        # x * x, not x ** 2: float ** raises OverflowError where Go's math gives +Inf.
        scaled = dist / GRAVITY_RHO
        self._apply_force(-1.0 * scaled * scaled, self.origin)
