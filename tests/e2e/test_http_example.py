"""examples/membership_bridge.py reacts to membership changes of a real cluster over the
agent's SSE stream (what seed 004's handler script + REST bridge do)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading

import pytest

from tests.e2e.harness import CHILD_ENV, REPO, Cluster

pytestmark = pytest.mark.e2e


def test_membership_bridge_example_follows_joins_and_leaves(cluster: Cluster) -> None:
    ip = cluster._ip()
    b1 = cluster.start("pyserf", "b1", "-tag", "dc=dc1", f"-http-addr={ip}:8500", ip=ip)
    bridge = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "membership_bridge.py"), f"http://{ip}:8500"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=CHILD_ENV)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in bridge.stdout], daemon=True).start()

    def expect(prefix: str) -> str:
        while True:
            line = lines.get(timeout=30)
            if line.startswith(prefix):
                return line

    try:
        assert "alive=['b1']" in expect("sync *")
        b2 = cluster.start("pyserf", "b2", "-tag", "dc=dc2", f"-join={b1.bind}")
        assert "alive=['b1', 'b2'] dcs=['dc1', 'dc2']" in expect("member-join b2 dc=dc2")
        cluster.stop(b2)
        assert "alive=['b1'] dcs=['dc1']" in expect("member-leave b2")
    finally:
        bridge.kill()
        bridge.wait(5)
