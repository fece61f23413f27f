"""Idle agents sleep, and still notice a failure in time.

Commit 2fafccd made an idle pyserf agent stop its gossip loop while nothing is queued and
cancel the timers of answered probes. An idle agent in an N-node LAN cluster then wakes only
for (per probe interval PI = 1 s): its probe tick, the ack to its probe, and the pings of the
other N-1 agents, which each probe one of their N-1 peers per interval (one a PI on average);
plus a push-pull each way every PUSH_PULL = 30 s. So
    wake-ups/s <= 3 / PI + 2 / PUSH_PULL   (+ slack for an occasional extra)
and the gossip loop left running would add 1 / GOSSIP = 5 a second. Wake-ups are the agent's
voluntary context switches (it is one thread blocked in epoll), read from /proc; its CPU
seconds (utime + stime from /proc/<pid>/stat) are compared with real serf agents measured
over the same window, in the same (noisy) conditions.

Then one agent of each cluster is killed: the two survivors must see it failed within
Lifeguard's bound (derived in the test body), on pyserf as on serf.

The test takes ~25 s: the idle window must span several probe intervals, and detection takes
the suspicion timeout (4 s at N = 3) by design.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.harness import Agent, Cluster, members, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

PI, PROBE_TIMEOUT, GOSSIP, PUSH_PULL = 1.0, 0.5, 0.2, 30.0  # the lan profile
SUSPICION_MULT, N = 4, 3
WAKES_PER_S = 3 / PI + 2 / PUSH_PULL + 0.2  # bound per agent (formula in the docstring)
SETTLE = 3.0 + 1.0  # pyserf's post-join catch-up push-pulls (3 s), then queues drain
WINDOW = 8.0
CPU_RATIO = 3.0  # generous: pyserf measured ~0.3-0.5x serf's idle CPU
SLACK = 2.5  # two shared, busy cores


def cpu_ticks(agent: Agent) -> int:
    """utime + stime of the whole process, in clock ticks (fields 14 and 15)."""
    fields = Path(f"/proc/{agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wake_ups(agent: Agent) -> int:
    for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/<pid>/status")


def three(cluster: Cluster, kind: str) -> list[Agent]:
    first = cluster.start(kind, f"{kind}1")
    return [first, *(cluster.start(kind, f"{kind}{i}", f"-join={first.ip}") for i in (2, 3))]


def status_everywhere(observers: list[Agent], name: str) -> set[str]:
    """The statuses the observers report for ``name`` (empty string where unknown)."""
    return {members("serf", a.rpc).get(name, ("", ""))[1] for a in observers}


def test_idle_agents_sleep_and_still_detect_a_failure(cluster: Cluster, need_serf):
    py, go = three(cluster, "pyserf"), three(cluster, "serf")
    for group in (py, go):
        wait_until(lambda g=group: all(len(members("serf", a.rpc)) == N for a in g), 15,
                   what=f"{group[0].kind} cluster of three")
    time.sleep(SETTLE)

    # The idle window: nobody talks to the agents but each other.
    agents = py + go
    cpu0, wake0, t0 = [cpu_ticks(a) for a in agents], [wake_ups(a) for a in py], \
        time.monotonic()
    time.sleep(WINDOW)
    cpu1, wake1, elapsed = [cpu_ticks(a) for a in agents], [wake_ups(a) for a in py], \
        time.monotonic() - t0
    py_cpu, go_cpu = sum(cpu1[:N]) - sum(cpu0[:N]), sum(cpu1[N:]) - sum(cpu0[N:])
    rate = (sum(wake1) - sum(wake0)) / N / elapsed
    print(f"idle {elapsed:.1f}s: pyserf {rate:.2f} wake-ups/s per agent, CPU ticks pyserf "
          f"{py_cpu} vs serf {go_cpu}")
    assert rate <= WAKES_PER_S, f"{rate:.2f} wake-ups/s per idle pyserf agent"
    # Ticks are 10 ms: a serf cluster idles at a few ticks in the window, never at zero.
    assert py_cpu <= CPU_RATIO * max(go_cpu, 1), (py_cpu, go_cpu)

    # Failure detection: the dead node is probed within (N-1) rounds of PI (round robin),
    # found unreachable by the end of that round (PI), then suspected. With N - 2 = 1 other
    # survivor, fewer than the SUSPICION_MULT - 2 = 2 confirmations Lifeguard asks for can
    # exist, so none are expected (k = 0) and the suspicion runs exactly its minimum,
    # SUSPICION_MULT * max(1, log10(N)) * PI = 4 s; the dead message is then gossiped.
    suspicion_min = SUSPICION_MULT * 1 * PI
    upper = (N - 1) * PI + PI + suspicion_min + GOSSIP + SLACK
    killed = time.monotonic()
    for group in (py, go):
        group[-1].proc.kill()
    seen: dict[str, float] = {}

    def all_failed() -> bool:  # both clusters polled together, so each time is its own
        for group in (py, go):
            victim = group[-1]
            if victim.kind not in seen and status_everywhere(group[:-1], victim.name) == \
                    {"failed"}:
                seen[victim.kind] = time.monotonic() - killed
        return len(seen) == 2

    wait_until(all_failed, upper + 2, interval=0.1, what="the killed agents failed at both "
               "survivors of their cluster")
    print(f"failed seen after kill -9: {seen}")
    for kind, took in seen.items():
        assert suspicion_min <= took <= upper, f"{kind}: failed seen {took:.2f}s after kill"
