"""``join``: tell the agent to join a cluster through the given addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class Join(RPCCommand):
    name = "join"
    synopsis = "Tell Serf agent to join cluster"
    help_text = f"""
Usage: {APP} join [options] address ...

  Tells a running agent to join the cluster by contacting at least one
  existing member.

Options:

  -replay                   Replay past user events.
{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.bool("replay")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        if not args:
            return self.usage_error("At least one address to join must be specified.")
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        num = call("Error joining the cluster", client.join, args, fs["replay"])
        out(f"Successfully joined cluster by contacting {num} nodes.")
        return 0
