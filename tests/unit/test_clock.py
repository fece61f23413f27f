"""Lamport clocks (serf lamport.go): increment returns the new time, witness moves past any time
not below ours, and all arithmetic wraps at 2^64 as Go's uint64 does."""

from __future__ import annotations

import pytest

from pyserf.memberlist.fields import U64_MAX
from pyserf.serf.clock import LamportClock, ltime_add


def test_a_new_clock_starts_at_zero_and_increments_by_one():
    c = LamportClock()
    assert c.time == 0
    assert c.increment() == 1
    assert c.increment() == 2
    assert c.time == 2


@pytest.mark.parametrize(("ltime", "delta", "want"), [
    (5, 3, 8),
    (5, -3, 2),
    (U64_MAX, 1, 0),
    (U64_MAX, 2, 1),
    (0, -1, U64_MAX),
])
def test_ltime_add_wraps_like_a_go_uint64(ltime, delta, want):
    assert ltime_add(ltime, delta) == want


def test_increment_wraps_from_the_top_to_zero():
    c = LamportClock()
    c.time = U64_MAX
    assert c.increment() == 0
    assert c.time == 0


def test_witness_of_an_older_time_changes_nothing():
    c = LamportClock()
    c.time = 10
    c.witness(9)
    assert c.time == 10
    c.witness(0)
    assert c.time == 10


def test_witness_of_an_equal_or_newer_time_moves_one_past_it():
    c = LamportClock()
    c.time = 10
    c.witness(10)  # equal: the next message must still sort after the one seen
    assert c.time == 11
    c.witness(20)
    assert c.time == 21
    assert c.increment() == 22


def test_witness_of_the_top_time_wraps_to_zero():
    c = LamportClock()
    c.witness(U64_MAX)
    assert c.time == 0
