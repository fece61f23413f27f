"""Lifeguard local health (memberlist awareness.go): the score moves by the deltas probes
report, stays within [0, max-1], and scales the probe interval and timeout by score+1."""

from __future__ import annotations

import pytest

from pyserf.memberlist.awareness import Awareness


def test_score_is_clamped_to_zero_and_max_minus_one():
    a = Awareness(max_multiplier=8)
    a.apply_delta(-1)
    assert a.score == 0
    for expected in range(1, 8):
        a.apply_delta(1)
        assert a.score == expected
    a.apply_delta(1)
    a.apply_delta(5)
    assert a.score == 7
    a.apply_delta(-3)
    assert a.score == 4


@pytest.mark.parametrize(("score", "scaled"), [(0, 1.0), (1, 2.0), (7, 8.0)])
def test_timeouts_scale_by_score_plus_one(score, scaled):
    a = Awareness(max_multiplier=8)
    a.apply_delta(score)
    assert a.score == score
    assert a.scale(1.0) == scaled
    assert a.scale(0.5) == scaled / 2
