"""One RPC client's connection: framing, replies, its open streams and its handshake deadline.

Framing: a stream of msgpack objects in the "new" spec (str8 strings, bin for byte slices).
Each request is a header ``{Command, Seq}`` optionally followed by a body; each reply is a
header ``{Error, Seq}`` optionally followed by a body. Streams push further header+record pairs
under the ``Seq`` of the request that opened them (:mod:`pyserf.agent.rpc_streams`).

A client is treated as hostile until it has completed the handshake (and auth): a request may
hold only ``RPCServer.pre_auth_buffer`` bytes until then, and the handshake must finish within
:data:`~pyserf.agent.rpc_limits.HANDSHAKE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from pyserf.agent import logs
from pyserf.agent.rpc_limits import (
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_CLIENT_STREAMS,
    MAX_REQUEST_BUFFER,
    RequestError,
    new_unpacker,
)

if TYPE_CHECKING:
    from pyserf.agent.rpc import RPCServer
    from pyserf.serf.events import QueryReceived

log = logging.getLogger("pyserf.agent")


class CloseConnection(Exception):
    """The protocol says to drop the client (serf closes without replying); a non-empty
    text is logged."""


def warn(throttle: logs.Throttle, level: int, msg: str, *args: Any) -> None:
    """Log an ``agent.ipc`` line unless ``throttle`` holds it back (floods of hostile
    clients or of dropped records cost a line a second)."""
    held = throttle.allow()
    if held is None:
        return
    suffix = f" ({held} more since the last such line)" if held else ""
    log.log(level, "agent.ipc: " + msg + suffix, *args)


class Session:
    """A connected client; the command handlers act on the agent through ``agent``."""

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
        # Open streams by the Seq that opened them, each with the function that stops it.
        self.streams: dict[int, Callable[[], None]] = {}
        # rpc_streams' state: the monitor's Seq, and streamed queries awaiting `respond`.
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
            warn(self.server.expired, logging.WARNING, "Closing %s: no %s within %gs", self,
                 what, HANDSHAKE_TIMEOUT)
            self.close()

    def handshake_done(self) -> None:
        """Handshake (and auth) complete: the deadline no longer applies."""
        self._handshake_timer.cancel()

    # -- framing ---------------------------------------------------------------------------

    async def next_object(self, in_request: bool = False) -> Any:
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
        """Write a reply (or stream record) header ``{Error, Seq}`` and, if any, its body."""
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

    def add_stream(self, seq: int, stop: Callable[[], None]) -> bool:
        """Register an open stream; False (and the error sent) when the client has too many."""
        if len(self.streams) >= MAX_CLIENT_STREAMS:
            self.send(seq, f"Too many open streams (limit {MAX_CLIENT_STREAMS})")
            return False
        self.streams[seq] = stop
        return True
