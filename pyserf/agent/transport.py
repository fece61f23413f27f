"""Moving memberlist bytes between the sockets and the serf machine.

The UDP protocol, inbound streams (bounded in number, idle time and buffered bytes) and
outgoing streams with serf's dial and read error texts. :class:`AgentTransport` is mixed into
:class:`pyserf.agent.agent.Agent`, which owns the sockets, the machine and the pump.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from pyserf.gocompat.errno import errno_text
from pyserf.gocompat.hostport import join_host_port
from pyserf.memberlist import codec
from pyserf.memberlist.metrics import Metrics
from pyserf.memberlist.types import OpenStream

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from pyserf.serf.core import Serf

log = logging.getLogger("pyserf.agent")

# Inbound streams are unauthenticated until decrypted, so how many a peer may open and how much
# they may make us hold is bounded: memberlist serves at most 128 push-pulls at once, and the
# bytes buffered across all inbound streams are capped (one full 20 MiB push-pull plus change).
MAX_INBOUND_STREAMS = 128
# Connections that have not sent a byte yet are cheap but hold descriptors: keep at most this
# many, closing the oldest when another arrives, so idle sockets never lock out real peers.
MAX_IDLE_STREAMS = 512
# Datagrams read straight from the socket before the due timers run (see Agent._on_timer);
# bounded so a flood cannot hold the loop, and a datagram never exceeds 64 KiB.
MAX_DRAINED_DATAGRAMS = 256
MAX_DATAGRAM = 65536
MAX_INBOUND_BUFFERED = 64 * 1024 * 1024


def dial_error(addr: tuple[str, int], exc: BaseException) -> str:
    host = join_host_port(addr[0], addr[1])
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {host}: connect: connection refused"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"dial tcp {host}: i/o timeout"
    if isinstance(exc, OSError) and exc.errno:
        return f"dial tcp {host}: {errno_text(exc)}"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"dial tcp {host}: {reason.lower()}"


class StreamBudget:
    """Bytes buffered across all inbound streams, against MAX_INBOUND_BUFFERED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise codec.DecodeError("too much inbound stream data buffered; dropping stream")
        self.used += n


async def read_stream_message(reader: asyncio.StreamReader, budget: StreamBudget | None = None,
                              first: bytes = b"") -> bytes:
    """Read one memberlist stream message (complete frame, or whatever arrived before EOF).

    The frame is located incrementally, so the cost is linear in the bytes received however
    they are chunked; memory is bounded by the framer's limit and the shared budget.
    """
    framer = codec.StreamFramer()
    taken = 0
    try:
        while True:
            chunk, first = (first, b"") if first else (await reader.read(65536), b"")
            if not chunk:
                return bytes(framer.buf)
            if budget is not None:
                budget.take(len(chunk))
                taken += len(chunk)
            frame = framer.feed(chunk)
            if frame is not None:
                return frame
    finally:
        if budget is not None:
            budget.used -= taken


class _DialError(Exception):
    pass


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, agent: AgentTransport) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.agent.on_packet(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("memberlist: UDP error: %s", exc)


class AgentTransport:
    """The agent's network input: datagrams and streams in, streams the machine opens out."""

    loop: asyncio.AbstractEventLoop
    udp: asyncio.DatagramTransport | None
    _udp_sock: socket.socket | None
    _inbound_streams: int
    _idle_streams: dict[asyncio.StreamWriter, None]
    _inbound_budget: StreamBudget
    metrics: Metrics

    if TYPE_CHECKING:
        @property
        def serf(self) -> Serf: ...

        def pump(self) -> None: ...

        def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    def _drain_udp(self) -> None:
        """Hand the machine the datagrams already waiting in the socket.

        asyncio reads one datagram per loop turn but runs every overdue timer in the first
        turn. After the process was paused or starved, a probe's deadlines are overdue while
        the ack that answers it waits behind the backlog, so without this the agent suspects a
        healthy peer whose answer it has already received. Go's memberlist reads packets on
        its own goroutine and does not fall behind this way.
        """
        sock = self._udp_sock
        if sock is None or self.udp is None or self.udp.is_closing():
            return
        for _ in range(MAX_DRAINED_DATAGRAMS):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket: report, read on
                log.debug("memberlist: UDP error: %s", exc)
                continue
            self._receive(data, (addr[0], addr[1]))


    def on_packet(self, data: bytes, addr: tuple[str, int]) -> None:
        self._receive(data, addr)
        self.pump()

    def _receive(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.serf.receive_packet(data, addr, self.loop.time())
        except Exception:
            log.exception("memberlist: internal error handling a packet from %s:%d", *addr)

    async def _on_stream(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.metrics.incr("memberlist.tcp.accept")
        idle = self._idle_streams
        if len(idle) >= MAX_IDLE_STREAMS:
            oldest = next(iter(idle))
            del idle[oldest]
            oldest.close()  # its reader sees EOF and its task ends
        idle[writer] = None
        # One deadline for the whole exchange, as memberlist sets on the connection.
        deadline = self.loop.time() + self.serf.memberlist.timing.tcp_timeout
        try:
            first = await asyncio.wait_for(reader.read(65536), deadline - self.loop.time())
        except (TimeoutError, OSError):
            first = b""
        finally:
            idle.pop(writer, None)
        if not first:
            writer.close()
            return
        if self._inbound_streams >= MAX_INBOUND_STREAMS:
            self.serf.memberlist.drops.drop("stream (too many open)", f"{peer[0]}:{peer[1]}",
                                            f"{MAX_INBOUND_STREAMS} inbound streams open",
                                            self.loop.time())
            writer.close()
            return
        self._inbound_streams += 1
        try:
            await self._serve_stream(reader, writer, peer, first, deadline)
        finally:
            self._inbound_streams -= 1

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: Any, first: bytes, deadline: float) -> None:
        try:
            data = await asyncio.wait_for(
                read_stream_message(reader, self._inbound_budget, first),
                max(0.0, deadline - self.loop.time()))
            if data:
                reply = self.serf.receive_stream(data, (peer[0], peer[1]), self.loop.time())
                self.pump()
                if reply:
                    self.metrics.incr("memberlist.tcp.sent", len(reply))
                    writer.write(reply)
                    await asyncio.wait_for(writer.drain(), max(0.1, deadline - self.loop.time()))
        except (TimeoutError, OSError, codec.DecodeError) as exc:
            reason = "i/o timeout" if isinstance(exc, TimeoutError) else str(exc)
            self.serf.memberlist.drops.drop("stream", f"{peer[0]}:{peer[1]}",
                                            reason or type(exc).__name__, self.loop.time())
        except Exception:
            log.exception("memberlist: internal error handling a stream")
        finally:
            writer.close()
            self.pump()

    async def _run_stream(self, action: OpenStream) -> None:
        serf = self.serf
        writer = None
        try:
            remaining = max(0.05, action.deadline - self.loop.time())
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*action.addr), remaining)
            except (TimeoutError, OSError) as exc:
                raise _DialError(dial_error(action.addr, exc)) from exc
            self.metrics.incr("memberlist.tcp.connect")
            self.metrics.incr("memberlist.tcp.sent", len(action.data))
            writer.write(action.data)
            remaining = max(0.05, action.deadline - self.loop.time())
            await asyncio.wait_for(writer.drain(), remaining)
            data = await asyncio.wait_for(read_stream_message(reader), remaining)
            serf.stream_reply(action.stream_id, data, self.loop.time())
        except _DialError as exc:
            serf.stream_failed(action.stream_id, str(exc), self.loop.time())
        except (TimeoutError, OSError, codec.DecodeError) as exc:
            text = "i/o timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            serf.stream_failed(action.stream_id, f"read tcp {action.addr[0]}:{action.addr[1]}: "
                               f"{text}", self.loop.time())
        except Exception:
            log.exception("memberlist: internal error in an outgoing stream")
            serf.stream_failed(action.stream_id, "internal error", self.loop.time())
        finally:
            if writer is not None:
                writer.close()
            self.pump()

