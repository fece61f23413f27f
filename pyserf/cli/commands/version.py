"""``version``: pyserf's version and the Serf protocol range it speaks."""

from __future__ import annotations

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN, __version__
from pyserf.cli.output import out
from pyserf.cli.registry import APP, command


@command("version", "Prints the Serf version", "")
def cmd_version(args: list[str]) -> int:
    out(f"{APP} {__version__}")
    out(f"Agent Protocol: {SERF_PROTOCOL_MAX} (Understands back to: {SERF_PROTOCOL_MIN})")
    return 0
