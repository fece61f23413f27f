"""Serf's member model: a member's status, what serf reports about it, and its bookkeeping.

Dependency-free (the standard library and gocompat) so the RPC client shares ``Member`` without
importing the agent or the protocol machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pyserf.gocompat.hostport import format_tcp_addr
from pyserf.gocompat.hostport import ip_string as go_ip_string

if TYPE_CHECKING:
    from pyserf.memberlist.types import Node


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


# A member's status: a MemberStatus inside the agent; over RPC serf sends Go's label ("alive",
# "leaving", ...), which a client keeps as text.
StatusT = TypeVar("StatusT", MemberStatus, str)


@dataclass(slots=True)
class Member(Generic[StatusT]):
    """One cluster member: what serf knows of it, and what ``members`` reports over RPC."""

    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: StatusT
    protocol_min: int = 1
    protocol_max: int = 5
    protocol_cur: int = 2
    delegate_min: int = 2
    delegate_max: int = 5
    delegate_cur: int = 5
    # The address bytes as an RPC reply carried them (a client's record); empty in the agent.
    raw_addr: bytes = b""

    def copy(self) -> Member[StatusT]:
        return Member(self.name, self.addr, self.port, dict(self.tags), self.status,
                      self.protocol_min, self.protocol_max, self.protocol_cur,
                      self.delegate_min, self.delegate_max, self.delegate_cur, self.raw_addr)

    @property
    def address(self) -> str:
        """``ip:port`` exactly as ``serf members`` prints it."""
        return format_tcp_addr(self.addr, self.port)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Member[str]:
        """A member from an RPC ``members`` record (the status stays Go's text)."""
        raw = rec.get("Addr") or b""
        if isinstance(raw, str):
            raw = raw.encode("latin-1", "replace")
        return Member(
            name=rec.get("Name") or "",
            addr=go_ip_string(raw),
            port=int(rec.get("Port") or 0),
            tags=dict(rec.get("Tags") or {}),
            status=rec.get("Status") or "",
            protocol_min=int(rec.get("ProtocolMin") or 0),
            protocol_max=int(rec.get("ProtocolMax") or 0),
            protocol_cur=int(rec.get("ProtocolCur") or 0),
            delegate_min=int(rec.get("DelegateMin") or 0),
            delegate_max=int(rec.get("DelegateMax") or 0),
            delegate_cur=int(rec.get("DelegateCur") or 0),
            raw_addr=bytes(raw),
        )


@dataclass(slots=True)
class MemberState:
    member: Member[MemberStatus]
    # Set through Intents._set_status_ltime, which also clears ``wire``.
    status_ltime: int = 0
    leave_time: float = 0.0
    # (name, status_ltime) packed as a push-pull state lists it, kept until the time changes:
    # every exchange lists every member, and few changed since the last one.
    wire: bytes | None = field(default=None, compare=False, repr=False)


def copy_versions(member: Member[MemberStatus], node: Node) -> None:
    """Take a memberlist node's protocol and delegate versions into the member."""
    member.protocol_min, member.protocol_max, member.protocol_cur = \
        node.pmin, node.pmax, node.pcur
    member.delegate_min, member.delegate_max, member.delegate_cur = \
        node.dmin, node.dmax, node.dcur
