"""The text Go's ``syscall.Errno.Error()`` gives for an OS error, as serf prints it."""

from __future__ import annotations

import os


def errno_text(exc: OSError) -> str:
    """Go's errno text: the C library's message with its first letter lowered where the
    second is lower case ("connection refused", "remote I/O error"), the rule Go's table was
    generated with (mkerrors.sh); an error without an errno keeps its own text."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    if len(text) >= 2 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def path_error(op: str, path: str, exc: OSError) -> str:
    """``*os.PathError``: ``open /x: no such file or directory``."""
    return f"{op} {path}: {errno_text(exc)}"
