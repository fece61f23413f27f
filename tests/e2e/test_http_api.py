"""The HTTP API (issue 14) against real pyserf agent processes, from real HTTP clients: curl
(when installed) and Python's http.client, over plain HTTP and TLS.

Every endpoint is called; the event stream is read as a browser's EventSource would (ids,
Last-Event-ID resume, heartbeats); hostile clients (no token, huge bodies, never reading,
dribbling headers, too many connections) are refused without stalling the agent.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Agent, Cluster, wait_until
from tests.e2e.harness import members as cli_members

pytestmark = pytest.mark.e2e

CURL = shutil.which("curl")
TOKEN = "s3cret-token"
HTTP_PORT = 8500


def start(cluster: Cluster, name: str, *args: str, **http_config: Any) -> Agent:
    """A pyserf agent with the HTTP API on its own address, port 8500."""
    ip = cluster._ip()
    conf = cluster.tmp / f"{name}-http.json"
    conf.write_text(json.dumps(http_config))
    return cluster.start("pyserf", name, f"-http-addr={ip}:{HTTP_PORT}",
                         f"-config-file={conf}", *args, ip=ip)


def call(agent: Agent, method: str, path: str, body: bytes | str | None = None,
         token: str | None = TOKEN, tls: ssl.SSLContext | None = None, timeout: float = 30.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request with Python's http.client: (status, headers, decoded JSON body)."""
    if tls is None:
        conn = http.client.HTTPConnection(agent.ip, HTTP_PORT, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(agent.ip, HTTP_PORT, timeout=timeout, context=tls)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, (
            json.loads(raw) if raw else None)
    finally:
        conn.close()


def curl(agent: Agent, method: str, path: str, body: str | None = None,
         token: str | None = TOKEN, extra: tuple[str, ...] = (), scheme: str = "http"
         ) -> tuple[int, Any]:
    """The same request with curl: (status, decoded JSON body)."""
    argv = [CURL, "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", *extra,
            f"{scheme}://{agent.ip}:{HTTP_PORT}{path}"]
    if token:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        argv[1:1] = ["--data-binary", body]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code), json.loads(text) if text.strip() else None


needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


class SSE:
    """A minimal EventSource: reads ``id:``/``event:``/``data:`` blocks and comments."""

    def __init__(self, agent: Agent, query: str = "", last_id: str = "", token: str = TOKEN,
                 rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(20)
        self.sock.connect((agent.ip, HTTP_PORT))
        head = (f"GET /v1/event/stream{query} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n")
        if last_id:
            head += f"Last-Event-ID: {last_id}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.file = self.sock.makefile("rb")
        status = self.file.readline()
        assert b" 200 " in status, status
        while self.file.readline() not in (b"\r\n", b""):
            pass
        self.comments: list[str] = []

    def _line(self) -> str:
        # Chunked transfer: a size line, then data; yield the data's lines.
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError
            text = line.decode().rstrip("\r\n")
            if text and all(c in "0123456789abcdefABCDEF" for c in text):
                continue  # a chunk size line
            return text

    def next(self) -> dict[str, str]:
        """The next event (comments are collected on the side)."""
        event: dict[str, str] = {}
        while True:
            text = self._line()
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
            elif not text:
                if event:
                    return event
            else:
                key, _, value = text.partition(": ")
                event[key] = value

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def user_events(sse: SSE, count: int) -> list[tuple[str, str, bytes]]:
    out = []
    while len(out) < count:
        event = sse.next()
        if event.get("event") == "user":
            data = json.loads(event["data"])
            out.append((event.get("id", ""), data["Name"], base64.b64decode(data["Payload"])))
    return out


# ---- every endpoint --------------------------------------------------------------------------


@needs_curl
def test_every_endpoint_from_curl_and_python(cluster: Cluster) -> None:
    h1 = start(cluster, "h1", "-tag", "role=web", http_token=TOKEN)
    h2 = cluster.start("pyserf", "h2", "-tag", "role=db")
    # join (curl), then both clients see both members with Consul's keys
    code, body = curl(h1, "PUT", f"/v1/agent/join?address={h2.bind}")
    assert (code, body) == (200, {"Num": 1})
    wait_until(lambda: len(call(h1, "GET", "/v1/agent/members")[2]) == 2, 10, what="join")
    status, headers, members = call(h1, "GET", "/v1/agent/members")
    assert status == 200 and int(headers["x-serf-index"]) >= 1
    by_name = {m["Name"]: m for m in members}
    assert by_name["h2"]["Addr"] == h2.ip and by_name["h2"]["Port"] == 7946
    assert by_name["h2"]["Status"] == "alive" and by_name["h2"]["Tags"] == {"role": "db"}
    assert {"ProtocolCur", "DelegateCur"} <= set(by_name["h1"])
    code, filtered = curl(h1, "GET", "/v1/agent/members?tag=role:d.*&status=alive")
    assert code == 200 and [m["Name"] for m in filtered] == ["h2"]
    assert [m["Name"] for m in call(h1, "GET", "/v1/agent/members?name=h1")[2]] == ["h1"]
    # self
    code, me = curl(h1, "GET", "/v1/agent/self")
    assert code == 200 and me["Member"]["Name"] == "h1" and me["Stats"]["agent"]["name"] == "h1"
    # tags: set and delete, from both clients
    code, body = curl(h1, "PUT", "/v1/agent/tags", json.dumps({"Set": {"dc": "a"}}))
    assert (code, body) == (200, {"Tags": {"role": "web", "dc": "a"}})
    status, _, body = call(h1, "PUT", "/v1/agent/tags", json.dumps({"Delete": ["role"]}))
    assert (status, body) == (200, {"Tags": {"dc": "a"}})
    wait_until(lambda: cli_members("pyserf", h2.rpc).get("h1", ("", "", {}))[2] == {"dc": "a"},
               10, what="h2 to see h1's new tags")
    # user event: h2's own log shows it arrived over gossip
    code, body = curl(h1, "PUT", "/v1/event/fire/deploy?coalesce=false", "v42")
    assert (code, body) == (200, {"Name": "deploy", "Size": 3})
    wait_until(lambda: "Received event: user-event: deploy" in h2.log(), 10, what="event")
    # query: both members answer (pyserf agents ack and respond with nothing by default)
    code, body = curl(h1, "POST", "/v1/query/ping-all?ack&timeout=3s", "hi")
    assert code == 200 and sorted(body["Acks"]) == ["h1", "h2"]
    status, _, body = call(h1, "POST", "/v1/query/ping-all?ack&timeout=3s&node=h2", b"x")
    assert status == 200 and body["Acks"] == ["h2"]
    # coordinate: h2's arrives with pings
    wait_until(lambda: call(h1, "GET", "/v1/coordinate/h2")[0] == 200, 10, what="coord")
    code, body = curl(h1, "GET", "/v1/coordinate/h2")
    assert code == 200 and body["Node"] == "h2" and len(body["Coord"]["Vec"]) == 8
    assert curl(h1, "GET", "/v1/coordinate/nobody")[0] == 404
    # keyring: this cluster is not encrypted, so every node says so (a 500 naming the count)
    code, body = curl(h1, "GET", "/v1/agent/keyring")
    assert code == 500 and body["NumNodes"] == 2 and body["NumErr"] == 2
    status, _, body = call(h1, "POST", "/v1/agent/keyring", json.dumps({"Key": "bad"}))
    assert status == 400 and body["Field"] == "Key"
    # force-leave a failed member: h2 is killed, then pruned
    h2.proc.kill()
    wait_until(lambda: {m["Name"]: m["Status"] for m in call(
        h1, "GET", "/v1/agent/members")[2]}.get("h2") == "failed", 20, what="h2 failed")
    code, body = curl(h1, "PUT", "/v1/agent/force-leave/h2?prune")
    assert (code, body) == (200, {"Node": "h2", "Prune": True})
    wait_until(lambda: "h2" not in {m["Name"] for m in call(
        h1, "GET", "/v1/agent/members")[2]}, 10, what="h2 pruned")
    # leave: answered, then the agent exits 0
    status, _, body = call(h1, "PUT", "/v1/agent/leave")
    assert (status, body) == (200, {"Left": True})
    assert h1.proc.wait(10) == 0


def test_errors_are_json_naming_the_field_and_the_fix(cluster: Cluster) -> None:
    h1 = start(cluster, "e1", http_max_body_bytes=4096)
    for method, path, body, code, field in [
        ("GET", "/v1/nope", None, 404, "path"),
        ("POST", "/v1/agent/members", None, 405, "method"),
        ("GET", "/v1/agent/members?name=(", None, 400, "name"),
        ("GET", "/v1/agent/members?index=x", None, 400, "index"),
        ("GET", "/v1/agent/members?index=1&wait=forever", None, 400, "wait"),
        ("PUT", "/v1/agent/join", None, 400, "address"),
        ("PUT", "/v1/agent/tags", "[1]", 400, "body"),
        ("PUT", "/v1/agent/tags", "[" * 4000, 400, "body"),  # nesting past the recursion limit
        ("PUT", "/v1/agent/tags", b"\xff\xfe", 400, "body"),
        ("PUT", "/v1/agent/tags", '{"Set": {"a": 1}}', 400, "Set"),
        ("PUT", "/v1/event/fire/big", "x" * 1000, 413, "payload"),  # user_event_size_limit
        ("PUT", "/v1/event/fire/huge", "x" * 5000, 413, "body"),  # http_max_body_bytes
        ("POST", "/v1/query/_serf_ping", None, 403, "name"),
        ("GET", "/v1/event/stream?type=bogus", None, 400, "type"),
        ("GET", "/v1/event/stream?type=" + ",".join(["user"] * 65), None, 400, "type"),
    ]:
        status, headers, answer = call(h1, method, path, body, token=None)
        assert (status, answer["Field"]) == (code, field), (path, answer)
        assert answer["Error"] and answer["Fix"], answer
        if code == 405:
            assert headers["allow"] == "GET,HEAD"


def test_a_body_too_large_is_refused_without_reading_it(cluster: Cluster) -> None:
    h1 = start(cluster, "b1", http_max_body_bytes=4096)
    # Content-Length over the limit: 413 at once, though the 64 MiB never come.
    with socket.create_connection((h1.ip, HTTP_PORT), timeout=10) as sock:
        sock.sendall(b"PUT /v1/event/fire/x HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 67108864\r\n\r\n" + b"y" * 1000)
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # Chunked (no length): refused once the limit is passed.
    with socket.create_connection((h1.ip, HTTP_PORT), timeout=10) as sock:
        sock.sendall(b"PUT /v1/event/fire/x HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            sock.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    assert call(h1, "GET", "/v1/agent/members", token=None)[0] == 200


# ---- auth and TLS ----------------------------------------------------------------------------


def test_auth_refused_without_the_token(cluster: Cluster) -> None:
    h1 = start(cluster, "t1", http_token=TOKEN)
    status, headers, body = call(h1, "GET", "/v1/agent/members", token=None)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert body["Field"] == "Authorization"
    assert call(h1, "GET", "/v1/agent/members", token="wrong")[0] == 403
    assert call(h1, "GET", "/v1/nope", token=None)[0] == 401  # no probing for endpoints
    assert call(h1, "PUT", "/v1/agent/leave", token="s3cret-tokeN")[0] == 403
    assert call(h1, "GET", "/v1/agent/members")[0] == 200
    if CURL:
        assert curl(h1, "GET", "/v1/agent/members", token=None)[0] == 401
        assert curl(h1, "GET", "/v1/agent/members")[0] == 200
    assert h1.alive()


def _self_signed(tmp: Path, ip: str) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyserf-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(cluster: Cluster, tmp_path: Path) -> None:
    ip = f"{cluster.prefix}.{cluster._host}"  # the address start() will give the agent
    cert, key = _self_signed(tmp_path, ip)
    h1 = start(cluster, "s1", http_token=TOKEN, http_tls_cert=str(cert),
               http_tls_key=str(key))
    assert h1.ip == ip
    trusted = ssl.create_default_context(cafile=str(cert))
    status, _, members = call(h1, "GET", "/v1/agent/members", tls=trusted)
    assert status == 200 and members[0]["Name"] == "s1"
    with pytest.raises(ssl.SSLCertVerificationError):
        call(h1, "GET", "/v1/agent/members", tls=ssl.create_default_context())
    # Plain HTTP to the TLS port gets no API answer.
    try:
        plain = call(h1, "GET", "/v1/agent/members", timeout=5)[0]
    except (http.client.HTTPException, OSError):
        plain = None
    assert plain != 200
    if CURL:
        code, body = curl(h1, "GET", "/v1/agent/self", scheme="https",
                          extra=("--cacert", str(cert)))
        assert code == 200 and body["Member"]["Name"] == "s1"


def test_a_bad_certificate_stops_the_agent_with_a_clear_error(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    ip = cluster._ip()
    conf = tmp_path / "tls.json"
    conf.write_text(json.dumps({"http_tls_cert": str(bad), "http_tls_key": str(bad)}))
    agent = cluster.start("pyserf", "bad", f"-http-addr={ip}:{HTTP_PORT}",
                          f"-config-file={conf}", ip=ip, wait=False)
    assert agent.proc.wait(15) == 1
    assert "==> Error starting HTTP listener on" in agent.log()


# ---- blocking queries and the event stream ---------------------------------------------------


@pytest.mark.serial  # waits out timed waits
def test_blocking_query_wakes_when_membership_changes(cluster: Cluster) -> None:
    h1 = start(cluster, "w1")
    # The index moves with each (coalesced) member event, w1's own join among them. With
    # nothing changing, a blocking query waits out its wait and keeps the index.
    for _ in range(5):
        index = int(call(h1, "GET", "/v1/agent/members")[1]["x-serf-index"])
        began = time.monotonic()
        _, again, _ = call(h1, "GET", f"/v1/agent/members?index={index}&wait=1s")
        if int(again["x-serf-index"]) == index:
            break
    assert 0.9 <= time.monotonic() - began < 5 and int(again["x-serf-index"]) == index
    result: dict[str, Any] = {}

    def blocking() -> None:
        began = time.monotonic()
        status, hdrs, members = call(h1, "GET", f"/v1/agent/members?index={index}&wait=60s",
                                     timeout=90)
        result.update(status=status, index=int(hdrs["x-serf-index"]), took=time.monotonic()
                      - began, names={m["Name"] for m in members})

    waiter = threading.Thread(target=blocking)
    waiter.start()
    time.sleep(1.0)
    assert not result, "answered before anything changed"
    cluster.start("pyserf", "w2", f"-join={h1.bind}")
    waiter.join(60)
    assert result["status"] == 200 and result["index"] > index
    assert result["names"] == {"w1", "w2"} and result["took"] < 30
    # An index from an older run (ahead of ours) answers at once.
    began = time.monotonic()
    call(h1, "GET", f"/v1/agent/members?index={10**12}&wait=30s")
    assert time.monotonic() - began < 5


def test_event_stream_ids_resume_and_heartbeats(cluster: Cluster) -> None:
    h1 = start(cluster, "v1", http_token=TOKEN)
    stream = SSE(h1, "?type=user&heartbeat=1s")
    for n in range(3):
        call(h1, "PUT", f"/v1/event/fire/e{n}?coalesce=false", f"p{n}")
    first = user_events(stream, 3)
    assert [(name, payload) for _, name, payload in first] == [
        ("e0", b"p0"), ("e1", b"p1"), ("e2", b"p2")]
    ids = [event_id for event_id, _, _ in first]
    assert len(set(ids)) == 3 and all(ids)
    # A quiet stream sends heartbeats (comments) so proxies keep it open.
    began = time.monotonic()
    heartbeats = 0
    while heartbeats < 2:
        heartbeats += stream._line() == ": heartbeat"
        assert time.monotonic() - began < 10
    assert time.monotonic() - began > 1.0  # one a second, not a flood
    stream.close()
    # Missed while disconnected: resumed exactly from the last id seen.
    for n in range(3, 5):
        call(h1, "PUT", f"/v1/event/fire/e{n}?coalesce=false", f"p{n}")
    resumed = SSE(h1, "?type=user", last_id=ids[1])
    got = user_events(resumed, 3)
    assert [name for _, name, _ in got] == ["e2", "e3", "e4"]
    assert got[0][0] == ids[2]
    resumed.close()
    # An id from another run: a gap event, then what the ring holds.
    other = SSE(h1, "?type=user:e4", last_id="deadbeef-3")
    assert other.next()["event"] == "gap"
    assert [name for _, name, _ in user_events(other, 1)] == ["e4"]
    other.close()


def test_member_events_on_the_stream(cluster: Cluster) -> None:
    h1 = start(cluster, "m1")
    stream = SSE(h1, "?type=member-join,member-leave", token="")
    h2 = cluster.start("pyserf", "m2", f"-join={h1.bind}")
    seen: dict[str, set[str]] = {}
    while "m2" not in seen.get("member-join", set()):
        event = stream.next()
        seen.setdefault(event["event"], set()).update(
            m["Name"] for m in json.loads(event["data"])["Members"])
    cluster.stop(h2)
    while "m2" not in seen.get("member-leave", set()):
        event = stream.next()
        seen.setdefault(event["event"], set()).update(
            m["Name"] for m in json.loads(event["data"])["Members"])
    stream.close()


# ---- hostile clients -------------------------------------------------------------------------


@pytest.mark.serial  # bounds how long a request may take meanwhile
def test_a_client_that_never_reads_is_dropped_without_blocking_the_agent(
        cluster: Cluster) -> None:
    h1 = start(cluster, "r1")
    stuck = SSE(h1, "?type=user", token="", rcvbuf=4096)  # then never read again
    payload = "x" * 400
    slowest = 0.0
    conn = http.client.HTTPConnection(h1.ip, HTTP_PORT, timeout=10)
    for n in range(3000):
        began = time.monotonic()
        conn.request("PUT", f"/v1/event/fire/e{n}?coalesce=false", body=payload)
        assert conn.getresponse().read()
        slowest = max(slowest, time.monotonic() - began)
        if n % 100 == 99 and "dropped: it read too slowly" in h1.log():
            break
    conn.close()
    wait_until(lambda: "dropped: it read too slowly" in h1.log(), 10, what="drop warning")
    assert slowest < 2.0, f"a request took {slowest:.2f}s while the stream was stuck"
    # The stuck connection was closed: reading it to the end finishes.
    stuck.sock.settimeout(10)
    try:
        while stuck.sock.recv(65536):
            pass
    except ConnectionResetError:  # aborted with data unread: a reset
        pass
    assert call(h1, "GET", "/v1/agent/members", token=None)[0] == 200


def test_connection_cap_and_slow_headers(cluster: Cluster) -> None:
    h1 = start(cluster, "c1", http_max_connections=3, http_idle_timeout="2s")
    idle = [socket.create_connection((h1.ip, HTTP_PORT), timeout=10) for _ in range(3)]
    time.sleep(0.3)
    with socket.create_connection((h1.ip, HTTP_PORT), timeout=10) as extra:
        answer = extra.recv(4096)
    assert answer.startswith(b"HTTP/1.1 429") and b'"Field": "connection"' in answer
    # A client dribbling its headers, a byte every 0.2 s, is cut off after the idle timeout.
    began = time.monotonic()
    dribble = b"GET /v1/agent/members HTTP/1.1\r\nX-Slow: " + b"a" * 100
    try:
        for byte in dribble:
            idle[0].sendall(bytes([byte]))
            time.sleep(0.2)
        raise AssertionError("a slow header was read for 20 s")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - began < 8
    for sock in idle[1:]:
        assert sock.recv(4096) == b""  # closed by the agent
    assert time.monotonic() - began < 8
    for sock in idle:
        sock.close()
    assert call(h1, "GET", "/v1/agent/members", token=None)[0] == 200
    assert "connection refused: 3 at the limit of 3" in h1.log()


def test_streamed_query_and_keyring_rotation(cluster: Cluster) -> None:
    old, new = (base64.b64encode(bytes([n]) * 16).decode() for n in (1, 2))
    k1 = start(cluster, "k1", f"-encrypt={old}")
    cluster.start("pyserf", "k2", f"-encrypt={old}", f"-join={k1.ip}",
                  "-event-handler", "query:who=echo pong")
    wait_until(lambda: len(call(k1, "GET", "/v1/agent/members?status=alive")[2]) == 2, 10,
               what="k2 to join")
    # A streamed query: SSE acks as they arrive, then done (the body ends there).
    conn = http.client.HTTPConnection(k1.ip, HTTP_PORT, timeout=30)
    conn.request("POST", "/v1/query/who?stream&ack&timeout=5s", body=b"hi")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    blocks = [dict(line.split(": ", 1) for line in block.splitlines())
              for block in resp.read().decode().split("\n\n") if block]
    conn.close()
    assert [b["event"] for b in blocks][-1] == "done"
    assert sorted(json.loads(b["data"])["From"] for b in blocks if b["event"] == "ack") == [
        "k1", "k2"]
    answers = [json.loads(b["data"]) for b in blocks if b["event"] == "response"]
    assert [(a["From"], base64.b64decode(a["Payload"])) for a in answers] == [("k2", b"pong\n")]
    # Not streamed: one JSON answer once everyone answered.
    status, _, body = call(k1, "POST", "/v1/query/who?timeout=5s", b"")
    assert status == 200 and body["Responses"] == {"k2": base64.b64encode(b"pong\n").decode()}
    # Keyring rotation through the API, checked by listing.
    status, _, body = call(k1, "GET", "/v1/agent/keyring")
    assert (status, body["Keys"], body["NumResp"]) == (200, {old: 2}, 2)
    for method in ("POST", "PUT"):
        status, _, body = call(k1, method, "/v1/agent/keyring", json.dumps({"Key": new}))
        assert (status, body["NumErr"], body["NumResp"]) == (200, 0, 2), body
    status, _, body = call(k1, "DELETE", "/v1/agent/keyring", json.dumps({"Key": old}))
    assert status == 200, body
    assert call(k1, "GET", "/v1/agent/keyring")[2]["Keys"] == {new: 2}


@needs_curl
def test_event_stream_read_by_curl(cluster: Cluster) -> None:
    h1 = start(cluster, "q1", http_token=TOKEN)
    reader = subprocess.Popen(
        [CURL, "-sN", "--max-time", "30", "-H", f"Authorization: Bearer {TOKEN}",
         f"http://{h1.ip}:{HTTP_PORT}/v1/event/stream?type=user:hello"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert [reader.stdout.readline() for _ in range(2)] == [": stream open\n", "\n"]
        call(h1, "PUT", "/v1/event/fire/other?coalesce=false", "no")
        call(h1, "PUT", "/v1/event/fire/hello?coalesce=false", "world")
        lines = [reader.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("id: ") and lines[1:] == [
            "event: user\n", lines[2], "\n"]
        data = json.loads(lines[2].removeprefix("data: "))
        assert (data["Name"], base64.b64decode(data["Payload"])) == ("hello", b"world")
    finally:
        reader.kill()
        reader.wait(5)
