"""Short, bounded fault scenarios on a mixed cluster in network namespaces, asserting the
invariants the long campaigns measure (benchmarks/faults.py, results in
benchmarks/results/faults.json): starved or paused agents and lossy links cause no false
failure of an unfaulted member, a healed partition reconverges within a bound the protocol
gives, churn loses and duplicates no user event, and nothing is left in a wrong state.

One cluster of N agents (pyserf at even positions, serf at odd ones) lives for the whole
module; each test applies its fault, lifts it, and leaves the cluster converged for the next.

Timers (memberlist LAN profile, serf agent defaults) the bounds come from, at N = 8:
- probe interval PI = 1 s; suspicion lasts between SuspicionMult * max(1, log10(N)) * PI
  = 4 * 0.903 -> 4 s (rounded up by max) and 6x that, 24 s, shortened by confirmations;
- serf retries one failed member every RECONNECT = 30 s (each agent, with probability
  failed/alive, which is 1 in a 4|4 split); one successful reconnect is a push-pull that
  revives the whole other side at once, and the alive news reaches everyone by gossip in
  about GOSSIP_SPREAD = 3 s (0.2 s rounds to 3 peers);
- user events missed while cut off come back with push-pulls (every 30 s below 32 members).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import faultlab as fl

pytestmark = pytest.mark.e2e

N = 8
RECONNECT = 30.0
PUSH_PULL = 30.0
GOSSIP_SPREAD = 3.0
SLACK = 5.0  # a loaded 2-core machine
HEAL_BOUND = RECONNECT + GOSSIP_SPREAD + SLACK
STARVED = [1, 2]  # one serf, one pyserf agent
STABLE = [0, 1, 2, 3, 4, 5]  # never churned: senders and observers of events
CHURNABLE = [6, 7]


class Run:
    """The lab, its cluster and the traffic of the test under way."""

    def __init__(self, lab: fl.Lab, cluster: fl.Cluster) -> None:
        self.lab = lab
        self.c = cluster
        self.rng = random.Random(7)
        self.load: list[fl.Every] = []

    def start_traffic(self, senders: list[int]) -> float:
        # Each test judges only what happened during it.
        self.c.verdicts.clear()
        self.c.fired.clear()
        self.c.queries.clear()
        self.c.events.clear()
        self.c.event_times.clear()
        self.c.faults.clear()
        self.load = fl.traffic(self.lab, [self.c], {self.c.label: self.c.by_index(senders)},
                               event_every=0.5, query_every=3.0, limit=300, rng=self.rng)
        return time.monotonic()

    def stop_traffic(self) -> None:
        for every in self.load:
            every.stop()

    def names(self, indices: list[int]) -> list[str]:
        return [self.c.agents[i].name for i in indices]

    def settle(self, observers: list[int], events_within: float = 20.0) -> dict:
        """Wait until converged and every event is everywhere; return the delivery record."""
        assert self.lab.wait_converged([self.c], 60) is not None, fl.converged_report(self.c)
        fl.wait_events_delivered(self.c, self.names(observers), events_within)
        return fl.event_delivery(self.c, self.names(observers))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    why = fl.missing_prerequisites()
    if why:
        pytest.skip("the fault lab needs " + ", ".join(why))
    with fl.lab(Path(tmp_path_factory.mktemp("faults"))) as lab:
        cluster = lab.cluster("f", ["pyserf" if i % 2 == 0 else "serf" for i in range(N)])
        lab.form([cluster])
        yield Run(lab, cluster)


def no_false_failures(run: Run, t0: float) -> None:
    ff = fl.false_failures(run.c, t0, time.monotonic())
    assert ff["unfaulted"][0] == 0, ff["detail"]


def test_starved_agents_cause_no_false_failure_of_others(run: Run) -> None:
    t0 = run.start_traffic(STABLE)
    starved = run.c.by_index(STARVED)
    run.lab.starve(run.c, starved, 1)  # 5 % rarely bites an idle agent of 8
    time.sleep(25)
    run.lab.unstarve(run.c, starved)
    run.stop_traffic()
    # The cap bit: the kernel held each starved agent back.
    for agent in starved:
        assert run.lab.throttled[agent.name]["nr_throttled"] > 0, run.lab.throttled
    no_false_failures(run, t0)
    delivery = run.settle(list(range(N)))
    assert (delivery["lost"], delivery["duplicated"]) == (0, 0), delivery
    assert fl.query_completeness(run.c, run.names(list(range(N))))["mean"] > 0.9


def test_sigstop_pauses_cause_no_false_failure_of_others(run: Run) -> None:
    t0 = run.start_traffic(STABLE)
    pauser = fl.pauses(run.lab, [run.c], STARVED, stop_for=0.3, every=2.0, limit=20)
    time.sleep(20)
    pauser.stop()
    fl.end_pauses(run.lab, [run.c], STARVED)
    run.stop_traffic()
    no_false_failures(run, t0)
    delivery = run.settle(list(range(N)))
    assert (delivery["lost"], delivery["duplicated"]) == (0, 0), delivery


def test_ten_percent_loss_everywhere_loses_nothing(run: Run) -> None:
    t0 = run.start_traffic(STABLE)
    run.lab.loss(run.c, run.c.agents, 0.10)
    time.sleep(25)
    run.lab.heal(run.c)
    run.stop_traffic()
    ff = fl.false_failures(run.c, t0, time.monotonic())
    assert ff["live"][0] == 0, ff["detail"]
    # Gossip retransmits each event several times and push-pulls repair the rest.
    delivery = run.settle(list(range(N)), events_within=2 * PUSH_PULL)
    assert (delivery["lost"], delivery["duplicated"]) == (0, 0), delivery


def test_partition_heals_within_the_reconnect_bound(run: Run) -> None:
    t0 = run.start_traffic(STABLE)
    half = N // 2
    run.lab.partition(run.c, run.c.agents[:half], run.c.agents[half:])
    # Hold until both sides hold the other failed (so the heal has something to repair).
    cross = {(a.name, b.name) for a in run.c.agents[:half] for b in run.c.agents[half:]}
    cross |= {(b, a) for a, b in cross}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        failed = {(v.observer, v.member) for v in run.c.verdicts if v.kind == "failed"}
        if cross <= failed:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the partition was never detected: {sorted(cross - failed)[:5]}")
    t_heal = run.lab.heal(run.c)
    assert run.lab.wait_converged([run.c], HEAL_BOUND + 20) is not None
    run.stop_traffic()
    took = fl.reconvergence(run.c, t_heal, HEAL_BOUND + 20)
    assert took is not None and took <= HEAL_BOUND, took
    # Nobody on the same side was accused.
    ff = fl.false_failures(run.c, t0, time.monotonic())
    assert ff["live"][0] == 0, ff["detail"]
    # Events fired on either side reach the other by push-pull.
    delivery = run.settle(list(range(N)), events_within=2 * PUSH_PULL + SLACK)
    assert (delivery["lost"], delivery["duplicated"]) == (0, 0), delivery


def test_churn_loses_no_event_and_leaves_no_one_stuck(run: Run) -> None:
    t0 = run.start_traffic(STABLE)
    churn = fl.Churn(run.lab, [run.c], CHURNABLE, STABLE, every=8.0, limit=32,
                     rng=run.rng, restart=(3.0, 6.0))
    time.sleep(32)
    churn.stop()
    run.stop_traffic()
    assert len(churn.kills) >= 3
    assert all(a.up() for a in run.c.agents)
    no_false_failures(run, t0)
    delivery = run.settle(STABLE)
    assert (delivery["lost"], delivery["duplicated"]) == (0, 0), delivery
    # A graceful leave is seen as a leave, never as a failure.
    for kill in (k for k in churn.kills if k["graceful"]):
        back = fl.fault_end(run.c, kill)
        wrong = [v.observer for v in run.c.verdicts if v.member == kill["agent"]
                 and kill["t"] <= v.t <= back and v.kind == "failed"]
        assert not wrong, (kill, wrong)
