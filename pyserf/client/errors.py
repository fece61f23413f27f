"""The RPC client's error type, apart from the client so that catching it is cheap.

``pyserf agent`` shares the CLI module with the RPC commands; importing only this class keeps
the client (and its socket/threading/dataclass set-up) out of every agent process.
"""

from __future__ import annotations

from typing import Any


class RPCError(Exception):
    """An error reported by the agent, or ``client closed`` when the connection is gone.

    ``body`` carries the response body the server sent along with the error, if any (serf
    sends one for join and key commands).
    """

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body

    def __str__(self) -> str:
        return self.message
