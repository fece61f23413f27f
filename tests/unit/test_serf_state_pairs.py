"""Serf's push-pull state is built from what the members keep between changes (each member's
packed status pair, the names marked leaving, the highest status time set), and a decode
compares entries with a map of status times kept up to date: the state must equal, byte for
byte, the one a full pass over the members encodes, and the map the one it would build, at
every exchange of simulated runs where members join, leave, fail and get partitioned."""

from __future__ import annotations

from typing import Any

import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.codec import Alive
from pyserf.memberlist.timers import Scheduler
from pyserf.memberlist.types import MemberlistConfig
from pyserf.serf import messages as m
from pyserf.serf.config import SerfConfig
from pyserf.serf.core import Serf
from pyserf.serf.delegate import SerfDelegate
from pyserf.serf.members import MemberStatus
from pyserf.sim.scenarios import Options, simulate

VSN = bytes((1, 5, 2, 2, 5, 5))


def full_pass_state(delegate: SerfDelegate) -> bytes:
    """The state as written before members kept anything: every member visited."""
    serf = delegate.serf
    leaving = [name for name, ms in serf.members.items()
               if ms.member.status == MemberStatus.LEAVING and ms.status_ltime > 0]
    times = {name: ms.status_ltime - (name in leaving) for name, ms in serf.members.items()}
    return m.PushPullState(
        ltime=serf.clock.time, status_ltimes=times,
        left_members=[ms.member.name for ms in serf.left_members] + leaving,
        event_ltime=serf.event_clock.time, events=list(serf.event_buffer),
        query_ltime=serf.query_clock.time).encode()


@pytest.mark.parametrize("scenario,nodes,extra", [
    ("join", 40, {}),
    ("leave", 30, {"loss": 0.05}),
    ("fail", 30, {}),
    ("partition", 24, {}),
])
def test_state_equals_a_full_pass_at_every_exchange(monkeypatch: pytest.MonkeyPatch,
                                                    scenario: str, nodes: int,
                                                    extra: dict[str, Any]) -> None:
    built = SerfDelegate._local_state
    seen = {"states": 0}

    def checked(self: SerfDelegate) -> bytes:
        serf = self.serf
        leaving = {name for name, ms in serf.members.items()
                   if ms.member.status == MemberStatus.LEAVING}
        assert leaving <= serf.marked_leaving
        assert serf.status_ltime_top >= max(
            (ms.status_ltime for ms in serf.members.values()), default=0)
        assert serf.status_times == {name.encode(): ms.status_ltime
                                     for name, ms in serf.members.items()}
        expected = full_pass_state(self)
        state = built(self)
        assert state == expected
        seen["states"] += 1
        return state

    monkeypatch.setattr(SerfDelegate, "_local_state", checked)
    report = simulate(Options(nodes=nodes, scenario=scenario, seed=5, **extra))
    assert report["converged"]
    assert seen["states"] >= nodes


def test_state_follows_leaves_rejoins_early_intents_and_reaps() -> None:
    """The leaving paths the scenarios above do not reach during an exchange."""
    serf = Serf(SerfConfig(node_name="a"),
                MemberlistConfig(name="a", advertise_addr="10.0.0.1", advertise_port=7946),
                Scheduler())
    delegate = serf.memberlist.delegate
    assert isinstance(delegate, SerfDelegate)

    def learn(name: str, index: int) -> None:
        serf.memberlist._alive_node(Alive(1, name, codec.ip_to_bytes(f"10.0.0.{index}"), 7946,
                                          m.encode_tags({}, 5), VSN), 0.0)

    def same() -> bytes:
        state = delegate._local_state()
        assert state == full_pass_state(delegate)
        assert serf.status_times == {name.encode(): ms.status_ltime
                                     for name, ms in serf.members.items()}
        return state

    serf.memberlist.start(0.0)
    for i, name in enumerate(("b", "c", "d"), start=2):
        learn(name, i)
    serf._handle_join_intent(m.Join(4, "b"), 0.0)
    same()
    # b leaves: listed among the left members, its time lowered by one.
    serf._handle_leave_intent(m.Leave(7, "b"), 0.0)
    assert serf.members["b"].member.status == MemberStatus.LEAVING
    same()
    # ... and comes back: no longer leaving; the mark is dropped at the next state.
    serf._handle_join_intent(m.Join(9, "b"), 0.0)
    assert same() == full_pass_state(delegate)
    assert "b" not in serf.marked_leaving
    # An intent that arrives before its member: e is leaving from the moment it is learned.
    serf._handle_leave_intent(m.Leave(12, "e"), 0.0)
    learn("e", 5)
    assert serf.members["e"].member.status == MemberStatus.LEAVING
    same()
    # Reaped while marked: gone from the state and from the marks.
    serf._erase(serf.members["e"])
    same()
    assert "e" not in serf.marked_leaving
    assert serf.status_ltime_top == 12
