"""Join and leave intents: Lamport-clocked claims about a member's status, and the recent
intents about members not known yet."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyserf.serf import messages as m
from pyserf.serf.members import Member, MemberState, MemberStatus, SerfState
from pyserf.serf.messages import SerfMsg

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue
    from pyserf.memberlist.timers import Scheduler
    from pyserf.serf.clock import LamportClock
    from pyserf.serf.config import SerfConfig

log = logging.getLogger("pyserf.serf")

# Intents about nodes we do not know yet, kept for recent_intent_timeout. Serf's recentIntents
# map is unbounded; here a peer naming a fresh node in every message evicts the oldest entry.
MAX_RECENT_INTENTS = 16 * 1024


class Intents:
    """Serf's intent handling; mixed into Serf, whose state it uses."""

    # Serf's state this part reads and writes (set by Serf.__init__).
    config: SerfConfig
    scheduler: Scheduler
    state: SerfState
    clock: LamportClock
    members: dict[str, MemberState]
    failed_members: list[MemberState]
    left_members: list[MemberState]
    recent_intents: dict[str, tuple[int, int, float]]
    intent_broadcasts: BroadcastQueue
    # Every member's status time by its name's bytes, names marked leaving since a push-pull
    # state last looked, and the highest status time ever set: with them a push-pull skips
    # three passes over every member (SerfDelegate).
    status_times: dict[bytes, int]
    marked_leaving: set[str]
    status_ltime_top: int

    if TYPE_CHECKING:
        def _emit_member_event(self, kind: str, member: Member[MemberStatus],
                               suffix: str = "") -> None: ...
        def _erase(self, ms: MemberState) -> None: ...

    def _handle_leave_intent(self, msg: m.Leave, now: float) -> bool:
        self.clock.witness(msg.ltime)
        ms = self.members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, SerfMsg.LEAVE, msg.ltime, now)
        if msg.ltime <= ms.status_ltime:
            return False
        if msg.node == self.config.node_name and self.state == SerfState.ALIVE:
            log.debug("serf: Refuting an older leave intent")
            self._broadcast_join(self.clock.time, now)
            return False
        self._set_status_ltime(ms, msg.ltime)
        status = ms.member.status
        if status == MemberStatus.ALIVE:
            self._mark_leaving(ms)
            if msg.prune:
                self._prune(ms, now)
            return True
        if status == MemberStatus.FAILED:
            ms.member.status = MemberStatus.LEFT
            self.failed_members = [x for x in self.failed_members if x is not ms]
            self.left_members.append(ms)
            self._emit_member_event("member-leave", ms.member, " (forced)")
            if msg.prune:
                self._prune(ms, now)
            return True
        if status in (MemberStatus.LEAVING, MemberStatus.LEFT):
            if msg.prune:
                self._prune(ms, now)
            return True
        return False

    def _prune(self, ms: MemberState, now: float) -> None:
        def erase(when: float) -> None:
            if self.members.get(ms.member.name) is not ms:
                return
            log.info("serf: EventMemberReap (forced): %s %s", ms.member.name, ms.member.addr)
            self.left_members = [x for x in self.left_members if x is not ms]
            self._erase(ms)

        if ms.member.status == MemberStatus.LEAVING:
            # Let the graceful leave finish before the member disappears.
            delay = self.config.broadcast_timeout + self.config.leave_propagate_delay
            self.scheduler.call_at(now + delay, erase)
        else:
            erase(now)

    def _handle_join_intent(self, msg: m.Join, now: float) -> bool:
        self.clock.witness(msg.ltime)
        ms = self.members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, SerfMsg.JOIN, msg.ltime, now)
        if msg.ltime <= ms.status_ltime:
            return False
        self._set_status_ltime(ms, msg.ltime)
        if ms.member.status == MemberStatus.LEAVING:
            ms.member.status = MemberStatus.ALIVE
        return True

    def _set_status_ltime(self, ms: MemberState, ltime: int) -> None:
        ms.status_ltime = ltime
        ms.wire = None
        self.status_times[m.name_bytes(ms.member.name)] = ltime
        if ltime > self.status_ltime_top:
            self.status_ltime_top = ltime

    def _mark_leaving(self, ms: MemberState) -> None:
        ms.member.status = MemberStatus.LEAVING
        self.marked_leaving.add(ms.member.name)

    def _broadcast_join(self, ltime: int, now: float) -> None:
        msg = m.Join(ltime, self.config.node_name)
        self.clock.witness(ltime)
        self._handle_join_intent(msg, now)
        self.intent_broadcasts.queue(msg.encode(), now=now)

    def _upsert_intent(self, node: str, kind: int, ltime: int, now: float) -> bool:
        existing = self.recent_intents.get(node)
        if existing is None or ltime > existing[1]:
            self.recent_intents.pop(node, None)  # re-inserted last: the dict is oldest-first
            self.recent_intents[node] = (kind, ltime, now)
            while len(self.recent_intents) > MAX_RECENT_INTENTS:
                del self.recent_intents[next(iter(self.recent_intents))]
            return True
        return False

    def _recent_intent(self, node: str, kind: int) -> int | None:
        existing = self.recent_intents.get(node)
        if existing is not None and existing[0] == kind:
            return existing[1]
        return None

