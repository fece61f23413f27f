"""Every membership and event behaviour of a mixed cluster, checked from both sides.

Two real serf 0.9.4 agents and two pyserf agents share one encrypted cluster. For each thing
that can happen to a member (join, tag change, user event, query, graceful leave, kill -9) the
test makes it happen on one kind and checks that the other kind saw it: through `serf members`
and `pyserf members` (JSON) on every agent, and through the member/user event handlers each
agent runs. The tests run in file order and share the cluster; the last two add and remove
their own extra agents, so the four core agents stay alive throughout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    SERF,
    Agent,
    Cluster,
    both_cli_views,
    event_logger,
    logged_events,
    run_cli,
    statuses,
    wait_until,
)

pytestmark = pytest.mark.e2e

CORE = ("s1", "p1", "s2", "p2")
TAGS = {"s1": {"kind": "serf"}, "s2": {"kind": "serf"}, "p1": {"kind": "py"},
        "p2": {"kind": "py"}}

# memberlist's LAN profile, which both implementations use by default.
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 0.5
SUSPICION_MULT = 4
SUSPICION_MAX_TIMEOUT_MULT = 6


class Mixed:
    def __init__(self, cluster: Cluster, tmp: Path, key: str) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.key = key
        self.by_name: dict[str, Agent] = {}

    def start(self, kind: str, name: str, *extra: str) -> Agent:
        handler = (f"-event-handler=member-join,member-leave,member-failed,member-update,user="
                   f"{event_logger(self.tmp)} {self.events_path(name)}")
        join = [f"-join={self.by_name['s1'].ip}"] if self.by_name else []
        agent = self.cluster.start(kind, name, f"-encrypt={self.key}", handler,
                                   "-event-handler=query:who=echo i-am-$SERF_SELF_NAME",
                                   *extra, *join)
        self.by_name[name] = agent
        return agent

    def events_path(self, name: str) -> Path:
        return self.tmp / f"{name}.events"

    def events(self, name: str) -> list[tuple[str, str, list[str]]]:
        return logged_events(self.events_path(name))

    def named_in(self, observer: str, kind: str) -> Counter[str]:
        """How often each member was named in `kind` events on observer's handler."""
        return Counter(word for k, _n, words in self.events(observer) if k == kind
                       for word in words)

    @property
    def core(self) -> list[Agent]:
        return [self.by_name[n] for n in CORE]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    tmp = tmp_path_factory.mktemp("interop-both-sides")
    key = subprocess.run([SERF, "keygen"], capture_output=True, text=True,
                         check=True).stdout.strip()
    cluster = Cluster(tmp)
    try:
        env = Mixed(cluster, tmp, key)
        for name in CORE:
            env.start("serf" if name.startswith("s") else "pyserf", name,
                      *[f"-tag=kind={TAGS[name]['kind']}"])
        wait_until(lambda: all(statuses(a.rpc) == dict.fromkeys(CORE, "alive")
                               for a in env.core), 20, what="four alive members everywhere")
        yield env
    finally:
        cluster.close()


def test_joins_seen_by_both_kinds_through_both_clis(mixed: Mixed) -> None:
    expected = {n: ("alive", TAGS[n]) for n in CORE}
    wait_until(lambda: all(v == expected for v in both_cli_views(mixed.core).values()), 15,
               what="every agent, through both CLIs, to list the four members with tags")
    # Member-join handlers: each agent learned of each member (itself included) exactly once,
    # whatever kind sent the alive message.
    for observer in CORE:
        wait_until(lambda o=observer: set(mixed.named_in(o, "member-join")) == set(CORE), 10,
                   what=f"member-join events for all four on {observer}")
        assert mixed.named_in(observer, "member-join") == Counter(CORE), observer


def test_tag_changes_seen_by_the_other_kind(mixed: Mixed) -> None:
    s1, p1 = mixed.by_name["s1"], mixed.by_name["p1"]
    # The real CLI retags the pyserf agent and pyserf's CLI retags the serf agent.
    for cli, agent in (("serf", p1), ("pyserf", s1)):
        out = run_cli(cli, "tags", "-set", f"changed-by={cli}", rpc=agent.rpc)
        assert (out.returncode, out.stdout) == (0, "Successfully updated agent tags\n")
    expected = {n: ("alive", TAGS[n]) for n in CORE}
    expected["p1"] = ("alive", {**TAGS["p1"], "changed-by": "serf"})
    expected["s1"] = ("alive", {**TAGS["s1"], "changed-by": "pyserf"})
    wait_until(lambda: all(v == expected for v in both_cli_views(mixed.core).values()), 15,
               what="both tag changes in every agent's view through both CLIs")
    for observer in CORE:
        wait_until(lambda o=observer: {"p1", "s1"} <= set(mixed.named_in(o, "member-update")),
                   10, what=f"member-update events for p1 and s1 on {observer}")
    # Put the tags back so later views compare against TAGS again.
    for cli, agent in (("serf", p1), ("pyserf", s1)):
        assert run_cli(cli, "tags", "-delete", "changed-by", rpc=agent.rpc).returncode == 0
    expected = {n: ("alive", TAGS[n]) for n in CORE}
    wait_until(lambda: all(v == expected for v in both_cli_views(mixed.core).values()), 15,
               what="the original tags back everywhere")


def test_user_events_from_each_kind_run_handlers_on_the_other(mixed: Mixed) -> None:
    sent = {"from-serf-agent": mixed.by_name["s2"], "from-pyserf-agent": mixed.by_name["p2"]}
    for event, agent in sent.items():
        out = run_cli("serf", "event", "-coalesce=false", event, "pay", rpc=agent.rpc)
        assert (out.returncode, out.stdout) == (
            0, f"Event '{event}' dispatched! Coalescing enabled: false\n")

    def user_events(observer: str) -> Counter[tuple[str, tuple[str, ...]]]:
        return Counter((name, tuple(words)) for kind, name, words in mixed.events(observer)
                       if kind == "user")

    want = Counter({(event, ("pay",)): 1 for event in sent})
    for observer in CORE:
        wait_until(lambda o=observer: set(user_events(o)) >= set(want), 15,
                   what=f"both user events handled on {observer}")
    # Each event ran each handler exactly once: rebroadcasts by the other kind are deduped.
    # A node retransmits an event RetransmitMult * ceil(log10(n + 1)) = 4 * 1 times, one per
    # 200 ms gossip round, so every rebroadcast has arrived 0.8 s after the last node got it;
    # 1.5 s leaves room for its handler to run.
    time.sleep(1.5)
    for observer in CORE:
        assert user_events(observer) == want, observer


def query(cli: str, agent: Agent, *args: str) -> dict:
    out = run_cli(cli, "query", "-format=json", "-timeout=2500ms", *args, "who",
                  rpc=agent.rpc)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_queries_answered_across_kinds(mixed: Mixed) -> None:
    everyone = {n: f"i-am-{n}\n" for n in CORE}
    for cli, origin in (("serf", "s1"), ("pyserf", "p1"), ("serf", "p2"), ("pyserf", "s2")):
        data = query(cli, mixed.by_name[origin])
        assert sorted(data["Acks"]) == sorted(CORE), (cli, origin, data)
        assert data["Responses"] == everyone, (cli, origin, data)
    # Filters select across kinds: the serf agent asks only the pyserf ones and vice versa.
    data = query("serf", mixed.by_name["s1"], "-tag=kind=py")
    assert data["Responses"] == {"p1": "i-am-p1\n", "p2": "i-am-p2\n"}
    assert sorted(data["Acks"]) == ["p1", "p2"]
    data = query("pyserf", mixed.by_name["p1"], "-node=s2")
    assert data == {"Acks": ["s2"], "Responses": {"s2": "i-am-s2\n"}}


def test_graceful_leaves_seen_by_the_other_kind(mixed: Mixed) -> None:
    leavers = [mixed.start("serf", "s-leaver"), mixed.start("pyserf", "p-leaver")]
    names = [a.name for a in leavers]
    wait_until(lambda: all(set(names) <= set(statuses(a.rpc)) for a in mixed.core), 15,
               what="the two leavers known everywhere")
    for agent in leavers:  # Ctrl-C: both kinds leave gracefully and exit 0
        assert mixed.cluster.stop(agent, signal.SIGINT) == 0, agent.log()
    wait_until(lambda: all(all(v.get(n, ("",))[0] == "left" for n in names)
                           for v in both_cli_views(mixed.core).values()), 20,
               what="both leavers 'left' on every agent through both CLIs")
    for observer in CORE:
        wait_until(lambda o=observer: set(names) <= set(mixed.named_in(o, "member-leave")),
                   10, what=f"member-leave events on {observer}")
        # A graceful leave is never reported as a failure, with one exception that is serf's
        # own: a real serf observer that missed every copy of a real serf leaver's leave
        # intent reports it failed when its goodbye arrives, then left (forced) after a
        # push-pull (benchmarks/graceful_leaves.py). pyserf observers report a goodbye as a
        # leave, and pyserf leavers send their intent straight to every member too.
        failed = set(names) & set(mixed.named_in(observer, "member-failed"))
        if observer.startswith("s"):
            failed.discard("s-leaver")
        assert not failed, observer


def test_kill_9_of_either_kind_is_seen_failed_by_the_other(mixed: Mixed) -> None:
    """kill -9 of a real serf agent and of a pyserf agent at the same moment.

    Bounds from memberlist's failure detector (LAN profile, both implementations):
    - lower: the victim is suspected after a failed probe (>= PROBE_TIMEOUT after the kill) and
      declared dead only when the suspicion timer ends, which is at least
      min = SUSPICION_MULT * max(1, log10(n)) * PROBE_INTERVAL = 4 s for n <= 10;
    - upper: every live node probes each member once per round of (n - 1) probe intervals, so
      someone suspects the victim within (n - 1) * PROBE_INTERVAL + PROBE_TIMEOUT; the timer then
      runs at most max = SUSPICION_MAX_TIMEOUT_MULT * min = 24 s (no confirmations), plus a few
      gossip rounds to reach every node. Slack for a loaded 2-core machine on top.
    """
    victims = [mixed.start("serf", "s-victim"), mixed.start("pyserf", "p-victim")]
    names = [a.name for a in victims]
    wait_until(lambda: all(all(statuses(a.rpc).get(n) == "alive" for n in names)
                           for a in mixed.core), 15, what="the victims alive everywhere")
    n = len(mixed.core) + len(victims)  # live members when the detector starts
    suspicion_min = SUSPICION_MULT * PROBE_INTERVAL  # max(1, log10(n)) == 1 for n <= 10
    suspicion_max = SUSPICION_MAX_TIMEOUT_MULT * suspicion_min
    upper = (n - 1) * PROBE_INTERVAL + PROBE_TIMEOUT + suspicion_max + 2.0 + 5.0  # gossip, slack

    killed = time.monotonic()
    for agent in victims:
        agent.proc.kill()
    for agent in victims:
        agent.proc.wait(5)
    seen: dict[tuple[str, str], float] = {}

    def all_failed() -> bool:
        for observer in mixed.core:
            view = statuses(observer.rpc)
            for victim in names:
                if view.get(victim) == "failed":
                    seen.setdefault((observer.name, victim), time.monotonic() - killed)
        return len(seen) == len(mixed.core) * len(names)

    wait_until(all_failed, upper, interval=0.1, what="both victims failed on every agent")
    first, last = min(seen.values()), max(seen.values())
    assert first >= suspicion_min, f"declared failed after {first:.2f}s < {suspicion_min}s"
    assert last <= upper, seen
    # Both CLIs on both kinds of agent say so; the core stays alive with its tags.
    expected = {**{n: ("alive", TAGS[n]) for n in CORE}, **{n: ("failed", {}) for n in names}}
    for view_of, view in both_cli_views(mixed.core).items():
        # (Members that earlier tests made leave are not this test's concern.)
        assert {n: v for n, v in view.items() if n in expected} == expected, view_of
    for observer in CORE:
        wait_until(lambda o=observer: set(names) <= set(mixed.named_in(o, "member-failed")),
                   10, what=f"member-failed events on {observer}")
        # (Only the victims: a serf observer may also have reported s-leaver, see above.)
        victims = Counter({n: c for n, c in mixed.named_in(observer, "member-failed").items()
                           if n in names})
        assert victims == Counter(names), observer
    print(f"kill -9 -> failed: first {first:.2f}s, last {last:.2f}s (bounds "
          f"{suspicion_min:.1f}..{upper:.1f}s)")
