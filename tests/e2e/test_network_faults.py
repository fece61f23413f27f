"""Failure detection under network faults made with iptables on loopback (root only), between a
real serf agent and a pyserf agent, judged by the log lines memberlist writes on both sides.

Timers (LAN, 2 members): each agent probes the other every PI = 1 s and gives up on a probe PI
after it began (pyserf waits up to 0.5 s more for a TCP fallback already under way); a failed
probe starts a suspicion that, with no one to confirm it (k = 0 when n - 2 < SuspicionMult - 2),
lasts exactly min = SuspicionMult * max(1, log10(2)) * PI = 4 s before "Marking ... as failed".
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Agent, statuses, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

PI = 1.0
SUSPICION_MIN = 4 * max(1.0, math.log10(2)) * PI  # SuspicionMult * max(1, log10(n)) * PI
TCP_GRACE = 0.5  # pyserf: how long a failed probe waits for its TCP fallback to report
SLACK = 2.0  # scheduling on a loaded 2-core machine
# Had the fault led to a failure, it would show within: the next probe starting (PI), that
# probe failing (PI + TCP_GRACE), then the whole suspicion (SUSPICION_MIN).
FAILURE_WINDOW = PI + PI + TCP_GRACE + SUSPICION_MIN + SLACK

SUSPECT = "memberlist: Suspect {} has failed, no acks received"
FAILED = "memberlist: Marking {} as failed"
REFUTE = "memberlist: Refuting a suspect message"
FALLBACK = "Was able to connect to {} but other probes failed"


class Firewall:
    """iptables INPUT rules this test inserted, and only those, removed again."""

    def __init__(self) -> None:
        self.rules: list[list[str]] = []

    def drop(self, *match: str) -> None:
        rule = [*match, "-j", "DROP"]
        subprocess.run(["iptables", "-w", "5", "-I", "INPUT", *rule], check=True)
        self.rules.append(rule)

    def clear(self) -> None:
        while self.rules:
            subprocess.run(["iptables", "-w", "5", "-D", "INPUT", *self.rules.pop()], check=False)


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root and iptables")
    fw = Firewall()
    try:
        yield fw
    finally:
        fw.clear()


def since(agent: Agent, mark: int) -> str:
    return agent.log()[mark:]


def pair(cluster) -> tuple[Agent, Agent]:
    s1 = cluster.start("serf", "s1")
    p1 = cluster.start("pyserf", "p1", f"-join={s1.ip}")
    for agent in (s1, p1):
        wait_until(lambda a=agent: both_alive(a), 10, what=f"{agent.name} to see both alive")
    return s1, p1


def both_alive(agent: Agent) -> bool:
    view = statuses(agent.rpc)
    return (view.get("s1"), view.get("p1")) == ("alive", "alive")


def test_one_way_udp_loss_is_bridged_by_tcp_ping(cluster, need_serf, firewall):
    """Every datagram from p1 to s1 is dropped: p1's pings and its acks to s1 vanish, but the
    TCP fallback ping gets through both ways, so neither side suspects the other, however long
    we wait: no Suspect line through a whole FAILURE_WINDOW of further probes."""
    s1, p1 = pair(cluster)
    marks = {a.name: len(a.log()) for a in (s1, p1)}
    firewall.drop("-p", "udp", "-s", p1.ip, "-d", s1.ip)
    wait_until(lambda: FALLBACK.format("s1") in since(p1, marks["p1"]), 15,
               what="pyserf to fall back to a TCP ping")
    wait_until(lambda: FALLBACK.format("p1") in since(s1, marks["s1"]), 15,
               what="serf to fall back to a TCP ping at pyserf")
    fallbacks = {a.name: since(a, marks[a.name]).count("Was able to connect") for a in (s1, p1)}
    time.sleep(FAILURE_WINDOW)  # the negative check: a failure would have shown by now
    for agent, other in ((s1, "p1"), (p1, "s1")):
        text = since(agent, marks[agent.name])
        # Probing went on all along (about one fallback per PI), and none of it failed.
        assert text.count("Was able to connect") >= fallbacks[agent.name] + 2, text
        assert SUSPECT.format(other) not in text, text
        assert FAILED.format(other) not in text, text
        assert REFUTE not in text, text
        assert both_alive(agent), (agent.name, statuses(agent.rpc))


@pytest.mark.parametrize("accused_name", ["p1", "s1"])
def test_cut_off_node_is_suspected_then_refutes_and_never_fails(cluster, need_serf, firewall,
                                                                  accused_name):
    """Nothing reaches the accused (datagrams from its peer, streams to its memberlist port)
    until its peer logs a Suspect line about it. The accused's own probes still work through
    the TCP fallback (its outgoing streams leave from 127.0.0.1 and their replies come back),
    so it accuses nobody. Once let through, the accusation reaches it by gossip or by the next
    probe of a suspect (which carries it) within about a PI, and it refutes with a higher
    incarnation, well inside the 4 s suspicion: nobody is marked failed through a whole
    FAILURE_WINDOW. Run both ways: serf accusing pyserf, and pyserf accusing serf."""
    s1, p1 = pair(cluster)
    accused, accuser = (p1, s1) if accused_name == "p1" else (s1, p1)
    marks = {a.name: len(a.log()) for a in (s1, p1)}
    firewall.drop("-p", "udp", "-s", accuser.ip, "-d", accused.ip)
    # Outgoing TCP is not bound to the agent's address (it leaves from 127.0.0.1), so the
    # streams are cut by destination port; RPC (7373) still works.
    firewall.drop("-p", "tcp", "-d", accused.ip, "--dport", str(accused.port))
    wait_until(lambda: SUSPECT.format(accused.name) in since(accuser, marks[accuser.name]),
               PI + PI + TCP_GRACE + SLACK, what=f"{accuser.name} to suspect {accused.name}")
    firewall.clear()
    wait_until(lambda: REFUTE in since(accused, marks[accused.name]), SUSPICION_MIN,
               what=f"{accused.name} to refute the suspicion")
    time.sleep(FAILURE_WINDOW)  # the negative check: an unrefuted suspicion would expire
    # Whether or not the accused probed during the cut, it had no reason to suspect anyone.
    accused_log = since(accused, marks[accused.name])
    assert SUSPECT.format(accuser.name) not in accused_log, accused_log
    for agent, other in ((s1, "p1"), (p1, "s1")):
        text = since(agent, marks[agent.name])
        assert FAILED.format(other) not in text, text
        assert "EventMemberFailed" not in text, text
        assert both_alive(agent), (agent.name, statuses(agent.rpc))
