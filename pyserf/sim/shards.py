"""``pyserf simulate -workers=N``: one scenario run split over N forked processes.

Each worker owns the nodes whose index is its number modulo N: it builds only their machines,
runs them on its own heap and plays the whole scenario script, acting on its own nodes. The
workers are synchronised conservatively. Every hop between nodes takes at least the latency
sampler's lower bound L, so nothing sent at virtual time t arrives before t + L: once every
worker has said when its next event is (or the earliest message it has in flight), each can
run all its events before that minimum plus L without hearing from the others. At each such
window edge they swap the datagrams and stream hops addressed to the other shares (bytes,
addresses, stream ids: never machines) and go on.

At LAN latencies that window is 0.2 ms: a 2,000-node join swaps ~48,000 times, and two workers
run slower than one, each waiting out the other's lumps (a push-pull merge of the whole member
list takes tens of milliseconds). A sync quantum Q (``-sync-quantum``) makes every window at
least Q long, as parallel hardware simulators do with theirs: a hop between workers that would
arrive inside the window it was sent in arrives at the window's end instead, up to Q later
than drawn. Hops within a worker keep their delays.

Conditions over all nodes (has everyone converged?) are agreed at the scenario's STEP checks,
so every worker stops at the same virtual time, and the parent merges what the workers
observed into one report.

Network draws (loss, delay) come from a generator per sending node, seeded from the run's
seed and the node's name, and each machine is seeded the same way: what a node's traffic
suffers depends on what that node did, not on which worker runs it or how fast the others
go. Without a quantum a seed gives one report for every N >= 2; N = 1 is the single engine,
whose one generator is drawn in event order, so its report differs (statistically the same
protocol). With one, a seed still gives one report for a given N, but which hops wait for a
window's end depends on N.
"""

from __future__ import annotations

import gc
import heapq
import math
import multiprocessing
import os
import pickle
import random
import resource
import select
import socket
import struct
import time
import traceback
import zlib
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from pyserf.memberlist.profiles import LAN, Timing
from pyserf.memberlist.types import OpenStream, SendPacket
from pyserf.sim import scenarios
from pyserf.sim.network import Address, SimNetwork, SimNode, _address, _grow_memos

# Seconds a worker waits for word from another before calling the run broken. A window's
# work takes milliseconds, but a worker starved of CPU can be silent for minutes: a 2,000-node
# run at nice 10 under a load of 100-200 tripped a 300 s bound. A worker that dies is seen at
# once (its links close), so this only ends runs with a hung or stopped worker.
PEER_TIMEOUT = 3600.0
# Longest single wait, so a worker notices its parent is gone and the parent its workers.
POLL_S = 1.0
# Seconds the parent gives the other workers to report after the first failure (the one that
# raised first is the cause; the others then only lost touch with it).
GRACE_S = 2.0
FRAME = struct.Struct("!Q")
REFUSED = "connect: connection refused"
# Kinds of message between shares: a datagram, a stream opened, its reply, its refusal.
PACKET, OPEN, BACK, FAILED = range(4)


class ShardError(RuntimeError):
    """A sharded run failed: a worker raised, died or lost touch with the others.
    ``detail`` holds the failing worker's traceback when it had one."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class PeerLost(ShardError):
    """Another worker closed its end: it failed (its own report says why) or was stopped."""


@dataclass
class WorkerStats:
    """What one worker spent (for benchmarks; only the counts are deterministic)."""

    index: int
    nodes: int = 0
    events: int = 0
    windows: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    cpu_s: float = 0.0
    sync_s: float = 0.0  # inside exchanges: pickling, syscalls and waiting
    blocked_s: float = 0.0  # of which waiting for another worker's frame
    hops_delayed: int = 0  # hops from other workers moved to a window's end (sync quantum)
    delay_added_s: float = 0.0  # the virtual time those moves added, in all
    max_rss_mb: float = 0.0


class Seat:
    """One worker's place in the run: its share of the nodes and its links to the others."""

    def __init__(self, index: int, count: int, links: dict[int, socket.socket],
                 window: float, directory: dict[Address, tuple[str, int]],
                 quantised: bool = False) -> None:
        self.index = index
        self.count = count
        # How far the workers run apart: the hops' shortest delay, or the quantum if longer.
        self.window = window
        # Whether a hop may arrive inside the window it was sent in (it then waits for the
        # window's end); without a quantum that would be a bug.
        self.quantised = quantised
        self.directory = directory
        self._links = links
        self._inbox = {peer: bytearray() for peer in links}
        # Built in the parent before the fork: the pid a worker's parent has while it lives.
        self._parent = os.getpid()
        self.stats = WorkerStats(index)

    def network(self, **kwargs: Any) -> ShardNetwork:
        return ShardNetwork(self, **kwargs)

    def gather(self, value: Any) -> list[Any]:
        got = self.exchange("gather", [value] * self.count)
        got[self.index] = value
        return got

    def exchange(self, tag: str, payloads: list[Any]) -> list[Any]:
        """Send ``payloads[peer]`` to every other worker and return what each sent to this
        one (this worker's own slot: None). Every worker makes the same sequence of calls;
        ``tag`` catches one that got out of step."""
        if not self._links:
            return [None] * self.count  # the only share
        started = time.perf_counter()
        if os.getppid() != self._parent:
            raise ShardError("the parent process is gone")
        outgoing: dict[int, memoryview] = {}
        for peer in self._links:
            body = pickle.dumps((tag, payloads[peer]), pickle.HIGHEST_PROTOCOL)
            self.stats.bytes_out += len(body)
            outgoing[peer] = memoryview(FRAME.pack(len(body)) + body)
        received: list[Any] = [None] * self.count
        waiting = set(self._links)
        deadline = time.monotonic() + PEER_TIMEOUT
        while True:
            for peer in list(outgoing):
                try:
                    sent = self._links[peer].send(outgoing[peer])
                except BlockingIOError:
                    continue
                except OSError as exc:  # reset or broken: it is gone
                    raise PeerLost(f"worker {peer} closed its link ({exc})") from exc
                rest = outgoing[peer][sent:]
                if rest:
                    outgoing[peer] = rest
                else:
                    del outgoing[peer]
            for peer in sorted(waiting):
                frame = self._take(peer)
                if frame is not None:
                    their_tag, received[peer] = pickle.loads(frame)
                    if their_tag != tag:
                        raise ShardError(f"worker {peer} is at a {their_tag!r} exchange, "
                                         f"worker {self.index} at a {tag!r} one")
                    waiting.discard(peer)
            if not outgoing and not waiting:
                break
            blocked = time.perf_counter()
            readable, writable, _ = select.select(
                [self._links[p] for p in waiting], [self._links[p] for p in outgoing], [],
                POLL_S)
            self.stats.blocked_s += time.perf_counter() - blocked
            if not readable and not writable:
                if os.getppid() != self._parent:
                    raise ShardError("the parent process is gone")
                if time.monotonic() > deadline:
                    raise ShardError(f"no word from worker(s) {sorted(waiting)} for "
                                     f"{PEER_TIMEOUT:.0f} s")
        self.stats.sync_s += time.perf_counter() - started
        return received

    def _take(self, peer: int) -> bytes | None:
        """The next whole frame from ``peer`` if it has arrived (None: not yet)."""
        buf = self._inbox[peer]
        while True:
            if len(buf) >= FRAME.size:
                size = FRAME.unpack_from(buf)[0]
                if len(buf) >= FRAME.size + size:
                    body = bytes(buf[FRAME.size:FRAME.size + size])
                    del buf[:FRAME.size + size]
                    return body
            try:
                chunk = self._links[peer].recv(1 << 20)
            except BlockingIOError:
                return None
            except OSError as exc:
                raise PeerLost(f"worker {peer} closed its link ({exc})") from exc
            if not chunk:
                raise PeerLost(f"worker {peer} closed its link (it failed or was stopped)")
            buf += chunk

    def finish(self, net: ShardNetwork) -> WorkerStats:
        stats = self.stats
        stats.nodes, stats.events = len(net.nodes), net.steps
        stats.windows, stats.messages_out = net.windows, net.messages_out
        stats.cpu_s = time.process_time()
        stats.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return stats


class ShardNetwork(SimNetwork):
    """SimNetwork for one share: deliveries to nodes of other shares go out at window edges.

    Every delivery, local or not, finds its node by address when it arrives (a node not
    started yet, or crashed, is found out then), so a run does not depend on where a node
    lives. Stream refusals and timeouts keep their meaning: a refusal comes back from the
    target's share after the two one-way delays, a timeout fires on the opener's share."""

    def __init__(self, seat: Seat, *, seed: int = 1, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        if self.burst is not None or self.trace is not None:
            raise ValueError("a sharded network has no network-wide burst chain or trace")
        self.seat = seat
        self.seed = seed
        self._where = seat.directory
        self._rngs: dict[str, random.Random] = {}
        self._outbox: list[list[tuple]] = [[] for _ in range(seat.count)]
        self._out_next = math.inf
        # Arrivals from other shares must not be earlier than this (what ran so far).
        self._horizon = -math.inf
        self._arrivals = (self._arrive_packet_at, self._arrive_open, self._arrive_back,
                          self._arrive_failed)
        self.windows = 0
        self.messages_out = 0
        # Every share relays news of all N members, not only of its own nodes.
        _grow_memos(len(self._where))

    def set_link(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("per-link settings could undercut the shards' lookahead")

    def _node_rng(self, name: str) -> random.Random:
        rng = self._rngs.get(name)
        if rng is None:
            rng = self._rngs[name] = random.Random(f"simulate-net:{self.seed}:{name}")
        return rng

    def add_node(self, name: str, ip: str, port: int = 7946, tags: dict[str, str] | None = None,
                 keyring: Any = None, timing: Timing = LAN, **serf_overrides: Any) -> SimNode:
        self.rng = self._node_rng(name)  # seeds the machine, as every draw of its sends
        return super().add_node(name, ip, port, tags, keyring, timing, **serf_overrides)

    def _sample_due(self, sender: SimNode, stream: bool) -> bool:
        """Every ``compression_sample``-th send of each node, from a point set by its name:
        one in that many overall, though a node opens only a few streams."""
        counters = sender.counters
        sent = counters.streams_opened if stream else counters.udp_sent
        return (sent + zlib.crc32(sender.name.encode())) % self.compression_sample == 0

    # -- sending: the sender's share draws, then routes ------------------------------------

    def _route(self, when: float, owner: int, kind: int, args: tuple) -> None:
        if owner == self.seat.index:
            heapq.heappush(self._heap, (when, next(self._seq), None, self._arrivals[kind], args))
        else:
            self._outbox[owner].append((when, kind, args))
            self.messages_out += 1
            if when < self._out_next:
                self._out_next = when

    def _deliver_packet(self, sender: SimNode, action: SendPacket) -> None:
        data = self._sent_packet(sender, action)
        self.rng = self._node_rng(sender.name)
        addr = action.addr if type(action.addr) is tuple else _address(action.addr)
        where = self._where.get(addr)
        if not self._goes_out(sender, where[0] if where else None) or where is None:
            return
        self._route(self.now + self._delay(sender.name, where[0]), where[1], PACKET,
                    (addr, data, sender.addr))

    def _deliver_stream(self, sender: SimNode, action: OpenStream) -> None:
        push_pull = self._opened_stream(sender, action)
        self.rng = self._node_rng(sender.name)
        addr = _address(action.addr)
        where = self._where.get(addr)
        if where is not None and self._tcp_lost(sender.name, where[0]):
            self.streams_failed += 1
            return
        name = where[0] if where else ""
        there = self._delay(sender.name, name)
        back = self._delay(name, sender.name)  # a refusal's way back, drawn here too
        if where is None:
            self.streams_failed += 1
            self._push(self.now + there + back, sender, self._h_stream_failed,
                       (action.stream_id, REFUSED))
            return
        self._route(self.now + there, where[1], OPEN,
                    (addr, sender.name, sender.addr, action.stream_id, action.data, push_pull,
                     back))

    # -- arriving: on the target's share ----------------------------------------------------

    def _arrive_packet_at(self, now: float, addr: Address, data: bytes, src: Address) -> None:
        node = self.nodes.get(addr)
        if node is None:
            self.packets_in_flight -= 1
            self.packets_undelivered += 1
            return
        self._arrive_packet(now, node, data, src)

    def _arrive_open(self, now: float, addr: Address, opener: str, opener_addr: Address,
                     stream_id: int, data: bytes, push_pull: bool, back: float) -> None:
        target = self.nodes.get(addr)
        if target is None or not target.up or target.name in self._refusing:
            self.streams_failed += 1
            self._route(now + back, self._where[opener_addr][1], FAILED,
                        (opener_addr, stream_id, REFUSED))
            return
        self._at_node(target, now, self._h_serve_for,
                      (opener, opener_addr, stream_id, data, push_pull))

    def _h_serve_for(self, node: SimNode, now: float, opener: str, opener_addr: Address,
                     stream_id: int, data: bytes, push_pull: bool) -> None:
        reply = self._serve(node, now, data, opener_addr, push_pull)
        self.rng = self._node_rng(node.name)
        self._route(now + self._delay(node.name, opener), self._where[opener_addr][1], BACK,
                    (opener_addr, stream_id, reply))

    def _arrive_back(self, now: float, addr: Address, stream_id: int,
                     reply: bytes | None) -> None:
        node = self.nodes.get(addr)
        if node is not None:
            self._at_node(node, now, self._h_stream_back, (stream_id, reply))

    def _arrive_failed(self, now: float, addr: Address, stream_id: int, error: str) -> None:
        node = self.nodes.get(addr)
        if node is not None:
            self._at_node(node, now, self._h_stream_failed, (stream_id, error))

    # -- running in windows -----------------------------------------------------------------

    def _run(self, end: float, max_steps: int = 5_000_000) -> None:
        """Run to ``end`` (inclusive) in windows: each runs what comes before the earliest
        pending event of any share plus the window (lookahead or quantum), then the shares
        swap messages."""
        window = self.seat.window
        while True:
            earliest = self._sync()
            if earliest > end:
                break
            self.windows += 1
            edge = earliest + window
            if edge > end:
                super()._run(end, max_steps)
                self._horizon = math.nextafter(end, math.inf)
            else:
                super()._run(math.nextafter(edge, -math.inf), max_steps)
                self._horizon = edge
        self.now = max(self.now, end)

    def _sync(self) -> float:
        """Swap messages with the other shares; the earliest event any share has pending."""
        heap = self._heap
        mine = min(heap[0][0] if heap else math.inf, self._out_next)
        outbox = self._outbox
        received = self.seat.exchange("sync", [(mine, box) for box in outbox])
        self._outbox = [[] for _ in outbox]
        self._out_next = math.inf
        earliest = mine
        seq, arrivals, horizon = self._seq, self._arrivals, self._horizon
        stats, quantised = self.seat.stats, self.seat.quantised
        for peer, got in enumerate(received):
            if got is None:
                continue
            theirs, messages = got
            earliest = min(earliest, theirs)
            for when, kind, args in messages:
                if when < horizon and quantised:
                    stats.hops_delayed += 1
                    stats.delay_added_s += horizon - when
                    when = horizon
                elif when < horizon:
                    raise ShardError(f"a message from worker {peer} arrives at {when!r}, "
                                     f"before what has run here ({horizon!r})")
                heapq.heappush(heap, (when, next(seq), None, arrivals[kind], args))
        return earliest


def lookahead_of(opts: scenarios.Options) -> float:
    """The shortest one-way delay of the run's latency: how far shares may run apart."""
    return (opts.latency or scenarios.DEFAULT_LATENCY[opts.profile])[0]


def simulate(opts: scenarios.Options, workers: int
             ) -> tuple[dict[str, Any], list[WorkerStats]]:
    """Run one scenario on ``workers`` forked processes; the report and what each spent.
    Raises ShardError when a worker fails (after stopping every worker)."""
    started = time.perf_counter()
    lookahead = lookahead_of(opts)
    window = max(lookahead, opts.sync_quantum)
    quantised = opts.sync_quantum > lookahead
    if workers < 2 or workers > opts.nodes:
        raise ValueError("a sharded run needs 2 to -nodes workers")
    if not window > 0:
        raise ValueError("a sharded run needs a minimum one-way latency or a sync quantum "
                         "above 0")
    directory = {scenarios.address(i): (f"n{i}", i % workers) for i in range(opts.nodes)}
    pairs = {(i, j): socket.socketpair() for i in range(workers) for j in range(i + 1, workers)}
    for a, b in pairs.values():
        a.setblocking(False)
        b.setblocking(False)
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]
    sockets = [s for pair in pairs.values() for s in pair]
    writers = [writer for _, writer in pipes]
    everything: list[socket.socket | Connection] = [*sockets, *writers]
    everything += [reader for reader, _ in pipes]
    procs = []
    try:
        for index in range(workers):
            links = {j if i == index else i: pair[0] if i == index else pair[1]
                     for (i, j), pair in pairs.items() if index in (i, j)}
            keep = [*links.values(), pipes[index][1]]
            proc = ctx.Process(target=_work, name=f"pyserf-simulate-{index}", daemon=True,
                               args=(opts, Seat(index, workers, links, window, directory,
                                                quantised),
                                     pipes[index][1], [x for x in everything if x not in keep]))
            proc.start()
            procs.append(proc)
        held: list[socket.socket | Connection] = [*sockets, *writers]
        for x in held:
            x.close()  # the workers hold them now
        shares = _collect(procs, [pipe[0] for pipe in pipes])
    finally:
        _stop(procs)
        for x in everything:
            x.close()
    played = scenarios.merge([played for played, _ in shares])
    stats = [stat for _, stat in shares]
    played.extra = {**played.extra, "workers": workers,
                    "sync_windows": stats[0].windows}
    if quantised:
        delayed = sum(s.hops_delayed for s in stats)
        added = sum(s.delay_added_s for s in stats)
        played.extra.update(
            sync_quantum_s=opts.sync_quantum,
            hops_between_workers=sum(s.messages_out for s in stats), hops_delayed=delayed,
            delay_added_ms_mean=round(added / delayed * 1000, 3) if delayed else 0.0)
    return scenarios.report(opts, played, started), stats


def _work(opts: scenarios.Options, seat: Seat, result: Connection,
          inherited: list[socket.socket | Connection]) -> None:
    """A worker: play this share and send back what it saw (or why it could not)."""
    for x in inherited:
        x.close()  # only the owners hold a link's ends, so a worker's exit is seen as EOF
    # A worker ends with os._exit (multiprocessing's fork start): once play() turned the
    # collector back on, the first collection would walk its whole share (all of it still in
    # the youngest generation) for nothing.
    gc.disable()
    try:
        run = scenarios.Run(opts, seat)
        played = scenarios.play(run)
        assert isinstance(run.net, ShardNetwork)
        result.send(("ok", played, seat.finish(run.net)))
    except BaseException as exc:  # noqa: BLE001 - the parent reports it, whatever it is
        result.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                     isinstance(exc, PeerLost)))
    finally:
        result.close()
        for link in seat._links.values():
            link.close()


def _collect(procs: list, readers: list[Connection]) -> list[tuple[Any, WorkerStats]]:
    """Each worker's (Played, WorkerStats); raises ShardError once one fails."""
    results: dict[int, tuple[Any, WorkerStats]] = {}
    errors: list[tuple[int, str, str, bool]] = []
    first_error_at = math.inf
    pending = set(range(len(procs)))
    while pending:
        timeout = POLL_S if not errors else max(0.0, first_error_at + GRACE_S - time.monotonic())
        wait([readers[k] for k in pending] + [procs[k].sentinel for k in pending], timeout)
        for k in sorted(pending):
            if readers[k].poll():
                try:
                    message = readers[k].recv()
                except EOFError:
                    procs[k].join(POLL_S)
                    message = ("error", f"exited (code {procs[k].exitcode}) without a result",
                               "", False)
                pending.discard(k)
                if message[0] == "ok":
                    results[k] = message[1], message[2]
                else:
                    errors.append((k, *message[1:]))
            elif not procs[k].is_alive():
                procs[k].join(POLL_S)
                pending.discard(k)
                errors.append((k, f"exited (code {procs[k].exitcode}) without a result", "",
                               False))
        if errors:
            first_error_at = min(first_error_at, time.monotonic())
            if not pending or time.monotonic() >= first_error_at + GRACE_S:
                break
    if errors:
        # The cause, not a worker that only saw another one go.
        index, summary, detail, _ = sorted(errors, key=lambda e: e[3])[0]
        raise ShardError(f"worker {index} failed: {summary}", detail)
    return [results[k] for k in range(len(procs))]


def _stop(procs: list) -> None:
    """End every worker still running (SIGTERM, then SIGKILL) and reap them all."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)


def stats_table(stats: list[WorkerStats]) -> str:
    """One line per worker, for -worker-stats."""
    return "\n".join(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in asdict(stat).items()) for stat in stats)
