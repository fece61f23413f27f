"""``members``: the agent's view of the cluster, as a table or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyserf.agent.config_error import ConfigError, unmarshal_tags
from pyserf.cli.flags import FlagSet
from pyserf.cli.output import columnize, out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command
from pyserf.gocompat.jsonenc import marshal_indent as go_json

if TYPE_CHECKING:
    from pyserf.client.rpc_client import Member, RPCClient


def member_lines(members: Sequence[Member], detailed: bool) -> list[str]:
    """The ``|``-joined rows ``serf members`` feeds to columnize."""
    lines = []
    for m in members:
        tags = ",".join(f"{k}={v}" for k, v in m.tags.items())
        line = f"{m.name}|{m.address}|{m.status}|{tags}"
        if detailed:
            line += (
                f"|Protocol Version: {m.delegate_cur}"
                f"|Available Protocol Range: [{m.delegate_min}, {m.delegate_max}]"
            )
        lines.append(line)
    return lines


def members_json(members: Sequence[Member]) -> str:
    """``serf members -format=json`` output."""
    records = [
        {
            "name": m.name,
            "addr": m.address,
            "port": m.port,
            "tags": {k: m.tags[k] for k in sorted(m.tags)},
            "status": m.status,
            "protocol": {"max": m.delegate_max, "min": m.delegate_min, "version": m.delegate_cur},
        }
        for m in members
    ]
    return go_json({"members": records or None})


@rpc_command
class Members(RPCCommand):
    name = "members"
    synopsis = "Lists the members of a Serf cluster"
    help_text = f"""
Usage: {APP} members [options]

  Outputs the members of a running agent.

Options:

  -detailed                 Additional information such as protocol versions
                            will be shown (only affects text output format).

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

  -name=<regexp>            Only members whose name matches the regexp are shown.
                            The regexp is anchored at the start and end.

  -role=<regexp>            Deprecated: same as '-tag role=<regexp>'.

  -status=<regexp>          Only members whose status matches the regexp are shown.

  -tag <key>=<regexp>       Only members with the tag <key> matching the regexp
                            are shown. Can be given several times. Anchored.

{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.bool("detailed")
        fs.string("role")
        fs.string("status")
        fs.string("format", "text")
        fs.strings("tag")
        fs.string("name")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        tags: list[str] = fs["tag"]
        if fs["role"]:
            out("Deprecation warning: 'Role' has been replaced with 'Tags'")
            tags.append(f"role={fs['role']}")
        try:
            unmarshal_tags(tags)  # reported before connecting; run() parses them again
        except ConfigError as exc:
            out(f"Error: {exc.message}")
            return 1
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        members = call("Error retrieving members", client.members_filtered,
                       fs["name"], fs["status"], unmarshal_tags(fs["tag"]))
        fmt = fs["format"]
        if fmt == "text":
            text = columnize(member_lines(members, fs["detailed"])).strip()
        elif fmt == "json":
            text = members_json(members)
        else:
            out(f'Encoding error: Invalid output format "{fmt}"')
            return 1
        out(text)
        return 0
