"""The agent's start-up errors, each printed with serf's prefix for the stage it comes from."""

from __future__ import annotations


class AgentError(Exception):
    """Start-up failed; the message is printed as ``==> Failed to start the Serf agent: ...``."""


class SetupError(AgentError):
    """The addresses in the configuration are unusable; printed bare (``==> ...``) before the
    agent starts, as serf's agent command does."""


class CreateError(AgentError):
    """The tags or keyring file cannot be used; printed as ``==> Failed to setup the Serf
    agent: ...`` (serf finds these while creating its agent, before starting Serf)."""


def multierror(errors: list[str]) -> str:
    """Format several errors the way hashicorp/go-multierror does (serf prints this)."""
    noun = "error" if len(errors) == 1 else "errors"
    lines = "".join(f"\t* {e}\n" for e in errors)
    return f"{len(errors)} {noun} occurred:\n{lines}\n"
