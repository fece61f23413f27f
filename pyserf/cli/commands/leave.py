"""``leave``: the agent leaves the cluster gracefully and shuts down."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class Leave(RPCCommand):
    name = "leave"
    synopsis = "Gracefully leaves the Serf cluster and shuts down"
    help_text = f"""
Usage: {APP} leave

  Makes the agent leave the cluster gracefully and shut down.

Options:

{RPC_HELP}
"""

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        call("Error leaving", client.leave)
        out("Graceful leave complete")
        return 0
