"""The agent's snapshot file: replayed at start, appended to as events arrive, compacted.

Failure model. Reading is line by line with a cap (``snapshot.MAX_LINE_BYTES``), so a corrupt
file costs bounded memory. Appends are single unbuffered writes, so a kill -9 loses nothing
already recorded. Compaction writes ``<path>.compact``, fsyncs it, renames it over the
snapshot and fsyncs the directory: at every instant the snapshot on disk is the old file or
the new one, never a mix, and a temp file left by a failure is removed. No write error
escapes ``write``: it is logged, and

- a failed compaction is retried only after ``COMPACT_RETRY_SECONDS`` or once the file has
  grown by another compaction threshold, whichever comes first (never on every append);
- a failed append (disk full, I/O error) stops appending: the file may now end in a torn
  line or lack lines, so the next attempt, after the same back-off, is a compaction, which
  rewrites the whole recorded state (the recorder keeps it in memory meanwhile).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.serf import snapshot

log = logging.getLogger("pyserf.agent")

TMP_SUFFIX = ".compact"  # serf's tmpExt, so either agent cleans up after the other
# serf retries a compaction after a write error every 30 s (snapshotErrorRecoveryInterval);
# pyserf also backs off after a failed threshold compaction, which serf retries on every
# append. A minute keeps a full disk to one error line a minute.
COMPACT_RETRY_SECONDS = 60.0
_SKIP_CHUNK = 64 * 1024  # read size while discarding an over-long line
_FILE_MODE = 0o644


class SnapshotError(Exception):
    """The snapshot cannot be opened; the agent reports it as a start-up failure."""


def read_lines(fh: BinaryIO, cap: int | None = None) -> Iterator[str]:
    """Complete lines of ``fh``, decoded, each at most ``cap`` bytes before its newline.

    An over-long line is read past in chunks (never held whole) and skipped with a warning.
    An unterminated last line is a write torn by a crash: serf ignores it, and so does this.
    """
    limit = snapshot.MAX_LINE_BYTES if cap is None else cap
    number = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        number += 1
        if raw.endswith(b"\n"):
            yield raw.decode("utf-8", "replace")
            continue
        if len(raw) <= limit:
            log.warning("serf: Ignoring incomplete last line %d of the snapshot", number)
            return
        skipped = len(raw)
        while True:
            chunk = fh.readline(_SKIP_CHUNK)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
        log.warning("serf: Skipping snapshot line %d: %d bytes, over the %d byte limit",
                    number, skipped, limit)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # each pass writes at least one byte or raises
        view = view[os.write(fd, view):]


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("serf: Failed to remove %s: %s", path, exc)


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path``'s directory durable; some filesystems refuse, which is
    not worth failing the compaction over."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("serf: Failed to fsync the snapshot directory: %s", exc)


class SnapshotFile:
    """Appends snapshot lines straight to the file and compacts it when it grows too large."""

    def __init__(self, path: str, rejoin_after_leave: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.tmp_path = path + TMP_SUFFIX
        self.rejoin_after_leave = rejoin_after_leave
        self.clock = clock
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry, when on
        try:
            with open(path, "rb") as fh:
                self.state = snapshot.replay(read_lines(fh), rejoin_after_leave)
        except FileNotFoundError:
            self.state = snapshot.replay([], rejoin_after_leave)
        except OSError as exc:
            raise SnapshotError(f"Failed to open snapshot: {exc}") from exc
        self.recorder = snapshot.Snapshotter(self.state)
        _remove_quietly(self.tmp_path)  # left by a crash in the middle of a compaction
        self.fd: int | None = None
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, _FILE_MODE)
            self.size = os.fstat(self.fd).st_size
            torn = self.size > 0 and os.pread(self.fd, 1, self.size - 1) != b"\n"
        except OSError as exc:
            self._close_fd()
            raise SnapshotError(f"Failed to open snapshot: {exc}") from exc
        # Terminate a torn last line so that the next append does not extend it.
        self._pending = b"\n" if torn else b""
        self.degraded = False  # an append failed: the file is behind the recorder
        self.compactions = 0
        self._retry_at = 0.0
        self._retry_size = 0
        self._base = 0  # size right after the last compaction

    def write(self, lines: list[str]) -> None:
        """Append ``lines`` (produced by the recorder, or ``leave``); never raises."""
        if not lines:
            return
        if snapshot.LEAVE_LINE in lines:
            self.recorder.on_leave(self.rejoin_after_leave)
        now = self.clock()
        if self.degraded or self.fd is None:
            if now >= self._retry_at:
                self._compact(now)  # the recorder's state already includes ``lines``
            return
        data = self._pending + b"".join(line.encode("utf-8", "replace") for line in lines)
        started = self.metrics.start()
        try:
            _write_all(self.fd, data)
        except OSError as exc:
            log.error("serf: Failed to write to snapshot: %s (will rewrite it by a compaction "
                      "in %.0f s)", exc, COMPACT_RETRY_SECONDS)
            self.degraded = True
            self._back_off(now)
            return
        self._pending = b""
        self.metrics.measure_since("serf.snapshot.appendLine", started)
        self.size += len(data)
        if self._compaction_due() and (now >= self._retry_at or self.size >= self._retry_size):
            self._compact(now)

    def _compaction_due(self) -> bool:
        """Past serf's threshold, and grown by at least the compacted size since the last
        compaction: a state bigger than the threshold (huge names) must not be rewritten on
        every append, so the bytes rewritten stay at most the bytes appended."""
        threshold = self.recorder.compact_threshold()
        return self.size > threshold and self.size - self._base > max(threshold, self._base)

    def _back_off(self, now: float) -> None:
        self._retry_at = now + COMPACT_RETRY_SECONDS
        self._retry_size = self.size + self.recorder.compact_threshold()

    def _compact(self, now: float) -> bool:
        started = self.metrics.start()
        data = "".join(self.recorder.compacted()).encode("utf-8", "replace")
        installed = False
        try:
            fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp_path, self.path)
            installed = True
        except OSError as exc:
            log.error("serf: Snapshot compaction failed, will retry in %.0f s: %s",
                      COMPACT_RETRY_SECONDS, exc)
            self._back_off(now)
            return False
        finally:
            if not installed:
                _remove_quietly(self.tmp_path)
        _fsync_dir(self.path)
        self._close_fd()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND, _FILE_MODE)
        except OSError as exc:
            log.error("serf: Failed to reopen the compacted snapshot, will retry in %.0f s: %s",
                      COMPACT_RETRY_SECONDS, exc)
            self.degraded = True
            self._back_off(now)
            return False
        if self.degraded:
            log.info("serf: Snapshot rewritten, recovered from the earlier write error")
        self.degraded = False
        self._pending = b""
        self.size = self._base = len(data)
        self.compactions += 1
        self._retry_at, self._retry_size = 0.0, 0
        log.info("serf: Snapshot compacted to %d bytes", self.size)
        self.metrics.measure_since("serf.snapshot.compact", started)
        return True

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.error("serf: Failed to close the snapshot: %s", exc)

    def close(self) -> None:
        if self.degraded:  # one last attempt to leave a complete file behind
            self._compact(self.clock())
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                log.error("serf: Failed to sync the snapshot: %s", exc)
        self._close_fd()
