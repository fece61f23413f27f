"""Serf's agent RPC (IPC) server over TCP, so the real ``serf`` CLI can drive pyserf.

This module is the listener: it admits clients under the connection caps, gates every
request on the handshake (and auth, when ``rpc_auth`` is set) and dispatches each command to
its handler. The rest of the server, one file per concern:

- :mod:`pyserf.agent.rpc_session`: one client's connection (framing, replies, open streams);
- :mod:`pyserf.agent.rpc_commands`: the commands answered with one reply;
- :mod:`pyserf.agent.rpc_streams`: monitor, stream and query, and respond/stop;
- :mod:`pyserf.agent.rpc_limits`: every bound, and typed decoding of the requests (like
  serf, a request that does not decode drops the client).

Every client is treated as hostile until it has completed the handshake (and auth): it may
buffer only :data:`~pyserf.agent.rpc_limits.PRE_AUTH_BUFFER` bytes and must finish within
:data:`~pyserf.agent.rpc_limits.HANDSHAKE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgpack

from pyserf.agent import logs, rpc_commands, rpc_streams
from pyserf.agent.rpc_limits import (
    BODIES,
    LISTEN_BACKLOG,
    MAX_PENDING_CLIENTS,
    MAX_RPC_CLIENTS,
    PRE_AUTH_BUFFER,
    READ_LIMIT,
    RequestError,
    decode_body,
    decode_header,
)
from pyserf.agent.rpc_session import CloseConnection, Session, warn
from pyserf.memberlist.metrics import NULL_METRICS, Metrics

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

IPC_VERSION = 1


class _BoundedReads(asyncio.StreamReaderProtocol):
    """A client's stream whose socket reads take at most READ_LIMIT bytes each: asyncio's
    transports read 256 KiB at a time, which the reader buffers whole before it pauses."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Runs before the transport's first read. max_size is the selector transport's
        # per-recv size; other transports ignore the attribute.
        transport.max_size = READ_LIMIT  # type: ignore[attr-defined]
        super().connection_made(transport)


class RPCServer:
    """The RPC listener of one agent; ``clients`` are the connected sessions."""

    def __init__(self, agent: AgentAPI, auth_key: str = "") -> None:
        self.agent = agent
        self.auth_key = auth_key
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry sets its recorder
        self.server: asyncio.Server | None = None
        self.clients: dict[Session, None] = {}
        # Those still owing the handshake (or auth), oldest first: admission is O(1) even
        # while a flood of connections churns through the slots.
        self.pending: dict[Session, None] = {}
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
        for session in list(self.clients):
            session.close()

    def ready_count(self) -> int:
        return len(self.clients) - len(self.pending)

    def _make_room(self, name: str) -> bool:
        """Apply the connection caps before serving a new client; False to refuse it."""
        if self.ready_count() >= MAX_RPC_CLIENTS:
            warn(self.refused, logging.WARNING,
                 "Rejecting client %s: %d clients connected (limit %d)",
                 name, MAX_RPC_CLIENTS, MAX_RPC_CLIENTS)
            return False
        if len(self.pending) >= MAX_PENDING_CLIENTS:
            oldest = next(iter(self.pending))
            warn(self.evicted, logging.WARNING, "Closing %s: too many clients waiting for a "
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
        session = Session(self, reader, writer, name)
        self.clients[session] = None
        self.pending[session] = None
        try:
            await self._serve(session)
        except Exception:  # a bug in one command must never take the server down
            log.exception("agent.ipc: Failed to evaluate request from %s", session)
        finally:
            self.clients.pop(session, None)
            self.pending.pop(session, None)
            session.close()

    async def _serve(self, session: Session) -> None:
        """Read and answer requests until the client leaves or breaks the protocol."""
        try:
            while not session.closed:
                try:
                    command, seq = decode_header(await session.next_object())
                except RequestError as exc:
                    warn(self.failed, logging.ERROR, "failed to decode request header: %s", exc)
                    return
                self.metrics.incr("agent.ipc.command")
                body = None
                if command in BODIES and (session.ready or command in ("handshake", "auth")):
                    body = decode_body(command, await session.next_object(in_request=True))
                await self._dispatch(session, command, seq, body or {})
                await session.writer.drain()
        except (RequestError, CloseConnection) as exc:
            if str(exc):
                warn(self.failed, logging.ERROR, "Failed to evaluate request: %s", exc)
        except (EOFError, ConnectionError, ValueError, msgpack.UnpackException):
            return

    async def _dispatch(self, session: Session, command: str, seq: int, body: dict) -> None:
        if session.version == 0 and command != "handshake":
            session.send(seq, "Handshake required")
            raise CloseConnection
        if not session.authenticated and command not in ("handshake", "auth"):
            log.warning("agent.ipc: Client sending commands before auth")
            session.send(seq, "Authentication required")
            # Serf leaves the body of such a request to be read as the next header; it is
            # read here instead so the framing stays in step.
            if command in BODIES:
                await session.next_object(in_request=True)
            return
        handler = COMMANDS.get(command)
        if handler is None:
            session.send(seq, "Unsupported command")
            raise CloseConnection(f"command '{command[:64]}' not recognized")
        await handler(session, seq, body)


def _admit_if_ready(session: Session) -> None:
    """Once handshake (and auth) are done the client leaves the pending queue; it is dropped
    if other clients took the last slot meanwhile."""
    if not session.ready:
        return
    session.handshake_done()
    server = session.server
    server.pending.pop(session, None)
    if server.ready_count() > MAX_RPC_CLIENTS:
        raise CloseConnection(f"{MAX_RPC_CLIENTS} clients connected (limit)")


async def cmd_handshake(session: Session, seq: int, body: dict) -> None:
    if body["Version"] != IPC_VERSION:
        session.send(seq, "Unsupported IPC version")
    elif session.version:
        session.send(seq, "Handshake already performed")
    else:
        session.version = IPC_VERSION
        _admit_if_ready(session)
        session.send(seq)


async def cmd_auth(session: Session, seq: int, body: dict) -> None:
    if body["AuthKey"] == session.server.auth_key:
        session.authenticated = True
        _admit_if_ready(session)
        session.send(seq)
    else:
        session.send(seq, "Invalid authentication token")


Handler = Callable[[Session, int, dict], Awaitable[None]]
# Every command serf's IPC knows, by its wire name.
COMMANDS: dict[str, Handler] = {
    "handshake": cmd_handshake,
    "auth": cmd_auth,
    **rpc_commands.COMMANDS,
    **rpc_streams.COMMANDS,
}
