"""Snapshot replay and recording, in serf's file format."""

from __future__ import annotations

from pyserf.serf.core import Member, MemberEvent, MemberStatus, UserEventReceived
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
    from pyserf.serf import snapshot

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
