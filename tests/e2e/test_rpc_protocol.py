"""Serf's IPC protocol details, spoken to a pyserf agent over a raw socket."""

from __future__ import annotations

import socket
import time

import msgpack
import pytest

from pyserf.client.rpc_client import RPCClient, RPCError
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e


class Raw:
    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.unpacker = msgpack.Unpacker(raw=False)

    def send(self, *objs: object) -> None:
        self.sock.sendall(b"".join(msgpack.packb(o, use_bin_type=True) for o in objs))

    def recv(self) -> object:
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError from None
                self.unpacker.feed(data)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False


@pytest.fixture
def agent(cluster):
    return cluster.start("pyserf", "p1", "-tag", "role=web")


def test_handshake_rules(agent):
    raw = Raw(agent.rpc)
    raw.send({"Command": "members", "Seq": 1})
    assert raw.recv() == {"Error": "Handshake required", "Seq": 1}
    assert raw.closed()

    raw = Raw(agent.rpc)
    raw.send({"Command": "handshake", "Seq": 1}, {"Version": 2})
    assert raw.recv() == {"Error": "Unsupported IPC version", "Seq": 1}
    raw.send({"Command": "handshake", "Seq": 2}, {"Version": 1})
    assert raw.recv() == {"Error": "", "Seq": 2}
    raw.send({"Command": "handshake", "Seq": 3}, {"Version": 1})
    assert raw.recv() == {"Error": "Handshake already performed", "Seq": 3}
    raw.send({"Command": "members", "Seq": 4})
    assert raw.recv() == {"Error": "", "Seq": 4}
    body = raw.recv()
    (member,) = body["Members"]
    assert member["Addr"] == socket.inet_aton(agent.ip)  # bin, 4 bytes
    assert member["Tags"] == {"role": "web"} and member["Status"] == "alive"
    raw.send({"Command": "nonsense", "Seq": 5})
    assert raw.recv() == {"Error": "Unsupported command", "Seq": 5}
    assert raw.closed()


def test_bad_member_filter_regex_closes_the_connection(agent):
    raw = Raw(agent.rpc)
    raw.send({"Command": "handshake", "Seq": 1}, {"Version": 1})
    raw.recv()
    raw.send({"Command": "members-filtered", "Seq": 2}, {"Name": "(", "Status": "", "Tags": {}})
    assert raw.closed()
    # The agent itself is unharmed.
    with RPCClient(agent.rpc) as client:
        assert [m.name for m in client.members_filtered(name="p.")] == ["p1"]
        assert client.members_filtered(tags={"role": "we"}) == []  # anchored


def test_garbage_bytes_do_not_hurt_the_agent(agent):
    raw = Raw(agent.rpc)
    raw.sock.sendall(b"\xc1\xc1\xc1 not msgpack at all")
    assert raw.closed()
    with RPCClient(agent.rpc) as client:
        assert [m.name for m in client.members()] == ["p1"]


def test_monitor_stream_and_stop(agent):
    with RPCClient(agent.rpc) as client:
        with pytest.raises(RPCError, match="Unknown log level: BOGUS"):
            client.monitor("BOGUS")
        monitor = client.monitor("DEBUG")
        line = monitor.next(5)
        assert "[INFO] agent: Serf agent starting" in str(line)
        with pytest.raises(RPCError, match="Invalid event filter"):
            client.stream("member-joined")
        stream = client.stream("user:deploy")
        client.user_event("other", b"x", False)
        client.user_event("deploy", b"payload", False)
        record = stream.next(5)
        assert record["Event"] == "user" and record["Name"] == "deploy"
        assert record["Payload"] == b"payload"
        stream.stop()
        monitor.stop()


def _respond_story(agent, timeout: float) -> tuple[list[str], list[object], float]:
    """Stream a query to ``agent`` and answer it over RPC: too big, fine, again, then until the
    agent forgets the ID. (errors in order, the querier's records, seconds from the query to
    the first 'No pending queries matching ID')."""
    sub, querier = Raw(agent.rpc), Raw(agent.rpc)
    for raw in (sub, querier):
        raw.send({"Command": "handshake", "Seq": 0}, {"Version": 1})
        assert raw.recv() == {"Error": "", "Seq": 0}
    sub.send({"Command": "stream", "Seq": 1}, {"Type": "query"})
    assert sub.recv() == {"Error": "", "Seq": 1}
    started = time.monotonic()
    querier.send({"Command": "query", "Seq": 1}, {"Name": "ask", "Payload": b"p",
                                                  "Timeout": int(timeout * 1e9)})
    assert querier.recv() == {"Error": "", "Seq": 1}
    assert sub.recv() == {"Error": "", "Seq": 1}
    qid = sub.recv()["ID"]
    seq = iter(range(2, 1000))

    def respond(payload: bytes) -> str:
        n = next(seq)
        sub.send({"Command": "respond", "Seq": n}, {"ID": qid, "Payload": payload})
        header = sub.recv()
        assert header["Seq"] == n
        return header["Error"]

    errors = [respond(b"x" * 1100), respond(b"ok"), respond(b"again")]
    records = []
    for _ in range(2):  # the answer, then done
        assert querier.recv() == {"Error": "", "Seq": 1}
        records.append(querier.recv())
    # Polled (0.05 s apart) until the ID is forgotten; bounded by the deadline plus slack.
    forgotten: list[float] = []

    def gone() -> bool:
        if respond(b"late") == "No pending queries matching ID":
            forgotten.append(time.monotonic() - started)
        return bool(forgotten)

    wait_until(gone, timeout + 3.0, interval=0.05, what="the query ID to be forgotten")
    return errors, records, forgotten[0]


# Serial: it bounds when the ID is forgotten, and under the parallel tier's load one agent
# once took over 5 s to stream the query record at all.
@pytest.mark.serial
def test_respond_errors_and_the_deadline_match_serf(cluster, need_serf):
    # serf's Query.Respond wraps every error as "failed to respond to key query: ..."; the IPC
    # client keeps the ID until the query's deadline (RegisterQuery's timer), then forgets it.
    timeout = 1.0
    stories = {kind: _respond_story(cluster.start(kind, f"{kind}1"), timeout)
               for kind in ("serf", "pyserf")}
    for kind, (errors, records, forgotten) in stories.items():
        assert errors == ["failed to respond to key query: response exceeds limit of 1024 bytes",
                          "", "failed to respond to key query: response already sent"], kind
        assert records == [{"Type": "response", "From": f"{kind}1", "Payload": b"ok"},
                           {"Type": "done", "From": "", "Payload": None}], kind
        # The agent's deadline is when it received the query plus the timeout, so never
        # before `timeout` after it was sent; forgotten within the 0.05 s poll plus slack.
        assert timeout <= forgotten < timeout + 1.5, (kind, forgotten)
