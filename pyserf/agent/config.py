"""Agent configuration: defaults, JSON files, merging, validation and Go-compatible parsing.

Serf users keep their JSON config files and scripts when they switch to pyserf, so decoding
errors, merge order and validation messages follow serf 0.9.4 (mapstructure + Go's JSON and
``time.ParseDuration``).  One deliberate difference: a boolean that a later source sets
explicitly (``"replay_on_join": false``, ``-replay=false``) overrides earlier sources, where
serf could only ever turn booleans on.  To do that every loader reports which keys it set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN
from pyserf.memberlist import security

__all__ = [
    "AgentConfig",
    "ConfigError",
    "ConfigSources",
    "EventFilter",
    "EventScript",
    "LOG_LEVELS",
    "PROFILES",
    "USER_EVENT_SIZE_LIMIT_MAX",
    "decode_config",
    "finalize",
    "first_problem",
    "format_duration",
    "go_json_unmarshal",
    "go_quote",
    "load_dir",
    "load_file",
    "load_paths",
    "merge",
    "parse_duration",
    "parse_duration_ns",
    "parse_event_filter",
    "parse_event_handler_spec",
    "parse_event_scripts",
    "unmarshal_tags",
    "validate",
]

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
PROFILES = ("lan", "wan", "local")
USER_EVENT_SIZE_LIMIT_MAX = 9216
MIN_RETRY_INTERVAL = 1.0
MIN_BROADCAST_TIMEOUT = 1.0
EVENT_TYPES = (
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
    "user",
    "query",
    "*",
)


class ConfigError(Exception):
    """A configuration problem, worded exactly like serf's message for the same problem.

    ``message`` is serf's text (``str()`` is that text alone, so operators and scripts see
    what serf prints), ``key`` the JSON key at fault when known, ``path`` the file involved and
    ``stage`` when serf's agent command reports it (see ``STAGES``).
    """

    def __init__(self, message: str, key: str | None = None, path: str | None = None,
                 stage: str = "config") -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.path = path
        self.stage = stage

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------
# AgentConfig
# --------------------------------------------------------------------------------------------


@dataclass
class AgentConfig:
    """Every key of serf's agent JSON config; durations are float seconds."""

    node_name: str = ""
    role: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    tags_file: str = ""
    bind: str = "0.0.0.0:7946"
    advertise: str = ""
    interface: str = ""
    discover: str = ""
    encrypt_key: str = ""
    keyring_file: str = ""
    log_level: str = "INFO"
    rpc_addr: str = "127.0.0.1:7373"
    rpc_auth: str = ""
    event_handlers: list[str] = field(default_factory=list)
    start_join: list[str] = field(default_factory=list)
    replay_on_join: bool = False
    retry_join: list[str] = field(default_factory=list)
    retry_interval: float = 30.0
    retry_max_attempts: int = 0
    rejoin_after_leave: bool = False
    snapshot_path: str = ""
    protocol: int = SERF_PROTOCOL_MAX
    profile: str = "lan"
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = False
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    broadcast_timeout: float = 5.0
    disable_name_resolution: bool = False
    enable_syslog: bool = False
    syslog_facility: str = "LOCAL0"
    statsite_addr: str = ""
    statsd_addr: str = ""
    query_response_size_limit: int = 1024
    query_size_limit: int = 1024
    user_event_size_limit: int = 512
    enable_compression: bool = True
    disable_coordinates: bool = False
    # pyserf extension: kill an event handler still running after this long (0 = never).
    handler_timeout: float = 0.0

    def event_scripts(self) -> list[EventScript]:
        """All handler specs expanded to one script per filter (serf's EventScripts)."""
        result: list[EventScript] = []
        for spec in self.event_handlers:
            result.extend(parse_event_scripts(spec))
        return result

    def copy(self) -> AgentConfig:
        """Deep copy, so merging never aliases another config's dict or lists."""
        return copy.deepcopy(self)


# Value kind of every key; the order is serf's struct order (used for decoding).
_KINDS: dict[str, str] = {
    "node_name": "str",
    "role": "str",
    "disable_coordinates": "bool",
    "tags": "map",
    "tags_file": "str",
    "bind": "str",
    "advertise": "str",
    "encrypt_key": "str",
    "keyring_file": "str",
    "log_level": "str",
    "rpc_addr": "str",
    "rpc_auth": "str",
    "protocol": "int",
    "replay_on_join": "bool",
    "query_response_size_limit": "int",
    "query_size_limit": "int",
    "user_event_size_limit": "int",
    "start_join": "list",
    "event_handlers": "list",
    "profile": "str",
    "snapshot_path": "str",
    "leave_on_terminate": "bool",
    "skip_leave_on_interrupt": "bool",
    "discover": "str",
    "interface": "str",
    "reconnect_interval": "dur",
    "reconnect_timeout": "dur",
    "tombstone_timeout": "dur",
    "disable_name_resolution": "bool",
    "enable_syslog": "bool",
    "syslog_facility": "str",
    "retry_join": "list",
    "retry_max_attempts": "int",
    "retry_interval": "dur",
    "rejoin_after_leave": "bool",
    "enable_compression": "bool",
    "statsite_addr": "str",
    "statsd_addr": "str",
    "broadcast_timeout": "dur",
    "handler_timeout": "dur",
}
CONFIG_KEYS: tuple[str, ...] = tuple(_KINDS)
# serf parses the duration strings in this order after decoding, reporting the first failure.
_DURATION_ORDER = (
    "reconnect_interval",
    "reconnect_timeout",
    "tombstone_timeout",
    "retry_interval",
    "broadcast_timeout",
    "handler_timeout",
)
assert set(CONFIG_KEYS) == {f.name for f in dataclasses.fields(AgentConfig)}


# --------------------------------------------------------------------------------------------
# Go-compatible helpers: quoting, durations, base64
# --------------------------------------------------------------------------------------------

_GO_SHORT_ESCAPES = {
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


def go_quote(text: str) -> str:
    """Quote like Go's ``strconv.Quote`` (``%q``), used in flag and duration errors."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
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


def _time_quote(text: str) -> str:
    """Go's ``time`` package quoting: non-ASCII and control bytes as ``\\xNN``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code >= 0x80:
            for byte in ch.encode("utf-8", "surrogateescape"):
                out.append(f"\\x{byte:02x}")
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NS = 1 << 63


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string to integer nanoseconds, with Go's exact error texts."""
    orig = text
    invalid = ValueError("time: invalid duration " + _time_quote(orig))
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        # integer part
        i = 0
        whole = 0
        while i < len(s) and "0" <= s[i] <= "9":
            whole = whole * 10 + (ord(s[i]) - 48)
            if whole > _MAX_NS:
                raise invalid
            i += 1
        pre = i > 0
        s = s[i:]
        frac = 0
        scale = 1
        post = False
        if s and s[0] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    nxt = frac * 10 + (ord(s[i]) - 48)
                    if frac > (_MAX_NS - 1) // 10 or nxt > _MAX_NS:
                        overflow = True
                    else:
                        frac = nxt
                        scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError("time: missing unit in duration " + _time_quote(orig))
        unit_name, s = s[:i], s[i:]
        unit = _UNIT_NS.get(unit_name)
        if unit is None:
            raise ValueError(
                "time: unknown unit " + _time_quote(unit_name) + " in duration " + _time_quote(orig)
            )
        if whole > _MAX_NS // unit:
            raise invalid
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > _MAX_NS:
                raise invalid
        total += value
        if total > _MAX_NS:
            raise invalid
    if neg:
        return -total
    if total > _MAX_NS - 1:
        raise invalid
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration string ("1h2m3.5s", "300ms", "-1s") to float seconds."""
    return parse_duration_ns(text) / 1e9


def _fmt_frac(value: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the fraction digits of value/10**prec without trailing zeros."""
    digits = ""
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    if printed:
        digits = "." + digits
    return digits, value


def format_duration(seconds: float | int) -> str:
    """Format seconds like Go's ``time.Duration.String()`` ("1s", "1m30s", "1.5ms")."""
    ns = int(round(seconds * 1e9)) if isinstance(seconds, float) else int(seconds) * 10**9
    return format_duration_ns(ns)


def format_duration_ns(ns: int) -> str:
    """Format integer nanoseconds like Go's ``time.Duration.String()``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u < 1_000:
            text = f"{u}ns"
        elif u < 1_000_000:
            frac, whole = _fmt_frac(u, 3)
            text = f"{whole}{frac}\u00b5s"
        else:
            frac, whole = _fmt_frac(u, 6)
            text = f"{whole}{frac}ms"
    else:
        frac, whole = _fmt_frac(u, 9)
        secs = whole % 60
        mins_total = whole // 60
        text = f"{secs}{frac}s"
        if mins_total > 0:
            mins = mins_total % 60
            hours = mins_total // 60
            text = f"{mins}m{text}"
            if hours > 0:
                text = f"{hours}h{text}"
    return "-" + text if neg else text


def unmarshal_tags(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``key=value`` strings into a dict; serf's ``Invalid tag: 'x'`` on bad input."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Invalid tag: '{pair}'")
        result[key] = value
    return result


# --------------------------------------------------------------------------------------------
# Event handler specs and filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """One event filter: ``event`` is a type or ``*``; ``name`` narrows user/query events."""

    event: str
    name: str = ""

    def valid(self) -> bool:
        """Whether serf would accept this filter."""
        return self.event in EVENT_TYPES

    def matches(self, event_type: str, name: str | None = None) -> bool:
        """Whether an event of ``event_type`` (and user/query ``name``) passes this filter."""
        if self.event == "*":
            return True
        if event_type != self.event:
            return False
        if self.event in ("user", "query") and self.name:
            return name == self.name
        return True

    @property
    def key(self) -> str:
        """``event:name``, the key serf's ``info`` uses for handlers."""
        return f"{self.event}:{self.name}"

    def __str__(self) -> str:
        return f"{self.event}:{self.name}" if self.name else self.event


@dataclass(frozen=True)
class EventScript:
    """A handler command bound to one filter (a spec with N filters gives N scripts)."""

    filter: EventFilter
    command: str

    def valid(self) -> bool:
        return self.filter.valid()

    def matches(self, event_type: str, name: str | None = None) -> bool:
        return self.filter.matches(event_type, name)

    def __str__(self) -> str:
        return f"Event '{self.filter}' invoking '{self.command}'"


def parse_event_filter(text: str) -> list[EventFilter]:
    """Split a comma list of filters (``member-join,user:deploy``); empty means ``*``.

    No validation here: the RPC ``stream`` command and handler specs validate separately.
    """
    if text == "":
        text = "*"
    filters: list[EventFilter] = []
    for part in text.split(","):
        for prefix in ("user:", "query:"):
            if part.startswith(prefix):
                filters.append(EventFilter(prefix[:-1], part[len(prefix):]))
                break
        else:
            filters.append(EventFilter(part))
    return filters


def parse_event_handler_spec(spec: str) -> tuple[list[EventFilter], str]:
    """Split ``[filter=]command`` at the first ``=`` into (filters, command)."""
    filt, sep, command = spec.partition("=")
    if not sep:
        filt, command = "", spec
    return parse_event_filter(filt), command


def parse_event_scripts(spec: str) -> list[EventScript]:
    """Expand one handler spec into one EventScript per filter."""
    filters, command = parse_event_handler_spec(spec)
    return [EventScript(f, command) for f in filters]


# --------------------------------------------------------------------------------------------
# JSON decoding with Go-compatible errors
# --------------------------------------------------------------------------------------------


class _JSONSyntaxError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _quote_json_char(byte: int) -> str:
    """Go's encoding/json quoteChar for a single input byte."""
    if byte == 0x27:
        return "'\\''"
    if byte == 0x22:
        return "'\"'"
    return "'" + go_quote(chr(byte))[1:-1] + "'"


class _JSONScanner:
    """Finds the first syntax error of the first JSON value, worded like Go's scanner."""

    _WS = b" \t\r\n"
    _DIGITS = b"0123456789"

    def __init__(self, data: bytes) -> None:
        self.d = data
        self.n = len(data)

    def fail(self, i: int, context: str) -> _JSONSyntaxError:
        if i >= self.n:
            return _JSONSyntaxError("unexpected EOF", self.n)
        return _JSONSyntaxError(
            f"invalid character {_quote_json_char(self.d[i])} {context}", i
        )

    def ws(self, i: int) -> int:
        while i < self.n and self.d[i] in self._WS:
            i += 1
        return i

    def top(self) -> int:
        i = self.ws(0)
        if i >= self.n:
            raise _JSONSyntaxError("EOF", i)
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
        i = self.ws(i)
        if i < self.n and self.d[i] == 0x7D:
            return i + 1
        while True:
            if i >= self.n or self.d[i] != 0x22:
                raise self.fail(i, "looking for beginning of object key string")
            i = self.ws(self.string(i + 1))
            if i >= self.n or self.d[i] != 0x3A:
                raise self.fail(i, "after object key")
            i = self.ws(self.value(i + 1))
            if i < self.n and self.d[i] == 0x2C:
                i = self.ws(i + 1)
                continue
            if i < self.n and self.d[i] == 0x7D:
                return i + 1
            raise self.fail(i, "after object key:value pair")

    def arr(self, i: int) -> int:
        i = self.ws(i)
        if i < self.n and self.d[i] == 0x5D:
            return i + 1
        while True:
            i = self.ws(self.value(i))
            if i < self.n and self.d[i] == 0x2C:
                i += 1
                continue
            if i < self.n and self.d[i] == 0x5D:
                return i + 1
            raise self.fail(i, "after array element")

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
                expect = _quote_json_char(word[k])
                raise self.fail(i + k, f"in literal {word.decode()} (expecting {expect})")
        return i + len(word)


def _decode_json_value(data: bytes) -> Any:
    """Decode the first JSON value like Go's json.Decoder (trailing data is ignored)."""
    scanner = _JSONScanner(data)
    try:
        end = scanner.top()
    except _JSONSyntaxError as exc:
        raise ConfigError(exc.message) from None
    text = data[:end].decode("utf-8", "replace")
    import json  # only config files need it: a flags-only agent never loads it

    return json.loads(text)


def _json_kind(value: Any) -> str:
    """The JSON kind Go's UnmarshalTypeError names: object, array, string, number, bool."""
    for kind, types in (("bool", bool), ("number", (int, float)), ("string", str),
                        ("object", dict), ("array", list)):
        if isinstance(value, types):
            return kind
    return "null"


def go_json_unmarshal(data: bytes, go_type: str) -> Any:
    """Go's json.Unmarshal of a whole file into ``[]string`` or ``map[string]string`` (what
    serf's keyring and tags files hold), failing with Go's error texts; JSON null is None and
    a null string inside is "" (Go leaves the zero value)."""
    scanner = _JSONScanner(data)
    try:
        end = scanner.top()
    except _JSONSyntaxError as exc:
        if exc.message in ("EOF", "unexpected EOF"):
            raise ValueError("unexpected end of JSON input") from None
        raise ValueError(exc.message) from None
    rest = scanner.ws(end)
    if rest < len(data):
        raise ValueError(f"invalid character {_quote_json_char(data[rest])} after top-level value")
    import json  # tags and keyring files only

    value = json.loads(data[:end].decode("utf-8", "replace"))
    if value is None:
        return None
    container = list if go_type == "[]string" else dict
    if not isinstance(value, container):
        raise ValueError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type "
                         f"{go_type}")
    items = value if isinstance(value, list) else list(value.values())
    for item in items:
        if item is not None and not isinstance(item, str):
            raise ValueError(f"json: cannot unmarshal {_json_kind(item)} into Go value of "
                             "type string")
    if isinstance(value, list):
        return [item or "" for item in value]
    return {key: item or "" for key, item in value.items()}


def _go_kind(value: Any) -> str:
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


def _go_type(value: Any) -> str:
    """Go type name of a value decoded by encoding/json into interface{}."""
    kind = _go_kind(value)
    return {"map": "map[string]interface {}", "slice": "[]interface {}"}.get(kind, kind)


def _go_float_v(value: float) -> str:
    """Format a float64 like Go's ``%v`` (shortest digits, exponent when exp < -4 or >= 6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    from decimal import Decimal  # error messages only; _decimal is a sizeable C module

    sign = "-" if value < 0 else ""
    tup = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in tup.digits)
    exponent = int(tup.exponent)
    nd = len(digits)
    dp = nd + exponent
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        esign = "-" if exp < 0 else "+"
        return f"{sign}{mant}e{esign}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= nd:
        return f"{sign}{digits}{'0' * (dp - nd)}"
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _go_value_v(value: Any) -> str:
    """Format a JSON-decoded value like Go's ``%v`` (maps sorted, slices space-separated)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _go_float_v(float(value))
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{_go_value_v(value[k])}" for k in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value_v(v) for v in value) + "]"
    return str(value)


def _unconvertible(name: str, want: str, value: Any) -> str:
    return (
        f"'{name}' expected type '{want}', got unconvertible type '{_go_type(value)}', "
        f"value: '{_go_value_v(value)}'"
    )


def _decode_string(name: str, value: Any, errors: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    errors.append(_unconvertible(name, "string", value))
    return None


def decode_config(raw: Any) -> tuple[AgentConfig, set[str]]:
    """Decode a JSON-decoded object into a partial AgentConfig like serf's mapstructure step.

    Returns the config (unset keys keep defaults) and the keys the object set.  Unknown keys,
    wrong types and bad durations raise ConfigError with serf's wording.
    """
    cfg = AgentConfig()
    keys: set[str] = set()
    if raw is None:
        return cfg, keys
    if not isinstance(raw, dict):
        raise ConfigError(f"'' expected a map, got '{_go_kind(raw)}'")
    errors: list[str] = []
    unused = set(raw)
    durations: dict[str, str] = {}
    for name, kind in _KINDS.items():
        if name in raw:
            data_key = name
        else:
            lowered = name.lower()
            data_key = next((k for k in raw if k.lower() == lowered), None)
            if data_key is None:
                continue
        unused.discard(data_key)
        value = raw[data_key]
        if value is None:
            continue
        if kind in ("str", "dur"):
            text = _decode_string(name, value, errors)
            if text is None:
                continue
            if kind == "dur":
                if text:
                    durations[name] = text
                continue
            setattr(cfg, name, text)
        elif kind == "bool":
            if not isinstance(value, bool):
                errors.append(_unconvertible(name, "bool", value))
                continue
            setattr(cfg, name, value)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(_unconvertible(name, "int", value))
                continue
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(_unconvertible(name, "int", value))
                continue
            setattr(cfg, name, int(value))
        elif kind == "map":
            if not isinstance(value, dict):
                errors.append(f"'{name}' expected a map, got '{_go_kind(value)}'")
                continue
            tags: dict[str, str] = {}
            for tag_key, tag_value in value.items():
                text = _decode_string(f"{name}[{tag_key}]", tag_value, errors)
                tags[tag_key] = text or ""
            setattr(cfg, name, tags)
        elif kind == "list":
            if not isinstance(value, list):
                errors.append(
                    f"'{name}': source data must be an array or slice, got {_go_kind(value)}"
                )
                continue
            items: list[str] = []
            for idx, item in enumerate(value):
                text = _decode_string(f"{name}[{idx}]", item, errors)
                items.append(text or "")
            setattr(cfg, name, items)
        keys.add(name)
    if unused:
        errors.append("'' has invalid keys: " + ", ".join(sorted(unused)))
    if errors:
        points = sorted(f"* {e}" for e in errors)
        raise ConfigError(f"{len(errors)} error(s) decoding:\n\n" + "\n".join(points))
    for name in _DURATION_ORDER:
        if name in durations:
            try:
                setattr(cfg, name, parse_duration(durations[name]))
            except ValueError as exc:
                raise ConfigError(str(exc), key=name) from None
            keys.add(name)
    return cfg, keys


def _go_errno_text(exc: OSError) -> str:
    """Go's lower-case strerror text for an errno."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def load_file(path: str) -> tuple[AgentConfig, set[str]]:
    """Read and decode one JSON config file; returns (partial config, keys it set)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise ConfigError(
            f"Error decoding '{path}': read {path}: is a directory", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': open {path}: {_go_errno_text(exc)}", path=path
        ) from None
    try:
        raw = _decode_json_value(data)
        return decode_config(raw)
    except ConfigError as exc:
        msg = f"Error decoding '{path}': {exc.message}"
        raise ConfigError(msg, key=exc.key, path=path) from None


def load_dir(path: str) -> tuple[AgentConfig, set[str]]:
    """Merge every ``*.json`` file of a directory (sorted, not recursive) into one partial."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': open {path}: {_go_errno_text(exc)}", path=path
        ) from None
    result = AgentConfig()
    keys: set[str] = set()
    for name in entries:
        sub = os.path.normpath(os.path.join(path, name))
        if os.path.isdir(sub) and not os.path.islink(sub):
            continue
        if not name.endswith(".json"):
            continue
        cfg, sub_keys = load_file(sub)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


def load_paths(paths: Sequence[str]) -> tuple[AgentConfig, set[str]]:
    """Load files and directories in order (serf's ReadConfigPaths), merged into one partial."""
    result = AgentConfig()
    keys: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            cfg, sub_keys = load_dir(path)
        else:
            cfg, sub_keys = load_file(path)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


# --------------------------------------------------------------------------------------------
# Merge, finalize, validate
# --------------------------------------------------------------------------------------------

_DEFAULTS = AgentConfig()


def _implicit_keys(cfg: AgentConfig) -> set[str]:
    """Keys treated as set when a source did not report its keys: values that differ from
    the defaults (so booleans can then only flip away from their default, like serf)."""
    return {k for k in CONFIG_KEYS if getattr(cfg, k) != getattr(_DEFAULTS, k)}


def merge(
    base: AgentConfig, override: AgentConfig, override_keys: Iterable[str] | None = None
) -> AgentConfig:
    """Merge ``override`` onto ``base`` with serf's rules; returns a new config.

    Non-empty strings and non-zero ints/durations replace; ``protocol`` only if > 0; tags merge
    per key; handler and join lists append.  Booleans listed in ``override_keys`` replace even
    when false (pyserf fix).  Without ``override_keys`` a key counts as set when its value
    differs from the default.
    """
    result = base.copy()
    keys = set(override_keys) if override_keys is not None else _implicit_keys(override)
    for name in CONFIG_KEYS:
        if name not in keys:
            continue
        value = getattr(override, name)
        kind = _KINDS[name]
        if kind == "str":
            if value:
                setattr(result, name, value)
        elif kind == "int":
            if (name == "protocol" and value > 0) or (name != "protocol" and value != 0):
                setattr(result, name, value)
        elif kind == "dur":
            if value != 0:
                setattr(result, name, value)
        elif kind == "bool":
            setattr(result, name, bool(value))
        elif kind == "map":
            merged = dict(result.tags)
            merged.update(value)
            result.tags = merged
        elif kind == "list":
            setattr(result, name, list(getattr(result, name)) + list(value))
    return result


def finalize(cfg: AgentConfig) -> tuple[AgentConfig, list[str]]:
    """Apply serf's post-merge fix-ups; returns (new config, warning lines to print).

    Empty node name → hostname; ``role`` → tag ``role``; retry interval and broadcast timeout
    raised to 1 s; log level upper-cased.
    """
    out = cfg.copy()
    warnings: list[str] = []
    if not out.node_name:
        out.node_name = socket.gethostname()
    if out.role:
        warnings.append("Deprecation warning: 'Role' has been replaced with 'Tags'")
        out.tags = {**out.tags, "role": out.role}
    if out.retry_interval < MIN_RETRY_INTERVAL:
        out.retry_interval = MIN_RETRY_INTERVAL
        warnings.append(
            f"Warning: 'RetryInterval' is too low. Setting to {format_duration(out.retry_interval)}"
        )
    if out.broadcast_timeout < MIN_BROADCAST_TIMEOUT:
        out.broadcast_timeout = MIN_BROADCAST_TIMEOUT
        warnings.append(
            "Warning: 'BroadcastTimeout' is too low. Setting to "
            + format_duration(out.broadcast_timeout)
        )
    if out.rejoin_after_leave and not out.snapshot_path:
        warnings.append("Warning: 'RejoinAfterLeave' enabled without snapshot file")
    out.log_level = out.log_level.upper()
    return out, warnings


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


# When serf's agent command reports each kind of problem, in its order: "config" while reading
# the configuration (before its warnings), "logger" when setting up logging, "setup" while
# building the agent (after the bind/advertise addresses, before "Starting Serf agent..."),
# "create" when creating the agent ("Failed to setup the Serf agent: ...") and "serf" when
# creating Serf ("Failed to start the Serf agent: Error creating Serf: ...").
STAGES = ("config", "logger", "setup", "create", "serf")


def validate(cfg: AgentConfig) -> list[ConfigError]:
    """Return every problem serf would refuse to start with, in serf's checking order."""
    problems: list[ConfigError] = []
    for script in cfg.event_scripts():
        if not script.valid():
            problems.append(ConfigError(f"Invalid event script: {script}", key="event_handlers"))
    if cfg.interface and not _interface_exists(cfg.interface):
        problems.append(
            ConfigError(
                "Invalid network interface: route ip+net: no such network interface",
                key="interface",
            )
        )
    level = cfg.log_level.upper()
    if level not in LOG_LEVELS:
        problems.append(
            ConfigError(
                f"Invalid log level: {level}. Valid log levels are: [{' '.join(LOG_LEVELS)}]",
                key="log_level", stage="logger",
            )
        )
    key_size_error = ""
    if cfg.encrypt_key:
        try:
            security.parse_key_b64(cfg.encrypt_key)
        except ValueError as exc:
            # serf decodes the key before "Starting Serf agent..." but memberlist checks its
            # size only when Serf is created.
            if str(exc).startswith("illegal base64"):
                problems.append(ConfigError(f"Invalid encryption key: {exc}",
                                            key="encrypt_key", stage="setup"))
            else:
                key_size_error = f"Failed to create memberlist: {exc}"
    if cfg.profile not in PROFILES:
        problems.append(ConfigError(f"Unknown profile: {cfg.profile}", key="profile",
                                    stage="setup"))
    if cfg.tags_file and cfg.tags:
        problems.append(ConfigError("Tags config not allowed while using tag files",
                                    key="tags_file", stage="create"))
    if cfg.keyring_file and cfg.encrypt_key:
        problems.append(ConfigError("Encryption key not allowed while using a keyring",
                                    key="keyring_file", stage="create"))
    if not SERF_PROTOCOL_MIN <= cfg.protocol <= SERF_PROTOCOL_MAX:
        side = "low" if cfg.protocol < SERF_PROTOCOL_MIN else "high"
        problems.append(
            ConfigError(
                f"Protocol version '{cfg.protocol}' too {side}. Must be in range: "
                f"[{SERF_PROTOCOL_MIN}, {SERF_PROTOCOL_MAX}]",
                key="protocol", stage="serf",
            )
        )
    if cfg.user_event_size_limit > USER_EVENT_SIZE_LIMIT_MAX:
        problems.append(
            ConfigError(
                f"user event size limit exceeds limit of {USER_EVENT_SIZE_LIMIT_MAX} bytes",
                key="user_event_size_limit", stage="serf",
            )
        )
    if key_size_error and not cfg.keyring_file:
        problems.append(ConfigError(key_size_error, key="encrypt_key", stage="serf"))
    return problems


def first_problem(cfg: AgentConfig, stage: str) -> ConfigError | None:
    """The problem serf reports at ``stage`` of its start-up, if any."""
    return next((p for p in validate(cfg) if p.stage == stage), None)


# --------------------------------------------------------------------------------------------
# Sources (files + command-line flags), re-loadable on SIGHUP
# --------------------------------------------------------------------------------------------


@dataclass
class ConfigSources:
    """Where a running agent's configuration came from, so SIGHUP can rebuild it.

    ``paths`` are the ``-config-file``/``-config-dir`` arguments in command-line order,
    ``flags`` the partial config built from the other flags and ``flag_keys`` the keys those
    flags set.  ``load()`` re-reads the files every time, like serf's reload.
    """

    paths: list[str] = field(default_factory=list)
    flags: AgentConfig = field(default_factory=AgentConfig)
    flag_keys: frozenset[str] = frozenset()
    argv: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def load_unvalidated(self) -> AgentConfig:
        """Defaults ← files ← flags, then serf's fix-ups; warnings land in ``self.warnings``."""
        cfg = AgentConfig()
        file_cfg, file_keys = load_paths(self.paths)
        cfg = merge(cfg, file_cfg, file_keys)
        cfg = merge(cfg, self.flags, self.flag_keys)
        cfg, self.warnings = finalize(cfg)
        self.keys = set(file_keys) | set(self.flag_keys)
        return cfg

    def problems(self, cfg: AgentConfig) -> list[ConfigError]:
        """Every problem of ``cfg`` (see validate)."""
        return validate(cfg)

    def load(self) -> AgentConfig:
        """Build and validate the config; raises the first ConfigError found."""
        cfg = self.load_unvalidated()
        problems = self.problems(cfg)
        if problems:
            raise problems[0]
        return cfg
