"""The operations an agent offers its operator surfaces (issue 12 item 4, issue 14).

The HTTP listener (:mod:`pyserf.http`) depends on this Protocol only, never on the runtime's
Agent class, so it can be tested against a fake and the runtime can change underneath it.
:class:`pyserf.agent.agent.Agent` satisfies it (checked in tests/unit/test_http_agent_api.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pyserf.serf.internal_queries import KeyOperation
    from pyserf.serf.members import Member


class QueryHandle(Protocol):
    """A running query; setting ``closed`` stops delivering its acks and responses."""

    closed: bool


@runtime_checkable
class AgentAPI(Protocol):
    """What an operator surface may ask of a running agent."""

    def members(self) -> list[Member]:
        """Every member this agent knows, itself included, in serf's order."""
        ...

    def local_member(self) -> Member:
        ...

    def stats(self) -> dict[str, dict[str, str]]:
        """What ``serf info`` shows."""
        ...

    async def join(self, addresses: list[str], replay: bool, *, logged: bool = True
                   ) -> tuple[int, str | None]:
        """Nodes contacted and an error text (None when it worked)."""
        ...

    async def leave(self) -> str | None:
        ...

    def stop(self, exit_code: int) -> None:
        """Shut the agent down soon (after a leave asked for by an operator)."""
        ...

    async def force_leave(self, node: str, prune: bool) -> str | None:
        ...

    def local_tags(self) -> dict[str, str]:
        ...

    async def set_tags(self, tags: dict[str, str]) -> str | None:
        """Replace this node's tags; SerfError when they do not fit a message."""
        ...

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        """Fire a user event; SerfError when it is too large."""
        ...

    def query(self, name: str, payload: bytes, *, filter_nodes: list[str],
              filter_tags: dict[str, str], request_ack: bool, relay_factor: int,
              timeout: float, on_ack: Callable[[str], None],
              on_response: Callable[[str, bytes], None],
              on_done: Callable[[], None]) -> QueryHandle:
        """Start a query (timeout 0: serf's default); SerfError when serf refuses it."""
        ...

    def coordinate(self, node: str) -> dict[str, Any] | None:
        """The node's network coordinate as serf's RPC sends it, or None if unknown."""
        ...

    async def key_operation(self, name: str, key: bytes) -> KeyOperation:
        """A cluster-wide keyring query (install/use/remove/list)."""
        ...

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        """Call ``listener`` with every (coalesced) event; returns the unsubscribe call."""
        ...
