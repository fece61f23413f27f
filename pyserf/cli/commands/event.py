"""``event``: dispatch a custom user event through the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient

TOO_MANY_ARGS = "Too many command line arguments. Only a name and payload must be specified."


@rpc_command
class Event(RPCCommand):
    name = "event"
    synopsis = "Send a custom event through the Serf cluster"
    help_text = f"""
Usage: {APP} event [options] name payload

  Dispatches a custom user event across the cluster.

Options:

  -coalesce=true/false      Whether this event may be coalesced: repeated events
                            of the same name within a short period are then
                            delivered once, as the last one. Default is true.
{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.bool("coalesce", True)

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        if not args:
            return self.usage_error("An event name must be specified.")
        if len(args) > 2:
            return self.usage_error(TOO_MANY_ARGS)
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        name = args[0]
        payload = args[1].encode("utf-8", "surrogateescape") if len(args) == 2 else None
        call("Error sending event", client.user_event, name, payload, fs["coalesce"])
        coalesce = "true" if fs["coalesce"] else "false"
        out(f"Event '{name}' dispatched! Coalescing enabled: {coalesce}")
        return 0
