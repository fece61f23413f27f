"""Snapshot replay and recording, in serf's file format."""

from __future__ import annotations

import errno
import logging
import os
import tracemalloc
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserf.serf import snapshot
from pyserf.serf.events import MemberEvent, UserEventReceived
from pyserf.serf.members import Member, MemberStatus
from pyserf.serf.snapshot import SnapshotState, Snapshotter, replay

SERF_WRITTEN = """alive: s2 127.0.0.31:7946
alive: s1 127.0.0.30:7946
clock: 1
event-clock: 1
# a comment
alive: node with spaces 127.0.0.32:7946
not-alive: s2
coordinate: {"Vec": []}
query-clock: 4
"""


def test_replay_of_a_serf_written_file():
    state = replay(SERF_WRITTEN.splitlines(keepends=True))
    assert state.alive == {"s1": "127.0.0.30:7946", "node with spaces": "127.0.0.32:7946"}
    assert (state.clock, state.event_clock, state.query_clock) == (1, 1, 4)
    assert not state.left


def test_leave_clears_state_unless_rejoin_after_leave():
    lines = [*SERF_WRITTEN.splitlines(), "leave"]
    state = replay(lines)
    assert state.left and state.alive == {} and state.clock == 0
    state = replay(lines, rejoin_after_leave=True)
    assert not state.left and "s1" in state.alive and state.query_clock == 4


def test_unknown_and_bad_lines_are_skipped(caplog):
    state = replay(["bogus line", "clock: notanumber", "alive: a 10.0.0.1:7946"])
    assert state.alive == {"a": "10.0.0.1:7946"} and state.clock == 0
    assert "Unrecognized snapshot line: bogus line" in caplog.text


def test_recorder_lines_round_trip_through_replay():
    rec = Snapshotter(SnapshotState())
    member = Member("a", "10.0.0.1", 7946, {}, MemberStatus.ALIVE)
    other = Member("b", "10.0.0.2", 7946, {}, MemberStatus.ALIVE)
    lines = []
    lines += rec.on_event(MemberEvent("member-join", [member, other]))
    lines += rec.on_event(MemberEvent("member-failed", [other]))
    lines += rec.on_event(MemberEvent("member-failed", [other]))  # nothing new to say
    lines += rec.on_event(UserEventReceived(7, "deploy", b"", False))
    lines += rec.on_event(UserEventReceived(5, "older", b"", False))
    lines += rec.on_clock(4)
    lines += rec.on_clock(4)
    assert lines == ["alive: a 10.0.0.1:7946\n", "alive: b 10.0.0.2:7946\n", "not-alive: b\n",
                     "event-clock: 7\n", "clock: 3\n"]
    state = replay(lines)
    assert state.alive == {"a": "10.0.0.1:7946"} and state.event_clock == 7
    assert replay(rec.compacted()).alive == state.alive


def test_snapshot_file_appends_unbuffered_and_compacts(tmp_path, monkeypatch):
    from pyserf.agent.snapshot_file import SnapshotFile

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 2000)
    path = tmp_path / "snap"
    snap = SnapshotFile(str(path), rejoin_after_leave=False)
    rec = snap.recorder
    member = Member("keeper", "10.0.0.1", 7946, {}, MemberStatus.ALIVE)
    snap.write(rec.on_event(MemberEvent("member-join", [member])))
    assert path.read_text() == "alive: keeper 10.0.0.1:7946\n"  # on disk at once
    for i in range(200):  # churn: flapping members grow the file past the threshold
        flapper = Member(f"f{i}", "10.0.0.2", 7946, {}, MemberStatus.ALIVE)
        snap.write(rec.on_event(MemberEvent("member-join", [flapper])))
        snap.write(rec.on_event(MemberEvent("member-failed", [flapper])))
        snap.write(rec.on_clock(i + 2))
    size = path.stat().st_size
    assert size < 2000 + 200  # compacted at least once, so bounded
    state = replay(path.read_text().splitlines())
    assert state.alive == {"keeper": "10.0.0.1:7946"} and state.clock == 200
    snap.close()


# -- hostile names, numbers and lines -----------------------------------------------------------

INJECTING_NAME = "x\nleave\nclock: 18446744073709551615"


def _join(rec, name, addr="10.0.0.9", port=7946):
    return rec.on_event(MemberEvent("member-join", [Member(name, addr, port, {},
                                                           MemberStatus.ALIVE)]))


def _fail(rec, name):
    return rec.on_event(MemberEvent("member-failed", [Member(name, "10.0.0.9", 7946, {},
                                                             MemberStatus.FAILED)]))


def test_a_name_cannot_inject_lines_into_a_restarted_agent(tmp_path):
    from pyserf.agent.snapshot_file import SnapshotFile

    path = tmp_path / "snap"
    snap = SnapshotFile(str(path), rejoin_after_leave=False)
    snap.write(_join(snap.recorder, "keeper", "10.0.0.1"))
    snap.write(_join(snap.recorder, INJECTING_NAME))
    snap.write(_join(snap.recorder, "cr\rlf\r\nnul\x00del\x7fnel\x85"))
    snap.write(snap.recorder.on_clock(6))
    snap.close()
    assert len(path.read_bytes().splitlines()) == 4  # one line per record, nothing injected
    restarted = SnapshotFile(str(path), rejoin_after_leave=False)
    state = restarted.state
    assert not state.left and state.clock == 5
    assert state.alive == {"keeper": "10.0.0.1:7946", INJECTING_NAME: "10.0.0.9:7946",
                           "cr\rlf\r\nnul\x00del\x7fnel\x85": "10.0.0.9:7946"}
    restarted.write(_fail(restarted.recorder, INJECTING_NAME))  # not-alive is escaped alike
    restarted.close()
    assert INJECTING_NAME not in replay(path.read_text().splitlines(keepends=True)).alive


def test_ordinary_names_are_written_exactly_as_serf_writes_them():
    rec = Snapshotter(SnapshotState())
    assert _join(rec, "web-1.example.com", "10.0.0.1") == [
        "alive: web-1.example.com 10.0.0.1:7946\n"]
    assert _join(rec, "node with spaces", "10.0.0.2") == [
        "alive: node with spaces 10.0.0.2:7946\n"]
    assert _join(rec, "DOMAIN\\host ünï", "10.0.0.3") == [
        "alive: DOMAIN\\host ünï 10.0.0.3:7946\n"]
    assert _join(rec, "v6", "::1", 7000) == ["alive: v6 [::1]:7000\n"]  # net.TCPAddr form
    assert _fail(rec, "web-1.example.com") == ["not-alive: web-1.example.com\n"]
    assert _join(rec, "a\\x41", "10.0.0.4") == ["alive: a\\x5cx41 10.0.0.4:7946\n"]


# Outside pytest-xdist (scripts/test): its captured log holds a lone surrogate, which a
# worker cannot send back with the report (the worker exits and the session aborts).
@pytest.mark.serial
def test_unrepresentable_members_are_left_out_with_a_warning(caplog):
    rec = Snapshotter(SnapshotState())
    assert _join(rec, "surrogate\udc80") == []
    assert _join(rec, "x" * (snapshot.MAX_LINE_BYTES + 1)) == []
    assert _join(rec, "badaddr", "not-an-ip") == []
    assert _join(rec, "badport", "10.0.0.1", 70000) == []
    assert rec.alive == {} and rec.compacted()[0].startswith("clock: ")
    assert caplog.text.count("Not recording member") == 4
    assert _fail(rec, "badaddr") == []  # never recorded, so nothing to retract


@given(st.text(max_size=40))
def test_names_round_trip_and_stay_on_one_line(name):
    escaped = snapshot.escape_name(name)
    assert snapshot.unescape_name(escaped) == name
    assert not any(unicodedata.category(c) == "Cc" for c in escaped)
    line = f"alive: {escaped} 10.0.0.1:7946\n"
    assert len(line.encode("utf-8", "surrogatepass").split(b"\n")) == 2
    assert replay([line]).alive == {name: "10.0.0.1:7946"}
    assert replay([line, f"not-alive: {escaped}\n"]).alive == {}


@pytest.mark.parametrize("value", ["18446744073709551616", "-1", "+5", " 5", "5 ", "1_000",
                                   "\u0663", "0x10", "", "9" * 100_000])
def test_clock_values_outside_uint64_are_skipped(value, caplog):
    for key in ("clock", "event-clock", "query-clock"):
        state = replay([f"{key}: 7\n", f"{key}: {value}\n"])
        assert (state.clock, state.event_clock, state.query_clock).count(7) == 1
    assert "not a uint64" in caplog.text
    assert len(caplog.text) < 10_000  # the warning quotes a bounded excerpt


def test_clock_values_at_the_uint64_bounds_are_kept():
    state = replay(["clock: 18446744073709551615\n", "event-clock: 0\n", "query-clock: 007\n"])
    assert (state.clock, state.event_clock, state.query_clock) == (2**64 - 1, 0, 7)
    rec = Snapshotter(SnapshotState())
    assert rec.on_clock(2**64 + 5) == []  # never write what replay would refuse
    assert rec.on_event(UserEventReceived(2**64, "e", b"", False)) == []
    assert rec.on_clock(2**64) == ["clock: 18446744073709551615\n"]


def test_bad_addresses_and_torrents_of_bad_lines_are_bounded(caplog):
    lines = ["alive: a 10.0.0.1:7946\n", "alive: b 10.0.0.2:99999\n", "alive: c ::1:7946\n",
             "alive: d host.example:7946\n", "alive: noaddress\n", "alive: e [::1]:7946\n"]
    lines += ["garbage\n"] * 10_000
    state = replay(lines)
    assert state.alive == {"a": "10.0.0.1:7946", "e": "[::1]:7946"}
    assert caplog.text.count("\n") <= snapshot.MAX_REPLAY_WARNINGS + 1
    assert f"{10_004 - snapshot.MAX_REPLAY_WARNINGS} more unusable" in caplog.text


def test_over_long_lines_are_skipped_without_reading_them_whole(tmp_path, caplog):
    from pyserf.agent.snapshot_file import SnapshotFile

    path = tmp_path / "snap"
    with open(path, "wb") as fh:
        fh.write(b"alive: a 10.0.0.1:7946\n")
        fh.write(b"alive: y 10.0.0.2:7946")  # then 64 MiB of NULs: one corrupt 64 MiB line
        fh.truncate(64 * 1024 * 1024)
        fh.seek(0, 2)
        fh.write(b"\nclock: 9\nleave-not\n")
    tracemalloc.start()
    try:
        snap = SnapshotFile(str(path), rejoin_after_leave=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * snapshot.MAX_LINE_BYTES + 1024 * 1024
    assert snap.state.alive == {"a": "10.0.0.1:7946"} and snap.state.clock == 9
    assert "over the" in caplog.text and "Unrecognized snapshot line: leave-not" in caplog.text
    snap.close()


def test_a_torn_last_line_is_ignored_and_not_extended(tmp_path, caplog):
    from pyserf.agent.snapshot_file import SnapshotFile

    path = tmp_path / "snap"
    path.write_bytes(b"alive: a 10.0.0.1:7946\nclock: 3\nlea")  # crash in mid-append
    snap = SnapshotFile(str(path), rejoin_after_leave=False)
    assert not snap.state.left and snap.state.clock == 3
    assert "incomplete last line 3" in caplog.text
    snap.write(snap.recorder.on_clock(9))
    snap.close()
    assert path.read_bytes().endswith(b"\nlea\nclock: 8\n")
    assert replay(path.read_text().splitlines(keepends=True)).clock == 8


def test_leave_stops_member_records_and_survives_compaction(tmp_path, monkeypatch):
    from pyserf.agent.snapshot_file import SnapshotFile

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 300)
    path = tmp_path / "snap"
    snap = SnapshotFile(str(path), rejoin_after_leave=False)
    snap.write(_join(snap.recorder, "a", "10.0.0.1"))
    snap.write(["leave\n"])
    assert _join(snap.recorder, "late", "10.0.0.2") == []  # serf stops recording members
    for clock in range(2, 60):  # clocks still recorded, enough to force compactions
        snap.write(snap.recorder.on_clock(clock))
    assert snap.compactions >= 1
    snap.close()
    state = SnapshotFile(str(path), rejoin_after_leave=False).state
    assert state.left and state.alive == {} and state.clock == 58


# -- compaction and write failures --------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _churn(snap, rounds, start=0):
    for i in range(start, start + rounds):
        snap.write(_join(snap.recorder, f"f{i}", "10.0.0.2"))
        snap.write(_fail(snap.recorder, f"f{i}"))


def _fail_on(monkeypatch, name, when):
    """Make snapshot_file's ``os.<name>`` raise ENOSPC when ``when(*args)`` holds."""
    from pyserf.agent import snapshot_file

    real = getattr(os, name)
    calls = []

    def fake(*args, **kwargs):
        if when(*args):
            calls.append(args)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_file.os, name, fake)
    return calls


def test_compaction_is_atomic_fsyncs_file_and_directory(tmp_path, monkeypatch):
    from pyserf.agent import snapshot_file

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 1000)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(snapshot_file.os, "fsync",
                        lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
    path = tmp_path / "snap"
    (tmp_path / "snap.compact").write_text("stale temp file from a crash\n")
    snap = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=False)
    assert not (tmp_path / "snap.compact").exists()
    snap.write(_join(snap.recorder, "keeper", "10.0.0.1"))
    _churn(snap, 40)
    assert snap.compactions >= 1
    assert synced[:2] == [str(tmp_path / "snap.compact"), str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]
    assert replay(path.read_text().splitlines()).alive == {"keeper": "10.0.0.1:7946"}
    snap.close()


def test_a_crash_between_write_and_rename_leaves_the_snapshot_intact(tmp_path, monkeypatch):
    from pyserf.agent import snapshot_file

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 1000)
    path = tmp_path / "snap"
    snap = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=False)
    snap.write(_join(snap.recorder, "keeper", "10.0.0.1"))
    _churn(snap, 5)
    before = path.read_bytes()

    def crash(*args):
        raise RuntimeError("power cut")

    monkeypatch.setattr(snapshot_file.os, "replace", crash)
    with pytest.raises(RuntimeError):
        _churn(snap, 40, start=5)
    after = path.read_bytes()
    assert after.startswith(before) and not (tmp_path / "snap.compact").exists()
    state = replay(after.decode().splitlines())
    assert state.alive == {"keeper": "10.0.0.1:7946"}
    snap.close()


def test_failed_compaction_backs_off_instead_of_retrying_every_append(tmp_path, monkeypatch,
                                                                       caplog):
    from pyserf.agent import snapshot_file

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 1000)
    clock = _Clock()
    path = tmp_path / "snap"
    snap = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=False, clock=clock)
    tmp = str(tmp_path / "snap.compact")
    calls = _fail_on(monkeypatch, "fsync", lambda fd: os.readlink(f"/proc/self/fd/{fd}") == tmp)
    snap.write(_join(snap.recorder, "keeper", "10.0.0.1"))
    rounds = 0
    while not calls and rounds < 100:  # churn past the threshold: one failed attempt
        _churn(snap, 1, start=rounds)
        rounds += 1
    assert len(calls) == 1 and snap.compactions == 0 and not snap.degraded
    assert not (tmp_path / "snap.compact").exists()
    failed_at = path.stat().st_size
    while path.stat().st_size < failed_at + 950:  # appends go on, with no retry yet
        _churn(snap, 1, start=rounds)
        rounds += 1
    assert len(calls) == 1 and rounds < 200
    while path.stat().st_size <= failed_at + 1000 and rounds < 200:
        _churn(snap, 1, start=rounds)
        rounds += 1
    assert len(calls) == 2  # grown by another threshold: one more try
    _churn(snap, 3, start=rounds)
    assert len(calls) == 2
    clock.now += snapshot_file.COMPACT_RETRY_SECONDS  # or a minute passed: one more try
    _churn(snap, 1, start=rounds + 3)
    assert len(calls) == 3
    monkeypatch.undo()
    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 1000)
    clock.now += snapshot_file.COMPACT_RETRY_SECONDS
    _churn(snap, 1, start=rounds + 4)
    assert snap.compactions == 1 and path.stat().st_size < 1000
    assert caplog.text.count("compaction failed") == 3
    snap.close()


def test_disk_full_on_append_degrades_then_recovers_by_compaction(tmp_path, monkeypatch,
                                                                   caplog):
    from pyserf.agent import snapshot_file

    caplog.set_level(logging.INFO)
    clock = _Clock()
    path = tmp_path / "snap"
    snap = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=False, clock=clock)
    snap.write(_join(snap.recorder, "a", "10.0.0.1"))
    calls = _fail_on(monkeypatch, "write", lambda fd, data: fd == snap.fd)
    snap.write(_join(snap.recorder, "b", "10.0.0.2"))  # fails: logged, not raised
    assert snap.degraded and len(calls) == 1
    for i in range(100):  # no write attempted while backing off, state kept in memory
        snap.write(_join(snap.recorder, f"m{i}", "10.0.0.3"))
    snap.write(snap.recorder.on_clock(50))
    assert len(calls) == 1 and caplog.text.count("Failed to write to snapshot") == 1
    monkeypatch.undo()
    clock.now += snapshot_file.COMPACT_RETRY_SECONDS
    snap.write(_fail(snap.recorder, "a"))  # the retry rewrites everything recorded meanwhile
    assert not snap.degraded and snap.compactions == 1
    snap.close()
    state = replay(path.read_text().splitlines())
    assert set(state.alive) == {"b"} | {f"m{i}" for i in range(100)} and state.clock == 49
    assert "recovered from the earlier write error" in caplog.text


def test_huge_state_is_not_rewritten_on_every_append(tmp_path, monkeypatch):
    from pyserf.agent.snapshot_file import SnapshotFile

    monkeypatch.setattr(snapshot, "MIN_COMPACT_SIZE", 1000)
    path = tmp_path / "snap"
    snap = SnapshotFile(str(path), rejoin_after_leave=False)
    for i in range(4):  # a state of ~8 KB, far above the 1000 byte threshold
        snap.write(_join(snap.recorder, f"{i}" + "n" * 2000, "10.0.0.1"))
    for clock in range(2, 500):
        snap.write(snap.recorder.on_clock(clock))
    assert 1 <= snap.compactions <= 3  # ~5 KB of clock lines: rewrites <= bytes appended
    snap.close()
    assert replay(path.read_text().splitlines()).clock == 498


def test_unopenable_snapshot_is_a_start_error(tmp_path):
    from pyserf.agent.snapshot_file import SnapshotError, SnapshotFile

    with pytest.raises(SnapshotError, match="Failed to open snapshot"):
        SnapshotFile(str(tmp_path), rejoin_after_leave=False)  # a directory


def test_close_after_a_failed_append_leaves_a_complete_file(tmp_path, monkeypatch):
    from pyserf.agent import snapshot_file

    path = tmp_path / "snap"
    snap = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=True, clock=_Clock())
    _fail_on(monkeypatch, "write", lambda fd, data: fd == snap.fd)
    snap.write(_join(snap.recorder, "a", "10.0.0.1"))
    assert snap.degraded and path.read_bytes() == b""
    monkeypatch.undo()  # space freed before shutdown: close rewrites the file once
    snap.write(["leave\n"])
    snap.close()
    assert path.read_text().startswith("leave\n")
    state = snapshot_file.SnapshotFile(str(path), rejoin_after_leave=True).state
    assert state.alive == {"a": "10.0.0.1:7946"} and not state.left
