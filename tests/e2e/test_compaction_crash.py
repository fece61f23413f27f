"""A crash during, and right after, a snapshot compaction loses nothing the agent needs.

The agent compacts by writing ``<snapshot>.compact``, fsyncing it and renaming it over the
snapshot (pyserf/agent/snapshot_file.py), so at any instant the snapshot on disk is the old
file or the new one. To kill -9 the agent *inside* a compaction without racing it, the temp
path is a FIFO: opening it for writing blocks until a reader comes, so the agent is held at the
first step of the compaction (seen in /proc as an openat that does not return) and killed
there. The threshold (128 KiB, serf's minimum) is not configurable, so the snapshot is
prefilled with churn (members that came and went) to just under it.

After each restart the agent must rejoin from the snapshot alone (no -join), restore the event
clock it had recorded, deliver no user event twice, and ignore what a crash leaves behind: the
temp file and a torn last line. (Events sent while it was down: see test_snapshot.py.)
"""

from __future__ import annotations

import os
import platform
import stat
import time
from pathlib import Path

import pytest

from pyserf.client.rpc_client import RPCClient
from pyserf.serf import snapshot
from tests.e2e.harness import Agent, members, wait_until

pytestmark = pytest.mark.e2e

# With two members the threshold is max(MIN_COMPACT_SIZE, 2 * 256 B) = MIN_COMPACT_SIZE.
THRESHOLD = snapshot.MIN_COMPACT_SIZE
# Room left under the threshold at start: more than the start-up lines (two alive lines and a
# clock line, ~70 B) and three events; each later event appends one line of at least this.
MARGIN = 400
EVENT_LINE = len("event-clock: 10\n")
MAX_EVENTS = MARGIN // EVENT_LINE + 5
# The syscall the main thread sits in while the FIFO blocks it (openat), per architecture.
OPENAT = {"x86_64": "257", "aarch64": "56"}.get(platform.machine())


def _churn(size: int) -> str:
    """Snapshot lines of members that joined and went away, at least ``size`` bytes."""
    lines, total, i = [], 0, 0
    while total < size:
        pair = f"alive: ghost-{i:05d} 127.0.0.1:7946\nnot-alive: ghost-{i:05d}\n"
        lines.append(pair)
        total += len(pair)
        i += 1
    return "".join(lines)


def _send(rpc: str, *names: str) -> None:
    with RPCClient(rpc, timeout=5.0, reply_timeout=5.0) as client:
        for name in names:
            client.user_event(name, b"", coalesce=False)


def _handled(seen: Path) -> list[str]:
    try:
        return seen.read_text().split()
    except OSError:
        return []


def _stuck_in_openat(pid: int, snap: Path) -> bool:
    """The snapshot is past the threshold and the main thread is inside openat (any one
    syscall on an architecture not listed), twice in a row 0.2 s apart (not just passing)."""
    calls = set()
    for _ in range(2):
        try:
            call = Path(f"/proc/{pid}/syscall").read_text().split()
        except OSError:
            return False
        if not call or call[0] == "running" or (OPENAT and call[0] != OPENAT):
            return False
        calls.add(call[0])
        time.sleep(0.2)
    return len(calls) == 1 and snap.stat().st_size > THRESHOLD


def _rejoined(p1: Agent, p2: Agent) -> bool:
    """Both sides see each other alive again."""
    return (members("pyserf", p1.rpc).get("p2", ("", ""))[1] == "alive"
            and members("pyserf", p2.rpc).get("p1", ("", ""))[1] == "alive")


def _event_clocks(snap: Path) -> list[int]:
    """The event-clock values of the snapshot's complete lines, in file order."""
    text = snap.read_text()
    complete = text[:text.rfind("\n") + 1]
    return [int(line.split()[1]) for line in complete.splitlines()
            if line.startswith("event-clock: ")]


def _no_duplicates(seen: Path) -> None:
    names = _handled(seen)
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)


def test_kill_during_and_after_compaction(cluster, tmp_path):
    snap, seen = tmp_path / "p2.snapshot", tmp_path / "seen.txt"
    temp = Path(str(snap) + ".compact")
    snap.write_text(_churn(THRESHOLD - MARGIN))
    handler = f"-event-handler=user=echo $SERF_USER_EVENT >> {seen}"
    p1 = cluster.start("pyserf", "p1")
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", handler, f"-join={p1.ip}")
    wait_until(lambda: _rejoined(p1, p2), 10, what="p1 and p2 to see each other")
    _send(p1.rpc, "before-1", "before-2", "before-3")
    wait_until(lambda: len(_handled(seen)) == 3, 10, what="three events handled")
    assert snap.stat().st_size < THRESHOLD, "compacted before the FIFO was in place"

    # 1. Crash inside a compaction: the burst pushes the file over the threshold.
    # Events go one at a time: each raises the event clock, so each appends a line (out of
    # order arrivals of a burst would not).
    os.mkfifo(temp)
    sent = 0
    while not _stuck_in_openat(p2.proc.pid, snap):
        assert sent < MAX_EVENTS, f"no compaction after {sent} events"
        size = snap.stat().st_size
        _send(p1.rpc, f"grow-{sent:03d}")
        sent += 1
        wait_until(lambda size=size: snap.stat().st_size > size
                   or _stuck_in_openat(p2.proc.pid, snap), 5, interval=0.02,
                   what="the event to be recorded or the compaction to start")
    p2.proc.kill()
    p2.proc.wait(5)
    assert stat.S_ISFIFO(temp.stat().st_mode)
    assert snap.stat().st_size > THRESHOLD  # the old file, whole: nothing was renamed over it
    recorded = _event_clocks(snap)[-1]
    assert recorded >= 3 + sent
    # A torn append (kill -9 mid-write) as well: a clock this high, if read, would make p2
    # ignore every later event.
    with open(snap, "a") as fh:
        fh.write("event-clock: 99999999")

    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", handler, ip=p2.ip)
    wait_until(lambda: _rejoined(p1, p2), 15, what="p2 to rejoin from its snapshot")
    assert "Attempting re-join to previously known node: p1" in p2.log()
    assert "Ignoring incomplete last line" in p2.log()
    # Its first append found the file over the threshold and compacted it for real: the
    # compacted state comes first in the file and holds the clock recorded before the crash.
    wait_until(lambda: "Snapshot compacted to" in p2.log(), 10, what="the compaction")
    assert not temp.exists()
    lines = snap.read_text().splitlines()
    assert not any("ghost" in line for line in lines)
    assert f"alive: p1 {p1.ip}:7946" in lines
    assert _event_clocks(snap)[0] == recorded
    _send(p1.rpc, "after-first")
    # Each agent runs a script's events in order, so once this one has run, anything
    # replayed by the rejoin has run too.
    wait_until(lambda: "after-first" in _handled(seen), 10, what="a new event handled")
    _no_duplicates(seen)

    # 2. Crash right after that compaction, with a torn temp file of a later one left over:
    # read, its leave would stop the rejoin.
    p2.proc.kill()
    p2.proc.wait(5)
    temp.write_text("leave\nalive: ghost-1 127.0.0.1:79")
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", handler, ip=p2.ip)
    wait_until(lambda: _rejoined(p1, p2), 15, what="p2 to rejoin from the compacted file")
    assert "Attempting re-join to previously known node: p1" in p2.log()
    assert not temp.exists()
    _send(p1.rpc, "after-second")
    wait_until(lambda: "after-second" in _handled(seen), 10, what="another new event handled")
    _no_duplicates(seen)
    assert {"before-1", "before-2", "before-3", "after-first"} <= set(_handled(seen))
