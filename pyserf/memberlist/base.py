"""What every mechanism of the membership machine shares: its state, declared in one place, and
the small helpers they all call (sequence numbers, queueing a broadcast, awareness, hearing from
peers). Each mechanism is a class over this base; ``Memberlist`` composes them."""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pyserf.memberlist.awareness import Awareness
from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.memberlist.catchup import MERGE_SYNC_FANOUT, BurstSettler, CatchUpBudget
from pyserf.memberlist.drops import DropLog
from pyserf.memberlist.metrics import NULL_METRICS, Metrics
from pyserf.memberlist.suspicion import Suspicion
from pyserf.memberlist.timers import Scheduler, Timer
from pyserf.memberlist.types import Delegate, MemberlistConfig, Node, OpenStream, SendPacket

log = logging.getLogger("pyserf.memberlist")

# Nothing heard for this many probe intervals: we, not our peers, were cut off. A node of a
# live cluster hears acks and gossip several times per interval.
SILENCE_PROBES = 2


@dataclass(slots=True)
class AckHandler:
    on_ack: Callable[[bytes | None, float], None]
    on_nack: Callable[[float], None] | None
    timer: Timer | None = None


@dataclass(slots=True)
class Probe:
    target: Node
    seq: int
    sent: float
    deadline: float
    acked: bool = False
    nacks: int = 0
    expected_nacks: int = 0
    indirect: bool = False
    tcp_pending: bool = False
    tcp_ok: bool = False
    finished: bool = False
    timers: tuple[Timer, ...] = ()


@dataclass(slots=True)
class StreamWait:
    on_reply: Callable[[int, bytes, float], None]
    on_error: Callable[[str, float], None]


class MemberlistBase:
    """The state the mechanisms share, all of it set up here so a reader sees it in one place."""

    def __init__(self, config: MemberlistConfig, delegate: Delegate, scheduler: Scheduler,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.timing = config.timing
        self.delegate = delegate
        self.scheduler = scheduler
        self.rng = rng or random.Random()
        self.nodes: list[Node] = []
        self.node_map: dict[str, Node] = {}
        self.awareness = Awareness(self.timing.awareness_max_multiplier)
        self.metrics: Metrics = NULL_METRICS  # the agent's telemetry sets a recorder
        self.broadcasts = BroadcastQueue(self.timing.retransmit_mult, lambda: len(self.nodes),
                                         self.gossip_soon)
        self._expedited: Timer | None = None
        self._last_gossip = -1.0
        self._suspicions: dict[str, Suspicion] = {}
        # When a peer last got a message through to us, and the last few silences (spans
        # with nothing heard for longer than SILENCE_PROBES probe intervals), to tell whether
        # an accusation of ours was raised while we were the one cut off.
        self._heard_at = -math.inf
        self._silences: deque[tuple[float, float]] = deque(maxlen=4)
        self._ack_handlers: dict[int, AckHandler] = {}
        self._streams: dict[int, StreamWait] = {}
        self._actions: list[SendPacket | OpenStream] = []
        self._seq = 0
        self._stream_seq = 0
        self._incarnation = 0
        self._probe_index = 0
        self._probe: Probe | None = None
        self._loops: dict[str, Timer] = {}
        self.left = False
        # Set while leaving: queued broadcasts may be dropped once nobody is left to hear them.
        self.draining = False
        self.shutdown_done = False
        self.drops = DropLog(log, "memberlist")
        self._eager_timer: Timer | None = None
        # Until when a catch-up sync that brought news is followed by another one.
        self._eager_until = 0.0
        self._last_eager = -math.inf
        self._news = 0  # members that joined or came back, as we heard of them
        self._eager_budget = CatchUpBudget(self.timing.push_pull_interval)
        # One sync after a burst of members learned by gossip (see BurstSettler).
        self._settler = BurstSettler(self.timing.push_pull_interval)
        self._settle_timer: Timer | None = None
        # Syncs after a join exchange that merged two clusters (see merge_sync_targets).
        self._merge_budget = CatchUpBudget(self.timing.push_pull_interval,
                                           burst=2 * MERGE_SYNC_FANOUT)
        # While a push-pull's state is merged: news it brings needs no sync of its own. And
        # how many members the last merge taught us: a catch-up sync that found some is
        # evidence that gossip is behind.
        self._merging = False
        self._merge_news = 0
        self._pending_push_pulls = 0
        self._vsn_verdicts: dict[bytes, str | None] = {}
        # Bumped whenever a member's state or the member list changes; the gossip candidates
        # are rebuilt only then (or when a dead member ages out of gossip), and a push-pull
        # reply may skip entries equal to what we sent only while it is unchanged.
        self._changes = 0
        # (changes, nodes, built at, oldest dead member's state change, candidates)
        self._candidates: tuple[int, list[Node], float, float | None, list[Node]] | None = None
        # Members in self.nodes that are dead or left, and where we are in it: while no one is
        # down, the candidates are everyone but us, with no list to build.
        self._down = 0
        self._me_at: int | None = None

    @property
    def local_node(self) -> Node:
        return self.node_map[self.config.name]

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _broadcast(self, node_name: str, msg: bytes, now: float,
                   on_finished: Callable[[float], None] | None = None) -> None:
        self.broadcasts.queue(msg, key=node_name, on_finished=on_finished, now=now)

    def _apply_awareness(self, delta: int) -> None:
        before = self.awareness.score
        self.awareness.apply_delta(delta)
        if self.awareness.score != before:
            self.metrics.gauge("memberlist.health.score", self.awareness.score)

    def _heard(self, now: float) -> None:
        if now - self._heard_at > SILENCE_PROBES * self.timing.probe_interval:
            self._silences.append((self._heard_at, now))
        self._heard_at = now

    def _cut_off_at(self, when: float) -> bool:
        """Did we hear from no peer around ``when`` (silent since, or inside a silence)?"""
        return self._heard_at < when or any(a <= when <= b for a, b in self._silences)

    def gossip_soon(self, now: float) -> None:
        """Something new was queued (see gossip.py)."""
        raise NotImplementedError
