"""``pyserf`` CLI and RPC client against real ``serf agent`` processes.

Each check runs the real ``serf`` CLI and ``pyserf.cli.main`` against the same real agent and
compares output and exit code.  Row order and tag order come from Go maps, so those are
normalised before comparing.  Agents come from tests/e2e/harness.py (a 127.x.y prefix per
cluster) and are stopped by PID.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyserf.cli import main
from pyserf.client.rpc_client import RPCClient, RPCError
from tests.e2e.harness import (
    PYSERF,
    SERF,
    Agent,
    Cluster,
    child_env,
    next_subnet,
    run_cli,
    statuses,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(SERF is None, reason="the real `serf` binary is not on PATH"),
]

# The CLIs run here must not pick the agent address or token up from the caller's shell.
NO_RPC_ENV: dict[str, str | None] = dict.fromkeys(
    ("SERF_RPC_ADDR", "PYSERF_RPC_ADDR", "SERF_RPC_AUTH", "PYSERF_RPC_AUTH"))


def status_is(rpc: str, name: str, status: str | None) -> Callable[[], bool]:
    """A wait_until predicate for the member's status (None: not listed).  False while the
    agent does not answer (its own row is always listed), so waiting for a member to be gone
    cannot pass on a failed call."""
    def check() -> bool:
        seen = statuses(rpc)
        return bool(seen) and seen.get(name) == status
    return check


def stop_serf(cluster: Cluster, agent: Agent) -> None:
    """SIGTERM (no graceful leave in serf), SIGKILL after 5 s."""
    cluster.stop(agent, signal.SIGTERM, timeout=5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_RPC_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def serf_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, Agent]]:
    cluster = Cluster(tmp_path_factory.mktemp("serf-pair"))
    try:
        a = cluster.start("serf", "e2e-a", "-tag", "role=web", "-tag", "dc=east",
                          "-event-handler", "query:ping=echo pong-a")
        b = cluster.start("serf", "e2e-b", "-tag", "role=db",
                          "-event-handler", "query:ping=echo pong-b", f"-join={a.ip}")
        wait_until(status_is(a.rpc, "e2e-b", "alive"), 15, what="e2e-b alive on a")
        yield a, b
    finally:
        for agent in cluster.agents:
            stop_serf(cluster, agent)
        cluster.close()


def serf_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = run_cli("serf", *args, timeout=timeout, env=NO_RPC_ENV)
    return proc.returncode, proc.stdout, proc.stderr


def py_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sort_tags_in_line(line: str) -> str:
    """Tag order within a row is random in serf; sorting keeps the cell length (padding)."""
    words = line.split(" ")
    for i, word in enumerate(words):
        if "=" in word and "," in word:
            words[i] = ",".join(sorted(word.split(",")))
    return " ".join(words)


def norm_lines(text: str) -> list[str]:
    """Lines sorted, tags sorted; a help text is reduced to its first word (pyserf words its
    help texts itself)."""
    usage = re.search(r"^(==> )?Usage: (py)?serf (\S+)", text, re.M)
    if usage:
        text = text[: usage.start()] + f"<usage of {usage.group(3)}>"
    return sorted(sort_tags_in_line(line.rstrip()) for line in text.split("\n"))


def assert_same(capsys: pytest.CaptureFixture[str], *args: str,
                normalise: Callable[[str], Any] = norm_lines) -> tuple[int, str]:
    s_code, s_out, s_err = serf_cli(*args)
    p_code, p_out, p_err = py_cli(capsys, *args)
    assert p_code == s_code, (args, s_out, p_out)
    assert normalise(p_out) == normalise(s_out), args
    assert norm_lines(p_err) == norm_lines(s_err), args
    return p_code, p_out


def members_json_norm(text: str) -> Any:
    data = json.loads(text)
    if data.get("members"):
        data["members"].sort(key=lambda m: m["name"])
    return data


# ---- members ----------------------------------------------------------------------------------


def test_members_text_and_detailed(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "members", f"-rpc-addr={a.rpc}")
    assert code == 0 and len(out.strip().split("\n")) == 2
    assert re.search(rf"^e2e-a  {re.escape(a.ip)}:7946  alive  ", out, re.M)
    code, out = assert_same(capsys, "members", "-detailed", f"-rpc-addr={a.rpc}")
    assert "Protocol Version: 5  Available Protocol Range: [2, 5]" in out


def test_members_json(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "members", "-format=json", f"-rpc-addr={a.rpc}",
                            normalise=members_json_norm)
    assert code == 0
    names = [m["name"] for m in json.loads(out)["members"]]
    assert sorted(names) == ["e2e-a", "e2e-b"]
    assert out.startswith('{\n  "members": [\n    {\n      "name": ')
    assert_same(capsys, "members", "-format", "json", "-name=nosuch", f"-rpc-addr={a.rpc}")


@pytest.mark.parametrize(
    "filters",
    [
        ["-name=e2e-a"],
        ["-name=e2e-.*", "-status=alive"],
        ["-tag", "role=web"],
        ["-tag", "role=w.*", "-tag", "dc=east"],
        ["-role=db"],
        ["-status=failed"],
        ["-name=nosuch"],
        ["-name=("],
        ["-tag", "noequals"],
        ["-format=xml"],
        ["-detailed", "-tag", "role=db"],
    ],
)
def test_members_filters_and_errors(capsys, serf_pair, filters: list[str]) -> None:
    a, _ = serf_pair
    assert_same(capsys, "members", *filters, f"-rpc-addr={a.rpc}")


def test_members_errors_without_agent(capsys) -> None:
    nobody = f"{next_subnet()}.1"  # a prefix no cluster of this run uses
    assert_same(capsys, "members", f"-rpc-addr={nobody}:7373")
    assert_same(capsys, "members", f"-rpc-addr={nobody}")
    assert_same(capsys, "members", "-bogus")


# ---- join / info / tags / event / query ----------------------------------------------------


def test_join(capsys, serf_pair) -> None:
    a, b = serf_pair
    code, out = assert_same(capsys, "join", f"-rpc-addr={a.rpc}", b.ip)
    assert (code, out) == (0, "Successfully joined cluster by contacting 1 nodes.\n")
    assert_same(capsys, "join", "-replay", f"-rpc-addr={a.rpc}", f"{b.ip}:7946", "127.0.0.69:1")
    code, out = assert_same(capsys, "join", f"-rpc-addr={a.rpc}", "127.0.0.69:1")
    assert code == 1 and out.startswith("Error joining the cluster: 1 error occurred:\n")
    assert_same(capsys, "join", f"-rpc-addr={a.rpc}")


def info_norm(text: str) -> Any:
    """Structure of `info` output plus the stable values (counters and goroutines vary)."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
    else:
        data, section = {}, None
        for line in text.split("\n"):
            if line.endswith(":") and not line.startswith("\t"):
                section = line[:-1]
                data[section] = {}
            elif line.startswith("\t") and section is not None:
                key, _, value = line[1:].partition(" = ")
                data[section][key] = value
    shape = {s: sorted(v) for s, v in data.items()}
    stable = {s: data[s] for s in ("agent", "tags", "event_handlers") if s in data}
    stable["members"] = data.get("serf", {}).get("members")
    return shape, stable


def test_info(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "info", f"-rpc-addr={a.rpc}", normalise=info_norm)
    assert code == 0 and "\tname = e2e-a" in out and "\tquery:ping = echo pong-a" in out
    assert_same(capsys, "info", "-format=json", f"-rpc-addr={a.rpc}", normalise=info_norm)
    assert_same(capsys, "info", "-format=xml", f"-rpc-addr={a.rpc}")


def test_tags(capsys, serf_pair) -> None:
    _, b = serf_pair
    code, out = assert_same(capsys, "tags", f"-rpc-addr={b.rpc}", "-set", "e2e=1", "-set",
                            "zone=z1")
    assert (code, out) == (0, "Successfully updated agent tags\n")

    def tags_of_b() -> dict[str, str]:
        with RPCClient(b.rpc) as client:
            return client.stats()["tags"]

    assert tags_of_b() == {"role": "db", "e2e": "1", "zone": "z1"}
    assert_same(capsys, "tags", f"-rpc-addr={b.rpc}", "-delete", "e2e", "-delete", "zone")
    assert tags_of_b() == {"role": "db"}
    assert_same(capsys, "tags", f"-rpc-addr={b.rpc}", "-set", "bad")
    assert_same(capsys, "tags", f"-rpc-addr={b.rpc}")


def test_event(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "event", f"-rpc-addr={a.rpc}", "deploy", "v1")
    assert out == "Event 'deploy' dispatched! Coalescing enabled: true\n"
    code, out = assert_same(capsys, "event", "-coalesce=false", f"-rpc-addr={a.rpc}", "nocoal")
    assert out == "Event 'nocoal' dispatched! Coalescing enabled: false\n"
    code, out = assert_same(capsys, "event", f"-rpc-addr={a.rpc}", "big", "x" * 600)
    assert code == 1 and "exceeds configured limit of 512 bytes" in out
    assert_same(capsys, "event", f"-rpc-addr={a.rpc}", "a", "b", "c")


def query_json_norm(text: str) -> Any:
    data = json.loads(text)
    data["Acks"] = sorted(data["Acks"] or [])
    return data


def test_query_text(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "query", "-timeout=1s", f"-rpc-addr={a.rpc}", "ping", "hi")
    assert code == 0
    assert out.startswith("Query 'ping' dispatched\n")
    assert "Response from 'e2e-b': pong-b\n" in out and "Ack from 'e2e-a'\n" in out
    assert out.endswith("Total Acks: 2\nTotal Responses: 2\n")


def test_query_variants(capsys, serf_pair) -> None:
    a, _ = serf_pair
    code, out = assert_same(capsys, "query", "-no-ack", "-node=e2e-b", "-timeout=800ms",
                            f"-rpc-addr={a.rpc}", "ping")
    assert out == ("Query 'ping' dispatched\nResponse from 'e2e-b': pong-b\n"
                   "Total Responses: 1\n")
    code, out = assert_same(capsys, "query", "-format=json", "-tag", "role=web",
                            "-timeout=800ms", f"-rpc-addr={a.rpc}", "ping",
                            normalise=query_json_norm)
    assert json.loads(out) == {"Acks": ["e2e-a"], "Responses": {"e2e-a": "pong-a\n"}}
    assert_same(capsys, "query", "-format=json", "-no-ack", "-timeout=500ms",
                f"-rpc-addr={a.rpc}", "nobody-answers", normalise=query_json_norm)
    assert_same(capsys, "query", f"-rpc-addr={a.rpc}", "_serf_x")
    assert_same(capsys, "query", "-format=xml", f"-rpc-addr={a.rpc}", "ping")
    assert_same(capsys, "query", "-relay-factor=256", f"-rpc-addr={a.rpc}", "ping")


def test_rtt_keys_reachability(capsys, serf_pair) -> None:
    a, _ = serf_pair
    pattern = re.compile(r"^Estimated e2e-b <-> e2e-a rtt: \d+\.\d{3} ms\n$")
    # Coordinates exist only after the first probe between the pair has completed.
    wait_until(lambda: serf_cli("rtt", f"-rpc-addr={a.rpc}", "e2e-b")[0] == 0, 15,
               what="a coordinate for e2e-b")
    s_code, s_out, _ = serf_cli("rtt", f"-rpc-addr={a.rpc}", "e2e-b")
    p_code, p_out, _ = py_cli(capsys, "rtt", f"-rpc-addr={a.rpc}", "e2e-b")
    assert s_code == p_code == 0 and pattern.match(s_out) and pattern.match(p_out)
    assert_same(capsys, "rtt", f"-rpc-addr={a.rpc}", "nosuch")
    assert_same(capsys, "rtt", f"-rpc-addr={a.rpc}")
    code, out = assert_same(capsys, "keys", "-list", f"-rpc-addr={a.rpc}")
    assert code == 1 and "Keyring is empty (encryption not enabled)" in out
    code, out = assert_same(capsys, "reachability", f"-rpc-addr={a.rpc}")
    assert out == ("Total members: 2, live members: 2\nStarting reachability test...\n"
                   "Successfully contacted all live nodes\n")


# ---- force-leave / leave / auth ------------------------------------------------------------


def test_force_leave(capsys, serf_pair, cluster: Cluster) -> None:
    a, _ = serf_pair
    assert assert_same(capsys, "force-leave", f"-rpc-addr={a.rpc}", "nosuch") == (0, "")
    assert assert_same(capsys, "force-leave", "-prune", f"-rpc-addr={a.rpc}", "nosuch") == (0, "")
    assert_same(capsys, "force-leave", f"-rpc-addr={a.rpc}")

    victim = cluster.start("serf", "e2e-victim", f"-join={a.ip}")
    wait_until(status_is(a.rpc, "e2e-victim", "alive"), 15, what="victim alive")
    cluster.stop(victim, signal.SIGKILL, timeout=5)
    wait_until(status_is(a.rpc, "e2e-victim", "failed"), 30, what="victim failed")
    code, out, _ = py_cli(capsys, "force-leave", f"-rpc-addr={a.rpc}", "e2e-victim")
    assert (code, out) == (0, "")
    wait_until(status_is(a.rpc, "e2e-victim", "left"), 15, what="victim left")
    code, out = assert_same(capsys, "members", "-status=left", f"-rpc-addr={a.rpc}")
    assert out.startswith(f"e2e-victim  {victim.ip}:7946  left")
    code, out, _ = py_cli(capsys, "force-leave", "-prune", f"-rpc-addr={a.rpc}", "e2e-victim")
    assert code == 0
    wait_until(status_is(a.rpc, "e2e-victim", None), 15, what="victim pruned")


def test_leave(capsys, cluster: Cluster) -> None:
    first = cluster.start("serf", "e2e-leave-1")
    second = cluster.start("serf", "e2e-leave-2")
    s_code, s_out, s_err = serf_cli("leave", f"-rpc-addr={first.rpc}", "extra-arg")
    p_code, p_out, p_err = py_cli(capsys, "leave", f"-rpc-addr={second.rpc}", "extra-arg")
    assert (p_code, p_out, p_err) == (s_code, s_out, s_err) == (0, "Graceful leave complete\n",
                                                                "")
    assert first.proc.wait(15) == 0
    assert second.proc.wait(15) == 0
    assert_same(capsys, "leave", f"-rpc-addr={second.rpc}")  # agent gone now


def test_rpc_auth(capsys, cluster: Cluster, tmp_path: Path) -> None:
    conf = tmp_path / "auth.json"
    conf.write_text(json.dumps({"rpc_auth": "s3cret", "tags": {"auth": "yes"}}))
    agent = cluster.start("serf", "e2e-auth", f"-config-file={conf}")
    code, out = assert_same(capsys, "members", f"-rpc-addr={agent.rpc}")
    assert (code, out) == (1, "Error retrieving members: Authentication required\n")
    code, out = assert_same(capsys, "members", "-rpc-auth=wrong", f"-rpc-addr={agent.rpc}")
    assert out == "Error connecting to Serf agent: Invalid authentication token\n"
    code, out = assert_same(capsys, "members", "-rpc-auth=s3cret", f"-rpc-addr={agent.rpc}")
    assert code == 0 and "auth=yes" in out


# ---- monitor and the RPC client as a library -------------------------------------------------


def test_monitor_subprocess(serf_pair) -> None:
    a, b = serf_pair
    # Started with SIGINT ignored, as a background job (or a test worker) is: Ctrl-C must
    # still end it, as it ends serf's (Go's signal.Notify re-enables the signal).
    proc = subprocess.Popen(
        [*PYSERF, "monitor", "-log-level=debug", f"-rpc-addr={a.rpc}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(NO_RPC_ENV), text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    block = "\tName: \"monitor-check\"\n\tPayload: []byte{0x78, 0x79, 0x7a}\n"
    try:
        # The stream subscription precedes the log one, so the agent's replayed log lines
        # show that both are in place before the event is sent.
        wait_until(lambda: any("[INFO]" in line for line in list(lines)), 15,
                   what="monitor logs")
        with RPCClient(b.rpc) as client:
            client.user_event("monitor-check", b"xyz", coalesce=False)
        wait_until(lambda: block in "".join(list(lines)), 15, what="the event in the monitor")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    out = "".join(lines)
    assert proc.returncode == 0, err
    assert re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(INFO|DEBUG)\] ", out, re.M)
    assert out.count(block) == 1


def test_client_stream_query_respond(serf_pair) -> None:
    a, b = serf_pair
    with RPCClient(a.rpc) as listener, RPCClient(b.rpc) as sender:
        events = listener.stream("user:lib-ev,query:lib-q")
        sender.user_event("lib-ev", b"payload", coalesce=False)
        sender.user_event("other-ev", b"ignored", coalesce=False)
        query = sender.query("lib-q", b"ask", filter_nodes=["e2e-a"], request_ack=True,
                             timeout=3.0)
        seen: list[dict] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["Event"] == "query" for e in seen):
            rec = events.next(timeout=1.0)
            if rec is not None:
                seen.append(rec)
        user = [e for e in seen if e["Event"] == "user"]
        assert [u["Name"] for u in user] == ["lib-ev"] and user[0]["Payload"] == b"payload"
        q = next(e for e in seen if e["Event"] == "query")
        assert q["Name"] == "lib-q" and q["Payload"] == b"ask" and q["ID"] >= 1
        listener.respond(q["ID"], b"answer")
        with pytest.raises(RPCError) as info:
            listener.respond(q["ID"], b"again")
        # serf 0.9.4 keeps the ID until the deadline and words the second answer like this
        assert str(info.value) == "failed to respond to key query: response already sent"
        with pytest.raises(RPCError) as info:
            listener.respond(987654, b"x")
        assert str(info.value) == "No pending queries matching ID"
        records = list(query)
        assert {"Type": "ack", "From": "e2e-a", "Payload": None} in records
        assert {"Type": "response", "From": "e2e-a", "Payload": b"answer"} in records
        assert query.done
        events.stop()
        assert listener.members()  # connection still usable after stop


def test_client_monitor_and_errors(serf_pair) -> None:
    a, _ = serf_pair
    with RPCClient(a.rpc) as client:
        logs = client.monitor("info")
        first = logs.next(timeout=5.0)
        assert first is not None and "[INFO]" in first
        with pytest.raises(RPCError) as info:
            client.monitor("debug")
        assert str(info.value) == "Monitor already exists"
        logs.stop()
        with pytest.raises(RPCError) as info:
            client.monitor("bogus")
        assert str(info.value) == "Unknown log level: BOGUS"
        with pytest.raises(RPCError) as info:
            client.stream("foo:bar")
        assert str(info.value) == "Invalid event filter"
        with pytest.raises(RPCError) as info:
            client.handshake()
        assert str(info.value) == "Handshake already performed"
        assert client.get_coordinate("nosuch") is None
        coord = client.get_coordinate("e2e-b")
        assert coord is not None and len(coord.vec) == 8
        stats = client.stats()
        assert stats["agent"]["name"] == "e2e-a" and stats["serf"]["members"] == "2"
        filtered = client.members_filtered(tags={"role": "web"})
        assert [m.name for m in filtered] == ["e2e-a"]
        assert filtered[0].address == f"{a.ip}:7946" and filtered[0].delegate_cur == 5
        with pytest.raises(RPCError) as info:
            client.members_filtered(name="(")
        assert str(info.value) == "client closed"
        assert client.closed
