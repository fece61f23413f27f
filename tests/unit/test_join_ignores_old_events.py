"""A join that ignores old events (the default; ``-replay`` turns it off) must not deliver the
events the cluster already had, even when their gossip overtakes the join's push-pull reply.

Serf sets its minimum event time only when the reply is merged, so an old event gossiped to the
new node a moment earlier reaches its handlers. pyserf holds gossiped events while such a join
is pending and filters them once the cluster's event time is known.
"""

from __future__ import annotations

from pyserf.serf import messages as m
from pyserf.serf.events import UserEventReceived
from pyserf.sim.network import SimNetwork, SimNode


def user_events(node: SimNode) -> list[str]:
    return [e.name for e in node.events if isinstance(e, UserEventReceived)]


def gossip_overtakes_join(ignore_old: bool) -> tuple[SimNetwork, SimNode, SimNode]:
    """b joins a while a's old event is gossiped to b before a's push-pull reply arrives."""
    net = SimNetwork(seed=7)
    a = net.add_node("a", "10.0.0.1")
    a.serf.user_event("old-news", b"x", coalesce=False, now=net.now)
    net.run_until(1.0)
    [old_ltime] = [slot[0] for slot in a.serf.event_buffer if slot is not None]
    b = net.add_node("b", "10.0.0.2")
    joined: list = []
    net.when_done(b, b.serf.join([("a", a.addr)], ignore_old, net.now),
                  lambda outcome, when: joined.append(outcome))
    net._pump(b)
    # The gossip of the old event lands before the push-pull reply does.
    raw = m.UserEvent(old_ltime, "old-news", b"x", False).encode()
    b.serf.memberlist.delegate.notify_msg(raw, net.now, a.addr)
    assert not b.serf.drops.counts
    net._pump(b)
    net.run_until(net.now + 3.0)
    assert joined and joined[0].contacted == 1
    return net, a, b


def test_old_event_gossiped_before_the_join_reply_is_not_delivered() -> None:
    net, a, b = gossip_overtakes_join(ignore_old=True)
    assert user_events(b) == []
    # Events fired after the join are delivered as usual.
    a.serf.user_event("fresh", b"y", coalesce=False, now=net.now)
    net.run_until(net.now + 2.0)
    assert user_events(b) == ["fresh"]


def test_replaying_join_delivers_the_old_event_once() -> None:
    _, _, b = gossip_overtakes_join(ignore_old=False)
    assert user_events(b) == ["old-news"]
