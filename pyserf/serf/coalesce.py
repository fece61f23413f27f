"""Event coalescing, as serf's agent does it before events reach handlers and RPC streams.

Bursts are batched: a batch is flushed after ``quiet`` seconds without a new event, or
``period`` seconds after its first event, whichever comes first. Driven by the shared
scheduler, so it is as testable as the protocol machines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyserf.memberlist.timers import Scheduler, Timer
from pyserf.serf.events import MemberEvent, UserEventReceived
from pyserf.serf.members import Member, MemberStatus

MEMBER_TYPES = ("member-join", "member-leave", "member-failed", "member-update", "member-reap")


class _Batcher:
    def __init__(self, scheduler: Scheduler, emit: Callable[[Any], None], period: float,
                 quiet: float) -> None:
        self.scheduler = scheduler
        self.emit = emit
        self.period = period
        self.quiet = quiet
        self._period_timer: Timer | None = None
        self._quiet_timer: Timer | None = None

    def handles(self, event: Any) -> bool:
        raise NotImplementedError

    def _add(self, event: Any) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def feed(self, event: Any, now: float) -> bool:
        """Take ``event`` into the current batch; False if this batcher does not handle it."""
        if not self.handles(event):
            return False
        self._add(event)
        if self._period_timer is None:
            self._period_timer = self.scheduler.call_at(now + self.period, self._fire)
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        self._quiet_timer = self.scheduler.call_at(now + self.quiet, self._fire)
        return True

    def _fire(self, now: float) -> None:
        for timer in (self._period_timer, self._quiet_timer):
            if timer is not None:
                timer.cancel()
        self._period_timer = self._quiet_timer = None
        self._flush()


class MemberEventCoalescer(_Batcher):
    """Per member only the latest event type survives a batch; one event per type is sent.

    A member whose type did not change since the previous flush is not repeated (except
    updates). Unlike serf 0.9, the batch is cleared after each flush, so a stale
    ``member-update`` is not re-sent with every later batch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._latest: dict[str, tuple[str, Member[MemberStatus]]] = {}
        self._last_sent: dict[str, str] = {}

    def handles(self, event: Any) -> bool:
        return isinstance(event, MemberEvent) and event.type in MEMBER_TYPES

    def _add(self, event: MemberEvent) -> None:
        for member in event.members:
            self._latest[member.name] = (event.type, member)

    def _flush(self) -> None:
        batches: dict[str, list[Member[MemberStatus]]] = {}
        for name, (kind, member) in self._latest.items():
            if self._last_sent.get(name) == kind and kind != "member-update":
                continue
            self._last_sent[name] = kind
            batches.setdefault(kind, []).append(member)
        self._latest.clear()
        for kind in MEMBER_TYPES:
            if kind in batches:
                self.emit(MemberEvent(kind, batches[kind]))


class UserEventCoalescer(_Batcher):
    """For coalescable user events only the newest Lamport time per name is delivered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._latest: dict[str, list[UserEventReceived]] = {}

    def handles(self, event: Any) -> bool:
        return isinstance(event, UserEventReceived) and event.coalesce

    def _add(self, event: UserEventReceived) -> None:
        current = self._latest.get(event.name)
        if current is None or current[0].ltime < event.ltime:
            self._latest[event.name] = [event]
        elif current[0].ltime == event.ltime:
            current.append(event)

    def _flush(self) -> None:
        batches, self._latest = self._latest, {}
        for events in batches.values():
            for event in events:
                self.emit(event)


class EventPipeline:
    """Routes serf events through both coalescers; everything else passes straight on."""

    def __init__(self, scheduler: Scheduler, emit: Callable[[Any], None], period: float = 3.0,
                 quiet: float = 1.0, user_period: float = 3.0, user_quiet: float = 1.0) -> None:
        self.stages: list[_Batcher] = [
            MemberEventCoalescer(scheduler, emit, period, quiet),
            UserEventCoalescer(scheduler, emit, user_period, user_quiet),
        ]
        self.emit = emit

    def feed(self, event: Any, now: float) -> None:
        for stage in self.stages:
            if stage.feed(event, now):
                return
        self.emit(event)
