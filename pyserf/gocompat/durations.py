"""Go's ``time.ParseDuration`` and ``time.Duration.String``, with Go's error texts.

serf prints and parses every interval (config files, flags, log lines) through these, so
"90s" reads back as Go writes it: "1m30s".
"""

from __future__ import annotations


def _quote(text: str) -> str:
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
    invalid = ValueError("time: invalid duration " + _quote(orig))
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
            raise ValueError("time: missing unit in duration " + _quote(orig))
        unit_name, s = s[:i], s[i:]
        unit = _UNIT_NS.get(unit_name)
        if unit is None:
            raise ValueError(
                "time: unknown unit " + _quote(unit_name) + " in duration " + _quote(orig)
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

