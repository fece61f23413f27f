"""Serf's snapshot file: who was alive, the Lamport clocks, and whether we left.

Sans-I/O: ``replay`` parses lines read by the agent; ``Snapshotter`` turns events into lines
for the agent to append. The format is serf's own, so a snapshot written by either works for
both::

    alive: <name> <ip:port>
    not-alive: <name>
    clock: <member clock - 1>
    event-clock: <ltime>
    query-clock: <ltime>
    leave
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyserf.serf.core import MemberEvent, QueryReceived, UserEventReceived

log = logging.getLogger("pyserf.serf")

MIN_COMPACT_SIZE = 128 * 1024
COMPACT_BYTES_PER_MEMBER = 128 * 2


@dataclass
class SnapshotState:
    alive: dict[str, str] = field(default_factory=dict)  # name -> "ip:port"
    clock: int = 0
    event_clock: int = 0
    query_clock: int = 0
    left: bool = False


def replay(lines: list[str], rejoin_after_leave: bool = False) -> SnapshotState:
    state = SnapshotState()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("alive: "):
            info = line[len("alive: "):]
            name, sep, addr = info.rpartition(" ")
            if sep:
                state.alive[name] = addr
        elif line.startswith("not-alive: "):
            state.alive.pop(line[len("not-alive: "):], None)
        elif line.startswith(("clock: ", "event-clock: ", "query-clock: ")):
            key, _, value = line.partition(": ")
            try:
                number = int(value)
            except ValueError:
                log.warning("serf: Failed to convert %s time: %s", key, value)
                continue
            setattr(state, key.replace("-", "_"), number)
        elif line == "leave":
            if rejoin_after_leave:
                log.info("serf: Ignoring previous leave in snapshot")
                continue
            state.alive.clear()
            state.clock = state.event_clock = state.query_clock = 0
            state.left = True
        elif line.startswith("coordinate: "):
            continue  # written by old serf versions; not used
        else:
            log.warning("serf: Unrecognized snapshot line: %s", line)
    return state


class Snapshotter:
    """Decides what to append; the agent writes each line at once (nothing is buffered,
    so a kill -9 loses nothing that was recorded)."""

    def __init__(self, state: SnapshotState) -> None:
        self.alive = dict(state.alive)
        self.last_clock = state.clock
        self.last_event_clock = state.event_clock
        self.last_query_clock = state.query_clock

    def on_event(self, event: Any) -> list[str]:
        if isinstance(event, MemberEvent):
            lines = []
            for member in event.members:
                if event.type == "member-join":
                    addr = f"{member.addr}:{member.port}"
                    self.alive[member.name] = addr
                    lines.append(f"alive: {member.name} {addr}\n")
                elif (event.type in ("member-leave", "member-failed", "member-reap")
                      and self.alive.pop(member.name, None) is not None):
                    lines.append(f"not-alive: {member.name}\n")
            return lines
        if isinstance(event, UserEventReceived) and event.ltime > self.last_event_clock:
            self.last_event_clock = event.ltime
            return [f"event-clock: {event.ltime}\n"]
        if isinstance(event, QueryReceived) and event.ltime > self.last_query_clock:
            self.last_query_clock = event.ltime
            return [f"query-clock: {event.ltime}\n"]
        return []

    def on_clock(self, member_clock: int) -> list[str]:
        seen = member_clock - 1
        if seen > self.last_clock:
            self.last_clock = seen
            return [f"clock: {seen}\n"]
        return []

    def compact_threshold(self) -> int:
        return max(MIN_COMPACT_SIZE, len(self.alive) * COMPACT_BYTES_PER_MEMBER)

    def compacted(self) -> list[str]:
        """The whole current state, to replace a file that grew past the threshold."""
        lines = [f"alive: {name} {addr}\n" for name, addr in self.alive.items()]
        lines += [f"clock: {self.last_clock}\n", f"event-clock: {self.last_event_clock}\n",
                  f"query-clock: {self.last_query_clock}\n"]
        return lines
