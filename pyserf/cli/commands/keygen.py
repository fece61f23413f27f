"""``keygen``: a fresh random encryption key, base64 encoded."""

from __future__ import annotations

import base64
import os

from pyserf.cli.output import out
from pyserf.cli.registry import APP, command


@command(
    "keygen",
    "Generates a new encryption key",
    f"""
Usage: {APP} keygen

  Prints a new random 32-byte encryption key, base64 encoded, ready for the
  agent's -encrypt flag or encrypt_key setting.
""",
)
def cmd_keygen(args: list[str]) -> int:
    out(base64.b64encode(os.urandom(32)).decode("ascii"))
    return 0
