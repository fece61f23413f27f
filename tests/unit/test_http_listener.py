"""The HTTP listener in-process over a fake AgentAPI: limits that a real agent makes slow to
reach (stream and query caps), an agent that fails unexpectedly, and a slow body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pyserf.http import routes
from pyserf.http.server import HTTPListener
from pyserf.serf.events import UserEventReceived


class FakeAgent:
    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def members(self) -> list:
        raise RuntimeError("a bug in the agent")

    def query(self, name: str, payload: bytes, **kwargs: Any) -> Any:
        class Handle:
            closed = False
        return Handle()  # never answers: the query stays in flight


async def _request(port: int, head: str, body: bytes = b"", read: bool = True) -> tuple[
        int, dict, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b"\r\n" + body)
    if not read:
        return 0, {}, writer
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        headers[key.lower()] = value.strip()
    data = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), json.loads(data) if data else {}, writer


def _with_listener(test: Callable[[int], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        listener = HTTPListener(FakeAgent(), **kwargs)
        await listener.start("127.0.0.1", 0)
        try:
            await test(listener.address[1])
        finally:
            await listener.close()
    asyncio.run(main())


def test_streams_past_the_cap_are_429(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MAX_STREAMS", 1)

    async def test(port: int) -> None:
        _, _, first = await _request(port, "GET /v1/event/stream HTTP/1.1\r\nHost: x\r\n",
                                     read=False)
        await asyncio.sleep(0.2)
        status, body, second = await _request(port, "GET /v1/event/stream HTTP/1.1\r\n"
                                              "Host: x\r\n")
        assert (status, body["Field"]) == (429, "stream")
        first.close()
        second.close()
    _with_listener(test)


def test_queries_past_the_cap_are_429(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MAX_QUERIES", 1)

    async def test(port: int) -> None:
        head = "POST /v1/query/q?timeout=1m HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        _, _, first = await _request(port, head, read=False)
        await asyncio.sleep(0.2)
        status, body, second = await _request(port, head)
        assert (status, body["Field"]) == (429, "name")
        first.close()
        second.close()
    _with_listener(test)


def test_an_agent_error_is_a_json_500_and_the_listener_carries_on() -> None:
    async def test(port: int) -> None:
        for _ in range(2):
            status, body, writer = await _request(port, "GET /v1/agent/members HTTP/1.1\r\n"
                                                  "Host: x\r\n")
            assert (status, body["Error"]) == (500, "internal error")
            writer.close()
    _with_listener(test)


def test_a_body_that_never_arrives_times_out() -> None:
    async def test(port: int) -> None:
        status, body, writer = await _request(
            port, "PUT /v1/event/fire/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n", b"ab")
        assert (status, body["Field"]) == (408, "body")
        writer.close()
    _with_listener(test, idle_timeout=0.5)


def test_resuming_more_events_than_a_live_queue_holds_gets_them_all() -> None:
    """A client that missed 300 events (the ring holds 1,024, a live queue 256) is sent all
    of them, in order, then live ones; it is not taken for a slow reader."""
    async def main() -> None:
        agent = FakeAgent()
        listener = HTTPListener(agent)
        await listener.start("127.0.0.1", 0)
        try:
            for n in range(301):
                agent.listeners[0](UserEventReceived(n, f"e{n}", b"", False))
            first_id = listener.hub.ring.event_id(1)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.address[1])
            writer.write(f"GET /v1/event/stream HTTP/1.1\r\nHost: x\r\n"
                         f"Last-Event-ID: {first_id}\r\n\r\n".encode())
            names: list[str] = []
            while len(names) < 301:
                line = await asyncio.wait_for(reader.readline(), 10)
                assert line, "the stream ended"
                if line.startswith(b"data: "):
                    names.append(json.loads(line[6:])["Name"])
                if len(names) == 300:
                    agent.listeners[0](UserEventReceived(301, "live", b"", False))
                    break
            while len(names) < 301:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line.startswith(b"data: "):
                    names.append(json.loads(line[6:])["Name"])
            assert names == [f"e{n}" for n in range(1, 301)] + ["live"]
            writer.close()
        finally:
            await listener.close()
    asyncio.run(main())
