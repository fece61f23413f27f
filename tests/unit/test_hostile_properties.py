"""Property tier: structurally valid, semantically hostile input for every message type.

Hypothesis draws messages whose fields hold boundary integers, wrong types, odd addresses,
hostile names and nested msgpack (tests/fuzz/strategies.py) and feeds them to the sans-I/O
machines through their public entry points (tests/fuzz/harness.py). After each example the
agent must keep the invariants: nothing escapes an entry point, it is alive, its incarnation
fits uint32 and every Lamport clock uint64, every known node has a valid address and port, it
answers a ping and a push-pull with data a Go peer decodes, every queued send is well formed,
a clearly invalid message changes nothing, and (in a subset) a fresh agent can still join it.

The default profile keeps the file under a minute; ``HYPOTHESIS_PROFILE=long`` runs ~20x more
examples, randomised (about 10 minutes).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyserf.memberlist import lzw
from pyserf.serf import internal_queries
from tests.fuzz import strategies as hs
from tests.fuzz import wire
from tests.fuzz.harness import OWN_NAME, PORT, Harness, Violation, quiet_pyserf_logs
from tests.fuzz.targets import LZW_TEST_LIMIT, harness, lzw_decompress

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
settings.register_profile("hostile", max_examples=80, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1500, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "hostile"))
# The slower properties (each example runs a simulated join) get a fraction of the examples.
SLOW = settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 3))
# One fresh-join check per this many examples (it runs several simulated seconds).
JOIN_CHECK_ONE_IN = 6


@pytest.fixture(autouse=True)
def _quiet_logs():
    with quiet_pyserf_logs():
        yield


def feed(h: Harness, msg: hs.Msg, entry) -> None:
    """Feed one message; a clearly invalid one must leave state and the send queue alone."""
    if msg.valid is not False:
        entry(msg.data)
        h.check()
        return
    before, sent = h.snapshot(), len(h.net.sent)
    entry(msg.data)
    h.check()
    after = h.snapshot()
    if after != before:
        raise Violation("invalid-changed-state", f"before {before!r}\nafter  {after!r}"[:600])
    if len(h.net.sent) != sent:
        raise Violation("invalid-was-answered", f"{h.net.sent[sent:]!r}"[:300])


def finish(h: Harness, join_check: int) -> None:
    h.check(deep=True)
    if join_check == 0:
        h.check_fresh_join()


def drive(h: Harness, msgs: list[hs.Msg], entry, join_check: int) -> None:
    for msg in msgs:
        feed(h, msg, entry)
    finish(h, join_check)


def _target(h: Harness) -> tuple[int, int]:
    return h.query.ltime, h.query.id


@PROFILE
@given(st.booleans(), st.integers(0, JOIN_CHECK_ONE_IN - 1), st.data())
def test_hostile_packets(encrypted, join_check, data):
    h = harness(encrypted=encrypted)
    drive(h, data.draw(st.lists(hs.packet(_target(h)), min_size=1, max_size=4)), h.packet,
          join_check)


@PROFILE
@given(st.integers(0, JOIN_CHECK_ONE_IN - 1), st.data())
def test_hostile_serf_messages(join_check, data):
    h = harness()
    drive(h, data.draw(st.lists(hs.serf_message(_target(h)), min_size=1, max_size=5)),
          h.serf_msg, join_check)


@PROFILE
@given(st.booleans(), st.integers(0, JOIN_CHECK_ONE_IN - 1),
       st.lists(hs.stream_message(), min_size=1, max_size=3))
def test_hostile_streams(encrypted, join_check, msgs):
    h = harness(encrypted=encrypted)
    drive(h, msgs, h.stream, join_check)


@PROFILE
@given(st.integers(0, JOIN_CHECK_ONE_IN - 1), hs.push_pull_stream())
def test_hostile_push_pull_replies_finish_the_join(join_check, msg):
    h = harness()
    stream_id, outcome = h.start_join()
    h.stream_reply(stream_id, msg.data, outcome)
    finish(h, join_check)


@PROFILE
@given(st.booleans(), st.integers(0, JOIN_CHECK_ONE_IN - 1),
       st.lists(hs.serf_state(), min_size=1, max_size=3))
def test_hostile_serf_push_pull_state(join, join_check, states):
    h = harness()
    drive(h, states, lambda data: h.serf_state(data, join), join_check)


@SLOW
@given(st.data())
def test_hostile_conflict_responses(data):
    """Someone claims our name: the conflict query must survive any answer, then end."""
    h = harness(real_peer=True)
    h.packet(wire.alive(OWN_NAME, bytes([10, 0, 0, 9]), PORT, 5))
    running = [c for lt, c in h.serf._queries.items() if c is not h.query]
    assert running, "a name conflict did not start the conflict resolution query"
    target = (running[0].ltime, running[0].id)
    for payload in data.draw(st.lists(hs.conflict_response(), min_size=1, max_size=4)):
        sender = data.draw(st.sampled_from(["peer", "other", OWN_NAME, ""]))
        h.packet(wire.user(wire.query_response(*target, sender, payload)))
        h.check()
    h.run(30.0)
    h.check(deep=True)


@PROFILE
@given(st.lists(hs.key_response(), max_size=4), st.integers(0, 5))
def test_hostile_key_responses_are_tallied_not_raised(payloads, num_nodes):
    op = internal_queries.KeyOperation(num_nodes)
    for i, payload in enumerate(payloads):
        try:
            op.add(f"n{i}", payload)
        except Exception as exc:  # noqa: BLE001 - the finding
            raise Violation("escaped", f"KeyOperation.add raised {exc!r}", exc) from None
    assert isinstance(op.error(), str)


@SLOW
@given(st.permutations(range(6)), st.lists(hs.packet(), max_size=3))
def test_own_incarnation_and_clocks_at_the_maxima(order, more):
    """Drive our own incarnation and Lamport clocks to their maxima, then carry on."""
    h = harness(real_peer=True)
    top = wire.U64_MAX
    pushes = [
        wire.msg(wire.SUSPECT, {"Incarnation": wire.U32_MAX, "Node": OWN_NAME, "From": "x"}),
        wire.alive(OWN_NAME, bytes([10, 0, 0, 1]), PORT, wire.U32_MAX),
        wire.user(wire.msg(wire.S_LEAVE, {"LTime": top, "Node": OWN_NAME})),
        wire.user(wire.msg(wire.S_USER_EVENT, {"LTime": top, "Name": "e", "Payload": b""})),
        wire.user(wire.query(top, 1, bytes([10, 0, 0, 2]), PORT)),
        wire.user(wire.msg(wire.S_JOIN, {"LTime": top - 1, "Node": "peer"})),
    ]
    for i in order:
        h.packet(pushes[i])
        h.check()
    for msg in more:
        feed(h, msg, h.packet)
    h.run(3.0)
    h.check(deep=True)
    h.check_fresh_join()


@PROFILE
@given(st.binary(max_size=4096))
def test_lzw_round_trips(data):
    assert lzw.decompress(lzw.compress(data), LZW_TEST_LIMIT) == data


@PROFILE
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=200).map(lzw.compress).map(
    lambda b: b[: len(b) // 2])))
def test_lzw_decompress_fails_cleanly(data):
    lzw_decompress(data)
