"""Operator scenarios on the simulator: how fast a change reaches every node, at what cost.

Each scenario builds a cluster in virtual time, makes one change (a join storm, a kill -9, a
graceful leave, a user event, a partition that heals) and records, per observing node, the
virtual seconds until it saw the change, together with the false failure verdicts, the
datagrams, streams and bytes each node sent and the push-pull exchanges over the same window.
Everything is drawn from one seed, so a run is reproducible.

Observation goes through the engine's listeners rather than stored logs, so memory stays at
what the machines hold (N*N member-view entries), not at the millions of events a 2,000-node
storm produces. Traffic and push-pulls are the engine's per-node counters, in bytes on the
wire: compressed and encrypted as the agent sends (scaled by the engine's compressed sample
when its nodes skip compression to save time).
"""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyserf.memberlist import security
from pyserf.memberlist.profiles import PROFILES, Timing, suspicion_timeout
from pyserf.memberlist.types import JoinOutcome
from pyserf.serf.events import UserEventReceived
from pyserf.sim.counters import CounterSnapshot
from pyserf.sim.network import SimEvent, SimNetwork, SimNode

# One-way delay drawn uniformly per datagram or stream hop, per profile (what the profile's
# network usually looks like: a switched LAN (ping round trips of 0.4-1 ms), a WAN between
# regions, loopback).
DEFAULT_LATENCY = {"lan": (0.0002, 0.0005), "wan": (0.010, 0.100), "local": (0.00005, 0.0005)}
USER_EVENT = "simulate"
# Serf's reconnect loop period; a healed partition waits for it (see SerfConfig).
RECONNECT_INTERVAL = 30.0
# How often the run stops to see whether every node saw the change (events carry their own
# times, so this only bounds how far the traffic window runs past the last node).
STEP = 0.5

# Memory per member-view entry (one node's record of one member: memberlist's node state,
# serf's member and status, its tags and the dict slots) and per node (machines, timers,
# queues). Measured peaks since the decode memos and shared frozen records: 967 MiB at 1,000
# nodes and 3.54 GB at 2,000 (870-1,000 bytes per entry); 1,000 keeps the estimate above both.
BYTES_PER_ENTRY = 1000
BYTES_PER_NODE = 60_000
BYTES_PER_WORKER = 100 << 20


def two_clusters(net: SimNetwork, size: int, settle: float = 40.0
                 ) -> tuple[list[SimNode], list[SimNode]]:
    """Two separate clusters of ``size`` nodes (a0.. on 10.1.x, b0.. on 10.2.x), each formed by
    joining its first node and left ``settle`` virtual seconds to agree: ready for one join to
    merge them (b0 joining a0)."""
    sides = [[net.add_node(f"{name}{i}", f"10.{k}.{i // 250}.{i % 250 + 1}")
              for i in range(size)] for k, name in ((1, "a"), (2, "b"))]
    for side in sides:
        for node in side[1:]:
            net.join(node, side[0])
    net.run_until(net.now + settle)
    return sides[0], sides[1]


def estimate_bytes(nodes: int, workers: int = 1) -> int:
    return nodes * nodes * BYTES_PER_ENTRY + nodes * BYTES_PER_NODE + worker_bytes(workers)


def worker_bytes(workers: int) -> int:
    """What each worker process beyond the first adds (its interpreter and memos)."""
    return max(0, workers - 1) * BYTES_PER_WORKER


def address(index: int) -> tuple[str, int]:
    """Where node ``index`` listens (n0 on 10.0.0.1, 250 nodes per /24)."""
    return f"10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}", 7946


def max_nodes_for(available: int) -> int:
    """The largest cluster whose estimate fits ``available`` bytes."""
    a, b = BYTES_PER_ENTRY, BYTES_PER_NODE
    return max(0, int((-b + math.sqrt(b * b + 4 * a * available)) / (2 * a)))


@dataclass
class Options:
    nodes: int = 50
    scenario: str = "join"
    seed: int = 1
    loss: float = 0.0
    profile: str = "lan"
    latency: tuple[float, float] | None = None
    duration: float = 0.0  # 0: chosen per scenario from the profile's timings
    join_window: float = 1.0
    partition_for: float = 0.0  # 0: long enough for both halves to fail each other
    encrypt: bool = False
    # With -workers above 1: the shortest window between the workers' swaps (see shards.py).
    # 0 keeps every hop's delay exact.
    sync_quantum: float = 0.0


def lifeguard(timing: Timing, nodes: int) -> dict[str, float]:
    """Suspicion timeouts a failure at this size gets: ``min`` once k peers confirmed it,
    ``max`` unconfirmed, and ``bound``: when every survivor should list it failed. That is a
    probe interval until some survivor probes it (each probes one member per interval, so
    usually sooner), that probe's interval, the unconfirmed timeout, and five gossip
    intervals for the verdict to spread."""
    low = suspicion_timeout(timing.suspicion_mult, nodes, timing.probe_interval)
    high = timing.suspicion_max_timeout_mult * low
    k = timing.suspicion_mult - 2 if nodes - 2 >= timing.suspicion_mult - 2 else 0
    return {"min": low, "max": high, "k": k,
            "bound": round(2 * timing.probe_interval + high + 5 * timing.gossip_interval, 3)}


def default_partition_for(timing: Timing, nodes: int) -> float:
    return math.ceil(lifeguard(timing, max(1, nodes // 2))["bound"]) + 10.0


def default_duration(opts: Options, timing: Timing) -> float:
    """How long after the change a run waits for every node before calling it unconverged."""
    if opts.scenario == "fail":
        return max(120.0, 1.5 * lifeguard(timing, opts.nodes)["bound"])
    if opts.scenario == "partition":
        # The halves may have given up on each other: serf's reconnect (jittered up to 1.5x)
        # then has to find the heal.
        return 3 * RECONNECT_INTERVAL + 30.0
    return 120.0


def percentiles(times: list[float | None]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99/max over every observer; one that never saw the change counts
    as infinitely late, so a percentile landing on it is null."""
    if not times:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ranked = sorted(math.inf if t is None else t for t in times)

    def rank(p: float) -> float | None:
        value = ranked[max(0, math.ceil(p * len(ranked)) - 1)]
        return None if value == math.inf else round(value, 3)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": rank(1.0)}


class Seat(Protocol):
    """This process's share of a run split over several (pyserf.sim.shards): it owns the
    nodes whose index is ``index`` modulo ``count``."""

    index: int
    count: int

    def network(self, **kwargs: Any) -> SimNetwork:
        """The engine for this share, built with SimNetwork's arguments."""
        ...

    def gather(self, value: Any) -> list[Any]:
        """Every share's ``value``, in share order (each share calls it at the same point)."""
        ...


@dataclass
class _Watch:
    """Per observer, the first virtual time a condition held."""

    observers: set[str]
    t0: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)

    def mark(self, observer: str, when: float) -> None:
        if observer in self.observers and observer not in self.seen:
            self.seen[observer] = max(0.0, when - self.t0)

    @property
    def done(self) -> bool:
        return len(self.seen) == len(self.observers)


class Run:
    """One scenario run: the network, the probes on each node and what they recorded."""

    def __init__(self, opts: Options, seat: Seat | None = None) -> None:
        self.opts = opts
        self.timing = PROFILES[opts.profile]
        # The scenario's own draws (start times, the subject, the key) are the same in every
        # share: each share plays the whole script and acts only on the nodes it owns.
        self.rng = random.Random(f"simulate:{opts.seed}")
        latency = opts.latency or DEFAULT_LATENCY[opts.profile]
        self.seat = seat
        make = SimNetwork if seat is None else seat.network
        self.net = make(seed=opts.seed, loss=opts.loss, latency=latency, record_log=False,
                        listeners=[self._on_event])
        self.names = [f"n{i}" for i in range(opts.nodes)]
        # The nodes this process runs and observes (all of them unless the run is sharded).
        self.local_names = [name for i, name in enumerate(self.names) if self.owns(i)]
        self.key = bytes(self.rng.getrandbits(8) for _ in range(32)) if opts.encrypt else None
        # Members each node lists alive, from its own member events.
        self.alive: dict[str, int] = {}
        self.down: set[str] = set()
        # When each joiner's join returned (its push-pull with the seed answered).
        self.joined: dict[str, float] = {}
        self.false_positives = 0
        self.is_false: Callable[[SimEvent], bool] = lambda e: e.subject not in self.down
        self.on_member: Callable[[SimEvent], None] | None = None
        self.on_user: Callable[[str, float], None] | None = None

    # -- observing -------------------------------------------------------------------------

    def _on_event(self, e: SimEvent) -> None:
        kind = e.kind
        if kind == "member-join":
            self.alive[e.observer] = self.alive.get(e.observer, 0) + 1
        elif kind in ("member-failed", "member-leave"):
            self.alive[e.observer] = self.alive.get(e.observer, 0) - 1
            if kind == "member-failed" and self.is_false(e):
                self.false_positives += 1
        if self.on_member is not None:
            self.on_member(e)

    def _instrument(self, node: SimNode) -> None:
        """See the node's user events when its machine emits them: the virtual time the
        event's datagram arrived (the engine collects events right after each input)."""
        serf = node.serf
        take_events = serf.events

        def watched_events() -> list:
            events = take_events()
            if self.on_user is not None:
                for ev in events:
                    if isinstance(ev, UserEventReceived) and ev.name == USER_EVENT:
                        self.on_user(node.name, self.net.now)
            return events

        # Deliberately dynamic: the scenario watches this node's events by wrapping the method.
        serf.events = watched_events  # type: ignore[method-assign]

    def counters(self) -> CounterSnapshot:
        return self.net.snapshot_counters()

    def owns(self, index: int) -> bool:
        return self.seat is None or index % self.seat.count == self.seat.index

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every share of the run (just this one when it is not sharded)."""
        return [value] if self.seat is None else self.seat.gather(value)

    def agree(self, holds: bool) -> bool:
        """Whether a condition each share checks on its own nodes holds on all of them."""
        return all(self.gather(holds))

    # -- driving ---------------------------------------------------------------------------

    def add(self, index: int) -> SimNode:
        name = self.names[index]
        keyring = security.Keyring([self.key]) if self.key else None
        node = self.net.add_node(name, address(index)[0], timing=self.timing, keyring=keyring)
        self._instrument(node)
        return node

    def kick(self, node: SimNode) -> None:
        """Send what a direct call on a node's machine queued (the engine pumps on input)."""
        self.net._pump(node)

    def run_to(self, end: float, until: Callable[[], bool] | None = None) -> None:
        """Advance virtual time to ``end``, stopping early once ``until()`` holds (checked
        every STEP). Direct calls on machines are kicked where they are made, so this runs
        the engine's heap only: ``run_until`` would also pump all N nodes at every step."""
        net = self.net
        while net.now < end:
            net._run(min(end, net.now + STEP))
            if until is not None and self.agree(until()):
                return

    def join_storm(self) -> None:
        """Node 0 starts at 0, the rest start and join it at random times within the window
        (a datacenter restart); the caller runs the network on. ``joined`` records when each
        join returned."""
        net = self.net
        if self.owns(0):
            self.add(0)
        target = [(self.names[0], address(0))]
        starts = sorted(self.rng.uniform(0.0, self.opts.join_window)
                        for _ in range(self.opts.nodes - 1))

        def start(index: int) -> Callable[[float], None]:
            def go(now: float) -> None:
                node = self.add(index)

                def done(outcome: JoinOutcome, when: float) -> None:
                    if outcome.contacted:
                        self.joined[node.name] = when

                net.when_done(node, node.serf.join(target, False, now), done)
            return go

        for index, when in enumerate(starts, 1):
            if self.owns(index):
                net.call_at(when, start(index))

    def everyone_alive(self) -> bool:
        """Whether each node this process runs lists all N alive (``agree`` for all N)."""
        n = self.opts.nodes
        return all(self.alive.get(name, 0) == n for name in self.local_names)


def _converge_setup(run: Run) -> bool:
    """A converged cluster to make a change in: a join storm, then quiet gossip."""
    run.join_storm()
    run.run_to(run.opts.join_window + 120.0, run.everyone_alive)
    ok = run.agree(run.everyone_alive())
    # Let the join's gossip finish before the change, as on a cluster that has been up.
    run.run_to(run.net.now + 2 * run.timing.probe_interval)
    return ok


@dataclass
class Played:
    """What a run observed, ready for the report. The per-observer and counted parts come
    from the nodes one process ran (``merge`` adds up the shares of a sharded run); the rest
    is decided by the script, the same in every share."""

    observers: set[str]
    seen: dict[str, float]
    false_positives: int
    sent: dict[str, int]  # counter deltas over the traffic window
    joined: dict[str, float]
    extra: dict[str, Any]
    setup_converged: bool
    window: float
    virtual: float
    live: int


def merge(shares: list[Played]) -> Played:
    """One run's observations from its shares (each observer is in exactly one)."""
    first = shares[0]
    sent = dict.fromkeys(first.sent, 0)
    for share in shares:
        for key, value in share.sent.items():
            sent[key] += value
    return Played(
        observers=set().union(*(share.observers for share in shares)),
        seen={k: v for share in shares for k, v in share.seen.items()},
        false_positives=sum(share.false_positives for share in shares),
        sent=sent, joined={k: v for share in shares for k, v in share.joined.items()},
        extra=first.extra, setup_converged=first.setup_converged, window=first.window,
        virtual=first.virtual, live=first.live)


def simulate(opts: Options) -> dict[str, Any]:
    """Run one scenario; returns the report (see pyserf.sim.cli for the fields)."""
    started = time.perf_counter()
    return report(opts, play(Run(opts)), started)


def play(run: Run) -> Played:
    """Play the scenario on ``run``: the script is the same in every share of a sharded run
    (each acts on the nodes it owns, and global conditions are agreed at every STEP).

    Python's cycle collection is off meanwhile: the machines' state only grows during a run
    (N*N member views), and every full collection walked all of it, ~20% of a 500-node join's
    CPU. Nor do the machines make cyclic garbage worth collecting (counted with gc callbacks:
    collecting the youngest generation at every STEP freed 457 objects per run in all, the
    same in 300-node join, fail, leave and partition runs and a 1,000-node join, for 3-4% of
    the CPU), so nothing is collected until the scenario ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _play(run)
    finally:
        if enabled:
            gc.enable()


def _play(run: Run) -> Played:
    opts = run.opts
    timing = run.timing
    net = run.net
    duration = opts.duration or default_duration(opts, timing)
    names = run.names
    extra: dict[str, Any] = {}
    setup_converged = True

    if opts.scenario == "join":
        watch = _Watch(set(run.local_names), t0=0.0)

        def on_join(e: SimEvent) -> None:
            if e.kind == "member-join" and run.alive[e.observer] == opts.nodes:
                watch.mark(e.observer, e.time)

        run.on_member = on_join
        before = run.counters()
        run.join_storm()
        run.run_to(duration, lambda: watch.done)
        t0 = 0.0
    else:
        setup_converged = _converge_setup(run)
        subject = names[run.rng.randrange(1, opts.nodes)]
        others = set(run.local_names) - {subject}
        before = run.counters()
        t0 = net.now
        # None when another share runs the subject.
        node = net.by_name.get(subject)
        if opts.scenario in ("fail", "leave"):
            kind = "member-failed" if opts.scenario == "fail" else "member-leave"
            watch = _Watch(others, t0=t0)
            run.on_member = lambda e: (watch.mark(e.observer, e.time)
                                       if e.kind == kind and e.subject == subject else None)
            run.down.add(subject)
            if opts.scenario == "fail":
                if node is not None:
                    net.crash(node)
                extra["lifeguard_s"] = lifeguard(timing, opts.nodes)
            elif node is not None:
                leaving = node
                # The agent shuts down once its leave went out, as `serf leave` does.
                net.when_done(leaving, leaving.serf.leave(net.now),
                              lambda error, when: net.crash(leaving))
            extra["subject"] = subject
        elif opts.scenario == "event":
            watch = _Watch(others, t0=t0)
            run.on_user = watch.mark
            if node is not None:
                node.serf.user_event(USER_EVENT, b"x" * 16, False, net.now)
                run.kick(node)
            extra["origin"] = subject
        else:
            extra.update(_partition(run, opts, timing))
            watch = extra.pop("watch")
            t0 = watch.t0
        run.run_to(t0 + duration, lambda: watch.done)

    # Rates over a few milliseconds of spread would be noise: count at least two probe
    # intervals of the cluster's traffic.
    run.run_to(t0 + 2 * timing.probe_interval)
    return Played(observers=watch.observers, seen=watch.seen,
                  false_positives=run.false_positives, sent=run.counters().delta(before),
                  joined=run.joined, extra=extra, setup_converged=setup_converged,
                  window=net.now - t0, virtual=net.now, live=opts.nodes - len(run.down))


def report(opts: Options, played: Played, started: float) -> dict[str, Any]:
    """The report of a played run (``started``: its perf_counter start, for ``wall_s``)."""
    extra = played.extra
    if opts.scenario == "join":
        joined = played.joined
        extra = {"joins_returned": len(joined),
                 "last_join_returned_s": round(max(joined.values(), default=0.0), 3), **extra}
    window, live, sent = played.window, played.live, played.sent
    datagrams, streams = sent["udp_sent"], sent["streams_opened"]
    push_pulls = sent["push_pulls"]
    udp_wire, tcp_wire = _wire_ratio(sent, "udp"), _wire_ratio(sent, "tcp")
    wire_bytes = sent["udp_bytes_sent"] * udp_wire + sent["tcp_bytes_sent"] * tcp_wire
    push_pull_bytes = sent["push_pull_bytes"] * tcp_wire
    times: list[float | None] = [played.seen.get(o) for o in sorted(played.observers)]
    result: dict[str, Any] = {
        "nodes": opts.nodes,
        "scenario": opts.scenario,
        "seed": opts.seed,
        "profile": opts.profile,
        "loss": opts.loss,
        "converged": len(played.seen) == len(played.observers),
        "observers": len(played.observers),
        "saw_change": len(played.seen),
        "convergence_s": percentiles(times),
        "false_positives": played.false_positives,
        "window_s": round(window, 3),
        "msgs_per_node_s": round((datagrams + streams) / live / window, 3),
        "datagrams_per_node_s": round(datagrams / live / window, 3),
        "streams_per_node_s": round(streams / live / window, 3),
        "bytes_per_node_s": round(wire_bytes / live / window, 1),
        # Opened by any node (joins, the periodic sync, catch-up syncs); bytes on the wire,
        # both directions: the opener's state and the reply.
        "push_pull": {"count": push_pulls,
                      "per_node_s": round(push_pulls / live / window, 4),
                      "mean_bytes": round(push_pull_bytes / push_pulls) if push_pulls else 0,
                      "bytes_per_node_s": round(push_pull_bytes / live / window, 1)},
        "bytes_estimated": udp_wire != 1.0 or tcp_wire != 1.0,
        "setup_converged": played.setup_converged,
        **extra,
        "virtual_s": round(played.virtual, 3),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    result["curve"] = sorted(t for t in times if t is not None)
    return result


def _wire_ratio(sent: dict[str, int], transport: str) -> float:
    """Wire size over sent size. An engine whose nodes send uncompressed (cheaper to
    simulate) compresses a sample of what they send on the side, as the agent would; the
    sample's ratio scales the counts to what agents put on the wire. 1.0: sent as the agent
    sends it."""
    sampled = sent.get(f"{transport}_sampled_bytes", 0)
    return sent[f"{transport}_sampled_compressed"] / sampled if sampled else 1.0


def _partition(run: Run, opts: Options, timing: Timing) -> dict[str, Any]:
    """Split the cluster in two halves, hold the split, heal; the watch starts at the heal
    and waits for every node to list all N alive again."""
    net = run.net
    half = opts.nodes // 2
    side = {name: i < half for i, name in enumerate(run.names)}
    hold = opts.partition_for or default_partition_for(timing, opts.nodes)
    healed_at = [math.inf]

    def wrong(e: SimEvent) -> bool:
        # Failing a node on the same side is false; so is failing one across the healed cut
        # once no suspicion raised during the split can still be running.
        if side[e.observer] == side[e.subject]:
            return True
        return e.time > healed_at[0] + lifeguard(timing, opts.nodes)["max"]

    run.is_false = wrong
    net.partition([n for n in run.names if side[n]], [n for n in run.names if not side[n]])
    cut_at = net.now
    run.run_to(cut_at + hold)
    fewest_alive = min(run.gather(min(run.alive[name] for name in run.local_names)))
    failed_across = opts.nodes - fewest_alive
    net.heal()
    healed_at[0] = net.now
    watch = _Watch(set(run.local_names), t0=net.now)
    for name in run.local_names:
        if run.alive[name] == opts.nodes:
            watch.mark(name, net.now)

    def on_member(e: SimEvent) -> None:
        if e.kind == "member-join" and run.alive[e.observer] == opts.nodes:
            watch.mark(e.observer, e.time)

    run.on_member = on_member
    return {"watch": watch, "partition_s": round(hold, 3),
            "failed_across_split": failed_across}
