"""The events the serf layer reports upwards (member changes, user events, queries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyserf.serf.members import Member

if TYPE_CHECKING:
    from pyserf.memberlist.state import Address

MEMBER_EVENT_LOG = {"member-join": "EventMemberJoin", "member-leave": "EventMemberLeave",
                    "member-failed": "EventMemberFailed", "member-update": "EventMemberUpdate",
                    "member-reap": "EventMemberReap"}


@dataclass(slots=True)
class MemberEvent:
    type: str  # member-join, member-leave, member-failed, member-update, member-reap
    members: list[Member]


@dataclass(slots=True)
class UserEventReceived:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(slots=True)
class QueryReceived:
    ltime: int
    name: str
    payload: bytes
    id: int
    source_addr: Address
    source_node: str
    deadline: float
    relay_factor: int
    responded: bool = False


@dataclass(slots=True)
class ShutdownRequested:
    """The serf layer decided this agent must stop (it lost a name conflict)."""

    reason: str

