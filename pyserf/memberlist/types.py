"""The records the membership machine and its callers share: members, the actions the caller
carries out, the configuration, and the delegate the layer above (serf) provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, overload

from pyserf.gocompat.hostport import join_host_port
from pyserf.memberlist import security
from pyserf.memberlist.codec import Alive, NodeStateKind
from pyserf.memberlist.profiles import LAN, Timing

if TYPE_CHECKING:
    from pyserf.memberlist.broadcast import BroadcastQueue

PROTOCOL_MIN = 1
PROTOCOL_MAX = 5
PROTOCOL_CUR = 2

Address = tuple[str, int]


@dataclass(slots=True)
class Node:
    name: str
    addr: str
    port: int
    meta: bytes = b""
    incarnation: int = 0
    state: NodeStateKind = NodeStateKind.DEAD
    state_change: float = 0.0
    pmin: int = 0
    pmax: int = 0
    pcur: int = 0
    dmin: int = 0
    dmax: int = 0
    dcur: int = 0
    # This member's push-pull entry as last encoded. Whoever changes a field the entry
    # carries (all of the above but state_change) sets it back to None.
    wire: bytes | None = field(default=None, repr=False, compare=False)
    # The last alive message about this member found to be old news (an Alive record; they
    # are shared by their bytes): the same record again is old news too, until the member's
    # address changes (which sets this back to None).
    old_news: Alive | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> Address:
        return (self.addr, self.port)

    @property
    def vsn(self) -> bytes:
        return bytes((self.pmin, self.pmax, self.pcur, self.dmin, self.dmax, self.dcur))

    def set_vsn(self, vsn: bytes) -> None:
        if len(vsn) >= 6:
            self.pmin, self.pmax, self.pcur, self.dmin, self.dmax, self.dcur = vsn[:6]
            self.wire = None

    def dead_or_left(self) -> bool:
        return self.state in (NodeStateKind.DEAD, NodeStateKind.LEFT)


@dataclass(slots=True)
class SendPacket:
    addr: Address
    data: bytes


@dataclass(slots=True)
class OpenStream:
    """Connect to ``addr``, write ``data``, read one reply message, then report back."""

    stream_id: int
    addr: Address
    data: bytes
    deadline: float


@dataclass
class MemberlistConfig:
    name: str
    advertise_addr: str
    advertise_port: int
    bind_port: int = 7946
    timing: Timing = LAN
    keyring: security.Keyring | None = None
    enable_compression: bool = True
    delegate_versions: tuple[int, int, int] = (2, 5, 5)
    # pyserf extension: gossip new messages at once instead of at the next tick.
    expedite_gossip: bool = True
    # pyserf extension: after our join, and on some of the joins we hear of (~2 nodes per
    # change cluster-wide), run an extra push-pull so a node that missed an alive by gossip
    # catches up in about a second, not at the next periodic sync (30 s+).
    eager_sync: bool = True


class Delegate(Protocol):
    """What the layer above (serf) provides; every call is synchronous and does no I/O."""

    def node_meta(self, limit: int) -> bytes: ...
    def notify_msg(self, buf: bytes, now: float, source: Address | None = None) -> None: ...
    def broadcast_queues(self) -> Sequence[BroadcastQueue]: ...
    def local_state(self, join: bool, now: float) -> bytes: ...
    def merge_remote_state(self, buf: bytes, join: bool, now: float,
                           source: Address | None = None) -> None: ...
    def notify_join(self, node: Node, now: float) -> None: ...
    def notify_leave(self, node: Node, now: float) -> None: ...
    def notify_update(self, node: Node, now: float) -> None: ...
    def notify_conflict(self, existing: Node, other: Node, now: float) -> None: ...
    def ack_payload(self) -> bytes | None: ...
    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes | None,
                             now: float) -> None: ...


@dataclass
class JoinOutcome:
    contacted: int = 0
    errors: list[str] = field(default_factory=list)


class StreamError(Exception):
    """A stream could not be read; the message goes back to the peer as an err reply."""


def peer_text(addr: Address) -> str:
    """A peer's address as logs and drop records name it (host:port, IPv6 bracketed)."""
    return join_host_port(str(addr[0]), addr[1])


class AllBut(Sequence[Node]):
    """``nodes`` without the entry at ``skip``, in order, without copying: the gossip
    candidates while every other member is alive or suspect, and the push-pull candidates
    while every other is alive (``random.sample`` and ``choice`` draw from it exactly as from
    the list)."""

    __slots__ = ("nodes", "skip")

    def __init__(self, nodes: list[Node], skip: int) -> None:
        self.nodes = nodes
        self.skip = skip

    def __len__(self) -> int:
        return len(self.nodes) - 1

    @overload
    def __getitem__(self, index: int) -> Node: ...
    @overload
    def __getitem__(self, index: slice) -> list[Node]: ...

    def __getitem__(self, index: int | slice) -> Node | list[Node]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.nodes[index + 1 if index >= self.skip else index]
