"""Lifeguard suspicion: a suspect's deadline shrinks as independent peers confirm it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyserf.memberlist.timers import Timer


class Suspicion:
    """Tracks one suspected node; ``deadline`` is the absolute time it will be declared dead."""

    __slots__ = ("k", "min", "max", "start", "confirmations", "deadline", "timer")

    def __init__(self, accuser: str, k: int, min_timeout: float, max_timeout: float,
                 now: float) -> None:
        self.k = k
        self.min = min_timeout
        self.max = max_timeout
        self.start = now
        # The accuser is not an independent confirmation of its own accusation.
        self.confirmations: set[str] = {accuser}
        self.deadline = now + (min_timeout if k < 1 else max_timeout)
        self.timer: Timer | None = None

    @property
    def count(self) -> int:
        return len(self.confirmations) - 1

    def confirm(self, from_node: str) -> bool:
        """Record a confirmation; returns True if it was new (and should be re-gossiped)."""
        if self.count >= self.k or from_node in self.confirmations:
            return False
        self.confirmations.add(from_node)
        n = self.count
        frac = math.log(n + 1) / math.log(self.k + 1)
        timeout = math.floor((self.max - frac * (self.max - self.min)) * 1000) / 1000
        self.deadline = self.start + max(timeout, self.min)
        return True
