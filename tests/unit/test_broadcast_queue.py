"""The broadcast queue: memberlist's selection order, at O(log n) per operation."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from pyserf.memberlist.broadcast import STALE_SLACK, BroadcastQueue, get_from_all
from pyserf.memberlist.profiles import retransmit_limit


class ModelQueue:
    """The previous implementation (sort everything on every get, O(n) removals): obviously
    right, kept as the reference the indexed queue must agree with."""

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.items: list[list] = []  # [key, msg, transmits, seq, on_finished]
        self.seq = itertools.count()

    def __len__(self) -> int:
        return len(self.items)

    def _finish(self, item: list) -> None:
        callback, item[4] = item[4], None
        if callback is not None:
            callback()

    def queue(self, msg: bytes, key: str | None, on_finished: Callable[[], None]) -> None:
        for old in [i for i in self.items if key is not None and i[0] == key]:
            self.items.remove(old)
            self._finish(old)
        self.items.append([key, msg, 0, next(self.seq), on_finished])

    def get(self, overhead: int, limit: int) -> list[bytes]:
        if not self.items or limit <= overhead:
            return []
        max_transmits = retransmit_limit(self.retransmit_mult, self.num_nodes())
        used, out, finished = 0, [], []
        for item in sorted(self.items, key=lambda i: (i[2], -len(i[1]), -i[3])):
            size = len(item[1]) + overhead
            if used + size > limit:
                if limit - used <= overhead:
                    break
                continue
            used += size
            out.append(item[1])
            item[2] += 1
            if item[2] >= max_transmits:
                finished.append(item)
        for item in finished:
            self.items.remove(item)
            self._finish(item)
        return out

    def prune(self, max_retain: int) -> None:
        self.items.sort(key=lambda i: i[3])
        for item in self.items[: max(0, len(self.items) - max_retain)]:
            self.items.remove(item)
            self._finish(item)

    def reset(self) -> None:
        items, self.items = self.items, []
        for item in items:
            self._finish(item)


# Messages are never empty on the wire (each starts with its type byte): with a zero-length
# message the old scan could still take it when exactly no space was left; both stop there now.
QUEUE = st.tuples(st.just("queue"), st.integers(1, 60), st.sampled_from([None, "a", "b", "c"]))
GET = st.tuples(st.just("get"), st.integers(0, 8), st.integers(0, 200))
PRUNE = st.tuples(st.just("prune"), st.integers(0, 12), st.none())
RESET = st.tuples(st.just("reset"), st.none(), st.none())
NODES = st.tuples(st.just("nodes"), st.integers(1, 2000), st.none())
OPS = st.lists(st.one_of(QUEUE, QUEUE, QUEUE, GET, GET, PRUNE, RESET, NODES), max_size=80)


# The mutation campaign (scripts/mutation) runs this once per mutant: it asks for fewer, fixed
# examples there; a normal run draws 400 fresh ones.
EXAMPLES = int(os.environ.get("PYSERF_PROPERTY_EXAMPLES", "400"))


@settings(max_examples=EXAMPLES, deadline=None,
          derandomize="PYSERF_PROPERTY_EXAMPLES" in os.environ)
@given(OPS, st.integers(1, 4))
def test_indexed_queue_matches_the_sort_everything_model(ops, mult):
    nodes = [5]
    queued_calls = []
    real = BroadcastQueue(mult, lambda: nodes[0], on_queued=queued_calls.append)
    model = ModelQueue(mult, lambda: nodes[0])
    # (message, time finished): the real queue must report the time of the operation that
    # finished a message; the model's callbacks note the step they run in.
    real_done: list[tuple[int, float]] = []
    model_done: list[tuple[int, float]] = []
    step = [0.0]
    for n, (op, a, b) in enumerate(ops):
        now = step[0] = float(n)
        if op == "queue":
            msg = f"{n}:".encode().ljust(max(a, len(str(n)) + 1), b".")
            real.queue(msg, key=b, on_finished=lambda when, n=n: real_done.append((n, when)),
                       now=now)
            model.queue(msg, b, lambda n=n: model_done.append((n, step[0])))
        elif op == "get":
            assert real.get(a, b, now) == model.get(a, b)
        elif op == "prune":
            real.prune(a, now=now)
            model.prune(a)
        elif op == "reset":
            real.reset(now)
            model.reset()
            real_done.sort()  # reset finishes everything; the order is not part of the API
            model_done.sort()
        else:
            nodes[0] = a
        assert len(real) == len(model)
        assert real_done == model_done
    assert queued_calls == [float(n) for n, op in enumerate(ops) if op[0] == "queue"]


def model_get_from_all(models: list[tuple[ModelQueue, int]], limit: int) -> list[list[bytes]]:
    """Every queued message of every queue in one sorted list (transmits, queue, longest,
    newest), taken greedily while it fits; then each taken message counts a transmission."""
    entries = sorted(((item[2], qi, -len(item[1]), -item[3]), qi, item)
                     for qi, (model, _) in enumerate(models) for item in model.items)
    used, out, taken = 0, [[] for _ in models], []
    for _, qi, item in entries:
        size = len(item[1]) + models[qi][1]
        if used + size <= limit:
            used += size
            out[qi].append(item[1])
            taken.append((qi, item))
    for qi, item in taken:
        model = models[qi][0]
        item[2] += 1
        if item[2] >= retransmit_limit(model.retransmit_mult, model.num_nodes()):
            model.items.remove(item)
            model._finish(item)
    return out


MERGED_OPS = st.lists(st.one_of(
    st.tuples(st.just("queue"), st.integers(0, 2), st.integers(1, 60),
              st.sampled_from([None, "a", "b"])),
    st.tuples(st.just("get_all"), st.integers(0, 4), st.integers(0, 200), st.none()),
    st.tuples(st.just("get_one"), st.integers(0, 2), st.integers(0, 200), st.none())),
    max_size=80)


@settings(max_examples=EXAMPLES, deadline=None,
          derandomize="PYSERF_PROPERTY_EXAMPLES" in os.environ)
@given(MERGED_OPS, st.integers(1, 3))
def test_one_datagram_from_several_queues_matches_the_merged_sort(ops, mult):
    """memberlist's queue and serf's three share one order for a datagram: fewest
    transmissions first across all of them, then the queues' order (each charging its own
    overhead), then each queue's own. Checked against sorting every queued message at once,
    with single-queue gets mixed in."""
    reals = [BroadcastQueue(mult, lambda: 7) for _ in range(3)]
    models = [ModelQueue(mult, lambda: 7) for _ in range(3)]
    real_done: list[int] = []
    model_done: list[int] = []
    for n, (op, a, b, key) in enumerate(ops):
        if op == "queue":
            msg = f"{n}:".encode().ljust(max(b, len(str(n)) + 1), b".")
            reals[a].queue(msg, key=key, on_finished=lambda when, n=n: real_done.append(n),
                           now=float(n))
            models[a].queue(msg, key, lambda n=n: model_done.append(n))
        elif op == "get_all":
            overheads = [a, a + 1, a + 1]
            assert get_from_all(list(zip(reals, overheads, strict=True)), b, float(n)) == \
                model_get_from_all(list(zip(models, overheads, strict=True)), b)
        else:
            assert reals[a].get(1, b, float(n)) == models[a].get(1, b)
        assert [len(q) for q in reals] == [len(q) for q in models]
        assert sorted(real_done) == sorted(model_done)


def test_a_fresh_serf_message_is_not_held_behind_memberlist_retransmissions():
    """After a join storm memberlist's queue holds hundreds of alive messages still to be
    retransmitted; a user event queued then goes in the next datagram, ahead of them."""
    ours, events = BroadcastQueue(4, lambda: 200), BroadcastQueue(4, lambda: 200)
    for i in range(200):  # alive messages of many lengths: the largest that fits fills gaps
        ours.queue(b"alive %03d" % i + b"." * (i % 80), key=f"n{i}", now=0.0)
    for _ in range(20):  # everything sent a few times: the backlog sits at tiers 1-3
        get_from_all([(ours, 2), (events, 3)], 1400, 0.0)
    event = b"user event" + b"!" * 30
    events.queue(event, now=1.0)
    mine, theirs = get_from_all([(ours, 2), (events, 3)], 1400, 1.0)
    assert theirs == [event]
    # memberlist's queue alone fills a datagram to within a few bytes, too few for the event:
    backlog = BroadcastQueue(4, lambda: 200)
    for i in range(200):
        backlog.queue(b"alive %03d" % i + b"." * (i % 80), key=f"n{i}", now=0.0)
    for _ in range(21):
        alone = backlog.get(2, 1400, 0.0)
    assert 1400 - sum(len(m) + 2 for m in alone) < len(event) + 3


def test_selection_order_and_keyed_replacement():
    done = []
    q = BroadcastQueue(1, lambda: 9)  # retransmit limit 1: every message goes out once
    q.queue(b"old-small", now=0.0)
    q.queue(b"old-bigger-message", now=0.0)
    q.queue(b"new-small", now=0.0)
    q.queue(b"alive v1", key="n1", on_finished=lambda when: done.append("v1"), now=0.0)
    q.queue(b"alive v2", key="n1", on_finished=lambda when: done.append("v2"), now=0.0)
    assert done == ["v1"] and len(q) == 4  # the older message about n1 is gone
    assert q.get(0, 1000, 0.0) == [b"old-bigger-message", b"new-small", b"old-small", b"alive v2"]
    assert done == ["v1", "v2"] and len(q) == 0


def test_fewest_transmits_first_and_oversized_messages_do_not_block():
    done = []
    q = BroadcastQueue(3, lambda: 9)  # retransmit limit 3
    q.queue(b"A" * 10, on_finished=lambda when: done.append("A"), now=0.0)
    q.queue(b"too big for any packet" * 10, now=0.0)
    assert q.get(2, 14, 0.0) == [b"A" * 10]
    q.queue(b"B" * 10, on_finished=lambda when: done.append("B"), now=0.0)
    assert q.get(2, 14, 0.0) == [b"B" * 10]  # 0 transmits beats 1
    assert q.get(2, 14, 0.0) == [b"B" * 10]  # both at 1: the newest
    assert q.get(2, 14, 0.0) == [b"A" * 10]  # A at 1, B at 2
    assert q.get(2, 14, 0.0) == [b"B" * 10] and done == ["B"]  # both at 2: B's third and last
    assert q.get(2, 14, 0.0) == [b"A" * 10] and done == ["B", "A"]
    assert q.get(2, 14, 0.0) == [] and len(q) == 1  # the oversized one waits for prune or reset


def test_replacing_one_key_many_times_keeps_the_index_small():
    q = BroadcastQueue(4, lambda: 100)
    for i in range(10_000):
        q.queue(b"alive about the same node", key="flapper", now=0.0)
        q.queue(b"x" * (i % 7 + 1), now=0.0)
    q.prune(50, now=0.0)
    assert len(q) == 50
    held = sum(len(g.items) for t in q._tiers.values() for g in t.groups.values())
    assert held <= 2 * len(q) + 7 * STALE_SLACK  # stale entries do not pile up


class CountingBytes(bytes):
    """Counts how often anything asks its length: a machine-independent cost measure."""

    calls = 0

    def __len__(self) -> int:
        CountingBytes.calls += 1
        return super().__len__()


def test_twenty_thousand_queued_and_a_thousand_gets_cost_little():
    q = BroadcastQueue(4, lambda: 10_000)  # retransmit limit 16
    CountingBytes.calls = 0
    start = time.perf_counter()
    for i in range(20_000):
        key = f"node-{i % 15_000}" if i % 3 else None
        q.queue(CountingBytes(b"m" * (40 + i % 300)), key=key, now=0.0)
    taken = sum(len(q.get(3, 1400, 0.0)) for _ in range(1000))
    elapsed = time.perf_counter() - start
    assert taken > 1000 and len(q) > 10_000
    # The sort-everything queue asks every message's length on every get (> 16 million
    # here) and took ~30 s; the index asks a bounded number of times per message moved.
    assert CountingBytes.calls < 10 * (20_000 + taken)
    assert elapsed < 10.0


def test_a_message_that_fills_the_packet_exactly_is_taken():
    """Each message costs len + overhead; one that uses the last byte still goes out."""
    q = BroadcastQueue(4, lambda: 9)
    q.queue(b"x" * 10, now=0.0)
    assert q.get(3, 13, 0.0) == [b"x" * 10]
    q = BroadcastQueue(4, lambda: 9)
    q.queue(b"y", now=0.0)
    assert q.get(2, 3, 0.0) == [b"y"]  # exactly one byte free for a one-byte message
    assert q.get(3, 3, 0.0) == []  # no byte free: nothing, even though the queue is not empty


def test_the_overhead_is_charged_for_every_message_taken():
    q = BroadcastQueue(4, lambda: 9)
    q.queue(b"a" * 10, now=0.0)
    q.queue(b"b" * 10, now=0.0)
    assert q.get(3, 25, 0.0) == [b"b" * 10]  # 13 used; 25 - 13 - 3 = 9 free < 10
    assert q.get(3, 26, 0.0) == [b"a" * 10, b"b" * 10]  # 13 + 13 = 26


def test_nothing_is_taken_when_no_byte_is_left_even_an_empty_message():
    q = BroadcastQueue(4, lambda: 9)
    q.queue(b"", now=0.0)
    q.queue(b"z" * 5, now=0.0)
    assert q.get(1, 6, 0.0) == [b"z" * 5]


def test_queued_bytes_are_counted_through_queue_replace_finish_and_reset():
    q = BroadcastQueue(1, lambda: 9)  # retransmit limit 1: a message is done once sent
    assert q.nbytes == 0
    q.queue(b"abc", key="k", now=0.0)
    q.queue(b"defgh", now=0.0)
    assert q.nbytes == 8
    q.queue(b"ijklmno", key="k", now=0.0)  # replaces "abc"
    assert q.nbytes == 12
    assert q.get(0, 5, 0.0) == [b"defgh"]
    assert q.nbytes == 7
    q.queue(b"pq", now=0.0)
    q.reset(0.0)
    assert q.nbytes == 0 and len(q) == 0


def test_prune_reports_exactly_how_many_it_dropped():
    done: list[int] = []
    q = BroadcastQueue(4, lambda: 9)
    for i in range(5):
        q.queue(b"m" * 10, on_finished=lambda when, i=i: done.append(i), now=0.0)
    assert q.prune(5, now=0.0) == 0
    assert q.prune(2, now=0.0) == 3
    assert done == [0, 1, 2]  # the oldest go first
    assert len(q) == 2 and q.nbytes == 20


def test_prune_by_bytes_stops_once_within_the_limit():
    q = BroadcastQueue(4, lambda: 9)
    for _ in range(3):
        q.queue(b"m" * 10, now=0.0)
    assert q.prune(100, max_bytes=20, now=0.0) == 1  # 30 > 20: drop one; 20 is within
    assert q.nbytes == 20
    assert q.prune(100, max_bytes=5, now=0.0) == 2
    assert len(q) == 0


def test_a_key_can_be_queued_again_after_its_message_finished():
    done: list[str] = []
    q = BroadcastQueue(1, lambda: 9)
    q.queue(b"first", key="n1", on_finished=lambda when: done.append("first"), now=0.0)
    assert q.get(0, 100, 0.0) == [b"first"]
    assert done == ["first"]
    q.queue(b"second", key="n1", on_finished=lambda when: done.append("second"), now=0.0)
    q.queue(b"third", key="n1", on_finished=lambda when: done.append("third"), now=0.0)
    assert done == ["first", "second"]  # "first" is not finished a second time
    assert q.get(0, 100, 0.0) == [b"third"]
    assert done == ["first", "second", "third"]


def one_group(q: BroadcastQueue, transmits: int, length: int):
    return q._tiers[transmits].groups[length]


def test_stale_entries_are_compacted_past_the_slack():
    """Replacing keyed messages leaves stale entries; a group is rebuilt once its stale
    entries exceed live + STALE_SLACK (live counted after the removal: 19 here)."""
    q = BroadcastQueue(4, lambda: 9)
    for i in range(20):
        q.queue(b"%02d" % i, key=f"k{i}", now=0.0)
    group = one_group(q, 0, 2)
    assert (len(group.items), group.live, group.stale) == (20, 20, 0)
    assert group.seqs == sorted(group.seqs) == [b.seq for b in group.items]
    for n in range(1, 19 + STALE_SLACK + 1):
        q.queue(b"%02d" % (n % 20), key=f"k{n % 20}", now=0.0)
        assert (len(group.items), group.live, group.stale) == (20 + n, 20, n)
    q.queue(b"zz", key="k0", now=0.0)  # stale 36 > 19 + 16: rebuilt to the live entries
    assert (len(group.items), group.live, group.stale) == (20, 20, 0)
    assert group.seqs == [b.seq for b in group.items] and all(b.queued for b in group.items)


def test_taking_past_a_stale_entry_drops_it_from_the_count():
    q = BroadcastQueue(4, lambda: 9)  # retransmit limit 4
    q.queue(b"a", key="ka", now=0.0)
    q.queue(b"x", now=0.0)
    q.queue(b"b", key="kb", now=0.0)
    assert q.get(0, 3, 0.0) == [b"b", b"x", b"a"]  # all three now at one transmit
    q.queue(b"c", key="kb", now=0.0)  # "b" leaves a stale entry, the newest of tier 1
    tier1 = one_group(q, 1, 1)
    assert (tier1.live, tier1.stale, len(tier1.items)) == (2, 1, 3)
    assert q.get(0, 2, 0.0) == [b"c", b"x"]  # "c" from tier 0, then past stale "b" to "x"
    # Stale "b" popped and uncounted; "x" moved on to tier 2 and "c" into tier 1 beside "a".
    assert (tier1.live, tier1.stale, len(tier1.items)) == (2, 0, 2)
