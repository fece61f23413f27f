"""One simulated agent fed hostile input, and the invariants a correct agent keeps afterwards.

Shared by the Hypothesis tier (tests/unit/test_hostile_properties.py), the fuzz targets
(tests/fuzz/targets.py) and the corpus replay (tests/unit/test_fuzz_corpus.py). Every breach is
raised as :class:`Violation` with a short ``kind`` so findings can be deduplicated by kind and
by the pyserf line that raised.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import resource
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from pyserf.memberlist import security
from pyserf.memberlist.types import OpenStream, SendPacket
from pyserf.sim.network import SimNetwork, SimNode
from tests.fuzz import wire

if sys.platform != "linux":  # pragma: no cover - /proc and RLIMIT_AS are Linux facts
    raise ImportError("the hostile-input harness needs Linux")

OWN_NAME = "target"
OWN_IP = "10.0.0.1"
PEER_NAME = "peer"
PEER_IP = "10.0.0.2"
ATTACKER = ("10.0.0.66", 7946)
PORT = 7946
# Tag values chosen so that a backtracking regex engine takes exponential time on them.
TAGS = {"role": "a" * 28 + "!", "dc": "east"}
KEY = bytes(range(16))

# Budgets per hostile input. A correct agent handles one message in well under a millisecond;
# these only separate "slow" from "stalled" on a loaded CI machine.
CPU_SECONDS_PER_INPUT = 2.0
CPU_SECONDS_PER_CHECK = 10.0
# Address space one input may add before allocations fail (a guard for the test machine, so a
# hostile length field cannot make the test process itself swap or be OOM-killed).
MEMORY_HEADROOM = 1 << 30
# The largest UDP payload a send can carry (65535 - 8 byte UDP header - 20 byte IPv4 header).
MAX_UDP_PAYLOAD = 65507


class Violation(AssertionError):
    """An invariant a correct agent keeps was broken."""

    def __init__(self, kind: str, detail: str = "", cause: BaseException | None = None) -> None:
        self.kind = kind
        self.detail = detail
        self.cause = cause
        super().__init__(f"{kind}: {detail}" if detail else kind)

    def key(self) -> str:
        """A dedup key: the kind plus where in pyserf the underlying exception came from."""
        where = pyserf_frame(self.cause) if self.cause is not None else ""
        name = type(self.cause).__name__ if self.cause is not None else ""
        return "|".join(x for x in (self.kind, name, where) if x)


class Stall(BaseException):
    """Raised by the CPU timer; a BaseException so pyserf's `except Exception` cannot eat it."""


def pyserf_frame(exc: BaseException) -> str:
    """The innermost traceback frame inside pyserf/ (file:line function), or ''."""
    best = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = frame.filename.replace("\\", "/")
        if "/pyserf/" in path and "/tests/" not in path:
            best = f"{path[path.rindex('/pyserf/') + 1:]}:{frame.lineno} {frame.name}"
    return best


# ---------------------------------------------------------------------------------------------
# resource guards


def _on_vtalrm(signum: int, frame: Any) -> None:
    raise Stall("input used more CPU than its budget")


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@contextlib.contextmanager
def guarded(cpu_seconds: float) -> Iterator[None]:
    """Bound CPU time (SIGVTALRM) and extra address space while handling one input."""
    old_handler = signal.signal(signal.SIGVTALRM, _on_vtalrm)
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + MEMORY_HEADROOM
    if old_limit[1] != resource.RLIM_INFINITY:
        cap = min(cap, old_limit[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, old_limit[1]))
    signal.setitimer(signal.ITIMER_VIRTUAL, cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)
        signal.signal(signal.SIGVTALRM, old_handler)


# ---------------------------------------------------------------------------------------------
# logging: keep pyserf's log lines out of the test output, but make sure every one formats


class _FormatCheck(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            record.getMessage()
        except Exception as exc:  # noqa: BLE001 - the check is that none happens
            self.errors.append(f"{record.pathname}:{record.lineno}: {exc!r}")

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.errors.append(f"{record.pathname}:{record.lineno}: handler error")


LOG_CHECK = _FormatCheck()


@contextlib.contextmanager
def quiet_pyserf_logs() -> Iterator[_FormatCheck]:
    logger = logging.getLogger("pyserf")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.handlers = [LOG_CHECK]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield LOG_CHECK
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


# ---------------------------------------------------------------------------------------------
# the simulated network, checking every action a machine queues


def check_address(addr: Any, what: str) -> None:
    if not isinstance(addr, tuple) or len(addr) != 2:
        raise Violation("bad-action-address", f"{what}: {addr!r}")
    ip, port = addr
    if not isinstance(ip, str) or type(port) is not int or not 0 <= port <= 65535:
        raise Violation("bad-action-address", f"{what}: {addr!r}")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise Violation("bad-action-address", f"{what}: {addr!r}") from None


def check_action(action: Any) -> None:
    if isinstance(action, SendPacket):
        check_address(action.addr, "SendPacket")
        if not isinstance(action.data, bytes) or not 0 < len(action.data) <= MAX_UDP_PAYLOAD:
            size = len(action.data) if isinstance(action.data, bytes) else type(action.data)
            raise Violation("bad-packet-size", f"SendPacket data {size}")
    elif isinstance(action, OpenStream):
        check_address(action.addr, "OpenStream")
        if type(action.stream_id) is not int or not isinstance(action.data, bytes):
            raise Violation("bad-open-stream", repr(action)[:200])
    else:
        raise Violation("unknown-action", type(action).__name__)


class CheckedNet(SimNetwork):
    """The simulator, validating each queued action before it is delivered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, Any]] = []
        self.violations: list[Violation] = []

    def _accept(self, sender: SimNode, action: Any) -> bool:
        try:
            check_action(action)
        except Violation as v:
            self.violations.append(v)
            return False
        self.sent.append((sender.name, action))
        return True

    def _deliver_packet(self, sender: SimNode, action: SendPacket) -> None:
        if self._accept(sender, action):
            super()._deliver_packet(sender, action)

    def _deliver_stream(self, sender: SimNode, action: OpenStream) -> None:
        if self._accept(sender, action):
            super()._deliver_stream(sender, action)


# ---------------------------------------------------------------------------------------------


def _ltime_ok(value: Any) -> bool:
    return type(value) is int and 0 <= value <= wire.U64_MAX


class Harness:
    """A target agent (optionally with a real peer) and the entry points hostile bytes reach."""

    def __init__(self, seed: int = 1, encrypted: bool = False, real_peer: bool = False) -> None:
        self.net = CheckedNet(seed=seed)
        self.keyring = security.Keyring([KEY]) if encrypted else None
        self.node = self.net.add_node(OWN_NAME, OWN_IP, PORT, tags=dict(TAGS),
                                      keyring=self.keyring)
        self.serf = self.node.serf
        self.ml = self.serf.memberlist
        self.peer: SimNode | None = None
        self.query: Any = None  # a QueryCollector, when the caller started a query
        self._fresh = 0
        if real_peer:
            self.peer = self.net.add_node(PEER_NAME, PEER_IP, PORT,
                                          keyring=self._peer_keyring())
            self.net.join(self.peer, self.node)
            self.run(2.0)
        else:
            # A peer that exists only as an alive message: probes to it go nowhere.
            self.packet(wire.alive(PEER_NAME, bytes([10, 0, 0, 2]), PORT, 1,
                                   wire.tags_meta({"role": "db"})))
        self.check_no_violation()

    def _peer_keyring(self) -> security.Keyring | None:
        if self.keyring is None:
            return None
        return security.Keyring(list(self.keyring.keys))

    @property
    def now(self) -> float:
        return self.net.now

    # -- entry points ----------------------------------------------------------------------

    def _call(self, where: str, fn: Callable[[], Any], cpu: float = CPU_SECONDS_PER_INPUT) -> Any:
        try:
            with guarded(cpu):
                result = fn()
        except Stall as exc:
            raise Violation("stall", f"{where} used over {cpu}s of CPU", exc) from None
        except MemoryError as exc:
            raise Violation("memory", f"{where} tried to allocate over the cap", exc) from None
        except Exception as exc:  # noqa: BLE001 - any escape is the finding
            raise Violation("escaped", f"{where} raised {exc!r}"[:300], exc) from None
        self.net._pump(self.node)
        self.check_no_violation()
        return result

    def seal(self, data: bytes) -> bytes:
        """What a key-holding peer would put on the wire for ``data`` (a UDP packet)."""
        if self.keyring is None:
            return data
        return security.encrypt(self.keyring, data, b"")

    def seal_stream(self, data: bytes) -> bytes:
        if self.keyring is None:
            return data
        length = len(data) + security.ENCRYPTION_OVERHEAD_V1
        header = bytes((wire.ENCRYPT,)) + length.to_bytes(4, "big")
        return header + security.encrypt(self.keyring, data, header)

    def open_stream(self, data: bytes) -> bytes:
        if self.keyring is None or not data or data[0] != wire.ENCRYPT:
            return data
        return security.decrypt(self.keyring, data[5:], data[:5])

    def packet(self, data: bytes, source: tuple[str, int] = ATTACKER, raw: bool = False) -> None:
        data = data if raw else self.seal(data)
        self._call("receive_packet",
                   lambda: self.ml.receive_packet(data, source, self.net.now))

    def stream(self, data: bytes, raw: bool = False) -> bytes | None:
        data = data if raw else self.seal_stream(data)
        reply = self._call("handle_stream",
                           lambda: self.ml.handle_stream(data, (ATTACKER[0], 40000), self.now))
        if reply is not None and not isinstance(reply, bytes | bytearray):
            raise Violation("bad-stream-reply", f"handle_stream returned {type(reply).__name__}")
        if reply:
            self.check_reply_decodes(reply)
        return reply

    def serf_msg(self, data: bytes) -> None:
        self._call("notify_msg", lambda: self.serf.memberlist.delegate.notify_msg(data, self.now))

    def serf_state(self, data: bytes, join: bool = False) -> None:
        self._call("merge_remote_state",
                   lambda: self.serf.memberlist.delegate.merge_remote_state(data, join, self.now))

    def start_join(self, target: tuple[str, int] = ("10.0.0.99", PORT)) -> tuple[int, list]:
        """Start a join towards ``target``; returns the stream id and the outcome list."""
        outcome: list = []
        self._call("join", lambda: self.net.when_done(
            self.node, self.serf.join([("", target)], False, self.now),
            lambda o, t: outcome.append(o)))
        streams = [a for n, a in self.net.sent if isinstance(a, OpenStream) and a.addr == target]
        if not streams:
            raise Violation("join-no-stream", f"join to {target} opened no stream")
        return streams[-1].stream_id, outcome

    def stream_reply(self, stream_id: int, data: bytes, outcome: list, raw: bool = False) -> None:
        """Answer our own push-pull with ``data``; the join must then report an outcome."""
        data = data if raw else self.seal_stream(data)
        self._call("stream_reply", lambda: self.ml.stream_reply(stream_id, data, self.now))
        self.run(0.5)
        if not outcome:
            raise Violation("join-hangs", "a join answered by this reply never completed")

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        self._call("timers", lambda: self.net.run_until(end), CPU_SECONDS_PER_CHECK)

    # -- invariants ------------------------------------------------------------------------

    def check_no_violation(self) -> None:
        if self.net.violations:
            raise self.net.violations[0]
        if LOG_CHECK.errors:
            errors, LOG_CHECK.errors[:] = list(LOG_CHECK.errors), []
            raise Violation("log-format", errors[0])

    def snapshot(self) -> tuple:
        """Everything a dropped message must leave untouched."""
        nodes = tuple(sorted((n.name, str(n.state), n.incarnation, n.addr, n.port)
                             for n in self.ml.nodes))
        members = tuple(sorted((m.name, str(m.status), m.addr, m.port)
                               for m in self.serf.member_list()))
        clocks = (self.serf.clock.time, self.serf.event_clock.time, self.serf.query_clock.time)
        return nodes, members, clocks

    def check(self, deep: bool = False) -> None:
        """The invariants; ``deep`` adds a ping, a push-pull and a fresh join (slower)."""
        self.check_no_violation()
        serf, ml = self.serf, self.ml
        me = ml.node_map.get(OWN_NAME)
        if me is None or me.state.name != "ALIVE":
            raise Violation("self-not-alive", f"memberlist state {me and me.state!r}")
        if serf.state.name != "ALIVE":
            raise Violation("self-not-alive", f"serf state {serf.state!r}")
        local = serf.members.get(OWN_NAME)
        if local is None or local.member.status.name != "ALIVE":
            raise Violation("self-not-alive", f"serf member status {local and local.member}")
        for clock_name in ("clock", "event_clock", "query_clock"):
            value = getattr(serf, clock_name).time
            if not _ltime_ok(value):
                raise Violation("lamport-overflow", f"{clock_name} = {value}")
        for name, ms in serf.members.items():
            if not _ltime_ok(ms.status_ltime):
                raise Violation("lamport-overflow", f"status ltime of {name!r} = {ms.status_ltime}")
        for node in ml.nodes:
            self._check_node(node.name, node.addr, node.port, "memberlist")
            if type(node.incarnation) is not int or not 0 <= node.incarnation <= wire.U32_MAX:
                kind = "own-incarnation" if node.name == OWN_NAME else "incarnation-width"
                raise Violation(kind, f"{node.name!r} incarnation {node.incarnation}")
        for name, ms in serf.members.items():
            self._check_node(name, ms.member.addr, ms.member.port, "serf")
            tags = ms.member.tags
            if not isinstance(tags, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
                raise Violation("bad-tags", f"{name!r}: {tags!r}"[:200])
        if deep:
            self.check_answers()

    @staticmethod
    def _check_node(name: Any, addr: Any, port: Any, layer: str) -> None:
        if not isinstance(name, str):
            raise Violation("bad-node-name", f"{layer}: {name!r}"[:200])
        if type(port) is not int or not 0 <= port <= 65535:
            raise Violation("bad-node-port", f"{layer}: {name!r} port {port!r}"[:200])
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise Violation("bad-node-addr", f"{layer}: {name!r} addr {addr!r}"[:200]) from None

    def check_answers(self) -> None:
        """The agent still answers a UDP ping, a stream ping and a push-pull with sane data."""
        self.net.sent.clear()
        self.packet(wire.msg(wire.PING, {"SeqNo": 4242, "Node": OWN_NAME}))
        if not any(isinstance(a, SendPacket) and a.addr == ATTACKER for _, a in self.net.sent):
            raise Violation("no-ping-ack", "a UDP ping got no answer")
        reply = self.stream(wire.msg(wire.PING, {"SeqNo": 4243, "Node": OWN_NAME}))
        if not reply:
            raise Violation("no-ping-ack", "a stream ping got no answer")
        reply = self.stream(wire.push_pull([], b""))
        if not reply:
            raise Violation("no-push-pull", "a push-pull got no answer")
        kind, _ = wire.unwrap_stream(self.open_stream(reply))
        if kind != wire.PUSH_PULL:
            raise Violation("no-push-pull", f"a push-pull was answered with type {kind}")

    def check_reply_decodes(self, reply: bytes) -> None:
        """A stream reply must be something a Go peer decodes with the right field widths."""
        try:
            kind, body = wire.unwrap_stream(self.open_stream(bytes(reply)))
            if kind == wire.PUSH_PULL:
                header, nodes, user_state = wire.decode_push_pull(body)
                for n in nodes:
                    port, inc, addr = n[b"Port"], n[b"Incarnation"], n[b"Addr"]
                    if not 0 <= port <= 65535 or not 0 <= inc <= wire.U32_MAX \
                            or len(addr) not in (4, 16):
                        raise Violation("bad-push-pull-reply", f"node state {n!r}"[:300])
                if user_state:
                    state = msgpack.unpackb(user_state[1:], raw=True, strict_map_key=False)
                    if user_state[0] != wire.S_PUSH_PULL or not isinstance(state, dict):
                        raise Violation("bad-push-pull-reply", "serf state is not a map")
            elif kind in (wire.ACK, wire.ERR):
                if not isinstance(msgpack.unpackb(body, raw=True, strict_map_key=False), dict):
                    raise Violation("bad-stream-reply", f"type {kind} body is not a map")
            else:
                raise Violation("bad-stream-reply", f"unexpected reply type {kind}")
        except Violation:
            raise
        except Exception as exc:  # noqa: BLE001
            raise Violation("bad-stream-reply", f"reply does not decode: {exc!r}", exc) from None

    def check_fresh_join(self, settle: float = 5.0) -> None:
        """A new agent can still join the target, and both see each other alive."""
        self._fresh += 1
        name = f"fresh-joiner-{self._fresh}"
        fresh = self.net.add_node(name, f"10.0.1.{self._fresh}", PORT,
                                  keyring=self._peer_keyring())
        outcome = self.net.join(fresh, self.node)
        self.run(settle)
        self.check_no_violation()
        views = self.net.views()
        seen_by_target = views.get(OWN_NAME, {}).get(name)
        seen_by_fresh = views.get(name, {}).get(OWN_NAME)
        if seen_by_target != "alive" or seen_by_fresh != "alive":
            raise Violation("fresh-join-fails", f"join outcome {outcome!r}; target sees "
                            f"{seen_by_target}, joiner sees {seen_by_fresh}"[:300])


def describe(exc: BaseException) -> str:
    """One finding as text: the message and the traceback of the underlying exception."""
    cause = getattr(exc, "cause", None) or exc
    tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return f"{exc}\n{tb}"
