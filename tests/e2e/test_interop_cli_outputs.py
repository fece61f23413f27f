"""The same CLI command against a real serf agent and a pyserf agent of one cluster.

s1 (serf 0.9.4) and p1 (pyserf) form an encrypted two-node cluster with the same tags and
handlers. Every command is run through one CLI against s1 and against p1, and the two outputs
and exit codes must be identical after normalising only what must differ: the local agent's
own name where the output is about itself, measured round-trip times, counters, runtime
versions, and row/key order (Go map order is random). Both CLIs are used, so this checks the
pyserf agent behind the real CLI as well as the pyserf CLI against both agents.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import SERF, Agent, Cluster, run_cli, statuses, wait_until

pytestmark = pytest.mark.e2e

Normalise = Callable[[str, Agent], Any]


@dataclass
class Pair:
    cluster: Cluster
    serf: Agent
    py: Agent
    key: str
    tmp: Path
    last_py: str = ""


def keygen() -> str:
    return subprocess.run([SERF, "keygen"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    tmp = tmp_path_factory.mktemp("interop-cli")
    key = keygen()
    common = [f"-encrypt={key}", "-tag", "role=web", "-tag", "dc=east",
              "-event-handler=query:who=echo i-am-$SERF_SELF_NAME"]
    cluster = Cluster(tmp)
    try:
        s1 = cluster.start("serf", "s1", *common)
        p1 = cluster.start("pyserf", "p1", *common, f"-join={s1.ip}")
        wait_until(lambda: all(statuses(a.rpc) == {"s1": "alive", "p1": "alive"}
                               for a in (s1, p1)), 15, what="s1 and p1 alive on both")
        yield Pair(cluster, s1, p1, key, tmp)
    finally:
        cluster.close()


# ---- normalisers: each keeps everything but what must differ -------------------------------


def exact(text: str, _agent: Agent) -> str:
    return text


def sorted_lines(text: str, _agent: Agent) -> list[str]:
    """Rows in any order, tags within a row in any order (both come from Go maps), and no
    trailing padding (the last row printed is not padded)."""
    rows = []
    for line in text.split("\n"):
        cells = [",".join(sorted(cell.split(","))) if "=" in cell else cell
                 for cell in line.rstrip().split(" ")]
        rows.append(" ".join(cells))
    return sorted(rows)


def members_json(text: str, _agent: Agent) -> Any:
    data = json.loads(text)
    data["members"].sort(key=lambda m: m["name"])
    return data


def info_view(text: str, agent: Agent) -> Any:
    """Sections and keys in full; values only where both kinds must agree."""
    if text.startswith("{"):
        data = json.loads(text)
    else:
        data, section = {}, ""
        for line in text.split("\n"):
            if line.endswith(":") and not line.startswith("\t"):
                section = line[:-1]
                data[section] = {}
            elif line.startswith("\t"):
                key, _, value = line[1:].partition(" = ")
                data[section][key] = value
            else:
                assert line == "", f"unexpected info line {line!r}"
    keys = {section: sorted(values) for section, values in data.items()}
    agreed = {
        "agent": {k: v.replace(agent.name, "<self>") for k, v in data["agent"].items()},
        "tags": data.get("tags"), "event_handlers": data.get("event_handlers"),
        "runtime": {k: data["runtime"].get(k) for k in ("arch", "os", "cpu_count", "max_procs")},
        "serf": {k: data["serf"].get(k) for k in ("encrypted", "members", "failed", "left",
                                              "health_score", "coordinate_resets",
                                              "intent_queue", "event_queue", "query_queue")},
    }
    return keys, agreed


def query_json(text: str, _agent: Agent) -> Any:
    data = json.loads(text)
    data["Acks"] = sorted(data["Acks"] or [])
    return data


RTT = re.compile(r"rtt: \d+\.\d{3} ms")


def rtt_view(text: str, _agent: Agent) -> str:
    """The measured time is the only free part."""
    return RTT.sub("rtt: <ms>", text)


def compare(pair: Pair, cli: str, args: tuple[str, ...], normalise: Normalise = exact,
            timeout: float = 20.0) -> tuple[int, str]:
    """Run `cli args` against s1 and p1; assert equal exit codes and normalised outputs.
    Returns the exit code and the output against s1 (and keeps p1's in pair.last_py)."""
    results = {a.kind: run_cli(cli, *args, rpc=a.rpc, timeout=timeout)
               for a in (pair.serf, pair.py)}
    real, mine = results["serf"], results["pyserf"]
    shown = f"{cli} {' '.join(args)}\n--- against serf:\n{real.stdout}{real.stderr}" \
            f"--- against pyserf:\n{mine.stdout}{mine.stderr}"
    assert mine.returncode == real.returncode, shown
    assert normalise(mine.stdout, pair.py) == normalise(real.stdout, pair.serf), shown
    assert mine.stderr == real.stderr, shown
    pair.last_py = mine.stdout
    return real.returncode, real.stdout


CLIS = ("serf", "pyserf")

READ_ONLY: list[tuple[tuple[str, ...], Normalise]] = [
    (("members",), sorted_lines),
    (("members", "-detailed"), sorted_lines),
    (("members", "-format=json"), members_json),
    (("members", "-status=alive", "-tag", "role=w.*"), sorted_lines),
    (("members", "-name=nosuch"), exact),
    (("members", "-name=("), exact),
    (("members", "-format=xml"), exact),
    (("info",), info_view),
    (("info", "-format=json"), info_view),
    (("keys", "-list"), sorted_lines),
    (("query", "-timeout=1500ms", "who", "x"), sorted_lines),
    (("query", "-format=json", "-timeout=1500ms", "who"), query_json),
    (("query", "-no-ack", "-node=s1", "-timeout=1500ms", "who"), exact),
    (("query", "-tag", "role=nomatch", "-timeout=800ms", "who"), exact),
    (("query", "_serf_x"), exact),
    (("event", "-coalesce=false", "cmp-event", "pl"), exact),
    (("event", "cmp-event"), exact),
    (("event", "big", "x" * 600), exact),
    (("event", "a", "b", "c"), exact),
    (("tags", "-set", "bad"), exact),
    (("tags",), exact),
    (("rtt", "nosuch"), exact),
    (("rtt",), exact),
    (("join", "127.0.0.1:1"), exact),
    (("join",), exact),
    (("force-leave", "nosuch"), exact),
    (("force-leave",), exact),
    (("reachability",), exact),
    (("monitor", "-log-level=bogus"), exact),
]


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize(("args", "normalise"), READ_ONLY,
                         ids=[" ".join(a)[:40] for a, _ in READ_ONLY])
def test_same_output_from_both_kinds(pair: Pair, cli: str, args: tuple[str, ...],
                                     normalise: Normalise) -> None:
    code, _ = compare(pair, cli, args, normalise)
    if cli == "pyserf":
        # The fourth side: the pyserf CLI and the real CLI against the pyserf agent (the
        # pyserf CLI's own help texts are its own wording, so only their first line counts).
        real = run_cli("serf", *args, rpc=pair.py.rpc)
        assert (code, without_help(normalise(pair.last_py, pair.py))) == (
            real.returncode, without_help(normalise(real.stdout, pair.py))), \
            (pair.last_py, real.stdout)


def without_help(view: Any) -> Any:
    if isinstance(view, str) and (usage := re.search(r"^Usage: (py)?serf (\S+)", view, re.M)):
        return view[:usage.start()] + f"<usage of {usage.group(2)}>"
    return view


@pytest.mark.parametrize("cli", CLIS)
def test_rtt_and_join_from_both_kinds(pair: Pair, cli: str) -> None:
    # Coordinates exist once each side has probed the other at least once (1 s interval).
    wait_until(lambda: all(run_cli("serf", "rtt", other, rpc=a.rpc).returncode == 0
                           for a, other in ((pair.serf, "p1"), (pair.py, "s1"))), 15,
               what="coordinates on both agents")
    code, out = compare(pair, cli, ("rtt", "s1", "p1"), rtt_view)
    assert code == 0 and RTT.search(out), out
    # One name: the estimate between it and the local agent, asked of each about the other.
    results = {a.kind: run_cli(cli, "rtt", other.name, rpc=a.rpc)
               for a, other in ((pair.serf, pair.py), (pair.py, pair.serf))}
    views = {kind: (r.returncode, RTT.sub("rtt: <ms>", r.stdout).replace("s1", "<a>")
                    .replace("p1", "<a>"), r.stderr) for kind, r in results.items()}
    assert views["pyserf"] == views["serf"] == (0, "Estimated <a> <-> <a> rtt: <ms>\n", ""), \
        results
    # Each agent joins the other one's address (already a member: a no-op join).
    results = [run_cli(cli, "join", other.ip, rpc=agent.rpc)
               for agent, other in ((pair.serf, pair.py), (pair.py, pair.serf))]
    assert [(r.returncode, r.stdout, r.stderr) for r in results] == [
        (0, "Successfully joined cluster by contacting 1 nodes.\n", "")] * 2


@pytest.mark.parametrize("cli", CLIS)
def test_tags_set_and_delete_from_both_kinds(pair: Pair, cli: str) -> None:
    code, out = compare(pair, cli, ("tags", "-set", "cmp=1", "-set", "zone=z"))
    assert (code, out) == (0, "Successfully updated agent tags\n")
    view = {"s1": {"role": "web", "dc": "east", "cmp": "1", "zone": "z"}}
    view["p1"] = view["s1"]
    wait_until(lambda: all(members_tags(a) == view for a in (pair.serf, pair.py)), 10,
               what="the new tags on both agents")
    compare(pair, cli, ("members",), sorted_lines)
    code, out = compare(pair, cli, ("tags", "-delete", "cmp", "-delete", "zone"))
    assert (code, out) == (0, "Successfully updated agent tags\n")
    view = {name: {"role": "web", "dc": "east"} for name in ("s1", "p1")}
    wait_until(lambda: all(members_tags(a) == view for a in (pair.serf, pair.py)), 10,
               what="the tags back on both agents")


def members_tags(agent: Agent) -> dict[str, dict[str, str]]:
    out = run_cli("serf", "members", "-format=json", rpc=agent.rpc)
    if out.returncode != 0:
        return {}
    return {m["name"]: m["tags"] for m in json.loads(out.stdout)["members"]}


def test_serf_keys_rotation_against_pyserf_matches_serf(pair: Pair) -> None:
    """`serf keys` install/use/remove/list against the pyserf agent prints exactly what it
    prints against the serf agent; each operation runs against both (they are idempotent)."""
    old, new = pair.key, keygen()
    code, out = compare(pair, "serf", ("keys", "-list"), sorted_lines)
    assert code == 0 and f"{old}  [2/2]" in out.split("\n")
    for action, value in (("-install", new), ("-use", new), ("-remove", old)):
        code, out = compare(pair, "serf", ("keys", f"{action}={value}"))
        assert code == 0, out
        compare(pair, "serf", ("keys", "-list"), sorted_lines)
        compare(pair, "pyserf", ("keys", "-list"), sorted_lines)
    code, out = compare(pair, "serf", ("keys", "-list"), sorted_lines)
    assert f"{new}  [2/2]" in out.split("\n") and old not in out
    pair.key = new
    # Refusals: the primary key (every node says so), and a key that is not base64.
    code, out = compare(pair, "serf", ("keys", f"-remove={new}"), sorted_lines)
    assert code == 1 and out.count("Removing the primary key is not allowed") == 2, out
    code, _ = compare(pair, "serf", ("keys", "-install=notbase64!"))
    assert code == 1
    compare(pair, "serf", ("keys", "-use=" + keygen()), sorted_lines)  # nobody has it
    # Gossip still flows on the new key: a query gets both answers.
    code, out = compare(pair, "serf", ("query", "-timeout=1500ms", "who"), sorted_lines)
    assert "Total Responses: 2" in out


# ---- serf monitor against both kinds ----------------------------------------------------


class Monitor:
    """A `serf monitor` process whose output lines are collected by a reader thread."""

    def __init__(self, agent: Agent, level: str) -> None:
        self.proc = subprocess.Popen([SERF, "monitor", f"-log-level={level}",
                                      f"-rpc-addr={agent.rpc}"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def levels(self) -> set[str]:
        return {m[1] for line in list(self.lines)
                if (m := re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] ", line))}

    def event_blocks(self) -> list[list[str]]:
        """Each `Event Info:` block, its fields sorted (Go prints a map) and LTime masked."""
        blocks: list[list[str]] = []
        for line in list(self.lines):
            if line == "Event Info:":
                blocks.append([])
            elif line.startswith("\t") and blocks:
                blocks[-1].append(re.sub(r"^\tLTime: \d+$", "\tLTime: <n>", line))
        return [sorted(b) for b in blocks]

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reader.join(5)
        return code


def watch(agents: list[Agent], levels: tuple[str, ...]) -> dict[tuple[str, str], Monitor]:
    return {(a.kind, level): Monitor(a, level) for a in agents for level in levels}


def stop_all(monitors: dict[Any, Monitor]) -> dict[Any, int]:
    return {k: m.stop() for k, m in monitors.items()}


def synced(monitors: dict[Any, Monitor], agents: list[Agent], name: str = "mon-sync") -> None:
    """Monitors subscribe asynchronously: send a marker event until every monitor has
    streamed one, so all of them see whatever follows."""
    wait_until(lambda: all(run_cli("serf", "event", "-coalesce=false", name,
                                   rpc=a.rpc).returncode == 0 for a in agents)
               and all(m.event_blocks() for m in monitors.values()), 15, interval=0.5,
               what="every monitor streaming")


@pytest.mark.serial
def test_serf_monitor_against_pyserf_streams_filters_and_stops(pair: Pair) -> None:
    agents = [pair.serf, pair.py]
    monitors = watch(agents, ("debug", "info", "warn"))
    try:
        synced(monitors, agents)
        # One event through each agent, named after it: the same name and payload twice
        # would be one event or two depending on whether the second agent's clock had
        # already seen the first (serf drops an exact repeat at the same Lamport time).
        for agent in agents:
            out = run_cli("serf", "event", "-coalesce=false", f"mon-event-{agent.kind}", "xyz",
                          rpc=agent.rpc)
            assert out.returncode == 0, out.stdout
        wait_until(lambda: all(monitors[(a.kind, "info")].has(
                                   f"[INFO] agent: Received event: user-event: mon-event-{b.kind}")
                               and monitors[(a.kind, "debug")].has("[DEBUG]")
                               and monitors[(a.kind, "warn")].has(f'Name: "mon-event-{b.kind}"')
                               for a in agents for b in agents), 10,
                   what="both events in every monitor")
    finally:
        codes = stop_all(monitors)
    # Ctrl-C stops every monitor cleanly, against either kind.
    assert set(codes.values()) == {0}, codes
    blocks = [sorted(['\tCoalesce: false', '\tEvent: "user"', "\tLTime: <n>",
                      f'\tName: "mon-event-{origin.kind}"',
                      "\tPayload: []byte{0x78, 0x79, 0x7a}"]) for origin in agents]
    for agent in agents:
        debug, info, warn = (monitors[(agent.kind, lv)] for lv in ("debug", "info", "warn"))
        assert "DEBUG" in debug.levels(), agent.kind
        # The log level filters logs only; the event stream is the same at every level.
        assert info.levels() <= {"INFO", "WARN", "ERR"} and "INFO" in info.levels(), \
            (agent.kind, info.lines)
        assert warn.levels() <= {"WARN", "ERR"}, (agent.kind, warn.lines)
        for mon in (debug, info, warn):
            for block in blocks:
                assert mon.event_blocks().count(block) == 1, (agent.kind, mon.lines)


def monitored(agents: list[Agent], level: str, act: Callable[[Agent], None],
              marker: str) -> dict[str, Monitor]:
    """One monitor per agent at `level`, streaming before `act(agent)` runs on each, and
    stopped once a `marker` event sent after it has reached all of them."""
    monitors = watch(agents, (level,))
    try:
        synced(monitors, agents, f"{marker}-sync")
        for agent in agents:
            act(agent)
            run_cli("serf", "event", "-coalesce=false", marker, rpc=agent.rpc)
        wait_until(lambda: all(m.has(f'Name: "{marker}"') for m in monitors.values()), 10,
                   what=f"the {marker} event in every monitor")
    finally:
        stop_all(monitors)
    return {kind: mon for (kind, _level), mon in monitors.items()}


def test_serf_monitor_event_blocks_for_empty_payloads_match(pair: Pair) -> None:
    agents = [pair.serf, pair.py]

    def act(agent: Agent) -> None:
        run_cli("serf", "event", "-coalesce=false", "mon-empty", rpc=agent.rpc)
        run_cli("serf", "query", "-no-ack", f"-node={agent.name}", "-timeout=300ms",
                "mon-empty-query", rpc=agent.rpc)

    monitors = monitored(agents, "warn", act, "mon-marker")
    blocks = {kind: sorted(b for b in mon.event_blocks()
                           if any(f.startswith('\tName: "mon-empty') for f in b))
              for kind, mon in monitors.items()}
    assert blocks["pyserf"] == blocks["serf"], "\n".join(map(str, blocks.items()))


def test_serf_monitor_shows_the_same_join_log_lines(pair: Pair) -> None:
    agents = [pair.serf, pair.py]

    def act(agent: Agent) -> None:
        run_cli("serf", "join", "127.0.0.1:1", rpc=agent.rpc)

    monitors = monitored(agents, "info", act, "mon-after")

    def join_lines(mon: Monitor) -> list[str]:
        # A monitor replays the agent's recent log when it subscribes, which holds other
        # tests' joins; the stream subscribes first, so an event block can precede that
        # replay. Only lines logged after this test's own sync event count.
        start = next(i for i, line in enumerate(mon.lines)
                     if line.endswith("Received event: user-event: mon-after-sync"))
        return [line[20:] for line in mon.lines[start:] if "joining" in line]

    views = {kind: join_lines(mon) for kind, mon in monitors.items()}
    assert views["serf"] == ["[INFO] agent: joining: [127.0.0.1:1] replay: false",
                             "[WARN] agent: error joining: 1 error occurred:"], views
    assert views["pyserf"] == views["serf"], views


def test_leave_and_the_monitor_of_a_leaving_agent_match(pair: Pair) -> None:
    """`serf leave` against each kind: same message and exit status; the agent exits 0; a
    monitor attached to it reports the remote end exactly as serf does; afterwards the RPC
    address refuses connections with the same error text. Runs last: it adds two members."""
    leavers = [pair.cluster.start("serf", "s-leave", f"-encrypt={pair.key}",
                                  f"-join={pair.serf.ip}"),
               pair.cluster.start("pyserf", "p-leave", f"-encrypt={pair.key}",
                                  f"-join={pair.serf.ip}")]
    wait_until(lambda: all(len(statuses(a.rpc)) == 4 for a in leavers), 15,
               what="the leavers in the cluster")
    monitors = {a.kind: Monitor(a, "info") for a in leavers}
    wait_until(lambda: all(m.has("agent: Serf agent starting") for m in monitors.values()), 10,
               what="monitors streaming")
    results = {a.kind: run_cli("serf", "leave", rpc=a.rpc) for a in leavers}
    assert {k: (r.returncode, r.stdout, r.stderr) for k, r in results.items()} == dict.fromkeys(
        ("serf", "pyserf"), (0, "Graceful leave complete\n", ""))
    for agent in leavers:
        assert agent.proc.wait(15) == 0, agent.log()
    codes = {kind: m.stop() for kind, m in monitors.items()}
    assert codes == {"serf": 1, "pyserf": 1}
    tails = {kind: m.lines[-3:] for kind, m in monitors.items()}
    assert tails["pyserf"] == tails["serf"] == [
        "", "Remote side ended the monitor! This usually means that the",
        "remote side has exited or crashed."], tails
    gone = {a.kind: run_cli("serf", "members", rpc=a.rpc) for a in leavers}
    texts = {k: (r.returncode, r.stdout.replace(leavers[i].ip, "<ip>"))
             for i, (k, r) in enumerate(gone.items())}
    assert texts["pyserf"] == texts["serf"], texts
    wait_until(lambda: all(statuses(a.rpc).get(n) == "left" for a in (pair.serf, pair.py)
                           for n in ("s-leave", "p-leave")), 15,
               what="both leavers 'left' on s1 and p1")
    compare(pair, "serf", ("members",), sorted_lines)
    compare(pair, "serf", ("members", "-status=left", "-format=json"), members_json)
