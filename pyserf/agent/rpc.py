"""Serf's agent RPC (IPC) protocol over TCP, so the real ``serf`` CLI can drive pyserf.

Framing: a stream of msgpack objects in the "new" spec (str8 strings, bin for byte slices).
Each request is a header ``{Command, Seq}`` optionally followed by a body; each reply is a
header ``{Error, Seq}`` optionally followed by a body. Streams push further header+record pairs.

Every client is treated as hostile until it has completed the handshake (and auth): it may
buffer only :data:`~pyserf.agent.rpc_limits.PRE_AUTH_BUFFER` bytes and must finish within
:data:`~pyserf.agent.rpc_limits.HANDSHAKE_TIMEOUT`. Requests are decoded into serf's field
types by :mod:`pyserf.agent.rpc_limits`; like serf, a request that does not decode drops the
client. Pushed records (monitor, stream, query) go through a bounded per-subscription buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from pyserf.agent import logs
from pyserf.agent.rpc_limits import (
    BODIES,
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    LISTEN_BACKLOG,
    MAX_CLIENT_STREAMS,
    MAX_PENDING_CLIENTS,
    MAX_REQUEST_BUFFER,
    MAX_RPC_CLIENTS,
    PRE_AUTH_BUFFER,
    READ_LIMIT,
    SUBSCRIBER_BUFFER,
    RequestError,
    decode_body,
    decode_header,
    new_unpacker,
)
from pyserf.memberlist import codec, security
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.serf import filters, internal_queries
from pyserf.serf.config import SerfError
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.members import Member

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

IPC_VERSION = 1
STREAM_BUFFER = SUBSCRIBER_BUFFER
# Queries registered for `respond` per client; serf forgets each at its deadline, and so
# do we, but a flood of long-lived queries must not grow the table without bound.
MAX_PENDING_QUERIES = 4096
# A query that everyone answered ends early (serf waits out its timeout); its "done" record
# trails the last answer by this much, so serf's CLI reads every answer before it closes its
# channels (measured: with no gap it lost the last answer 1 run in 10-20; 0.1 s was still
# short on a loaded 2-core machine).
QUERY_DONE_GRACE = 0.25

# Wall-clock seconds one members-filtered request may spend matching (serf has no bound,
# but it matches in its own goroutine; here matching shares the event loop), and the longest
# stretch it may hold the loop between two yields.
MEMBER_FILTER_BUDGET = 5.0
FILTER_SLICE = 0.02



class _BoundedReads(asyncio.StreamReaderProtocol):
    """A client's stream whose socket reads take at most READ_LIMIT bytes each: asyncio's
    transports read 256 KiB at a time, which the reader buffers whole before it pauses."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Runs before the transport's first read. max_size is the selector transport's
        # per-recv size; other transports ignore the attribute.
        transport.max_size = READ_LIMIT  # type: ignore[attr-defined]
        super().connection_made(transport)


class _CloseConnection(Exception):
    """The protocol says to drop the client (serf closes without replying)."""


def member_record(member: Member) -> dict[str, Any]:
    return {"Name": member.name, "Addr": codec.ip_to_bytes(member.addr), "Port": member.port,
            "Tags": dict(member.tags), "Status": member.status.label(),
            "ProtocolMin": member.protocol_min, "ProtocolMax": member.protocol_max,
            "ProtocolCur": member.protocol_cur, "DelegateMin": member.delegate_min,
            "DelegateMax": member.delegate_max, "DelegateCur": member.delegate_cur}


def anchored(expr: str) -> Any:
    """Compile a members-filtered pattern as serf does (``^expr$``) with RE2 semantics, which
    run in linear time like Go's regexp; serf drops the client on a bad pattern."""
    try:
        return filters.compile_anchored(expr)
    except filters.FilterError as exc:
        raise _CloseConnection(str(exc)) from None


def _tag_value(key: str) -> Callable[[Member], str]:
    """What a members-filtered tag pattern is matched against (empty when the tag is unset)."""
    return lambda member: member.tags.get(key, "")


def _warn(throttle: logs.Throttle, level: int, msg: str, *args: Any) -> None:
    """Log an ``agent.ipc`` line unless ``throttle`` holds it back (floods of hostile
    clients or of dropped records cost a line a second)."""
    held = throttle.allow()
    if held is None:
        return
    suffix = f" ({held} more since the last such line)" if held else ""
    log.log(level, "agent.ipc: " + msg + suffix, *args)


class RPCServer:
    def __init__(self, agent: AgentAPI, auth_key: str = "") -> None:
        self.agent = agent
        self.auth_key = auth_key
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry sets its recorder
        self.server: asyncio.Server | None = None
        self.clients: dict[_Client, None] = {}
        # Those still owing the handshake (or auth), oldest first: admission is O(1) even
        # while a flood of connections churns through the slots.
        self.pending: dict[_Client, None] = {}
        self.pre_auth_buffer = max(PRE_AUTH_BUFFER, len(auth_key.encode()) + 256)
        self.refused = logs.Throttle()
        self.evicted = logs.Throttle()
        self.expired = logs.Throttle()
        self.failed = logs.Throttle()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            # What asyncio.start_server builds, with each socket read capped (see READ_LIMIT).
            return _BoundedReads(asyncio.StreamReader(READ_LIMIT, loop), self._accept,
                                 loop=loop)

        self.server = await loop.create_server(protocol, host, port, reuse_address=True,
                                               backlog=LISTEN_BACKLOG)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            client.close()

    def ready_count(self) -> int:
        return len(self.clients) - len(self.pending)

    def _make_room(self, name: str) -> bool:
        """Apply the connection caps before serving a new client; False to refuse it."""
        if self.ready_count() >= MAX_RPC_CLIENTS:
            _warn(self.refused, logging.WARNING,
                  "Rejecting client %s: %d clients connected (limit %d)",
                  name, MAX_RPC_CLIENTS, MAX_RPC_CLIENTS)
            return False
        if len(self.pending) >= MAX_PENDING_CLIENTS:
            oldest = next(iter(self.pending))
            _warn(self.evicted, logging.WARNING, "Closing %s: too many clients waiting for a "
                  "handshake (limit %d)", oldest, MAX_PENDING_CLIENTS)
            oldest.close()
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        # asyncio accepts up to LISTEN_BACKLOG connections in one go and runs this for each
        # of them before any of their data is read. Yielding once first lets a real client's
        # handshake, already sent, reach its buffer, so that the client completes it in its
        # first step below instead of being pushed out by the rest of the burst.
        await asyncio.sleep(0)
        self.metrics.incr("agent.ipc.accept")
        if not self._make_room(name):
            writer.close()
            return
        client = _Client(self, reader, writer, name)
        self.clients[client] = None
        self.pending[client] = None
        try:
            await client.serve()
        except Exception:  # a bug in one command must never take the server down
            log.exception("agent.ipc: Failed to evaluate request from %s", client)
        finally:
            self.clients.pop(client, None)
            self.pending.pop(client, None)
            client.close()


class _Feed:
    """One subscription's outgoing records: a buffer of :data:`SUBSCRIBER_BUFFER` drained
    by its own task, as serf gives every monitor and event stream a channel of 512 and a
    goroutine. When the client reads too slowly the buffer fills and new records are dropped
    with serf's warning, at most once a second."""

    def __init__(self, client: _Client, seq: int, what: str) -> None:
        self.client = client
        self.seq = seq
        self.what = what
        self.items: deque[Any] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.finishing = False
        self.throttle = logs.Throttle()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def push(self, record: Any) -> None:
        if self.closed or self.finishing:
            return
        if len(self.items) >= SUBSCRIBER_BUFFER:
            _warn(self.throttle, logging.WARNING, "Dropping %s to %s", self.what, self.client)
            return
        self.items.append(record)
        self.wakeup.set()

    def finish(self) -> None:
        """Send what is queued, then end (a query that is done)."""
        self.finishing = True
        self.wakeup.set()

    def stop(self) -> None:
        self.closed = True
        self.items.clear()
        self.task.cancel()

    async def _run(self) -> None:
        try:
            while not self.closed:
                await self.wakeup.wait()
                self.wakeup.clear()
                while self.items and not self.closed:
                    self.client.send(self.seq, body=self.items.popleft(), has_body=True)
                    await self.client.writer.drain()
                if self.finishing:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead socket, or a record that cannot be packed
            if not self.client.closed:
                log.error("agent.ipc: Failed to stream %s to %s: %s", self.what, self.client,
                          exc)
                self.client.close()


class _Client:
    def __init__(self, server: RPCServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, name: str) -> None:
        self.server = server
        self.agent = server.agent
        self.reader = reader
        self.writer = writer
        self.name = name
        # Made when the first bytes arrive: an Unpacker is ~20 KiB (its parse stack), too
        # much to spend on every idle connection.
        self.unpacker: msgpack.Unpacker | None = None
        self._reset_count: Callable[[], None] = lambda: None
        self.fed = 0  # bytes fed to the unpacker
        self.boundary = 0  # unpacker offset where the request being read began
        self.version = 0
        self.authenticated = not server.auth_key
        self.streams: dict[int, Callable[[], None]] = {}
        self.monitor_seq: int | None = None
        self.query_ids: dict[int, QueryReceived] = {}
        self.next_query_id = 0
        self.closed = False
        self._handshake_timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self._handshake_expired)

    def __str__(self) -> str:
        return f"ipc.client: {self.name}"

    @property
    def ready(self) -> bool:
        """Handshake done and, when rpc_auth is set, authenticated."""
        return bool(self.version) and self.authenticated

    def _handshake_expired(self) -> None:
        if not self.ready and not self.closed:
            what = "handshake" if not self.version else "auth"
            _warn(self.server.expired, logging.WARNING, "Closing %s: no %s within %gs", self,
                  what, HANDSHAKE_TIMEOUT)
            self.close()

    def _check_ready(self) -> None:
        if not self.ready:
            return
        self._handshake_timer.cancel()
        self.server.pending.pop(self, None)
        if self.server.ready_count() > MAX_RPC_CLIENTS:  # others got ready meanwhile
            raise _CloseConnection(f"{MAX_RPC_CLIENTS} clients connected (limit)")

    # -- framing ---------------------------------------------------------------------------

    async def _next(self, in_request: bool = False) -> Any:
        """The next msgpack object. Before handshake/auth a request may hold only a few
        KiB; once a request has begun it must arrive within FRAME_TIMEOUT."""
        while True:
            if self.unpacker is not None:
                try:
                    obj = next(self.unpacker)
                except StopIteration:
                    pass
                else:
                    self.boundary = self.unpacker.tell()
                    self._reset_count()
                    return obj
            pending = self.fed - self.boundary
            limit = MAX_REQUEST_BUFFER if self.ready else self.server.pre_auth_buffer
            if pending >= limit:
                raise RequestError(f"request exceeds {limit} bytes")
            timeout = FRAME_TIMEOUT if (pending or in_request) else None
            try:
                data = await asyncio.wait_for(self.reader.read(min(65536, limit - pending)),
                                              timeout)
            except TimeoutError:
                raise RequestError(f"request incomplete after {FRAME_TIMEOUT:g}s") from None
            if not data:
                raise EOFError
            if self.unpacker is None:
                self.unpacker, self._reset_count = new_unpacker()
            self.unpacker.feed(data)
            self.fed += len(data)

    def send(self, seq: int, error: str = "", body: Any = None, has_body: bool = False) -> None:
        if self.closed:
            return
        out = msgpack.packb({"Error": error, "Seq": seq}, use_bin_type=True)
        if has_body:
            out += msgpack.packb(body, use_bin_type=True)
        self.writer.write(out)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.clients.pop(self, None)
        self.server.pending.pop(self, None)
        self._handshake_timer.cancel()
        for stop in list(self.streams.values()):
            stop()
        self.streams.clear()
        self.query_ids.clear()
        self.writer.close()

    async def serve(self) -> None:
        try:
            while not self.closed:
                try:
                    command, seq = decode_header(await self._next())
                except RequestError as exc:
                    _warn(self.server.failed, logging.ERROR,
                          "failed to decode request header: %s", exc)
                    return
                self.server.metrics.incr("agent.ipc.command")
                body = None
                if command in BODIES and (self.ready or command in ("handshake", "auth")):
                    body = decode_body(command, await self._next(in_request=True))
                await self._handle(command, seq, body or {})
                await self.writer.drain()
        except (RequestError, _CloseConnection) as exc:
            if str(exc):
                _warn(self.server.failed, logging.ERROR, "Failed to evaluate request: %s", exc)
        except (EOFError, ConnectionError, ValueError, msgpack.UnpackException):
            return

    # -- dispatch --------------------------------------------------------------------------

    async def _handle(self, command: str, seq: int, body: dict) -> None:
        if self.version == 0 and command != "handshake":
            self.send(seq, "Handshake required")
            raise _CloseConnection
        if not self.authenticated and command not in ("handshake", "auth"):
            log.warning("agent.ipc: Client sending commands before auth")
            self.send(seq, "Authentication required")
            # Serf leaves the body of such a request to be read as the next header; it is
            # read here instead so the framing stays in step.
            if command in BODIES:
                await self._next(in_request=True)
            return
        handler = getattr(self, "cmd_" + command.replace("-", "_"), None)
        if handler is None:
            self.send(seq, "Unsupported command")
            raise _CloseConnection(f"command '{command[:64]}' not recognized")
        await handler(seq, body)

    def _add_stream(self, seq: int, stop: Callable[[], None]) -> bool:
        if len(self.streams) >= MAX_CLIENT_STREAMS:
            self.send(seq, f"Too many open streams (limit {MAX_CLIENT_STREAMS})")
            return False
        self.streams[seq] = stop
        return True

    async def cmd_handshake(self, seq: int, body: dict) -> None:
        if body["Version"] != IPC_VERSION:
            self.send(seq, "Unsupported IPC version")
        elif self.version:
            self.send(seq, "Handshake already performed")
        else:
            self.version = IPC_VERSION
            self._check_ready()
            self.send(seq)

    async def cmd_auth(self, seq: int, body: dict) -> None:
        if body["AuthKey"] == self.server.auth_key:
            self.authenticated = True
            self._check_ready()
            self.send(seq)
        else:
            self.send(seq, "Invalid authentication token")

    async def cmd_members(self, seq: int, body: dict) -> None:
        members = [member_record(x) for x in self.agent.members()]
        self.send(seq, body={"Members": members}, has_body=True)

    async def cmd_members_filtered(self, seq: int, body: dict) -> None:
        # Compiled up front as serf does, so a bad pattern fails before any matching.
        checks: list[tuple[Any, Callable[[Member], str]]] = [
            (anchored(expr), _tag_value(key)) for key, expr in body["Tags"].items()]
        status_re, name_re = anchored(body["Status"]), anchored(body["Name"])
        if body["Status"]:
            checks.append((status_re, lambda m: m.status.label()))
        if body["Name"]:
            checks.append((name_re, lambda m: m.name))
        # RE2 is linear in the text, but a pattern near RE2's size limit still costs up to
        # ~0.1 s on a 512-byte tag value: yield to the loop between matches and give up on
        # a request that takes longer than MEMBER_FILTER_BUDGET.
        started = paused = time.monotonic()
        out = []
        for member in self.agent.members():
            for pattern, text in checks:
                matched = pattern.match(text(member))
                now = time.monotonic()
                if now - started > MEMBER_FILTER_BUDGET:
                    raise _CloseConnection(f"member filters took over {MEMBER_FILTER_BUDGET:g}s")
                if now - paused > FILTER_SLICE:
                    await asyncio.sleep(0)
                    paused = time.monotonic()
                if not matched:
                    break
            else:
                out.append(member_record(member))
        self.send(seq, body={"Members": out}, has_body=True)

    async def cmd_join(self, seq: int, body: dict) -> None:
        num, error = await self.agent.join(body["Existing"], body["Replay"])
        self.send(seq, error or "", {"Num": num}, has_body=True)

    async def cmd_leave(self, seq: int, body: dict) -> None:
        error = await self.agent.leave()
        self.send(seq, error or "")
        await self.writer.drain()
        self.agent.stop(1 if error else 0)

    async def cmd_force_leave(self, seq: int, body: dict) -> None:
        error = await self.agent.force_leave(body["Node"], body["Prune"])
        self.send(seq, error or "")

    async def cmd_event(self, seq: int, body: dict) -> None:
        try:
            self.agent.user_event(body["Name"], body["Payload"], body["Coalesce"])
        except SerfError as exc:
            self.send(seq, str(exc))
            return
        self.send(seq)

    async def cmd_tags(self, seq: int, body: dict) -> None:
        tags = self.agent.local_tags()
        tags.update(body["Tags"])
        for key in body["DeleteTags"]:
            tags.pop(key, None)
        try:
            error = await self.agent.set_tags(tags)
        except SerfError as exc:
            error = str(exc)
        self.send(seq, error or "")

    async def cmd_stats(self, seq: int, body: dict) -> None:
        self.send(seq, body=self.agent.stats(), has_body=True)

    async def cmd_get_coordinate(self, seq: int, body: dict) -> None:
        coord = self.agent.coordinate(body["Node"])
        if coord is None:
            empty = {"Adjustment": 0.0, "Error": 0.0, "Height": 0.0, "Vec": None}
            self.send(seq, body={"Coord": empty, "Ok": False}, has_body=True)
            return
        self.send(seq, body={"Coord": coord, "Ok": True}, has_body=True)

    async def cmd_monitor(self, seq: int, body: dict) -> None:
        try:
            level = logs.parse_level(body["LogLevel"] or "INFO")
        except ValueError:
            self.send(seq, f"Unknown log level: {body['LogLevel'].upper()[:64]}")
            return
        if self.monitor_seq is not None:
            self.send(seq, "Monitor already exists")
            return
        handler = self.agent.log_handler
        if handler is None:
            self.send(seq)
            return
        feed = _Feed(self, seq, "logs")

        def on_line(line: str) -> None:
            feed.push({"Log": line})

        def stop() -> None:
            handler.unsubscribe(on_line)
            feed.stop()
            self.monitor_seq = None

        if not self._add_stream(seq, stop):
            feed.stop()
            return
        self.send(seq)
        self.monitor_seq = seq
        handler.subscribe(level, on_line)

    async def cmd_stream(self, seq: int, body: dict) -> None:
        from pyserf.agent.event_filter import parse_event_filter

        filters = parse_event_filter(body["Type"] or "*")
        if not all(f.valid() for f in filters):
            self.send(seq, "Invalid event filter")
            return
        if seq in self.streams:
            self.send(seq, "Stream with given sequence exists")
            return
        feed = _Feed(self, seq, "event")

        def on_event(event: Any) -> None:
            record = self._event_record(event, filters)
            if record is not None:
                feed.push(record)

        unsubscribe: Callable[[], None] | None = None  # set once the stream is accepted

        def stop() -> None:
            if unsubscribe is not None:
                unsubscribe()
            feed.stop()

        if not self._add_stream(seq, stop):
            feed.stop()
            return
        self.send(seq)
        unsubscribe = self.agent.subscribe(on_event)

    def _event_record(self, event: Any, filters: list[Any]) -> dict | None:
        if isinstance(event, MemberEvent):
            kind, name = event.type, ""
        elif isinstance(event, UserEventReceived):
            kind, name = "user", event.name
        elif isinstance(event, QueryReceived):
            kind, name = "query", event.name
        else:
            return None
        if not any(f.matches(kind, name) for f in filters):
            return None
        if isinstance(event, MemberEvent):
            return {"Event": event.type, "Members": [member_record(x) for x in event.members]}
        if isinstance(event, UserEventReceived):
            return {"Event": "user", "LTime": event.ltime, "Name": event.name,
                    "Payload": event.payload or None, "Coalesce": event.coalesce}
        # An empty payload goes out as nil, as serf's (it prints "Payload: <nil>", not
        # "[]byte(nil)").
        return {"Event": "query", "ID": self._register_query(event), "LTime": event.ltime,
                "Name": event.name, "Payload": event.payload or None}

    def _register_query(self, event: QueryReceived) -> int:
        """Remember a streamed query for `respond` until its deadline, as serf does (a query
        already past it gets an ID that matches nothing)."""
        loop = asyncio.get_running_loop()
        self.next_query_id += 1
        qid = self.next_query_id
        if event.deadline <= loop.time():
            return qid
        while len(self.query_ids) >= MAX_PENDING_QUERIES:
            del self.query_ids[next(iter(self.query_ids))]
        self.query_ids[qid] = event
        loop.call_at(event.deadline, self.query_ids.pop, qid, None)
        return qid

    async def cmd_respond(self, seq: int, body: dict) -> None:
        # The query stays until its deadline, so a second answer gets serf's "already sent".
        query = self.query_ids.get(body["ID"])
        if query is None:
            self.send(seq, "No pending queries matching ID")
            return
        try:
            self.agent.respond(query, body["Payload"])
        except SerfError as exc:
            self.send(seq, internal_queries.respond_error(exc))
            return
        self.send(seq)

    async def cmd_install_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.INSTALL_KEY, body["Key"])

    async def cmd_use_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.USE_KEY, body["Key"])

    async def cmd_remove_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.REMOVE_KEY, body["Key"])

    async def cmd_list_keys(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.LIST_KEYS, "")

    async def _key_command(self, seq: int, name: str, text: str) -> None:
        try:
            key = security.parse_key_b64(text) if name != internal_queries.LIST_KEYS else b""
        except ValueError as exc:
            empty: dict[str, Any] = {"Keys": None, "Messages": {}, "NumErr": 0, "NumNodes": 0,
                                     "NumResp": 0}
            self.send(seq, str(exc), empty, has_body=True)
            return
        op = await self.agent.key_operation(name, key)
        reply = {"Keys": op.keys if name == internal_queries.LIST_KEYS else None,
                 "Messages": op.messages, "NumErr": op.num_err, "NumNodes": op.num_nodes,
                 "NumResp": op.num_resp}
        self.send(seq, op.error(), reply, has_body=True)

    async def cmd_stop(self, seq: int, body: dict) -> None:
        stop = self.streams.pop(body["Stop"], None)
        if stop is not None:
            stop()
        self.send(seq)

    async def cmd_query(self, seq: int, body: dict) -> None:
        name, payload = body["Name"], body["Payload"]
        if name.startswith("_serf_") and not (name == "_serf_ping" and not payload):
            self.send(seq, "Queries cannot contain the '_serf_' prefix")
            return
        if seq in self.streams:
            self.send(seq, "Stream with given sequence exists")
            return
        # ("WaitFull" is a pyserf field asking for serf's wait-out-the-timeout behaviour;
        # serf agents ignore unknown fields.)
        finish_early = not body["WaitFull"]
        feed = _Feed(self, seq, "query response")

        def on_ack(node: str, when: float) -> None:
            feed.push({"Type": "ack", "From": node, "Payload": None})

        def on_response(node: str, data: bytes, when: float) -> None:
            feed.push({"Type": "response", "From": node, "Payload": data})

        def finish() -> None:
            self.streams.pop(seq, None)
            feed.push({"Type": "done", "From": "", "Payload": None})
            feed.finish()

        def on_done(when: float) -> None:
            # serf's CLI closes its ack and response channels on "done" and may then miss a
            # record still in flight; serf never hits this as it waits out the timeout.
            asyncio.get_running_loop().call_later(QUERY_DONE_GRACE, finish)

        try:
            collector = self.agent.start_query(
                name, payload, filter_nodes=body["FilterNodes"], filter_tags=body["FilterTags"],
                request_ack=body["RequestAck"], relay_factor=body["RelayFactor"],
                timeout=body["Timeout"] / 1e9, finish_early=finish_early, on_ack=on_ack,
                on_response=on_response, on_done=on_done)
        except SerfError as exc:
            feed.stop()
            self.send(seq, str(exc))
            return

        def stop() -> None:
            collector.closed = True
            feed.stop()

        if not feed.finishing and not self._add_stream(seq, stop):
            stop()
            return
        self.send(seq)
