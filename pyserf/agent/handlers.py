"""Event handler scripts: Serf's environment and stdin contract, one ordered queue per script.

Each script sees its events in order, but scripts never wait for each other, so a slow
user-event handler cannot delay a query handler (unlike serf, which runs all of them serially).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyserf.agent import logs
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.internal_queries import respond_error

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

OUTPUT_LIMIT = 8 * 1024
SLOW_WARNING = 1.0
# Events waiting per script queue (one for member/user events, one for queries); when a
# queue is full the new event is dropped with a warning naming the script. Serf's agent
# buffers 64 events in front of its one serial handler runner and then stalls the serf
# layer; pyserf never stalls, so it allows 4x that burst per queue before dropping. A queued
# event holds at most a 9 KiB payload (serf's user-event cap), so a full queue is ~2.3 MiB.
HANDLER_QUEUE_LIMIT = 256
# Seconds to wait for a killed script's pipes to close (a grandchild that escaped the
# process group may hold them open) before giving up on its output.
KILL_GRACE = 2.0
_TAG_KEY_UNSAFE = re.compile(r"[^A-Z0-9_]")


def tag_env_name(key: str) -> str:
    return "SERF_TAG_" + _TAG_KEY_UNSAFE.sub("_", key.upper())


def _env_value(value: str) -> str:
    # A NUL cannot be passed in an environment variable; nothing else needs escaping because
    # values are handed to execve directly, never through a shell.
    return value.replace("\x00", "")


def _escape(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n")


def event_stdin(event: Any) -> bytes:
    if isinstance(event, MemberEvent):
        lines = []
        for member in event.members:
            tags = ",".join(f"{k}={v}" for k, v in member.tags.items())
            lines.append(f"{_escape(member.name)}\t{member.addr}\t"
                         f"{_escape(member.tags.get('role', ''))}\t{_escape(tags)}\n")
        return "".join(lines).encode()
    payload = event.payload or b""
    if payload and not payload.endswith(b"\n"):
        payload += b"\n"
    return payload


def event_type_name(event: Any) -> tuple[str, str]:
    """(event type, name) as handler filters see them."""
    if isinstance(event, MemberEvent):
        return event.type, ""
    if isinstance(event, UserEventReceived):
        return "user", event.name
    return "query", event.name


@dataclass
class _Script:
    """One configured handler. Queries get their own queue so that they never wait behind
    this script's member or user events (serf's issue #369: a slow user-event handler made
    queries time out)."""

    spec: str
    filters: list[Any]
    command: str
    queue: asyncio.Queue
    query_queue: asyncio.Queue
    workers: tuple[asyncio.Task, ...] = ()
    dropped: logs.Throttle = field(default_factory=logs.Throttle)

    def wants(self, event_type: str, name: str) -> bool:
        return any(f.matches(event_type, name) for f in self.filters)


class HandlerManager:
    def __init__(self, agent: AgentAPI, timeout: float = 0.0) -> None:
        self.agent = agent
        self.timeout = timeout
        self.scripts: list[_Script] = []
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry sets its recorder

    def load(self, specs: list[str]) -> None:
        """(Re)load handler specs; scripts whose spec is unchanged keep their queue."""
        old = {s.spec: s for s in self.scripts}
        scripts = []
        for spec in specs:
            if spec in old:
                scripts.append(old.pop(spec))
                continue
            from pyserf.agent.event_filter import parse_event_handler_spec

            filters, command = parse_event_handler_spec(spec)
            script = _Script(spec, filters, command, asyncio.Queue(HANDLER_QUEUE_LIMIT),
                             asyncio.Queue(HANDLER_QUEUE_LIMIT))
            script.workers = (self.agent.spawn(self._run(script, script.queue)),
                              self.agent.spawn(self._run(script, script.query_queue)))
            scripts.append(script)
        for gone in old.values():
            # The stop marker lets a removed script finish what is queued; a full queue has
            # no room for it, so that worker is stopped outright.
            for queue, worker in zip((gone.queue, gone.query_queue), gone.workers,
                                     strict=False):
                try:
                    queue.put_nowait(None)
                except asyncio.QueueFull:
                    worker.cancel()
        self.scripts = scripts

    def describe(self) -> dict[str, str]:
        out = {}
        for script in self.scripts:
            for f in script.filters:
                out[f"{f.event}:{f.name or ''}"] = script.command
        return out

    def dispatch(self, event: Any) -> None:
        kind, name = event_type_name(event)
        for script in self.scripts:
            if script.wants(kind, name):
                queue = script.query_queue if kind == "query" else script.queue
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    held = script.dropped.allow()
                    if held is not None:
                        more = f" ({held} more dropped since)" if held else ""
                        log.warning("agent: Dropping %s event for script '%s': %d events "
                                    "already queued%s", kind, script.command,
                                    HANDLER_QUEUE_LIMIT, more)

    async def close(self) -> None:
        for script in self.scripts:
            for worker in script.workers:
                worker.cancel()
        self.scripts = []

    async def _run(self, script: _Script, queue: asyncio.Queue) -> None:
        while True:
            event = await queue.get()
            if event is None:
                return
            started = self.metrics.start()
            try:
                await self._invoke(script, event)
                self.metrics.measure_since("agent.invoke." + script.command, started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("agent: Error invoking script '%s': %s", script.command, exc)

    def _environment(self, event: Any) -> dict[str, str]:
        tags = self.agent.local_tags()
        env = dict(os.environ)
        kind, name = event_type_name(event)
        env["SERF_EVENT"] = kind
        env["SERF_SELF_NAME"] = _env_value(self.agent.node_name)
        env["SERF_SELF_ROLE"] = _env_value(tags.get("role", ""))
        for key, value in tags.items():
            env[tag_env_name(key)] = _env_value(value)
        if isinstance(event, UserEventReceived):
            env["SERF_USER_EVENT"] = _env_value(name)
            env["SERF_USER_LTIME"] = str(event.ltime)
        elif isinstance(event, QueryReceived):
            env["SERF_QUERY_NAME"] = _env_value(name)
            env["SERF_QUERY_LTIME"] = str(event.ltime)
        return env

    async def _invoke(self, script: _Script, event: Any) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script.command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=self._environment(event), start_new_session=True)
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes (PIPE above)
        output = bytearray()
        written = 0  # every byte the script wrote; serf's warning reports this, not the tail

        async def feed() -> None:
            # Timed like the rest of the run: a script that never reads stdin must not
            # block on a payload larger than the pipe buffer for ever.
            try:
                stdin.write(event_stdin(event))
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                stdin.close()

        async def read_output() -> None:
            nonlocal written
            while chunk := await stdout.read(65536):
                written += len(chunk)
                output.extend(chunk)
                del output[: max(0, len(output) - OUTPUT_LIMIT)]

        async def collect() -> None:
            # Feeding and reading at once: a script may write before it reads.
            await asyncio.gather(feed(), read_output())
            await proc.wait()

        collector = asyncio.ensure_future(collect())
        slow_logged = False
        while not collector.done():
            elapsed = loop.time() - started
            wait = SLOW_WARNING - elapsed if not slow_logged else None
            if self.timeout > 0:
                left = self.timeout - elapsed
                wait = left if wait is None else min(wait, left)
            await asyncio.wait({collector}, timeout=wait if wait is None or wait > 0 else 0)
            if collector.done():
                break
            elapsed = loop.time() - started
            if not slow_logged and elapsed >= SLOW_WARNING:
                log.warning("agent: Script '%s' slow, execution exceeding %s", script.command,
                            "1s")
                slow_logged = True
            if self.timeout > 0 and elapsed >= self.timeout:
                log.error("agent: Script '%s' timed out after %.1fs, killing it",
                          script.command, self.timeout)
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                await asyncio.wait({collector}, timeout=KILL_GRACE)
                if not collector.done():
                    # Something outside the process group holds the pipes open. Closing the
                    # subprocess transport drops every pipe (feed() already closed stdin's);
                    # asyncio's Process offers no public handle for that.
                    collector.cancel()
                    proc._transport.close()  # type: ignore[attr-defined]  # noqa: SLF001
                    log.warning("agent: Script '%s' pipes still open %gs after kill; "
                                "abandoning its output", script.command, KILL_GRACE)
                return
        if written > OUTPUT_LIMIT:
            log.warning("agent: Script '%s' generated %d bytes of output, truncated to %d",
                        script.command, written, OUTPUT_LIMIT)
        if output:
            kind, _ = event_type_name(event)
            log.debug("agent: Event '%s' script output: %s", kind,
                      output.decode("utf-8", "replace"))
        if proc.returncode:
            # serf returns the exit error before answering: a failed query handler sends
            # nothing, whatever it printed.
            log.error("agent: Error invoking script '%s': exit status %d", script.command,
                      proc.returncode)
            return
        if isinstance(event, QueryReceived) and output and not event.responded:
            try:
                self.agent.respond(event, bytes(output))
            except Exception as exc:
                log.warning("agent: Failed to respond to query 'query: %s': %s", event.name,
                            respond_error(exc))
