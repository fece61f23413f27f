"""statsd (UDP) and statsite (TCP) sinks, as go-metrics' StatsdSink and StatsiteSink.

Both take statsd lines from the recorder into a bounded queue (go-metrics: 4,096 lines, a
line pushed onto a full queue is dropped) and flush it 100 ms after the first line arrives
(go-metrics flushes every 100 ms; an idle agent here wakes only when there is something to
send). statsd packs lines into datagrams of at most 1,400 bytes; an unreachable statsd is never
an error (UDP). statsite gets the same lines over one TCP connection; while it is down the
lines are dropped (as go-metrics does) and the connection is retried with a doubling back-off,
never blocking the loop; a statsite that stops reading is treated as down once a megabyte is
waiting in the socket buffer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque

from pyserf.gocompat.hostport import AddrError, parse_port, split_host_port
from pyserf.telemetry import SinkAddressError

__all__ = ["SinkAddressError", "StatsdSink", "StatsiteSink", "resolve"]

log = logging.getLogger("pyserf.agent")

QUEUE_LINES = 4096
FLUSH_DELAY = 0.1
STATSD_MAX_PACKET = 1400
RETRY_MIN, RETRY_MAX = 1.0, 30.0
MAX_UNSENT_BYTES = 1 << 20


def resolve(text: str, kind: int) -> tuple[int, tuple[str, int]]:
    """``host:port`` to (address family, socket address); SinkAddressError if unusable."""
    try:
        host, port_text = split_host_port(text)
        port = parse_port(port_text)
    except AddrError as exc:
        raise SinkAddressError(f"address {text}: {exc}") from None
    if not 0 < port <= 65535:
        raise SinkAddressError(f"address {text}: invalid port")
    try:
        infos = socket.getaddrinfo(host or "127.0.0.1", port, type=kind)
    except (socket.gaierror, UnicodeError) as exc:
        raise SinkAddressError(f"address {text}: cannot resolve {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    return family, (str(addr[0]), int(addr[1]))


class _QueuedSink:
    """The bounded line queue and the delayed flush both sinks share."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[str] = deque()
        self.dropped = 0
        self.sent_lines = 0
        self._flush: asyncio.TimerHandle | None = None
        self.closed = False

    def push(self, line: str) -> None:
        if self.closed or len(self.queue) >= QUEUE_LINES:
            self.dropped += 1
            return
        self.queue.append(line)
        if self._flush is None:
            self._flush = self.loop.call_later(FLUSH_DELAY, self._flush_now)

    def _flush_now(self) -> None:
        self._flush = None
        self.flush()

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if not self.closed:
            self.flush()
        self.closed = True
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


class StatsdSink(_QueuedSink):
    def __init__(self, loop: asyncio.AbstractEventLoop, addr: str) -> None:
        super().__init__(loop)
        family, self.addr = resolve(addr, socket.SOCK_DGRAM)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def flush(self) -> None:
        packet: list[str] = []
        size = 0
        while self.queue:
            line = self.queue.popleft()
            if size + len(line) > STATSD_MAX_PACKET and packet:
                self._send("".join(packet))
                packet, size = [], 0
            packet.append(line)
            size += len(line)
        if packet:
            self._send("".join(packet))

    def _send(self, data: str) -> None:
        try:
            self.sock.sendto(data.encode("utf-8", "replace"), self.addr)
            self.sent_lines += data.count("\n")
        except OSError as exc:  # full buffer, ICMP refusals: statsd is best effort
            log.debug("agent: statsd send to %s:%d failed: %s", *self.addr, exc)

    def close(self) -> None:
        super().close()
        self.sock.close()


class StatsiteSink(_QueuedSink):
    def __init__(self, loop: asyncio.AbstractEventLoop, addr: str) -> None:
        super().__init__(loop)
        _, self.addr = resolve(addr, socket.SOCK_STREAM)
        self.writer: asyncio.StreamWriter | None = None
        self.retry = RETRY_MIN
        self.failures = 0
        self._task: asyncio.Task[None] | None = loop.create_task(self._connect())

    async def _connect(self) -> None:
        while not self.closed:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(*self.addr), 5.0)
            except (OSError, TimeoutError) as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.error("agent: Error connecting to statsite %s:%d (%d failures), "
                              "retrying in %.0f s: %s", *self.addr, self.failures, self.retry,
                              exc)
                await asyncio.sleep(self.retry)
                self.retry = min(RETRY_MAX, self.retry * 2)
                continue
            self.writer = writer
            self.retry = RETRY_MIN
            return

    def flush(self) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            self.dropped += len(self.queue)  # down: drop, as go-metrics does, and reconnect
            self.queue.clear()
            if writer is not None:
                self._reconnect()
            return
        if writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            log.error("agent: statsite %s:%d is not reading; reconnecting", *self.addr)
            writer.transport.abort()
            self._reconnect()
            return
        data = "".join(self.queue)
        self.sent_lines += len(self.queue)
        self.queue.clear()
        writer.write(data.encode("utf-8", "replace"))

    def _reconnect(self) -> None:
        self.writer = None
        if not self.closed and (self._task is None or self._task.done()):
            self._task = self.loop.create_task(self._connect())

    def close(self) -> None:
        super().close()
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()
