"""A hostile RPC client against a real pyserf agent.

One agent serves the whole module. After every attack it must answer ``members`` and
``event`` over RPC within ANSWER_WITHIN seconds and stay under RSS_BOUND_MIB of resident
memory (an idle agent sits at ~40-50 MiB; the bound leaves room for the legitimate buffers
the attacks fill: 64 clients, 512-line monitor feeds, the 1 MiB request cap). Figures per
attack are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import msgpack
import pytest

from pyserf.agent import rpc_limits
from pyserf.client.rpc_client import RPCClient
from tests.e2e.harness import Agent, Cluster, wait_until
from tests.e2e.test_rpc_protocol import Raw as RawBase

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

RSS_BOUND_MIB = 120.0
ANSWER_WITHIN = 2.0
FIGURES: list[tuple[str, float, float, float]] = []


def rss_mib(agent: Agent) -> float:
    with open(f"/proc/{agent.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def probe(agent: Agent) -> float:
    """Seconds for a fresh client to get `members` and send an `event`."""
    started = time.monotonic()
    with RPCClient(agent.rpc, timeout=ANSWER_WITHIN, reply_timeout=ANSWER_WITHIN) as client:
        assert [m.name for m in client.members()] == ["victim"]
        client.user_event("probe", b"ok", coalesce=False)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def victim(tmp_path_factory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "limits.json"
    # Large user events make large log lines, so the monitor attack floods quickly.
    config.write_text(json.dumps({"user_event_size_limit": 9216}))
    cluster = Cluster(tmp)
    try:
        yield cluster.start("pyserf", "victim", f"-config-file={config}", "-log-level=debug")
    finally:
        cluster.close()
        for attack, before, after, latency in FIGURES:
            print(f"{attack:28s} RSS {before:6.1f} -> {after:6.1f} MiB, "
                  f"members+event {latency * 1000:6.1f} ms")


@pytest.fixture
def healthy_after(victim: Agent, request) -> Iterator[Agent]:
    """Runs one attack, then checks that the agent still answers and stays small."""
    before = rss_mib(victim)
    yield victim
    assert victim.alive(), victim.log()[-3000:]
    latency = probe(victim)
    after = rss_mib(victim)
    FIGURES.append((request.node.name.removeprefix("test_"), before, after, latency))
    assert latency < ANSWER_WITHIN
    assert after < RSS_BOUND_MIB, f"RSS {after:.1f} MiB after {request.node.name}"


class Raw(RawBase):
    """A raw msgpack connection to the victim (send/recv from test_rpc_protocol)."""

    def __init__(self, agent: Agent, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:  # before connecting, so the advertised window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(ANSWER_WITHIN)
        self.sock.connect((agent.ip, agent.rpc_port))
        self.unpacker = msgpack.Unpacker(raw=False)

    def handshake(self) -> Raw:
        self.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        assert self.recv() == {"Error": "", "Seq": 0}
        return self

    def closed_by_agent(self, within: float = ANSWER_WITHIN) -> bool:
        """True once the agent has closed the connection (nothing else may arrive)."""
        self.sock.settimeout(within)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.close()


def test_200_connections_that_never_handshake(healthy_after):
    agent = healthy_after
    idle = []
    for _ in range(200):
        sock = socket.create_connection((agent.ip, agent.rpc_port), timeout=ANSWER_WITHIN)
        idle.append(sock)
    opened = time.monotonic()
    # While they are open a real client still gets in at once.
    assert probe(agent) < ANSWER_WITHIN
    # Past the handshake timeout every one of them has been closed by the agent.
    time.sleep(max(0.0, opened + rpc_limits.HANDSHAKE_TIMEOUT + 1.0 - time.monotonic()))
    still_open = 0
    for sock in idle:
        sock.setblocking(False)
        try:
            if sock.recv(1) != b"":
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except ConnectionError:
            pass
        sock.close()
    assert still_open == 0


def test_16_mib_before_handshake(healthy_after):
    raw = Raw(healthy_after)
    started = time.monotonic()
    hung_up = False
    try:
        raw.sock.sendall(b"\xc6\x01\x00\x00\x00" + os.urandom(16 << 20))  # bin32 of 16 MiB
    except (ConnectionError, TimeoutError):
        hung_up = True
    # The agent hung up after a few KiB instead of buffering the whole frame.
    assert hung_up
    assert raw.closed_by_agent()
    assert time.monotonic() - started < 2 * ANSWER_WITHIN


def test_monitor_that_never_reads_while_the_agent_logs_a_lot(healthy_after):
    agent = healthy_after
    stuck = Raw(agent, rcvbuf=4096).handshake()
    stuck.send({"Command": "monitor", "Seq": 1}, {"LogLevel": "debug"})
    flooder = Raw(agent).handshake()
    name = "x" * 8000  # each "Received event" log line is ~8 KB
    worst = 0.0
    replies = 0
    for batch in range(12):
        flooder.send(*[obj for i in range(100) for obj in (
            {"Command": "event", "Seq": batch * 100 + i + 1},
            {"Name": f"{name}{batch}-{i}", "Payload": b"", "Coalesce": False})])
        for _ in range(100):
            assert flooder.recv()["Error"] == ""
            replies += 1
        worst = max(worst, probe(agent))  # during the flood
    assert replies == 1200
    assert worst < ANSWER_WITHIN
    wait_until(lambda: "Dropping logs to ipc.client: " in agent.log(), 10,
               what="the monitor feed to fill and drop")
    stuck.sock.close()
    flooder.sock.close()
    print(f"\nmonitor flood: 1200 events of 8 KB, worst members+event during it "
          f"{worst * 1000:.0f} ms")


def _garbage() -> dict[str, bytes]:
    header = msgpack.packb({"Command": "event", "Seq": 1})
    past_cap = rpc_limits.MAX_REQUEST_BUFFER + 1024  # declared huge, sent past the cap
    return {
        "not msgpack": b"\xc1" * 64,
        "bin32 of 4 GiB": header + b"\xc6\xff\xff\xff\xff" + b"z" * past_cap,
        "array32 of 2^32": header + b"\xdd\xff\xff\xff\xff" + b"\x00" * past_cap,
        "map32 of 2^32": header + b"\xdf\xff\xff\xff\xff" + b"\xa1a\x00" * (past_cap // 3),
        "nested arrays": header + b"\x91" * 200_000,
        "many empty maps": header + msgpack.packb([{}] * (rpc_limits.MAX_REQUEST_CONTAINERS + 1)),
        "over 1 MiB": header + msgpack.packb({"Name": "n", "Payload": b"p" * (1 << 20)}),
        "ext and timestamp": header + b"\xd7\xff" + b"\x00" * 8 + b"\xc7\x05\x07abcde",
        "bad utf-8": header + msgpack.packb({"Name": b"\xff\xfe"}, use_bin_type=False),
        "header is a list": msgpack.packb(["event", 1]),
        "header is an int": msgpack.packb(7),
        "truncated header": b"\x82\xa7Command",
    }


def test_garbage_frames(healthy_after):
    agent = healthy_after
    for label, frames in _garbage().items():
        for handshake_first in (False, True):
            raw = Raw(agent)
            if handshake_first:
                raw.handshake()
            try:
                raw.sock.sendall(frames)
            except (ConnectionError, TimeoutError):
                pass
            if label == "truncated header":
                continue  # waits for the rest; the frame/handshake timeouts close it
            if label == "bad utf-8" and handshake_first:
                # Decodable: the bad bytes become U+FFFD and the event is sent.
                assert raw.recv() == {"Error": "", "Seq": 1}
                raw.sock.close()
                continue
            if not handshake_first and label not in ("not msgpack", "header is a list",
                                                     "header is an int"):
                # Serf answers a command before the handshake, then hangs up.
                assert raw.recv() == {"Error": "Handshake required", "Seq": 1}, label
            assert raw.closed_by_agent(), label
        assert agent.alive(), label


_OUT_OF_RANGE = {rpc_limits.UINT8: 256, rpc_limits.INT32: 2**31, rpc_limits.INT64: 2**63,
                 rpc_limits.UINT64: -1}


def _wrong_values(decoder) -> list[object]:
    """Values that no Go struct field of this kind accepts."""
    if decoder is rpc_limits.TAGS:
        return [{"k": 7}, ["k", "v"], "k=v"]
    if decoder is rpc_limits.STRINGS:
        return [[1, 2], "a", {"a": "b"}]
    wrong: list[object] = [{"not": ["a", "scalar"]}, 1.5]
    if decoder is rpc_limits.BOOL:
        return [*wrong, 7, "true"]
    if decoder in _OUT_OF_RANGE:
        return [*wrong, _OUT_OF_RANGE[decoder], True, "7"]
    return wrong  # STRING and BYTES: Go takes str and bin for both


def test_wrong_typed_bodies_for_every_command(healthy_after):
    agent = healthy_after
    sent = 0
    for command, schema in rpc_limits.BODIES.items():
        for field, decoder in schema.items():
            for value in _wrong_values(decoder):
                raw = Raw(agent).handshake()
                raw.send({"Command": command, "Seq": 9}, {field: value})
                # Like serf: no reply, the connection is dropped.
                assert raw.closed_by_agent(), (command, field, value)
                sent += 1
    for header in ({"Command": "members", "Seq": "9"}, {"Command": "members", "Seq": -9},
                   {"Command": 5, "Seq": 9}, {"Command": "members", "Seq": 1.5}):
        raw = Raw(agent).handshake()
        raw.send(header)
        assert raw.closed_by_agent(), header
    assert sent > 40


def test_catastrophic_member_filter_regexes(healthy_after):
    agent = healthy_after
    # Refused as Go's regexp refuses them: serf drops the client.
    for bad in ("(?:){4294967294}", "(", "a{1001}", "x**"):
        raw = Raw(agent).handshake()
        raw.send({"Command": "members-filtered", "Seq": 1}, {"Name": bad})
        assert raw.closed_by_agent(), bad
    # Valid but exponential for a backtracking engine: linear in RE2.
    worst = 0.0
    for expr in ("(a*)*b", "(x+x+)+y", "(a|a?)+b", "(.*){1000}", "((a{10}){10}){10}"):
        raw = Raw(agent).handshake()
        started = time.monotonic()
        raw.send({"Command": "members-filtered", "Seq": 2},
                 {"Name": expr, "Status": expr, "Tags": {"role": expr, "dc": expr}})
        assert raw.recv() == {"Error": "", "Seq": 2}
        assert {m["Name"] for m in raw.recv()["Members"]} <= {"victim"}
        worst = max(worst, time.monotonic() - started)
        raw.sock.close()
    assert worst < ANSWER_WITHIN


# Runs in its own process (so its threads do not compete with the probes for a GIL) for at
# most argv[3] seconds: four threads connect, send a partial frame and hang up; two keep up to
# 300 idle connections each, replacing the oldest. Each thread makes at most argv[4]
# connections a second (0: as fast as it can).
_FLOOD = """
import socket, sys, threading, time
ip, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
pause = 1 / float(sys.argv[4]) if float(sys.argv[4]) else 0
def garbage():
    while time.monotonic() < deadline:
        time.sleep(pause)
        try:
            with socket.create_connection((ip, port), timeout=1) as s:
                s.sendall(b"\\x91" * 100)
        except OSError:
            pass
def idle():
    held = []
    while time.monotonic() < deadline:
        time.sleep(pause)
        try:
            held.append(socket.create_connection((ip, port), timeout=1))
        except OSError:
            pass
        if len(held) > 300:
            held.pop(0).close()
threads = [threading.Thread(target=f) for f in (garbage,) * 4 + (idle,) * 2]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


# Connections a second per flood thread: six threads make ~1500/s in all, below what one
# agent process can accept (~2500/s here). Unpaced (0), the flood saturates the agent: probes
# then take up to ~1.9 s and about one connect in 60 times out (the kernel drops the SYN from
# the full backlog), so that setting is for measuring, not for CI.
FLOOD_RATE_PER_THREAD = 250


def test_many_clients_in_parallel_while_attacked(healthy_after):
    """Garbage and idle connections from another process while real clients keep working."""
    agent = healthy_after
    flood = subprocess.Popen([sys.executable, "-c", _FLOOD, agent.ip, str(agent.rpc_port), "12",
                              str(FLOOD_RATE_PER_THREAD)])
    worst = 0.0
    try:
        time.sleep(0.5)
        for _ in range(10):
            worst = max(worst, probe(agent))
            time.sleep(0.2)
        assert flood.poll() is None, "the flood ended early"
    finally:
        flood.kill()
        flood.wait(10)
    print(f"\nparallel flood: worst members+event during it {worst * 1000:.0f} ms")
    assert worst < ANSWER_WITHIN
    assert "too many clients waiting for a handshake" in agent.log()  # the cap was reached
