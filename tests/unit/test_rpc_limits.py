"""RPC and handler limits without agent processes: typed request decoding, RE2 member
filters, bounded subscriber feeds, connection caps and timeouts (against an in-process
RPCServer on 127.0.0.1), the log fan-out guard and handler queue/stdin bounds."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import socket
import time

import msgpack
import pytest

from pyserf.agent import handlers, logs, rpc, rpc_commands, rpc_limits, rpc_session, rpc_streams
from pyserf.agent.rpc_limits import RequestError, decode_body, decode_header
from pyserf.serf.events import UserEventReceived
from pyserf.serf.members import Member, MemberStatus
from tests.unit.test_logs import restore_pyserf_logger  # noqa: F401 - a fixture

# -- typed decoding ------------------------------------------------------------------------


def test_header_widths_and_types():
    assert decode_header({"Command": "members", "Seq": 2**64 - 1}) == ("members", 2**64 - 1)
    assert decode_header({}) == ("", 0)  # Go zero values: serf then says unsupported
    assert decode_header({"Command": b"stats", "Seq": None}) == ("stats", 0)
    for bad in ({"Command": "members", "Seq": -1}, {"Command": "members", "Seq": 2**64},
                {"Command": "members", "Seq": "1"}, {"Command": "members", "Seq": True},
                {"Command": "members", "Seq": 1.0}, {"Command": 7, "Seq": 1},
                {"Command": ["members"], "Seq": 1}, [1, 2], "members", 5):
        with pytest.raises(RequestError):
            decode_header(bad)


def test_every_body_fills_go_zero_values_and_ignores_unknown_fields():
    zeros = {rpc_limits.STRING: "", rpc_limits.BYTES: b"", rpc_limits.BOOL: False,
             rpc_limits.STRINGS: [], rpc_limits.TAGS: {}}
    for command, schema in rpc_limits.BODIES.items():
        for empty in (None, {}, {"Unknown": [1, {"x": 2}]}):
            body = decode_body(command, empty)
            assert set(body) == set(schema)
            for name, decoder in schema.items():
                assert body[name] == zeros.get(decoder, 0), (command, name)


@pytest.mark.parametrize("command", sorted(rpc_limits.BODIES))
def test_every_field_of_every_command_rejects_wrong_types(command):
    samples = {rpc_limits.STRING: "x", rpc_limits.BYTES: b"x", rpc_limits.BOOL: True,
               rpc_limits.STRINGS: ["a"], rpc_limits.TAGS: {"k": "v"}}
    for name, decoder in rpc_limits.BODIES[command].items():
        good = samples.get(decoder, 1)
        assert decode_body(command, {name: good})[name] == good
        wrong = [{"a": 1}, 1.5, [[1]]] + ([2, -1] if decoder is rpc_limits.BOOL else [True])
        if decoder not in (rpc_limits.STRING, rpc_limits.BYTES):
            wrong.append("text")
        for value in wrong:
            with pytest.raises(RequestError, match=name):
                decode_body(command, {name: value})
    with pytest.raises(RequestError):
        decode_body(command, [1, 2, 3])


def test_bools_take_0_and_1_like_gos_codec():
    assert decode_body("force-leave", {"Prune": 1})["Prune"] is True
    assert decode_body("force-leave", {"Prune": 0})["Prune"] is False


def test_integer_widths_follow_serf_structs():
    assert decode_body("query", {"RelayFactor": 255})["RelayFactor"] == 255
    assert decode_body("query", {"Timeout": -(2**63)})["Timeout"] == -(2**63)
    assert decode_body("handshake", {"Version": -(2**31)})["Version"] == -(2**31)
    for command, name, value in [("query", "RelayFactor", 256), ("query", "RelayFactor", -1),
                                 ("query", "Timeout", 2**63), ("handshake", "Version", 2**31),
                                 ("stop", "Stop", 2**64), ("respond", "ID", -1)]:
        with pytest.raises(RequestError, match="overflows"):
            decode_body(command, {name: value})


def test_strings_lists_tags_and_payloads_are_bounded():
    big = "x" * (rpc_limits.MAX_STRING + 1)
    with pytest.raises(RequestError, match="exceeds"):
        decode_body("event", {"Name": big})
    with pytest.raises(RequestError, match="exceeds"):
        decode_body("event", {"Payload": b"x" * (rpc_limits.MAX_PAYLOAD + 1)})
    with pytest.raises(RequestError, match="exceeds"):
        decode_body("join", {"Existing": ["a"] * (rpc_limits.MAX_LIST + 1)})
    with pytest.raises(RequestError, match="exceeds"):
        decode_body("tags", {"Tags": {str(i): "" for i in range(rpc_limits.MAX_TAGS + 1)}})
    with pytest.raises(RequestError, match="Tags"):
        decode_body("tags", {"Tags": {"k": 1}})
    with pytest.raises(RequestError, match="FilterNodes"):
        decode_body("query", {"FilterNodes": ["a", 2]})
    # Go decodes str into []byte and bin into string.
    assert decode_body("event", {"Name": b"deploy", "Payload": "p"}) == {
        "Name": "deploy", "Payload": b"p", "Coalesce": False}


def test_unpacker_counts_containers_per_request():
    unpacker, reset = rpc_limits.new_unpacker()
    unpacker.feed(msgpack.packb([[] for _ in range(rpc_limits.MAX_REQUEST_CONTAINERS - 1)]))
    assert len(next(unpacker)) == rpc_limits.MAX_REQUEST_CONTAINERS - 1
    reset()  # a new request starts from zero
    unpacker.feed(msgpack.packb([[] for _ in range(rpc_limits.MAX_REQUEST_CONTAINERS - 1)]))
    next(unpacker)
    reset()
    unpacker.feed(msgpack.packb([[{}] for _ in range(rpc_limits.MAX_REQUEST_CONTAINERS)]))
    with pytest.raises(RequestError, match="arrays/maps"):
        next(unpacker)


# -- RE2 member filters ----------------------------------------------------------------------


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_member_filters_use_re2_with_serf_anchoring():
    started = time.monotonic()
    for expr in ("(a*)*b", "(a+a+)+y", "(a|a?)+b", "(?:){1000}"):
        pattern = rpc_commands.anchored(expr)
        assert not pattern.match("a" * 50_000 + "c")
    assert rpc_commands.anchored("(.*){1000}").match("a" * 500)
    assert time.monotonic() - started < 2.0
    assert rpc_commands.anchored("web.*").match("web-1")
    assert not rpc_commands.anchored("web").match("web-1")
    assert not rpc_commands.anchored("web").match("web\n")  # RE2's $ is the end of text
    # serf pastes the pattern between ^ and $ without a group: ^a|b$
    assert rpc_commands.anchored("a|b").match("axx")
    with pytest.raises(rpc_session.CloseConnection, match="Failed to compile regex: .*missing"):
        rpc_commands.anchored("(")
    # Go refuses repeat counts over 1000; RE2 would read an overflowing one as a literal.
    for expr in ("a{1001}", "(?:){4294967294}", "a{2,4294967296}"):
        with pytest.raises(rpc_session.CloseConnection, match="invalid repeat count: `{"):
            rpc_commands.anchored(expr)
    for literal in (r"a\{4294967294}", "[{4294967294}]", r"\Qa{2000}\E", "a{01001}"):
        assert rpc_commands.anchored(literal)


# -- logs ------------------------------------------------------------------------------------


def test_throttle_lets_one_line_a_second_and_counts_the_rest():
    now = [100.0]
    throttle = logs.Throttle(1.0, clock=lambda: now[0])
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(5)] == [None] * 5
    now[0] += 1.0
    assert throttle.allow() == 5
    assert throttle.allow() is None


@pytest.mark.usefixtures("restore_pyserf_logger")
def test_a_monitor_that_logs_does_not_recurse():
    handler = logs.install(logs.TRACE, stream=io.StringIO())
    log = logging.getLogger("pyserf.test")
    got: list[str] = []

    def noisy(line: str) -> None:
        got.append(line)
        log.warning("agent.ipc: Dropping logs to somebody")

    handler.subscribe(logs.TRACE, noisy)
    log.info("one line")
    assert len(got) == 1 and got[0].endswith("one line")
    assert handler.ring[-1][1].endswith("Dropping logs to somebody")  # kept, not fanned out
    handler.unsubscribe(noisy)


# -- in-process RPC server ---------------------------------------------------------------------


class _FakeAgent:
    """Just enough of AgentAPI for the RPC commands exercised here (no serf machine)."""

    def __init__(self) -> None:
        self.log_handler: logs.AgentLogHandler | None = None
        self.events: list[tuple[str, bytes, bool]] = []
        member = Member("n1", "127.0.0.1", 7946, {"role": "web"}, MemberStatus.ALIVE)
        self.member_list = [member]

    def members(self) -> list[Member]:
        return list(self.member_list)

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.events.append((name, payload, coalesce))


class _Raw:
    def __init__(self, port: int) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.port = port
        self.unpacker = msgpack.Unpacker(raw=False)

    async def open(self) -> _Raw:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def send(self, *objs: object) -> None:
        self.writer.write(b"".join(msgpack.packb(o, use_bin_type=True) for o in objs))
        await self.writer.drain()

    async def recv(self, timeout: float = 2.0) -> object:
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    raise EOFError from None
                self.unpacker.feed(data)

    async def closed_by_server(self, timeout: float = 2.0) -> bool:
        """True once the server closed: an EOF, or a reset when it closed with our bytes
        still unread; False if the connection is still open after ``timeout``."""
        try:
            while True:
                if not await asyncio.wait_for(self.reader.read(65536), timeout):
                    return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    async def handshake(self) -> None:
        await self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        assert await self.recv() == {"Error": "", "Seq": 0}


async def _server(auth: str = "") -> tuple[rpc.RPCServer, int, _FakeAgent]:
    agent = _FakeAgent()
    server = rpc.RPCServer(agent, auth)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    port = server.server.sockets[0].getsockname()[1]
    return server, port, agent


def _run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def _with_server(body, auth: str = "") -> None:
    """Run ``body(server, port, agent)`` against a fresh in-process server."""

    async def main() -> None:
        server, port, agent = await _server(auth)
        try:
            await body(server, port, agent)
        finally:
            await server.close()
            await asyncio.sleep(0.05)  # let the client tasks see their sockets close

    _run(main())


def test_wrong_types_close_the_client_and_the_server_carries_on():
    async def main(server: rpc.RPCServer, port: int, agent: _FakeAgent) -> None:
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "event", "Seq": 1}, {"Name": 5, "Payload": b"x"})
        assert await raw.closed_by_server()
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "members", "Seq": "one"})
        assert await raw.closed_by_server()
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "event", "Seq": 2}, {"Name": "ok", "Payload": "p"})
        assert await raw.recv() == {"Error": "", "Seq": 2}
        assert agent.events == [("ok", b"p", False)]
        await raw.send({"Command": "members-filtered", "Seq": 3},
                       {"Name": "(a*)*b", "Status": "", "Tags": {"role": "(a|a?)+b"}})
        assert await raw.recv() == {"Error": "", "Seq": 3}
        assert await raw.recv() == {"Members": []}
        await raw.send({"Command": "members-filtered", "Seq": 4}, {"Tags": {"role": "w.b"}})
        await raw.recv()
        assert [m["Name"] for m in (await raw.recv())["Members"]] == ["n1"]

    _with_server(main)


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_costly_member_filters_yield_and_have_a_budget(monkeypatch):
    # 2 s: on a loaded 2-core machine (load ~7) one match of the pattern below took 0.55 s
    # of wall time, and a 0.5 s budget let the ticker below run only 3 times.
    monkeypatch.setattr(rpc_commands, "MEMBER_FILTER_BUDGET", 2.0)

    async def main(server: rpc.RPCServer, port: int, agent: _FakeAgent) -> None:
        many = [Member(f"n{i}", "127.0.0.1", 7946, {"role": "a" * 500}, MemberStatus.ALIVE)
                for i in range(200)]
        agent.member_list = many
        gaps = [0.0]

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick_task = asyncio.get_running_loop().create_task(ticker())
        raw = await _Raw(port).open()
        await raw.handshake()
        started = time.monotonic()
        await raw.send({"Command": "members-filtered", "Seq": 1},
                       {"Tags": {"role": "(.*){1000}"}})
        assert await raw.closed_by_server(timeout=5.0)
        took = time.monotonic() - started
        assert took < 4.0
        # The loop kept running while the filter did: held at most one match at a time.
        # Without yielding, one gap would span the whole 2 s budget; 0.9 leaves room for
        # a loaded machine's slow matches.
        assert len(gaps) > 3 and max(gaps) < 0.9, gaps
        tick_task.cancel()

    _with_server(main)


def test_pre_auth_buffer_and_handshake_timeout(monkeypatch):
    monkeypatch.setattr(rpc_session, "HANDSHAKE_TIMEOUT", 0.3)

    async def main(server: rpc.RPCServer, port: int, _: _FakeAgent) -> None:
        # A frame larger than the pre-auth buffer is refused before it is complete.
        raw = await _Raw(port).open()
        raw.writer.write(b"\xc6\x00\x10\x00\x00")  # bin32 header announcing 1 MiB
        raw.writer.write(b"x" * (rpc_limits.PRE_AUTH_BUFFER + 10))
        assert await raw.closed_by_server()
        # Handshake without auth: closed after the timeout, commands meanwhile refused.
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "event", "Seq": 1}, {"Name": "x"})
        assert await raw.recv() == {"Error": "Authentication required", "Seq": 1}
        assert await raw.closed_by_server(timeout=2.0)
        # A client that authenticates in time stays, and then may send bigger requests.
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "auth", "Seq": 1}, {"AuthKey": "sekrit"})
        assert await raw.recv() == {"Error": "", "Seq": 1}
        await asyncio.sleep(0.5)
        await raw.send({"Command": "event", "Seq": 2}, {"Name": "big", "Payload": b"x" * 9000})
        assert await raw.recv() == {"Error": "", "Seq": 2}
        assert len(server.clients) == 1

    _with_server(main, auth="sekrit")

def test_a_client_parks_at_most_three_read_limits_in_the_agent(monkeypatch):
    # A client that floods the agent before its request can be parsed: each socket read takes
    # at most READ_LIMIT and the reader pauses past 2 x READ_LIMIT, so the agent never holds
    # more than 3 x READ_LIMIT of it (asyncio's own recv size would let in 256 KiB at once).
    chunks: list[int] = []
    held: list[int] = []
    feed_data = asyncio.StreamReader.feed_data

    def spy(reader: asyncio.StreamReader, data: bytes) -> None:
        feed_data(reader, data)
        if reader._limit == rpc_limits.READ_LIMIT:  # the agent's side (clients use 64 KiB)
            chunks.append(len(data))
            held.append(len(reader._buffer))

    monkeypatch.setattr(asyncio.StreamReader, "feed_data", spy)

    async def main(server: rpc.RPCServer, port: int, _: _FakeAgent) -> None:
        raw = await _Raw(port).open()
        raw.writer.write(b"\xc6\x00\x10\x00\x00" + b"x" * (1024 * 1024))  # one 1 MiB bin32
        assert await raw.closed_by_server()
        assert chunks, "the agent read nothing"
        assert max(chunks) <= rpc_limits.READ_LIMIT
        assert max(held) <= 3 * rpc_limits.READ_LIMIT

    _with_server(main)


def test_a_stalled_request_times_out(monkeypatch):
    monkeypatch.setattr(rpc_session, "FRAME_TIMEOUT", 0.3)

    async def main(server: rpc.RPCServer, port: int, _: _FakeAgent) -> None:
        raw = await _Raw(port).open()
        await raw.handshake()
        await raw.send({"Command": "event", "Seq": 1})  # header, body never comes
        assert await raw.closed_by_server(timeout=2.0)
        idle = await _Raw(port).open()
        await idle.handshake()
        await asyncio.sleep(0.6)  # idle between requests is fine
        await idle.send({"Command": "members", "Seq": 1})
        assert await idle.recv() == {"Error": "", "Seq": 1}

    _with_server(main)


def test_connection_caps_keep_room_for_real_clients(monkeypatch):
    monkeypatch.setattr(rpc, "MAX_PENDING_CLIENTS", 20)
    monkeypatch.setattr(rpc, "MAX_RPC_CLIENTS", 10)

    async def main(server: rpc.RPCServer, port: int, _: _FakeAgent) -> None:
        idle = [await _Raw(port).open() for _ in range(25)]
        await asyncio.sleep(0.05)
        # The oldest idle sockets were closed to make room for the newer ones.
        assert [await c.closed_by_server(timeout=0.2) for c in idle[:5]] == [True] * 5
        assert len(server.clients) == 20
        # A real client always gets in, pushing out the oldest idle socket.
        real = await _Raw(port).open()
        await real.handshake()
        assert await idle[5].closed_by_server(timeout=1.0)
        assert not await idle[6].closed_by_server(timeout=0.1)
        ready = [real]
        for _ in range(9):
            client = await _Raw(port).open()
            await client.handshake()
            ready.append(client)
        assert sum(c.ready for c in server.clients) == 10
        # The handshaken clients fill their cap: the next client is refused at once.
        refused = await _Raw(port).open()
        assert await refused.closed_by_server(timeout=1.0)
        for client in ready:
            await client.send({"Command": "members", "Seq": 1})
            assert await client.recv() == {"Error": "", "Seq": 1}

    _with_server(main)


@pytest.mark.usefixtures("restore_pyserf_logger")
def test_monitor_feed_is_bounded_for_a_client_that_never_reads():
    async def main(server: rpc.RPCServer, port: int, agent: _FakeAgent) -> None:
        agent.log_handler = logs.install(logs.TRACE, stream=io.StringIO())
        seen: list[str] = []
        catcher = logging.Handler()
        catcher.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("pyserf").addHandler(catcher)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(msgpack.packb({"Command": "handshake", "Seq": 0})
                     + msgpack.packb({"Version": 1})
                     + msgpack.packb({"Command": "monitor", "Seq": 1})
                     + msgpack.packb({"LogLevel": "TRACE"}))
        await asyncio.sleep(0.2)
        log = logging.getLogger("pyserf.test")
        started = time.monotonic()
        for i in range(20_000):
            log.debug("filler line %d %s", i, "y" * 200)
            if i % 1000 == 0:
                await asyncio.sleep(0)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.2)
        (client,) = server.clients
        (stop,) = client.streams.values()
        feed = stop.__closure__  # the feed is held by the stop closure
        feeds = [c.cell_contents for c in feed if isinstance(c.cell_contents, rpc_streams.Feed)]
        assert feeds and len(feeds[0].items) <= rpc_limits.SUBSCRIBER_BUFFER
        assert client.writer.transport.get_write_buffer_size() < 1024 * 1024
        drops = [line for line in seen if "Dropping logs to ipc.client: 127.0.0.1:" in line]
        # Throttled to one a second: at most one per started second of the flood, plus one.
        assert 1 <= len(drops) <= math.ceil(elapsed) + 1, (len(drops), elapsed)
        sock.close()

    _with_server(main)


# -- handlers --------------------------------------------------------------------------------


class _HandlerAgent:
    def __init__(self) -> None:
        self.node_name = "n1"
        self.tasks: list[asyncio.Task] = []

    def local_tags(self) -> dict[str, str]:
        return {}

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task


def test_handler_queue_is_bounded_and_drops_with_a_warning(caplog):
    async def main() -> None:
        manager = handlers.HandlerManager(_HandlerAgent())  # type: ignore[arg-type]
        manager.load(["user=true"])
        with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
            for i in range(handlers.HANDLER_QUEUE_LIMIT + 50):
                manager.dispatch(UserEventReceived(i, "e", b"", False))
        (script,) = manager.scripts
        assert script.queue.qsize() == handlers.HANDLER_QUEUE_LIMIT
        await manager.close()

    _run(main())
    drops = [r.getMessage() for r in caplog.records if "Dropping user event" in r.getMessage()]
    assert drops == [f"agent: Dropping user event for script 'true': "
                     f"{handlers.HANDLER_QUEUE_LIMIT} events already queued"]


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_handler_timeout_covers_a_script_that_never_reads_stdin(caplog):
    async def main() -> float:
        manager = handlers.HandlerManager(_HandlerAgent(), timeout=0.5)  # type: ignore[arg-type]
        script = handlers._Script("sleep 30", [], "sleep 30", asyncio.Queue(), asyncio.Queue())
        event = UserEventReceived(1, "big", b"z" * (1 << 20), False)  # >> the pipe buffer
        started = time.monotonic()
        await manager._invoke(script, event)
        return time.monotonic() - started

    with caplog.at_level(logging.ERROR, logger="pyserf.agent"):
        took = asyncio.run(asyncio.wait_for(main(), 10))
    assert 0.4 < took < 3.0
    assert any("timed out after 0.5s" in r.getMessage() for r in caplog.records)
