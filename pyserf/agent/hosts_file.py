"""Keep a marked block of the cluster's alive members in a hosts file (``"hosts_file"`` config).

The agent-side replacement for the classic /etc/hosts event-handler script: on every member
event the agent renders ``<advertise address> <name> [<name>.<domain>]`` for each alive member
that matches the tag filters (RE2, anchored, as ``members -tag``) and swaps the block between
its two marker lines. Everything outside the block is kept byte for byte. Writes are atomic: a
temp file in the same directory, fsync, rename, fsync of the directory; a crash leaves either
the old or the new file. When the path is a symlink, the file it points to is replaced (so a
deployment can point /etc/hosts into a directory the unprivileged agent may write).

Names and addresses come from the network: a name that is not a plain host name (newline,
space, '#', NUL, anything outside letters, digits, '-', '_' and '.') or an address that is not
an IP is skipped with a warning, so no peer can add lines or fields to the file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyserf.serf import filters
from pyserf.serf.events import MemberEvent
from pyserf.serf.members import Member, MemberStatus

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

BEGIN = b"# BEGIN pyserf hosts_file: the pyserf agent rewrites this block, do not edit it"
END = b"# END pyserf hosts_file"
MAX_NAME = 253  # a DNS name's length limit
MAX_FILE = 16 * 1024 * 1024  # refuse to load (and rewrite) a hosts file larger than this
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_KEYS = ("path", "tags", "domain")


class HostsFileError(ValueError):
    """A bad ``hosts_file`` config block, or a hosts file whose block cannot be found safely."""


@dataclass(frozen=True)
class HostsFileSettings:
    """The parsed ``hosts_file`` block: the file, tag filters (tag -> RE2) and alias domain."""

    path: str
    tags: dict[str, str] = field(default_factory=dict)
    domain: str = ""

    def matches(self, member: Member) -> bool:
        """Whether the member passes every tag filter (a missing tag matches as "")."""
        return all(filters.compile_anchored(expr).match(member.tags.get(key, ""))
                   for key, expr in self.tags.items())


def parse_settings(raw: Any) -> HostsFileSettings:
    """Check a decoded ``hosts_file`` config value; HostsFileError says what is wrong."""
    if not isinstance(raw, dict):
        raise HostsFileError(f"hosts_file: expected an object like {{\"path\": \"/etc/hosts\"}}, "
                             f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise HostsFileError(f"hosts_file: unknown key(s) {', '.join(unknown)} "
                             f"(valid: {', '.join(_KEYS)})")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise HostsFileError("hosts_file: \"path\" is required (a file name, e.g. /etc/hosts)")
    if not os.path.isabs(path) or "\0" in path:
        raise HostsFileError(f"hosts_file: \"path\" must be an absolute file name, got {path!r}")
    tags = raw.get("tags", {})
    if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise HostsFileError("hosts_file: \"tags\" must map tag names to regular expressions "
                             "(strings), e.g. {\"role\": \"web.*\"}")
    for key, expr in tags.items():
        try:
            filters.compile_anchored(expr)
        except filters.FilterError as exc:
            raise HostsFileError(f"hosts_file: tag filter {key}={expr!r}: {exc}") from None
    domain = raw.get("domain", "")
    if not isinstance(domain, str) or (domain and (
            len(domain) > MAX_NAME or not _DOMAIN.fullmatch(domain))):
        raise HostsFileError(f"hosts_file: \"domain\" must be a DNS domain such as \"lan\", "
                             f"got {domain!r}")
    return HostsFileSettings(path, dict(tags), domain)


def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and _HOST_NAME.fullmatch(name) is not None


def host_lines(members: Iterable[Member], settings: HostsFileSettings,
               warn: Callable[[str], None] = log.warning) -> list[str]:
    """One ``address<TAB>name [name.domain]`` line per alive matching member, sorted by name.

    Members with a name or address that could break the file's syntax are skipped (warned)."""
    lines: list[tuple[str, str]] = []
    for member in members:
        if member.status != MemberStatus.ALIVE or not settings.matches(member):
            continue
        if not _valid_name(member.name):
            warn(f"agent: hosts_file: skipping member {member.name[:80]!r}: not a valid host name")
            continue
        try:
            addr = str(ipaddress.ip_address(member.addr))
        except ValueError:
            warn(f"agent: hosts_file: skipping member {member.name}: address "
                 f"{str(member.addr)[:80]!r} is not an IP address")
            continue
        names = [member.name]
        if settings.domain:
            fqdn = f"{member.name}.{settings.domain}"
            if _valid_name(fqdn) and not member.name.endswith(f".{settings.domain}"):
                names.append(fqdn)
        lines.append((member.name, f"{addr}\t{' '.join(names)}"))
    return [line for _, line in sorted(lines)]


def render_block(lines: Iterable[str]) -> bytes:
    """The marked block, marker lines included, each line ending in a newline."""
    body = b"".join(line.encode("ascii") + b"\n" for line in lines)
    return BEGIN + b"\n" + body + END + b"\n"


def merge_block(original: bytes, block: bytes | None) -> bytes:
    """``original`` with its marked block replaced by ``block`` (``None`` removes it).

    The first block is replaced in place, any further blocks are removed, and a file without
    one gets the block appended (after a newline if its last line has none). Bytes outside the
    blocks are kept. A BEGIN marker without its END raises HostsFileError: guessing where the
    block ends could delete the administrator's lines."""
    lines = original.split(b"\n")
    # split() leaves a final "" when the file ends in a newline: keep lines with their endings.
    pieces = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    out: list[bytes] = []
    placed = False
    inside = False
    for piece in pieces:
        bare = piece.rstrip(b"\r\n")
        if not inside and bare == BEGIN:
            inside = True
            if not placed and block is not None:
                out.append(block)
            placed = True
        elif inside:
            if bare == END:
                inside = False
        else:
            out.append(piece)
    if inside:
        raise HostsFileError("hosts_file: found the BEGIN marker without the END marker; "
                             "fix the file by hand (the agent does not guess where the block "
                             "ends)")
    if not placed and block is not None:
        if out and not out[-1].endswith(b"\n"):
            out.append(b"\n")
        out.append(block)
    return b"".join(out)


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file ``path`` resolves to with ``data``: temp file in the same directory,
    fsync, rename over it, fsync the directory. Keeps the old file's mode (0644 for a new one)
    and, when allowed, its owner."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".pyserf",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), (st.st_mode & 0o7777) if st else 0o644)
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), st.st_uid, st.st_gid)
                except PermissionError:
                    pass  # the agent's own user then owns it; readers only need the mode
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except FileNotFoundError:
        return b""
    if len(data) > MAX_FILE:
        raise HostsFileError(f"hosts_file: {path} is over {MAX_FILE} bytes; not rewriting it")
    return data


class HostsFileSync:
    """Rewrites the block on member events and removes it after a graceful leave."""

    def __init__(self, settings: HostsFileSettings,
                 members: Callable[[], list[Member]]) -> None:
        self.settings = settings
        self._members = members
        self._last: bytes | None = None  # the block last written, to skip identical rewrites

    def sync(self) -> None:
        """Bring the file's block up to date with the current membership."""
        self._apply(render_block(host_lines(self._members(), self.settings)))

    def remove(self) -> None:
        """Take the block out of the file (after a graceful leave)."""
        self._apply(None)

    def on_event(self, event: Any) -> None:
        """Agent event listener: member events re-render the block."""
        if isinstance(event, MemberEvent):
            self.sync()

    def _apply(self, block: bytes | None) -> None:
        if block is not None and block == self._last:
            return
        path = self.settings.path
        try:
            original = _read(path)
            updated = merge_block(original, block)
            if updated != original:
                write_atomic(path, updated)
            self._last = block
        except (OSError, HostsFileError) as exc:
            self._last = None
            log.error("agent: hosts_file: failed to update %s: %s", path, exc)


def attach(agent: AgentAPI, raw_settings: Any) -> HostsFileSync:
    """Start syncing for a started agent (the ``hosts_file`` config block): write the block now
    and on every member event. The agent calls ``remove()`` after a graceful leave."""
    sync = HostsFileSync(parse_settings(raw_settings), agent.members)
    agent.subscribe(sync.on_event)
    sync.sync()
    return sync
