"""The prologue every subcommand that talks to an agent shares.

An ``RPCCommand`` declares its flags (``define``), checks its arguments before connecting
(``check``) and does its work on a connected client (``run``). The prologue around them is
serf's: parse the flags with ``-rpc-addr`` / ``-rpc-auth`` (defaults from ``$SERF_RPC_ADDR`` /
``$SERF_RPC_AUTH``), connect and authenticate ("Error connecting to Serf agent: ..." and exit 1
on failure), turn a failed call into "<what>: <error>" and exit 1, and close the connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pyserf.cli.flags import FlagError, FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import COMMANDS, Command, usage_error
from pyserf.client.errors import RPCError

if TYPE_CHECKING:
    from pyserf.client.rpc_client import RPCClient

DEFAULT_RPC_ADDR = "127.0.0.1:7373"

RPC_HELP = """\
  -rpc-addr=127.0.0.1:7373  RPC address of the agent (default $SERF_RPC_ADDR).
  -rpc-auth=""              RPC auth token of the agent (default $SERF_RPC_AUTH)."""

T = TypeVar("T")


class Failed(Exception):
    """The command failed with this text: the prologue prints it and exits 1."""


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Make one RPC call; its error becomes serf's "<what>: <error>" failure."""
    try:
        return fn(*args, **kwargs)
    except RPCError as exc:
        raise Failed(f"{what}: {exc}") from None


def rpc_flags(name: str) -> FlagSet:
    """A FlagSet with the RPC flags, whose usage prints the command help to stdout, like serf."""
    fs = FlagSet(name, lambda: out(COMMANDS[name].help))
    addr = os.environ.get("SERF_RPC_ADDR") or os.environ.get("PYSERF_RPC_ADDR") or DEFAULT_RPC_ADDR
    auth = os.environ.get("SERF_RPC_AUTH") or os.environ.get("PYSERF_RPC_AUTH") or ""
    fs.string("rpc-addr", addr)
    fs.string("rpc-auth", auth)
    return fs


def connect(fs: FlagSet) -> RPCClient | None:
    """Connect (and authenticate) to the agent the flags name; prints serf's error if not."""
    from pyserf.client.rpc_client import RPCClient  # the agent itself never needs the client

    try:
        return RPCClient(fs["rpc-addr"], fs["rpc-auth"])
    except RPCError as exc:
        out(f"Error connecting to Serf agent: {exc}")
        return None


class RPCCommand:
    """A subcommand run against an agent over RPC; subclasses fill in the three steps."""

    name: ClassVar[str]
    synopsis: ClassVar[str]
    help_text: ClassVar[str]

    def define(self, fs: FlagSet) -> None:
        """Declare the command's own flags."""

    def check(self, fs: FlagSet, args: list[str]) -> int | None:
        """Validate what needs no agent; an exit code ends the command before connecting."""
        return None

    def run(self, client: RPCClient, fs: FlagSet, args: list[str]) -> int:
        """The command's work on a connected client; returns the exit code."""
        raise NotImplementedError

    def print_help(self) -> int:
        out(COMMANDS[self.name].help)
        return 1

    def usage_error(self, message: str) -> int:
        return usage_error(self.name, message)

    def __call__(self, args: list[str]) -> int:
        fs = rpc_flags(self.name)
        self.define(fs)
        try:
            rest = fs.parse(args)
        except FlagError:
            return 1
        code = self.check(fs, rest)
        if code is not None:
            return code
        client = connect(fs)
        if client is None:
            return 1
        with client:
            try:
                return self.run(client, fs, rest)
            except Failed as exc:
                out(str(exc))
                return 1


C = TypeVar("C", bound=type[RPCCommand])


def rpc_command(cls: C) -> C:
    """Register the decorated RPCCommand subclass under its ``name``."""
    COMMANDS[cls.name] = Command(cls.name, cls.synopsis, cls.help_text, cls())
    return cls
