"""A push-pull leaves out the entries the receiver itself sent or holds byte for byte: merged,
they would change nothing, so skipping them must not change any outcome (issue 11: an
in-sync exchange at N members cost a decode and a merge per member)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.codec import Alive, Dead, NodeStateKind, PushPull, Suspect
from pyserf.memberlist.fields import U64_MAX, DecodeError
from pyserf.memberlist.memberlist import Memberlist
from pyserf.memberlist.profiles import LAN
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import MemberlistConfig
from pyserf.serf import messages as m
from pyserf.serf.delegate import SerfDelegate
from pyserf.sim.scenarios import Options, simulate
from tests.unit.test_state_transitions import Recorder

VSN = bytes((1, 5, 2, 2, 5, 5))


def machine(name: str, members: int) -> Memberlist:
    ml = Memberlist(MemberlistConfig(name, "10.9.9.9", 7946, timing=LAN), Recorder(),
                    Scheduler(), random.Random(1))
    ml.start(0.0)
    for i in range(members):
        ml._alive_node(Alive(1, f"m{i}", codec.ip_to_bytes(f"10.0.0.{i + 1}"), 7946, b"",
                             VSN), 0.0)
    return ml


def test_an_in_sync_state_decodes_only_what_differs() -> None:
    a, b = machine("a", 20), machine("b", 20)
    state = a._local_state(False, 1.0)[1:]
    _, own = b._encode_local_state(False, 1.0)
    remote = PushPull.decode_stream(state, lambda join: own())
    # Everything but the two machines' own entries is byte-identical.
    assert sorted(n.name for n in remote.nodes) == ["a"]
    assert len(PushPull.decode_stream(state).nodes) == 21
    # A join exchange is decoded whole: the merge syncs compare the peer's full list.
    join_state = a._local_state(True, 1.0)[1:]
    _, own = b._encode_local_state(True, 1.0)
    asked: list[bool] = []

    def known(join: bool) -> set[bytes]:
        asked.append(join)
        return own()

    assert PushPull.decode_stream(join_state, known).join
    assert asked == [True]


def test_a_newer_incarnation_is_not_skipped() -> None:
    a, b = machine("a", 5), machine("b", 5)
    a._alive_node(Alive(7, "m3", codec.ip_to_bytes("10.0.0.4"), 7946, b"x", VSN), 1.0)
    _, own = b._encode_local_state(False, 1.0)
    remote = PushPull.decode_stream(a._local_state(False, 1.0)[1:], lambda join: own())
    assert sorted(n.name for n in remote.nodes) == ["a", "m3"]


def test_suspect_entries_are_always_merged() -> None:
    """Merging a suspect entry confirms the suspicion in our own name (memberlist's
    mergeState does so), so it is never among the entries left out."""
    b = machine("b", 5)
    b._suspect_node(Suspect(1, "m2", "m4"), 1.0)
    assert b.node_map["m2"].state == NodeStateKind.SUSPECT
    state, own = b._encode_local_state(False, 1.0)
    entries = {n.name for n in PushPull.decode_stream(state[1:]).nodes}
    left_out = {n.name for n in PushPull.decode_stream(state[1:], lambda join: own()).nodes}
    assert entries == {"b", "m0", "m1", "m2", "m3", "m4"}
    assert left_out == {"m2"}


def _without_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = PushPull.decode_stream

    def decode_all(data: bytes, known: Any = None) -> PushPull:
        remote = decode(data)
        if known is not None:
            known(remote.join)  # the responder encodes its reply inside this call
        return remote

    monkeypatch.setattr(PushPull, "decode_stream", staticmethod(decode_all))


@pytest.mark.parametrize("scenario,nodes,extra", [
    ("join", 40, {}),
    ("fail", 30, {"loss": 0.05}),
    ("partition", 24, {}),
])
def test_skipping_changes_no_outcome(monkeypatch: pytest.MonkeyPatch, scenario: str,
                                     nodes: int, extra: dict[str, Any]) -> None:
    """The same seed gives the same report, every count included, with and without it."""
    def run() -> dict[str, Any]:
        report = simulate(Options(nodes=nodes, scenario=scenario, seed=11, **extra))
        report.pop("wall_s")
        return report

    decode = PushPull.decode_stream
    skipped = [0]

    def counting(data: bytes, known: Any = None) -> PushPull:
        remote = decode(data, known)
        skipped[0] += len(decode(data).nodes) - len(remote.nodes)
        return remote

    monkeypatch.setattr(PushPull, "decode_stream", staticmethod(counting))
    with_skip = run()
    assert skipped[0] > nodes  # it did leave entries out
    monkeypatch.setattr(PushPull, "decode_stream", staticmethod(decode))
    _without_skipping(monkeypatch)
    assert run() == with_skip


@pytest.mark.parametrize("seed", range(5))
def test_the_kept_entries_match_the_members(seed: int) -> None:
    """Each member keeps its encoded entry between changes: after any sequence of alive,
    suspect, dead, refute and tag updates every kept entry equals a fresh encoding."""
    rng = random.Random(seed)
    ml = machine("me", 8)
    names = ["me"] + [f"m{i}" for i in range(8)]
    now = 1.0
    for step in range(400):
        now += 0.01
        name = rng.choice(names)
        node = ml.node_map[name]
        inc = node.incarnation + rng.choice((-1, 0, 1, 2))
        op = rng.randrange(5)
        if op == 0:
            meta = rng.choice((b"", b"x", b"yy"))
            ml._alive_node(Alive(max(inc, 0), name, codec.ip_to_bytes(node.addr), node.port,
                                 meta, VSN), now)
        elif op == 1:
            ml._suspect_node(Suspect(max(inc, 0), name, rng.choice(names)), now)
        elif op == 2:
            ml._dead_node(codec.Dead(max(inc, 0), name, rng.choice((name, "other"))), now)
        elif op == 3:
            ml.update_node(now, 1.0, lambda error, when: None)
        else:
            ml._encode_local_state(rng.random() < 0.5, now)
        ml.scheduler.run_due(now)
        for n in ml.nodes:
            fresh = codec.node_state_entry(n.name, n.addr, n.port, n.meta, n.incarnation,
                                           n.state, n.pmin, n.pmax, n.pcur, n.dmin, n.dmax,
                                           n.dcur)
            assert n.wire in (None, fresh), (step, n)
    state, _ = ml._encode_local_state(False, now)
    assert state == ml._encode_local_state(False, now)[0]


# ---- serf's half: status times equal to the receiver's ----------------------------------------

def _serf_state(members: dict[str, int], left: list[str] | None = None) -> bytes:
    return m.PushPullState(ltime=50, status_ltimes=members, left_members=left or [],
                           event_ltime=1, events=[], query_ltime=1).encode()


def _held(times: dict[str, int]) -> dict[bytes, int]:
    return {name.encode(): t for name, t in times.items()}


def test_serf_status_times_equal_to_ours_are_left_out() -> None:
    held = _held({"a": 3, "b": 4, "c": 5})
    state = _serf_state({"a": 3, "b": 7, "c": 5, "d": 1}, left=["c"])
    everything = {"a": 3, "b": 7, "c": 5, "d": 1}
    pp = m.PushPullState.decode_state(state, lambda body: held)
    # a: equal, left out; b: newer; c: equal but listed as left (its leave time is read from
    # it); d: unknown to us.
    assert pp.status_ltimes == {"b": 7, "c": 5, "d": 1}
    assert m.PushPullState.decode_state(state).status_ltimes == everything


def test_serf_left_out_entries_still_refuse_a_bad_value() -> None:
    """Only entries equal to ours are left out: any other value is validated as before."""
    for bad in (-1, 1.5, b"x"):
        state = bytes((m.SerfMsg.PUSH_PULL,)) + codec.pack({
            "LTime": 5, "StatusLTimes": {"a": 3, "b": bad}, "LeftMembers": [],
            "EventLTime": 1, "Events": [], "QueryLTime": 1})
        with pytest.raises(DecodeError):
            m.PushPullState.decode_state(state, lambda body: _held({"a": 3, "b": 1}))


def _serf_held(clock: int, members: dict[str, int], state: bytes, top: int | None = None
               ) -> Any:
    """The delegate's answer for a serf whose highest status time ever set is ``top`` (the
    members' highest when not given)."""
    held = _held(members)
    serf = SimpleNamespace(members={name: SimpleNamespace(status_ltime=t)
                                    for name, t in members.items()},
                           status_times=held, clock=SimpleNamespace(time=clock),
                           status_ltime_top=max(members.values(), default=0) if top is None
                           else top)
    delegate = SerfDelegate.__new__(SerfDelegate)
    delegate.serf = serf  # type: ignore[assignment]
    body = m.decode_body(state[1:])
    answer = delegate._held_status_ltimes(body)
    assert answer is None or answer is held
    return answer


def test_serf_entries_are_left_out_only_while_our_clock_is_past_them() -> None:
    state = _serf_state({"a": 3, "b": 4})
    assert _serf_held(10, {"a": 3, "b": 4}, state) is not None
    # A status time our clock has not passed: merging it would move the clock.
    assert _serf_held(4, {"a": 3, "b": 4}, state) is None
    # Nor one set once and gone since (a reaped member's): the bound covers it.
    assert _serf_held(10, {"a": 3, "b": 4}, state, top=10) is None
    assert _serf_held(10, {}, state) is None
    # Times near the wrap: witnessing them could wrap the clock mid-merge.
    near = _serf_state({"a": U64_MAX - 1})
    assert _serf_held(10, {"a": 3}, near) is None
    sender_near = bytes((m.SerfMsg.PUSH_PULL,)) + codec.pack({
        "LTime": U64_MAX, "StatusLTimes": {"a": 3}, "LeftMembers": [], "EventLTime": 1,
        "Events": [], "QueryLTime": 1})
    assert _serf_held(10, {"a": 3}, sender_near) is None


@pytest.mark.parametrize("scenario,nodes,extra", [
    ("join", 40, {}),
    ("fail", 30, {"loss": 0.05}),
    ("leave", 30, {}),
    ("event", 30, {"loss": 0.05}),
    ("partition", 24, {}),
])
def test_leaving_out_serf_entries_changes_no_outcome(monkeypatch: pytest.MonkeyPatch,
                                                     scenario: str, nodes: int,
                                                     extra: dict[str, Any]) -> None:
    def run() -> dict[str, Any]:
        report = simulate(Options(nodes=nodes, scenario=scenario, seed=11, **extra))
        report.pop("wall_s")
        return report

    decode = m.PushPullState.decode
    left_out = [0]

    def counting(body: Any, held: Any = None) -> m.PushPullState:
        pp = decode(body, held)
        left_out[0] += len(decode(body).status_ltimes) - len(pp.status_ltimes)
        return pp

    monkeypatch.setattr(m.PushPullState, "decode", classmethod(
        lambda cls, body, held=None: counting(body, held)))
    with_skip = run()
    assert left_out[0] > nodes
    monkeypatch.setattr(m.PushPullState, "decode", classmethod(
        lambda cls, body, held=None: decode(body)))
    monkeypatch.setattr(SerfDelegate, "_held_status_ltimes", lambda self, body: None)
    assert run() == with_skip


def test_periodic_push_pull_picks_only_other_alive_members() -> None:
    """While every other member is alive the pick skips building the candidate list; a
    suspect or dead member must still never be picked, nor ourselves."""
    ml = machine("a", 6)
    picked: list[tuple[str, int]] = []
    ml._push_pull = lambda addr, join, now, done: picked.append(addr)  # type: ignore[method-assign]

    def picks() -> set[str]:
        picked.clear()
        for _ in range(300):
            ml._push_pull_random_peer(1.0)
        return {addr for addr, _ in picked}

    others = {f"10.0.0.{i + 1}" for i in range(6)}
    assert picks() == others
    ml._suspect_node(Suspect(1, "m0", "m1"), 1.0)
    assert picks() == others - {"10.0.0.1"}
    ml._dead_node(Dead(1, "m1", "m2"), 1.0)
    assert picks() == others - {"10.0.0.1", "10.0.0.2"}
