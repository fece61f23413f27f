"""Telemetry (issue 14) from real pyserf agent processes: statsd lines caught by a real UDP
listener, statsite lines by a real TCP listener, the SIGUSR1 dump, Prometheus' /metrics, and
(when real serf is installed) the statsd names serf 0.9.4 sends under the same config.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Agent, Cluster, run_cli, wait_until

pytestmark = pytest.mark.e2e

LINE = re.compile(r"^(?P<name>[^:|\s]+):(?P<value>-?\d+\.\d{6})\|(?P<kind>c|g|ms)$")


class StatsListener:
    """Collects statsd lines (UDP datagrams, or a TCP stream for statsite) in a thread."""

    def __init__(self, ip: str, tcp: bool = False, port: int = 0) -> None:
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.addr = f"{ip}:{self.sock.getsockname()[1]}"
        self.values: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.bad: list[str] = []
        self.datagrams: list[int] = []
        self.lock = threading.Lock()
        self.stopped = False
        if tcp:
            self.sock.listen(4)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._tcp if tcp else self._udp, daemon=True).start()

    def _take(self, text: str) -> None:
        with self.lock:
            for line in text.splitlines():
                match = LINE.match(line)
                if match is None:
                    self.bad.append(line)
                else:
                    self.values[(match["name"], match["kind"])].append(float(match["value"]))

    def _udp(self) -> None:
        while not self.stopped:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.datagrams.append(len(data))
            self._take(data.decode())

    def _tcp(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            conn.settimeout(0.2)
            pending = b""
            while not self.stopped:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                pending += chunk
                text, _, rest = pending.rpartition(b"\n")
                pending = rest
                self._take(text.decode())
            conn.close()

    def names(self) -> set[str]:
        with self.lock:
            return {name for name, _ in self.values}

    def total(self, name: str, kind: str) -> float:
        with self.lock:
            return sum(self.values.get((name, kind), []))

    def count(self, name: str, kind: str) -> int:
        with self.lock:
            return len(self.values.get((name, kind), []))

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


def _config(cluster: Cluster, name: str, **keys: object) -> str:
    path = cluster.tmp / f"{name}-telemetry.json"
    path.write_text(json.dumps(keys))
    return f"-config-file={path}"


def test_statsd_lines_carry_serf_names_kinds_and_values(cluster: Cluster, tmp_path: Path) -> None:
    ip_a = cluster._ip()
    statsd = StatsListener(ip_a)
    try:
        b = cluster.start("pyserf", "b")
        a = cluster.start("pyserf", "a", _config(cluster, "a", statsd_addr=statsd.addr),
                          f"-join={b.bind}", "-event-handler=member-join=true", ip=ip_a)
        assert run_cli("pyserf", "members", rpc=a.rpc).returncode == 0
        wait_until(lambda: statsd.total("serf-agent.serf.member.join", "c") >= 2, 15,
                   what="a's member.join counter (itself and b)")
        wait_until(lambda: statsd.count("serf-agent.serf.coordinate.adjustment-ms", "ms") > 0,
                   15, what="a coordinate update from a probe of b")
        # A member that goes away: failed (killed), seen within the suspicion timeout.
        b.proc.kill()
        b.proc.wait(5)
        wait_until(lambda: statsd.total("serf-agent.serf.member.failed", "c") >= 1, 30,
                   what="a's member.failed counter")
        names = statsd.names()
        expected = {
            ("serf-agent.memberlist.probeNode", "ms"), ("serf-agent.memberlist.gossip", "ms"),
            ("serf-agent.memberlist.pushPullNode", "ms"), ("serf-agent.memberlist.msg.alive", "c"),
            ("serf-agent.memberlist.msg.suspect", "c"), ("serf-agent.memberlist.msg.dead", "c"),
            ("serf-agent.memberlist.udp.sent", "c"), ("serf-agent.memberlist.udp.received", "c"),
            ("serf-agent.memberlist.tcp.connect", "c"), ("serf-agent.serf.msgs.sent", "ms"),
            ("serf-agent.serf.msgs.received", "ms"), ("serf-agent.serf.member.join", "c"),
            ("serf-agent.serf.member.failed", "c"),
            ("serf-agent.serf.coordinate.adjustment-ms", "ms"),
            ("serf-agent.agent.ipc.accept", "c"), ("serf-agent.agent.ipc.command", "c"),
            ("serf-agent.agent.invoke.true", "ms")}
        missing = {k for k in expected if statsd.count(*k) == 0}
        assert not missing, f"not sent: {sorted(missing)}; sent: {sorted(names)}"
        assert not statsd.bad, f"lines not in go-metrics' statsd format: {statsd.bad[:5]}"
        assert max(statsd.datagrams) <= 1400, "statsd packets are bounded like go-metrics'"
        # Counted in bytes per packet, as memberlist does (a ping alone is ~30 bytes).
        assert statsd.total("serf-agent.memberlist.udp.sent", "c") > \
            20 * statsd.count("serf-agent.memberlist.udp.sent", "c")
        # Gauges carry the host name, as go-metrics does when a sink is set.
        host = socket.gethostname()
        assert statsd.count(f"serf-agent.{host}.runtime.num_goroutines", "g") >= 1
        # b joined (1) and a itself (1): exactly two joins, one failure.
        assert statsd.total("serf-agent.serf.member.join", "c") == 2
        assert statsd.total("serf-agent.serf.member.failed", "c") == 1
        # Counters grow while the agent runs: later probes keep sending datagrams.
        before = statsd.total("serf-agent.memberlist.gossip", "ms"), \
            statsd.count("serf-agent.memberlist.gossip", "ms")
        assert before[1] >= 1 and all(v >= 0 for v in
                                      statsd.values[("serf-agent.memberlist.gossip", "ms")])
    finally:
        statsd.close()


def test_statsite_over_tcp_and_retry_after_it_comes_up(cluster: Cluster) -> None:
    ip = cluster._ip()
    # Reserve a port, start the agent while nothing listens there, then start statsite.
    probe = socket.socket()
    probe.bind((ip, 0))
    port = probe.getsockname()[1]
    probe.close()
    a = cluster.start("pyserf", "a", _config(cluster, "a", statsite_addr=f"{ip}:{port}"),
                      ip=ip)
    wait_until(lambda: "Error connecting to statsite" in a.log(), 10,
               what="the failed statsite connection to be logged")
    listener = StatsListener(ip, tcp=True, port=port)
    try:
        cluster.start("pyserf", "b", f"-join={a.bind}")
        # The back-off retries (1 s, 2 s, 4 s, ...) reach it; joins are counted once connected.
        wait_until(lambda: listener.count(f"serf-agent.{socket.gethostname()}"
                                          ".runtime.sys_bytes", "g") >= 1, 20,
                   what="statsite lines after the retry")
        wait_until(lambda: listener.count("serf-agent.memberlist.probeNode", "ms") >= 1, 15,
                   what="probe timers over statsite")
        assert not listener.bad
        assert a.alive()
    finally:
        listener.close()


@pytest.mark.parametrize("with_statsd", [False, True], ids=["no-telemetry-config", "statsd"])
def test_sigusr1_dumps_inmem_intervals_in_go_metrics_format(cluster: Cluster,
                                                            with_statsd: bool) -> None:
    """serf's agent always has its in-memory sink: SIGUSR1 prints it with or without a
    statsd/statsite address (gauges carry the host name only with a network sink)."""
    ip = cluster._ip()
    statsd = StatsListener(ip) if with_statsd else None
    try:
        config = [_config(cluster, "a", statsd_addr=statsd.addr)] if statsd else []
        a = cluster.start("pyserf", "a", *config, ip=ip)
        cluster.start("pyserf", "b", f"-join={a.bind}")
        # go-metrics prints finished 10 s intervals only, which start at multiples of 10 s of
        # the wall clock. A fixed 11 s could end within a second of b's join and show no probe
        # of b (one clean-clone run did): let a few probes happen, then wait for the interval
        # holding them to close.
        time.sleep(3)
        time.sleep(10 - time.time() % 10 + 0.5)
        cluster.send(a, signal.SIGUSR1)
        row = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+)\]\[(G|C|S)\] "
                         r"'([^']+)': (.*)$")
        wait_until(lambda: "'serf-agent.serf.member.join': Count: " in a.log(), 10,
                   what="the SIGUSR1 dump")
        rows = [m.groups() for m in map(row.match, a.log().splitlines()) if m]
        by_name = {(kind, name): rest for _, kind, name, rest in rows}
        # The two joins (a's own and b's) can fall either side of a 10 s interval boundary.
        joins = [rest for _, kind, name, rest in rows
                 if (kind, name) == ("C", "serf-agent.serf.member.join")]
        assert all(re.match(r"Count: (\d+) Sum: \1\.000 ", rest) for rest in joins), joins
        assert sum(int(rest.split()[1]) for rest in joins) == 2, joins
        probes = [rest for _, kind, name, rest in rows
                  if (kind, name) == ("S", "serf-agent.memberlist.probeNode")]
        assert probes and all(float(rest.split("Sum: ")[1].split()[0]) > 0 for rest in probes)
        sent = [float(rest.split("Sum: ")[1].split()[0]) for _, kind, name, rest in rows
                if (kind, name) == ("C", "serf-agent.memberlist.udp.sent")]
        assert sent and min(sent) > 20, sent  # bytes, a ping alone is ~30
        host = f"{socket.gethostname()}." if with_statsd else ""
        assert float(by_name[("G", f"serf-agent.{host}runtime.sys_bytes")]) > 1e6
        assert a.alive(), "SIGUSR1 must not stop the agent"
    finally:
        if statsd is not None:
            statsd.close()


def test_bad_sink_address_is_a_clear_start_error(cluster: Cluster) -> None:
    ip = cluster._ip()
    a = cluster.start("pyserf", "a", _config(cluster, "a", statsd_addr="no-port-here"),
                      ip=ip, wait=False)
    assert a.proc.wait(20) == 1
    assert "Failed to start statsd sink. Got: address no-port-here" in a.log()


def _metrics(agent: Agent, token: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection(agent.ip, 8500, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_prometheus_metrics_endpoint_and_its_auth(cluster: Cluster) -> None:
    ip = cluster._ip()
    a = cluster.start("pyserf", "a", f"-http-addr={ip}:8500",
                      _config(cluster, "a", http_token="tok"), ip=ip)
    cluster.start("pyserf", "b", f"-join={a.bind}")

    def families() -> dict[str, dict[str, float]]:
        status, text = _metrics(a)  # open without the token (http_metrics_auth false)
        assert status == 200, text
        return {f.name: {s.name: s.value for s in f.samples}
                for f in text_string_to_metric_families(text)}

    wait_until(lambda: "serf_agent_memberlist_probeNode" in families(), 15,
               what="probe timers in /metrics")
    fams = families()
    assert fams["serf_agent_serf_member_join"]["serf_agent_serf_member_join_total"] == 2
    assert fams["serf_agent_memberlist_probeNode"]["serf_agent_memberlist_probeNode_count"] >= 1
    assert fams["serf_agent_memberlist_udp_sent"]["serf_agent_memberlist_udp_sent_total"] > 0
    assert fams["process_resident_memory_bytes"]["process_resident_memory_bytes"] > 1e6
    assert "serf_agent_runtime_sys_bytes" in fams  # gauges without the host name part

    b2 = cluster.start("pyserf", "c", f"-http-addr={cluster.prefix}.9:8500",
                       _config(cluster, "c", http_token="tok", http_metrics_auth=True),
                       ip=f"{cluster.prefix}.9")
    assert _metrics(b2)[0] == 401
    status, text = _metrics(b2, "tok")
    assert status == 200 and "process_cpu_seconds_total" in text


# go-metrics' Go runtime gauges and GC pause samples with no Python counterpart pyserf sends
# (it sends num_goroutines as asyncio tasks, sys_bytes as RSS, heap_objects as allocated
# blocks and total_gc_runs as gc collections).
GO_RUNTIME_ONLY = {"runtime.alloc_bytes", "runtime.free_count", "runtime.malloc_count",
                   "runtime.total_gc_pause_ns", "runtime.gc_pause_ns"}


def test_statsd_names_cover_what_real_serf_sends_in_the_same_role(cluster: Cluster,
                                                                  need_serf: None) -> None:
    """A serf and a pyserf agent each join a third member and are probed, gossiped to and
    pushed-pulled alike; every name serf sends (but the Go runtime's) comes from pyserf too,
    with the same kind."""
    hub = cluster.start("pyserf", "hub")
    ip_serf, ip_py = cluster._ip(), cluster._ip()
    serf_stats, py_stats = StatsListener(ip_serf), StatsListener(ip_py)
    try:
        cluster.start("serf", "s", _config(cluster, "s", statsd_addr=serf_stats.addr),
                      f"-join={hub.bind}", ip=ip_serf)
        cluster.start("pyserf", "p", _config(cluster, "p", statsd_addr=py_stats.addr),
                      f"-join={hub.bind}", ip=ip_py)
        wait_until(lambda: {"serf-agent.serf.coordinate.adjustment-ms",
                            "serf-agent.memberlist.gossip"} <= serf_stats.names()
                   and {"serf-agent.serf.coordinate.adjustment-ms",
                        "serf-agent.memberlist.gossip"} <= py_stats.names(), 25,
                   what="both agents to send probe and gossip metrics")
        # A push-pull into each (whether a peer's periodic or catch-up sync picks them in
        # time is chance): both accept a stream, as both dialled one when they joined.
        for agent_ip in (ip_serf, ip_py):
            assert run_cli("pyserf", "join", agent_ip, rpc=hub.rpc).returncode == 0
        accept = "serf-agent.memberlist.tcp.accept"
        wait_until(lambda: accept in serf_stats.names() and accept in py_stats.names(), 10,
                   what="both agents to count the stream they accepted")
        time.sleep(3)
        host = socket.gethostname()

        def kinds(listener: StatsListener) -> dict[str, str]:
            with listener.lock:
                return {name.replace(f"serf-agent.{host}.", "serf-agent."): kind
                        for name, kind in listener.values}

        serf_kinds, py_kinds = kinds(serf_stats), kinds(py_stats)
        missing = {n for n in serf_kinds if n not in py_kinds
                   and n.removeprefix("serf-agent.") not in GO_RUNTIME_ONLY}
        assert not missing, f"serf sends, pyserf does not: {sorted(missing)}"
        different = {n: (serf_kinds[n], py_kinds[n]) for n in serf_kinds
                     if n in py_kinds and serf_kinds[n] != py_kinds[n]}
        assert not different, f"kinds differ (serf, pyserf): {different}"
    finally:
        serf_stats.close()
        py_stats.close()
