"""Lamport clocks: serf orders intents, events and queries with three of them.

Serf's LamportTime is a Go uint64 (serf/lamport.go) and its arithmetic wraps: a peer that claims
time 2^64-1 makes the next witness land on 0. pyserf wraps the same way, so every clock value,
and everything computed from one, still packs as a msgpack uint64.
"""

from __future__ import annotations

from pyserf.memberlist.fields import U64_MAX


def ltime_add(ltime: int, delta: int) -> int:
    """``ltime + delta`` with Go's uint64 wrap-around (delta may be negative)."""
    return (ltime + delta) & U64_MAX


class LamportClock:
    __slots__ = ("time",)

    def __init__(self) -> None:
        self.time = 0

    def increment(self) -> int:
        """Go's ``atomic.Add(1)``: the new time, 2^64-1 wrapping to 0."""
        self.time = ltime_add(self.time, 1)
        return self.time

    def witness(self, seen: int) -> None:
        """Move past a time seen from another node so our next message sorts after it.
        As in Go, a time below ours is ignored and any other becomes ``seen + 1`` (wrapping)."""
        if seen < self.time:
            return
        self.time = ltime_add(seen, 1)
