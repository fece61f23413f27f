"""Bounds on what peers can make the serf layer hold: received event sizes, the broadcast
queues, and the recent-events buffer (the adversary's handler flood reached 377 MiB before)."""

from __future__ import annotations

import msgpack

from pyserf.memberlist.broadcast import BroadcastQueue
from pyserf.serf import messages as m
from pyserf.serf.core import MAX_QUEUE_BYTES
from pyserf.serf.events import UserEventReceived
from pyserf.serf.user_events import MAX_EVENT_BUFFER_BYTES, USER_EVENT_SIZE_HARD_LIMIT
from pyserf.sim.network import SimNetwork

PEER = ("10.0.0.66", 7946)


def event(ltime: int, name: str, payload: bytes) -> bytes:
    return bytes((m.SerfMsg.USER_EVENT,)) + msgpack.packb(
        {"LTime": ltime, "Name": name, "Payload": payload, "CC": False}, use_bin_type=False)


def node():
    net = SimNetwork(seed=7)
    a = net.add_node("a", "10.0.0.1")
    return net, a


def test_a_received_event_over_serfs_sane_limit_is_dropped():
    net, a = node()
    before = a.serf.drops.total()
    a.serf.memberlist.delegate.notify_msg(
        event(5, "big", bytes(USER_EVENT_SIZE_HARD_LIMIT)), net.now, PEER)
    assert not [e for e in a.serf.events() if isinstance(e, UserEventReceived)]
    assert len(a.serf.event_broadcasts) == 0
    assert a.serf.drops.total() == before + 1
    a.serf.memberlist.delegate.notify_msg(
        event(6, "ok", bytes(USER_EVENT_SIZE_HARD_LIMIT - 2)), net.now, PEER)
    assert [e.name for e in a.serf.events() if isinstance(e, UserEventReceived)] == ["ok"]


def test_an_event_flood_keeps_queues_and_buffer_within_their_bounds():
    net, a = node()
    payload = bytes(9000)
    delivered = 0
    for i in range(6000):
        # Many events per Lamport time (as a flood at one time would send), then new times.
        a.serf.memberlist.delegate.notify_msg(event(10 + i // 100, f"e{i}", payload), net.now, PEER)
        delivered += sum(isinstance(e, UserEventReceived) for e in a.serf.events())
    queue = a.serf.event_broadcasts
    assert len(queue) <= a.serf.config.max_queue_depth
    assert queue.nbytes <= MAX_QUEUE_BYTES
    slots = len(a.serf.event_buffer)
    assert a.serf._event_buffer_bytes <= MAX_EVENT_BUFFER_BYTES + slots * USER_EVENT_SIZE_HARD_LIMIT
    held = sum(len(n) + len(p) for slot in a.serf.event_buffer if slot for n, p in slot[1])
    assert held == a.serf._event_buffer_bytes
    assert 0 < delivered < 6000  # some were refused once the buffer was full


def test_prune_by_bytes_drops_the_oldest_first():
    finished: list[int] = []
    queue = BroadcastQueue(4, lambda: 10)
    for i in range(10):
        queue.queue(bytes([i]) * 100, on_finished=lambda when, i=i: finished.append(i), now=0.0)
    assert queue.nbytes == 1000
    assert queue.prune(100, max_bytes=450, now=1.0) == 6
    assert finished == [0, 1, 2, 3, 4, 5] and queue.nbytes == 400 and len(queue) == 4
    queue.reset(2.0)
    assert queue.nbytes == 0
