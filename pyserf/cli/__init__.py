"""The ``pyserf`` command line: serf's subcommands, flags, outputs and exit codes.

Scripts written against ``serf`` should keep working, so this mirrors serf 0.9.4's CLI
(mitchellh/cli dispatch + Go ``flag`` parsing): command output *and* error messages go to
stdout like serf's ``BasicUi``; flag-parsing errors and ``-h`` help go to stderr; an unknown or
missing command exits 127.

Layout: ``dispatch`` (``main``), ``registry`` (the command table), ``flags`` (Go's flag
package), ``output`` (stdout/stderr, columnize), ``rpc`` (the prologue every RPC command shares)
and ``commands/<name>.py``, one module per subcommand.
"""

from pyserf.cli.commands.info import stats_text
from pyserf.cli.commands.members import member_lines, members_json
from pyserf.cli.dispatch import main, top_help
from pyserf.cli.flags import FlagError, FlagSet
from pyserf.cli.output import columnize, err_out, out
from pyserf.cli.registry import COMMANDS, Command

__all__ = [
    "COMMANDS",
    "Command",
    "FlagError",
    "FlagSet",
    "columnize",
    "err_out",
    "main",
    "member_lines",
    "members_json",
    "out",
    "stats_text",
    "top_help",
]
