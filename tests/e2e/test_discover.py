"""`discover` (mDNS) between real serf and pyserf agents, each in its own network namespace.

The namespaces hang off one bridge that lives in a further namespace, so nothing is added to
the host's own network; addresses are 10.213.70.0/24. Root only.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.e2e.harness import wait_until
from tests.e2e.netlab import NetLab, net_lab, sh

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab(tmp_path):
    """Three namespaces (10.213.70.10-12 on eth0) joined by a bridge in a fourth."""
    with net_lab(tmp_path, "psd", "10.213.70", 3) as lab:
        # serf's mDNS query fails as a whole (and is retried only 60 s later) if its IPv6
        # send fails, which it does while eth0's link-local address is still tentative.
        wait_until(lambda: not any(tentative(ns) for ns in lab.spaces), 15,
                   what="IPv6 duplicate address detection to finish")
        yield lab


def tentative(ns: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "tentative"],
                         capture_output=True, text=True, timeout=20)
    return bool(out.stdout.strip())


def all_alive(lab: NetLab, index: int, names: dict[str, str]) -> bool:
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
