"""Transmit-limited broadcast queue: each message is piggybacked a bounded number of times.

Selection order follows memberlist: fewest transmissions first, then larger messages, then
newest. A message keyed by a node name replaces any older queued message about that node.

memberlist keeps one btree ordered by (transmits, length, id) and, per transmit count, seeks
the largest message that still fits. Here the same ordered search is built from standard
containers: one *tier* per transmit count (a handful: at most the retransmit limit), holding a
sorted list of the distinct message lengths queued in it and, per length, the messages sorted
by sequence number. Taking the best message that fits is a bisect plus a pop from the end (the
newest); queueing appends (a new message is the newest) or, for a message moving up a tier,
inserts where a bisect of the sequence numbers says (a heap cost twice the comparisons per
message). Removing a replaced or pruned message is O(1) and leaves a stale entry that is
dropped when taken, or when stale entries outnumber live ones in that group (so memory stays
proportional to the queue). The sorted length lists change only when a length appears in or
leaves a tier; their size is bounded by the number of distinct message lengths (at most the
largest message size), not by the number of queued messages. A ``get`` therefore makes
O((messages taken + tiers) * log n) comparisons instead of sorting the whole queue.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from pyserf.memberlist.profiles import retransmit_limit

# A group is compacted once its stale entries exceed its live ones by this much: amortised
# O(1) per removal, and at most about twice the live entries held.
STALE_SLACK = 16


class Broadcast:
    __slots__ = ("key", "msg", "transmits", "seq", "on_finished", "queued")

    def __init__(self, key: str | None, msg: bytes, seq: int,
                 on_finished: Callable[[float], None] | None) -> None:
        self.key = key
        self.msg = msg
        self.transmits = 0
        self.seq = seq
        self.on_finished = on_finished
        self.queued = True  # False once removed: its group entry is stale

    def finish(self, now: float) -> None:
        """Report the message done (sent its last time, replaced, pruned or dropped) at the
        time of the queue operation that finished it."""
        if self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback(now)


class _Group:
    """The messages of one length in one tier, oldest first. Sequence numbers are unique, and
    kept in a list of their own so that bisecting compares plain integers."""

    __slots__ = ("seqs", "items", "live", "stale")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.items: list[Broadcast] = []
        self.live = 0
        self.stale = 0


class _Tier:
    """The messages sent ``transmits`` times so far."""

    __slots__ = ("lengths", "groups")

    def __init__(self) -> None:
        self.lengths: list[int] = []  # sorted distinct lengths present in ``groups``
        self.groups: dict[int, _Group] = {}


class BroadcastQueue:
    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int],
                 on_queued: Callable[[float], None] | None = None,
                 on_sent: Callable[[bytes], None] | None = None) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.on_queued = on_queued  # after a message is queued
        self.on_sent = on_sent  # per message taken for a datagram
        self._order: OrderedDict[int, Broadcast] = OrderedDict()  # by seq, oldest first
        self._by_key: dict[str, Broadcast] = {}
        self._tiers: dict[int, _Tier] = {}
        self._seq = itertools.count()
        self.nbytes = 0  # bytes of all queued messages, for byte-based pruning

    def __len__(self) -> int:
        return len(self._order)

    def queue(self, msg: bytes, key: str | None = None,
              on_finished: Callable[[float], None] | None = None, *, now: float) -> None:
        if key is not None:
            old = self._by_key.get(key)
            if old is not None:
                self._remove(old)
                old.finish(now)
        item = Broadcast(key, msg, next(self._seq), on_finished)
        self._order[item.seq] = item
        self.nbytes += len(msg)
        if key is not None:
            self._by_key[key] = item
        self._place(item)
        if self.on_queued is not None:
            self.on_queued(now)

    def get(self, overhead: int, limit: int, now: float) -> list[bytes]:
        """Take messages fitting in ``limit`` bytes (each costing ``overhead`` extra)."""
        if not self._order or limit <= overhead:
            return []
        used = 0
        out: list[bytes] = []
        sent: list[Broadcast] = []
        for transmits in sorted(self._tiers):
            used += self.take(transmits, overhead, limit - used, out, sent)
            if limit - used - overhead <= 0:
                break
        self.commit(sent, now)
        return out

    def tiers(self) -> Iterable[int]:
        """The transmit counts of the queued messages (unordered)."""
        return self._tiers.keys()

    def take(self, transmits: int, overhead: int, limit: int, out: list[bytes],
             sent: list[Broadcast]) -> int:
        """Take messages sent ``transmits`` times so far that fit in ``limit`` bytes into
        ``out`` (their entries into ``sent``); returns the bytes used. They stay out of the
        queue until ``commit``, so that none is taken twice for one datagram."""
        tier = self._tiers.get(transmits)
        if tier is None:
            return 0
        used = 0
        lengths, groups = tier.lengths, tier.groups
        # The longest length that fits, newest first (inline: this runs for every message of
        # every gossip datagram).
        while (free := limit - used - overhead) > 0:
            index = bisect_right(lengths, free)
            if index == 0:
                break
            length = lengths[index - 1]
            group = groups[length]
            seqs, items = group.seqs, group.items
            while True:
                seqs.pop()
                item = items.pop()
                if item.queued:
                    break
                group.stale -= 1
            group.live -= 1
            if group.live == 0:
                del groups[length]
                del lengths[index - 1]
            used += length + overhead
            out.append(item.msg)
            sent.append(item)
        if not groups:
            del self._tiers[transmits]
        return used

    def commit(self, sent: list[Broadcast], now: float) -> None:
        """Count one more transmission of each taken message: back in the queue a tier up,
        or finished at the retransmit limit."""
        if not sent:
            return
        max_transmits = retransmit_limit(self.retransmit_mult, self.num_nodes())
        finished = []
        for item in sent:
            if self.on_sent is not None:
                self.on_sent(item.msg)
            transmits = item.transmits = item.transmits + 1
            if transmits >= max_transmits:
                self._forget(item)
                finished.append(item)
                continue
            self._place(item)
        for item in finished:
            item.finish(now)

    def prune(self, max_retain: int, max_bytes: int | None = None, *, now: float) -> int:
        """Drop the oldest messages above ``max_retain`` (serf's queue-depth guard), and while
        the queued bytes exceed ``max_bytes``; returns how many were dropped."""
        dropped = 0
        while self._order and (len(self._order) > max_retain
                               or (max_bytes is not None and self.nbytes > max_bytes)):
            item = next(iter(self._order.values()))
            self._remove(item)
            item.finish(now)
            dropped += 1
        return dropped

    def reset(self, now: float) -> None:
        items = list(self._order.values())
        self._order.clear()
        self._by_key.clear()
        self._tiers.clear()
        self.nbytes = 0
        for item in items:
            item.queued = False
            item.finish(now)

    # -- the ordered index ---------------------------------------------------------------

    def _place(self, item: Broadcast) -> None:
        tier = self._tiers.get(item.transmits)
        if tier is None:
            tier = self._tiers[item.transmits] = _Tier()
        length = len(item.msg)
        group = tier.groups.get(length)
        if group is None:
            group = tier.groups[length] = _Group()
            insort(tier.lengths, length)
        seq, seqs = item.seq, group.seqs
        if not seqs or seqs[-1] < seq:
            seqs.append(seq)
            group.items.append(item)
        else:  # moving up a tier, older than some message already there
            index = bisect_left(seqs, seq)
            seqs.insert(index, seq)
            group.items.insert(index, item)
        group.live += 1

    def _remove(self, item: Broadcast) -> None:
        """Remove a message that is in its tier (replaced or pruned)."""
        self._forget(item)
        tier = self._tiers[item.transmits]
        length = len(item.msg)
        group = tier.groups[length]
        group.live -= 1
        group.stale += 1
        if group.live == 0:
            del tier.groups[length]
            del tier.lengths[bisect_left(tier.lengths, length)]
            if not tier.groups:
                del self._tiers[item.transmits]
        elif group.stale > group.live + STALE_SLACK:
            group.items = [entry for entry in group.items if entry.queued]
            group.seqs = [entry.seq for entry in group.items]
            group.stale = 0

    def _forget(self, item: Broadcast) -> None:
        item.queued = False
        del self._order[item.seq]
        self.nbytes -= len(item.msg)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]


def get_from_all(queues: Sequence[tuple[BroadcastQueue, int]], limit: int, now: float
                 ) -> list[list[bytes]]:
    """Messages for one datagram from several (queue, per-message overhead) pairs, in one
    order: fewest transmissions first, then the order of ``queues``, then each queue's own
    (the largest that fits, newest first). Returns what was taken from each queue."""
    taken: list[list[bytes]] = [[] for _ in queues]
    sent: list[list[Broadcast]] = [[] for _ in queues]
    live = [(queue, overhead, out, items) for (queue, overhead), out, items
            in zip(queues, taken, sent, strict=True) if len(queue)]
    if live:
        smallest = min(overhead for _, overhead, _, _ in live)
        used = 0
        for transmits in sorted(set().union(*(queue.tiers() for queue, _, _, _ in live))):
            for queue, overhead, out, items in live:
                used += queue.take(transmits, overhead, limit - used, out, items)
            if limit - used - smallest <= 0:
                break
        for queue, _, _, items in live:
            queue.commit(items, now)
    return taken
