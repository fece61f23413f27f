"""A cluster of real pyserf agents and real serf agents, observed through both CLIs."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.e2e.harness import Cluster, members, run_cli, wait_until

pytestmark = pytest.mark.e2e


def key() -> str:
    return subprocess.run(["serf", "keygen"], capture_output=True, text=True,
                          check=True).stdout.strip()


def key_list(key: str, have: int, total: int) -> str:
    """`keys -list` output for a cluster with exactly one key (serf prints it this way)."""
    return ("==> Asking all members for installed keys...\n"
            "==> Keys gathered, listing cluster keys...\n\n"
            f"{key}  [{have}/{total}]\n")


def key_steps(old: str, new: str) -> list[tuple[str, str, str]]:
    """A rotation from old to new: flag, key, and serf's exact output."""
    return [("-install", new, "==> Installing key on all members...\n"
                              "==> Successfully installed key!\n"),
            ("-use", new, "==> Changing primary key on all members...\n"
                          "==> Successfully changed primary key!\n"),
            ("-remove", old, "==> Removing key on all members...\n"
                             "==> Successfully removed key!\n")]


def views_agree(cluster: Cluster, expected: dict[str, tuple[str, dict[str, str]]]) -> bool:
    """Every live agent, asked through both CLIs, reports exactly ``expected``."""
    for agent in cluster.agents:
        if not agent.alive():
            continue
        for cli in ("pyserf", "serf"):
            view = members(cli, agent.rpc)
            got = {name: (status, tags) for name, (_addr, status, tags) in view.items()}
            if got != expected:
                return False
    return True


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_three_pyserf_two_serf(cluster, need_serf, encrypted):
    extra = [f"-encrypt={key()}"] if encrypted else []
    s1 = cluster.start("serf", "s1", "-tag", "role=real", "-tag", "dc=east", *extra)
    p1 = cluster.start("pyserf", "p1", "-tag", "role=py", *extra)
    p2 = cluster.start("pyserf", "p2", "-tag", "role=py", "-tag", "web-port=8080", *extra)
    s2 = cluster.start("serf", "s2", *extra)
    p3 = cluster.start("pyserf", "p3", f"-join={s2.ip}", *extra)

    assert run_cli("pyserf", "join", s1.ip, rpc=p1.rpc).returncode == 0
    assert run_cli("serf", "join", p1.ip, rpc=p2.rpc).returncode == 0
    out = run_cli("pyserf", "join", p2.ip, rpc=s2.rpc)
    assert (out.returncode, out.stdout, out.stderr) == (
        0, "Successfully joined cluster by contacting 1 nodes.\n", "")

    expected = {
        "s1": ("alive", {"role": "real", "dc": "east"}),
        "p1": ("alive", {"role": "py"}),
        "p2": ("alive", {"role": "py", "web-port": "8080"}),
        "s2": ("alive", {}),
        "p3": ("alive", {}),
    }
    wait_until(lambda: views_agree(cluster, expected), 20, what="5 alive everywhere")
    # Addresses are the advertised ones, whoever reports them.
    view = members("serf", s1.rpc)
    assert view["p2"][0] == f"{p2.ip}:7946"

    # kill -9 of a pyserf agent: the serf agents see it failed.
    p3.proc.kill()
    p3.proc.wait(5)
    wait_until(lambda: all(members("serf", a.rpc).get("p3", ("", ""))[1] == "failed"
                           for a in (s1, s2)), 30, what="serf agents to mark p3 failed")

    # Ctrl-C of a serf agent: the pyserf agents see it left.
    assert cluster.stop(s2, signal.SIGINT) == 0
    wait_until(lambda: all(members("pyserf", a.rpc).get("s2", ("", ""))[1] == "left"
                           for a in (p1, p2)), 20, what="pyserf agents to mark s2 left")

    # A pyserf agent's tag change is seen by serf.
    out = run_cli("serf", "tags", "-set", "v=2", "-delete", "role", rpc=p1.rpc)
    assert (out.returncode, out.stdout) == (0, "Successfully updated agent tags\n")
    wait_until(lambda: members("serf", s1.rpc)["p1"][2] == {"v": "2"}, 10,
               what="serf to see p1's new tags")

    # Ctrl-C of a pyserf agent: a graceful leave, exit status 0, serf sees it left.
    assert cluster.stop(p2, signal.SIGINT) == 0
    wait_until(lambda: members("serf", s1.rpc)["p2"][1] == "left", 10,
               what="serf to see p2 left")


def test_wrong_key_is_refused_both_ways(cluster, need_serf):
    s1 = cluster.start("serf", "s1", f"-encrypt={key()}")
    p1 = cluster.start("pyserf", "p1", f"-encrypt={key()}")
    plain = cluster.start("pyserf", "p2")

    out = run_cli("pyserf", "join", s1.ip, rpc=p1.rpc)
    assert out.returncode == 1
    assert "No installed keys could decrypt the message" in out.stderr + out.stdout

    out = run_cli("serf", "join", p1.ip, rpc=s1.rpc)
    assert out.returncode == 1
    assert "No installed keys could decrypt the message" in out.stderr + out.stdout

    out = run_cli("serf", "join", p1.ip, rpc=plain.rpc)
    assert out.returncode == 1
    assert "Remote state is encrypted and encryption is not configured" in \
        out.stderr + out.stdout

    # Nobody learned about anybody.
    for agent in (s1, p1, plain):
        assert list(members("serf", agent.rpc)) == [agent.name]


def test_serf_keys_rotates_pyserf_nodes_too(cluster, need_serf):
    old, new = key(), key()
    s1 = cluster.start("serf", "s1", f"-encrypt={old}")
    cluster.start("pyserf", "p1", f"-encrypt={old}", f"-join={s1.ip}")
    p2 = cluster.start("pyserf", "p2", f"-encrypt={old}", f"-join={s1.ip}")
    wait_until(lambda: len(members("serf", s1.rpc)) == 3, 10, what="three members")

    out = run_cli("serf", "keys", "-list", rpc=s1.rpc)
    assert (out.returncode, out.stdout) == (0, key_list(old, 3, 3))
    for action, value, done in key_steps(old, new):
        out = run_cli("serf", "keys", f"{action}={value}", rpc=s1.rpc)
        assert (out.returncode, out.stdout) == (0, done), out.stdout
    out = run_cli("serf", "keys", "-list", rpc=s1.rpc)
    assert (out.returncode, out.stdout) == (0, key_list(new, 3, 3))
    # Removing the primary is refused by every node, pyserf ones included.
    out = run_cli("serf", "keys", f"-remove={new}", rpc=s1.rpc)
    assert out.returncode == 1
    assert out.stdout.count("Removing the primary key is not allowed") == 3
    # Gossip still flows on the new key: a tag change on p2 reaches serf.
    assert run_cli("pyserf", "tags", "-set", "rotated=yes", rpc=p2.rpc).returncode == 0
    wait_until(lambda: members("serf", s1.rpc)["p2"][2] == {"rotated": "yes"}, 10,
               what="tags gossiped with the new key")
    assert all(status == "alive" for _, status, _ in members("serf", s1.rpc).values())


def test_pyserf_keys_rotates_serf_nodes_and_persists_the_keyring(cluster, need_serf, tmp_path):
    import json

    old, new = key(), key()
    keyring = tmp_path / "keyring.json"
    keyring.write_text(json.dumps([old]))
    p1 = cluster.start("pyserf", "p1", f"-keyring-file={keyring}")
    s1 = cluster.start("serf", "s1", f"-encrypt={old}", f"-join={p1.ip}")
    wait_until(lambda: len(members("pyserf", p1.rpc)) == 2, 10, what="two members")
    for action, value, done in key_steps(old, new):
        out = run_cli("pyserf", "keys", f"{action}={value}", rpc=p1.rpc)
        assert (out.returncode, out.stdout) == (0, done), out.stdout
    out = run_cli("serf", "keys", "-list", rpc=p1.rpc)  # the real CLI against pyserf's RPC
    assert (out.returncode, out.stdout) == (0, key_list(new, 2, 2)), out.stdout
    assert json.loads(keyring.read_text()) == [new]
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"
    out = run_cli("pyserf", "keys", "-install=notbase64!", rpc=p1.rpc)
    assert out.returncode == 1 and "illegal base64 data" in out.stdout
    assert members("serf", s1.rpc)["p1"][1] == "alive"


@pytest.mark.serial
def test_query_returns_once_everyone_answered(cluster, need_serf):
    handler = "-event-handler=query:hello=echo hi-from-$SERF_SELF_NAME"
    p1 = cluster.start("pyserf", "p1", handler)
    cluster.start("serf", "s1", handler, f"-join={p1.ip}")
    cluster.start("pyserf", "p2", handler, f"-join={p1.ip}")
    wait_until(lambda: len(members("pyserf", p1.rpc)) == 3, 10, what="three members")
    for cli in ("pyserf", "serf"):  # the real serf CLI gets the early return too
        start = time.monotonic()
        out = run_cli(cli, "query", "-timeout=8s", "hello", "x", rpc=p1.rpc)
        elapsed = time.monotonic() - start
        assert out.returncode == 0, out.stdout
        assert sorted(out.stdout.splitlines()) == sorted(
            ["Query 'hello' dispatched", "Total Acks: 3", "Total Responses: 3",
             *(f"Ack from '{n}'" for n in ("p1", "p2", "s1")),
             *(f"Response from '{n}': hi-from-{n}" for n in ("p1", "p2", "s1"))]), out.stdout
        assert elapsed < 6.0, (cli, elapsed)
    start = time.monotonic()
    out = run_cli("pyserf", "query", "-timeout=3s", "-wait-full", "hello", rpc=p1.rpc)
    assert time.monotonic() - start >= 3.0
    assert "Total Responses: 3" in out.stdout
    # Filters narrow who must answer: one node, answered by it alone.
    start = time.monotonic()
    out = run_cli("pyserf", "query", "-timeout=8s", "-node=s1", "-format=json", "hello",
                  rpc=p1.rpc)
    assert json.loads(out.stdout)["Responses"] == {"s1": "hi-from-s1\n"}
    assert time.monotonic() - start < 6.0


def test_rtt_between_pyserf_and_serf(cluster, need_serf):
    import re

    s1 = cluster.start("serf", "s1")
    p1 = cluster.start("pyserf", "p1", f"-join={s1.ip}")
    pattern = re.compile(r"^Estimated (\S+) <-> (\S+) rtt: (\d+\.\d{3}) ms$")

    def estimate(cli: str, rpc: str, *nodes: str) -> float | None:
        out = run_cli(cli, "rtt", *nodes, rpc=rpc)
        match = pattern.match(out.stdout.strip())
        return float(match.group(3)) if out.returncode == 0 and match else None

    # Coordinates need a few probe rounds; both directions and both CLIs must agree it is a
    # loopback-sized number (well under 50 ms).
    wait_until(lambda: estimate("serf", s1.rpc, "p1") is not None
               and estimate("serf", p1.rpc, "s1") is not None, 20, what="coordinates")
    for cli, rpc, node in (("serf", s1.rpc, "p1"), ("serf", p1.rpc, "s1"),
                           ("pyserf", p1.rpc, "s1"), ("pyserf", s1.rpc, "p1")):
        value = estimate(cli, rpc, node)
        assert value is not None and 0.0 < value < 50.0, (cli, node, value)
    out = run_cli("serf", "rtt", "nosuch", rpc=p1.rpc)
    assert out.returncode == 1 and 'Could not find a coordinate for node "nosuch"' in out.stdout
