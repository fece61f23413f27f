"""A black-box adversary for serf-compatible agents (issue 8): hostile UDP, TCP and RPC input.

Everything an attack sends is built here by hand (own msgpack writer, own LZW writer, own
AES-GCM framing) so that hostile values the agent's encoders would refuse (ports 70000, -1,
2^64-1, wrong types, unhashable map keys) reach the wire, and so that the adversary does not
depend on the code it attacks. The same attacks run against pyserf and against the real
``serf`` binary; ``benchmarks/adversary.py`` runs the full campaign, ``test_adversary.py`` a
bounded one.

After every attack the agent must still pass :func:`check_health`: a UDP ping acked, a TCP
push-pull answered, RPC ``members`` and ``event`` answered (each within
:data:`HEALTH_TIMEOUT_S`), the process alive and its RSS under :data:`RSS_BOUND_MIB`. At the
end of each group a second agent must still be able to join.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.e2e.harness import Agent, Cluster

# ---------------------------------------------------------------------------------------------
# bounds the agent must keep (the health criteria of issue 8)

HEALTH_TIMEOUT_S = 2.0  # every probe must be answered within this
RSS_BOUND_MIB = 150  # idle agents use 20-50 MiB; 150 leaves room for transient buffers only
# A join to a peer that never answers waits memberlist's TCPTimeout, which the timing profile
# sets (serf's and pyserf's alike); the join must return within it plus slack.
TCP_TIMEOUT_S = {"lan": 10.0, "wan": 30.0, "local": 1.0}
JOIN_SLACK_S = 5.0
TRICKLE_CPU_BOUND_S = 3.0  # a linear stream parser needs well under a second for 16 MiB
SECOND_JOIN_TIMEOUT_S = 15.0
PING_INTERVAL_S = 0.1  # the background prober pings this often during an attack
HANDLER_TIMEOUT_S = 2  # handler_timeout given to pyserf (serf 0.9.4 has no such option)

U16_OVERFLOW = 70000
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
LONG_TAG = "a" * 300 + "!"  # target of the (a*)*$ filter: exponential for a backtracker
ATTACKER_HOST = 200  # attacker sockets use <prefix>.200; malicious peers .240 and up
MIB = 1024 * 1024

# memberlist message types
PING, INDIRECT, ACK, SUSPECT, ALIVE, DEAD, PUSH_PULL, COMPOUND, USER, COMPRESS, ENCRYPT = range(11)
NACK, ERR = 11, 13
# serf message types (inside a memberlist user message)
S_LEAVE, S_JOIN, S_PUSH_PULL, S_EVENT, S_QUERY, S_RESPONSE = range(6)
S_KEY_REQUEST, S_RELAY = 7, 9
VSN = bytes([1, 5, 2, 2, 5, 5])


# ---------------------------------------------------------------------------------------------
# msgpack writer (go-msgpack's old spec: strings and []byte are both "raw" str, never bin)


class Raw(bytes):
    """Already-encoded msgpack, inserted verbatim."""


class Bin(bytes):
    """A msgpack bin value: wrong for a Go string field on the gossip port."""


@dataclass
class Pairs:
    """A map given as (key, value) pairs, so keys may be lists or maps (unhashable in Python)."""

    items: list[tuple[Any, Any]]


def mp(obj: Any) -> bytes:
    """Encode ``obj`` with no range checks beyond what msgpack itself can represent."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 128:
            return bytes([obj])
        if -32 <= obj < 0:
            return struct.pack("b", obj)
        if obj >= 0:
            for tag, fmt, top in ((0xCC, ">B", 2**8), (0xCD, ">H", 2**16),
                                  (0xCE, ">I", 2**32), (0xCF, ">Q", 2**64)):
                if obj < top:
                    return bytes([tag]) + struct.pack(fmt, obj)
        for tag, fmt, low in ((0xD0, ">b", -(2**7)), (0xD1, ">h", -(2**15)),
                              (0xD2, ">i", -(2**31)), (0xD3, ">q", -(2**63))):
            if obj >= low:
                return bytes([tag]) + struct.pack(fmt, obj)
        raise ValueError(f"{obj} does not fit msgpack")
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, Bin):
        n = len(obj)
        head = (b"\xc4" + struct.pack(">B", n) if n < 256 else
                b"\xc5" + struct.pack(">H", n) if n < 65536 else b"\xc6" + struct.pack(">I", n))
        return head + bytes(obj)
    if isinstance(obj, (str, bytes)):
        data = obj.encode() if isinstance(obj, str) else bytes(obj)
        n = len(data)
        head = (bytes([0xA0 | n]) if n < 32 else
                b"\xda" + struct.pack(">H", n) if n < 65536 else b"\xdb" + struct.pack(">I", n))
        return head + data
    if isinstance(obj, (list, tuple)):
        n = len(obj)
        head = (bytes([0x90 | n]) if n < 16 else
                b"\xdc" + struct.pack(">H", n) if n < 65536 else b"\xdd" + struct.pack(">I", n))
        return head + b"".join(mp(v) for v in obj)
    items = obj.items if isinstance(obj, Pairs) else list(obj.items()) if isinstance(obj, dict) \
        else None
    if items is None:
        raise TypeError(f"cannot encode {type(obj).__name__}")
    n = len(items)
    head = (bytes([0x80 | n]) if n < 16 else
            b"\xde" + struct.pack(">H", n) if n < 65536 else b"\xdf" + struct.pack(">I", n))
    return head + b"".join(mp(k) + mp(v) for k, v in items)


def msg(kind: int, body: Any) -> bytes:
    """A memberlist message: type byte + msgpack body."""
    return bytes([kind]) + mp(body)


def serf_msg(kind: int, body: Any) -> bytes:
    """A serf message carried in a memberlist user message."""
    return bytes([USER, kind]) + mp(body)


def compound(parts: list[bytes]) -> bytes:
    return (bytes([COMPOUND, len(parts)]) + b"".join(struct.pack(">H", len(p)) for p in parts)
            + b"".join(parts))


def nested(depth: int) -> Raw:
    """An array nested ``depth`` deep: cheap to send, deep for a recursive decoder."""
    return Raw(b"\x91" * depth + b"\xc0")


def deep_map(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# Wrong-but-decodable values tried in every field.
HOSTILE_VALUES: list[tuple[str, Any]] = [
    ("u64max", U64_MAX), ("u32max+1", 2**32), ("neg", -1), ("i64min", -(2**63)),
    ("port70000", U16_OVERFLOW), ("float", 1.5), ("true", True), ("nil", None),
    ("str", "x"), ("bin", Bin(b"\x01\x02")), ("int-list", [1, 2, 3]), ("map", {"a": 1}),
    ("list-key-map", Pairs([([1, 2], 1)])), ("map-key-map", Pairs([({"a": 1}, 2)])),
    ("deep-map", deep_map(60)), ("deep-array", nested(3000)), ("big-str", "z" * 60000),
    ("empty-list", []), ("list-of-maps", [{"a": [1, {"b": None}]}] * 3),
]


def hostile_variants(base: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every field of ``base`` replaced by every hostile value, then whole-body replacements."""
    for key in base:
        for label, value in HOSTILE_VALUES:
            yield f"{key}={label}", {**base, key: value}
    for label, value in HOSTILE_VALUES:
        yield f"body={label}", value


# ---------------------------------------------------------------------------------------------
# LZW in Go's compress/lzw format (LSB, 8-bit literals): own writer and reader

_CLEAR, _EOF = 256, 257
_HI_LIMIT = 4000  # emit a clear well before the 12-bit table fills


class LZWWriter:
    """Emits codes while tracking exactly the table state Go's reader will be in."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.bits = 0
        self.nbits = 0
        self.width = 9
        self.hi = _EOF
        self.emit(_CLEAR)

    def emit(self, code: int) -> None:
        self.bits |= code << self.nbits
        self.nbits += self.width
        while self.nbits >= 8:
            self.out.append(self.bits & 0xFF)
            self.bits >>= 8
            self.nbits -= 8
        if code == _CLEAR:
            self.width, self.hi = 9, _EOF
            return
        if code == _EOF:
            return
        self.hi += 1
        if self.hi >= 1 << self.width:
            if self.width == 12:
                self.hi -= 1
            else:
                self.width += 1

    def literal(self, data: bytes) -> None:
        for byte in data:
            if self.hi >= _HI_LIMIT:
                self.emit(_CLEAR)
            self.emit(byte)

    def generic(self, data: bytes) -> None:
        """Ordinary greedy LZW (fine for inputs up to a few MiB)."""
        self.emit(_CLEAR)
        table: dict[tuple[int, int], int] = {}
        code = -1
        for byte in data:
            if code < 0:
                code = byte
                continue
            found = table.get((code, byte))
            if found is not None:
                code = found
                continue
            self.emit(code)
            if self.hi >= _HI_LIMIT:
                self.emit(_CLEAR)
                table.clear()
            else:
                table[(code, byte)] = self.hi
            code = byte
        if code >= 0:
            self.emit(code)

    def run(self, byte: int, count: int) -> None:
        """``count`` copies of ``byte``: code k after a clear stands for k+2 copies (KwKwK)."""
        while count > 0:
            self.emit(_CLEAR)
            self.emit(byte)
            count -= 1
            cur = 1
            while count > 0 and self.hi < _HI_LIMIT:
                if cur + 1 <= count:
                    self.emit(self.hi)
                    cur += 1
                    count -= cur
                else:
                    self.emit(byte if count == 1 else 258 + count - 2)
                    count = 0

    def finish(self) -> bytes:
        self.emit(_EOF)
        if self.nbits:
            self.out.append(self.bits & 0xFF)
        return bytes(self.out)


def lzw(data: bytes) -> bytes:
    w = LZWWriter()
    w.generic(data)
    return w.finish()


def lzw_run(byte: int, count: int, prefix: bytes = b"") -> bytes:
    w = LZWWriter()
    w.literal(prefix)
    w.run(byte, count)
    return w.finish()


def unlzw(data: bytes, limit: int = 64 * MIB) -> bytes:
    """Reader for the agent's replies (push-pull state is always compressed by serf)."""
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    out = bytearray()
    bits = nbits = pos = 0
    width, hi, prev = 9, _EOF, None
    while len(out) <= limit:
        while nbits < width:
            if pos >= len(data):
                raise ValueError("lzw: unexpected EOF")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code == _CLEAR:
            width, hi, prev = 9, _EOF, None
            del table[258:]
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR or _EOF < code < hi:
            entry = table[code]
        elif code == hi and prev is not None:
            entry = prev + prev[:1]
        else:
            raise ValueError(f"lzw: invalid code {code}")
        out += entry
        if prev is not None:
            table.append(prev + entry[:1])
        prev = entry
        hi += 1
        if hi >= 1 << width:
            if width == 12:
                prev, hi = None, hi - 1
            else:
                width += 1
    raise ValueError("lzw: reply too large")


def compress_msg(inner: bytes, buf: bytes | None = None) -> bytes:
    return msg(COMPRESS, {"Algo": 0, "Buf": lzw(inner) if buf is None else buf})


# ---------------------------------------------------------------------------------------------
# AES-GCM exactly as memberlist frames it (the attacker holds the cluster key)


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, aad or None)


def unseal(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    plain = AESGCM(key).decrypt(blob[1:13], blob[13:], aad or None)
    if blob[0] == 0:  # version 0 is PKCS#7 padded
        plain = plain[:-plain[-1]]
    return plain


def tcp_frame(key: bytes | None, payload: bytes) -> bytes:
    """A stream payload as sent on TCP: encrypted frames carry their 5-byte header as AAD."""
    if key is None:
        return payload
    header = bytes([ENCRYPT]) + struct.pack(">I", 1 + 12 + len(payload) + 16)
    return header + seal(key, payload, header)


def flatten(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """Plain messages inside a received UDP packet (CRC, compound and compress unwrapped)."""
    if not data or depth > 8:
        return
    if data[0] == 12 and len(data) >= 5:
        yield from flatten(data[5:], depth + 1)
    elif data[0] == COMPOUND:
        n = data[1]
        off = 2 + 2 * n
        for i in range(n):
            (length,) = struct.unpack_from(">H", data, 2 + 2 * i)
            yield from flatten(data[off:off + length], depth + 1)
            off += length
    elif data[0] == COMPRESS:
        body = msgpack.unpackb(data[1:], raw=True, strict_map_key=False)
        yield from flatten(unlzw(body[b"Buf"]), depth + 1)
    else:
        yield data


# ---------------------------------------------------------------------------------------------
# the target and the attacker's sockets


@dataclass
class Target:
    """One agent under attack, as the adversary sees it."""

    kind: str
    agent: Agent
    key: bytes | None
    prefix: str
    profile: str = "lan"  # its timing profile (-profile)

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def join_bound(self) -> float:
        return TCP_TIMEOUT_S[self.profile] + JOIN_SLACK_S

    @property
    def ip(self) -> str:
        return self.agent.ip

    @property
    def addr(self) -> tuple[str, int]:
        return (self.agent.ip, self.agent.port)

    @property
    def rpc_addr(self) -> tuple[str, int]:
        return (self.agent.ip, self.agent.rpc_port)

    @property
    def pid(self) -> int:
        return self.agent.proc.pid

    def attacker_ip(self, offset: int = 0) -> str:
        return f"{self.prefix}.{ATTACKER_HOST + offset}"

    def udp_payload(self, data: bytes) -> bytes:
        return seal(self.key, data) if self.key else data

    def open_udp(self, offset: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.attacker_ip(offset), 0))
        return sock

    def tcp(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(self.addr, timeout=timeout)
        return sock


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Killed(Exception):
    """In explain mode: frame number ``args[0]`` (described by ``args[1]``) killed the agent."""


class Sender:
    """Counts frames and bytes an attack puts on the wire.

    In explain mode it skips the first ``skip`` frames and checks after each frame whether the
    agent died, raising :class:`Killed` naming the frame (its ``label`` or its first bytes).
    """

    def __init__(self, target: Target, explain: bool = False, skip: int = 0) -> None:
        self.target = target
        self.frames = 0
        self.bytes = 0
        self.explain = explain
        self.skip = skip
        self.index = 0
        self.label = ""
        self.extra: dict[str, Any] = {}  # figures an attack measures (CPU, join times, ...)
        self._udp = target.open_udp()

    def _skipped(self) -> bool:
        self.index += 1
        return self.index <= self.skip

    def _check(self, data: bytes) -> None:
        if self.explain:
            time.sleep(0.05)
            if not self.target.agent.alive():
                raise Killed(self.index, self.label or data[:40].hex())

    def udp(self, data: bytes, encrypt: bool = True) -> None:
        if self._skipped():
            return
        payload = self.target.udp_payload(data) if encrypt else data
        try:
            self._udp.sendto(payload, self.target.addr)
        except OSError:
            return  # e.g. EMSGSIZE once encryption pushes a packet past 65507 bytes
        self.frames += 1
        self.bytes += len(payload)
        self._check(data)

    def udp_ip(self) -> tuple[str, int]:
        return self._udp.getsockname()

    def stream(self, payload: bytes, encrypt: bool = True, linger: float = 0.0,
               hold: list[socket.socket] | None = None) -> None:
        """One TCP connection carrying ``payload``; kept open in ``hold`` if given."""
        if self._skipped():
            return
        data = tcp_frame(self.target.key, payload) if encrypt else payload
        try:
            sock = self.target.tcp()
        except OSError:
            return
        try:
            sock.settimeout(10)
            sock.sendall(data)
            self.frames += 1
            self.bytes += len(data)
            if linger:
                sock.settimeout(linger)
                try:
                    sock.recv(65536)
                except OSError:
                    pass
        except OSError:
            pass
        if hold is not None:
            hold.append(sock)
        else:
            sock.close()
        self._check(payload)

    def count(self, frames: int, nbytes: int) -> None:
        self.frames += frames
        self.bytes += nbytes

    def close(self) -> None:
        self._udp.close()


# ---------------------------------------------------------------------------------------------
# health probes


_seq = iter(range(1, 2**31))
_seq_lock = threading.Lock()


def next_seq() -> int:
    with _seq_lock:
        return next(_seq)


def udp_ping(target: Target, timeout: float = HEALTH_TIMEOUT_S,
             sock: socket.socket | None = None) -> float | None:
    """Seconds until the agent acks a ping naming it, or None."""
    own = sock or target.open_udp(1)
    try:
        ip, port = own.getsockname()
        seq = next_seq()
        ping = msg(PING, {"Node": target.name, "SeqNo": seq,
                          "SourceAddr": socket.inet_aton(ip), "SourceNode": "adv-prober",
                          "SourcePort": port})
        start = time.monotonic()
        own.sendto(target.udp_payload(ping), target.addr)
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            own.settimeout(left)
            try:
                data, _ = own.recvfrom(65536)
            except OSError:
                return None
            try:
                plain = unseal(target.key, data) if target.key else data
                for part in flatten(plain):
                    if part[0] == ACK:
                        body = msgpack.unpackb(part[1:], raw=True, strict_map_key=False)
                        if body.get(b"SeqNo") == seq:
                            return time.monotonic() - start
            except Exception:  # noqa: BLE001 - a reply we cannot read is not an ack
                continue
        return None
    finally:
        if sock is None:
            own.close()


def minimal_push_pull(join: bool = False, nodes: list[Any] | None = None,
                      user: bytes | None = None) -> bytes:
    """A valid push-pull: no nodes of our own and an empty serf state."""
    nodes = nodes or []
    if user is None:
        user = bytes([S_PUSH_PULL]) + mp({"EventLTime": 1, "Events": [], "LTime": 1,
                                          "LeftMembers": [], "QueryLTime": 1,
                                          "StatusLTimes": {}})
    return (bytes([PUSH_PULL]) + mp({"Join": join, "Nodes": len(nodes),
                                     "UserStateLen": len(user)})
            + b"".join(mp(n) for n in nodes) + user)


def read_stream_reply(sock: socket.socket, key: bytes | None, deadline: float) -> bytes:
    """Read one stream message (decrypted and decompressed) without waiting for EOF."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete reply")
        sock.settimeout(left)
        chunk = sock.recv(1 << 20)
        buf += chunk
        done = not chunk
        try:
            if key is not None:
                if len(buf) >= 5 and len(buf) >= 5 + struct.unpack_from(">I", buf, 1)[0]:
                    plain = unseal(key, buf[5:5 + struct.unpack_from(">I", buf, 1)[0]], buf[:5])
                    return plain if plain[:1] != bytes([COMPRESS]) else next(flatten(plain))
            elif buf[:1] == bytes([COMPRESS]):
                unp = msgpack.Unpacker(raw=True, strict_map_key=False)
                unp.feed(buf[1:])
                body = unp.unpack()
                return unlzw(body[b"Buf"])
            elif buf[:1] == bytes([PUSH_PULL]):
                unp = msgpack.Unpacker(raw=True, strict_map_key=False)
                unp.feed(buf[1:])
                unp.unpack()
                return buf
            elif buf:
                return buf
        except msgpack.OutOfData:
            pass
        if done:
            raise ConnectionError(f"stream closed after {len(buf)} bytes")


def _within(timeout: float, attempt: Callable[[float], str | None]) -> str | None:
    """Retry ``attempt(seconds_left)`` until it succeeds or ``timeout`` has passed.

    "Answers within 2 s" means the agent serves a request within that window; one refused
    connection while it drains a burst is not yet a failure, 2 s of refusals are.
    """
    deadline = time.monotonic() + timeout
    why: str | None = "no attempt"
    while (left := deadline - time.monotonic()) > 0.05:
        why = attempt(left)
        if why is None:
            return None
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return why


def push_pull_probe(target: Target, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """None if a push-pull (Join=false) gets a push-pull reply in time, else why not."""

    def attempt(left: float) -> str | None:
        deadline = time.monotonic() + left
        try:
            with socket.create_connection(target.addr, timeout=left) as sock:
                sock.sendall(tcp_frame(target.key, minimal_push_pull()))
                reply = read_stream_reply(sock, target.key, deadline)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            return f"push-pull: {type(exc).__name__}: {exc}"
        if reply[:1] != bytes([PUSH_PULL]):
            return f"push-pull: reply type {reply[:1].hex()}"
        return None

    return _within(timeout, attempt)


class Rpc:
    """Minimal serf IPC client (own code so a broken agent cannot break the prober)."""

    _BODY = {"members", "members-filtered", "join", "stats", "get-coordinate"}

    def __init__(self, addr: tuple[str, int], timeout: float = HEALTH_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.unp = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def _read(self, deadline: float) -> Any:
        while True:
            try:
                return self.unp.unpack()
            except msgpack.OutOfData:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("RPC reply timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("RPC connection closed")
            self.unp.feed(chunk)

    def call(self, command: str, body: Any = None, timeout: float | None = None) -> Any:
        self.seq += 1
        data = msgpack.packb({"Command": command, "Seq": self.seq}, use_bin_type=True)
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        self.sock.sendall(data)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            header = self._read(deadline)
            if isinstance(header, dict) and header.get("Seq") == self.seq:
                break
        result = self._read(deadline) if command in self._BODY else None
        if header.get("Error"):
            raise RuntimeError(f"RPC {command}: {header['Error']}")
        return result

    def close(self) -> None:
        self.sock.close()


def rpc_probe(target: Target, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    def attempt(left: float) -> str | None:
        try:
            rpc = Rpc(target.rpc_addr, left)
            try:
                members = rpc.call("members")
                if not any(m.get("Name") == target.name for m in members.get("Members", [])):
                    return "rpc: members does not list the agent itself"
                rpc.call("event", {"Name": "adv-health", "Payload": b"", "Coalesce": True})
            finally:
                rpc.close()
        except Exception as exc:  # noqa: BLE001
            return f"rpc: {type(exc).__name__}: {exc}"
        return None

    return _within(timeout, attempt)


def check_health(target: Target) -> list[str]:
    """Every health criterion the agent misses right now (empty list = healthy)."""
    if not target.agent.alive():
        return [f"process exited with {target.agent.proc.returncode}"]
    problems: list[str] = []
    results: dict[str, str | None] = {}

    def ping() -> None:
        # Resent every 0.5 s: a datagram lost in a flood's backlog is not a silence.
        results["ping"] = _within(HEALTH_TIMEOUT_S, lambda left: None if udp_ping(
            target, min(0.5, left)) is not None else "udp ping: no ack within 2 s")

    def pp() -> None:
        results["pp"] = push_pull_probe(target)

    def rpc() -> None:
        results["rpc"] = rpc_probe(target)

    threads = [threading.Thread(target=f, daemon=True) for f in (ping, pp, rpc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HEALTH_TIMEOUT_S * 3)
    for name in ("ping", "pp", "rpc"):
        if name not in results:
            problems.append(f"{name}: probe hung")
        elif results[name]:
            problems.append(results[name])
    rss = rss_mib(target.pid)
    if rss > RSS_BOUND_MIB:
        problems.append(f"RSS {rss:.0f} MiB > {RSS_BOUND_MIB} MiB")
    if not target.agent.alive():
        problems.append(f"process exited with {target.agent.proc.returncode}")
    return problems


class Monitor:
    """Pings every PING_INTERVAL_S and samples RSS while an attack runs."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.worst: float = 0.0  # slowest answered ping
        self.silence: float = 0.0  # longest time without any ack
        self.lost = 0
        self.pings = 0
        self.peak_rss = rss_mib(target.pid)
        self.paused = False
        self._last_ack = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        sock = self.target.open_udp(2)
        try:
            while not self._stop.is_set():
                if self.paused:
                    self._stop.wait(PING_INTERVAL_S)
                    continue
                self.peak_rss = max(self.peak_rss, rss_mib(self.target.pid))
                latency = udp_ping(self.target, HEALTH_TIMEOUT_S, sock)
                if self.paused:
                    continue
                self.pings += 1
                now = time.monotonic()
                if latency is None:
                    self.lost += 1
                else:
                    self.worst = max(self.worst, latency)
                    self._last_ack = now
                self.silence = max(self.silence, now - self._last_ack)
                self._stop.wait(PING_INTERVAL_S)
        finally:
            sock.close()

    def pause(self) -> None:
        """An attack restarts the agent on purpose: that downtime is not a silence."""
        self.paused = True

    def resume(self, target: Target) -> None:
        self.target = target
        self._last_ack = time.monotonic()
        self.paused = False

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HEALTH_TIMEOUT_S + 1)


# ---------------------------------------------------------------------------------------------
# the agents under attack


@dataclass
class Sizes:
    """How hard each attack pushes; QUICK keeps the e2e test within minutes."""

    fuzz_streams: int
    trickle_bytes: int
    trickle_chunk: int
    trickle_pause: float
    idle_streams: int
    big_stream: int
    rpc_conns: int
    rpc_bytes: int
    rpc_big_conns: int
    flood_events: int
    flood_payload: int
    monitor_seconds: float
    million: int
    # The timing profile of the target the "peers" group attacks: what its joins wait for a
    # silent peer (TCPTimeout) is the whole attack's duration, and its bound (Target.join_bound).
    peers_profile: str


FULL = Sizes(fuzz_streams=1000, trickle_bytes=16 * MIB, trickle_chunk=16 * 1024,
             trickle_pause=0.005, idle_streams=200, big_stream=64 * MIB, rpc_conns=200,
             rpc_bytes=16 * MIB, rpc_big_conns=4, flood_events=10000, flood_payload=30000,
             monitor_seconds=5.0, million=10**6, peers_profile="lan")
QUICK = Sizes(fuzz_streams=300, trickle_bytes=16 * MIB, trickle_chunk=16 * 1024,
              trickle_pause=0.002, idle_streams=200, big_stream=64 * MIB, rpc_conns=200,
              rpc_bytes=16 * MIB, rpc_big_conns=2, flood_events=4000, flood_payload=30000,
              monitor_seconds=2.0, million=10**6, peers_profile="local")


class Arena:
    """Starts targets (one kind, plain or encrypted) and second agents on one loopback prefix."""

    def __init__(self, tmp: Path, kind: str, encrypted: bool, sizes: Sizes) -> None:
        self.tmp = tmp
        self.kind = kind
        self.key = os.urandom(32) if encrypted else None
        self.sizes = sizes
        self.current: Target | None = None  # the target now, if an attack restarted it
        self.monitor: Monitor | None = None  # the prober of the running attack
        self.profile = "lan"  # the timing profile targets start with (set per group)
        self.cluster = Cluster(tmp)
        self.prefix = self.cluster.prefix
        self._names = iter(range(1, 10**6))
        self.slow = tmp / "advflood.sh"
        self.slow.write_text("#!/bin/sh\nsleep 1\n")
        self.stuck = tmp / "advstuck.sh"
        self.stuck.write_text("#!/bin/sh\nsleep 30\n")
        for script in (self.slow, self.stuck):
            script.chmod(0o755)
        self.config = tmp / "adv-extra.json"
        self.config.write_text(json.dumps({"handler_timeout": f"{HANDLER_TIMEOUT_S}s"}))

    @property
    def mode(self) -> str:
        return "encrypted" if self.key else "plain"

    def agent_args(self, snapshot: Path | None = None) -> list[str]:
        args = [f"-tag=long={LONG_TAG}", "-tag=role=adv",
                f"-event-handler=user:advflood={self.slow}",
                f"-event-handler=user:advstuck={self.stuck}"]
        if self.key:
            args.append(f"-encrypt={base64.b64encode(self.key).decode()}")
        if snapshot:
            args.append(f"-snapshot={snapshot}")
        if self.profile != "lan":
            args.append(f"-profile={self.profile}")
        if self.kind == "pyserf":
            args.append(f"-config-file={self.config}")
        return args

    def start_target(self, name: str | None = None, ip: str | None = None,
                     snapshot: Path | None = None, extra: list[str] | None = None) -> Target:
        name = name or f"t{next(self._names)}"
        snapshot = snapshot or self.tmp / f"{name}.snap"
        agent = self.cluster.start(self.kind, name, *self.agent_args(snapshot), *(extra or []),
                                   ip=ip)
        return Target(self.kind, agent, self.key, self.prefix, self.profile)

    def restart(self, target: Target, sig: int = signal.SIGTERM) -> Target:
        """Stop ``target`` and start it again with the same name, address and snapshot."""
        monitor = self.monitor
        if monitor:
            monitor.pause()
        if target.agent.alive():
            self.cluster.stop(target.agent, sig)
        new = self.start_target(target.name, target.ip, self.tmp / f"{target.name}.snap")
        if monitor:
            monitor.resume(new)
        return new

    def second_joins(self, target: Target) -> str | None:
        """None if a fresh agent can join ``target`` and both see each other alive."""
        name = f"j{next(self._names)}"
        args = [f"-encrypt={base64.b64encode(self.key).decode()}"] if self.key else []
        try:
            other = self.cluster.start(self.kind, name, *args, f"-join={target.ip}:7946")
        except AssertionError as exc:
            return f"second agent failed to join: {str(exc)[-300:]}"
        other_t = Target(self.kind, other, self.key, self.prefix)
        try:
            deadline = time.monotonic() + SECOND_JOIN_TIMEOUT_S
            while time.monotonic() < deadline:
                if both_alive(target, other_t):
                    return None
                time.sleep(0.1)
            errors = [line.strip() for line in other.log().splitlines()
                      if "[ERR]" in line or "[WARN]" in line][-2:]
            return (f"second agent did not converge with the target (target sees it "
                    f"{member_status(target, name)}, it sees the target "
                    f"{member_status(other_t, target.name)}; its log: {errors})")
        finally:
            self.cluster.stop(other, signal.SIGKILL)

    def close(self) -> None:
        self.cluster.close()


def member_status(target: Target, name: str, timeout: float = 5.0) -> str | None:
    try:
        rpc = Rpc(target.rpc_addr, timeout)
        try:
            for m in rpc.call("members")["Members"]:
                if m.get("Name") == name:
                    return m.get("Status")
        finally:
            rpc.close()
    except Exception:  # noqa: BLE001
        return None
    return None


def both_alive(a: Target, b: Target) -> bool:
    return member_status(a, b.name) == "alive" and member_status(b, a.name) == "alive"


# ---------------------------------------------------------------------------------------------
# attacks: each takes (arena, target, sender) and may return a cleanup to run after the
# health check (resources it holds open during the check). Attacks with their own agents
# raise Broken for a failed functional check.


class Broken(Exception):
    """A functional check inside an attack failed."""


Cleanup = Callable[[], None] | None
AttackFn = Callable[[Arena, Target, Sender], Cleanup]


def alive_body(name: str, ip: str, port: Any, inc: Any = 1, meta: bytes = b"\xff\x80") -> dict:
    return {"Addr": socket.inet_aton(ip), "Incarnation": inc, "Meta": meta, "Node": name,
            "Port": port, "Vsn": VSN}


def query_body(target: Target, ip: str, port: Any, ltime: Any = 1, filters: Any = None,
               name: str = "advq", flags: int = 1) -> dict:
    return {"Addr": socket.inet_aton(ip), "Filters": filters, "Flags": flags,
            "ID": random.randrange(1, 2**31), "LTime": ltime, "Name": name, "Payload": b"p",
            "Port": port, "RelayFactor": 0, "SourceNode": "adv", "Timeout": 2 * 10**9}


def ping_source_port_70000(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip, _ = s.udp_ip()
    s.udp(msg(PING, {"Node": t.name, "SeqNo": 1, "SourceAddr": socket.inet_aton(ip),
                     "SourceNode": "adv", "SourcePort": U16_OVERFLOW}))
    return None


def ping_source_port_negative(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip, _ = s.udp_ip()
    s.udp(msg(PING, {"Node": t.name, "SeqNo": 2, "SourceAddr": socket.inet_aton(ip),
                     "SourceNode": "adv", "SourcePort": -1}))
    return None


def alive_port_70000(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Alives with ports 70000 and -1; a peer of the target must survive the re-gossip too."""
    peer = arena.start_target()
    try:
        if not _join_pair(peer, t):
            raise Broken("setup: peer did not join the target")
        s.udp(msg(ALIVE, alive_body("adv-port", t.attacker_ip(10), U16_OVERFLOW)))
        s.udp(msg(ALIVE, alive_body("adv-port-neg", t.attacker_ip(11), -1)))
        time.sleep(1.5)  # let it be gossiped, pushed and probed
        problems = check_health(peer)
        if problems:
            raise Broken("the peer that heard the re-gossip broke: " + "; ".join(problems))
    finally:
        arena.cluster.stop(peer.agent, signal.SIGKILL)
    return None


def indirect_ping_bad_target(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip, port = s.udp_ip()
    base = {"Nack": True, "Node": "adv-x", "Port": 7946, "SeqNo": 7,
            "SourceAddr": socket.inet_aton(ip), "SourceNode": "adv", "SourcePort": port,
            "Target": socket.inet_aton(t.attacker_ip(12))}
    for change in ({"Port": U16_OVERFLOW}, {"Port": -1}, {"Target": b"\x01\x02"},
                   {"Target": b"\x00" * 17}, {"Target": 5}, {"SourcePort": U16_OVERFLOW},
                   {"Target": b""}, {"SourceAddr": b"\x01"}):
        s.udp(msg(INDIRECT, {**base, **change}))
    time.sleep(1.0)  # the relay probes and nacks within the probe timeout
    return None


def query_port_70000(arena: Arena, t: Target, s: Sender) -> Cleanup:
    for port in (U16_OVERFLOW, -1):
        s.udp(serf_msg(S_QUERY, query_body(t, s.udp_ip()[0], port, ltime=random.randrange(2, 50))))
    s.udp(serf_msg(S_QUERY, {**query_body(t, s.udp_ip()[0], 7946, ltime=60), "Addr": b"\x01"}))
    time.sleep(0.5)
    return None


def relay_port_70000(arena: Arena, t: Target, s: Sender) -> Cleanup:
    inner = serf_msg(S_RESPONSE, {"Flags": 0, "From": "adv", "ID": 1, "LTime": 1,
                                  "Payload": b""})[1:]
    for dest in ({"IP": socket.inet_aton(t.attacker_ip(13)), "Port": U16_OVERFLOW, "Zone": ""},
                 {"IP": socket.inet_aton(t.attacker_ip(13)), "Port": -1, "Zone": ""},
                 {"IP": b"\x01", "Port": 7946, "Zone": ""}, {"IP": 7, "Port": "x"}):
        s.udp(bytes([USER, S_RELAY]) + mp({"DestAddr": dest, "DestName": "adv"}) + inner)
    return None


def _memberlist_bases(t: Target, ip: str, port: int) -> dict[int, dict[str, Any]]:
    return {
        PING: {"Node": t.name, "SeqNo": 1, "SourceAddr": socket.inet_aton(ip),
               "SourceNode": "adv", "SourcePort": port},
        INDIRECT: {"Nack": True, "Node": "adv-wt", "Port": 7946, "SeqNo": 1,
                   "SourceAddr": socket.inet_aton(ip), "SourceNode": "adv",
                   "SourcePort": port, "Target": socket.inet_aton(t.attacker_ip(20))},
        ACK: {"Payload": b"\x01", "SeqNo": 1},
        NACK: {"SeqNo": 1},
        SUSPECT: {"From": "adv", "Incarnation": 1, "Node": "adv-wt"},
        ALIVE: alive_body("adv-wt", t.attacker_ip(20), 7946),
        DEAD: {"From": "adv", "Incarnation": 1, "Node": "adv-wt"},
        COMPRESS: {"Algo": 0, "Buf": lzw(msg(NACK, {"SeqNo": 1}))},
        ERR: {"Error": "adv"},
    }


def _send_variants(s: Sender, bases: dict[int, dict[str, Any]],
                   encode: Callable[[int, Any], bytes]) -> None:
    """One datagram per hostile variant, so one bad field cannot mask another."""
    for kind, base in bases.items():
        for label, body in hostile_variants(base):
            s.label = f"type {kind} {label}"
            s.udp(encode(kind, body))
            time.sleep(0.0005)


def wrong_types_memberlist(arena: Arena, t: Target, s: Sender) -> Cleanup:
    _send_variants(s, _memberlist_bases(t, *s.udp_ip()), msg)
    return None


def _serf_bases(t: Target, ip: str, port: int) -> dict[int, dict[str, Any]]:
    return {
        S_LEAVE: {"LTime": 3, "Node": "adv-wt", "Prune": False},
        S_JOIN: {"LTime": 3, "Node": "adv-wt"},
        S_EVENT: {"CC": False, "LTime": 3, "Name": "advwt", "Payload": b"x"},
        S_QUERY: query_body(t, ip, port, ltime=3),
        S_RESPONSE: {"Flags": 0, "From": "adv", "ID": 1, "LTime": 3, "Payload": b""},
        S_KEY_REQUEST: {"Key": b"k" * 32},
        S_RELAY: {"DestAddr": {"IP": socket.inet_aton(ip), "Port": port, "Zone": ""},
                  "DestName": "adv"},
        S_PUSH_PULL: {"EventLTime": 1, "Events": [], "LTime": 1, "LeftMembers": [],
                      "QueryLTime": 1, "StatusLTimes": {}},
    }


def wrong_types_serf(arena: Arena, t: Target, s: Sender) -> Cleanup:
    _send_variants(s, _serf_bases(t, *s.udp_ip()), serf_msg)
    return None


def wrong_types_push_pull(arena: Arena, t: Target, s: Sender) -> Cleanup:
    node = {"Addr": socket.inet_aton(t.attacker_ip(21)), "Incarnation": 1, "Meta": b"\xff\x80",
            "Name": "adv-pp", "Port": 7946, "State": 0, "Vsn": VSN}
    user = _serf_bases(t, *s.udp_ip())[S_PUSH_PULL]
    events = [{"Events": [{"Name": "e", "Payload": b""}], "LTime": 1}]
    extra_user = [{**user, "Events": events}, {**user, "Events": [{"Events": 5, "LTime": -1}]},
                  {**user, "StatusLTimes": {"n": [1]}}, {**user, "LeftMembers": [{"a": 1}]},
                  {**user, "StatusLTimes": Pairs([([1], 1)])}]
    payloads = []
    for label, body in hostile_variants(node):
        payloads.append((f"node {label}", minimal_push_pull(nodes=[body])))
    for label, body in [*hostile_variants(user),
                        *((f"extra {i}: {u}", u) for i, u in enumerate(extra_user))]:
        payloads.append((f"serf state {label}",
                         minimal_push_pull(user=bytes([S_PUSH_PULL]) + mp(body))))
    for label, value in HOSTILE_VALUES:
        for key in ("Join", "Nodes", "UserStateLen"):
            header = {"Join": False, "Nodes": 0, "UserStateLen": 0, key: value}
            payloads.append((f"header {key}={label}",
                             bytes([PUSH_PULL]) + mp(header) + b"\x80" * 4))
        payloads.append((f"header={label}", bytes([PUSH_PULL]) + mp(value)))
    for label, payload in payloads:
        s.label = f"push-pull {label}"
        s.stream(payload)
    return None


def version_poison(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Members whose Vsn ranges are empty or zero, by gossip and by push-pull.

    memberlist ignores an alive whose protocol min/max is 0 or inverted; accepting one
    makes every later push-pull merge fail its cluster-wide version check, so no new agent
    can join (the group's join check shows it).
    """
    bad = [bytes([1, 0, 2, 2, 5, 5]), bytes([0, 5, 2, 2, 5, 5]), bytes([5, 1, 2, 2, 5, 5]),
           bytes([1, 5, 2, 2, 0, 5]), bytes([1, 5, 2, 5, 2, 5]), bytes([1, 5, 9, 2, 5, 9]),
           b"\x01", b""]
    for i, vsn in enumerate(bad):
        s.label = f"alive Vsn={vsn.hex()}"
        s.udp(msg(ALIVE, {**alive_body(f"adv-vsn{i}", t.attacker_ip(24 + i), 7946),
                          "Vsn": vsn}))
        node = {"Addr": socket.inet_aton(t.attacker_ip(32 + i)), "Incarnation": 1,
                "Meta": b"\xff\x80", "Name": f"adv-vsnpp{i}", "Port": 7946, "State": 0,
                "Vsn": vsn}
        s.label = f"push-pull node Vsn={vsn.hex()}"
        s.stream(minimal_push_pull(nodes=[node]), linger=0.3)
    time.sleep(0.5)
    return None


def tcp_stream_fuzz(arena: Arena, t: Target, s: Sender) -> Cleanup:
    rng = random.Random(8)
    node = {"Addr": socket.inet_aton(t.attacker_ip(22)), "Incarnation": 1, "Meta": b"\xff\x80",
            "Name": "adv-fz", "Port": 7946, "State": 0, "Vsn": VSN}
    seeds = [minimal_push_pull(nodes=[node]), minimal_push_pull(join=True),
             msg(PING, {"Node": t.name, "SeqNo": 9}),
             bytes([USER]) + mp({"UserMsgLen": 12}) + serf_msg(S_JOIN, {"LTime": 1, "Node": "z"})]
    headers = [bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": 2**31, "UserStateLen": 0}),
               bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": 0, "UserStateLen": 2**62}),
               bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": -5, "UserStateLen": -5}),
               bytes([USER]) + mp({"UserMsgLen": 2**40}), bytes([ENCRYPT, 0xFF, 0xFF, 0xFF, 0xFF]),
               bytes([COMPRESS]) + b"\xdb\xff\xff\xff\xff"]
    for i in range(arena.sizes.fuzz_streams):
        data = bytearray(rng.choice(seeds))
        op = i % 6
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data = data[:rng.randrange(1, len(data))]
        elif op == 2:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 3:
            data = bytearray([rng.randrange(256)]) + rng.randbytes(rng.randint(0, 2048))
        elif op == 4:
            data = bytearray(compress_msg(bytes(data)))
            data[rng.randrange(1, len(data))] = rng.randrange(256)
        else:
            data = bytearray(rng.choice(headers))
        s.label = f"fuzz stream {i} (mutation {op}): {bytes(data[:40]).hex()}"
        # Some streams skip encryption: a stranger without the key must be refused cleanly.
        s.stream(bytes(data), encrypt=rng.random() < 0.9)
    return None


def million_nodes_header(arena: Arena, t: Target, s: Sender) -> Cleanup:
    hold: list[socket.socket] = []
    header = {"Join": False, "Nodes": arena.sizes.million, "UserStateLen": 0}
    s.stream(bytes([PUSH_PULL]) + mp(header), hold=hold)
    return lambda: [x.close() for x in hold]


def million_nodes_bodies(arena: Arena, t: Target, s: Sender) -> Cleanup:
    n = arena.sizes.million
    header = {"Join": False, "Nodes": n, "UserStateLen": 0}
    s.stream(bytes([PUSH_PULL]) + mp(header) + b"\x80" * n, linger=3.0)
    return None


def push_pull_trickle(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """16 MiB of push-pull that never completes, in small slow chunks; agent CPU measured."""
    size, chunk = arena.sizes.trickle_bytes, arena.sizes.trickle_chunk
    node = alive_body("adv-tr", t.attacker_ip(23), 7946)
    node = {"Addr": node["Addr"], "Incarnation": 1, "Meta": b"\xff\x80", "Name": "n" * 1000,
            "Port": 7946, "State": 0, "Vsn": VSN}
    one = mp(node)
    count = size // len(one) + 2
    body = bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": count, "UserStateLen": 0})
    body += one * (count - 1)  # one node short: the stream never completes
    if t.key:
        header = bytes([ENCRYPT]) + struct.pack(">I", len(body) + 29 + 1024)
        data = header + seal(t.key, body, header)[:len(body)]
    else:
        data = body
    sock = t.tcp()
    cpu0 = cpu_seconds(t.pid)
    try:
        for off in range(0, len(data), chunk):
            sock.sendall(data[off:off + chunk])
            s.count(1, min(chunk, len(data) - off))
            time.sleep(arena.sizes.trickle_pause)
    except OSError:
        pass
    cpu = cpu_seconds(t.pid) - cpu0
    s.extra["cpu_s"] = round(cpu, 2)
    if cpu > TRICKLE_CPU_BOUND_S:
        sock.close()
        raise Broken(f"agent spent {cpu:.1f} s CPU on {len(data) // MIB} MiB of trickled "
                     f"stream (bound {TRICKLE_CPU_BOUND_S} s)")
    return sock.close


def idle_streams(arena: Arena, t: Target, s: Sender) -> Cleanup:
    hold = []
    for _ in range(arena.sizes.idle_streams):
        try:
            hold.append(t.tcp())
            s.count(1, 0)
        except OSError:
            break
    return lambda: [x.close() for x in hold]


def big_stream(arena: Arena, t: Target, s: Sender) -> Cleanup:
    size = arena.sizes.big_stream
    if t.key:
        head = bytes([ENCRYPT]) + struct.pack(">I", size)
    else:
        head = bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": 0, "UserStateLen": size})
    sock = t.tcp()
    sock.settimeout(5)
    zeros = bytes(MIB)
    try:
        sock.sendall(head)
        for _ in range(size // MIB):
            sock.sendall(zeros)
            s.count(1, MIB)
    except OSError:
        pass  # the agent cut us off: fine
    return sock.close


def _regex_queries(t: Target, s: Sender) -> None:
    ip, port = s.udp_ip()
    for i, (expr, tag) in enumerate((("(?:){4294967294}", "role"), ("(a*)*$", "long"),
                                     ("(x+x+)+y", "long"), ("((((", "role"))):
        filt = bytes([1]) + mp({"Expr": expr, "Tag": tag})
        s.udp(serf_msg(S_QUERY, query_body(t, ip, port, ltime=100 + i, filters=[filt],
                                           name=f"advre{i}")))


def query_filter_regex(arena: Arena, t: Target, s: Sender) -> Cleanup:
    _regex_queries(t, s)
    time.sleep(0.5)
    return None


def members_filtered_regex(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """RPC members-filtered with the same patterns (a separate connection each)."""
    for tags in ({"long": "(a*)*$"}, {"role": "(?:){4294967294}"}, {"long": "(x+x+)+y"}):
        try:
            rpc = Rpc(t.rpc_addr, 1.0)
            s.count(1, 64)
            try:
                rpc.call("members-filtered", {"Name": "", "Status": "", "Tags": tags}, 1.0)
            except Exception:  # noqa: BLE001 - an error reply or a timeout; health decides
                pass
            rpc.close()
        except OSError:
            pass
    return None


def query_filter_wrong_types(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip, port = s.udp_ip()
    filters: list[Any] = [[10**9], [2**63], [-1], [{"a": 1}], [[1, 2]], 7, {"a": 1},
                          [bytes([1]) + mp(5)], [bytes([1]) + mp({"Expr": 5, "Tag": [1]})],
                          [bytes([0]) + mp({"a": 1})], [bytes([0]) + mp([1, None, [2]])],
                          [bytes([9]) + b"zz"], [b""], [bytes([1]) + mp({"Expr": ".*"})]]
    for i, filt in enumerate(filters):
        s.label = f"query Filters={filt!r}"[:120]
        s.udp(serf_msg(S_QUERY, query_body(t, ip, port, ltime=200 + i, filters=filt,
                                           name=f"advft{i}")))
    time.sleep(0.5)
    return None


def lifecycle_after(arena: Arena, t: Target) -> Target:
    """Push-pull, tags, a new joiner, a graceful leave, then a restart from the snapshot."""
    problems = check_health(t)
    if problems:
        raise Broken("after the hostile messages: " + "; ".join(problems))
    try:
        rpc = Rpc(t.rpc_addr, 10)
        try:
            rpc.call("tags", {"Tags": {"adv": "1"}, "DeleteTags": []})
        finally:
            rpc.close()
    except Exception as exc:  # noqa: BLE001
        raise Broken(f"tag update failed: {exc}") from exc
    why = arena.second_joins(t)
    if why:
        raise Broken(why)
    if arena.monitor:
        arena.monitor.pause()  # the leave below stops the agent on purpose
    try:
        rpc = Rpc(t.rpc_addr, 10)
        try:
            rpc.call("leave", timeout=10)
        finally:
            rpc.close()
    except Exception as exc:  # noqa: BLE001
        raise Broken(f"leave failed: {exc}") from exc
    try:
        t.agent.proc.wait(15)
    except Exception as exc:  # noqa: BLE001
        raise Broken("agent did not exit after leave") from exc
    try:
        t2 = arena.restart(t)
    except AssertionError as exc:
        raise Broken(f"restart from snapshot failed: {str(exc)[-300:]}") from exc
    problems = check_health(t2)
    if problems:
        raise Broken("after restart: " + "; ".join(problems))
    why = arena.second_joins(t2)
    if why:
        raise Broken("after restart: " + why)
    return t2


def self_incarnation_overflow(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip = t.ip
    for inc in (U32_MAX, U64_MAX):
        s.udp(msg(SUSPECT, {"From": "adv", "Incarnation": inc, "Node": t.name}))
        s.udp(msg(DEAD, {"From": "adv", "Incarnation": inc, "Node": t.name}))
        s.udp(msg(ALIVE, alive_body(t.name, ip, 7946, inc=inc, meta=b"\xff\x81\xa1a\xa1b")))
        time.sleep(0.5)
    s.stream(minimal_push_pull(nodes=[{"Addr": socket.inet_aton(ip), "Incarnation": U64_MAX,
                                       "Meta": b"", "Name": t.name, "Port": 7946, "State": 2,
                                       "Vsn": VSN}]), linger=1.0)
    arena.current = lifecycle_after(arena, t)
    return None


def lamport_overflow(arena: Arena, t: Target, s: Sender) -> Cleanup:
    ip, port = s.udp_ip()
    s.udp(serf_msg(S_JOIN, {"LTime": U64_MAX, "Node": "adv-lt"}))
    s.udp(serf_msg(S_LEAVE, {"LTime": U64_MAX, "Node": "adv-lt", "Prune": False}))
    s.udp(serf_msg(S_JOIN, {"LTime": U64_MAX, "Node": t.name}))
    s.udp(serf_msg(S_LEAVE, {"LTime": U64_MAX, "Node": t.name, "Prune": False}))
    s.udp(serf_msg(S_EVENT, {"CC": False, "LTime": U64_MAX, "Name": "advlt", "Payload": b""}))
    s.udp(serf_msg(S_QUERY, query_body(t, ip, port, ltime=U64_MAX)))
    user = {"EventLTime": U64_MAX, "Events": [], "LTime": U64_MAX, "LeftMembers": [],
            "QueryLTime": U64_MAX, "StatusLTimes": {t.name: U64_MAX}}
    s.stream(minimal_push_pull(user=bytes([S_PUSH_PULL]) + mp(user)), linger=1.0)
    time.sleep(1.0)
    arena.current = lifecycle_after(arena, t)
    return None


def lzw_bomb_udp(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """~60 KB datagram of LZW that expands to ~85 MB."""
    count = 80 * MIB
    buf = lzw_run(0, count)
    s.udp(msg(COMPRESS, {"Algo": 0, "Buf": buf}))
    return None


def lzw_bomb_tcp(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """A compressed push-pull whose user state expands to 300 MB."""
    size = 300 * MIB
    head = bytes([PUSH_PULL]) + mp({"Join": False, "Nodes": 0, "UserStateLen": size})
    s.stream(msg(COMPRESS, {"Algo": 0, "Buf": lzw_run(0, size, prefix=head)}), linger=2.0)
    return None


def nested_compress_bomb(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """A compound of compress bombs, and a compress of a compound of compress bombs.

    Each part stays under a per-message decompression limit; together they expand to ~75 MB
    per datagram. (LZW cannot shrink the already-compressed parts much, so the outer layer
    adds nesting, not ratio.)
    """
    cycle = 3837 * 3838 // 2  # one full LZW table of a run: ~7.4 MB from ~5.5 KB
    part = msg(COMPRESS, {"Algo": 0, "Buf": lzw_run(0, cycle)})
    flat = compound([part] * (60000 // (len(part) + 2)))
    s.udp(flat)
    inner = msg(COMPRESS, {"Algo": 0, "Buf": lzw_run(0, 4 * MIB)})
    count = 16
    while True:
        outer = compress_msg(compound([inner] * count))
        if len(outer) <= 60000 or count == 1:
            break
        count -= 1
    s.udp(outer)
    s.extra["expands_to_mib"] = round((60000 // (len(part) + 2)) * cycle / MIB + count * 4)
    return None


def deep_nesting(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Compounds of compounds 15000 deep; compress inside compress 12 deep."""
    data = msg(NACK, {"SeqNo": 1})
    for _ in range(15000):
        data = bytes([COMPOUND, 1]) + struct.pack(">H", len(data)) + data
    s.udp(data)
    data = msg(COMPRESS, {"Algo": 0, "Buf": lzw_run(0, MIB)})
    for _ in range(12):
        data = compress_msg(data)
        if len(data) > 60000:
            break
    s.udp(data)
    data = b"\x91" * 60000 + b"\xc0"  # msgpack nested 60000 deep as a ping body
    s.udp(bytes([PING]) + data)
    return None


class MaliciousPeer:
    """A TCP listener that answers push-pulls badly (or never), to hang the joiner."""

    def __init__(self, ip: str, reply: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 7946))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.ip = ip
        self.reply = reply
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            conn.settimeout(0.5)
            try:
                conn.recv(1 << 20)
                self.reply(conn)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def _timed_join(t: Target, addr: str) -> tuple[float, str]:
    start = time.monotonic()
    try:
        rpc = Rpc(t.rpc_addr, t.join_bound + 10)
        try:
            rpc.call("join", {"Existing": [addr], "Replay": False}, t.join_bound + 10)
            outcome = "returned"
        except TimeoutError:
            outcome = "hung"
        except Exception as exc:  # noqa: BLE001 - an error is the right answer
            outcome = f"error: {exc}"
        finally:
            rpc.close()
    except OSError as exc:
        outcome = f"rpc: {exc}"
    return time.monotonic() - start, outcome


def join_bad_peers(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """RPC join to peers that answer garbage / never answer must return within the bound
    (the target's TCPTimeout plus slack: QUICK runs it on the local profile, 1 s)."""
    key = t.key

    def garbage(conn: socket.socket) -> None:
        bad = bytes([PUSH_PULL]) + mp({"Join": True, "Nodes": 3, "UserStateLen": 10}) + b"\xc1"
        conn.sendall(tcp_frame(key, bad))  # then stays open, never closing

    def truncated(conn: socket.socket) -> None:
        full = tcp_frame(key, minimal_push_pull(join=True))
        conn.sendall(full[:len(full) // 2])

    def wrong_types(conn: socket.socket) -> None:
        conn.sendall(tcp_frame(key, bytes([PUSH_PULL]) + mp({"Join": [1], "Nodes": {"a": 1},
                                                               "UserStateLen": -1})))

    def hostile_state(conn: socket.socket) -> None:
        # Complete and well-framed, but every value is out of range for Go's field widths.
        node = {"Addr": b"\x7f\x00\x01", "Incarnation": U64_MAX, "Meta": {"a": 1},
                "Name": "evil\npeer", "Port": U16_OVERFLOW, "State": 9, "Vsn": b"\x01"}
        user = bytes([S_PUSH_PULL]) + mp({"EventLTime": -1, "Events": 5, "LTime": U64_MAX,
                                          "LeftMembers": {"a": 1}, "QueryLTime": "x",
                                          "StatusLTimes": [1]})
        conn.sendall(tcp_frame(key, minimal_push_pull(join=True, nodes=[node], user=user)))

    def silent(conn: socket.socket) -> None:
        pass

    peers = [MaliciousPeer(t.attacker_ip(40 + i), fn)
             for i, fn in enumerate((garbage, truncated, wrong_types, hostile_state, silent))]
    results: dict[str, tuple[float, str]] = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(
        p.reply.__name__, _timed_join(t, f"{p.ip}:7946")), daemon=True) for p in peers]
    for th in threads:
        th.start()
        s.count(1, 100)
    for th in threads:
        th.join(t.join_bound + 15)
    for p in peers:
        p.close()
    slow = {k: v for k, v in results.items() if v[0] > t.join_bound or v[1] in ("hung",)}
    missing = {p.reply.__name__ for p in peers} - results.keys()
    if slow or missing:
        raise Broken("join did not return within "
                     f"{t.join_bound:.0f} s ({t.profile} profile): " + ", ".join(
                         [f"{k} {v[0]:.1f}s {v[1]}" for k, v in slow.items()]
                         + [f"{k} hung" for k in missing]))
    s.extra["join_s"] = {k: round(v[0], 1) for k, v in results.items()}
    return None


def rpc_idle_connections(arena: Arena, t: Target, s: Sender) -> Cleanup:
    hold = []
    for _ in range(arena.sizes.rpc_conns):
        try:
            hold.append(socket.create_connection(t.rpc_addr, timeout=2))
            s.count(1, 0)
        except OSError:
            break
    return lambda: [x.close() for x in hold]


def rpc_big_before_auth(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Several connections each sending 16 MiB (a header whose Command is a huge string)."""
    hold = []
    size = arena.sizes.rpc_bytes
    data = b"\x82\xa7Command\xdb" + struct.pack(">I", size + 100) + bytes(size)
    for _ in range(arena.sizes.rpc_big_conns):
        try:
            sock = socket.create_connection(t.rpc_addr, timeout=5)
            hold.append(sock)
            s.count(1, len(data))
            sock.sendall(data)
        except OSError:
            pass  # the agent closed the connection before taking it all
    return lambda: [x.close() for x in hold]


def rpc_huge_declared_length(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Headers declaring 4 GiB strings/arrays/maps, then nothing (allocation on declared size)."""
    hold = []
    for data in (b"\x82\xa7Command\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                 b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"):
        try:
            sock = socket.create_connection(t.rpc_addr, timeout=5)
            hold.append(sock)
            sock.sendall(data)
            s.count(1, len(data))
        except OSError:
            pass
    time.sleep(0.5)
    return lambda: [x.close() for x in hold]


def rpc_monitor_never_reads(arena: Arena, t: Target, s: Sender) -> Cleanup:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(t.rpc_addr)
    sock.sendall(msgpack.packb({"Command": "handshake", "Seq": 1}, use_bin_type=True)
                 + msgpack.packb({"Version": 1}, use_bin_type=True)
                 + msgpack.packb({"Command": "monitor", "Seq": 2}, use_bin_type=True)
                 + msgpack.packb({"LogLevel": "TRACE" if t.kind == "serf" else "DEBUG"},
                                 use_bin_type=True))
    s.count(1, 60)
    # Traffic that makes log lines: pings for another node, unknown message types, events.
    end = time.monotonic() + arena.sizes.monitor_seconds
    i = 0
    while time.monotonic() < end:
        s.udp(msg(PING, {"Node": "not-me-" + "x" * 200, "SeqNo": i}))
        s.udp(bytes([200]) + b"x" * 300)
        s.udp(serf_msg(S_EVENT, {"CC": False, "LTime": 1000 + i, "Name": "advlog" + "y" * 200,
                                 "Payload": b"z" * 400}))
        i += 1
        time.sleep(0.002)  # ~1500 datagrams/s: log traffic, not a flood
    return sock.close


def newline_name_snapshot(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """A member named with newlines must not inject lines into the target's snapshot."""
    peer = arena.start_target()
    try:
        if not _join_pair(peer, t):
            raise Broken("setup: peer did not join the target")
        for name in ("x\nleave\nclock: 18446744073709551615",
                     "y\nalive: evil 1.2.3.4:1\nevent-clock: 18446744073709551615",
                     "z\nleave\nclock: 18446744073709551615\nquery-clock: 18446744073709551615\n"):
            s.udp(msg(ALIVE, alive_body(name, t.attacker_ip(30), 7946)))
        s.udp(serf_msg(S_JOIN, {"LTime": 5, "Node": "x\nleave"}))
        time.sleep(2.0)  # serf flushes its snapshot every 500 ms
        try:
            t2 = arena.restart(t)
        except AssertionError as exc:
            raise Broken(f"restart failed: {str(exc)[-300:]}") from exc
        arena.current = t2
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            if member_status(t2, peer.name) == "alive":
                break
            time.sleep(0.1)
        else:
            raise Broken("restarted agent did not rejoin its peer from the snapshot")
        try:
            rpc = Rpc(t2.rpc_addr, 5)
            try:
                stats = rpc.call("stats")["serf"]
            finally:
                rpc.close()
        except Exception as exc:  # noqa: BLE001
            raise Broken(f"stats after restart: {exc}") from exc
        clocks = {k: int(stats.get(k, 0)) for k in ("member_time", "event_time", "query_time")}
        if any(v >= 2**32 for v in clocks.values()):
            raise Broken(f"snapshot replay took injected clocks: {clocks}")
    finally:
        arena.cluster.stop(peer.agent, signal.SIGKILL)
    return None


def _join_pair(a: Target, b: Target) -> bool:
    try:
        rpc = Rpc(a.rpc_addr, 10)
        try:
            rpc.call("join", {"Existing": [f"{b.ip}:7946"], "Replay": False}, 10)
        finally:
            rpc.close()
    except Exception:  # noqa: BLE001
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if both_alive(a, b):
            return True
        time.sleep(0.1)
    return False


def handler_queue_flood(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """Many user events for a handler that takes a second each.

    Paced at ~1000 events/s: the point is a queue that grows faster than the handler drains
    it (unbounded, 4000 x 30 KB would be 120 MB), not a bandwidth flood.
    """
    payload = b"p" * arena.sizes.flood_payload
    base = random.randrange(10**6, 10**7)
    for i in range(arena.sizes.flood_events):
        s.udp(serf_msg(S_EVENT, {"CC": False, "LTime": base + i, "Name": "advflood",
                                 "Payload": payload}))
        if i % 10 == 9:
            time.sleep(0.01)
    time.sleep(1.0)
    return None


def _scripts_running(script: str) -> list[int]:
    """Pids of shells running ``script`` (not the agent, whose flags also name it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("sh") and script in argv[1:3] and _running(int(entry)):
            found.append(int(entry))
    return found


def handler_never_reads(arena: Arena, t: Target, s: Sender) -> Cleanup:
    """A handler that never reads stdin and never exits, fed a 60 KB payload (over the 9 KB
    user-event limit: dropped on arrival) and the largest one the limit lets through (so the
    handler really runs and handler_timeout must kill it)."""
    for size in (60000, 9000):
        s.udp(serf_msg(S_EVENT, {"CC": False, "LTime": random.randrange(10**7, 10**8),
                                 "Name": "advstuck", "Payload": b"q" * size}))
    bound = time.monotonic() + HANDLER_TIMEOUT_S + 3
    if t.kind != "pyserf":  # serf 0.9.4 has no handler timeout: only the health checks count
        time.sleep(HANDLER_TIMEOUT_S + 3)
        return None
    # Done once the handler was seen running and then gone (killed at its timeout). One never
    # seen means the 9,000-byte event never reached it, and the attack tested nothing.
    seen = False
    while True:
        stuck = _scripts_running(str(arena.stuck))
        seen = seen or bool(stuck)
        if (seen and not stuck) or time.monotonic() >= bound:
            break
        time.sleep(0.1)
    if stuck:
        raise Broken(f"handler still running {HANDLER_TIMEOUT_S + 3} s after the events "
                     f"with handler_timeout={HANDLER_TIMEOUT_S}s (pids {stuck})")
    if not seen:
        raise Broken(f"the stuck handler never ran within {HANDLER_TIMEOUT_S + 3} s of a "
                     "9,000-byte event (the largest the user-event limit lets through)")
    return None


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class Attack:
    name: str
    group: str
    fn: AttackFn
    fresh: bool = False  # runs on an agent of its own (it restarts or leaves it)


ATTACKS: list[Attack] = [
    Attack("ping_source_port_70000", "ports", ping_source_port_70000),
    Attack("ping_source_port_negative", "ports", ping_source_port_negative),
    Attack("alive_port_70000", "ports", alive_port_70000),
    Attack("indirect_ping_bad_target", "ports", indirect_ping_bad_target),
    Attack("query_port_70000", "ports", query_port_70000),
    Attack("relay_port_70000", "ports", relay_port_70000),
    Attack("wrong_types_memberlist", "types", wrong_types_memberlist),
    Attack("wrong_types_serf", "types", wrong_types_serf),
    Attack("wrong_types_push_pull", "types", wrong_types_push_pull),
    Attack("version_poison", "versions", version_poison),
    Attack("tcp_stream_fuzz", "streams", tcp_stream_fuzz),
    Attack("million_nodes_header", "streams", million_nodes_header),
    Attack("million_nodes_bodies", "streams", million_nodes_bodies),
    Attack("push_pull_trickle", "streams", push_pull_trickle),
    Attack("idle_streams", "streams", idle_streams),
    Attack("big_stream", "streams", big_stream),
    Attack("query_filter_regex", "filters", query_filter_regex),
    Attack("members_filtered_regex", "filters", members_filtered_regex),
    Attack("query_filter_wrong_types", "filters", query_filter_wrong_types),
    Attack("lzw_bomb_udp", "bombs", lzw_bomb_udp),
    Attack("lzw_bomb_tcp", "bombs", lzw_bomb_tcp),
    Attack("nested_compress_bomb", "bombs", nested_compress_bomb),
    Attack("deep_nesting", "bombs", deep_nesting),
    Attack("join_bad_peers", "peers", join_bad_peers),
    Attack("rpc_idle_connections", "rpc", rpc_idle_connections),
    Attack("rpc_big_before_auth", "rpc", rpc_big_before_auth),
    Attack("rpc_huge_declared_length", "rpc", rpc_huge_declared_length),
    Attack("rpc_monitor_never_reads", "rpc", rpc_monitor_never_reads),
    Attack("handler_queue_flood", "handlers", handler_queue_flood),
    Attack("handler_never_reads", "handlers", handler_never_reads),
    Attack("self_incarnation_overflow", "self", self_incarnation_overflow, fresh=True),
    Attack("lamport_overflow", "self", lamport_overflow, fresh=True),
    Attack("newline_name_snapshot", "self", newline_name_snapshot, fresh=True),
]
GROUPS = list(dict.fromkeys(a.group for a in ATTACKS))


@dataclass
class Result:
    impl: str
    mode: str
    group: str
    attack: str
    ok: bool
    reason: str
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    worst_ping_ms: float = 0.0
    longest_silence_ms: float = 0.0
    lost_pings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


class Campaign:
    """Runs attacks against one implementation in one mode, restarting broken targets."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.target: Target | None = None
        self.group = ""

    def _ensure_target(self) -> tuple[Target, str]:
        """The shared target, replaced (and why) if it is dead or unhealthy."""
        why = ""
        if self.target is not None:
            problems = check_health(self.target)
            why = "; ".join(problems)
            if problems and self.target.agent.alive():
                self.arena.cluster.stop(self.target.agent, signal.SIGKILL)
        if self.target is None or why:
            self.target = self.arena.start_target()
        return self.target, why

    def run(self, attack: Attack) -> Result:
        arena = self.arena
        replaced = ""
        # Only the join attacks' duration is a protocol timer (TCPTimeout); every other
        # group's target keeps the default profile.
        arena.profile = arena.sizes.peers_profile if attack.group == "peers" else "lan"
        if attack.fresh:
            target = arena.start_target()
        else:
            if attack.group != self.group and self.target is not None:
                # Each group gets a fresh agent, so state one group leaves behind (a
                # poisoned member list, say) is not blamed on the next.
                if self.target.agent.alive():
                    arena.cluster.stop(self.target.agent, signal.SIGKILL)
                self.target = None
            self.group = attack.group
            target, replaced = self._ensure_target()
        arena.current = target
        sender = Sender(target)
        result = Result(arena.kind, arena.mode, attack.group, attack.name, True, "")
        cleanup: Cleanup = None
        start = time.monotonic()
        try:
            with Monitor(target) as mon:
                arena.monitor = mon
                try:
                    cleanup = attack.fn(arena, target, sender)
                except Broken as exc:
                    result.ok, result.reason = False, str(exc)
                except Exception as exc:  # noqa: BLE001 - the attacker's own failure
                    result.ok = False
                    result.reason = f"attack raised {type(exc).__name__}: {exc}"
                result.seconds = round(time.monotonic() - start, 2)
                current = arena.current or target
                problems = check_health(current)
            if cleanup:
                cleanup()
        finally:
            arena.monitor = None
            sender.close()
        if problems:
            result.ok = False
            result.reason = "; ".join(filter(None, [result.reason, *problems]))
        result.frames, result.bytes = sender.frames, sender.bytes
        result.peak_rss_mib = round(max(mon.peak_rss, rss_mib(current.pid)), 1)
        result.worst_ping_ms = round(mon.worst * 1000, 1)
        result.longest_silence_ms = round(mon.silence * 1000, 1)
        result.lost_pings = mon.lost
        result.extra.update(sender.extra)
        if replaced:  # the previous attack's cleanup left the agent unhealthy
            result.extra["target_replaced_because"] = replaced
        if attack.fresh and current.agent.alive():
            arena.cluster.stop(current.agent, signal.SIGKILL)
        return result

    def join_check(self, group: str) -> Result:
        """A second agent must still be able to join the (possibly attacked) target."""
        result = Result(self.arena.kind, self.arena.mode, group, f"second_agent_joins[{group}]",
                        True, "")
        target = self.target
        if target is None or not target.agent.alive():
            result.ok, result.reason = False, "target is not running"
            return result
        start = time.monotonic()
        why = self.arena.second_joins(target)
        result.seconds = round(time.monotonic() - start, 2)
        result.peak_rss_mib = round(rss_mib(target.pid), 1)
        if why:
            result.ok, result.reason = False, why
        return result


def run_all(arena: Arena, names: list[str] | None = None,
            report: Callable[[Result], None] | None = None) -> list[Result]:
    """Every attack (or the named ones), group by group, with a join check after each group."""
    campaign = Campaign(arena)
    results: list[Result] = []
    for group in GROUPS:
        chosen = [a for a in ATTACKS if a.group == group and (not names or a.name in names)]
        for attack in chosen:
            results.append(campaign.run(attack))
            if report:
                report(results[-1])
        if chosen and not all(a.fresh for a in chosen):
            results.append(campaign.join_check(group))
            if report:
                report(results[-1])
    return results


def explain(arena: Arena, attack: Attack, limit: int = 6) -> list[str]:
    """The frames of ``attack`` that kill a fresh agent, one at a time (up to ``limit``)."""
    killers: list[str] = []
    skip = 0
    while len(killers) < limit:
        target = arena.start_target()
        sender = Sender(target, explain=True, skip=skip)
        arena.current = target
        arena.monitor = None
        try:
            attack.fn(arena, target, sender)
            return killers
        except Killed as exc:
            killers.append(f"frame {exc.args[0]}: {exc.args[1]}")
            skip = exc.args[0]
        except Exception:  # noqa: BLE001 - only the killers matter here
            return killers
        finally:
            sender.close()
            if target.agent.alive():
                arena.cluster.stop(target.agent, signal.SIGKILL)
    return killers


def format_table(results: list[Result]) -> str:
    lines = [f"{'impl':7} {'mode':9} {'attack':34} {'ok':6} {'frames':>7} {'MiB':>7} "
             f"{'secs':>6} {'peakRSS':>8} {'worstping':>9} {'silence':>8} {'lost':>4}  reason"]
    for r in results:
        lines.append(f"{r.impl:7} {r.mode:9} {r.attack:34} {'ok' if r.ok else 'BROKEN':6} "
                     f"{r.frames:7d} {r.bytes / MIB:7.2f} {r.seconds:6.1f} "
                     f"{r.peak_rss_mib:8.1f} {r.worst_ping_ms:7.0f}ms "
                     f"{r.longest_silence_ms:6.0f}ms "
                     f"{r.lost_pings:4d}  {r.reason[:200]}"
                     + "".join(f" {k}={v}" for k, v in r.extra.items() if k != "killers"))
    return "\n".join(lines)
