"""Serf's IPC protocol details, spoken to a pyserf agent over a raw socket."""

from __future__ import annotations

import socket

import msgpack
import pytest

from pyserf.client.rpc_client import RPCClient, RPCError

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
