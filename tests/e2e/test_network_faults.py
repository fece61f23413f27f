"""Failure detection under network faults made with iptables on loopback (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.e2e.harness import members, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def iptables():
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root and iptables")
    rules: list[list[str]] = []

    def add(*rule: str) -> None:
        subprocess.run(["iptables", "-I", "INPUT", *rule], check=True)
        rules.append(list(rule))

    try:
        yield add
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", "INPUT", *rule], check=False)


def test_one_way_udp_loss_is_bridged_by_tcp_ping(cluster, need_serf, iptables):
    s1 = cluster.start("serf", "s1")
    p1 = cluster.start("pyserf", "p1", f"-join={s1.ip}")
    wait_until(lambda: members("pyserf", p1.rpc).get("s1", ("", ""))[1] == "alive", 10,
               what="joined")
    # Drop every UDP datagram from p1 to s1: p1's pings and s1's acks to p1 both vanish.
    iptables("-p", "udp", "-s", p1.ip, "-d", s1.ip, "-j", "DROP")
    wait_until(lambda: "Was able to connect to s1 but other probes failed" in p1.log(), 15,
               what="pyserf to fall back to a TCP ping")
    wait_until(lambda: "Was able to connect to p1 but other probes failed" in s1.log(), 15,
               what="serf to fall back to a TCP ping at pyserf")
    time.sleep(3)
    for agent in (s1, p1):
        view = members("pyserf", agent.rpc)
        assert (view["s1"][1], view["p1"][1]) == ("alive", "alive"), (agent.name, view)
