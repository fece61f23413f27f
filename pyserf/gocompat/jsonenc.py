"""Go's ``json.MarshalIndent(v, "", "  ")`` text, as serf's ``-format=json`` output prints it."""

from __future__ import annotations

import math
from typing import Any

from pyserf.gocompat.fmt import exponential, positional, shortest_digits

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(text: str) -> str:
    parts = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _JSON_ESCAPES:
            parts.append(_JSON_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&\u2028\u2029":
            parts.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            parts.append("\\ufffd")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _float(value: float) -> str:
    """encoding/json's float64: positional, exponent below 1e-6 or from 1e21 ("1e-7")."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = shortest_digits(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + positional(digits, point)
    text = exponential(digits, point)
    if text[-3:-1] == "-0":  # Go trims "e-07" to "e-7"
        text = text[:-2] + text[-1]
    return sign + text


def marshal_indent(value: Any, indent: str = "") -> str:
    """``json.MarshalIndent(v, "", "  ")`` output: HTML-safe escapes, dict order preserved.

    Callers sort keys of values that are Go maps; dicts standing for Go structs keep their
    field order.
    """
    inner = indent + "  "
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_json_string(str(k))}: {marshal_indent(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = [inner + marshal_indent(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")
