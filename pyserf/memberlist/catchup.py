"""The budget of pyserf's catch-up ("eager") push-pulls, a pyserf extension to memberlist.

A catch-up sync is an extra push-pull soon after a member joins, so a node that missed the
alive by gossip hears of it in about a second rather than at the next periodic sync (30 s+ on a
LAN). Each one moves the whole member list both ways, so the count has to stay bounded
whatever the cluster size: during a 2,000-node join storm the old rule (sync again while
members keep turning up) had every node syncing about once a second for the whole storm, which
grows with N twice over (longer storms, bigger states).

The budget is per agent and does not grow with N: a burst of ``burst`` syncs, refilled at the
rate of memberlist's own periodic sync (its interval scaled by the cluster size, as serf's
is). However long a storm lasts, an agent adds at most ``burst`` syncs plus as many as its
periodic loop runs anyway.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pyserf.memberlist import fields
from pyserf.memberlist.codec import NodeStateKind, PushNodeState
from pyserf.memberlist.profiles import push_pull_scale

if TYPE_CHECKING:
    from pyserf.memberlist.types import Node

# Catch-up syncs an agent may run back to back: the follow-up after its own join and one more
# for members that joined around it.
EAGER_BURST = 3.0


class CatchUpBudget:
    """A token bucket: ``burst`` tokens, one more per scaled push-pull interval."""

    __slots__ = ("burst", "interval", "tokens", "updated")

    def __init__(self, interval: float, burst: float = EAGER_BURST) -> None:
        self.burst = burst
        self.interval = interval
        self.tokens = burst
        self.updated: float | None = None

    def available(self, now: float, members: int) -> bool:
        """Whether a sync may run at ``now`` in a cluster of ``members``."""
        return self._refill(now, members) >= 1.0

    def spend(self, now: float, members: int) -> bool:
        """Take one token for a sync at ``now``; False (and nothing taken) if none is left."""
        if self._refill(now, members) < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def _refill(self, now: float, members: int) -> float:
        if self.updated is not None and now > self.updated:
            period = push_pull_scale(self.interval, members)
            self.tokens = min(self.burst, self.tokens + (now - self.updated) / period)
        if self.updated is None or now > self.updated:
            self.updated = now
        return self.tokens


# Members of each side a node syncs with after a join exchange that merged two clusters.
MERGE_SYNC_FANOUT = 2


def merge_sync_targets(remote: Sequence[PushNodeState], ours: Mapping[str, Node], me: str,
                       peer_ip: str, rng: random.Random,
                       fanout: int = MERGE_SYNC_FANOUT) -> list[str]:
    """Whom to push-pull with after a join exchange that joined two clusters, not one node.

    Such an exchange teaches the two ends everything, but each side's other members learn the
    other side only from the alive messages the ends gossip. A node no one else on its side
    relays for (the only other member of a two-node side) hears them from one end alone, at
    memberlist's few transmissions to random peers, and on missing them waits for a periodic
    sync (30 s on a LAN): 21 of 1,000 simulated 2+3 merges took over 20 s to agree, none with
    these syncs (benchmarks/cluster_merge.py). So each end also syncs with up to ``fanout``
    members it learned (not the peer) and ``fanout`` of its own the peer did not list. A node
    joining a cluster alone knew only itself: nothing to do there.
    """
    listed: dict[str, PushNodeState] = {r.name: r for r in remote}
    learned = sorted(r.name for r in remote if r.state == NodeStateKind.ALIVE and r.name != me
                     and (r.name not in ours or ours[r.name].dead_or_left()))
    if len(learned) < 2:
        return []  # a single member joining (or nothing new)
    lacked = sorted(name for name, node in ours.items()
                    if name != me and node.state == NodeStateKind.ALIVE and name not in listed)
    if not lacked:
        return []
    learned = [n for n in learned if fields.ip_text(listed[n].addr) != peer_ip]
    return (rng.sample(learned, min(fanout, len(learned)))
            + rng.sample(lacked, min(fanout, len(lacked))))


# A burst of members learned by gossip: at least BURST_NEWS within BURST_GAP seconds of each
# other. One settling sync follows SETTLE_QUIET seconds after the last of them (at most
# SETTLE_MAX_WAIT after the first), on a budget of its own.
BURST_NEWS = 3
BURST_GAP = 5.0
SETTLE_QUIET = 1.5
SETTLE_MAX_WAIT = 10.0
# Settling syncs an agent may run back to back: a node's own join storm is often a burst, and
# a merge may follow soon after. Refilled like CatchUpBudget.
SETTLE_BURST = 2.0


class BurstSettler:
    """When to run one push-pull after a burst of members learned by gossip.

    A merge of two clusters or a join storm reaches each node as many alives in a few seconds.
    A node that missed some of them learns nothing that tells it so, and the probabilistic
    catch-up syncs (EAGER_SYNCS / N per member heard) leave about a third of the nodes of a
    30+30 merge with none: in the simulator 5 of 14 such merges still had a node short of
    members 14-25 s later, and none with this sync (all agreed within 2.25 s).
    One sync with a random peer once the burst has gone quiet, when that peer has heard it
    all too, fills the gap. A single member joining or coming back is no burst: it costs
    nothing here, so the extra work is one push-pull per node per burst.
    """

    __slots__ = ("budget", "count", "first", "last")

    def __init__(self, interval: float) -> None:
        self.budget = CatchUpBudget(interval, burst=SETTLE_BURST)
        self.count = 0
        self.first = 0.0
        self.last = -BURST_GAP

    def heard(self, now: float) -> bool:
        """A member learned by gossip at ``now``; True when this makes it a burst."""
        if now - self.last > BURST_GAP:
            self.count, self.first = 0, now
        self.count += 1
        self.last = now
        return self.count == BURST_NEWS

    def due(self) -> float:
        """When the settling sync should run, given what has been heard so far."""
        return min(self.last + SETTLE_QUIET, self.first + SETTLE_MAX_WAIT)

    def take(self, now: float, members: int) -> bool:
        """The burst is over at ``now``: whether a sync may run (it spends the budget). The
        next member heard starts a new burst, so a long storm settles at most every
        SETTLE_MAX_WAIT seconds, not again three members later."""
        self.count = 0
        self.last = -BURST_GAP
        return self.budget.spend(now, members)
