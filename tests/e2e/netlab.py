"""Network namespaces on one bridge, for e2e tests where each agent needs a host of its own.

The bridge lives in a further namespace, so nothing is added to the host's own network. Every
agent listens on its namespace's 127.0.0.1:7373 for RPC and on eth0 (``subnet.10+index``) for
gossip. Root only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, Agent, Cluster

RPC = "127.0.0.1:7373"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@dataclass
class NetLab:
    tmp: Path
    subnet: str
    hub: str
    spaces: list[str]
    cluster: Cluster
    created: list[str] = field(default_factory=list)

    def ip(self, index: int) -> str:
        return f"{self.subnet}.{10 + index}"

    def start(self, index: int, kind: str, name: str, *args: str) -> Agent:
        return self.cluster.start_in_netns(self.spaces[index], name, f"-rpc-addr={RPC}", *args,
                                           kind=kind, ip=self.ip(index))

    def start_serf(self, index: int, name: str, *args: str) -> Agent:
        return self.start(index, "serf", name, *args)

    def start_pyserf(self, index: int, name: str, *args: str) -> Agent:
        return self.start(index, "pyserf", name, *args)

    def cli(self, index: int, *args: str) -> subprocess.CompletedProcess[str]:
        """A pyserf CLI command against the agent in namespace ``index``."""
        argv = ["ip", "netns", "exec", self.spaces[index], *PYSERF, *args, f"-rpc-addr={RPC}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=15, env=CHILD_ENV)

    def members(self, index: int) -> dict[str, tuple[str, str]]:
        """name -> (addr, status) as the agent in namespace ``index`` lists them."""
        try:
            out = self.cli(index, "members", "-format=json")
        except subprocess.TimeoutExpired:
            return {}
        if out.returncode != 0:
            return {}
        return {m["name"]: (m["addr"], m["status"])
                for m in json.loads(out.stdout).get("members") or []}


@contextmanager
def net_lab(tmp_path: Path, prefix: str, subnet: str, count: int) -> Iterator[NetLab]:
    """``count`` namespaces (``subnet``.10 and up on eth0) joined by a bridge in another."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    tag = uuid.uuid4().hex[:6]
    lab = NetLab(tmp_path, subnet, f"{prefix}{tag}-hub",
                 [f"{prefix}{tag}-{i}" for i in range(count)], Cluster(tmp_path))
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
