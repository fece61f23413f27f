"""The events the serf layer reports upwards (member changes, user events, queries)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyserf.serf.members import Member, MemberStatus

if TYPE_CHECKING:
    from pyserf.memberlist.types import Address, JoinOutcome
    from pyserf.serf.internal_queries import KeyOperation

MEMBER_EVENT_LOG = {"member-join": "EventMemberJoin", "member-leave": "EventMemberLeave",
                    "member-failed": "EventMemberFailed", "member-update": "EventMemberUpdate",
                    "member-reap": "EventMemberReap"}


@dataclass(frozen=True, slots=True)
class MemberEvent:
    type: str  # member-join, member-leave, member-failed, member-update, member-reap
    members: list[Member[MemberStatus]]


@dataclass(frozen=True, slots=True)
class UserEventReceived:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool


# Not frozen: respond() marks it answered (serf's Query allows one response).
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


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """The serf layer decided this agent must stop (it lost a name conflict)."""

    reason: str



# ---- the outcomes of operations ---------------------------------------------------------------
# An operation (join, leave, force_leave, set_tags, user_event, query, key_operation) returns a
# Handle at once; its outcome arrives later in events() as records naming that handle, with the
# time each happened.

_handle_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Handle:
    """Names one operation; unique in the process, so shells may pool them across machines."""

    id: int


def new_handle() -> Handle:
    return Handle(next(_handle_ids))


@dataclass(frozen=True, slots=True)
class JoinFinished:
    handle: Handle
    outcome: JoinOutcome
    at: float


@dataclass(frozen=True, slots=True)
class _Finished:
    handle: Handle
    error: str | None  # serf's error text; None when the operation succeeded
    at: float


@dataclass(frozen=True, slots=True)
class LeaveFinished(_Finished):
    """A graceful leave ended (None: left)."""


@dataclass(frozen=True, slots=True)
class ForceLeaveFinished(_Finished):
    """A force-leave ended (None: its intent finished gossiping, or nobody was left to tell)."""


@dataclass(frozen=True, slots=True)
class TagsSet(_Finished):
    """New tags were set (None: they finished gossiping)."""


@dataclass(frozen=True, slots=True)
class UserEventQueued(_Finished):
    """A user event was delivered locally and queued for gossip, at once (error is None: an
    event that is rejected raises SerfError instead, as tags that do not fit do)."""


@dataclass(frozen=True, slots=True)
class KeyOperationFinished:
    """A cluster-wide key operation ended: every member's answer, as ``serf keys`` reports."""

    handle: Handle
    result: KeyOperation
    at: float


@dataclass(frozen=True, slots=True)
class KeyringChanged:
    """A key query changed this node's keyring (the agent rewrites its keyring file)."""


@dataclass(frozen=True, slots=True)
class QueryAckReceived:
    handle: Handle
    node: str
    at: float


@dataclass(frozen=True, slots=True)
class QueryResponseReceived:
    handle: Handle
    node: str
    payload: bytes
    at: float


@dataclass(frozen=True, slots=True)
class QueryFinished:
    """No more answers to the query will be reported (its timeout, or all answered)."""

    handle: Handle
    at: float


QUERY_RESULTS = (QueryAckReceived, QueryResponseReceived, QueryFinished)
OperationFinished = (JoinFinished | LeaveFinished | ForceLeaveFinished | TagsSet
                     | UserEventQueued | KeyOperationFinished)
OPERATION_RESULTS = (JoinFinished, LeaveFinished, ForceLeaveFinished, TagsSet, UserEventQueued,
                     KeyOperationFinished)

# Everything Serf.events() returns.
SerfEvent = (MemberEvent | UserEventReceived | QueryReceived | ShutdownRequested | KeyringChanged
             | OperationFinished | QueryAckReceived | QueryResponseReceived | QueryFinished)
