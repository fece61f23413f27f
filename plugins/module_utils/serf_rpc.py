# Copyright: pyserf contributors
# MPL-2.0 (see the collection's galaxy.yml)
"""A minimal client of serf's msgpack RPC (IPC version 1), enough for membership queries.

Self-contained on purpose: the inventory plugin runs on the Ansible controller, where the
pyserf package is usually not installed. It needs only the ``msgpack`` Python package and
speaks to a pyserf agent or a real serf agent alike (``handshake``, ``auth``,
``members-filtered``). Filters travel to the agent, which applies them with Go's regexp
semantics (RE2, anchored), exactly as ``serf members -status/-name/-tag`` do.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

try:
    import msgpack
except ImportError:  # reported by the caller with what to install
    msgpack = None

IPC_VERSION = 1
MAX_REPLY_BYTES = 64 * 1024 * 1024  # a members reply of ~100k members; more is an attack


class SerfRPCError(Exception):
    """The agent could not be reached, refused the request, or answered nonsense."""


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SerfRPCError(f"rpc_addr must be host:port, got {addr!r}")
    return host.strip("[]"), int(port)


def member_ip(raw: Any) -> str:
    """The IP string of a member's ``Addr`` (4 or 16 raw bytes; IPv4-mapped shown as IPv4)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes) or len(raw) not in (4, 16):
        raise SerfRPCError(f"member address is not 4 or 16 bytes: {raw!r}")
    ip = ipaddress.ip_address(raw)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class SerfRPC:
    """One RPC connection: handshake (and auth) on open, then requests in sequence."""

    def __init__(self, addr: str, auth_key: str = "", timeout: float = 10.0) -> None:
        if msgpack is None:
            raise SerfRPCError("the msgpack Python package is needed on the controller "
                               "(pip install msgpack)")
        self.timeout = timeout
        self._seq = 0
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape",
                                          max_buffer_size=MAX_REPLY_BYTES)
        host, port = split_addr(addr)
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SerfRPCError(f"cannot connect to the agent's RPC at {addr}: {exc}") from None
        try:
            self.call("handshake", {"Version": IPC_VERSION})
            if auth_key:
                self.call("auth", {"AuthKey": auth_key})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SerfRPC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, command: str, body: Any, expect_body: bool = False) -> Any:
        """Send one request; return its reply body (None when the command has none)."""
        self._seq += 1
        seq = self._seq
        data = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=True)
        data += msgpack.packb(body, use_bin_type=True)
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(data)
            header = self._read(deadline)
            if not isinstance(header, dict) or header.get("Seq") != seq:
                raise SerfRPCError(f"unexpected reply to {command}: {header!r:.200}")
            if header.get("Error"):
                raise SerfRPCError(f"{command}: {header['Error']}")
            return self._read(deadline) if expect_body else None
        except OSError as exc:
            raise SerfRPCError(f"{command}: connection to the agent failed: {exc}") from None

    def _read(self, deadline: float) -> Any:
        while True:
            try:
                return self._unpacker.unpack()
            except msgpack.OutOfData:
                pass
            except (ValueError, msgpack.ExtraData, msgpack.FormatError,
                    msgpack.StackError) as exc:
                raise SerfRPCError(f"malformed reply from the agent: {exc}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SerfRPCError("the agent did not answer in time")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise SerfRPCError("the agent closed the connection (wrong rpc_auth, or a "
                                   "filter it refused?)")
            try:
                self._unpacker.feed(chunk)
            except msgpack.BufferFull:
                raise SerfRPCError(f"reply over {MAX_REPLY_BYTES} bytes") from None

    def members_filtered(self, status: str = "", name: str = "",
                         tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Members whose status, name and tags match the anchored RE2 filters ("" = any),
        each as {name, addr, port, tags, status, protocol}."""
        reply = self.call("members-filtered",
                          {"Tags": dict(tags or {}), "Status": status, "Name": name},
                          expect_body=True)
        if not isinstance(reply, dict) or not isinstance(reply.get("Members") or [], list):
            raise SerfRPCError(f"unexpected members reply: {reply!r:.200}")
        out = []
        for rec in reply.get("Members") or []:
            if not isinstance(rec, dict):
                raise SerfRPCError(f"unexpected member record: {rec!r:.200}")
            out.append({
                "name": str(rec.get("Name") or ""),
                "addr": member_ip(rec.get("Addr")),
                "port": int(rec.get("Port") or 0),
                "tags": {str(k): str(v) for k, v in (rec.get("Tags") or {}).items()},
                "status": str(rec.get("Status") or ""),
                "protocol": int(rec.get("ProtocolCur") or 0),
            })
        return out
