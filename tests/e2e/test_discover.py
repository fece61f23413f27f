"""`discover` (mDNS) between real serf and pyserf agents, each in its own network namespace.

The namespaces hang off one bridge that lives in a further namespace, so nothing is added to
the host's own network; addresses are 10.213.70.0/24. Root only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, Agent, Cluster, wait_until

pytestmark = pytest.mark.e2e

SUBNET = "10.213.70"
RPC = "127.0.0.1:7373"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@dataclass
class Lab:
    tmp: Path
    hub: str
    spaces: list[str]
    cluster: Cluster
    created: list[str] = field(default_factory=list)

    def ip(self, index: int) -> str:
        return f"{SUBNET}.{10 + index}"

    def start_serf(self, index: int, name: str, *args: str) -> Agent:
        return self.cluster.start_in_netns(self.spaces[index], name, f"-rpc-addr={RPC}", *args,
                                           kind="serf", ip=self.ip(index))

    def start_pyserf(self, index: int, name: str, *args: str) -> Agent:
        return self.cluster.start_in_netns(self.spaces[index], name, f"-rpc-addr={RPC}", *args,
                                           ip=self.ip(index))

    def members(self, index: int) -> dict[str, tuple[str, str]]:
        """name -> (addr, status) as the agent in namespace ``index`` lists them."""
        argv = ["ip", "netns", "exec", self.spaces[index], *PYSERF, "members",
                "-format=json", f"-rpc-addr={RPC}"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=15,
                                 env=CHILD_ENV)
        except subprocess.TimeoutExpired:
            return {}
        if out.returncode != 0:
            return {}
        return {m["name"]: (m["addr"], m["status"])
                for m in json.loads(out.stdout).get("members") or []}


@pytest.fixture
def lab(tmp_path):
    """Three namespaces (10.213.70.10-12 on eth0) joined by a bridge in a fourth."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    tag = uuid.uuid4().hex[:6]
    lab = Lab(tmp_path, f"psd{tag}-hub", [f"psd{tag}-{i}" for i in range(3)],
              Cluster(tmp_path))
    try:
        sh("ip", "netns", "add", lab.hub)
        lab.created.append(lab.hub)
        sh("ip", "-n", lab.hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", lab.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(lab.spaces):
            sh("ip", "netns", "add", ns)
            lab.created.append(ns)
            sh("ip", "-n", lab.hub, "link", "add", f"p{i}", "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "-n", lab.hub, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{lab.ip(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # serf's mDNS query fails as a whole (and is retried only 60 s later) if its IPv6 send
        # fails, which it does while eth0's link-local address is still tentative.
        wait_until(lambda: not any(tentative(ns) for ns in lab.spaces), 15,
                   what="IPv6 duplicate address detection to finish")
        yield lab
    finally:
        lab.cluster.close()  # kills the agents by PID before their namespaces go
        if lab.hub in lab.created:
            subprocess.run(["ip", "-n", lab.hub, "link", "del", "br0"], capture_output=True,
                           timeout=20)
            for i in range(len(lab.spaces)):
                subprocess.run(["ip", "-n", lab.hub, "link", "del", f"p{i}"],
                               capture_output=True, timeout=20)
        for ns in reversed(lab.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def tentative(ns: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "tentative"],
                         capture_output=True, text=True, timeout=20)
    return bool(out.stdout.strip())


def all_alive(lab: Lab, index: int, names: dict[str, str]) -> bool:
    listed = lab.members(index)
    return all(listed.get(name) == (f"{ip}:7946", "alive") for name, ip in names.items())


def test_serf_and_pyserf_find_each_other_by_mdns(lab):
    # pyserf first, alone: nobody answers its queries yet.
    # (-iface: mDNS only on eth0; py-b below uses every interface.)
    py_a = lab.start_pyserf(1, "py-a", "-iface=eth0", "-discover=lab", "-log-level=debug")
    assert "mDNS cluster: lab" in py_a.log()
    assert f"Bind addr: '{lab.ip(1)}:7946'" in py_a.log()
    wait_until(lambda: "agent.mdns: Advertising py-a._serf_lab._tcp.local." in py_a.log(), 10,
               what="py-a's mDNS record to be registered")

    # serf second: its start-up query is answered by py-a, so serf joins py-a.
    # hashicorp/mdns joins 224.0.0.251 on the default multicast interface even with -iface
    # and crashes (nil pointer) if that fails, so serf's namespace needs a multicast route.
    sh("ip", "-n", lab.spaces[0], "route", "add", "224.0.0.0/4", "dev", "eth0")
    started = time.monotonic()
    serf = lab.start_serf(0, "serf", "-iface=eth0", "-discover=lab")
    names = {"serf": lab.ip(0), "py-a": lab.ip(1)}
    wait_until(lambda: all_alive(lab, 0, names) and all_alive(lab, 1, names), 15,
               what=f"serf and py-a to list each other\n{serf.log()}\n{py_a.log()}")
    serf_found = time.monotonic() - started
    assert f"{lab.ip(1)}:7946" in "".join(
        line for line in serf.log().splitlines() if "agent: joining:" in line), serf.log()
    assert "agent.mdns: Joined" in serf.log()

    # pyserf third: its first query is answered by serf (and py-a).
    started = time.monotonic()
    py_b = lab.start_pyserf(2, "py-b", "-bind=0.0.0.0", "-discover=lab", "-log-level=debug")
    names["py-b"] = lab.ip(2)
    wait_until(lambda: all(all_alive(lab, i, names) for i in range(3)), 15,
               what=f"all three to list each other\n{serf.log()}\n{py_a.log()}\n{py_b.log()}")
    py_found = time.monotonic() - started
    assert f"agent.mdns: Found serf._serf_lab._tcp.local. at {lab.ip(0)}:7946" in py_b.log()
    assert "agent.mdns: Joined" in py_b.log()
    print(f"\nserf listed py-a {serf_found:.2f}s after starting; "
          f"all listed py-b {py_found:.2f}s after it started")

    # A graceful stop withdraws the mDNS record and exits 0.
    for agent in (py_b, py_a):
        assert lab.cluster.stop(agent, signal.SIGINT, timeout=15) == 0, agent.log()
    assert lab.cluster.stop(serf, signal.SIGINT, timeout=15) == 0, serf.log()
