"""Agent-side event coalescing, on a virtual clock."""

from __future__ import annotations

from pyserf.memberlist.timers import Scheduler
from pyserf.serf.coalesce import EventPipeline, MemberEventCoalescer, UserEventCoalescer
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.members import Member, MemberStatus


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


def test_a_flush_cancels_the_other_timer_so_the_next_batch_gets_its_own_period():
    """Batch 1 is flushed by its quiet timer at 1.0; its period timer (3.0) must die with it,
    or batch 2 (events every 0.7 s from 1.5) would be cut at 3.0 instead of its quiet 3.9."""
    h = Harness()
    h.feed(MemberEvent("member-join", [member("a")]), 0.0)
    h.run(1.0)
    assert [(t, e.type) for t, e in h.out] == [(1.0, "member-join")]
    for i, at in enumerate((1.5, 2.2, 2.9)):
        h.feed(MemberEvent("member-join", [member(f"b{i}")]), at)
    h.run(10.0)
    assert [(t, sorted(x.name for x in e.members)) for t, e in h.out[1:]] == [
        (3.9, ["b0", "b1", "b2"])]


def test_the_period_caps_a_batch_that_never_goes_quiet():
    """period = 3.0: events every 0.5 s from 0 flush at 3.0 exactly, then a new batch starts."""
    h = Harness()
    for i in range(10):
        h.feed(MemberEvent("member-join", [member(f"n{i}")]), i * 0.5)
    h.run(20.0)
    assert [(t, len(e.members)) for t, e in h.out] == [(3.0, 6), (5.5, 4)]


def test_coalescers_accept_keyword_arguments():
    scheduler = Scheduler()
    out: list = []
    for cls in (MemberEventCoalescer, UserEventCoalescer):
        c = cls(scheduler=scheduler, emit=out.append, period=2.0, quiet=0.5)
        assert (c.scheduler, c.period, c.quiet) == (scheduler, 2.0, 0.5)
        assert c.emit == out.append


def test_updates_are_delivered_again_but_other_repeats_are_not():
    h = Harness()
    h.feed(MemberEvent("member-update", [member("a", {"v": "1"})]), 0.0)
    h.feed(MemberEvent("member-failed", [member("b")]), 0.0)
    h.run(2.0)
    h.feed(MemberEvent("member-update", [member("a", {"v": "2"})]), 3.0)
    h.run(5.0)
    # A repeated type for one member does not stop later members of the same batch.
    h.feed(MemberEvent("member-failed", [member("b")]), 6.0)
    h.feed(MemberEvent("member-join", [member("c")]), 6.0)
    h.run(8.0)
    got = [(t, e.type, [(x.name, x.tags) for x in e.members]) for t, e in h.out]
    assert got == [
        (1.0, "member-failed", [("b", {})]),
        (1.0, "member-update", [("a", {"v": "1"})]),
        (4.0, "member-update", [("a", {"v": "2"})]),
        (7.0, "member-join", [("c", {})]),
    ]


def test_member_events_come_out_in_serf_type_order():
    h = Harness()
    kinds = ["member-reap", "member-update", "member-failed", "member-leave", "member-join"]
    for i, kind in enumerate(kinds):
        h.feed(MemberEvent(kind, [member(f"n{i}")]), 0.0)
    h.run(2.0)
    assert [e.type for _, e in h.out] == list(reversed(kinds))


def test_user_events_with_the_same_newest_time_are_all_delivered_in_order():
    h = Harness()
    h.feed(UserEventReceived(4, "deploy", b"old", True), 0.0)
    h.feed(UserEventReceived(5, "deploy", b"one", True), 0.1)
    h.feed(UserEventReceived(5, "deploy", b"two", True), 0.2)
    h.feed(UserEventReceived(3, "deploy", b"older", True), 0.3)
    h.feed(UserEventReceived(1, "other", b"x", True), 0.3)
    h.run(5.0)
    assert [(t, e.name, e.payload) for t, e in h.out] == [
        (1.3, "deploy", b"one"), (1.3, "deploy", b"two"), (1.3, "other", b"x")]


def test_user_event_default_timing_is_one_quiet_second_or_three_seconds():
    h = Harness()
    h.feed(UserEventReceived(1, "a", b"", True), 0.0)
    h.run(0.999)
    assert h.out == []
    h.run(1.0)
    assert [t for t, _ in h.out] == [1.0]
    for i in range(8):  # every 0.5 s from 2.0: never quiet, so cut by the 3 s period
        h.feed(UserEventReceived(10 + i, "b", b"", True), 2.0 + i * 0.5)
    h.run(5.0)
    assert [(t, e.ltime) for t, e in h.out[1:]] == [(5.0, 15)]
