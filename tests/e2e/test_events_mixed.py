"""Events and queries across a mixed cluster: 3 pyserf + 2 real serf agents."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.harness import SERF, Agent, Cluster, run_cli, statuses, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mixed_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("events-mixed")


@pytest.fixture(scope="module")
def five(mixed_tmp: Path) -> Iterator[list[Agent]]:
    """Five agents, each with a handler logging user events and answering query 'who'.
    Shared by the module: no test changes membership (the relay test removes its drops)."""
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    cluster = Cluster(mixed_tmp)
    try:
        agents: list[Agent] = []
        for kind, name in (("pyserf", "p1"), ("serf", "s1"), ("pyserf", "p2"), ("serf", "s2"),
                           ("pyserf", "p3")):
            log = mixed_tmp / f"{name}.events"
            handlers = [f"-event-handler=user=echo $SERF_USER_EVENT $(cat) >> {log}",
                        "-event-handler=query:who=echo i-am-$SERF_SELF_NAME"]
            join = [f"-join={agents[0].ip}"] if agents else []
            agents.append(cluster.start(kind, name, *handlers, *join))
        wait_until(lambda: all(len(statuses(a.rpc)) == 5 for a in agents), 20,
                   what="five members everywhere")
        yield agents
    finally:
        cluster.close()


def handled(tmp: Path, name: str) -> str:
    try:
        return (tmp / f"{name}.events").read_text()
    except OSError:
        return ""


def test_user_events_from_either_kind_run_handlers_on_all_five(five, mixed_tmp):
    p1, s1 = five[0], five[1]
    for cli, agent, event in (("pyserf", p1, "from-pyserf"), ("serf", s1, "from-serf"),
                              ("serf", p1, "serf-cli-at-pyserf")):
        out = run_cli(cli, "event", "-coalesce=false", event, "payload", rpc=agent.rpc)
        assert out.returncode == 0, out.stdout
    for agent in five:
        wait_until(lambda a=agent: all(f"{e} payload" in handled(mixed_tmp, a.name) for e in (
            "from-pyserf", "from-serf", "serf-cli-at-pyserf")), 15,
            what=f"handlers on {agent.name}")
        text = handled(mixed_tmp, agent.name)
        assert text.count("from-pyserf") == 1 and text.count("from-serf") == 1


def query_json(cli: str, agent: Agent, *args: str, complete: set[str]) -> dict:
    """`query -format=json` through ``cli``; asked once more if a node in ``complete`` did not
    answer. A query reaches nodes only by gossip: at five nodes each holder passes it on 4
    times (4 * ceil(log10(6))), to 3 random peers in one round and 1 in the next, so a given
    holder misses a given peer with probability 1/4 * 3/4 = 3/16, and a node is missed by all
    four others with (3/16)**4 = 0.12 %: ~0.5 % per query for some node, in serf as in pyserf
    (seen once in a clean-clone run of the test command). A node that never answers fails
    both tries."""
    data: dict = {}
    for _ in range(2):
        out = run_cli(cli, "query", "-format=json", *args, rpc=agent.rpc)
        assert out.returncode == 0, out.stdout
        data = json.loads(out.stdout)
        if complete <= set(data["Responses"]):
            break
    return data


def test_queries_from_either_kind_get_all_five_answers(five):
    expected = {a.name: f"i-am-{a.name}\n" for a in five}
    for cli, agent in (("pyserf", five[0]), ("serf", five[1]), ("serf", five[2])):
        data = query_json(cli, agent, "who", complete=set(expected))
        assert sorted(data["Acks"]) == sorted(expected), (cli, agent.name, data)
        assert data["Responses"] == expected, (cli, agent.name, data)


def test_reachability_both_ways(five):
    for cli, agent in (("serf", five[1]), ("serf", five[0]), ("pyserf", five[0]),
                       ("pyserf", five[1])):
        out = run_cli(cli, "reachability", rpc=agent.rpc)
        if out.returncode == 1 and "Received less acks than live nodes" in out.stdout:
            # The ping query's deadline is the agent's default (3.2 s for five members) and
            # the CLI has no flag for it: one ack missed it once in CI's e2e tier (four
            # workers, agents under coverage, 2 cores). A second try must then succeed.
            out = run_cli(cli, "reachability", rpc=agent.rpc)
        assert out.returncode == 0, (cli, agent.name, out.stdout)
        assert "Total members: 5, live members: 5" in out.stdout
        assert "Successfully contacted all live nodes" in out.stdout


def test_query_filters_across_kinds(five):
    p1 = five[0]
    data = query_json("serf", p1, "-node=s2", "-node=p3", "who", complete={"s2", "p3"})
    assert data["Responses"] == {"s2": "i-am-s2\n", "p3": "i-am-p3\n"}
    out = run_cli("pyserf", "query", "-no-ack", "-node=s1", "who", rpc=five[3].rpc)
    assert out.stdout.splitlines() == ["Query 'who' dispatched", "Response from 's1': i-am-s1",
                                       "Total Responses: 1"]


@pytest.mark.serial
def test_serf_cli_gets_every_response_from_a_pyserf_agent(five):
    """`serf query` against a pyserf agent whose query ends early (everyone answered) gets
    every ack and response. The loss this guards against is a scheduling race in the real
    CLI (it closes its channels on "done"; measured 1 run in 10 to 1 in 20 with GOMAXPROCS=1
    when "done" followed the last answer at once), so 40 runs: a 1-in-10 loss goes unseen
    with probability 0.9**40 = 1.5 %."""
    names = {a.name for a in five}
    lost: list[str] = []
    unanswered = 0
    for _ in range(40):
        out = run_cli("serf", "query", "-format=json", "-timeout=5s", "who", rpc=five[0].rpc,
                      env={"GOMAXPROCS": "1"})
        assert out.returncode == 0, out.stdout + out.stderr
        data = json.loads(out.stdout)
        acks, responses = set(data["Acks"]), set(data["Responses"])
        # The race loses the tail of ONE channel: a node's ack without its response or the
        # reverse. A node missing from both never answered in time (a loaded machine), which
        # is not this bug; a few such runs are tolerated, not many.
        if acks != responses:
            lost.append(out.stdout)
            break
        unanswered += acks != names
    assert not lost, lost
    assert unanswered <= 3, f"{unanswered} of 40 queries lacked a whole answer"


@contextmanager
def udp_dropped(pairs: list[tuple[Agent, Agent]]) -> Iterator[None]:
    """Drop every UDP datagram from each (sender, receiver) pair's sender address to its
    receiver address, on arrival (INPUT): a drop on OUTPUT makes sendto() fail with EPERM,
    which the sender notices and real loss never shows. Only rules for this test's own 127.x
    addresses are added, and exactly those are deleted afterwards."""
    rules = [["INPUT", "-p", "udp", "-s", src.ip, "-d", dst.ip, "-j", "DROP"]
             for src, dst in pairs]
    added: list[list[str]] = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-w", "5", "-I", *rule], check=True, timeout=15)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-w", "5", "-D", *rule], check=True, timeout=15)


QUERY_LINE = re.compile(r"Ack from '(?P<ack>[^']+)'|Response from '(?P<resp>[^']+)': (?P<text>.*)"
                        r"|Total (?P<total>Acks|Responses): (?P<n>\d+)|Query 'who' dispatched")


def tally(stdout: str) -> tuple[Counter[str], Counter[tuple[str, str]], dict[str, int]]:
    """Every line of `query` text output counted: acks by node, responses by (node, text), and
    the totals the CLI printed. A line of any other shape fails the test."""
    acks: Counter[str] = Counter()
    responses: Counter[tuple[str, str]] = Counter()
    totals: dict[str, int] = {}
    for line in stdout.splitlines():
        match = QUERY_LINE.fullmatch(line)
        assert match, f"unexpected query output line {line!r} in:\n{stdout}"
        if match["ack"]:
            acks[match["ack"]] += 1
        elif match["resp"]:
            responses[(match["resp"], match["text"])] += 1
        elif match["total"]:
            totals[match["total"]] = int(match["n"])
    return acks, responses, totals


def assert_answered_once(stdout: str, names: list[str]) -> None:
    acks, responses, totals = tally(stdout)
    assert acks == Counter(names), stdout
    assert responses == Counter((n, f"i-am-{n}") for n in names), stdout
    assert totals == {"Acks": len(names), "Responses": len(names)}, stdout


# Deadlines of 2-4 s for answers that take extra hops: in the parallel e2e run (four workers,
# agents under coverage, 2 cores) a responder whose direct path was open went missing twice
# in this session's four full runs, so it runs in the serial tier, alone.
@pytest.mark.serial
def test_relayed_responses_arrive_exactly_once_when_the_direct_path_drops(five):
    """-relay-factor=3 when answers straight to the querier are lost.

    With UDP from two responders to the querier dropped, a response (and ack) reaches the
    querier only through the members the responder picks as relays (serf: up to relay-factor
    alive members other than itself, the querier included). In a cluster of 5 that is 3 of 4
    candidates, so at least one relay neither is the querier nor is cut off from it. The
    control query (relay-factor 0) proves the drops work: those responders go missing.
    Relayed answers take two extra hops (and the query its gossip rounds), so those queries get
    4 s: with 2 s one relayed answer missed the deadline once on a loaded machine (load 5-6).
    """
    p1, s1, p2, s2, p3 = five
    names = [a.name for a in five]
    # A real serf querier: pyserf p1 must relay its own answers, and the answers of the real
    # serf responder s2 can only arrive through pyserf relays (p1 is cut off from s1 too).
    with udp_dropped([(p1, s1), (s2, s1)]):
        out = run_cli("serf", "query", "-relay-factor=0", "-timeout=2s", "who", rpc=s1.rpc)
        assert out.returncode == 0, out.stdout + out.stderr
        assert_answered_once(out.stdout, ["s1", "p2", "p3"])
        out = run_cli("serf", "query", "-relay-factor=3", "-timeout=4s", "who", rpc=s1.rpc)
        assert out.returncode == 0, out.stdout + out.stderr
        assert_answered_once(out.stdout, names)
    # A pyserf querier: relayed copies of s1's and p2's answers come in through the other
    # kind, and the direct copies of everyone else's answers arrive up to 4 times: each node
    # must still be listed exactly once, by either CLI.
    with udp_dropped([(s1, p1), (p2, p1)]):
        out = run_cli("pyserf", "query", "-relay-factor=0", "-timeout=2s", "who", rpc=p1.rpc)
        assert out.returncode == 0, out.stdout + out.stderr
        assert_answered_once(out.stdout, ["p1", "s2", "p3"])
        for cli in ("pyserf", "serf"):
            out = run_cli(cli, "query", "-relay-factor=3", "-timeout=4s", "who", rpc=p1.rpc)
            assert out.returncode == 0, out.stdout + out.stderr
            assert_answered_once(out.stdout, names)
