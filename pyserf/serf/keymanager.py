"""Cluster-wide keyring operations (serf's key manager): install, use, remove or list a key on
every member through the internal key queries, gathering each member's answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyserf.serf import internal_queries
from pyserf.serf.events import KeyOperationFinished, new_handle

if TYPE_CHECKING:
    from pyserf.memberlist.memberlist import Memberlist
    from pyserf.serf.events import Handle, SerfEvent
    from pyserf.serf.queries import QueryCollector


class KeyManager:
    """Serf's key operations; mixed into Serf, whose state it uses."""

    memberlist: Memberlist
    _events: list[SerfEvent]
    _query: Callable[..., QueryCollector]

    def key_operation(self, name: str, key: bytes, now: float) -> Handle:
        """Run the key query ``name`` (internal_queries.INSTALL_KEY, USE_KEY, REMOVE_KEY or
        LIST_KEYS) across the cluster; a KeyOperationFinished naming the handle carries every
        member's answer, once all have answered or at the query's timeout."""
        handle = new_handle()
        op = internal_queries.KeyOperation(self.memberlist.num_alive())
        finished = False

        def finish(when: float) -> None:
            nonlocal finished
            if not finished:
                finished = True
                self._events.append(KeyOperationFinished(handle, op, when))

        def on_response(node: str, payload: bytes, when: float) -> None:
            if op.add(node, payload):
                collector.closed = True  # every member answered: later answers are not counted
                finish(when)

        collector = self._query(name, internal_queries.key_request(key), now,
                                on_ack=lambda node, when: None, on_response=on_response,
                                on_done=finish)
        return handle
