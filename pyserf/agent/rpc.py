"""Serf's agent RPC (IPC) protocol over TCP, so the real ``serf`` CLI can drive pyserf.

Framing: a stream of msgpack objects in the "new" spec (str8 strings, bin for byte slices).
Each request is a header ``{Command, Seq}`` optionally followed by a body; each reply is a
header ``{Error, Seq}`` optionally followed by a body. Streams push further header+record pairs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from pyserf.agent import logs
from pyserf.memberlist import codec, security
from pyserf.serf import internal_queries
from pyserf.serf.core import (
    Member,
    MemberEvent,
    QueryReceived,
    SerfError,
    UserEventReceived,
)

if TYPE_CHECKING:
    from pyserf.agent.runtime import Agent

log = logging.getLogger("pyserf.agent")

IPC_VERSION = 1
STREAM_BUFFER = 512

# Commands followed by a request body.
_WITH_BODY = {"handshake", "auth", "members-filtered", "join", "force-leave", "event", "tags",
              "stream", "monitor", "stop", "query", "respond", "install-key", "use-key",
              "remove-key", "get-coordinate"}


class _CloseConnection(Exception):
    """The protocol says to drop the client (serf closes without replying)."""


def member_record(member: Member) -> dict[str, Any]:
    return {"Name": member.name, "Addr": codec.ip_to_bytes(member.addr), "Port": member.port,
            "Tags": dict(member.tags), "Status": member.status.label(),
            "ProtocolMin": member.protocol_min, "ProtocolMax": member.protocol_max,
            "ProtocolCur": member.protocol_cur, "DelegateMin": member.delegate_min,
            "DelegateMax": member.delegate_max, "DelegateCur": member.delegate_cur}


def _anchored(expr: str) -> re.Pattern[str]:
    try:
        return re.compile(f"^(?:{expr})$")
    except re.error as exc:
        raise _CloseConnection(f"invalid regex {expr!r}: {exc}") from exc


class RPCServer:
    def __init__(self, agent: Agent, auth_key: str = "") -> None:
        self.agent = agent
        self.auth_key = auth_key
        self.server: asyncio.Server | None = None
        self.clients: set[_Client] = set()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            client.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(self, reader, writer)
        self.clients.add(client)
        try:
            await client.serve()
        finally:
            self.clients.discard(client)
            client.close()


class _Client:
    def __init__(self, server: RPCServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.agent = server.agent
        self.reader = reader
        self.writer = writer
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 * 1024 * 1024)
        self.version = 0
        self.authenticated = not server.auth_key
        self.streams: dict[int, Callable[[], None]] = {}
        self.monitor_seq: int | None = None
        self.query_ids: dict[int, QueryReceived] = {}
        self.next_query_id = 0
        self.closed = False

    # -- framing ---------------------------------------------------------------------------

    async def _next(self) -> Any:
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                pass
            data = await self.reader.read(65536)
            if not data:
                raise EOFError
            self.unpacker.feed(data)

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
        for stop in list(self.streams.values()):
            stop()
        self.streams.clear()
        self.writer.close()

    async def serve(self) -> None:
        try:
            while not self.closed:
                header = await self._next()
                if not isinstance(header, dict):
                    return
                command = header.get("Command")
                seq = header.get("Seq")
                if not isinstance(command, str) or not isinstance(seq, int):
                    return
                body = await self._next() if command in _WITH_BODY else None
                if command in _WITH_BODY and not isinstance(body, dict):
                    return
                await self._handle(command, seq, body or {})
                await self.writer.drain()
        except (EOFError, ConnectionError, _CloseConnection, ValueError, msgpack.UnpackException):
            return

    # -- dispatch --------------------------------------------------------------------------

    async def _handle(self, command: str, seq: int, body: dict) -> None:
        if self.version == 0 and command != "handshake":
            self.send(seq, "Handshake required")
            raise _CloseConnection
        if not self.authenticated and command not in ("handshake", "auth"):
            self.send(seq, "Authentication required")
            return
        handler = getattr(self, "cmd_" + command.replace("-", "_"), None)
        if handler is None:
            self.send(seq, "Unsupported command")
            raise _CloseConnection
        await handler(seq, body)

    async def cmd_handshake(self, seq: int, body: dict) -> None:
        if self.version:
            self.send(seq, "Handshake already performed")
        elif body.get("Version") != IPC_VERSION:
            self.send(seq, "Unsupported IPC version")
        else:
            self.version = IPC_VERSION
            self.send(seq)

    async def cmd_auth(self, seq: int, body: dict) -> None:
        if body.get("AuthKey") == self.server.auth_key:
            self.authenticated = True
            self.send(seq)
        else:
            self.send(seq, "Invalid authentication token")

    async def cmd_members(self, seq: int, body: dict) -> None:
        members = [member_record(x) for x in self.agent.serf.member_list()]
        self.send(seq, body={"Members": members}, has_body=True)

    async def cmd_members_filtered(self, seq: int, body: dict) -> None:
        tags = body.get("Tags") or {}
        if not isinstance(tags, dict):
            raise _CloseConnection("Tags must be a map")
        tag_res = {str(k): _anchored(str(v)) for k, v in tags.items()}
        status_re = _anchored(str(body.get("Status") or "")) if body.get("Status") else None
        name_re = _anchored(str(body.get("Name") or "")) if body.get("Name") else None
        out = []
        for member in self.agent.serf.member_list():
            if name_re and not name_re.match(member.name):
                continue
            if status_re and not status_re.match(member.status.label()):
                continue
            if any(not rx.match(member.tags.get(k, "")) for k, rx in tag_res.items()):
                continue
            out.append(member_record(member))
        self.send(seq, body={"Members": out}, has_body=True)

    async def cmd_join(self, seq: int, body: dict) -> None:
        existing = [str(x) for x in (body.get("Existing") or [])]
        num, error = await self.agent.join(existing, bool(body.get("Replay")))
        self.send(seq, error or "", {"Num": num}, has_body=True)

    async def cmd_leave(self, seq: int, body: dict) -> None:
        error = await self.agent.leave()
        self.send(seq, error or "")
        await self.writer.drain()
        self.agent.exit_code = 1 if error else 0
        self.agent.spawn(self.agent.shutdown())

    async def cmd_force_leave(self, seq: int, body: dict) -> None:
        error = await self.agent.force_leave(str(body.get("Node") or ""), bool(body.get("Prune")))
        self.send(seq, error or "")

    async def cmd_event(self, seq: int, body: dict) -> None:
        payload = body.get("Payload") or b""
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            self.agent.user_event(str(body.get("Name") or ""), bytes(payload),
                                  bool(body.get("Coalesce")))
        except SerfError as exc:
            self.send(seq, str(exc))
            return
        self.send(seq)

    async def cmd_tags(self, seq: int, body: dict) -> None:
        tags = dict(self.agent.serf.config.tags)
        for key, value in (body.get("Tags") or {}).items():
            tags[str(key)] = str(value)
        for key in body.get("DeleteTags") or []:
            tags.pop(str(key), None)
        try:
            error = await self.agent.set_tags(tags)
        except SerfError as exc:
            error = str(exc)
        self.send(seq, error or "")

    async def cmd_stats(self, seq: int, body: dict) -> None:
        self.send(seq, body=self.agent.stats(), has_body=True)

    async def cmd_get_coordinate(self, seq: int, body: dict) -> None:
        coord = self.agent.serf.coordinate_cache.get(str(body.get("Node") or ""))
        if coord is None:
            empty = {"Adjustment": 0.0, "Error": 0.0, "Height": 0.0, "Vec": None}
            self.send(seq, body={"Coord": empty, "Ok": False}, has_body=True)
            return
        self.send(seq, body={"Coord": coord.to_wire(), "Ok": True}, has_body=True)

    async def cmd_monitor(self, seq: int, body: dict) -> None:
        try:
            level = logs.parse_level(str(body.get("LogLevel") or "INFO"))
        except ValueError:
            self.send(seq, f"Unknown log level: {body.get('LogLevel')}")
            return
        if self.monitor_seq is not None:
            self.send(seq, "Monitor already exists")
            return
        handler = self.agent.log_handler
        self.send(seq)
        if handler is None:
            return
        self.monitor_seq = seq

        def on_line(line: str) -> None:
            self.send(seq, body={"Log": line}, has_body=True)

        def stop() -> None:
            handler.unsubscribe(on_line)
            self.monitor_seq = None

        self.streams[seq] = stop
        handler.subscribe(level, on_line)

    async def cmd_stream(self, seq: int, body: dict) -> None:
        from pyserf.agent.config import parse_event_filter

        filters = parse_event_filter(str(body.get("Type") or "*"))
        if not all(f.valid() for f in filters):
            self.send(seq, "Invalid event filter")
            return
        if seq in self.streams:
            self.send(seq, "Stream with given sequence exists")
            return
        self.send(seq)
        pending = 0

        def on_event(event: Any) -> None:
            nonlocal pending
            record = self._event_record(event, filters)
            if record is None:
                return
            if self.writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                log.warning("agent.ipc: Dropping event to %s", "slow client")
                return
            self.send(seq, body=record, has_body=True)

        def stop() -> None:
            if on_event in self.agent.event_listeners:
                self.agent.event_listeners.remove(on_event)

        self.streams[seq] = stop
        self.agent.event_listeners.append(on_event)

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
                    "Payload": event.payload, "Coalesce": event.coalesce}
        self.next_query_id += 1
        self.query_ids[self.next_query_id] = event
        return {"Event": "query", "ID": self.next_query_id, "LTime": event.ltime,
                "Name": event.name, "Payload": event.payload}

    async def cmd_respond(self, seq: int, body: dict) -> None:
        query = self.query_ids.get(int(body.get("ID") or 0))
        if query is None:
            self.send(seq, "No pending queries matching ID")
            return
        payload = body.get("Payload") or b""
        try:
            self.agent.serf.respond(query, bytes(payload), self.agent.loop.time())
            self.agent.pump()
        except SerfError as exc:
            self.send(seq, str(exc))
            return
        self.query_ids.pop(int(body.get("ID") or 0), None)
        self.send(seq)

    async def cmd_install_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.INSTALL_KEY, body)

    async def cmd_use_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.USE_KEY, body)

    async def cmd_remove_key(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.REMOVE_KEY, body)

    async def cmd_list_keys(self, seq: int, body: dict) -> None:
        await self._key_command(seq, internal_queries.LIST_KEYS, {"Key": ""})

    async def _key_command(self, seq: int, name: str, body: dict) -> None:
        text = str(body.get("Key") or "")
        try:
            key = security.parse_key_b64(text) if name != internal_queries.LIST_KEYS else b""
        except ValueError as exc:
            reply = {"Keys": None, "Messages": {}, "NumErr": 0, "NumNodes": 0, "NumResp": 0}
            self.send(seq, str(exc), reply, has_body=True)
            return
        op = await self.agent.key_operation(name, key)
        reply = {"Keys": op.keys if name == internal_queries.LIST_KEYS else None,
                 "Messages": op.messages, "NumErr": op.num_err, "NumNodes": op.num_nodes,
                 "NumResp": op.num_resp}
        self.send(seq, op.error(), reply, has_body=True)

    async def cmd_stop(self, seq: int, body: dict) -> None:
        stop = self.streams.pop(int(body.get("Stop") or 0), None)
        if stop is not None:
            stop()
        self.send(seq)

    async def cmd_query(self, seq: int, body: dict) -> None:
        name = str(body.get("Name") or "")
        payload = body.get("Payload") or b""
        if name.startswith("_serf_") and not (name == "_serf_ping" and not payload):
            self.send(seq, "Queries cannot contain the '_serf_' prefix")
            return
        tags = {str(k): str(v) for k, v in (body.get("FilterTags") or {}).items()}
        nodes = [str(x) for x in body.get("FilterNodes") or []]
        timeout_ns = int(body.get("Timeout") or 0)
        request_ack = bool(body.get("RequestAck"))
        # ("WaitFull" is a pyserf field asking for serf's wait-out-the-timeout behaviour;
        # serf agents ignore unknown fields.)
        finish_early = not body.get("WaitFull")

        def on_ack(node: str, when: float) -> None:
            self.send(seq, body={"Type": "ack", "From": node, "Payload": None}, has_body=True)

        def on_response(node: str, data: bytes, when: float) -> None:
            self.send(seq, body={"Type": "response", "From": node, "Payload": data},
                      has_body=True)

        def on_done(when: float) -> None:
            self.streams.pop(seq, None)
            self.send(seq, body={"Type": "done", "From": "", "Payload": None}, has_body=True)

        try:
            collector = self.agent.serf.query(
                name, bytes(payload), self.agent.loop.time(),
                filter_nodes=nodes, filter_tags=tags, request_ack=request_ack,
                relay_factor=int(body.get("RelayFactor") or 0), timeout=timeout_ns / 1e9,
                finish_early=finish_early, on_ack=on_ack, on_response=on_response,
                on_done=on_done)
        except SerfError as exc:
            self.send(seq, str(exc))
            return
        self.send(seq)

        def stop() -> None:
            collector.closed = True

        self.streams[seq] = stop
        self.agent.pump()
