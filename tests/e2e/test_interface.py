"""`interface` binds to an interface's address, e.g. eth1 in a Vagrant box (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.e2e.harness import members, run_cli, wait_until

pytestmark = pytest.mark.e2e


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns():
    """A namespace whose interface is named eth1 (10.213.60.2), its peer on the host."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"pyserf-{uuid.uuid4().hex[:6]}"
    host_if = f"v{name[-6:]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth1", "netns", name)
        sh("ip", "addr", "add", "10.213.60.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for cmd in (("ip", "addr", "add", "10.213.60.2/24", "dev", "eth1"),
                    ("ip", "link", "set", "eth1", "up"), ("ip", "link", "set", "lo", "up")):
            sh("ip", "netns", "exec", name, *cmd)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_interface_eth1_in_a_namespace(cluster, netns, tmp_path):
    inside = cluster.start_in_netns(netns, "vagrant1", "-iface=eth1",
                                    "-rpc-addr=127.0.0.1:7373", "-bind=0.0.0.0:7946")
    assert "Bind addr: '10.213.60.2:7946'" in inside.log()
    host = cluster.start("pyserf", "host", ip="10.213.60.1")
    out = run_cli("pyserf", "join", "10.213.60.2", rpc=host.rpc)
    assert out.returncode == 0, out.stdout
    wait_until(lambda: members("pyserf", host.rpc).get("vagrant1", ("",))[0]
               == "10.213.60.2:7946", 10, what="the namespaced node listed at its eth1 address")

    bad = cluster.start_in_netns(netns, "bad", "-iface=eth9", "-rpc-addr=127.0.0.1:7374",
                                 wait=False)
    assert bad.proc.wait(15) == 1
    # serf's words, which do not name the interface
    assert "==> Invalid network interface: route ip+net: no such network interface\n" in bad.log()
