"""A re-implementation of Go's ``flag.FlagSet`` (ContinueOnError): serf's subcommands parse their
flags with it, so the accepted syntax and every error text follow Go's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyserf.cli.output import err_out
from pyserf.gocompat.durations import parse_duration
from pyserf.gocompat.strconv import FALSE, RANGE, TRUE, NumError
from pyserf.gocompat.strconv import parse_int as go_parse_int
from pyserf.gocompat.strconv import quote as go_quote


class FlagError(Exception):
    """Flag parsing failed; the message and usage have already been printed."""


@dataclass
class _Flag:
    name: str
    kind: str  # "string" | "bool" | "int" | "duration" | "list"
    default: Any
    target: list[str] | None = None


class FlagSet:
    """A small re-implementation of Go's ``flag.FlagSet`` (ContinueOnError)."""

    def __init__(self, name: str, usage: Callable[[], None]) -> None:
        self.name = name
        self.usage = usage
        self._flags: dict[str, _Flag] = {}
        self.values: dict[str, Any] = {}
        self.given: set[str] = set()
        self.args: list[str] = []

    def _add(self, name: str, kind: str, default: Any, target: list[str] | None = None) -> None:
        self._flags[name] = _Flag(name, kind, default, target)
        self.values[name] = default if target is None else target

    def string(self, name: str, default: str = "") -> None:
        self._add(name, "string", default)

    def bool(self, name: str, default: bool = False) -> None:
        self._add(name, "bool", default)

    def int(self, name: str, default: int = 0) -> None:
        self._add(name, "int", default)

    def duration(self, name: str, default: float = 0.0) -> None:
        self._add(name, "duration", default)

    def strings(self, name: str, target: list[str] | None = None) -> None:
        """A repeatable flag appending to ``target`` (several flags may share one list)."""
        self._add(name, "list", None, target if target is not None else [])

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _fail(self, message: str) -> FlagError:
        err_out(message)
        self.usage()
        return FlagError(message)

    def parse(self, args: Sequence[str]) -> list[str]:
        """Parse flags; returns the positional arguments (also kept in ``self.args``)."""
        rest = list(args)
        while rest:
            arg = rest[0]
            if len(arg) < 2 or arg[0] != "-":
                break
            dashes = 1
            if arg[1] == "-":
                dashes = 2
                if len(arg) == 2:
                    rest.pop(0)
                    break
            name = arg[dashes:]
            if not name or name[0] in "-=":
                raise self._fail(f"bad flag syntax: {arg}")
            rest.pop(0)
            value: str | None = None
            if "=" in name[1:]:
                idx = name.index("=", 1)
                name, value = name[:idx], name[idx + 1:]
            flag = self._flags.get(name)
            if flag is None:
                if name in ("help", "h"):
                    self.usage()
                    raise FlagError("help requested")
                raise self._fail(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                if value is None or value in TRUE:
                    self.values[name] = True
                elif value in FALSE:
                    self.values[name] = False
                else:
                    raise self._fail(f"invalid boolean value {go_quote(value)} for -{name}: "
                                     "parse error")
                self.given.add(name)
                continue
            if value is None:
                if not rest:
                    raise self._fail(f"flag needs an argument: -{name}")
                value = rest.pop(0)
            try:
                if flag.kind == "string":
                    self.values[name] = value
                elif flag.kind == "int":
                    self.values[name] = go_parse_int(value)
                elif flag.kind == "duration":
                    self.values[name] = parse_duration(value)
                else:
                    assert flag.target is not None
                    flag.target.append(value)
            except ValueError as exc:
                # Go's flag package words strconv's errors its own way.
                reason = "parse error"
                if isinstance(exc, NumError) and exc.err == RANGE:
                    reason = "value out of range"
                raise self._fail(
                    f"invalid value {go_quote(value)} for flag -{name}: {reason}"
                ) from None
            self.given.add(name)
        self.args = rest
        return rest
