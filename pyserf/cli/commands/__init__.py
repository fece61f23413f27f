"""One module per subcommand; importing this package registers them all in the registry.

Each module imports at its top only what the agent loads anyway; the RPC client, json and the
simulator are imported inside the functions that use them, so ``pyserf agent`` stays small.
"""

from pyserf.cli.commands import (  # noqa: F401  (imported to register)
    agent,
    event,
    force_leave,
    info,
    join,
    keygen,
    keys,
    leave,
    members,
    monitor,
    query,
    reachability,
    rtt,
    simulate,
    tags,
    version,
)
