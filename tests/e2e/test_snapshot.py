"""Snapshots: a crashed agent comes back into its cluster on its own; a left one does not."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import members, run_cli, wait_until

pytestmark = pytest.mark.e2e


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
    wait_until(lambda: members("serf", s1.rpc)["p2"][1] == "failed", 30, what="p2 failed")

    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", handler, ip=p2.ip)
    wait_until(lambda: members("serf", s1.rpc)["p2"][1] == "alive", 15,
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

    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", ip=p2.ip)
    assert "Attempting re-join" not in p2.log()
    assert list(members("pyserf", p2.rpc)) == ["p2"]
    cluster.stop(p2, signal.SIGTERM)

    p2 = cluster.start("pyserf", "p2", f"-snapshot={snap}", "-rejoin", ip=p2.ip)
    wait_until(lambda: "p1" in members("pyserf", p2.rpc), 15, what="rejoin after leave")
