"""``force-leave``: move a member (usually a failed one) to the "left" state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class ForceLeave(RPCCommand):
    name = "force-leave"
    synopsis = 'Forces a member of the cluster to enter the "left" state'
    help_text = f"""
Usage: {APP} force-leave [options] name

  Forces a member of the cluster into the "left" state. A member that is
  actually alive will rejoin by itself; this is meant for cleaning out
  "failed" nodes that will never come back.

Options:

{RPC_HELP}
  -prune                    Remove the member from the member list entirely.
"""

    def define(self, fs: FlagSet) -> None:
        fs.bool("prune")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        if len(args) != 1:
            return self.usage_error("A node name must be specified to force leave.")
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        call("Error force leaving", client.force_leave, args[0], fs["prune"])
        return 0
