"""Agent-side event coalescing, on a virtual clock."""

from __future__ import annotations

from pyserf.memberlist.timers import Scheduler
from pyserf.serf.coalesce import EventPipeline
from pyserf.serf.core import Member, MemberEvent, MemberStatus, QueryReceived, UserEventReceived


def member(name: str, tags: dict | None = None) -> Member:
    return Member(name, "10.0.0.1", 7946, tags or {}, MemberStatus.ALIVE)


class Harness:
    def __init__(self) -> None:
        self.scheduler = Scheduler()
        self.out: list[tuple[float, object]] = []
        self.now = 0.0
        self.pipeline = EventPipeline(self.scheduler, lambda e: self.out.append((self.now, e)))

    def feed(self, event, at: float) -> None:
        self.run(at)
        self.pipeline.feed(event, at)

    def run(self, until: float) -> None:
        while (wake := self.scheduler.next_wake()) is not None and wake <= until:
            self.now = wake
            self.scheduler.run_due(wake)
        self.now = until


def test_member_events_batch_until_one_quiet_second():
    h = Harness()
    h.feed(MemberEvent("member-join", [member("a")]), 0.0)
    h.feed(MemberEvent("member-join", [member("b")]), 0.5)
    h.feed(MemberEvent("member-failed", [member("c")]), 0.9)
    h.run(1.8)
    assert h.out == []
    h.run(2.0)
    kinds = [(t, e.type, sorted(m.name for m in e.members)) for t, e in h.out]
    assert kinds == [(1.9, "member-join", ["a", "b"]), (1.9, "member-failed", ["c"])]


def test_a_steady_stream_is_flushed_after_the_period():
    h = Harness()
    for i in range(10):
        h.feed(MemberEvent("member-join", [member(f"n{i}")]), i * 0.5)
    assert h.out and h.out[0][0] == 3.0


def test_latest_type_wins_and_repeats_are_dropped():
    h = Harness()
    h.feed(MemberEvent("member-join", [member("a")]), 0.0)
    h.feed(MemberEvent("member-failed", [member("a")]), 0.1)
    h.run(5.0)
    assert [(e.type, e.members[0].name) for _, e in h.out] == [("member-failed", "a")]
    h.feed(MemberEvent("member-failed", [member("a")]), 6.0)
    h.run(10.0)
    assert len(h.out) == 1  # the same type again is not repeated


def test_stale_update_is_not_redelivered_with_later_batches():
    """serf 0.9 re-sends the last member-update in every later flush; pyserf does not."""
    h = Harness()
    h.feed(MemberEvent("member-update", [member("b", {"v": "2"})]), 0.0)
    h.run(5.0)
    h.feed(MemberEvent("member-failed", [member("c")]), 6.0)
    h.run(10.0)
    assert [(e.type, [m.name for m in e.members]) for _, e in h.out] == [
        ("member-update", ["b"]), ("member-failed", ["c"])]


def test_user_events_keep_only_the_newest_per_name_and_others_pass():
    h = Harness()
    for ltime in (3, 5, 4):
        h.feed(UserEventReceived(ltime, "coal", b"%d" % ltime, True), 0.1 * ltime)
    h.feed(UserEventReceived(6, "nc", b"x", False), 0.7)
    query = QueryReceived(1, "q", b"", 1, ("10.0.0.1", 7946), "n", 9.0, 0)
    h.feed(query, 0.8)
    # Non-coalescable events and queries are not delayed.
    assert [e for _, e in h.out] == [UserEventReceived(6, "nc", b"x", False), query]
    h.run(5.0)
    assert [e.ltime for _, e in h.out[2:]] == [5]
