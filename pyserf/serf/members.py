"""Serf's member model: a member's status, what serf reports about it, and its bookkeeping."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

from pyserf.memberlist.state import Node

log = logging.getLogger("pyserf.serf")


class MemberStatus(IntEnum):
    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4

    def label(self) -> str:
        return self.name.lower()


class SerfState(IntEnum):
    ALIVE = 0
    LEAVING = 1
    LEFT = 2
    SHUTDOWN = 3


@dataclass(slots=True)
class Member:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    protocol_min: int = 1
    protocol_max: int = 5
    protocol_cur: int = 2
    delegate_min: int = 2
    delegate_max: int = 5
    delegate_cur: int = 5

    def copy(self) -> Member:
        return Member(self.name, self.addr, self.port, dict(self.tags), self.status,
                      self.protocol_min, self.protocol_max, self.protocol_cur,
                      self.delegate_min, self.delegate_max, self.delegate_cur)


@dataclass(slots=True)
class MemberState:
    member: Member
    status_ltime: int = 0
    leave_time: float = 0.0


def copy_versions(member: Member, node: Node) -> None:
    """Take a memberlist node's protocol and delegate versions into the member."""
    member.protocol_min, member.protocol_max, member.protocol_cur = \
        node.pmin, node.pmax, node.pcur
    member.delegate_min, member.delegate_max, member.delegate_cur = \
        node.dmin, node.dmax, node.dcur
