"""The table of subcommands: name, one-line synopsis, help text and the function that runs it.

Each module under ``pyserf.cli.commands`` registers itself here when imported; this module
imports none of them, so a command's module can use it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyserf.cli.output import out

APP = "pyserf"

Runner = Callable[[list[str]], int]


@dataclass
class Command:
    name: str
    synopsis: str
    # A callable for commands whose help lives in a module the agent should not import.
    help_text: str | Callable[[], str]
    run: Runner
    # Run as the process itself, with no cycle collection and no interpreter teardown at the
    # end (see dispatch.main): for a command that leaves gigabytes of objects whose freeing no
    # one waits for.
    skip_teardown: bool = False

    @property
    def help(self) -> str:
        text = self.help_text() if callable(self.help_text) else self.help_text
        return text.strip()


COMMANDS: dict[str, Command] = {}


def command(name: str, synopsis: str, help_text: str | Callable[[], str],
            skip_teardown: bool = False) -> Callable[[Runner], Runner]:
    """Register the decorated function as the subcommand ``name``."""
    def register(fn: Runner) -> Runner:
        COMMANDS[name] = Command(name, synopsis, help_text, fn, skip_teardown)
        return fn

    return register


def usage_error(name: str, message: str) -> int:
    """serf's answer to wrong positional arguments: the message, a blank line, the help."""
    out(message)
    out("")
    out(COMMANDS[name].help)
    return 1
