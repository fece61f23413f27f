"""The agent: the sans-I/O serf machine with its sockets, timer, event handlers and files.

:class:`Agent` builds the machine from the configuration, runs the pump that moves its output
to the sockets and its events to handlers, RPC streams and the snapshot, and offers the
operations RPC, HTTP, handlers and discovery use (:class:`pyserf.agent.api.AgentAPI`). The
network side lives in :mod:`pyserf.agent.transport`, the files in :mod:`pyserf.agent.persistence`,
and the ``serf agent`` command around it in :mod:`pyserf.agent.lifecycle`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyserf.agent import logs, netutil, persistence
from pyserf.agent.config_validate import first_problem
from pyserf.agent.errors import AgentError, CreateError, SetupError, multierror
from pyserf.agent.handlers import HandlerManager
from pyserf.agent.transport import (
    MAX_INBOUND_BUFFERED,
    AgentTransport,
    StreamBudget,
    UDPProtocol,
)
from pyserf.gocompat.errno import errno_text, path_error
from pyserf.gocompat.hostport import join_host_port, join_parts, lookup_error
from pyserf.memberlist import lzw, security
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.memberlist.profiles import PROFILES
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import MemberlistConfig, OpenStream, SendPacket
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
    from pyserf.serf.members import Member

log = logging.getLogger("pyserf.agent")


@dataclass
class RunningQuery:
    """A query the agent started: where its answers go. Setting ``closed`` stops them."""

    on_ack: Callable[[str, float], None]
    on_response: Callable[[str, bytes, float], None]
    on_done: Callable[[float], None]
    closed: bool = False



class Agent(AgentTransport):
    """One serf agent: the machine, its sockets and timer, and the operations on it."""

    def __init__(self, config: AgentConfig, log_handler: logs.AgentLogHandler | None = None
                 ) -> None:
        self.config = config
        self.log_handler = log_handler
        self.loop = asyncio.get_running_loop()
        self.scheduler = Scheduler()
        self._serf: Serf | None = None  # built by start(); see the serf property
        self.udp: asyncio.DatagramTransport | None = None
        self._udp_sock: socket.socket | None = None
        self.tcp_server: asyncio.Server | None = None
        self.rpc = None
        self.http = None  # pyserf.http.server.HTTPListener when http_addr is set
        # pyserf.telemetry.Telemetry, which `pyserf agent` always starts (as serf's in-memory
        # sink); its recorder is then self.metrics (the machines count into it), else a no-op.
        self.telemetry: Any = None
        self.metrics: Metrics = NULL_METRICS
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
        self._inbound_budget = StreamBudget(MAX_INBOUND_BUFFERED)

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


    @property
    def serf(self) -> Serf:
        """The serf machine. Only the agent and its transport drive it: operator surfaces
        go through :class:`pyserf.agent.api.AgentAPI`."""
        if self._serf is None:
            raise AgentError("the agent has not started")
        return self._serf

    def _load_keyring(self) -> None:
        if self.config.keyring_file:
            self.keyring = persistence.load_keyring(self.config.keyring_file)

    def _load_tags_file(self) -> None:
        path = self.config.tags_file
        tags = persistence.load_tags(path) if path else None
        if tags is not None:
            self.config.tags = tags

    def _save_tags(self) -> None:
        """Persist the current tags when a tags file is configured."""
        if self.config.tags_file:
            persistence.save_tags(self.config.tags_file, self.serf.config.tags)

    def save_keyring(self) -> None:
        """Rewrite the keyring file after a key query changed the keyring."""
        if self.config.keyring_file and self.keyring is not None:
            persistence.save_keyring(self.config.keyring_file, self.keyring)

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
        self._serf = self._build_serf()
        if self.config.enable_compression and not lzw.NATIVE:
            # The build skips _lzw.c without a C compiler; the agent still works, at a cost.
            log.warning("agent: LZW runs in pure Python (the compiled codec is not built or "
                        "PYSERF_PURE_LZW is set): join storms cost several times the CPU")
        self._serf.use_metrics(self.metrics)
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
        self.udp, _ = await self.loop.create_datagram_endpoint(lambda: UDPProtocol(self), sock=sock)
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
            self.snapshot.metrics = self.metrics
        self.serf.start(self.loop.time())
        if self.config.hosts_file:  # keeps a block of members in a hosts file (pyserf extension)
            from pyserf.agent.hosts_file import attach

            self.hosts_file = attach(self, self.config.hosts_file)
        if self.snapshot is not None:
            state = self.snapshot.state
            self.serf.restore_clocks(state.clock, state.event_clock, state.query_clock)
        self.pump()

    # -- the pump: drain machine output, arm the timer ----------------------------------------

    def pump(self) -> None:
        serf = self._serf
        if serf is None:
            return
        actions, events = serf.actions(), serf.events()
        if any(isinstance(event, KeyringChanged) for event in events):
            # serf writes the keyring file before it answers the key query that changed the
            # keyring: whoever gets the answer may read the file at once.
            self.save_keyring()
        for action in actions:
            if isinstance(action, SendPacket):
                # asyncio closes a datagram transport for good when sendto raises anything
                # but OSError (a port of 70000 raises OverflowError): the machine emits
                # packets only from Memberlist._raw_send, which refuses ports outside
                # 1..65535, and addresses are IPs it decoded or was configured with.
                if self.udp is not None:
                    self.udp.sendto(action.data, action.addr)
            elif isinstance(action, OpenStream):
                self.spawn(self._run_stream(action))
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
                    continue  # saved above
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
        if self.telemetry is not None:
            self.telemetry.on_wake()  # the recorder's clock rides the protocol's wake-ups
        self._drain_udp()
        try:
            self.serf.handle_timer(self.loop.time())
        except Exception:
            log.exception("agent: internal error in a timer callback")
        self.pump()


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
                ip = str(info[4][0])
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


    def start_query(self, name: str, payload: bytes, *, on_ack: Callable[[str, float], None],
                    on_response: Callable[[str, bytes, float], None],
                    on_done: Callable[[float], None], **options: Any) -> RunningQuery:
        """Start a query (``options``: Serf.query's filters, ack, relay, timeout,
        finish_early); its acks, responses and end go to the callbacks from the pump, until
        the returned query is closed. SerfError when serf refuses it."""
        handle = self.serf.query(name, payload, self.loop.time(), **options)
        running = self._queries[handle] = RunningQuery(on_ack, on_response, on_done)
        self.pump()
        return running

    def respond(self, query: QueryReceived, payload: bytes) -> None:
        self.serf.respond(query, payload, self.loop.time())
        self.pump()

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


    def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        self.serf.user_event(name, payload, coalesce, self.loop.time())
        self.pump()

    # -- the rest of pyserf.agent.api.AgentAPI (what the HTTP listener uses) -----------------

    @property
    def node_name(self) -> str:
        return self.config.node_name

    def members(self) -> list[Member]:
        return self.serf.member_list()

    def local_member(self) -> Member:
        return self.serf.local_member()

    def local_tags(self) -> dict[str, str]:
        return dict(self.serf.config.tags)

    def stop(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.spawn(self.shutdown())

    def coordinate(self, node: str) -> dict[str, Any] | None:
        coord = self.serf.coordinate_cache.get(node)
        return None if coord is None else coord.to_wire()

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        self.event_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.event_listeners:
                self.event_listeners.remove(listener)

        return unsubscribe

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
        return collector

    async def shutdown(self) -> None:
        discovery = getattr(self, "discovery", None)  # set by _serve when discover is set
        if discovery is not None:
            await discovery.stop()
        if self._serf is not None and self._serf.state.name != "SHUTDOWN":
            log.info("agent: requesting serf shutdown")
            self._serf.shutdown()
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
        if self.telemetry is not None:
            self.telemetry.close()
        for task in list(self._tasks):
            task.cancel()
        log.info("agent: shutdown complete")
        self.shutdown_event.set()

    def stats(self) -> dict[str, dict[str, str]]:
        # Not the platform module: importing and first using it costs ~1.3 ms of CPU (more
        # with cold caches), paid by each of 200 agents a monitor polls in a join storm.
        version = ".".join(map(str, sys.version_info[:3]))
        return {
            "agent": {"name": self.config.node_name},
            "runtime": {"os": sys.platform, "arch": _arch(os.uname().machine),
                        "version": f"python{version}",
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



def _arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386"}.get(machine, machine)

