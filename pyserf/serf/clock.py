"""Lamport clocks: serf orders intents, events and queries with three of them."""

from __future__ import annotations


class LamportClock:
    __slots__ = ("time",)

    def __init__(self) -> None:
        self.time = 0

    def increment(self) -> int:
        self.time += 1
        return self.time

    def witness(self, seen: int) -> None:
        """Move past a time seen from another node so our next message sorts after it."""
        if seen >= self.time:
            self.time = seen + 1
