"""The agent's files: the keyring file and the tags file, read and written as serf does.

Reading fails with serf's texts for each file (:class:`CreateError`, printed as ``Failed to
setup the Serf agent``); writing replaces the file atomically with mode 0600 and only logs a
failure, since a running agent carries on without it.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

from pyserf.agent.errors import CreateError
from pyserf.gocompat.errno import path_error
from pyserf.gocompat.jsonerr import unmarshal_strings
from pyserf.memberlist import security

log = logging.getLogger("pyserf.agent")


def read_json(path: str, what: str, go_type: str) -> Any:
    """A tags or keyring file's JSON, failing with serf's texts for that file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        # Go opens a directory and fails on the read.
        op = "read" if isinstance(exc, IsADirectoryError) else "open"
        raise CreateError(f"Failed to read {what} file: {path_error(op, path, exc)}"
                          ) from exc
    try:
        return unmarshal_strings(data, go_type)
    except ValueError as exc:
        raise CreateError(f"Failed to decode {what} file: {exc}") from exc


def load_keyring(path: str) -> security.Keyring:
    """The keyring a keyring file holds (its first key is the primary)."""
    try:
        os.stat(path)
    except OSError as exc:
        raise CreateError(path_error("stat", path, exc)) from exc
    raw = read_json(path, "keyring", "[]string") or []
    try:
        keys = [security.go_std_b64decode(k.encode()) for k in raw]
    except ValueError as exc:
        raise CreateError(f"Failed to decode key from keyring: {exc}") from exc
    if not keys:
        raise CreateError("Keyring file contains no keys")
    if not keys[0]:  # the memberlist serf 0.9.4 vendors checks this first
        raise CreateError("Failed to restore keyring: Empty primary key not allowed")
    try:
        return security.Keyring(keys)
    except ValueError as exc:
        raise CreateError(f"Failed to restore keyring: {exc}") from exc


def load_tags(path: str) -> dict[str, str] | None:
    """The tags a tags file holds, or None when there is no file yet (serf then writes one)."""
    if not os.path.exists(path):
        return None
    tags = read_json(path, "tags", "map[string]string") or {}
    log.info("agent: Restored %d tag(s) from %s", len(tags), path)
    return tags


def save_tags(path: str, tags: dict[str, str]) -> None:
    """Persist the current tags (0600)."""
    _write_private_json(path, tags, "tags")


def save_keyring(path: str, keyring: security.Keyring) -> None:
    """Rewrite the keyring file (0600) after a key query changed the keyring."""
    _write_private_json(path, [base64.b64encode(k).decode() for k in keyring.keys], "keyring")


def _write_private_json(path: str, value: Any, what: str) -> None:
    """Replace ``path`` atomically with ``value`` as indented JSON, readable by its owner only."""
    import json  # only when a file is written: an idle plain agent never loads it

    tmp = f"{path}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        log.error("agent: Failed to write %s file %s: %s", what, path, exc)
