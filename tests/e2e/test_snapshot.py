"""Snapshots: a crashed agent comes back into its cluster on its own; a left one does not."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from pyserf.client.rpc_client import RPCClient, RPCError
from tests.e2e.harness import members, run_cli, wait_until

pytestmark = pytest.mark.e2e


def _status(cli: str, rpc: str, name: str) -> str:
    """One member's status; '' while the agent does not answer or does not know it yet."""
    return members(cli, rpc).get(name, ("", "", {}))[1]


def _view(rpc: str) -> dict[str, str]:
    """name -> status over RPC directly (a CLI run costs a process start, too coarse to time
    a rejoin); {} while the agent does not answer."""
    try:
        with RPCClient(rpc, timeout=2.0, reply_timeout=3.0) as client:
            return {m.name: m.status for m in client.members()}
    except (RPCError, OSError):
        return {}


def _holds(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert ``predicate`` on every poll for ``seconds`` (a negative check over a window)."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), what
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def test_crash_restart_rejoins_without_join_and_skips_old_events(cluster, tmp_path,
                                                                 need_serf):
    snap = tmp_path / "p2.snapshot"
    seen = tmp_path / "seen.txt"
    handler = f"-event-handler=user=echo $SERF_USER_EVENT >> {seen}"
    s1 = cluster.start("serf", "s1")
    p1 = cluster.start("pyserf", "p1", f"-join={s1.ip}")
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", f"-join={p1.ip}", handler)
    wait_until(lambda: len(members("serf", s1.rpc)) == 3, 10, what="three members")
    run_cli("pyserf", "event", "-coalesce=false", "before-crash", rpc=s1.rpc)
    wait_until(lambda: seen.exists() and "before-crash" in seen.read_text(), 10,
               what="event handled")
    text = snap.read_text()
    assert f"alive: s1 {s1.ip}:7946" in text and "event-clock:" in text

    p2.proc.kill()  # nothing written before this may be lost
    p2.proc.wait(5)
    wait_until(lambda: _status("serf", s1.rpc, "p2") == "failed", 30, what="p2 failed")

    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", handler, ip=p2.ip)
    wait_until(lambda: _status("serf", s1.rpc, "p2") == "alive", 15,
               what="p2 back without -join")
    assert "Attempting re-join to previously known node" in p2.log()
    wait_until(lambda: len(members("pyserf", p2.rpc)) == 3, 10, what="p2 sees everyone")
    run_cli("pyserf", "event", "-coalesce=false", "after-restart", rpc=s1.rpc)
    wait_until(lambda: "after-restart" in seen.read_text(), 10, what="new event handled")
    assert seen.read_text().count("before-crash") == 1  # not re-delivered


def test_graceful_leave_is_remembered_unless_rejoin(cluster, tmp_path):
    snap = tmp_path / "p2.snapshot"
    p1 = cluster.start("pyserf", "p1")
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", f"-join={p1.ip}")
    wait_until(lambda: len(members("pyserf", p1.rpc)) == 2, 10, what="joined")
    assert cluster.stop(p2, signal.SIGINT) == 0
    assert "leave" in snap.read_text().splitlines()

    # With -rejoin the leave is ignored: the agent comes back on its own. How long that takes
    # here is the window in which a wrong re-join would show up below.
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", "-rejoin", ip=p2.ip)
    took = wait_until(lambda: _view(p2.rpc).get("p1") == "alive"
                      and _view(p1.rpc).get("p2") == "alive", 15, interval=0.05,
                      what="rejoin after leave")
    assert "Attempting re-join to previously known node: p1" in p2.log()
    assert cluster.stop(p2, signal.SIGINT) == 0
    wait_until(lambda: _view(p1.rpc).get("p2") == "left", 10, what="left again")

    # Without -rejoin the leave stands. The re-join would start at the banner and has just
    # been seen to take ``took``; watch several times that long before concluding.
    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", ip=p2.ip)
    _holds(lambda: _view(p2.rpc) == {"p2": "alive"} and _view(p1.rpc).get("p2") == "left",
           max(2.0, 5 * took),
           what="p2 stays out of the cluster it left")
    assert "Attempting re-join" not in p2.log()


@pytest.mark.parametrize("kind", [
    "serf",
    "pyserf",
])
def test_restart_from_snapshot_delivers_what_was_missed_while_down(cluster, tmp_path, kind,
                                                                   need_serf):
    snap, seen = tmp_path / "x2.snapshot", tmp_path / "seen.txt"
    handler = f"-event-handler=user=echo $SERF_USER_EVENT >> {seen}"

    def handled() -> list[str]:
        return seen.read_text().split() if seen.exists() else []

    p1 = cluster.start("pyserf", "p1")
    x2 = cluster.start(kind, "x2", f"-snapshot={snap}", handler, f"-join={p1.ip}")
    run_cli("pyserf", "event", "-coalesce=false", "first", rpc=p1.rpc)
    wait_until(lambda: handled() == ["first"], 10, what="first handled")
    # serf buffers snapshot lines and flushes only when it appends a line 500 ms
    # (flushInterval) after its last flush: nudge it with queries (recorded as query-clock
    # lines, no user handler runs) until the event's line is on disk, then kill.
    for _ in range(10):
        if "event-clock: " in snap.read_text():
            break
        time.sleep(0.6)
        run_cli("pyserf", "query", "-timeout=2s", "nudge", rpc=p1.rpc)
    assert "event-clock: " in snap.read_text()
    x2.proc.kill()
    x2.proc.wait(5)
    run_cli("pyserf", "event", "-coalesce=false", "while-down", rpc=p1.rpc)

    x2 = cluster.start(kind, "x2", f"-snapshot={snap}", handler, ip=x2.ip)
    wait_until(lambda: _view(x2.rpc).get("p1") == "alive", 15, what="x2 to rejoin")
    run_cli("pyserf", "event", "-coalesce=false", "after", rpc=p1.rpc)
    # Handlers run in order, so once "after" has run, whatever the rejoin delivered has too.
    wait_until(lambda: "after" in handled(), 10, what="after handled")
    assert handled() == ["first", "while-down", "after"]
