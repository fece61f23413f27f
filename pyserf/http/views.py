"""Pure pieces of the HTTP API: JSON shapes, member filters, request parameter parsing.

Nothing here touches sockets or the agent, so every rule is unit-tested directly
(tests/unit/test_http_views.py). Every value comes from a client and is treated as hostile:
bounded in size and count, and refused with an :class:`ApiError` that names the parameter and
says how to fix it.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyserf.gocompat.durations import parse_duration
from pyserf.serf import filters
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.members import Member

# Blocking queries: Consul's default and largest wait.
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
# Member filters one request may carry (serf's CLI takes any number; a URL is bounded anyway).
MAX_TAG_FILTERS = 32
MAX_QUERY_TIMEOUT = 3600.0


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, the ``field`` at fault and the ``fix``."""

    def __init__(self, status: int, message: str, field: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.fix = fix

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Error": self.message}
        if self.field:
            out["Field"] = self.field
        if self.fix:
            out["Fix"] = self.fix
        return out


def member_json(member: Member) -> dict[str, Any]:
    """A member with Consul's agent-members keys; Status is serf's word (alive, left...)."""
    return {"Name": member.name, "Addr": str(member.addr), "Port": member.port,
            "Tags": dict(member.tags), "Status": member.status.label(),
            "ProtocolMin": member.protocol_min, "ProtocolMax": member.protocol_max,
            "ProtocolCur": member.protocol_cur, "DelegateMin": member.delegate_min,
            "DelegateMax": member.delegate_max, "DelegateCur": member.delegate_cur}


def payload_json(payload: bytes) -> str | None:
    """A payload as Go's JSON encodes a []byte (base64; null when empty)."""
    return base64.b64encode(payload).decode() if payload else None


def event_json(event: Any) -> tuple[str, str, dict[str, Any]] | None:
    """(type, name, JSON record) of an agent event, or None for events not streamed."""
    if isinstance(event, MemberEvent):
        return event.type, "", {"Event": event.type,
                                "Members": [member_json(m) for m in event.members]}
    if isinstance(event, UserEventReceived):
        return "user", event.name, {"Event": "user", "LTime": event.ltime, "Name": event.name,
                                    "Payload": payload_json(event.payload),
                                    "Coalesce": event.coalesce}
    if isinstance(event, QueryReceived):
        return "query", event.name, {"Event": "query", "LTime": event.ltime, "Name": event.name,
                                     "Payload": payload_json(event.payload),
                                     "From": event.source_node}
    return None


def _compile(expr: str, field_name: str) -> Any:
    try:
        return filters.compile_anchored(expr)
    except filters.FilterError as exc:
        raise ApiError(400, f"{field_name}: {exc}", field_name,
                       "give an RE2 regular expression (as serf members -tag/-name/-status "
                       "take); it must match the whole value") from None


@dataclass
class MemberFilter:
    """serf ``members -status/-name/-tag k=re``: anchored RE2 patterns, all must match."""

    status: Any = None
    name: Any = None
    tags: list[tuple[str, Any]] = field(default_factory=list)
    _memo: dict[int, dict[str, bool]] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, params: Mapping[str, str] | Any) -> MemberFilter:
        """From ``?status=&name=&tag=k:re`` (tag repeatable). ``params`` is a multidict."""
        out = cls()
        status = params.get("status", "")
        name = params.get("name", "")
        if status:
            out.status = _compile(status, "status")
        if name:
            out.name = _compile(name, "name")
        tags: Sequence[str] = params.getall("tag", []) if hasattr(params, "getall") else []
        if len(tags) > MAX_TAG_FILTERS:
            raise ApiError(400, f"tag: {len(tags)} tag filters", "tag",
                           f"use at most {MAX_TAG_FILTERS} tag filters")
        for text in tags:
            key, sep, expr = text.partition(":")
            if not sep or not key:
                raise ApiError(400, f"tag: {text[:64]!r} is not key:regexp", "tag",
                               "write each tag filter as tag=key:regexp, e.g. tag=role:web.*")
            out.tags.append((key, _compile(expr, "tag")))
        return out

    def empty(self) -> bool:
        return self.status is None and self.name is None and not self.tags

    def matches(self, member: Member) -> bool:
        if self.status is not None and not self._match(self.status, member.status.label()):
            return False
        if self.name is not None and not self._match(self.name, member.name):
            return False
        return all(self._match(pattern, member.tags.get(key, "")) for key, pattern in self.tags)

    def _match(self, pattern: Any, text: str) -> bool:
        """Memoised per filter (one request): statuses and tag values repeat across members,
        and one RE2 match from Python costs ~15 us."""
        memo = self._memo.setdefault(id(pattern), {})
        found = memo.get(text)
        if found is None:
            found = memo[text] = pattern.match(text) is not None
        return found


def parse_duration_param(text: str, field_name: str, default: float, maximum: float) -> float:
    """A Go duration (``30s``, ``5m``; a bare number means seconds), clamped to ``maximum``."""
    if not text:
        return default
    try:
        value = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"{field_name}: {text[:64]!r} is not a duration", field_name,
                       "use a Go duration such as 500ms, 30s or 5m")
    return min(value, maximum)


def parse_index(text: str) -> int:
    """The ``index`` of a blocking query: the X-Serf-Index a previous answer carried."""
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ApiError(400, f"index: {text[:64]!r} is not an index", "index",
                       "pass the X-Serf-Index header value of a previous answer")
    return int(text)


def parse_bool(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    """``?flag`` or ``?flag=true/false/1/0``."""
    if name not in params:
        return default
    text = params[name].lower()
    if text in ("", "1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ApiError(400, f"{name}: {text[:64]!r} is not a boolean", name,
                   f"use ?{name}, ?{name}=true or ?{name}=false")


def parse_int(params: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text[:12]) <= high:
        raise ApiError(400, f"{name}: {text[:64]!r} is out of range", name,
                       f"use a whole number in {low}..{high}")
    return int(text)
