"""The operations an agent offers its operator surfaces (issue 12 item 4, issue 14).

The RPC server (:mod:`pyserf.agent.rpc`), the HTTP listener (:mod:`pyserf.http`), the event
handler scripts (:mod:`pyserf.agent.handlers`) and mDNS discovery (:mod:`pyserf.agent.discovery`)
depend on this Protocol only, never on the runtime's Agent class or its serf machine, so they
can be tested against a fake and the runtime can change underneath them. Every operation that
changes the machine sends what it produced before it returns: no caller has to pump.
:class:`pyserf.agent.agent.Agent` satisfies it (checked in tests/unit/test_http_agent_api.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pyserf.agent.logs import AgentLogHandler
    from pyserf.serf.events import QueryReceived
    from pyserf.serf.internal_queries import KeyOperation
    from pyserf.serf.members import Member


class QueryHandle(Protocol):
    """A running query; setting ``closed`` stops delivering its acks and responses."""

    closed: bool


@runtime_checkable
class AgentAPI(Protocol):
    """What an operator surface may ask of a running agent."""

    @property
    def node_name(self) -> str:
        ...

    @property
    def advertise(self) -> tuple[str, int]:
        """The address other members reach this agent at (what discovery announces)."""
        ...

    @property
    def log_handler(self) -> AgentLogHandler | None:
        """The agent's log lines for ``serf monitor``; None when they go elsewhere."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a task the agent owns: it counts in ``stats`` and is cancelled at shutdown."""
        ...

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

    def start_query(self, name: str, payload: bytes, *,
                    on_ack: Callable[[str, float], None],
                    on_response: Callable[[str, bytes, float], None],
                    on_done: Callable[[float], None], **options: Any) -> QueryHandle:
        """A query with serf's options (filters, ack, relay, timeout, finish_early); the
        callbacks get the loop time of each answer. SerfError when serf refuses it."""
        ...

    def respond(self, query: QueryReceived, payload: bytes) -> None:
        """Answer a query this agent received; SerfError when it cannot be answered."""
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
