"""Events and queries across a mixed cluster: 3 pyserf + 2 real serf agents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import members, run_cli, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def five(cluster, need_serf, tmp_path):
    """Five agents, each with a handler logging user events and answering query 'who'."""
    agents = []
    for kind, name in (("pyserf", "p1"), ("serf", "s1"), ("pyserf", "p2"), ("serf", "s2"),
                       ("pyserf", "p3")):
        log = tmp_path / f"{name}.events"
        handlers = [f"-event-handler=user=echo $SERF_USER_EVENT $(cat) >> {log}",
                    "-event-handler=query:who=echo i-am-$SERF_SELF_NAME"]
        join = [f"-join={agents[0].ip}"] if agents else []
        agents.append(cluster.start(kind, name, *handlers, *join))
    wait_until(lambda: all(len(members("pyserf", a.rpc)) == 5 for a in agents), 20,
               what="five members everywhere")
    return agents


def handled(tmp: Path, name: str) -> str:
    try:
        return (tmp / f"{name}.events").read_text()
    except OSError:
        return ""


def test_user_events_from_either_kind_run_handlers_on_all_five(five, tmp_path):
    p1, s1 = five[0], five[1]
    for cli, agent, event in (("pyserf", p1, "from-pyserf"), ("serf", s1, "from-serf"),
                              ("serf", p1, "serf-cli-at-pyserf")):
        out = run_cli(cli, "event", "-coalesce=false", event, "payload", rpc=agent.rpc)
        assert out.returncode == 0, out.stdout
    for agent in five:
        wait_until(lambda a=agent: all(f"{e} payload" in handled(tmp_path, a.name) for e in (
            "from-pyserf", "from-serf", "serf-cli-at-pyserf")), 15,
            what=f"handlers on {agent.name}")
        text = handled(tmp_path, agent.name)
        assert text.count("from-pyserf") == 1 and text.count("from-serf") == 1


def test_queries_from_either_kind_get_all_five_answers(five):
    expected = {a.name: f"i-am-{a.name}\n" for a in five}
    for cli, agent in (("pyserf", five[0]), ("serf", five[1]), ("serf", five[2])):
        out = run_cli(cli, "query", "-format=json", "who", rpc=agent.rpc)
        assert out.returncode == 0, out.stdout
        data = json.loads(out.stdout)
        assert sorted(data["Acks"]) == sorted(expected), (cli, agent.name, data)
        assert data["Responses"] == expected, (cli, agent.name, data)


def test_reachability_both_ways(five):
    for cli, agent in (("serf", five[1]), ("serf", five[0]), ("pyserf", five[0]),
                       ("pyserf", five[1])):
        out = run_cli(cli, "reachability", rpc=agent.rpc)
        assert out.returncode == 0, (cli, agent.name, out.stdout)
        assert "Total members: 5, live members: 5" in out.stdout
        assert "Successfully contacted all live nodes" in out.stdout


def test_query_filters_and_relays_across_kinds(five):
    p1 = five[0]
    out = run_cli("pyserf", "query", "-format=json", "-relay-factor=2", "who", rpc=p1.rpc)
    data = json.loads(out.stdout)
    assert data["Responses"] == {a.name: f"i-am-{a.name}\n" for a in five}  # relays deduped
    out = run_cli("serf", "query", "-format=json", "-node=s2", "-node=p3", "who", rpc=p1.rpc)
    assert json.loads(out.stdout)["Responses"] == {"s2": "i-am-s2\n", "p3": "i-am-p3\n"}
    out = run_cli("pyserf", "query", "-no-ack", "-node=s1", "who", rpc=five[3].rpc)
    assert out.stdout.splitlines() == ["Query 'who' dispatched", "Response from 's1': i-am-s1",
                                       "Total Responses: 1"]
