"""Serf's periodic upkeep: reaping failed and left members, reconnecting to failed ones, and
bounding the broadcast queues."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from pyserf.memberlist.metrics import Metrics
from pyserf.serf import messages as m
from pyserf.serf.events import MemberEvent, SerfEvent
from pyserf.serf.members import MemberState

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue
    from pyserf.memberlist.memberlist import Memberlist
    from pyserf.serf import coordinate
    from pyserf.serf.config import SerfConfig

log = logging.getLogger("pyserf.serf")


class Reaper:
    """Serf's periodic tasks; mixed into Serf, whose state it uses."""

    # Serf's state this part reads and writes (set by Serf.__init__).
    config: SerfConfig
    rng: random.Random
    memberlist: Memberlist
    metrics: Metrics
    _events: list[SerfEvent]
    members: dict[str, MemberState]
    status_times: dict[bytes, int]
    failed_members: list[MemberState]
    left_members: list[MemberState]
    recent_intents: dict[str, tuple[int, int, float]]
    coordinates: coordinate.VivaldiClient
    coordinate_cache: dict[str, coordinate.Coordinate]
    intent_broadcasts: BroadcastQueue
    event_broadcasts: BroadcastQueue
    query_broadcasts: BroadcastQueue

    def _erase(self, ms: MemberState) -> None:
        self.members.pop(ms.member.name, None)
        self.status_times.pop(m.name_bytes(ms.member.name), None)
        self.coordinates.forget(ms.member.name)
        self.coordinate_cache.pop(ms.member.name, None)
        self._events.append(MemberEvent("member-reap", [ms.member.copy()]))

    def _reap(self, now: float) -> None:
        def reap(old: list[MemberState], timeout: float) -> list[MemberState]:
            keep = []
            for ms in old:
                if now - ms.leave_time <= timeout:
                    keep.append(ms)
                    continue
                log.info("serf: EventMemberReap: %s", ms.member.name)
                self._erase(ms)
            return keep

        self.failed_members = reap(self.failed_members, self.config.reconnect_timeout)
        self.left_members = reap(self.left_members, self.config.tombstone_timeout)
        expiry = self.config.recent_intent_timeout
        for name in [n for n, (_, _, t) in self.recent_intents.items() if now - t > expiry]:
            del self.recent_intents[name]

    def _reconnect(self, now: float) -> None:
        failed = len(self.failed_members)
        if failed == 0:
            return
        alive = max(1, len(self.members) - failed - len(self.left_members))
        if self.rng.random() > failed / alive:
            log.debug("serf: forgoing reconnect for random throttling")
            return
        ms = self.rng.choice(self.failed_members)
        member = ms.member
        log.info("serf: attempting reconnect to %s %s:%d", member.name, member.addr, member.port)
        self.memberlist.join([(member.name, (member.addr, member.port))], now,
                             lambda outcome, when: None)

    def _check_queues(self, now: float) -> None:
        # memberlist 0.5's own queue sample, which serf 0.9.4's memberlist (0.2.2) lacks.
        self.metrics.sample("memberlist.queue.broadcasts", len(self.memberlist.broadcasts))
        for name, queue in (("Intent", self.intent_broadcasts), ("Event", self.event_broadcasts),
                            ("Query", self.query_broadcasts)):
            depth = len(queue)
            self.metrics.sample("serf.queue." + name, depth)
            if depth >= 128:
                log.warning("serf: %s queue depth: %d", name, depth)
            if depth > self.config.max_queue_depth:
                log.warning("serf: %s queue depth (%d) exceeds limit (%d), dropping messages!",
                            name, depth, self.config.max_queue_depth)
                queue.prune(self.config.max_queue_depth, now=now)
