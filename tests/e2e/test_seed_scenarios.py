"""The Serf quick start and the /etc/hosts blog post, with pyserf in place of serf."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import members, run_cli, wait_until

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parent / "fixtures"


def test_quick_start(cluster):
    # serf agent -node=foo -bind=127.0.0.1:5000 -rpc-addr=127.0.0.1:7373, bar on 5001/7374,
    # here on the cluster's own loopback address.
    ip = cluster._ip()
    foo = cluster.start("pyserf", "foo", ip=ip, port=5000, rpc_port=7373)
    bar = cluster.start("pyserf", "bar", ip=ip, port=5001, rpc_port=7374)
    out = run_cli("pyserf", "join", f"{ip}:5001", rpc=foo.rpc)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Successfully joined cluster by contacting 1 nodes."
    expected = {"foo": f"{ip}:5000", "bar": f"{ip}:5001"}
    for agent in (foo, bar):
        wait_until(lambda rpc=agent.rpc: {n: v[0] for n, v in members("pyserf", rpc).items()}
                   == expected, 10, what="both agents listed")
    text = run_cli("pyserf", "members", rpc=foo.rpc).stdout
    rows = sorted(line.split() for line in text.splitlines())
    assert rows == [["bar", f"{ip}:5001", "alive"], ["foo", f"{ip}:5000", "alive"]]

    # Ctrl-C bar: it leaves gracefully and foo records it as left.
    assert cluster.stop(bar, signal.SIGINT) == 0
    assert "Gracefully shutting down agent..." in bar.log()
    wait_until(lambda: members("pyserf", foo.rpc)["bar"][1] == "left", 10,
               what="foo to see bar left")

    # A force-killed agent is detected as failed.
    baz = cluster.start("pyserf", "baz", f"-join={ip}:5000", ip=ip, port=5002, rpc_port=7375)
    wait_until(lambda: members("pyserf", foo.rpc).get("baz", ("", ""))[1] == "alive", 10,
               what="baz to join")
    baz.proc.kill()
    wait_until(lambda: members("pyserf", foo.rpc)["baz"][1] == "failed", 20,
               what="foo to see baz failed")


def test_etc_hosts_blog(cluster, tmp_path):
    handler = tmp_path / "event_handler.sh"
    shutil.copy(FIXTURES / "hosts_handler.sh", handler)
    node1 = cluster.start("pyserf", "node1", f"-event-handler={handler}")
    hosts = tmp_path / "etc" / "hosts"

    def lines() -> list[str]:
        try:
            return sorted(hosts.read_text().splitlines())
        except OSError:
            return []

    wait_until(lambda: lines() == [f"{node1.ip}\tnode1"], 10, what="node1 in etc/hosts")
    node2 = cluster.start("pyserf", "node2")
    out = run_cli("pyserf", "join", node2.ip, rpc=node1.rpc)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: lines() == sorted([f"{node1.ip}\tnode1", f"{node2.ip}\tnode2"]), 10,
               what="node2 added to etc/hosts")
    assert cluster.stop(node2, signal.SIGINT) == 0
    wait_until(lambda: lines() == [f"{node1.ip}\tnode1"], 10, what="node2 removed again")
