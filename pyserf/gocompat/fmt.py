"""Go's ``fmt`` verbs for the values serf prints: ``%v`` of what encoding/json decodes into
``interface{}`` (config decoding errors) and ``%#v`` of what serf's msgpack codec decodes
(``serf monitor``)."""

from __future__ import annotations

import math
from typing import Any

from pyserf.gocompat.strconv import quote


def json_kind(value: Any) -> str:
    """reflect.Kind name of a value decoded by Go's encoding/json into interface{}."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "slice"
    return "invalid"


def json_type(value: Any) -> str:
    """Go type name of a value decoded by encoding/json into interface{}."""
    kind = json_kind(value)
    return {"map": "map[string]interface {}", "slice": "[]interface {}"}.get(kind, kind)


def shortest_digits(value: float) -> tuple[str, int]:
    """The shortest digits that read back as ``abs(value)`` (non-zero, finite) and where the
    decimal point goes: ``abs(value) == 0.<digits> * 10**point``; Go's ``strconv`` takes the
    same shortest digits as Python's ``repr``."""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point


def positional(digits: str, point: int) -> str:
    """Digits with the decimal point placed, without an exponent (Go's ``%f`` shortest)."""
    if point <= 0:
        return f"0.{'0' * -point}{digits}"
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return f"{digits[:point]}.{digits[point:]}"


def exponential(digits: str, point: int) -> str:
    """Go's ``%e`` shortest: one digit, the rest after a point, a two-digit exponent."""
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def float_v(value: float) -> str:
    """Format a float64 like Go's ``%v`` (shortest digits, exponent when exp < -4 or >= 6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = shortest_digits(value)
    if not -4 <= point - 1 < 6:
        return sign + exponential(digits, point)
    return sign + positional(digits, point)


def value_v(value: Any) -> str:
    """Format a JSON-decoded value like Go's ``%v`` (maps sorted, slices space-separated)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return float_v(float(value))
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{value_v(value[k])}" for k in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(value_v(v) for v in value) + "]"
    return str(value)


def sharp_v(value: Any, top: bool = True) -> str:
    """Go's ``%#v`` for values the msgpack codec decodes into ``interface{}`` (monitor)."""
    if value is None:
        return "<nil>" if top else "interface {}(nil)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # serf's codec decodes positive fixints as int64 and wider unsigned ints as uint64,
        # which %#v prints in hex.
        return f"0x{value:x}" if value >= 128 else str(value)
    if isinstance(value, float):
        return float_v(value)  # %#v formats a float64 as %v does: 1, not 1.0
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (bytes, bytearray)):
        name = "[]byte" if top else "[]uint8"
        return name + "{" + ", ".join(f"0x{b:x}" for b in value) + "}"
    if isinstance(value, dict):
        items = ", ".join(
            f"{sharp_v(k, False)}:{sharp_v(value[k], False)}"
            for k in sorted(value, key=str)
        )
        return "map[interface {}]interface {}{" + items + "}"
    if isinstance(value, (list, tuple)):
        return "[]interface {}{" + ", ".join(sharp_v(v, False) for v in value) + "}"
    return repr(value)
