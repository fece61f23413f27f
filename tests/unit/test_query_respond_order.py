"""Responding to a query checks what serf checks, in serf's order: size, then already sent,
then the deadline (serf/event.go respondWithMessageAndResponse), so the same mistake gets the
same error text from either implementation."""

from __future__ import annotations

import pytest

from pyserf.serf.config import SerfError
from pyserf.serf.events import QueryReceived
from pyserf.sim.network import SimNetwork


def received_query() -> tuple[SimNetwork, object, QueryReceived]:
    net = SimNetwork(seed=3)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    net.join(b, a)
    net.run_until(2.0)
    net.on_query(a, a.serf.query("ask", b"", net.now))
    net.run_until(net.now + 0.5)
    query = next(e for e in b.events if isinstance(e, QueryReceived))
    return net, b, query


def test_an_oversized_second_answer_is_refused_for_its_size() -> None:
    net, b, query = received_query()
    b.serf.respond(query, b"ok", net.now)
    too_big = b"x" * b.serf.config.query_response_size_limit
    with pytest.raises(SerfError, match="^response exceeds limit of 1024 bytes$"):
        b.serf.respond(query, too_big, net.now)
    with pytest.raises(SerfError, match="^response already sent$"):
        b.serf.respond(query, b"ok", net.now)


def test_a_late_answer_that_was_already_sent_says_so() -> None:
    net, b, query = received_query()
    b.serf.respond(query, b"ok", net.now)
    with pytest.raises(SerfError, match="^response already sent$"):
        b.serf.respond(query, b"ok", query.deadline + 1)
