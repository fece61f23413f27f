"""Lifeguard suspicion (memberlist suspicion.go): the deadline starts at the maximum timeout and
shrinks with each independent confirmation, down to the minimum once k peers have confirmed.

    timeout(n) = max(min, floor_ms(max - (max - min) * log(n + 1) / log(k + 1)))

with n the confirmations so far (the accuser does not count) and floor_ms rounding down to a
whole millisecond. The expected values below are worked out by hand from that formula."""

from __future__ import annotations

import math

import pytest

from pyserf.memberlist.suspicion import Suspicion

START = 100.0
MIN, MAX = 2.0, 12.0


def test_a_fresh_suspicion_waits_the_maximum_and_counts_no_confirmation():
    s = Suspicion("accuser", k=3, min_timeout=MIN, max_timeout=MAX, now=START)
    assert (s.k, s.min, s.max, s.start) == (3, MIN, MAX, START)
    assert s.count == 0
    assert s.deadline == START + MAX
    assert s.timer is None


@pytest.mark.parametrize(("k", "timeout"), [(0, MIN), (1, MAX), (2, MAX)])
def test_without_expected_confirmations_the_minimum_applies_at_once(k, timeout):
    """k < 1 (too few peers to confirm) means nothing can shorten the wait: use the minimum."""
    s = Suspicion("accuser", k=k, min_timeout=MIN, max_timeout=MAX, now=START)
    assert s.deadline == START + timeout


def test_each_confirmation_moves_the_deadline_by_the_log_formula():
    s = Suspicion("accuser", k=3, min_timeout=MIN, max_timeout=MAX, now=START)
    # n=1: 12 - 10*log(2)/log(4) = 12 - 5 = 7.0
    assert s.confirm("b") is True
    assert s.count == 1
    assert s.deadline == pytest.approx(START + 7.0, abs=1e-9)
    # n=2: 12 - 10*log(3)/log(4) = 4.07518..., floored to the millisecond: 4.075
    assert s.confirm("c") is True
    assert s.count == 2
    assert s.deadline == pytest.approx(START + 4.075, abs=1e-9)
    # n=3=k: 12 - 10 = 2.0, the minimum
    assert s.confirm("d") is True
    assert s.count == 3
    assert s.deadline == pytest.approx(START + MIN, abs=1e-9)


def test_formula_matches_an_independent_evaluation_for_other_parameters():
    k, lo, hi = 5, 1.5, 9.0
    s = Suspicion("x", k=k, min_timeout=lo, max_timeout=hi, now=7.0)
    for n in range(1, k + 1):
        assert s.confirm(f"peer{n}")
        want = math.floor((hi - math.log(n + 1) / math.log(k + 1) * (hi - lo)) * 1000) / 1000
        assert s.deadline == pytest.approx(7.0 + max(want, lo), abs=1e-9)


def test_confirmations_past_k_duplicates_and_the_accuser_are_not_new():
    s = Suspicion("accuser", k=2, min_timeout=MIN, max_timeout=MAX, now=START)
    assert s.confirm("accuser") is False  # the accuser is not independent
    assert s.count == 0
    assert s.deadline == START + MAX
    assert s.confirm("b") is True
    assert s.confirm("b") is False  # the same peer twice
    assert s.count == 1
    assert s.confirm("c") is True
    before = s.deadline
    assert s.confirm("d") is False  # k reached: not re-gossiped
    assert s.count == 2
    assert s.deadline == before


def test_the_deadline_never_falls_below_the_minimum_after_millisecond_flooring():
    """With a minimum that is not a whole millisecond, floor_ms(min) < min: the max() keeps it."""
    lo = 2.0005
    s = Suspicion("accuser", k=1, min_timeout=lo, max_timeout=3 * lo, now=START)
    assert s.confirm("b") is True
    assert s.deadline == START + lo


def test_the_first_deadline_value_for_k5():
    # n=1 of k=5: 9 - 7.5*log(2)/log(6) = 6.0985..., floored to 6.098
    s = Suspicion("x", k=5, min_timeout=1.5, max_timeout=9.0, now=0.0)
    assert s.confirm("p") is True
    assert s.deadline == pytest.approx(6.098, abs=1e-9)
