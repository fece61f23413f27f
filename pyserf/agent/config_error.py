"""The config error and the ``-tag`` parser, apart from the agent's config: the CLI's
``members``, ``query`` and ``tags`` use them, and importing the whole config (its dataclasses
and event filters) cost each of those calls ~8 ms of its start."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """A configuration problem, worded exactly like serf's message for the same problem.

    ``message`` is serf's text (``str()`` is that text alone, so operators and scripts see
    what serf prints), ``key`` the JSON key at fault when known, ``path`` the file involved and
    ``stage`` when serf's agent command reports it (see ``pyserf.agent.config.STAGES``).
    """

    def __init__(self, message: str, key: str | None = None, path: str | None = None,
                 stage: str = "config") -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.path = path
        self.stage = stage

    def __str__(self) -> str:
        return self.message


def unmarshal_tags(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``key=value`` strings into a dict; serf's ``Invalid tag: 'x'`` on bad input."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Invalid tag: '{pair}'")
        result[key] = value
    return result
