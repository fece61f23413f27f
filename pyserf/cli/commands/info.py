"""``info``: the agent's debugging statistics, as text or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command
from pyserf.gocompat.jsonenc import marshal_indent as go_json

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


def stats_text(stats: dict[str, dict[str, str]]) -> str:
    """``serf info`` text: sections and keys sorted, values tab-indented."""
    lines = []
    for section in sorted(stats):
        lines.append(f"{section}:")
        values = stats[section] or {}
        for key in sorted(values):
            lines.append(f"\t{key} = {values[key]}")
    return "\n".join(lines).strip()


@rpc_command
class Info(RPCCommand):
    name = "info"
    synopsis = "Provides debugging information for operators"
    help_text = f"""
Usage: {APP} info [options]

  Provides debugging information for operators.

Options:

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.string("format", "text")

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        stats = call("Error querying agent", client.stats)
        fmt = fs["format"]
        if fmt == "text":
            text = stats_text(stats)
        elif fmt == "json":
            ordered = {s: {k: stats[s][k] for k in sorted(stats[s])} for s in sorted(stats)}
            text = go_json(ordered)
        else:
            out(f'Encoding error: Invalid output format "{fmt}"')
            return 1
        out(text)
        return 0
