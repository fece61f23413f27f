"""The hub between agent events and HTTP clients (pyserf/http/routes.py Hub): the membership
index, blocking waits, the ring and the fan-out, driven by a fake agent's subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pyserf.http import routes
from pyserf.http.routes import Hub
from pyserf.http.sse import Subscriber
from pyserf.http.views import ApiError
from pyserf.serf.events import MemberEvent, UserEventReceived
from pyserf.serf.members import Member, MemberStatus


class FakeAgent:
    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def emit(self, event: Any) -> None:
        for listener in list(self.listeners):
            listener(event)


def _join(name: str) -> MemberEvent:
    return MemberEvent("member-join", [Member(name, "10.0.0.1", 7946, {}, MemberStatus.ALIVE)])


def test_index_moves_with_member_events_only_and_everything_reaches_the_ring() -> None:
    async def main() -> None:
        agent = FakeAgent()
        hub = Hub(agent)
        hub.start()
        got: list[str] = []
        sub = Subscriber(lambda e: True, lambda: None, lambda s: None)
        hub.subscribers.add(sub)
        agent.emit(UserEventReceived(1, "deploy", b"", False))
        assert hub.index == 1
        agent.emit(_join("a"))
        agent.emit(object())  # not streamed
        assert hub.index == 2 and hub.ring.last_seq == 2
        got = [e.type for e in sub.take()]
        assert got == ["user", "member-join"]
        hub.stop()
        assert agent.listeners == []
    asyncio.run(main())


def test_blocking_wait_wakes_on_change_and_at_shutdown_only() -> None:
    async def main() -> None:
        agent = FakeAgent()
        hub = Hub(agent)
        hub.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await hub.wait_change(hub.index + 5, 10)  # an index we never gave: at once
        await hub.wait_change(hub.index, 0.2)  # nothing changes: the whole wait
        assert 0.2 <= loop.time() - began < 1
        waiter = asyncio.ensure_future(hub.wait_change(hub.index, 10))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        agent.emit(UserEventReceived(1, "x", b"", False))  # not membership
        await asyncio.sleep(0.05)
        assert not waiter.done()
        agent.emit(_join("b"))
        await asyncio.wait_for(waiter, 1)
        waiter = asyncio.ensure_future(hub.wait_change(hub.index, 10))
        await asyncio.sleep(0.05)
        hub.stop()
        await asyncio.wait_for(waiter, 1)
        assert hub.waiters == 0
    asyncio.run(main())


def test_too_many_blocking_waits_are_429(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MAX_WAITERS", 2)

    async def main() -> None:
        hub = Hub(FakeAgent())
        waits = [asyncio.ensure_future(hub.wait_change(hub.index, 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as err:
            await hub.wait_change(hub.index, 10)
        assert err.value.status == 429
        hub.stop()
        await asyncio.gather(*waits)
    asyncio.run(main())
