"""The fault lab's measures (tests/e2e/faultlab.py) on made-up timelines: what the fault
benchmark reports is only as good as these, so each is checked against a hand count."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.e2e import faultlab as fl


@pytest.fixture
def cluster(tmp_path: Path) -> fl.Cluster:
    lab = SimpleNamespace(clusters=[], prefix="10.250", tag="pft", workdir=tmp_path)
    return fl.Cluster(lab, "c", ["pyserf", "serf", "pyserf", "serf"])  # c00..c03


def verdict(c: fl.Cluster, t: float, observer: int, member: int, kind: str) -> None:
    c.verdicts.append(fl.Verdict(t, f"c0{observer}", f"c0{member}", kind))


def test_false_failures_count_unfaulted_members_and_their_seconds(cluster: fl.Cluster) -> None:
    c = cluster
    c.faults.append(fl.Fault("killed", frozenset({"c03"}), 10.0, 20.0))
    verdict(c, 5.0, 0, 1, "failed")  # c01 never faulted: false, back after 2.5 s
    verdict(c, 7.5, 0, 1, "join")
    verdict(c, 6.0, 2, 1, "failed")  # ... and never back before the end (t = 30)
    verdict(c, 12.0, 0, 3, "failed")  # c03 was killed: a true verdict
    ff = fl.false_failures(c, 0.0, 30.0)
    assert ff["unfaulted"] == [2, pytest.approx(2.5 + 24.0)]
    assert ff["live"][0] == 2
    assert ff["by"] == {"pyserf->serf": (2, pytest.approx(26.5))}


def test_verdicts_of_a_cut_off_observer_and_across_a_cut_are_not_live(
        cluster: fl.Cluster) -> None:
    c = cluster
    c.faults.append(fl.Fault("isolated", frozenset({"c02"}), 0.0, 10.0,
                             cut=lambda x, y: x != y and "c02" in (x, y)))
    c.faults.append(fl.Fault("partition", frozenset({"c00", "c01"}), 0.0, 10.0,
                             cut=lambda x, y: {x, y} == {"c00", "c01"}))
    verdict(c, 5.0, 2, 3, "failed")  # by the isolated c02: its own problem, not counted
    verdict(c, 5.0, 0, 1, "failed")  # across the partition: expected, not live
    verdict(c, 5.0, 3, 0, "failed")  # c03 could reach c00: live, though c00 was faulted
    ff = fl.false_failures(c, 0.0, 20.0)
    assert ff["live"][0] == 1
    assert ff["unfaulted"][0] == 0  # c00 and c01 were in the partition, c03 never failed


def test_suspicions_of_unfaulted_members_are_counted_by_observer_kind(
        cluster: fl.Cluster) -> None:
    c = cluster
    c.faults.append(fl.Fault("paused", frozenset({"c01"}), 0.0, 10.0))
    c.suspects += [(1.0, "c00", "c01"), (2.0, "c01", "c00"), (3.0, "c03", "c02")]
    ff = fl.false_failures(c, 0.0, 10.0)
    # About the paused c01: expected. By the paused c01 about c00, and c03 about c02: not.
    assert ff["suspicions_by_observer"] == {"serf": 2}


def test_reconvergence_is_the_last_observer_to_see_everyone_alive(cluster: fl.Cluster) -> None:
    c = cluster
    verdict(c, 1.0, 0, 2, "failed")
    verdict(c, 1.0, 2, 0, "failed")
    verdict(c, 2.0, 1, 3, "failed")
    verdict(c, 11.0, 0, 2, "join")
    verdict(c, 13.5, 2, 0, "join")
    verdict(c, 12.0, 1, 3, "join")
    assert fl.reconvergence(c, 10.0, 60.0) == pytest.approx(3.5)
    assert fl.reconvergence(c, 10.0, 60.0, kind="serf") == pytest.approx(2.0)
    verdict(c, 14.0, 3, 1, "failed")  # a new failure after the heal, never repaired
    assert fl.reconvergence(c, 10.0, 60.0) is None
    assert fl.reconvergence(c, 10.0, 3.0) is None  # and the horizon is honoured


def test_event_delivery_counts_losses_and_duplicates_per_observer(cluster: fl.Cluster) -> None:
    c = cluster
    c.fired += [(0.0, "c00", "e1"), (1.0, "c00", "e2")]
    c.events["c00"] = Counter({"e1": 1, "e2": 1})
    c.events["c01"] = Counter({"e1": 2})
    c.events["c02"] = Counter({"e1": 1, "e2": 1, "other": 3})
    c.event_times.update({("c00", "e1"): 0.1, ("c00", "e2"): 1.5, ("c01", "e1"): 0.2})
    out = fl.event_delivery(c, ["c00", "c01", "c02", "c03"])
    assert out["lost"] == 3 and out["lost_at"] == {"c01": ["e2"], "c03": ["e1", "e2"]}
    assert out["duplicated"] == 1 and out["duplicated_at"] == {"c01": ["e1"]}
    assert out["max_latency_s"] == pytest.approx(0.5)


def test_detection_waits_for_every_running_observer(cluster: fl.Cluster) -> None:
    c = cluster
    c.faults.append(fl.Fault("killed", frozenset({"c01"}), 10.0, 30.0))
    c.faults.append(fl.Fault("left", frozenset({"c03"}), 9.0, 31.0))  # down: not asked
    kills = [{"cluster": "c", "agent": "c01", "t": 10.0, "graceful": False}]
    verdict(c, 14.0, 0, 1, "failed")
    assert fl.detection_times(c, kills)[0]["all"] is None  # c02 has not seen it yet
    verdict(c, 16.5, 2, 1, "failed")
    verdict(c, 40.0, 3, 1, "failed")  # after the restart: does not count
    got = fl.detection_times(c, kills)[0]
    assert got["all"] == pytest.approx(6.5)
    assert got["by_kind"] == {"pyserf": [4.0, 6.5], "serf": []}


def test_query_completeness_expects_only_reachable_members(cluster: fl.Cluster) -> None:
    c = cluster
    c.faults.append(fl.Fault("partition", frozenset({"c00", "c01", "c02", "c03"}), 0.0, 5.0,
                             cut=lambda x, y: (x in {"c00", "c01"}) != (y in {"c00", "c01"})))
    c.queries += [{"t": 1.0, "t1": 2.0, "origin": "c00", "acks": [], "responses": ["c00",
                                                                                    "c01"]},
                  {"t": 6.0, "t1": 7.0, "origin": "c00", "acks": ["c03"],
                   "responses": ["c00", "c01", "c02"]}]
    out = fl.query_completeness(c, ["c00", "c01", "c02", "c03"])
    assert out["queries"] == 2 and out["complete"] == 1
    assert out["mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert out["incomplete"][0]["missing"] == ["c03"]
    assert out["incomplete"][0]["acked_not_answered"] == ["c03"]
