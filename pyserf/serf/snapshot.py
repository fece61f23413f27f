"""Serf's snapshot file: who was alive, the Lamport clocks, and whether we left.

Sans-I/O: ``replay`` parses lines read by the agent; ``Snapshotter`` turns events into lines
for the agent to append. The format is serf's own, so a snapshot written by either works for
both::

    alive: <name> <ip:port>          ([v6]:port for IPv6, as Go's net.TCPAddr prints it)
    not-alive: <name>
    clock: <member clock - 1>
    event-clock: <ltime>
    query-clock: <ltime>
    leave

Member names come from the network, so they are escaped before they reach the file: serf
writes them verbatim, which lets a name holding a newline add lines of its choosing (a peer
named ``x\\nleave`` makes a restarted serf forget the cluster). Each control character (Unicode
category Cc: C0, DEL, C1) is written as ``\\xHH``, and a backslash only when the text after
it would otherwise read as such an escape. Every name serf would write without harm (no
control characters) is therefore written byte for byte as serf writes it, and both agents read
each other's files; the one difference is that a serf-written name containing a literal
``\\xHH`` is read back by pyserf with that sequence decoded. A name that cannot be written
(not encodable as UTF-8, or a line over ``MAX_LINE_BYTES``) and an address that is not an IP
and port are left out of the file with a warning: the member is simply not remembered for
the rejoin after a restart. Replay bounds every number to uint64 and skips, with a warning, any
line it cannot use.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyserf.gocompat.hostport import join_host_port
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived

log = logging.getLogger("pyserf.serf")

MIN_COMPACT_SIZE = 128 * 1024
COMPACT_BYTES_PER_MEMBER = 128 * 2  # serf: snapshotBytesPerNode * snapshotCompactionThreshold

# serf's LamportTime is a uint64 (strconv.ParseUint(s, 10, 64) on replay).
MAX_LTIME = 2**64 - 1
_MAX_LTIME_DIGITS = len(str(MAX_LTIME))
# serf reads lines with no length limit; a line this long cannot have been written by either
# agent for a real member (memberlist's largest UDP packet is 64 KiB, and escaping a name at
# most quadruples it), so longer lines are skipped unread rather than held in memory.
MAX_LINE_BYTES = 256 * 1024
# Replay warns about the first few unusable lines only; a corrupt file of millions of lines
# must not become millions of log lines.
MAX_REPLAY_WARNINGS = 20
_PREVIEW_CHARS = 120

LEAVE_LINE = "leave\n"

_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f-\x9f]|\\(?=x[0-9A-Fa-f]{2})")
_ESCAPED = re.compile(r"\\x([0-9A-Fa-f]{2})")


def escape_name(name: str) -> str:
    """The form of ``name`` written to the file: one line, no separators, reversible."""
    return _NEEDS_ESCAPE.sub(lambda m: f"\\x{ord(m.group()):02x}", name)


def unescape_name(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


def format_addr(ip: str, port: int) -> str | None:
    """``ip:port`` as serf writes it (``[v6]:port``), or None if it is not an IP and port."""
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        return None
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return join_host_port(str(parsed), port)


def valid_addr(text: str) -> bool:
    """Whether ``text`` is an address ``format_addr`` (or serf) could have written."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return False
    elif ":" in host:
        return False
    return format_addr(host, int(port)) is not None


def _preview(line: str) -> str:
    """A log-safe excerpt of an unusable line (no control characters, bounded length)."""
    text = escape_name(line[:_PREVIEW_CHARS])
    return text + "..." if len(line) > _PREVIEW_CHARS else text


def _parse_ltime(value: str) -> int | None:
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_LTIME_DIGITS:
        return None
    number = int(value)
    return number if number <= MAX_LTIME else None


@dataclass
class SnapshotState:
    alive: dict[str, str] = field(default_factory=dict)  # name -> "ip:port"
    clock: int = 0
    event_clock: int = 0
    query_clock: int = 0
    left: bool = False


class _Warnings:
    """Logs the first MAX_REPLAY_WARNINGS problems of one replay and counts the rest."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str, *args: object) -> None:
        self.count += 1
        if self.count <= MAX_REPLAY_WARNINGS:
            log.warning(message, *args)

    def summary(self) -> None:
        if self.count > MAX_REPLAY_WARNINGS:
            log.warning("serf: %d more unusable snapshot lines skipped",
                        self.count - MAX_REPLAY_WARNINGS)


def replay(lines: Iterable[str], rejoin_after_leave: bool = False) -> SnapshotState:
    """Rebuild the state from the file's lines (each with or without its newline)."""
    state = SnapshotState()
    warn = _Warnings()
    for raw in lines:
        line = raw[:-1] if raw.endswith("\n") else raw
        if line.endswith("\r"):
            line = line[:-1]  # a hand-edited file with CRLF ends; pyserf never writes a raw CR
        if len(line) > MAX_LINE_BYTES:  # the agent's reader already caps lines in bytes
            warn("serf: Skipping snapshot line over %d characters", MAX_LINE_BYTES)
        elif not line or line.startswith("#"):
            continue
        elif line.startswith("alive: "):
            name, sep, addr = line[len("alive: "):].rpartition(" ")
            if not sep or not valid_addr(addr):
                warn("serf: Failed to parse address: %s", _preview(line))
                continue
            state.alive[unescape_name(name)] = addr
        elif line.startswith("not-alive: "):
            state.alive.pop(unescape_name(line[len("not-alive: "):]), None)
        elif line.startswith(("clock: ", "event-clock: ", "query-clock: ")):
            key, _, value = line.partition(": ")
            number = _parse_ltime(value)
            if number is None:
                warn("serf: Failed to convert %s time (not a uint64): %s", key, _preview(value))
                continue
            setattr(state, key.replace("-", "_"), number)
        elif line == "leave":
            if rejoin_after_leave:
                log.info("serf: Ignoring previous leave in snapshot")
                continue
            state.alive.clear()
            state.clock = state.event_clock = state.query_clock = 0
            state.left = True
        elif line.startswith("coordinate: "):
            continue  # written by old serf versions; not used
        else:
            warn("serf: Unrecognized snapshot line: %s", _preview(line))
    warn.summary()
    return state


def _alive_line(name: str, addr: str) -> str:
    return f"alive: {escape_name(name)} {addr}\n"


def _not_alive_line(name: str) -> str:
    return f"not-alive: {escape_name(name)}\n"


def _fits(line: str) -> bool:
    try:
        return len(line.encode("utf-8")) <= MAX_LINE_BYTES
    except UnicodeEncodeError:
        return False


class Snapshotter:
    """Decides what to append; the agent writes each line at once (nothing is buffered,
    so a kill -9 loses nothing that was recorded).

    After a leave, member and user events are no longer recorded (as in serf); the clock
    still is. The state kept here is what a compaction writes, so a line the agent failed to
    append is not lost: the next successful compaction includes it.
    """

    def __init__(self, state: SnapshotState) -> None:
        self.alive = dict(state.alive)
        self.last_clock = state.clock
        self.last_event_clock = state.event_clock
        self.last_query_clock = state.query_clock
        self.leaving = False

    def on_event(self, event: Any) -> list[str]:
        if self.leaving:
            return []
        if isinstance(event, MemberEvent):
            lines = []
            for member in event.members:
                if event.type == "member-join":
                    line = self._join(member.name, member.addr, member.port)
                    if line:
                        lines.append(line)
                elif (event.type in ("member-leave", "member-failed", "member-reap")
                      and self.alive.pop(member.name, None) is not None):
                    lines.append(_not_alive_line(member.name))
            return lines
        if (isinstance(event, UserEventReceived)
                and self.last_event_clock < event.ltime <= MAX_LTIME):
            self.last_event_clock = event.ltime
            return [f"event-clock: {event.ltime}\n"]
        if (isinstance(event, QueryReceived)
                and self.last_query_clock < event.ltime <= MAX_LTIME):
            self.last_query_clock = event.ltime
            return [f"query-clock: {event.ltime}\n"]
        return []

    def _join(self, name: str, ip: str, port: int) -> str | None:
        addr = format_addr(ip, port)
        if addr is None:
            log.warning("serf: Not recording member %s in the snapshot: bad address %r",
                        _preview(name), f"{ip}:{port}")
            return None
        line = _alive_line(name, addr)
        if not _fits(line):
            log.warning("serf: Not recording member %s in the snapshot: its name cannot be "
                        "written (not UTF-8, or over %d bytes)", _preview(name), MAX_LINE_BYTES)
            return None
        self.alive[name] = addr
        return line

    def on_clock(self, member_clock: int) -> list[str]:
        seen = member_clock - 1
        if self.last_clock < seen <= MAX_LTIME:
            self.last_clock = seen
            return [f"clock: {seen}\n"]
        return []

    def on_leave(self, rejoin_after_leave: bool) -> None:
        """The agent appended ``leave``: stop recording members, as serf does."""
        self.leaving = True
        if not rejoin_after_leave:
            self.alive.clear()

    def compact_threshold(self) -> int:
        return max(MIN_COMPACT_SIZE, len(self.alive) * COMPACT_BYTES_PER_MEMBER)

    def compacted(self) -> list[str]:
        """The whole current state, to replace a file that grew past the threshold.

        A leave goes first so that replay still clears the members but keeps the clocks
        recorded after it (serf's compaction drops the leave line).
        """
        lines = [LEAVE_LINE] if self.leaving else []
        lines += [_alive_line(name, addr) for name, addr in self.alive.items()]
        lines += [f"clock: {self.last_clock}\n", f"event-clock: {self.last_event_clock}\n",
                  f"query-clock: {self.last_query_clock}\n"]
        return lines
