"""``query``: send a query and print the acks and responses as they come."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.agent.config_error import ConfigError, unmarshal_tags
from pyserf.cli.commands.event import TOO_MANY_ARGS
from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out, payload_text
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command
from pyserf.gocompat.jsonenc import marshal_indent as go_json

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class Query(RPCCommand):
    name = "query"
    synopsis = "Send a query to the Serf cluster"
    help_text = f"""
Usage: {APP} query [options] name payload

  Dispatches a query to the cluster and prints the acks and responses.

Options:

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

  -node=NAME                Only this node answers. Can be given several times.

  -tag key=regexp           Only nodes whose tag matches answer. Can be given
                            several times.

  -timeout="15s"            Overrides the agent's default query timeout.

  -no-ack                   Don't ask nodes to acknowledge the query.

  -relay-factor             Relay each response through this many extra nodes
                            for redundancy.

  -wait-full                Wait out the whole timeout. By default a pyserf agent
                            finishes as soon as every live member the filters
                            select has answered.

{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.strings("node")
        fs.strings("tag")
        fs.duration("timeout", 0.0)
        fs.bool("no-ack")
        fs.string("format", "text")
        fs.int("relay-factor", 0)
        fs.bool("wait-full")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        try:
            unmarshal_tags(fs["tag"])  # reported before connecting; run() parses them again
        except ConfigError as exc:
            out(f"Error: {exc.message}")
            return 1
        if not args:
            return self.usage_error("A query name must be specified.")
        if len(args) > 2:
            return self.usage_error(TOO_MANY_ARGS)
        relay = fs["relay-factor"]
        if relay > 255 or relay < 0:
            out("Relay factor must be between 0 and 255")
            return 1
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        name = args[0]
        payload = args[1].encode("utf-8", "surrogateescape") if len(args) == 2 else None
        fmt = fs["format"]
        if fmt not in ("text", "json"):
            out(f"Invalid format: {fmt}")
            return 1
        no_ack = fs["no-ack"]
        stream = call(
            "Error sending query",
            client.query,
            name,
            payload,
            filter_nodes=fs["node"] or None,
            filter_tags=unmarshal_tags(fs["tag"]) or None,
            request_ack=not no_ack,
            relay_factor=fs["relay-factor"],
            timeout=fs["timeout"],
            wait_full=fs["wait-full"],
        )
        acks: list[str] = []
        responses: dict[str, str] = {}
        num_resp = 0
        if fmt == "text":
            out(f"Query '{name}' dispatched")
        try:
            for rec in stream:
                sender = rec["From"]
                if rec["Type"] == "ack":
                    acks.append(sender)
                    if fmt == "text":
                        out(f"Ack from '{sender}'")
                    continue
                num_resp += 1
                if fmt == "text":
                    text = payload_text(rec["Payload"])
                    if text.endswith("\n"):
                        text = text[:-1]
                    out(f"Response from '{sender}': {text}")
                else:
                    raw = rec["Payload"] or b""
                    responses[sender] = bytes(raw).decode("utf-8", "replace")
        except KeyboardInterrupt:
            return 1
        if fmt == "text":
            if not no_ack:
                out(f"Total Acks: {len(acks)}")
            out(f"Total Responses: {num_resp}")
        else:
            ordered = {k: responses[k] for k in sorted(responses)}
            out(go_json({"Acks": acks or None, "Responses": ordered}))
        return 0
