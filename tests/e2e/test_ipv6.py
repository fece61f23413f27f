"""IPv6: pyserf and real serf agents bound to ::1 form one cluster.

All four agents share the loopback address ::1 on distinct ports. Every agent, asked through
both CLIs, must list every member at the address serf formats (Go's net.TCPAddr:
``[::1]:<port>``), the serf CLI's `members` text must read the same from a pyserf agent as
from a serf agent, queries (whose acks travel back over UDP to the querier's v6 address) must
be acknowledged by all four whoever asks, user events must reach handlers on both kinds, and
a graceful leave must be seen as such across kinds.
"""

from __future__ import annotations

import json
import signal
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.harness import Agent, Cluster, members, run_cli, wait_until

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
