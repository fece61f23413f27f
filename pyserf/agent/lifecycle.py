"""The ``serf agent`` command around an :class:`Agent`: start-up in serf's order with its
``==>`` lines and exit codes, the banner, retry-join, signals (leave, reload) and exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from pyserf.agent import logs, netutil
from pyserf.agent.agent import Agent
from pyserf.agent.config import LOG_LEVELS
from pyserf.agent.config_validate import first_problem
from pyserf.agent.errors import AgentError, CreateError, SetupError
from pyserf.gocompat.durations import format_duration
from pyserf.gocompat.errno import errno_text
from pyserf.gocompat.hostport import (
    AddrError,
    join_host_port,
    lookup_error,
    parse_port,
    split_host_port,
)
from pyserf.serf.config import SerfError

if TYPE_CHECKING:
    from pyserf.agent.config import AgentConfig

log = logging.getLogger("pyserf.agent")

GRACEFUL_TIMEOUT = 3.0


def rpc_listen_address(text: str) -> tuple[str, int]:
    """Go's net.Listen("tcp", text) rules: a port is required (a number or a service name);
    errors read as Go's."""
    try:
        host, port = split_host_port(text)
        return host, parse_port(port)
    except AddrError as exc:
        raise netutil.AddressError(f"listen tcp: {exc}") from None


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
    # Like serf's agent, every agent counts in memory and dumps that on SIGUSR1 (statsd and
    # statsite only when configured); serf sets this up before the agent, and a bad sink
    # address ends the start there.
    from pyserf.telemetry import SinkAddressError
    from pyserf.telemetry import start as start_telemetry

    try:
        telemetry = start_telemetry(config, loop)
    except SinkAddressError as exc:
        _print(f"==> {exc}")
        return 1
    level = logs.parse_level(config.log_level)
    logs.lighten_records()
    handler = logs.install(level)
    if config.enable_syslog:
        try:
            handler.syslog = logs.syslog_handler(config.syslog_facility, level)
        except ValueError as exc:
            _print(f"==> {exc}")
            return 1
        logging.getLogger("pyserf").addHandler(handler.syslog)
    agent = Agent(config, handler)
    agent.telemetry = telemetry
    agent.metrics = agent.handlers.metrics = telemetry.recorder
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
        agent.rpc.metrics = agent.metrics
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
    # What start-up built (modules, classes, config) lives as long as the agent: out of the
    # collector's reach, a full collection walks only the agent's own state. Merging a
    # 200-member push-pull allocates enough to trigger collections mid-merge.
    gc.freeze()
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
    if dict(new.tags) != agent.local_tags():
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

