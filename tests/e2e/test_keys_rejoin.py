"""Key rotation while members are down: the rotated cluster refuses a member that comes back
with only the retired key, or with the new key installed but the retired one still primary,
and takes them back once their keyring files put the new key first.

The cluster is mixed (a serf 0.9.4 agent and pyserf agents, each with its own -keyring-file)
and the rotation is driven with both CLIs against both agents, so each side's keyring
persistence and each side's refusal of the old key are checked.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Agent, Cluster, members, run_cli, wait_until

pytestmark = pytest.mark.e2e


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _status(cli: str, rpc: str, name: str) -> str:
    """One member's status; '' while the agent does not answer or does not know it."""
    return members(cli, rpc).get(name, ("", "", {}))[1]


UNREADABLE = "No installed keys could decrypt the message"


def _refused(cluster: Cluster, down: Agent, ring: Path, peers: list[Agent], reason: str) -> None:
    """Restart ``down`` with ``ring`` and -join to every peer: each join is refused for
    ``reason`` in serf's words (a serf agent with the same keyring prints the same, checked
    by hand against 0.9.4), the agent exits 1, and each peer logs that it could not read
    what was sent (the key, not the network)."""
    seen = [peer.log().count(UNREADABLE) for peer in peers]
    agent = cluster.start("pyserf", down.name, f"-keyring-file={ring}",
                          *(f"-join={peer.ip}" for peer in peers), ip=down.ip, wait=False)
    assert agent.proc.wait(20) == 1
    for peer in peers:
        assert f"* Failed to join {peer.ip}: {reason}" in agent.log(), agent.log()
    assert "Traceback" not in agent.log()
    for peer, before in zip(peers, seen, strict=True):
        wait_until(lambda peer=peer, before=before: peer.log().count(UNREADABLE) > before, 5,
                   what=f"{peer.name} to report the unreadable join")


def test_members_down_during_rotation_need_the_new_key_to_rejoin(cluster, tmp_path,
                                                                 need_serf):
    old, new = _key(), _key()
    rings = {name: tmp_path / f"{name}.keyring" for name in ("s1", "p1", "p2", "p3")}
    for ring in rings.values():
        ring.write_text(json.dumps([old]))
    s1 = cluster.start("serf", "s1", f"-keyring-file={rings['s1']}")
    agents = {"s1": s1}
    for name in ("p1", "p2", "p3"):
        agents[name] = cluster.start("pyserf", name, f"-keyring-file={rings[name]}",
                                     f"-join={s1.ip}")
    p1, p2, p3 = agents["p1"], agents["p2"], agents["p3"]
    wait_until(lambda: all(_status("serf", s1.rpc, n) == "alive" for n in agents), 10,
               what="four members")

    # p2 leaves before the rotation starts: it never hears of the new key.
    assert cluster.stop(p2, signal.SIGINT) == 0
    wait_until(lambda: _status("pyserf", p1.rpc, "p2") == "left", 10, what="p2 left")
    out = run_cli("serf", "keys", "-install", new, rpc=p1.rpc)  # serf's CLI, pyserf agent
    assert out.returncode == 0, out.stdout + out.stderr
    # p3 goes after the install: its file has the new key, but not as the primary. (Both
    # leave rather than crash: key queries wait for every member not known to be gone, so
    # a kill -9 would first cost a failure detection, and the keyring file is the same.)
    assert json.loads(rings["p3"].read_text()) == [old, new]
    assert cluster.stop(p3, signal.SIGINT) == 0
    wait_until(lambda: _status("serf", s1.rpc, "p3") == "left"
               and _status("pyserf", p1.rpc, "p3") == "left", 10, what="p3 left")
    for cli, rpc, flag in [("pyserf", s1.rpc, "-use"), ("serf", p1.rpc, "-remove")]:
        out = run_cli(cli, "keys", flag, new if flag == "-use" else old, rpc=rpc)
        assert out.returncode == 0, (cli, flag, out.stdout, out.stderr)
    # Both live agents persisted the rotation; the down ones' files are as they left them.
    for name in ("s1", "p1"):
        assert json.loads(rings[name].read_text()) == [new], name
    assert json.loads(rings["p2"].read_text()) == [old]
    assert json.loads(rings["p3"].read_text()) == [old, new]
    listed = run_cli("serf", "keys", "-list", rpc=p1.rpc)
    assert listed.returncode == 0 and f"{new} [2/2]" in " ".join(listed.stdout.split())
    assert old not in listed.stdout

    # Restarted as they are, both are refused: p2 has only the retired key (it cannot read
    # the peer's answer either), and p3 still encrypts with it (memberlist sends with the
    # primary key only; p3 can read the peer's error reply, hence "remote error").
    _refused(cluster, p2, rings["p2"], [s1, p1], UNREADABLE)
    _refused(cluster, p3, rings["p3"], [s1, p1], f"remote error: {UNREADABLE}")
    # They exited after the refused joins, so had one got in, both views would show it.
    for cli, rpc in (("serf", s1.rpc), ("pyserf", p1.rpc)):
        assert (_status(cli, rpc, "p2"), _status(cli, rpc, "p3")) == ("left", "left")

    # The operator puts the new key first in both files: they rejoin.
    rings["p2"].write_text(json.dumps([new]))
    rings["p3"].write_text(json.dumps([new, old]))
    for name in ("p2", "p3"):
        agents[name] = cluster.start("pyserf", name, f"-keyring-file={rings[name]}",
                                     f"-join={s1.ip}", ip=agents[name].ip)
    everyone = {name: "alive" for name in agents}
    wait_until(lambda: all({m: row[1] for m, row in members(cli, a.rpc).items()} == everyone
                           for cli, a in (("serf", s1), ("pyserf", p1), ("pyserf", p3))), 10,
               what="all four alive everywhere")
    # Removing the old key again now reaches p3, which rewrites its file.
    out = run_cli("pyserf", "keys", "-remove", old, rpc=s1.rpc)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(rings["p3"].read_text()) == [new]
