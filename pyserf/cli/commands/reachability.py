"""``reachability``: ping every live member with an internal query and report who acked."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient

INTERNAL_PING = "_serf_ping"

_TOO_MANY_ACKS = ("This could mean Serf is detecting false-failures due to a misconfiguration "
                  "or network issue.")
_TOO_FEW_ACKS = ("This could mean Serf gossip packets are being lost due to a misconfiguration "
                 "or network issue.")
_DUPLICATE = ("Duplicate responses means there is a misconfiguration. Verify that node names "
              "are unique.")
_TROUBLESHOOTING = """
Troubleshooting tips:
* Ensure that the bind addr:port is accessible by all other nodes
* If an advertise address is set, ensure it routes to the bind address
* Check that no nodes are behind a NAT
* If nodes are behind firewalls or iptables, check that Serf traffic is permitted (UDP and TCP)
* Verify networking equipment is functional"""


@rpc_command
class Reachability(RPCCommand):
    name = "reachability"
    synopsis = "Test network reachability"
    help_text = f"""
Usage: {APP} reachability [options]

  Tests whether every live member can be reached from this agent.

Options:

{RPC_HELP}
  -verbose                  Verbose mode
"""

    def define(self, fs: FlagSet) -> None:
        fs.bool("verbose")

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        verbose = fs["verbose"]
        members = call("Error getting members", client.members)
        live = {m.name for m in members if m.status == "alive"}
        out(f"Total members: {len(members)}, live members: {len(live)}")
        stream = call("Error sending query", client.query, INTERNAL_PING, None, request_ack=True)
        out("Starting reachability test...")
        start = last = time.monotonic()
        dups = False
        num_acks = 0
        acks_from: set[str] = set()
        try:
            for rec in stream:
                if rec["Type"] != "ack":
                    continue
                sender = rec["From"]
                if verbose:
                    out(f"\tAck from '{sender}'")
                num_acks += 1
                if sender in acks_from:
                    dups = True
                    out(f"Duplicate response from '{sender}'")
                acks_from.add(sender)
                last = time.monotonic()
        except KeyboardInterrupt:
            out("Test interrupted")
            return 1
        if verbose:
            total = time.monotonic() - start
            out(f"Query time: {total:0.2f} sec, time to last response: {last - start:0.2f} sec")
        code = 0
        if dups:
            out(_DUPLICATE)
            code = 1
        if num_acks == len(live):
            out("Successfully contacted all live nodes")
            return code
        if num_acks > len(live):
            _mismatch("Received more acks than live nodes! Acks from non-live nodes:",
                      acks_from - live, _TOO_MANY_ACKS)
        else:
            _mismatch("Received less acks than live nodes! Missing acks from:",
                      live - acks_from, _TOO_FEW_ACKS)
        return 1


def _mismatch(header: str, names: set[str], advice: str) -> None:
    out(header)
    for name in sorted(names):
        out(f"\t{name}")
    out(advice)
    out(_TROUBLESHOOTING)
