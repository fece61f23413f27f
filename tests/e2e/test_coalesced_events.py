"""Coalesced events end to end, on pyserf agents and a real serf agent in one cluster.

serf's agent coalesces before its handlers (command.go: CoalescePeriod 3 s, QuiescentPeriod
1 s, and the same for user events): a batch is flushed QUIET = 1 s after its last event or
PERIOD = 3 s after its first, whichever is first. From that:

- several coalescable user events of one name sent at once reach a handler as the last one
  only, no sooner than QUIET after they were sent and no later than PERIOD after (plus gossip
  and scheduling slack); events sent with coalescing off all arrive;
- several members joining at once reach a member-join handler as one invocation with one
  stdin line per member, within the same bounds.

Absence ("the earlier events never arrive", "no second invocation") is asserted only once a
whole PERIOD has passed since the burst, so a batch that a wrong coalescer would flush later
has had its chance.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from pyserf.client.rpc_client import RPCClient
from tests.e2e.harness import Agent, Cluster, members, run_cli, wait_until

pytestmark = pytest.mark.e2e

PERIOD, QUIET = 3.0, 1.0  # serf agent's (user) coalesce and quiescent periods
GOSSIP_SLACK = 1.5  # gossip reaches every member within a few 200 ms rounds
SCHED_SLACK = 2.0  # two shared, busy cores: handler start-up and polling

RECORDER = """#!/bin/sh
# One line per invocation: time | event | user event name | stdin (base64).
stdin=$(cat | base64 -w0)
printf '%s|%s|%s|%s\\n' "$(date +%s.%N)" "$SERF_EVENT" "$SERF_USER_EVENT" "$stdin" >> "$1"
"""


def invocations(path: Path) -> list[tuple[float, str, str, str]]:
    """(time, event, user event name, stdin) per complete handler invocation."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    result = []
    for line in lines:
        parts = line.split("|")
        if len(parts) == 4:  # a line still being written is not counted yet
            result.append((float(parts[0]), parts[1], parts[2],
                           base64.b64decode(parts[3]).decode()))
    return result


def test_user_and_member_events_coalesce_on_pyserf_and_serf(cluster: Cluster, need_serf,
                                                            tmp_path):
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    logs = {name: tmp_path / f"{name}.rec" for name in ("p1", "s1")}
    p1 = cluster.start("pyserf", "p1", f"-event-handler={script} {logs['p1']}")
    s1 = cluster.start("serf", "s1", f"-event-handler={script} {logs['s1']}")
    # A group that p1 and then s1 each merge with in one push-pull: three joins at once.
    s2 = cluster.start("serf", "s2")
    newcomers: list[Agent] = [s2, cluster.start("serf", "s3", f"-join={s2.ip}"),
                              cluster.start("pyserf", "p3", f"-join={s2.ip}")]
    wait_until(lambda: len(members("serf", s2.rpc)) == 3, 15, what="the group of three")
    wait_until(lambda: all(any(r[1] == "member-join" and f"{name}\t" in r[3]
                               for r in invocations(log)) for name, log in logs.items()),
               15, what="p1 and s1 to handle their own join")

    before = time.time()
    for agent in (p1, s1):  # s1's push-pull also brings p1: not one of the three
        out = run_cli("serf", "join", s2.ip, rpc=agent.rpc)
        assert out.returncode == 0, out.stderr
    after = time.time()
    names = {a.name for a in newcomers}

    def merge_records(log: Path) -> list[tuple[float, str, str, str]]:
        return [r for r in invocations(log)
                if r[1] == "member-join" and any(f"{n}\t" in r[3] for n in names)]

    wait_until(lambda: all(merge_records(log) for log in logs.values()),
               PERIOD + SCHED_SLACK + 5, what="the merged joins at p1 and s1")
    # Nothing later can belong to this burst once a whole PERIOD has passed.
    time.sleep(max(0.0, after + PERIOD + GOSSIP_SLACK - time.time()))
    for name, log in logs.items():
        records = merge_records(log)
        assert len(records) == 1, f"{name}: {len(records)} invocations for one burst"
        at, _event, _user, stdin = records[0]
        joined = {line.split("\t")[0] for line in stdin.splitlines()}
        assert names <= joined <= names | {"p1", "s1"}, (name, stdin)
        # Held for at least QUIET after the push-pull, flushed within PERIOD of it.
        assert before + QUIET <= at <= after + PERIOD + SCHED_SLACK, (name, at - before)

    # User events: a burst of coalescable ones per name, plus two that must not coalesce.
    with RPCClient(s1.rpc) as client:
        sent = time.time()
        for i in range(1, 5):
            client.user_event("deploy", f"v{i}".encode(), coalesce=True)
        client.user_event("other", b"a1", coalesce=True)
        last_coalescable = time.time()  # the batch is quiet QUIET after this arrives
        client.user_event("other", b"a2", coalesce=True)
        for i in range(1, 3):
            client.user_event("raw", f"r{i}".encode(), coalesce=False)
        burst_end = time.time()

    def user_records(log: Path) -> list[tuple[str, str]]:
        return [(r[2], r[3]) for r in invocations(log) if r[1] == "user"]

    wait_until(lambda: all({("deploy", "v4\n"), ("other", "a2\n")} <= set(user_records(log))
                           for log in logs.values()),
               PERIOD + GOSSIP_SLACK + SCHED_SLACK + 5, what="the coalesced user events")
    time.sleep(max(0.0, burst_end + PERIOD + GOSSIP_SLACK - time.time()))
    for name, log in logs.items():
        # The handler's stdin is the payload and a newline, as serf writes it.
        assert sorted(user_records(log)) == [("deploy", "v4\n"), ("other", "a2\n"),
                                             ("raw", "r1\n"), ("raw", "r2\n")], name
        for at, event, user, _stdin in invocations(log):
            if event == "user" and user != "raw":
                assert last_coalescable + QUIET <= at \
                    <= sent + GOSSIP_SLACK + PERIOD + SCHED_SLACK, (name, user, at - sent)
