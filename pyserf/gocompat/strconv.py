"""Go's ``strconv``: Quote, ParseInt, ParseBool, with Go's error texts."""

from __future__ import annotations

SYNTAX = "invalid syntax"
RANGE = "value out of range"

_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}
TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class NumError(ValueError):
    """``*strconv.NumError``: ``strconv.ParseInt: parsing "x": invalid syntax``."""

    def __init__(self, func: str, text: str, err: str) -> None:
        super().__init__(f"strconv.{func}: parsing {quote(text)}: {err}")
        self.func = func
        self.text = text
        self.err = err


def quote(text: str) -> str:
    """``strconv.Quote`` (``%q``). Surrogate-escaped bytes (from undecodable input) print as
    Go prints the invalid bytes they stand for: ``\\xNN``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd" if code < 0xDC80 else f"\\x{code - 0xDC00:02x}")
        elif ch == " " or (ch.isprintable() and not ch.isspace()):
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def parse_bool(text: str) -> bool:
    """``strconv.ParseBool``."""
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise NumError("ParseBool", text, SYNTAX)


def _underscores_ok(text: str) -> bool:
    """Go's underscoreOK: underscores only between digits (or after a base prefix)."""
    saw = "^"
    i = 0
    if len(text) >= 1 and text[0] in "+-":
        text = text[1:]
    hex_prefix = False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        i = 2
        saw = "0"
        hex_prefix = text[1].lower() == "x"
    while i < len(text):
        ch = text[i]
        if "0" <= ch <= "9" or (hex_prefix and ch.lower() in "abcdef"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_uint(text: str, base: int = 10, bit_size: int = 64) -> int:
    """``strconv.ParseUint`` for base 2..36 (no sign, no prefix, no underscores)."""
    allowed = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    if not text or any(c not in allowed for c in text.lower()):
        raise NumError("ParseUint", text, SYNTAX)
    if len(text.lstrip("0")) > 64 or int(text, base) >= 1 << bit_size:
        raise NumError("ParseUint", text, RANGE)
    return int(text, base)


def parse_int(text: str, base: int = 0, bit_size: int = 64) -> int:
    """``strconv.ParseInt(text, base, bit_size)`` for base 0 (prefixes 0x/0o/0b/0 and
    underscores) or 2..36; raises NumError with Go's text."""
    func = "ParseInt"
    if not text:
        raise NumError(func, text, SYNTAX)
    s = text
    neg = s[0] == "-"
    if s[0] in "+-":
        s = s[1:]
    digits_base = base
    body = s
    if base == 0:
        digits_base = 10
        lower = s[:2].lower()
        if lower in ("0x", "0o", "0b"):
            digits_base = {"0x": 16, "0o": 8, "0b": 2}[lower]
            body = s[2:]
        elif len(s) > 1 and s[0] == "0":
            digits_base = 8
            body = s[1:]
    allowed = "0123456789abcdefghijklmnopqrstuvwxyz"[:digits_base]
    underscores = base == 0 and "_" in body
    if underscores:
        if not _underscores_ok(text):
            raise NumError(func, text, SYNTAX)
        body = body.replace("_", "")
    if not body or any(c not in allowed for c in body.lower()):
        raise NumError(func, text, SYNTAX)
    if len(body.lstrip("0")) > 64:  # past any int64 in any base; int() refuses huge strings
        raise NumError(func, text, RANGE)
    value = int(body, digits_base)
    limit = 1 << (bit_size - 1)
    if (neg and value > limit) or (not neg and value >= limit):
        raise NumError(func, text, RANGE)
    return -value if neg else value
