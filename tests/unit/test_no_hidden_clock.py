"""No hidden clock: the machines take the time from the input that causes each thing, never
from a clock kept on the side (the scheduler used to carry one, set by every input)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyserf
from pyserf.memberlist.timers import Scheduler
from pyserf.sim import network
from pyserf.sim.network import build_cluster

PACKAGE = Path(pyserf.__file__).parent
# Everything that drives or extends the machines: the package and the benchmarks' what-ifs.
SOURCES = (PACKAGE, PACKAGE.parent / "benchmarks")


def clock_reads(tree: ast.AST) -> list[int]:
    """Lines reading or writing ``<...>scheduler.now`` (the side clock)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "now":
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name == "scheduler":
                lines.append(node.lineno)
    return lines


def test_no_machine_code_touches_a_scheduler_clock():
    found = {}
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            lines = clock_reads(ast.parse(path.read_text(), str(path)))
            if lines:
                found[str(path.relative_to(PACKAGE.parent))] = lines
    assert found == {}
    assert not hasattr(Scheduler(), "now")


def test_the_check_finds_a_clock_read():
    """The scan above is not vacuous: the shapes it must catch are caught."""
    code = "a = self.scheduler.now\nb = scheduler.now\nself.serf.scheduler.now = 1\nc = x.now\n"
    assert clock_reads(ast.parse(code)) == [1, 2, 3]


class WrongClockScheduler(Scheduler):
    """A scheduler whose side clock, were anyone to read it, is far off and never moves."""

    WRONG = -1_000_000.0

    @property
    def now(self) -> float:
        return self.WRONG

    @now.setter
    def now(self, value: float) -> None:
        pass


@pytest.fixture
def wrong_clock(monkeypatch):
    monkeypatch.setattr(network, "Scheduler", WrongClockScheduler)


def test_operation_outcomes_carry_the_time_of_the_input_that_finished_them(wrong_clock):
    """Tag updates and leaves finish when their broadcast is sent for the last time (inside a
    gossip round or a piggybacked send); a user event at once. Each outcome's time is the
    simulated time of the input that finished it, whatever a side clock would say."""
    net = build_cluster(4, seed=21)
    net.run_until(net.now + 3.0)
    assert isinstance(net.by_name["n1"].scheduler, WrongClockScheduler)
    outcomes: list[tuple[str, object, float, float]] = []

    def record(kind: str):
        return lambda outcome, when: outcomes.append((kind, outcome, when, net.now))

    n1, n2, n3 = net.by_name["n1"], net.by_name["n2"], net.by_name["n3"]
    net.when_done(n1, n1.serf.set_tags({"role": "lb"}, net.now), record("tags"))
    net.when_done(n3, n3.serf.user_event("deploy", b"v2", False, net.now), record("event"))
    net.run_until(net.now + 3.0)
    net.when_done(n2, n2.serf.leave(net.now), record("leave"))
    net.run_until(net.now + 5.0)
    assert sorted(kind for kind, *_ in outcomes) == ["event", "leave", "tags"]
    for kind, outcome, when, sim_time in outcomes:
        assert outcome is None, kind
        assert when == sim_time, (kind, when, sim_time)
    assert all(when > 3.0 for _, _, when, _ in outcomes)
