"""Serf-style log lines (``2026/11/21 22:23:16 [INFO] serf: ...``), level filtering, and the
ring of recent lines that RPC ``monitor`` replays to new subscribers."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable

from pyserf.memberlist.drops import RateLimit

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {"TRACE": TRACE, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
          "WARN": logging.WARNING, "ERR": logging.ERROR}
_NAMES = {TRACE: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO",
          logging.WARNING: "WARN", logging.ERROR: "ERR", logging.CRITICAL: "ERR"}
VALID_LEVELS = "[TRACE DEBUG INFO WARN ERR]"


def parse_level(name: str) -> int:
    level = LEVELS.get(name.strip().upper())
    if level is None:
        raise ValueError(f"Unknown log level: {name}")
    return level


# The last second formatted and its text: a join storm logs hundreds of lines a second.
_stamp: tuple[int, str] = (-1, "")


def format_line(record: logging.LogRecord) -> str:
    global _stamp
    second = int(record.created)
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(second)))
    return f"{_stamp[1]} [{_NAMES.get(record.levelno, 'INFO')}] {record.getMessage()}"


class AgentLogHandler(logging.Handler):
    """Writes filtered lines to the console and fans every line out to monitors."""

    def __init__(self, level: int, stream=None, ring_size: int = 512) -> None:
        super().__init__(TRACE)
        self.console_level = level
        self.stream = stream or sys.stdout
        self.ring: deque[tuple[int, str]] = deque(maxlen=ring_size)
        self.subscribers: list[tuple[int, Callable[[str], None]]] = []
        self.syslog: logging.Handler | None = None
        # Like serf's log gate: hold console lines until the start-up banner is printed.
        self._gated: list[str] | None = []
        # Set while lines are handed to monitors: a line logged by a monitor callback (say,
        # "Dropping logs to ...") goes to the ring and console but is not fanned out again,
        # so a subscriber can never recurse into itself.
        self._fanning_out = False
        # The loop whose next turn flushes the console, while one is scheduled.
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = format_line(record)
        except Exception:  # a bad format string must never take the agent down
            line = f"[ERR] unformattable log record: {record.msg!r}"
        self.ring.append((record.levelno, line))
        if record.levelno >= self.console_level:
            if self._gated is not None:
                self._gated.append(line)
            else:
                self._write(line)
        if self._fanning_out:
            return
        self._fanning_out = True
        try:
            for level, callback in list(self.subscribers):
                if record.levelno >= level:
                    callback(line)
        finally:
            self._fanning_out = False

    def _write(self, line: str) -> None:
        try:
            self.stream.write("    " + line + "\n")
        except (OSError, ValueError):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop running (start-up, shutdown): flush now
            self.flush()
            return
        # One flush per turn of the event loop, not per line: a joiner logs a line per member
        # learned (200 in one push-pull at N=200), each flush a write(2). Keyed by the loop,
        # so a flush a closed loop never ran does not hold back the lines after it.
        if self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_loop = None
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def open_gate(self) -> None:
        """Flush the lines held back during start-up and write directly from now on."""
        held, self._gated = self._gated or [], None
        for line in held:
            self._write(line)

    def subscribe(self, level: int, callback: Callable[[str], None]) -> None:
        for lvl, line in list(self.ring):
            if lvl >= level:
                callback(line)
        self.subscribers.append((level, callback))
        self.refresh_level()

    def unsubscribe(self, callback: Callable[[str], None]) -> None:
        self.subscribers = [(lv, cb) for lv, cb in self.subscribers if cb != callback]
        self.refresh_level()

    def set_console_level(self, level: int) -> None:
        self.console_level = level
        self.refresh_level()

    def refresh_level(self) -> None:
        """Let the logger drop records nobody wants before they are even formatted."""
        wanted = min([self.console_level, *(lv for lv, _ in self.subscribers)])
        if self.syslog is not None:
            self.syslog.setLevel(self.console_level)
        logging.getLogger("pyserf").setLevel(wanted)


class Throttle(RateLimit):
    """A RateLimit on the wall clock, for warnings the shell repeats under a flood (dropped
    lines, refused clients)."""

    __slots__ = ("clock",)

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        super().__init__(interval)
        self.clock = clock

    def allow(self) -> int | None:
        return self.allow_at(self.clock())


def lighten_records() -> None:
    """For the agent's process: no line printed here shows a record's source line, process or
    thread, so logging need not look them up (a stack walk and system calls per record;
    logging's documented switches). Process-wide, hence not part of ``install``."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def install(level: int, stream=None) -> AgentLogHandler:
    handler = AgentLogHandler(level, stream)
    root = logging.getLogger("pyserf")
    root.handlers[:] = [handler]
    root.propagate = False
    handler.refresh_level()
    return handler


def syslog_handler(facility: str, level: int, address: str = "/dev/log") -> logging.Handler:
    """Forward agent log lines to the local syslog (tag ``pyserf``), at their own severity."""
    from logging.handlers import SysLogHandler

    code = SysLogHandler.facility_names.get(facility.lower())
    if code is None:
        raise ValueError(f"Syslog setup failed: invalid syslog facility {facility!r} "
                         f"(syslog_facility: use e.g. LOCAL0-LOCAL7, DAEMON, USER)")
    try:
        handler = SysLogHandler(address=address, facility=code)
    except OSError as exc:
        raise ValueError(f"Syslog setup failed: {exc} (enable_syslog needs {address})") from exc
    handler.ident = "pyserf: "
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    return handler
