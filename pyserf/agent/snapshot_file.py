"""The agent's snapshot file: replayed at start, appended to as events arrive, compacted."""

from __future__ import annotations

import logging
import os

from pyserf.serf import snapshot

log = logging.getLogger("pyserf.agent")


class SnapshotError(Exception):
    """The snapshot cannot be opened; the agent reports it as a start-up failure."""


class SnapshotFile:
    """Appends snapshot lines straight to the file (no user-space buffering, so a kill -9
    loses nothing already recorded) and compacts it when it grows too large."""

    def __init__(self, path: str, rejoin_after_leave: bool) -> None:
        self.path = path
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.readlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise SnapshotError(f"Failed to open snapshot: {exc}") from exc
        self.state = snapshot.replay(lines, rejoin_after_leave)
        self.recorder = snapshot.Snapshotter(self.state)
        try:
            self.fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise SnapshotError(f"Failed to open snapshot: {exc}") from exc
        self.size = self.fh.tell()

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            for line in lines:
                self.fh.write(line)
                self.size += len(line)
            if self.size > self.recorder.compact_threshold():
                self._compact()
        except OSError as exc:
            log.error("serf: Failed to write to snapshot: %s", exc)

    def _compact(self) -> None:
        tmp = self.path + ".compact"
        lines = self.recorder.compacted()
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self.fh.close()
        self.fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.size = self.fh.tell()
        log.info("serf: Snapshot compacted to %d bytes", self.size)

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass
