"""What the CLI prints: serf's Ui (everything to stdout), stderr for flag errors and help, and
ryanuber/columnize's table layout."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def _write(stream: Any, text: str) -> None:
    """Write text, passing through undecodable bytes (kept as surrogates) like Go would."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        stream.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    stream.flush()


def out(msg: str = "") -> None:
    """serf's Ui.Output / Ui.Info / Ui.Error: all of them print to stdout."""
    _write(sys.stdout, msg + "\n")


def err_out(msg: str) -> None:
    """stderr, used only where serf writes there (flag errors, ``-h`` help)."""
    _write(sys.stderr, msg + "\n")


def columnize(lines: Sequence[str]) -> str:
    """Align ``|``-separated fields like Go's ryanuber/columnize SimpleFormat.

    Fields are trimmed, every column but a line's last is padded to the widest cell of that
    column (counted in characters) and columns are joined with two spaces.
    """
    rows = [[cell.strip() for cell in line.split("|")] for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths.get(i, 0), len(cell))
    rendered = []
    for row in rows:
        parts = [cell.ljust(widths[i]) + "  " for i, cell in enumerate(row[:-1])]
        parts.append(row[-1])
        rendered.append("".join(parts))
    return "\n".join(rendered)


def payload_text(payload: Any) -> str:
    """A user event's or query's payload as text, undecodable bytes kept as surrogates."""
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload
    return bytes(payload).decode("utf-8", "surrogateescape")
