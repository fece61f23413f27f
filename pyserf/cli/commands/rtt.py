"""``rtt``: the round trip time between two nodes estimated from their network coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, Failed, RPCCommand, call, rpc_command
from pyserf.gocompat.strconv import quote as go_quote

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class RTT(RPCCommand):
    name = "rtt"
    synopsis = "Estimates network round trip time between nodes"
    help_text = f"""
Usage: {APP} rtt [options] node1 [node2]

  Estimates the round trip time between two nodes from the cluster's network
  coordinates. With one node name, the second defaults to the agent's own
  node. Names are member names as "{APP} members" shows them.

Options:

{RPC_HELP}
"""

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        nodes = args
        # serf checks the node count only once connected: a dead agent is reported first.
        if len(nodes) == 1:
            stats = call("Error querying agent", client.stats)
            nodes = [nodes[0], (stats.get("agent") or {}).get("name", "")]
        elif len(nodes) != 2:
            return self.usage_error("One or two node names must be specified")
        coords = []
        for node in nodes:
            coord = call("Error getting coordinates", client.get_coordinate, node)
            if coord is None:
                raise Failed(f"Could not find a coordinate for node {go_quote(node)}")
            coords.append(coord)
        try:
            seconds = coords[0].distance_to(coords[1])
        except ValueError as exc:
            raise Failed(f"Error getting coordinates: {exc}") from None
        out(f"Estimated {nodes[0]} <-> {nodes[1]} rtt: {seconds * 1000.0:.3f} ms")
        return 0
