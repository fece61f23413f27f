"""Event filters and handler specs: ``member-join,user:deploy=script.sh`` as serf reads them.

One parser serves the ``event_handlers`` config key (:mod:`pyserf.agent.handlers`), the RPC
``stream`` command (:mod:`pyserf.agent.rpc_streams`) and the HTTP event stream, so a filter
means the same thing wherever an operator writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EVENT_TYPES",
    "EventFilter",
    "EventScript",
    "parse_event_filter",
    "parse_event_handler_spec",
    "parse_event_scripts",
]

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
