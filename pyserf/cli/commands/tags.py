"""``tags``: set and delete the running agent's tags."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.agent.config_error import ConfigError, unmarshal_tags
from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, Failed, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class Tags(RPCCommand):
    name = "tags"
    synopsis = "Modify tags of a running Serf agent"
    help_text = f"""
Usage: {APP} tags [options] ...

  Modifies the tags of a running agent.

Options:

{RPC_HELP}
  -set key=value            Creates or modifies the value of a tag
  -delete key               Removes a tag, if present
"""

    def define(self, fs: FlagSet) -> None:
        fs.strings("set")
        fs.strings("delete")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        if not fs["set"] and not fs["delete"]:
            return self.print_help()
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        # serf parses the pairs only once connected: a dead agent is reported first.
        try:
            tags = unmarshal_tags(fs["set"])
        except ConfigError as exc:
            raise Failed(f"Error: {exc.message}") from None
        call("Error setting tags", client.update_tags, tags, fs["delete"])
        out("Successfully updated agent tags")
        return 0
