"""Telemetry formats and bounds: go-metrics' statsd lines and InmemSignal dump, the statsd
sink's packets, Prometheus exposition, the name cap, and /metrics auth on the listener."""

from __future__ import annotations

import asyncio
import re
import socket
import tracemalloc

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyserf.http.server import HTTPListener
from pyserf.memberlist.metrics import NULL_METRICS
from pyserf.telemetry import recorder as rec_mod
from pyserf.telemetry.prometheus import exposition, registry
from pyserf.telemetry.recorder import MAX_INTERVALS, MAX_NAMES, Recorder
from pyserf.telemetry.sinks import (
    QUEUE_LINES,
    STATSD_MAX_PACKET,
    SinkAddressError,
    StatsdSink,
    StatsiteSink,
    resolve,
)


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def push(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        pass


def test_statsd_lines_are_go_metrics_format_with_service_prefix_and_gauge_host() -> None:
    sink = Lines()
    rec = Recorder([sink], hostname="vm")
    rec.incr("serf.member.join")
    rec.incr("memberlist.udp.sent", 148)
    rec.gauge("memberlist.health.score", 2)
    rec.sample("memberlist.gossip", 0.25)
    assert sink.lines == [
        "serf-agent.serf.member.join:1.000000|c\n",
        "serf-agent.memberlist.udp.sent:148.000000|c\n",
        "serf-agent.vm.memberlist.health.score:2.000000|g\n",  # gauges get the host name
        "serf-agent.memberlist.gossip:0.250000|ms\n",
    ]


def test_names_from_the_network_cannot_forge_statsd_lines() -> None:
    sink = Lines()
    rec = Recorder([sink], hostname="h")
    rec.incr("serf.events.deploy:1|c\nevil x@#")
    (line,) = sink.lines
    assert line == "serf-agent.serf.events.deploy_1_c_evil_x__:1.000000|c\n"


def test_the_noop_metrics_accept_every_call() -> None:
    NULL_METRICS.incr("x")
    NULL_METRICS.gauge("x", 1)
    NULL_METRICS.sample("x", 1)
    NULL_METRICS.measure_since("x", NULL_METRICS.start())


def test_a_flood_of_distinct_names_is_capped_and_memory_stays_bounded() -> None:
    clock = [1000.0]
    rec = Recorder(hostname="", clock=lambda: clock[0])
    tracemalloc.start()
    try:
        for i in range(MAX_NAMES):
            rec.incr(f"serf.events.e{i}")
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):  # a peer firing events under ever new names, for minutes
            rec.incr(f"serf.events.flood{i}")
            rec.sample(f"serf.queries.flood{i}", 1.0)
            clock[0] += 0.01
            if i % 100 == 0:  # the agent ticks the recorder once a second
                rec.tick()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert len(rec.names) == MAX_NAMES
    assert rec.dropped == 100_000
    assert len(rec.finished) < MAX_INTERVALS  # the current one is not among them
    assert grown < 2 * 1024 * 1024, grown
    rec.incr("serf.events.e0")  # known names keep counting
    assert rec.counter_totals["serf.events.e0"] == 2


def test_an_overlong_name_is_dropped() -> None:
    rec = Recorder()
    rec.incr("serf.events." + "x" * rec_mod.MAX_NAME_LENGTH)
    assert rec.dropped == 1 and not rec.names


def test_a_call_reads_no_clock_and_the_tick_closes_the_interval() -> None:
    """The hot path takes the recorder's own time; only tick() reads the clock, and a closed
    interval's counts still add up in the totals Prometheus reads."""
    reads = [0]
    clock = [1_796_000_000.0]

    def read_clock() -> float:
        reads[0] += 1
        return clock[0]

    rec = Recorder(clock=read_clock)
    reads[0] = 0
    for i in range(1000):
        rec.incr("memberlist.udp.sent", 100 + i % 7)
        rec.sample("memberlist.probeNode", 0.5)
        rec.gauge("memberlist.health.score", i % 3)
    assert reads[0] == 0
    clock[0] += 10
    rec.tick()
    assert reads[0] == 1
    rec.incr("memberlist.udp.sent", 30)
    (closed,) = rec.finished
    agg = closed.counters["serf-agent.memberlist.udp.sent"]
    assert (agg.count, agg.low, agg.high, agg.updated) == (1000, 100, 106, 1_796_000_000.0)
    assert closed.gauges == {"serf-agent.memberlist.health.score": 0}  # the last value set
    assert rec.counter_totals["memberlist.udp.sent"] == agg.total + 30
    probes = rec.sample_totals["memberlist.probeNode"]
    assert (probes.count, probes.total) == (1000, 500.0)
    clock[0] += 50  # a minute after the first interval began: it is no longer retained
    rec.tick()
    assert [i.start for i in rec.finished] == [1_796_000_010.0]
    assert rec.counter_totals["memberlist.udp.sent"] == agg.total + 30


@pytest.mark.parametrize("with_sink", [False, True])
def test_runtime_gauges_every_tick_only_for_a_network_sink(monkeypatch: pytest.MonkeyPatch,
                                                           with_sink: bool) -> None:
    """Without a sink the runtime gauges are read only where they show: into the interval
    that is ending (an idle agent's tick just moves the clock); a sink gets them each second."""
    import pyserf.telemetry as telemetry_mod

    now = [1_796_000_000.5]
    monkeypatch.setattr(telemetry_mod.time, "time", lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        sinks = [Lines()] if with_sink else []
        rec = Recorder(sinks, clock=lambda: now[0])
        telemetry = telemetry_mod.Telemetry(rec, sinks, loop)  # type: ignore[arg-type]
        telemetry._tick()
        assert ("runtime.sys_bytes" in rec.gauge_values) is with_sink
        now[0] += 10  # the next tick is past the interval's end
        telemetry._tick()
        (closed,) = rec.finished
        assert closed.gauges["serf-agent.runtime.sys_bytes"] > 1e6
        telemetry.close()
    finally:
        loop.close()


def test_a_key_already_used_by_another_kind_is_dropped() -> None:
    rec = Recorder()
    rec.incr("serf.events.x")
    rec.sample("serf.events.x", 1.0)
    rec.gauge("serf.events.x", 1.0)
    assert rec.dropped == 2 and rec.counter_totals == {"serf.events.x": 1.0}
    assert not rec.sample_totals and not rec.gauge_values


def test_sigusr1_dump_matches_inmem_signal_and_skips_the_current_interval() -> None:
    clock = [1_796_000_000.0]  # on a 10 s boundary
    rec = Recorder(clock=lambda: clock[0])
    rec.incr("serf.member.join")
    rec.incr("serf.member.join")
    rec.gauge("memberlist.health.score", 1)
    rec.sample("memberlist.probeNode", 1.0)
    rec.sample("memberlist.probeNode", 3.0)
    assert rec.dump() == ""  # the first interval is still being aggregated
    clock[0] += 10
    rec.tick()  # the agent's once-a-second tick closes the interval
    rec.incr("serf.member.update")
    lines = rec.dump().splitlines()
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+\]"
    updated = r"LastUpdated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [+-]\d{4} \S+ m=\+\d+\.\d{9}"
    assert len(lines) == 3
    assert re.fullmatch(stamp + r"\[G\] 'serf-agent.memberlist.health.score': 1.000", lines[0])
    assert re.fullmatch(stamp + r"\[C\] 'serf-agent.serf.member.join': Count: 2 Sum: 2.000 "
                        + updated, lines[1])
    assert re.fullmatch(stamp + r"\[S\] 'serf-agent.memberlist.probeNode': Count: 2 "
                        r"Min: 1.000 Mean: 2.000 Max: 3.000 Stddev: 1.414 Sum: 4.000 "
                        + updated, lines[2])


def test_statsd_sink_batches_lines_into_bounded_datagrams_and_bounds_its_queue() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    port = listener.getsockname()[1]

    async def main() -> StatsdSink:
        sink = StatsdSink(asyncio.get_running_loop(), f"127.0.0.1:{port}")
        rec = Recorder([sink], hostname="h")
        for i in range(100):
            rec.sample("memberlist.probeNode", float(i))
        await asyncio.sleep(0.3)  # the delayed flush
        for _ in range(QUEUE_LINES + 10):
            sink.push("x:1.000000|c\n")
        sink.close()
        return sink

    sink = asyncio.run(main())
    sizes, lines = [], []
    try:
        while True:
            data = listener.recv(65535)
            sizes.append(len(data))
            lines += data.decode().splitlines()
    except TimeoutError:
        pass
    finally:
        listener.close()
    assert max(sizes) <= STATSD_MAX_PACKET
    probe = [x for x in lines if x.startswith("serf-agent.memberlist.probeNode:")]
    assert probe == [f"serf-agent.memberlist.probeNode:{float(i):f}|ms" for i in range(100)]
    assert len(sizes) > 1 and sum(sizes) > STATSD_MAX_PACKET  # several full packets
    assert sink.dropped == 10 and lines.count("x:1.000000|c") == QUEUE_LINES


@pytest.mark.parametrize("addr,why", [("no-port", "missing port"), ("h:0", "invalid port"),
                                      ("127.0.0.1:99999", "invalid port"),
                                      ("no.such.host.invalid:8125", "cannot resolve")])
def test_unusable_sink_addresses_say_why(addr: str, why: str) -> None:
    with pytest.raises(SinkAddressError, match=why):
        resolve(addr, socket.SOCK_DGRAM)


def test_prometheus_exposition_parses_with_mapped_names() -> None:
    rec = Recorder([Lines()], hostname="vm")
    rec.incr("serf.member.join", 2)
    rec.incr("serf.coordinate.rejected")
    rec.gauge("memberlist.health.score", 3)
    rec.sample("serf.coordinate.adjustment-ms", 0.5)
    rec.sample("serf.coordinate.adjustment-ms", 1.5)
    body, content_type = exposition(registry(lambda: rec), "")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: (f.type, {s.name: s.value for s in f.samples})
            for f in text_string_to_metric_families(body.decode())}
    assert fams["serf_agent_serf_member_join"] == (
        "counter", {"serf_agent_serf_member_join_total": 2.0})
    assert fams["serf_agent_memberlist_health_score"] == (  # no host name for Prometheus
        "gauge", {"serf_agent_memberlist_health_score": 3.0})
    assert fams["serf_agent_serf_coordinate_adjustment_ms"] == (
        "summary", {"serf_agent_serf_coordinate_adjustment_ms_count": 2.0,
                    "serf_agent_serf_coordinate_adjustment_ms_sum": 2.0})
    assert fams["process_resident_memory_bytes"][1]["process_resident_memory_bytes"] > 0


class _Telemetry:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.recorder.incr("serf.member.join")

    def refresh(self) -> Recorder:
        return self.recorder


class _Agent:
    telemetry = _Telemetry()

    def subscribe(self, listener: object) -> object:
        return lambda: None


async def _get(port: int, path: str, token: str | None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


@pytest.mark.parametrize("metrics_auth,without,with_token", [(False, 200, 200),
                                                             (True, 401, 200)])
def test_metrics_is_open_unless_http_metrics_auth(metrics_auth: bool, without: int,
                                                  with_token: int) -> None:
    async def main() -> tuple[int, int, int]:
        listener = HTTPListener(_Agent(), token="tok",  # type: ignore[arg-type]
                                metrics_auth=metrics_auth)
        await listener.start("127.0.0.1", 0)
        try:
            port = listener.address[1]
            return (await _get(port, "/metrics", None), await _get(port, "/metrics", "tok"),
                    await _get(port, "/v1/agent/self", None))
        finally:
            await listener.close()

    assert asyncio.run(main()) == (without, with_token, 401)


async def _scrape(port: int, accept: str) -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n"
                 "Connection: close\r\n\r\n".encode())
    head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["Content-Type"], body.decode()


class _EmbeddedAgent:
    """An agent built without the CLI: no telemetry object."""

    def subscribe(self, listener: object) -> object:
        return lambda: None


def test_metrics_negotiates_openmetrics_and_serves_an_agent_without_telemetry() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    async def main() -> list[tuple[int, str, str]]:
        results = []
        for agent, accept in ((_Agent(), "application/openmetrics-text; version=1.0.0"),
                              (_EmbeddedAgent(), "*/*")):
            listener = HTTPListener(agent)  # type: ignore[arg-type]
            await listener.start("127.0.0.1", 0)
            try:
                results.append(await _scrape(listener.address[1], accept))
            finally:
                await listener.close()
        return results

    (om_status, om_type, om_body), (status, content_type, body) = asyncio.run(main())
    assert om_status == 200 and om_type.startswith("application/openmetrics-text; version=1.0.0")
    fams = {f.name: f for f in om_parse(om_body)}  # the OpenMetrics parser wants '# EOF'
    assert fams["serf_agent_serf_member_join"].samples[0].value == 1
    assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in text_string_to_metric_families(body)}
    assert "process_resident_memory_bytes" in names
    assert not any(name.startswith("serf_agent_serf") for name in names)


def test_the_machines_count_serfs_events_in_a_simulated_cluster() -> None:
    """The call sites in memberlist and serf, deterministic: joins, gossip, probes, a user
    event, a query with acks, a crash, and the 30 s queue samples, as node a counts them."""
    from pyserf.sim.network import SimNetwork

    net = SimNetwork(seed=7)
    a = net.add_node("a", "10.0.0.1")
    rec = Recorder()
    a.serf.use_metrics(rec)
    b = net.add_node("b", "10.0.0.2")
    c = net.add_node("c", "10.0.0.3")
    net.join(b, a)
    net.join(c, a)
    net.run_until(3.0)
    counters, samples = rec.counter_totals, rec.sample_totals
    assert counters["serf.member.join"] == 2  # b and c (a joined itself before use_metrics)
    assert counters["memberlist.msg.alive"] >= 2
    assert counters["memberlist.udp.sent"] > 30 * samples["memberlist.probeNode"].count > 0
    assert counters["memberlist.udp.received"] > 0
    assert samples["memberlist.gossip"].count > 0
    assert samples["serf.msgs.sent"].count > 0 and samples["serf.msgs.received"].count > 0
    assert samples["serf.coordinate.adjustment-ms"].count > 0

    b.serf.user_event("deploy", b"v1", False, net.now)
    net._pump(b)
    a.serf.query("uptime", b"", net.now, request_ack=True)
    net._pump(a)
    net.run_until(net.now + 3.0)
    counters = rec.counter_totals  # a snapshot: read again
    assert counters["serf.events"] == 1 and counters["serf.events.deploy"] == 1
    assert counters["serf.queries"] >= 1 and counters["serf.queries.uptime"] >= 1
    assert counters["serf.query_acks"] == 3  # b, c and a itself

    net.crash(c)
    net.run_until(net.now + 30.0)
    counters, samples = rec.counter_totals, rec.sample_totals
    assert counters["memberlist.msg.suspect"] >= 1 and counters["memberlist.msg.dead"] >= 1
    assert counters["serf.member.failed"] == 1
    assert samples["memberlist.pushPullNode"].count >= 1  # a's own periodic push-pull
    assert samples["serf.queue.Intent"].count >= 1
    assert samples["memberlist.queue.broadcasts"].count >= 1
    assert b.serf.metrics is NULL_METRICS  # the others count nothing


def test_a_statsite_that_stops_reading_is_dropped_and_reconnected_without_blocking() -> None:
    async def main() -> tuple[int, float]:
        accepted: list[asyncio.StreamWriter] = []

        async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(never_read, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sink = StatsiteSink(asyncio.get_running_loop(), f"127.0.0.1:{port}")
        line = "serf-agent.memberlist.gossip:" + "1" * 200 + ".000000|ms\n"
        worst = 0.0
        try:
            for _ in range(400):  # up to ~350 MB offered; the kernel buffers a few MB
                if len(accepted) >= 2:
                    break
                for _ in range(QUEUE_LINES):
                    sink.push(line)
                started = asyncio.get_running_loop().time()
                sink.flush()
                worst = max(worst, asyncio.get_running_loop().time() - started)
                await asyncio.sleep(0.01)
        finally:
            sink.close()
            server.close()
            for writer in accepted:
                writer.close()
        return len(accepted), worst

    connections, worst_flush = asyncio.run(main())
    assert connections >= 2, "the sink reconnects after giving up on a stuck statsite"
    assert worst_flush < 0.5  # a flush never waits for the peer


def test_without_a_sink_the_recorder_rides_the_agents_wake_ups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No timer of its own without statsd/statsite: an idle agent wakes only for its protocol
    timers (tests/e2e/test_idle.py bounds that). on_wake moves the clock and closes intervals."""
    from types import SimpleNamespace

    import pyserf.telemetry as telemetry_mod

    now = [1_796_000_000.5]
    monkeypatch.setattr(telemetry_mod.time, "time", lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        telemetry = telemetry_mod.start(SimpleNamespace(statsd_addr="", statsite_addr=""), loop)
        assert telemetry._timer is None
        assert telemetry.recorder.now == now[0]
        telemetry.recorder.incr("serf.member.join")
        now[0] += 10
        telemetry.on_wake()
        assert telemetry.recorder.now == now[0]
        key = "serf-agent.serf.member.join"
        assert [i.counters[key].count for i in telemetry.recorder.finished
                if key in i.counters] == [1]
        telemetry.close()
    finally:
        loop.close()
