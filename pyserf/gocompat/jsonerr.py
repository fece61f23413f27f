"""Go's encoding/json decoding errors. Python's ``json`` parses; where it fails (or is more
lenient than Go), a scanner worded like Go's finds the first syntax error so the message is
Go's ("invalid character 'x' looking for beginning of value"). ``json`` is imported only when
a document is decoded: an agent without config, tags or keyring files never loads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyserf.gocompat.strconv import quote

_WS = " \t\r\n"


class JSONError(ValueError):
    """A document Go's encoding/json refuses; the text is Go's."""


class _SyntaxError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _quote_char(byte: int) -> str:
    """Go's encoding/json quoteChar for a single input byte."""
    if byte == 0x27:
        return "'\\''"
    if byte == 0x22:
        return "'\"'"
    return "'" + quote(chr(byte))[1:-1] + "'"


class _Scanner:
    """Finds the first syntax error of the first JSON value, worded like Go's scanner."""

    _WS = b" \t\r\n"
    _DIGITS = b"0123456789"

    def __init__(self, data: bytes) -> None:
        self.d = data
        self.n = len(data)

    def fail(self, i: int, context: str) -> _SyntaxError:
        if i >= self.n:
            return _SyntaxError("unexpected EOF", self.n)
        return _SyntaxError(
            f"invalid character {_quote_char(self.d[i])} {context}", i
        )

    def ws(self, i: int) -> int:
        while i < self.n and self.d[i] in self._WS:
            i += 1
        return i

    def top(self) -> int:
        i = self.ws(0)
        if i >= self.n:
            raise _SyntaxError("EOF", i)
        return self.value(i)

    def value(self, i: int) -> int:
        i = self.ws(i)
        if i >= self.n:
            raise self.fail(i, "")
        c = self.d[i]
        if c == 0x7B:
            return self.obj(i + 1)
        if c == 0x5B:
            return self.arr(i + 1)
        if c == 0x22:
            return self.string(i + 1)
        if c == 0x2D or c in self._DIGITS:
            return self.number(i)
        for word in (b"true", b"false", b"null"):
            if c == word[0]:
                return self.literal(i, word)
        raise self.fail(i, "looking for beginning of value")

    def obj(self, i: int) -> int:
        return self.items(i, 0x7D, self.member, "after object key:value pair")

    def arr(self, i: int) -> int:
        return self.items(i, 0x5D, self.value, "after array element")

    def items(self, i: int, close: int, item: Callable[[int], int], after: str) -> int:
        """The comma-separated items of an object or array, up to its closing byte."""
        i = self.ws(i)
        if i < self.n and self.d[i] == close:
            return i + 1
        while True:
            i = self.ws(item(i))
            if i < self.n and self.d[i] == 0x2C:
                i = self.ws(i + 1)
                continue
            if i < self.n and self.d[i] == close:
                return i + 1
            raise self.fail(i, after)

    def member(self, i: int) -> int:
        if i >= self.n or self.d[i] != 0x22:
            raise self.fail(i, "looking for beginning of object key string")
        i = self.ws(self.string(i + 1))
        if i >= self.n or self.d[i] != 0x3A:
            raise self.fail(i, "after object key")
        return self.value(i + 1)

    def string(self, i: int) -> int:
        while i < self.n:
            c = self.d[i]
            if c == 0x22:
                return i + 1
            if c == 0x5C:
                i += 1
                if i >= self.n:
                    break
                esc = self.d[i]
                if esc in b'bfnrt\\/"':
                    i += 1
                    continue
                if esc == 0x75:
                    for k in range(1, 5):
                        if i + k >= self.n:
                            raise self.fail(self.n, "")
                        if self.d[i + k] not in b"0123456789abcdefABCDEF":
                            raise self.fail(i + k, "in \\u hexadecimal character escape")
                    i += 5
                    continue
                raise self.fail(i, "in string escape code")
            if c < 0x20:
                raise self.fail(i, "in string literal")
            i += 1
        raise self.fail(self.n, "")

    def digits(self, i: int) -> int:
        while i < self.n and self.d[i] in self._DIGITS:
            i += 1
        return i

    def number(self, i: int) -> int:
        if self.d[i] == 0x2D:
            i += 1
            if i >= self.n or self.d[i] not in self._DIGITS:
                raise self.fail(i, "in numeric literal")
        i = i + 1 if self.d[i] == 0x30 else self.digits(i)
        if i < self.n and self.d[i] == 0x2E:
            i += 1
            if i >= self.n or self.d[i] not in self._DIGITS:
                raise self.fail(i, "after decimal point in numeric literal")
            i = self.digits(i)
        if i < self.n and self.d[i] in b"eE":
            i += 1
            if i < self.n and self.d[i] in b"+-":
                i += 1
            if i >= self.n or self.d[i] not in self._DIGITS:
                raise self.fail(i, "in exponent of numeric literal")
            i = self.digits(i)
        return i

    def literal(self, i: int, word: bytes) -> int:
        for k in range(1, len(word)):
            if i + k >= self.n or self.d[i + k] != word[k]:
                expect = _quote_char(word[k])
                raise self.fail(i + k, f"in literal {word.decode()} (expecting {expect})")
        return i + len(word)



def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; Go does not


def _parse_first(data: bytes) -> tuple[Any, str]:
    """The first JSON value of ``data`` and the text after it; ValueError where Python's
    json refuses the document."""
    import json

    text = data.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_WS))
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    value, end = decoder.raw_decode(text, start)
    return value, text[end:]


def _go_error(data: bytes, whole: bool) -> str | None:
    """Go's syntax error for the first value of ``data`` (for ``whole``, for the document
    json.Unmarshal checks), or None where Go's scanner finds none."""
    scanner = _Scanner(data)
    try:
        end = scanner.top()
    except _SyntaxError as exc:
        if whole and exc.message in ("EOF", "unexpected EOF"):
            return "unexpected end of JSON input"
        return exc.message
    rest = scanner.ws(end)
    if whole and rest < len(data):
        return f"invalid character {_quote_char(data[rest])} after top-level value"
    return None


def decode_first(data: bytes) -> Any:
    """The first JSON value, as Go's ``json.Decoder.Decode`` reads it (what follows is not
    read); JSONError with Go's text ("EOF" for an empty document)."""
    try:
        value, rest = _parse_first(data)
    except (ValueError, RecursionError) as exc:
        raise JSONError(_go_error(data, False) or str(exc)) from None
    if rest and rest[0] not in _WS:
        # Python ends a number where Go's scanner may not ("1.x" is an error in Go).
        message = _go_error(data, False)
        if message is not None:
            raise JSONError(message)
    return value


def _json_kind(value: Any) -> str:
    """The JSON kind Go's UnmarshalTypeError names: object, array, string, number, bool."""
    for kind, types in (("bool", bool), ("number", (int, float)), ("string", str),
                        ("object", dict), ("array", list)):
        if isinstance(value, types):
            return kind
    return "null"


def unmarshal_strings(data: bytes, go_type: str) -> Any:
    """``json.Unmarshal`` of a whole document into ``[]string`` or ``map[string]string``
    (serf's keyring and tags files), with Go's error texts; JSON null is None and a null
    string inside is "" (Go leaves the zero value)."""
    try:
        value, rest = _parse_first(data)
        if rest.strip(_WS):
            raise ValueError("data after the top-level value")
    except (ValueError, RecursionError) as exc:
        raise JSONError(_go_error(data, True) or str(exc)) from None
    if value is None:
        return None
    container = list if go_type == "[]string" else dict
    if not isinstance(value, container):
        raise JSONError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type "
                        f"{go_type}")
    items = value if isinstance(value, list) else list(value.values())
    for item in items:
        if item is not None and not isinstance(item, str):
            raise JSONError(f"json: cannot unmarshal {_json_kind(item)} into Go value of "
                            "type string")
    if isinstance(value, list):
        return [item or "" for item in value]
    return {key: item or "" for key, item in value.items()}
