"""hosts_file end to end: a pyserf agent keeps a temp hosts file in step with a mixed cluster
of pyserf and serf agents, each in a network namespace of its own."""

from __future__ import annotations

import json

import pytest

from pyserf.agent.hosts_file import BEGIN, END
from tests.e2e.harness import run_cli, wait_until
from tests.e2e.netlab import net_lab

pytestmark = pytest.mark.e2e

ORIGINAL = b"127.0.0.1\tlocalhost\n# the administrator's own lines \xff\n10.9.9.9 printer\n"


def block_lines(path) -> list[str] | None:
    """The lines inside the marked block, or None when the file has no block."""
    data = path.read_bytes()
    if BEGIN not in data:
        return None
    inner = data.split(BEGIN + b"\n", 1)[1].split(END, 1)[0]
    return inner.decode().splitlines()


def test_hosts_file_follows_joins_updates_and_leaves(tmp_path):
    """Five agents, each on a host (network namespace) of its own, as on a real LAN."""
    hosts = tmp_path / "hosts"
    hosts.write_bytes(ORIGINAL)
    config = tmp_path / "hosts.json"
    config.write_text(json.dumps(
        {"hosts_file": {"path": str(hosts), "tags": {"role": "web.*"}, "domain": "lan"}}))
    with net_lab(tmp_path, "psh", "10.213.71", 5) as lab:
        seed = f"-join={lab.ip(0)}"
        p1 = lab.start_pyserf(0, "p1", "-tag", "role=web", f"-config-file={config}")
        wait_until(lambda: block_lines(hosts) == [f"{lab.ip(0)}\tp1 p1.lan"], 10,
                   what="p1's own entry")
        lab.start_pyserf(1, "p2", "-tag", "role=web2", seed)
        s1 = lab.start_serf(2, "s1", "-tag", "role=webserf", seed)
        lab.start_pyserf(3, "db1", "-tag", "role=db", seed)
        # a name that would add fields and a comment to its line: skipped, with a warning in
        # p1's log (memberlist already refuses names with control characters, a newline
        # among them)
        lab.start_serf(4, "bank 10.6.6.6#x", "-tag", "role=web", seed)
        expected = [f"{lab.ip(0)}\tp1 p1.lan", f"{lab.ip(1)}\tp2 p2.lan",
                    f"{lab.ip(2)}\ts1 s1.lan"]  # sorted by name
        wait_until(lambda: block_lines(hosts) == expected, 20, what="the web members' block")
        assert hosts.read_bytes().startswith(ORIGINAL)
        wait_until(lambda: "not a valid host name" in p1.log(), 10, what="the warning")
        assert b"bank" not in hosts.read_bytes()

        # a tag change (member-update) takes p2 out of the filter
        assert lab.cli(1, "tags", "-set", "role=cache").returncode == 0
        expected.remove(f"{lab.ip(1)}\tp2 p2.lan")
        wait_until(lambda: block_lines(hosts) == expected, 20, what="p2 to leave the block")
        # a graceful leave of another member removes its line
        assert lab.cluster.stop(s1) == 0
        expected.remove(f"{lab.ip(2)}\ts1 s1.lan")
        wait_until(lambda: block_lines(hosts) == expected, 20, what="s1's line to go")
        # the agent's own graceful leave takes its block out: the file is as it was, byte for
        # byte, and no temporary file is left beside it
        assert lab.cluster.stop(p1) == 0
        assert hosts.read_bytes() == ORIGINAL
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".hosts")) == []


def test_bad_hosts_file_config_is_refused_at_start(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"hosts_file": {"path": "relative/hosts"}}))
    res = run_cli("pyserf", "agent", f"-config-file={config}", "-config-check")
    assert res.returncode != 0
    assert "hosts_file: \"path\" must be an absolute file name" in res.stdout + res.stderr
