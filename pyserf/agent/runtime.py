"""The asyncio shell around the sans-I/O serf machine: sockets, timers, signals, handlers, RPC.

Everything here moves bytes and time in and out; no protocol decisions are made here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyserf.agent import logs, netutil
from pyserf.agent.config import LOG_LEVELS, first_problem
from pyserf.agent.handlers import HandlerManager
from pyserf.gocompat.durations import format_duration
from pyserf.gocompat.errno import errno_text, path_error
from pyserf.gocompat.hostport import (
    AddrError,
    join_host_port,
    join_parts,
    lookup_error,
    parse_port,
    split_host_port,
)
from pyserf.gocompat.jsonerr import unmarshal_strings
from pyserf.memberlist import codec, security
from pyserf.memberlist.profiles import PROFILES
from pyserf.memberlist.state import MemberlistConfig, OpenStream, SendPacket
from pyserf.memberlist.timers import Scheduler
from pyserf.serf import internal_queries
from pyserf.serf.coalesce import EventPipeline
from pyserf.serf.config import SerfConfig, SerfError
from pyserf.serf.core import Serf
from pyserf.serf.events import (
    OPERATION_RESULTS,
    QUERY_RESULTS,
    Handle,
    KeyringChanged,
    MemberEvent,
    QueryAckReceived,
    QueryFinished,
    QueryReceived,
    QueryResponseReceived,
    ShutdownRequested,
    UserEventReceived,
)

if TYPE_CHECKING:
    from pyserf.agent.config import AgentConfig
    from pyserf.agent.snapshot_file import SnapshotFile

log = logging.getLogger("pyserf.agent")

# Inbound streams are unauthenticated until decrypted, so how many a peer may open and how much
# they may make us hold is bounded: memberlist serves at most 128 push-pulls at once, and the
# bytes buffered across all inbound streams are capped (one full 20 MiB push-pull plus change).
MAX_INBOUND_STREAMS = 128
# Connections that have not sent a byte yet are cheap but hold descriptors: keep at most this
# many, closing the oldest when another arrives, so idle sockets never lock out real peers.
MAX_IDLE_STREAMS = 512
# Datagrams read straight from the socket before the due timers run (see _on_timer); bounded so
# a flood cannot hold the loop, and a datagram never exceeds 64 KiB.
MAX_DRAINED_DATAGRAMS = 256
MAX_DATAGRAM = 65536
MAX_INBOUND_BUFFERED = 64 * 1024 * 1024
GRACEFUL_TIMEOUT = 3.0


class AgentError(Exception):
    """Start-up failed; the message is printed as ``==> Failed to start the Serf agent: ...``."""


class SetupError(AgentError):
    """The addresses in the configuration are unusable; printed bare (``==> ...``) before the
    agent starts, as serf's agent command does."""


class CreateError(AgentError):
    """The tags or keyring file cannot be used; printed as ``==> Failed to setup the Serf
    agent: ...`` (serf finds these while creating its agent, before starting Serf)."""


def multierror(errors: list[str]) -> str:
    """Format several errors the way hashicorp/go-multierror does (serf prints this)."""
    noun = "error" if len(errors) == 1 else "errors"
    lines = "".join(f"\t* {e}\n" for e in errors)
    return f"{len(errors)} {noun} occurred:\n{lines}\n"


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


class _Budget:
    """Bytes buffered across all inbound streams, against MAX_INBOUND_BUFFERED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise codec.DecodeError("too much inbound stream data buffered; dropping stream")
        self.used += n


async def read_stream_message(reader: asyncio.StreamReader, budget: _Budget | None = None,
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


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.agent.on_packet(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("memberlist: UDP error: %s", exc)


@dataclass
class RunningQuery:
    """A query the agent started: where its answers go. Setting ``closed`` stops them."""

    on_ack: Callable[[str, float], None]
    on_response: Callable[[str, bytes, float], None]
    on_done: Callable[[float], None]
    closed: bool = False


class Agent:
    def __init__(self, config: AgentConfig, log_handler: logs.AgentLogHandler | None = None
                 ) -> None:
        self.config = config
        self.log_handler = log_handler
        self.loop = asyncio.get_running_loop()
        self.scheduler = Scheduler()
        self.serf: Serf | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self._udp_sock: socket.socket | None = None
        self.tcp_server: asyncio.Server | None = None
        self.rpc = None
        self.http = None  # pyserf.http.server.HTTPListener when http_addr is set
        self.handlers = HandlerManager(self, config.handler_timeout)
        self.pipeline = EventPipeline(self.scheduler, self._dispatch)
        self.event_listeners: list[Callable[[Any], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self.shutdown_event = asyncio.Event()
        self.bind_addr: tuple[str, int] = ("0.0.0.0", netutil.DEFAULT_PORT)
        self.advertise: tuple[str, int] = ("0.0.0.0", netutil.DEFAULT_PORT)
        self.keyring: security.Keyring | None = None
        self.leaving = False
        # Operations waiting for the event that reports their outcome, and running queries.
        self._operations: dict[Handle, asyncio.Future[Any]] = {}
        self._queries: dict[Handle, RunningQuery] = {}
        # Process exit status once shutdown_event is set (RPC leave, retry-join giving up).
        self.exit_code = 0
        self.snapshot: SnapshotFile | None = None
        self._inbound_streams = 0
        self._idle_streams: dict[asyncio.StreamWriter, None] = {}
        self._inbound_budget = _Budget(MAX_INBOUND_BUFFERED)

    # -- set-up --------------------------------------------------------------------------

    def _resolve_addresses(self) -> None:
        cfg = self.config
        try:
            host, port = netutil.split_host_port(cfg.bind or "0.0.0.0", netutil.DEFAULT_PORT)
        except netutil.AddressError as exc:
            raise SetupError(f"Invalid bind address: {exc}") from exc
        if cfg.interface:
            try:
                iface_ip = netutil.interface_ipv4(cfg.interface)
            except netutil.AddressError as exc:
                raise SetupError(str(exc)) from exc
            if host in ("", "0.0.0.0"):
                host = iface_ip
            elif host != iface_ip:
                raise SetupError(f"Interface '{cfg.interface}' has no '{host}' address")
        host = _resolve_host(host or "0.0.0.0", "Invalid bind address")
        self.bind_addr = (host, port)
        if cfg.advertise:
            try:
                adv_host, adv_port = netutil.split_host_port(cfg.advertise, port)
            except netutil.AddressError as exc:
                raise SetupError(f"Invalid advertise address: {exc}") from exc
            adv_host = _resolve_host(adv_host, "Invalid advertise address")
        elif host in ("0.0.0.0", "::"):
            try:
                adv_host = netutil.default_advertise_ip()
            except netutil.AddressError as exc:
                raise SetupError(str(exc)) from exc
            adv_port = port
        else:
            adv_host, adv_port = host, port
        self.advertise = (adv_host, adv_port)

    def _load_keyring(self) -> None:
        cfg = self.config
        keys: list[bytes] = []
        if cfg.keyring_file:
            path = cfg.keyring_file
            try:
                os.stat(path)
            except OSError as exc:
                raise CreateError(path_error("stat", path, exc)) from exc
            raw = self._read_json(path, "keyring", "[]string") or []
            try:
                keys = [security.go_std_b64decode(k.encode()) for k in raw]
            except ValueError as exc:
                raise CreateError(f"Failed to decode key from keyring: {exc}") from exc
            if not keys:
                raise CreateError("Keyring file contains no keys")
            if not keys[0]:  # the memberlist serf 0.9.4 vendors checks this first
                raise CreateError("Failed to restore keyring: Empty primary key not allowed")
            try:
                self.keyring = security.Keyring(keys)
            except ValueError as exc:
                raise CreateError(f"Failed to restore keyring: {exc}") from exc

    @staticmethod
    def _read_json(path: str, what: str, go_type: str) -> Any:
        """A tags or keyring file's JSON, failing with serf's texts for that file."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            # Go opens a directory and fails on the read.
            op = "read" if isinstance(exc, IsADirectoryError) else "open"
            raise CreateError(f"Failed to read {what} file: {path_error(op, path, exc)}"
                              ) from exc
        try:
            return unmarshal_strings(data, go_type)
        except ValueError as exc:
            raise CreateError(f"Failed to decode {what} file: {exc}") from exc

    def _build_serf(self) -> Serf:
        cfg = self.config
        timing = PROFILES[cfg.profile]
        ml = MemberlistConfig(name=cfg.node_name, advertise_addr=self.advertise[0],
                              advertise_port=self.advertise[1], bind_port=self.bind_addr[1],
                              timing=timing, keyring=self.keyring,
                              enable_compression=cfg.enable_compression)
        serf_cfg = SerfConfig(
            node_name=cfg.node_name, tags=dict(cfg.tags), protocol_version=cfg.protocol,
            broadcast_timeout=cfg.broadcast_timeout, reconnect_interval=cfg.reconnect_interval,
            reconnect_timeout=cfg.reconnect_timeout, tombstone_timeout=cfg.tombstone_timeout,
            user_event_size_limit=cfg.user_event_size_limit,
            query_size_limit=cfg.query_size_limit,
            query_response_size_limit=cfg.query_response_size_limit,
            disable_name_resolution=cfg.disable_name_resolution)
        try:
            return Serf(serf_cfg, ml, self.scheduler, random.Random())
        except SerfError as exc:
            raise AgentError(f"Error creating Serf: {exc}") from exc

    async def start(self) -> None:
        log.info("agent: Serf agent starting")
        self._resolve_addresses()
        # serf's order: tags file, keyring file ("Failed to setup"), then Serf's own checks.
        problem = first_problem(self.config, "create")
        if problem is not None:
            raise CreateError(str(problem))
        self._load_tags_file()
        self._load_keyring()
        problem = first_problem(self.config, "serf")  # includes the -encrypt key's size
        if problem is not None:
            raise AgentError(f"Error creating Serf: {problem}")
        if self.config.encrypt_key and self.keyring is None:
            self.keyring = security.Keyring([security.parse_key_b64(self.config.encrypt_key)])
        self.serf = self._build_serf()
        host, port = self.bind_addr
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.tcp_server = await asyncio.start_server(self._on_stream, host, port,
                                                         family=family, reuse_address=True)
        except OSError as exc:
            raise AgentError(
                f"Error creating Serf: Failed to create memberlist: Could not set up network "
                f"transport: failed to obtain an address: Failed to start TCP listener on "
                f"\"{host}\" port {port}: listen tcp {join_host_port(host, port)}: bind: "
                f"{errno_text(exc)}") from exc
        if port == 0:
            port = self.tcp_server.sockets[0].getsockname()[1]
            self.bind_addr = (host, port)
            if self.advertise[1] == 0:
                self.advertise = (self.advertise[0], port)
                self.serf.memberlist.config.advertise_port = port
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * 1024 * 1024)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            self.tcp_server.close()
            raise AgentError(
                f"Error creating Serf: Failed to create memberlist: Could not set up network "
                f"transport: failed to obtain an address: Failed to start UDP listener on "
                f"\"{host}\" port {port}: listen udp {join_host_port(host, port)}: bind: "
                f"{errno_text(exc)}") from exc
        self.udp, _ = await self.loop.create_datagram_endpoint(lambda: _UDP(self), sock=sock)
        self._udp_sock = sock
        self.handlers.load(self.config.event_handlers)
        if self.config.snapshot_path:
            from pyserf.agent.snapshot_file import SnapshotError, SnapshotFile

            try:
                self.snapshot = SnapshotFile(self.config.snapshot_path,
                                             self.config.rejoin_after_leave)
            except SnapshotError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError):
                    path = self.config.snapshot_path
                    raise AgentError("Error creating Serf: Failed to setup snapshot: failed to "
                                     f"open snapshot: {path_error('open', path, cause)}"
                                     ) from exc
                raise AgentError(str(exc)) from exc
        self.serf.start(self.loop.time())
        if self.config.hosts_file:  # keeps a block of members in a hosts file (pyserf extension)
            from pyserf.agent.hosts_file import attach

            self.hosts_file = attach(self)
        if self.snapshot is not None:
            state = self.snapshot.state
            self.serf.restore_clocks(state.clock, state.event_clock, state.query_clock)
        self.pump()

    # -- the pump: drain machine output, arm the timer ----------------------------------------

    def pump(self) -> None:
        serf = self.serf
        if serf is None:
            return
        for action in serf.actions():
            if isinstance(action, SendPacket):
                # asyncio closes a datagram transport for good when sendto raises anything
                # but OSError (a port of 70000 raises OverflowError): the machine emits
                # packets only from Memberlist._raw_send, which refuses ports outside
                # 1..65535, and addresses are IPs it decoded or was configured with.
                if self.udp is not None:
                    self.udp.sendto(action.data, action.addr)
            elif isinstance(action, OpenStream):
                self.spawn(self._run_stream(action))
        events = serf.events()
        if events:
            now = self.loop.time()
            for event in events:
                if isinstance(event, OPERATION_RESULTS):
                    waiting = self._operations.pop(event.handle, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(event)
                    continue
                if isinstance(event, QUERY_RESULTS):
                    self._query_answer(event)
                    continue
                if isinstance(event, KeyringChanged):
                    self.save_keyring()
                    continue
                try:
                    if self.snapshot is not None:
                        self.snapshot.write(self.snapshot.recorder.on_event(event))
                    self.pipeline.feed(event, now)
                except Exception:
                    # One event that trips a bug must not stop the pump for every other.
                    log.exception("agent: internal error delivering an event")
        if self.snapshot is not None:
            self.snapshot.write(self.snapshot.recorder.on_clock(serf.clock.time))
        wake = serf.get_timer()
        if wake != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = None if wake is None else self.loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._drain_udp()
        try:
            self.serf.handle_timer(self.loop.time())
        except Exception:
            log.exception("agent: internal error in a timer callback")
        self.pump()

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

    def spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self, event: Any) -> None:
        """Deliver a (coalesced) event to handler scripts and RPC stream listeners."""
        if isinstance(event, ShutdownRequested):
            log.error("agent: shutting down: %s", event.reason)
            self.exit_code = 1
            self.spawn(self.shutdown())
            return
        if isinstance(event, MemberEvent):
            log.info("agent: Received event: %s", event.type)
        elif isinstance(event, UserEventReceived):
            log.info("agent: Received event: user-event: %s", event.name)
        elif isinstance(event, QueryReceived):
            log.info("agent: Received event: query: %s", event.name)
        if isinstance(event, (MemberEvent, UserEventReceived, QueryReceived)):
            self.handlers.dispatch(event)
        for listener in list(self.event_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("agent: event listener failed")

    # -- network input --------------------------------------------------------------------

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

    # -- operations (used by RPC and start-up) ---------------------------------------------

    async def resolve_join_targets(self, addresses: list[str]
                                   ) -> tuple[list[tuple[str, tuple[str, int]]], list[str]]:
        targets: list[tuple[str, tuple[str, int]]] = []
        errors: list[str] = []
        port = self.bind_addr[1]
        for text in addresses:
            try:
                name, host, p = join_parts(text, port)
            except ValueError as exc:
                errors.append(f"Failed to resolve {text}: {exc}")
                continue
            try:
                targets.append((name, (netutil.parse_ip(host, "join"), p)))
                continue
            except netutil.AddressError:
                pass
            try:
                infos = await self.loop.getaddrinfo(host, p, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):  # "a..b" fails IDNA encoding
                errors.append(f"Failed to resolve {text}: {lookup_error(host)}")
                continue
            seen = set()
            for info in infos:
                ip = info[4][0]
                if ip not in seen:
                    seen.add(ip)
                    targets.append((name, (ip, p)))
        return targets, errors

    async def join(self, addresses: list[str], replay: bool, *, logged: bool = True
                   ) -> tuple[int, str | None]:
        """Join via the given addresses; returns (nodes contacted, error text or None).
        ``logged``: serf's agent logs its joins; its snapshot re-join is serf's own, unlogged."""
        if logged:
            log.info("agent: joining: [%s] replay: %s", " ".join(addresses), str(replay).lower())
        targets, errors = await self.resolve_join_targets(addresses)
        handle = self.serf.join(targets, not replay, self.loop.time())
        outcome = (await self._outcome(handle)).outcome
        if outcome.contacted:
            if logged:
                log.info("agent: joined: %d nodes", outcome.contacted)
            return outcome.contacted, None
        errors.extend(outcome.errors)
        if not errors:
            return 0, None
        error = multierror(errors)
        if logged:
            log.warning("agent: error joining: %s", error)
        return 0, error

    async def _outcome(self, handle: Handle) -> Any:
        """Wait for the event that reports the outcome of the operation behind ``handle``."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self._operations[handle] = future
        self.pump()
        return await future

    async def rejoin_previous(self) -> None:
        """After a restart, try the members the snapshot remembers, one at a time."""
        if self.snapshot is None:
            return
        previous = [(n, a) for n, a in self.snapshot.state.alive.items()
                    if n != self.config.node_name]
        random.shuffle(previous)
        for name, addr in previous:
            log.info("agent: Attempting re-join to previously known node: %s: %s", name, addr)
            # Not an ignore-old join: the event clock restored from the snapshot already skips
            # what was seen, and events sent while this agent was down are delivered (serf).
            num, _ = await self.join([f"{name}/{addr}"], replay=True, logged=False)
            if num:
                log.info("agent: Re-joined to previously known node: %s: %s", name, addr)
                return
        if previous:
            log.warning("agent: Failed to re-join any previously known node")

    async def leave(self) -> str | None:
        log.info("agent: requesting graceful leave from Serf")
        self.leaving = True
        if self.snapshot is not None:
            self.snapshot.write(["leave\n"])
        return (await self._outcome(self.serf.leave(self.loop.time()))).error

    async def force_leave(self, node: str, prune: bool) -> str | None:
        log.info("agent: Force leaving node: %s", node)
        return (await self._outcome(self.serf.force_leave(node, prune, self.loop.time()))).error

    async def set_tags(self, tags: dict[str, str]) -> str | None:
        error = (await self._outcome(self.serf.set_tags(tags, self.loop.time()))).error
        self._save_tags()
        return error

    def _load_tags_file(self) -> None:
        path = self.config.tags_file
        if not path or not os.path.exists(path):
            return
        tags = self._read_json(path, "tags", "map[string]string") or {}
        self.config.tags = tags
        log.info("agent: Restored %d tag(s) from %s", len(tags), path)

    def _save_tags(self) -> None:
        """Persist the current tags (0600) when a tags file is configured."""
        path = self.config.tags_file
        if not path:
            return
        import json

        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.serf.config.tags, fh, indent=2)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("agent: Failed to write tags file %s: %s", path, exc)

    def start_query(self, name: str, payload: bytes, *, on_ack: Callable[[str, float], None],
                    on_response: Callable[[str, bytes, float], None],
                    on_done: Callable[[float], None], **options: Any) -> RunningQuery:
        """Start a query (``options``: Serf.query's filters, ack, relay, timeout,
        finish_early); its acks, responses and end go to the callbacks from the pump, until
        the returned query is closed. SerfError when serf refuses it."""
        handle = self.serf.query(name, payload, self.loop.time(), **options)
        running = self._queries[handle] = RunningQuery(on_ack, on_response, on_done)
        return running

    def _query_answer(self, event: Any) -> None:
        running = self._queries.get(event.handle)
        if running is None:
            return
        if isinstance(event, QueryFinished):
            del self._queries[event.handle]
        if running.closed:
            return
        if isinstance(event, QueryAckReceived):
            running.on_ack(event.node, event.at)
        elif isinstance(event, QueryResponseReceived):
            running.on_response(event.node, event.payload, event.at)
        else:
            running.on_done(event.at)

    async def key_operation(self, name: str, key: bytes) -> internal_queries.KeyOperation:
        """Run a cluster-wide key query and gather every node's answer (``serf keys``)."""
        handle = self.serf.key_operation(name, key, self.loop.time())
        return (await self._outcome(handle)).result

    def save_keyring(self) -> None:
        """Rewrite the keyring file (0600) after a key query changed the keyring."""
        path = self.config.keyring_file
        if not path or self.keyring is None:
            return
        import json

        keys = [base64.b64encode(k).decode() for k in self.keyring.keys]
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(keys, fh, indent=2)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("agent: Failed to write keyring file %s: %s", path, exc)

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.serf.user_event(name, payload, coalesce, self.loop.time())
        self.pump()

    # -- the rest of pyserf.agent.api.AgentAPI (what the HTTP listener uses) -----------------

    def members(self) -> list:
        return self.serf.member_list()

    def local_member(self) -> Any:
        return self.serf.local_member()

    def local_tags(self) -> dict[str, str]:
        return dict(self.serf.config.tags)

    def stop(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.spawn(self.shutdown())

    def coordinate(self, node: str) -> dict | None:
        coord = self.serf.coordinate_cache.get(node)
        return None if coord is None else coord.to_wire()

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        self.event_listeners.append(listener)
        return lambda: listener in self.event_listeners and self.event_listeners.remove(listener)

    def query(self, name: str, payload: bytes, *, filter_nodes: list[str],
              filter_tags: dict[str, str], request_ack: bool, relay_factor: int,
              timeout: float, on_ack: Callable[[str], None],
              on_response: Callable[[str, bytes], None], on_done: Callable[[], None]) -> Any:
        """A query that ends once every member it reaches has answered (or at its timeout)."""
        collector = self.start_query(
            name, payload, filter_nodes=filter_nodes, filter_tags=filter_tags,
            request_ack=request_ack, relay_factor=relay_factor, timeout=timeout,
            finish_early=True, on_ack=lambda node, when: on_ack(node),
            on_response=lambda node, data, when: on_response(node, data),
            on_done=lambda when: on_done())
        self.pump()
        return collector

    async def shutdown(self) -> None:
        discovery = getattr(self, "discovery", None)  # set by _serve when discover is set
        if discovery is not None:
            await discovery.stop()
        if self.serf is not None and self.serf.state.name != "SHUTDOWN":
            log.info("agent: requesting serf shutdown")
            self.serf.shutdown()
        if self._timer is not None:
            self._timer.cancel()
        if self.udp is not None:
            self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        if self.rpc is not None:
            await self.rpc.close()
        if self.http is not None:
            await self.http.close()
        await self.handlers.close()
        if self.leaving and getattr(self, "hosts_file", None) is not None:
            self.hosts_file.remove()  # a graceful leave takes this node's block away
        if self.snapshot is not None:
            self.snapshot.close()
        for task in list(self._tasks):
            task.cancel()
        log.info("agent: shutdown complete")
        self.shutdown_event.set()

    def stats(self) -> dict[str, dict[str, str]]:
        import platform

        return {
            "agent": {"name": self.config.node_name},
            "runtime": {"os": sys.platform, "arch": _arch(platform.machine()),
                        "version": f"python{platform.python_version()}",
                        "max_procs": str(os.cpu_count() or 1),
                        "goroutines": str(len(self._tasks) + 1),
                        "cpu_count": str(os.cpu_count() or 1)},
            "serf": self.serf.stats(),
            "tags": dict(self.serf.config.tags),
            "event_handlers": self.handlers.describe(),
        }


def _resolve_host(host: str, what: str) -> str:
    """An IP literal as is, or a name resolved the way Go's resolver would (serf accepts
    host names for bind and advertise); a failure reads like Go's lookup error."""
    try:
        return netutil.parse_ip(host, what)
    except netutil.AddressError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SetupError(f"{what}: {lookup_error(host)}") from exc
    # Go's resolver prefers an IPv4 address when a name has both.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def rpc_listen_address(text: str) -> tuple[str, int]:
    """Go's net.Listen("tcp", text) rules: a port is required (a number or a service name);
    errors read as Go's."""
    try:
        host, port = split_host_port(text)
        return host, parse_port(port)
    except AddrError as exc:
        raise netutil.AddressError(f"listen tcp: {exc}") from None


def _arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386"}.get(machine, machine)


# ---------------------------------------------------------------------------------------------
# the agent command


def _print(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _banner(agent: Agent) -> None:
    cfg = agent.config
    rows = [("Node name", cfg.node_name), ("Bind addr", join_host_port(*agent.bind_addr))]
    if cfg.advertise:
        rows.append(("Advertise addr", join_host_port(*agent.advertise)))
    rows += [("RPC addr", cfg.rpc_addr), ("Encrypted", str(agent.keyring is not None).lower()),
             ("Snapshot", str(bool(cfg.snapshot_path)).lower()), ("Profile", cfg.profile)]
    if cfg.discover:
        rows.append(("mDNS cluster", cfg.discover))
    rows.append(("Message Compression Enabled", str(cfg.enable_compression).lower()))
    _print("==> Serf agent running!")
    for key, value in rows:
        _print(f"{key:>31}: '{value}'" if key not in ("Encrypted", "Snapshot",
                                                        "Message Compression Enabled",
                                                        "Profile", "mDNS cluster")
               else f"{key:>31}: {value}")
    _print()
    _print("==> Log data will now stream in as it occurs:")
    _print()


async def _serve(config: AgentConfig, sources: Any) -> int:
    from pyserf.agent.rpc import RPCServer

    # Take signals from the very start: a reload (SIGHUP) that arrives while we are still
    # starting must not kill the agent, and a Ctrl-C then still means a graceful leave.
    signals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    level = logs.parse_level(config.log_level)
    handler = logs.install(level)
    if config.enable_syslog:
        try:
            handler.syslog = logs.syslog_handler(config.syslog_facility, level)
        except ValueError as exc:
            _print(f"==> {exc}")
            return 1
        logging.getLogger("pyserf").addHandler(handler.syslog)
    agent = Agent(config, handler)
    # Like serf, a start-up failure prints its "==>" lines only: the log held back until the
    # agent runs is dropped, never shown (no handler.open_gate() on these paths).
    try:
        agent._resolve_addresses()
        problem = first_problem(config, "setup")
        if problem is not None:
            raise SetupError(str(problem))
    except SetupError as exc:
        _print(f"==> {exc}")
        return 1
    if config.interface and netutil.split_host_port(config.bind or "0.0.0.0", 0)[0] in (
            "", "0.0.0.0"):  # serf says which address of the interface it took
        _print(f"==> Using interface '{config.interface}' address '{agent.bind_addr[0]}'")
    _print("==> Starting Serf agent...")
    try:
        await agent.start()
    except CreateError as exc:
        _print(f"==> Failed to setup the Serf agent: {exc}")
        return 1
    except AgentError as exc:
        _print(f"==> Failed to start the Serf agent: {exc}")
        return 1
    try:
        host, port = rpc_listen_address(config.rpc_addr)
        agent.rpc = RPCServer(agent, config.rpc_auth)
        await agent.rpc.start(host, port)
    except (OSError, netutil.AddressError) as exc:
        if isinstance(exc, socket.gaierror):
            exc = f"listen tcp: {lookup_error(host)}"
        elif isinstance(exc, OSError) and exc.errno:
            exc = f"listen tcp {config.rpc_addr}: bind: {errno_text(exc)}"
        _print(f"==> Error starting RPC listener: {exc}")
        await agent.shutdown()
        return 1
    _print("==> Starting Serf agent RPC...")
    if config.http_addr:
        from pyserf.http.server import start_listener  # aiohttp: only when enabled

        try:
            agent.http = await start_listener(agent, config)
        except OSError as exc:  # ssl.SSLError is an OSError
            _print(f"==> Error starting HTTP listener on {config.http_addr}: {exc}")
            await agent.shutdown()
            return 1
        _print(f"==> Starting HTTP API on {config.http_addr}...")
    if config.discover:
        from pyserf.agent.discovery import Discovery, DiscoveryError

        agent.discovery = Discovery(agent, config.discover, config.interface,
                                    config.replay_on_join)
        try:
            await agent.discovery.start()
        except DiscoveryError as exc:
            _print(f"==> Error starting mDNS listener: {exc}")
            await agent.shutdown()
            return 1
    if config.start_join:
        _print(f"==> Joining cluster...(replay: {str(config.replay_on_join).lower()})")
        num, error = await agent.join(list(config.start_join), config.replay_on_join)
        if error:
            _print(f"==> {error.rstrip()}")
            await agent.shutdown()
            return 1
        _print(f"    Join completed. Synced with {num} initial agents")
    _banner(agent)
    handler.open_gate()
    if config.retry_join:
        agent.spawn(_retry_join(agent, config))
    agent.spawn(agent.rejoin_previous())
    return await _wait_for_exit(agent, config, sources, signals)


async def _retry_join(agent: Agent, config: AgentConfig) -> None:
    attempt = 0
    interval = max(1.0, config.retry_interval)
    while not agent.shutdown_event.is_set():
        num, error = await agent.join(list(config.retry_join), config.replay_on_join)
        if num:
            log.info("agent: Join completed. Synced with %d initial agents", num)
            return
        attempt += 1
        if config.retry_max_attempts > 0 and attempt > config.retry_max_attempts:
            log.error("agent: maximum retry join attempts made, exiting")
            agent.exit_code = 1
            agent.shutdown_event.set()
            return
        log.warning("agent: Join failed: %s, retrying in %s", (error or "").strip(),
                    format_duration(interval))
        await asyncio.sleep(interval)


async def _wait_for_exit(agent: Agent, config: AgentConfig, sources: Any,
                         signals: asyncio.Queue[int]) -> int:
    while True:
        sig_task = asyncio.ensure_future(signals.get())
        stop_task = asyncio.ensure_future(agent.shutdown_event.wait())
        done, _ = await asyncio.wait({sig_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if stop_task in done:
            sig_task.cancel()
            return agent.exit_code
        stop_task.cancel()
        sig = sig_task.result()
        if sig == signal.SIGHUP:
            _print("==> Caught signal: hangup")
            _print("==> Reloading configuration...")
            await _reload(agent, sources)
            continue
        name = "interrupt" if sig == signal.SIGINT else "terminated"
        _print(f"==> Caught signal: {name}")
        graceful = (sig == signal.SIGINT and not config.skip_leave_on_interrupt) or (
            sig == signal.SIGTERM and config.leave_on_terminate)
        if not graceful:
            await agent.shutdown()
            return 1
        _print("==> Gracefully shutting down agent...")
        leave = asyncio.ensure_future(agent.leave())
        second = asyncio.ensure_future(signals.get())
        done, _ = await asyncio.wait({leave, second}, timeout=GRACEFUL_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        second.cancel()
        code = 0
        if leave not in done:
            leave.cancel()
            code = 1
        elif leave.result():
            log.error("agent: Error leaving: %s", leave.result())
            code = 1
        await agent.shutdown()
        return code


async def _reload(agent: Agent, sources: Any) -> None:
    """SIGHUP, as serf's handleReload: a config that does not load is reported and the agent
    carries on unchanged; a bad log level alone keeps the current level and applies the rest."""
    if sources is None:
        return
    try:
        new = sources.load_unvalidated()
        problems = [p for p in sources.problems(new) if p.key != "log_level"]
        if problems:
            raise problems[0]
    except Exception as exc:  # a bad file on reload must not stop a running agent
        _print(f"==> {exc}")
        _print("==> Failed to reload configs")
        return
    try:
        level = logs.parse_level(new.log_level)
        if agent.log_handler is not None:
            agent.log_handler.set_console_level(level)
        agent.config.log_level = new.log_level
    except ValueError:
        _print(f"==> Invalid log level: {new.log_level.upper()}. "
               f"Valid log levels are: [{' '.join(LOG_LEVELS)}]")
    agent.handlers.load(new.event_handlers)
    agent.handlers.timeout = new.handler_timeout
    agent.config.event_handlers = list(new.event_handlers)
    if dict(new.tags) != dict(agent.serf.config.tags):
        try:
            error = await agent.set_tags(dict(new.tags))
            if error:
                _print(f"==> Failed to update tags: {error}")
        except SerfError as exc:
            _print(f"==> Failed to update tags: {exc}")


def _raise_open_file_limit() -> None:
    """Lift the soft descriptor limit to the hard one, as Go's runtime does since 1.19 (so a
    serf agent has it): capped RPC clients plus inbound streams can pass the default 1,024."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError) as exc:
        log.debug("agent: could not raise the open file limit: %s", exc)


def run_agent(config: AgentConfig, sources: Any = None) -> int:
    """Run an agent until it is told to stop; returns the process exit status."""
    _raise_open_file_limit()
    try:
        return asyncio.run(_serve(config, sources))
    except KeyboardInterrupt:
        return 1


def key_b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
