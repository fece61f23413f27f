"""Regular expressions with Go's semantics (RE2) for query tag filters and member filters.

Serf matches filters with Go's ``regexp`` package: RE2 syntax, linear time in the input, no
backreferences or lookaround, ``$`` only at the end of the text, and repeat counts above 1000
refused. Python's ``re`` backtracks (``(a*)*$`` or ``(?:){4294967294}`` can stall the event loop
for minutes), so filters go through the google-re2 binding instead, with Go's error texts.

``re2`` is imported on first use: it costs about 2.7 MiB of RSS, and most agents never see a
filter.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Go's regexp has no pattern length limit. A query's filters travel inside a message serf caps
# at QuerySizeLimit (1024 bytes), and an RPC filter comes from a command line, so 4 KiB is room
# for every real filter while bounding compile time and what one cached pattern can hold.
MAX_PATTERN_BYTES = 4096
# RE2's memory budget per compiled pattern (program + DFA cache). Go has no such knob; RE2's
# default is 8 MiB. A pattern whose program needs more fails with "expression too large" (Go's
# ErrLarge text); linear-time matching falls back to the NFA when the DFA cache is full.
MAX_MEM_BYTES = 1 << 20
# Compiled patterns kept for reuse. A hostile peer can send a fresh pattern with every query, so
# the cache is a small LRU and a pattern with a large program is never kept.
CACHE_SIZE = 64
MAX_CACHED_PROGRAM = 4096
# Go's parseRepeat/parseInt: a count that reaches 1e8 while being read is refused outright
# (RE2 C++ instead reads the whole "{...}" as literal text).
_GO_REPEAT_MAX = 1000

# RE2's error code texts mapped to Go's regexp/syntax ErrorCode texts.
_GO_ERROR_TEXT = {
    "unexpected error": "regexp/syntax: internal error",
    "invalid escape sequence": "invalid escape sequence",
    "invalid character class": "invalid character class",
    "invalid character class range": "invalid character class range",
    "missing ]": "missing closing ]",
    "missing )": "missing closing )",
    "unexpected )": "unexpected )",
    "trailing \\": "trailing backslash at end of expression",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid repetition size": "invalid repeat count",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "invalid named capture group": "invalid named capture",
    "pattern too large - compile failed": "expression too large",
    "pattern too large - reverse compile failed": "expression too large",
}

_re2: Any = None
_options: Any = None
_cache: OrderedDict[str, Any] = OrderedDict()


class FilterError(ValueError):
    """A pattern Go's regexp would refuse. ``str()`` is serf's RPC error text
    ("Failed to compile regex: error parsing regexp: ..."); ``go_error`` is Go's own error."""

    def __init__(self, go_error: str) -> None:
        super().__init__(f"Failed to compile regex: {go_error}")
        self.go_error = go_error


def _go_error(code: str, arg: str) -> str:
    return f"error parsing regexp: {code}: `{arg}`"


def _load() -> Any:
    global _re2, _options
    if _re2 is None:
        import re2  # lazily: see the module docstring

        options = re2.Options()
        options.log_errors = False  # RE2 would print every bad pattern a peer sends to stderr
        options.max_mem = MAX_MEM_BYTES
        _re2, _options = re2, options
    return _re2


def _skip_class(pattern: str, i: int) -> int:
    """Index just past the character class starting at ``pattern[i] == '['``."""
    n = len(pattern)
    i += 1
    if i < n and pattern[i] == "^":
        i += 1
    if i < n and pattern[i] == "]":  # a leading ']' is literal
        i += 1
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
        elif pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            i = n if end < 0 else end + 2
        elif c == "]":
            return i + 1
        else:
            i += 1
    return n


def _repeat_end(pattern: str, i: int) -> int:
    """Index just past a ``{n}``, ``{n,}`` or ``{n,m}`` at ``pattern[i]``, or -1 if none."""
    n = len(pattern)
    j = i + 1
    for part in range(2):
        start = j
        while j < n and pattern[j].isascii() and pattern[j].isdigit():
            j += 1
        if part == 0 and j == start:
            return -1
        if j < n and pattern[j] == "}":
            return j + 1
        if part == 1 or j >= n or pattern[j] != ",":
            return -1
        j += 1
    return -1


def _go_only_error(pattern: str) -> str | None:
    """Go errors that RE2 C++ does not raise: ``\\C`` and repeat counts too large to read."""
    n = len(pattern)
    i = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt == "C":
                return _go_error("invalid escape sequence", "\\C")
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if nxt in ("x", "p", "P") and pattern[i + 2:i + 3] == "{":
                end = pattern.find("}", i + 3)
                i = n if end < 0 else end + 1
                continue
            i += 2
        elif c == "[":
            i = _skip_class(pattern, i)
        elif c == "{":
            end = _repeat_end(pattern, i)
            if end < 0:
                i += 1
                continue
            counts = pattern[i + 1:end - 1].split(",")
            # Go reads a leading-zero count as literal text, and a count of 10+ digits as -1.
            if not any(len(x) >= 2 and x[0] == "0" for x in counts) and any(
                    len(x) >= 10 for x in counts):
                return _go_error("invalid repeat count", pattern[i:end])
            i = end
        else:
            i += 1
    return None


def _compile(pattern: str) -> Any:
    """Compile ``pattern`` (cached) or raise FilterError with Go's error text."""
    compiled = _cache.get(pattern)
    if compiled is not None:
        _cache.move_to_end(pattern)
        return compiled
    try:
        size = len(pattern.encode("utf-8"))
    except UnicodeEncodeError:
        raise FilterError(_go_error("invalid UTF-8", pattern[:64])) from None
    if size > MAX_PATTERN_BYTES:
        raise FilterError(_go_error(f"expression too large ({size} bytes, limit "
                                    f"{MAX_PATTERN_BYTES})", pattern[:64] + "..."))
    go_error = _go_only_error(pattern)
    if go_error:
        raise FilterError(go_error)
    re2 = _load()
    try:
        compiled = re2.compile(pattern, _options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else b""
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        code, _, arg = message.partition(": ")
        if code in _GO_ERROR_TEXT:
            raise FilterError(_go_error(_GO_ERROR_TEXT[code], arg or pattern)) from None
        raise FilterError(f"error parsing regexp: {message}") from None
    if compiled.programsize <= MAX_CACHED_PROGRAM:
        _cache[pattern] = compiled
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def compile_anchored(expr: str) -> Any:
    """The pattern serf's ``members-filtered`` builds: ``"^" + expr + "$"`` (text pasted as Go's
    ``fmt.Sprintf("^%s$")`` does, so a top-level ``a|b`` means ``^a|b$`` exactly as in serf, and
    error texts quote the same expression). Use ``.search``/``.match`` on the result. Raises
    FilterError with serf's error text for a pattern Go would refuse."""
    return _compile(f"^{expr}$")


def compile_search(expr: str) -> Any:
    """An unanchored pattern (Go's ``regexp.MatchString``); raises FilterError."""
    return _compile(expr)


def search(expr: str, value: str) -> bool:
    """Whether ``expr`` matches anywhere in ``value`` (serf's query tag filter). A pattern Go
    would refuse matches nothing, as serf's ``shouldProcessQuery`` treats a compile error."""
    try:
        return compile_search(expr).search(value) is not None
    except FilterError:
        return False
    except UnicodeEncodeError:  # a value holding lone surrogates cannot be UTF-8 encoded
        return False
