"""IPv6: pyserf and real serf agents bound to ::1 form one cluster.

All four agents share the loopback address ::1 on distinct ports. Every agent, asked through
both CLIs, must list every member at the address serf formats (Go's net.TCPAddr:
``[::1]:<port>``), the serf CLI's `members` text must read the same from a pyserf agent as
from a serf agent, queries (whose acks travel back over UDP to the querier's v6 address) must
be acknowledged by all four whoever asks, user events must reach handlers on both kinds, and
a graceful leave must be seen as such across kinds.

A second test puts a pyserf agent and a serf agent in two network namespaces joined by a veth
pair carrying only global IPv6 addresses (no loopback shortcut, no IPv4 at all between them).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, Agent, Cluster, members, run_cli, wait_until

pytestmark = pytest.mark.e2e

RECORDER = '#!/bin/sh\ncat >/dev/null\necho "$SERF_USER_EVENT" >> "$1"\n'


def free_ports(count: int) -> list[int]:
    """Ports free on ::1 for both TCP and UDP (gossip and RPC), chosen by the kernel."""
    ports: list[int] = []
    with ExitStack() as stack:  # all held open until the end, so no port is handed out twice
        for _ in range(10 * count):
            tcp = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            tcp.bind(("::1", 0))
            port = tcp.getsockname()[1]
            udp = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
            try:
                udp.bind(("::1", port))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
    raise AssertionError(f"could not find {count} free ports on ::1")


def text_members(cli: str, agent: Agent) -> list[str]:
    out = run_cli(cli, "members", rpc=agent.rpc)
    assert out.returncode == 0, out.stderr
    return sorted(" ".join(line.split()) for line in out.stdout.splitlines())


def acks(via: Agent) -> set[str]:
    out = run_cli("serf", "query", "-format=json", "-timeout=3s", "v6-ping", rpc=via.rpc)
    return set(json.loads(out.stdout)["Acks"]) if out.returncode == 0 else set()


def events(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def test_mixed_cluster_on_ipv6_loopback(cluster: Cluster, need_serf, tmp_path):
    if not socket.has_ipv6:
        raise AssertionError("this Python has no IPv6 support")
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    ports = free_ports(8)
    agents: list[Agent] = []
    for i, (kind, name) in enumerate((("pyserf", "p1"), ("serf", "s1"), ("pyserf", "p2"),
                                      ("serf", "s2"))):
        join = [f"-join={agents[-1].bind}"] if agents else []
        agents.append(cluster.start(kind, name, *join,
                                    f"-event-handler=user={script} {tmp_path}/{name}.ev",
                                    ip="[::1]", port=ports[2 * i], rpc_port=ports[2 * i + 1]))
    p1, s1, p2, s2 = agents
    expected = {a.name: (f"[::1]:{a.port}", "alive") for a in agents}

    def views_agree() -> bool:
        return all({n: (addr, status) for n, (addr, status, _tags) in
                    members(cli, a.rpc).items()} == expected
                   for a in agents for cli in ("serf", "pyserf"))

    wait_until(views_agree, 20, what="four members at [::1]:<port> in every view")
    # serf's table reads the same from either kind of agent, and from either CLI.
    reference = text_members("serf", s1)
    assert reference == sorted(f"{n} {addr} {status}" for n, (addr, status) in
                               expected.items())
    assert text_members("serf", p1) == reference
    assert text_members("pyserf", s2) == reference

    # Queries: acks come back over UDP to the querier's v6 address, from both kinds.
    for via in (s1, p2):
        wait_until(lambda v=via: acks(v) == set(expected), 12,
                   what=f"acks from all four to a query from {via.name}")

    for sender, name in ((p1, "from-p1"), (s2, "from-s2")):
        assert run_cli("serf", "event", "-coalesce=false", name,
                       rpc=sender.rpc).returncode == 0
    wait_until(lambda: all({"from-p1", "from-s2"} <= set(events(tmp_path / f"{a.name}.ev"))
                           for a in agents), 10, what="both events at all four agents")

    # A graceful leave of each kind, seen by the other kind.
    for leaver, watcher in ((s2, p1), (p2, s1)):
        assert cluster.stop(leaver, signal.SIGINT) == 0
        wait_until(lambda w=watcher, n=leaver.name: members("serf", w.rpc).get(
            n, ("", ""))[1] == "left", 10, what=f"{watcher.name} to see {leaver.name} left")


V6_A, V6_B = "fd7a:6e65::1", "fd7a:6e65::2"  # unique local addresses, only inside the pair
NS_RPC = "127.0.0.1:7373"  # each namespace has its own loopback


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture
def v6_pair():
    """Two namespaces, a veth pair between them with one IPv6 address each; removed after."""
    tag = uuid.uuid4().hex[:6]
    spaces = (f"pyserf6a-{tag}", f"pyserf6b-{tag}")
    try:
        for ns in spaces:
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "v6a", "netns", spaces[0], "type", "veth", "peer", "name",
           "v6b", "netns", spaces[1])
        for ns, dev, addr in ((spaces[0], "v6a", V6_A), (spaces[1], "v6b", V6_B)):
            # nodad: usable at once instead of after duplicate address detection (~2 s).
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield spaces
    finally:
        for ns in spaces:  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def ns_cli(ns: str, cli: str, *args: str) -> subprocess.CompletedProcess:
    base = [SERF] if cli == "serf" else list(PYSERF)
    return subprocess.run(["ip", "netns", "exec", ns, *base, args[0], f"-rpc-addr={NS_RPC}",
                           *args[1:]], capture_output=True, text=True, timeout=20,
                          env=CHILD_ENV)


def ns_members(ns: str, cli: str) -> dict[str, tuple[str, str]]:
    out = ns_cli(ns, cli, "members", "-format=json")
    if out.returncode != 0:
        return {}
    return {m["name"]: (m["addr"], m["status"]) for m in json.loads(out.stdout)["members"]}


# Namespaces before the cluster: the agents are stopped before their namespaces go.
def test_pyserf_and_serf_over_a_v6_only_veth(v6_pair, cluster: Cluster, need_serf):
    ns_a, ns_b = v6_pair
    cluster.start_in_netns(ns_a, "p6", f"-bind=[{V6_A}]:7946", f"-rpc-addr={NS_RPC}")
    cluster.start_in_netns(ns_b, "s6", f"-bind=[{V6_B}]:7946", f"-rpc-addr={NS_RPC}",
                           f"-join=[{V6_A}]:7946", kind="serf", ip=V6_B)
    expected = {"p6": (f"[{V6_A}]:7946", "alive"), "s6": (f"[{V6_B}]:7946", "alive")}
    wait_until(lambda: all(ns_members(ns, cli) == expected for ns in v6_pair
                           for cli in ("serf", "pyserf")), 15,
               what="both agents listed at their v6 addresses on both sides")
    for ns in v6_pair:  # a query from each side is acked by both over the veth
        out = ns_cli(ns, "serf", "query", "-format=json", "-timeout=3s", "v6-ping")
        assert out.returncode == 0, out.stderr
        assert set(json.loads(out.stdout)["Acks"]) == set(expected), out.stdout
