"""``monitor``: stream the agent's log lines and events until interrupted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP
from pyserf.cli.rpc import RPC_HELP, RPCCommand, call, rpc_command
from pyserf.client.errors import RPCError
from pyserf.gocompat.fmt import sharp_v

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient


@rpc_command
class Monitor(RPCCommand):
    name = "monitor"
    synopsis = "Stream logs from a Serf agent"
    help_text = f"""
Usage: {APP} monitor [options]

  Shows the agent's recent log lines, then streams new ones (and events) as
  they happen. The level may be lower than the agent's own log level, e.g.
  DEBUG lines of an agent logging at INFO.

Options:

  -log-level=info           Log level to stream.
{RPC_HELP}
"""

    def define(self, fs: FlagSet) -> None:
        fs.string("log-level", "INFO")

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        # Ctrl-C ends the monitor even when we were started with SIGINT ignored (a background
        # job, a test runner's worker): Python leaves an inherited SIG_IGN alone, Go's
        # signal.Notify in serf's monitor does not.
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        events = call("Error starting stream", client.stream, "*")
        logs = call("Error starting monitor", client.monitor, fs["log-level"])
        try:
            while True:
                try:
                    item = client.poll(None)
                except RPCError:
                    break
                if item is None:
                    continue
                seq, rec = item
                if not isinstance(rec, dict):
                    continue
                if seq == logs.seq:
                    out(rec.get("Log") or "")
                elif seq == events.seq:
                    out("Event Info:")
                    for key in sorted(rec):
                        out(f"\t{key}: {sharp_v(rec[key])}")
        except KeyboardInterrupt:
            for sub in (events, logs):
                try:
                    sub.stop()
                except RPCError:
                    pass
            return 0
        out("")
        out("Remote side ended the monitor! This usually means that the\n"
            "remote side has exited or crashed.")
        return 1
