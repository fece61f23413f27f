"""``keys``: install, use, remove or list the cluster's encryption keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import columnize, out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, rpc_command
from pyserf.client.errors import RPCError

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient

INFO = "==> "


def _failed(exc: RPCError, what: str) -> int:
    """serf's report of a key operation some members failed: each member's error, then why."""
    messages = exc.body.messages if exc.body else {}
    if messages:
        out(columnize([f"failed: | {node} | {messages[node]}" for node in sorted(messages)]))
    out("")
    out(f"{what}: {exc}")
    return 1


@rpc_command
class Keys(RPCCommand):
    name = "keys"
    synopsis = "Manipulate the internal encryption keyring used by Serf"
    help_text = f"""
Usage: {APP} keys [options]...

  Manages the encryption keyring of every member of the cluster. Changes are
  broadcast to all members and applied locally on each one; every operation
  is idempotent. Exits 0 only if every member answered without error.

  Rotate keys by installing the new key, making it primary with -use, then
  removing the old one. Several installed keys are meant as a transition
  state only.

Options:

  -install=<key>            Install a new key (used for decryption only until
                            it is made primary).
  -use=<key>                Make an installed key the primary (encryption) key.
  -remove=<key>             Remove a key; the primary key cannot be removed.
  -list                     List every installed key and how many members
                            have it.
{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.string("install")
        fs.string("use")
        fs.string("remove")
        fs.bool("list")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        found = fs["list"]
        for value in (fs["install"], fs["use"], fs["remove"]):
            if found and value:
                out("Only one of -install, -use, -remove, or -list allowed")
                return 1
            found = found or bool(value)
        if not found:
            return self.print_help()
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        if fs["list"]:
            out(INFO + "Asking all members for installed keys...")
            try:
                resp = client.list_keys()
            except RPCError as exc:
                return _failed(exc, "Failed to gather member keys")
            out(INFO + "Keys gathered, listing cluster keys...")
            out("")
            out(columnize([f"{k} | [{n}/{resp.num_nodes}]" for k, n in resp.keys.items()]))
            return 0
        actions = (
            ("install", client.install_key, "Installing key on all members...",
             "Error installing key", "Successfully installed key!"),
            ("use", client.use_key, "Changing primary key on all members...",
             "Error changing primary key", "Successfully changed primary key!"),
            ("remove", client.remove_key, "Removing key on all members...",
             "Error removing key", "Successfully removed key!"),
        )
        for flag, key_call, start, failure, success in actions:
            if not fs[flag]:
                continue
            out(INFO + start)
            try:
                key_call(fs[flag])
            except RPCError as exc:
                return _failed(exc, failure)
            out(INFO + success)
            return 0
        return 0
