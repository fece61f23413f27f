"""Synchronous client for the Serf agent RPC (IPC) protocol, usable as a library.

Speaks the same msgpack protocol as serf's Go client (``client/rpc_client.go``) so it works
against real serf agents and pyserf agents alike: a ``{Command, Seq}`` header plus an optional
body per request, replies matched by ``Seq``, and stream records (monitor, stream, query)
delivered later under the ``Seq`` of the request that opened them.  One socket, no threads:
while waiting for one reply, records of other open streams are buffered in arrival order.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from pyserf.client.errors import RPCError
from pyserf.gocompat.errno import errno_text
from pyserf.gocompat.hostport import (
    AddrError,
    format_tcp_addr,
    lookup_error,
    parse_port,
    split_host_port,
)
from pyserf.gocompat.hostport import ip_string as go_ip_string
from pyserf.serf.coordinate import Coordinate
from pyserf.serf.members import Member

__all__ = [
    "DEFAULT_TIMEOUT",
    "Coordinate",
    "KeyResponse",
    "LogStream",
    "EventStream",
    "Member",
    "QueryStream",
    "RPCClient",
    "RPCError",
    "format_tcp_addr",
    "go_ip_string",
]

DEFAULT_TIMEOUT = 10.0
IPC_VERSION = 1
CLIENT_CLOSED = "client closed"

# Replies that the server sends without the body a command normally has.
_NO_BODY_ERRORS = frozenset(
    {"Authentication required", "Handshake required", "Unsupported command"}
)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class KeyResponse:
    """Result of a keyring command gathered from every member."""

    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    num_nodes: int = 0
    num_err: int = 0
    num_resp: int = 0

    @classmethod
    def from_record(cls, rec: Mapping[str, Any] | None) -> KeyResponse:
        rec = rec or {}
        return cls(
            messages=dict(rec.get("Messages") or {}),
            keys={k: int(v) for k, v in (rec.get("Keys") or {}).items()},
            num_nodes=int(rec.get("NumNodes") or 0),
            num_err=int(rec.get("NumErr") or 0),
            num_resp=int(rec.get("NumResp") or 0),
        )


# --------------------------------------------------------------------------------------------
# Dialing with Go-like error texts (the CLI prints them verbatim, as serf does)
# --------------------------------------------------------------------------------------------


def dial(addr: str, timeout: float) -> socket.socket:
    """Open a TCP connection; failures raise RPCError with Go's ``dial tcp ...`` wording."""
    try:
        host, port_text = split_host_port(addr)
        port = parse_port(port_text)
    except AddrError as exc:
        raise RPCError(f"dial tcp: {exc}") from None
    display_host = host
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        candidates = [host]
    except ValueError:
        if host == "":
            candidates = ["127.0.0.1"]
        else:
            try:
                infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):  # "a..b" fails IDNA encoding
                raise RPCError(f"dial tcp: {lookup_error(host)}") from None
            # An AF_INET/AF_INET6 sockaddr starts with the address text.
            v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
            v6 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET6]
            candidates = list(dict.fromkeys(v4 + v6))
    last: str = ""
    deadline = time.monotonic() + timeout
    for ip in candidates:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        shown = format_tcp_addr(display_host if host == "" else ip, port)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect((ip, port))
        except OSError as exc:
            sock.close()
            last = f"dial tcp {shown}: " + (
                "i/o timeout"
                if isinstance(exc, TimeoutError)
                else f"connect: {errno_text(exc)}"
            )
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise RPCError(last or f"dial tcp {addr}: no suitable address")


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------

_PLAIN = "plain"  # reply is a bare header
_BODY = "body"  # reply header is followed by a body
_STREAM_INIT = "stream-init"  # first reply of a stream: bare header
_STREAM = "stream"  # later stream records: header + body


def _is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and "Seq" in obj and set(obj) <= {"Seq", "Error"}


class RPCClient:
    """A connection to one agent's RPC address.

    Connecting performs the IPC handshake (version 1) and, when ``auth_key`` is given, ``auth``.
    ``timeout`` bounds dialing and each write (like serf's client); ``reply_timeout`` bounds the
    wait for replies (``None`` waits as long as the agent needs, as serf's CLI does).
    """

    def __init__(
        self,
        addr: str = "127.0.0.1:7373",
        auth_key: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        reply_timeout: float | None = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        self.reply_timeout = reply_timeout
        self._lock = threading.RLock()
        self._seq = 0
        self._expect: dict[int, str] = {}
        self._inbox: deque[tuple[int, dict[str, Any], Any]] = deque()
        self._pushback: deque[Any] = deque()
        self._closed = False
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        self._sock = dial(addr, timeout)
        try:
            self.handshake()
            if auth_key:
                self.auth(auth_key)
        except BaseException:
            self.close()
            raise

    # ---- connection management ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection; open streams end and pending calls fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> RPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ---- framing ------------------------------------------------------------------------------

    def _send(self, command: str, seq: int, body: Any = None, has_body: bool = False) -> None:
        if self._closed:
            raise RPCError(CLIENT_CLOSED)
        data = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=True)
        if has_body:
            data += msgpack.packb(body, use_bin_type=True)
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError:
            self.close()
            raise RPCError(CLIENT_CLOSED) from None

    def _read_obj(self, deadline: float | None) -> Any:
        """Next msgpack object from the socket; None when ``deadline`` passes first."""
        if self._pushback:
            return self._pushback.popleft()
        while True:
            try:
                return self._unpacker.unpack()
            except msgpack.OutOfData:
                pass
            if self._closed:
                raise RPCError(CLIENT_CLOSED)
            if deadline is None:
                self._sock.settimeout(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self.close()
                raise RPCError(CLIENT_CLOSED) from None
            if not data:
                self.close()
                raise RPCError(CLIENT_CLOSED)
            self._unpacker.feed(data)

    def _read_message(self, deadline: float | None) -> bool:
        """Read one header (and its body) into the inbox; False if the deadline passed."""
        header = self._read_obj(deadline)
        if header is None:
            return False
        if not _is_header(header):
            return True  # body of a message nobody waits for any more
        seq = int(header.get("Seq") or 0)
        kind = self._expect.get(seq)
        if kind is None:
            return True
        body = None
        error = header.get("Error") or ""
        if kind == _STREAM_INIT:
            self._expect[seq] = _STREAM
        elif kind == _BODY and error not in _NO_BODY_ERRORS or kind == _STREAM:
            body = self._read_obj(None)
            if _is_header(body):
                self._pushback.append(body)
                body = None
        self._inbox.append((seq, header, body))
        return True

    def _take(self, seqs: Sequence[int] | None) -> tuple[int, dict[str, Any], Any] | None:
        for i, item in enumerate(self._inbox):
            if seqs is None or item[0] in seqs:
                del self._inbox[i]
                return item
        return None

    def _wait(
        self, seqs: Sequence[int] | None, timeout: float | None
    ) -> tuple[int, dict[str, Any], Any] | None:
        """Next message for one of ``seqs`` (any stream if None); None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                item = self._take(seqs)
                if item is not None:
                    return item
                if not self._read_message(deadline):
                    return None

    def _call(self, command: str, body: Any = None, *, has_body: bool = False,
              expect_body: bool = False) -> Any:
        """Send one request and wait for its reply; raises RPCError on an error reply."""
        with self._lock:
            seq = self._next_seq()
            self._expect[seq] = _BODY if expect_body else _PLAIN
            try:
                self._send(command, seq, body, has_body)
                item = self._wait([seq], self.reply_timeout)
            finally:
                self._expect.pop(seq, None)
            if item is None:
                self.close()
                raise RPCError("i/o timeout")
            _, header, resp = item
            error = header.get("Error") or ""
            if error:
                raise RPCError(error, resp)
            return resp

    def _open_stream(self, command: str, body: Any, kind: type[_Subscription]) -> Any:
        with self._lock:
            seq = self._next_seq()
            self._expect[seq] = _STREAM_INIT
            try:
                self._send(command, seq, body, True)
                item = self._wait([seq], self.reply_timeout)
            except BaseException:
                self._expect.pop(seq, None)
                raise
            if item is None:
                self._expect.pop(seq, None)
                self.close()
                raise RPCError("i/o timeout")
            error = item[1].get("Error") or ""
            if error:
                self._expect.pop(seq, None)
                raise RPCError(error)
            return kind(self, seq)

    # ---- commands -----------------------------------------------------------------------------

    def handshake(self, version: int = IPC_VERSION) -> None:
        """Announce the IPC version; the agent rejects any command before this."""
        self._call("handshake", {"Version": version}, has_body=True)

    def auth(self, key: str) -> None:
        """Authenticate with the agent's ``rpc_auth`` token."""
        self._call("auth", {"AuthKey": key}, has_body=True)

    def members(self) -> list[Member]:
        """Every member the agent knows, in any state."""
        resp = self._call("members", expect_body=True) or {}
        return [Member.from_record(m) for m in resp.get("Members") or []]

    def members_filtered(
        self, name: str = "", status: str = "", tags: Mapping[str, str] | None = None
    ) -> list[Member]:
        """Members whose name, status and tags match the anchored regexps (empty = any)."""
        body = {"Tags": dict(tags or {}), "Status": status, "Name": name}
        resp = self._call("members-filtered", body, has_body=True, expect_body=True) or {}
        return [Member.from_record(m) for m in resp.get("Members") or []]

    def join(self, addrs: Sequence[str], replay: bool = False) -> int:
        """Ask the agent to join these addresses; returns how many it contacted."""
        body = {"Existing": list(addrs), "Replay": bool(replay)}
        resp = self._call("join", body, has_body=True, expect_body=True) or {}
        return int(resp.get("Num") or 0)

    def leave(self) -> None:
        """Gracefully leave the cluster; the agent shuts down afterwards."""
        self._call("leave")

    def force_leave(self, node: str, prune: bool = False) -> None:
        """Force a (failed) member into the left state, or remove it with ``prune``."""
        self._call("force-leave", {"Node": node, "Prune": bool(prune)}, has_body=True)

    def user_event(self, name: str, payload: bytes | None = None, coalesce: bool = True) -> None:
        """Broadcast a custom user event."""
        body = {"Name": name, "Payload": None if payload is None else bytes(payload),
                "Coalesce": bool(coalesce)}
        self._call("event", body, has_body=True)

    def update_tags(
        self, set: Mapping[str, str] | None = None, delete: Sequence[str] | None = None
    ) -> None:
        """Set and/or delete tags on the agent."""
        body = {"Tags": dict(set or {}), "DeleteTags": list(delete) if delete else None}
        self._call("tags", body, has_body=True)

    def stats(self) -> dict[str, dict[str, str]]:
        """The agent's debugging statistics (``serf info``)."""
        resp = self._call("stats", expect_body=True) or {}
        return {k: dict(v or {}) for k, v in resp.items()}

    def get_coordinate(self, node: str) -> Coordinate | None:
        """The cached network coordinate of ``node``, or None if the agent has none."""
        resp = self._call("get-coordinate", {"Node": node}, has_body=True, expect_body=True)
        resp = resp or {}
        if not resp.get("Ok"):
            return None
        return Coordinate.from_record(resp.get("Coord") or {})

    def respond(self, id: int, payload: bytes | None) -> None:
        """Answer a query received on an event stream (``ID`` of its record)."""
        body = {"ID": int(id), "Payload": None if payload is None else bytes(payload)}
        self._call("respond", body, has_body=True)

    def _key_call(self, command: str, key: str | None) -> KeyResponse:
        try:
            if key is None:
                resp = self._call(command, expect_body=True)
            else:
                resp = self._call(command, {"Key": key}, has_body=True, expect_body=True)
        except RPCError as exc:
            raise RPCError(exc.message, KeyResponse.from_record(exc.body)) from None
        return KeyResponse.from_record(resp)

    def install_key(self, key: str) -> KeyResponse:
        """Install a base64 key on every member; RPCError.body is the KeyResponse on failure."""
        return self._key_call("install-key", key)

    def use_key(self, key: str) -> KeyResponse:
        """Make an installed key the primary one on every member."""
        return self._key_call("use-key", key)

    def remove_key(self, key: str) -> KeyResponse:
        """Remove a non-primary key from every member."""
        return self._key_call("remove-key", key)

    def list_keys(self) -> KeyResponse:
        """Gather the installed keys of every member."""
        return self._key_call("list-keys", None)

    def monitor(self, level: str = "INFO") -> LogStream:
        """Stream the agent's log lines at ``level`` or above (starts with recent lines)."""
        return self._open_stream("monitor", {"LogLevel": level}, LogStream)

    def stream(self, filter: str = "*") -> EventStream:
        """Stream events matching a handler-style filter (``*``, ``member-join,user:x``)."""
        return self._open_stream("stream", {"Type": filter}, EventStream)

    def query(
        self,
        name: str,
        payload: bytes | None = None,
        *,
        filter_nodes: Sequence[str] | None = None,
        filter_tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
        relay_factor: int = 0,
        timeout: float = 0.0,
        wait_full: bool = False,
    ) -> QueryStream:
        """Start a query; iterate the result for ``{Type, From, Payload}`` ack/response records.

        ``timeout`` is in seconds (0 = the agent's default).  Iteration ends at the ``done``
        record or when the connection closes.
        """
        body = {
            "FilterNodes": list(filter_nodes) if filter_nodes else None,
            "FilterTags": dict(filter_tags) if filter_tags else None,
            "RequestAck": bool(request_ack),
            "RelayFactor": int(relay_factor),
            "Timeout": int(round(timeout * 1e9)),
            "Name": name,
            "Payload": None if payload is None else bytes(payload),
        }
        if wait_full:
            # pyserf agents otherwise finish once every selected live member has answered.
            body["WaitFull"] = True
        return self._open_stream("query", body, QueryStream)

    def stop(self, seq: int) -> None:
        """Stop the monitor or event stream opened with request ``seq``."""
        with self._lock:
            self._expect.pop(seq, None)
            self._inbox = deque(item for item in self._inbox if item[0] != seq)
        self._call("stop", {"Stop": int(seq)}, has_body=True)

    def poll(self, timeout: float | None = None) -> tuple[int, Any] | None:
        """Next record of any open stream as ``(seq, record)``, in arrival order.

        Returns None on timeout; raises RPCError("client closed") when the connection ends.
        """
        with self._lock:
            live = [s for s, k in self._expect.items() if k == _STREAM]
            item = self._wait(live, timeout)
        if item is None:
            return None
        return item[0], item[2]


class _Subscription:
    """An open stream; iterate it to receive records until stopped or the connection ends."""

    def __init__(self, client: RPCClient, seq: int) -> None:
        self.client = client
        self.seq = seq
        self.finished = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        rec = self.next()
        if rec is None:
            raise StopIteration
        return rec

    def _convert(self, body: Any) -> Any:
        return body

    def next(self, timeout: float | None = None) -> Any:
        """The next record, or None on timeout or once the stream has ended."""
        while not self.finished:
            try:
                item = self.client._wait([self.seq], timeout)
            except RPCError:
                self.finished = True
                return None
            if item is None:
                return None
            rec = self._convert(item[2])
            if rec is not None:
                return rec
        return None

    def stop(self) -> None:
        """Tell the agent to stop this stream."""
        if not self.finished:
            self.finished = True
            self.client.stop(self.seq)


class LogStream(_Subscription):
    """Log lines from ``monitor``."""

    def _convert(self, body: Any) -> Any:
        if isinstance(body, dict):
            return body.get("Log") or ""
        return None


class EventStream(_Subscription):
    """Event records from ``stream`` (member events, user events, queries with an ``ID``)."""

    def _convert(self, body: Any) -> Any:
        return body if isinstance(body, dict) else None


class QueryStream(_Subscription):
    """Ack and response records of a query; ends at the ``done`` record."""

    def __init__(self, client: RPCClient, seq: int) -> None:
        super().__init__(client, seq)
        self.done = False

    def _convert(self, body: Any) -> Any:
        if not isinstance(body, dict):
            return None
        kind = body.get("Type")
        # A serf agent streams empty ack/response records once its query's channels close
        # (until its own deadline sends "done"); serf's CLI stops at the first, and so do we.
        if kind == "done" or kind in ("ack", "response") and not body.get("From"):
            self.done = True
            self.finished = True
            self.client._expect.pop(self.seq, None)
            return None
        if kind not in ("ack", "response"):
            return None
        return {"Type": kind, "From": body.get("From") or "", "Payload": body.get("Payload")}

    def stop(self) -> None:
        """Forget the query locally (serf has no way to cancel a running query)."""
        self.finished = True
        self.client._expect.pop(self.seq, None)
