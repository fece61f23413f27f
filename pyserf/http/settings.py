"""Checking the ``http_*`` config keys: each problem names the key and the fix.

Called from :func:`pyserf.agent.config_validate.validate` (stage "setup": reported before the
agent starts, like serf's address checks), so a bad listener setting never half-starts an
agent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyserf.gocompat.hostport import AddrError, split_host_port

if TYPE_CHECKING:
    from pyserf.agent.config import AgentConfig, ConfigError

# Bounds on the limits an operator may set: wide enough for any real deployment, narrow enough
# that a typo (an extra zero, a negative) is caught rather than obeyed.
MAX_CONNECTIONS_RANGE = (1, 65536)
MAX_BODY_RANGE = (1024, 64 * 1024 * 1024)
IDLE_TIMEOUT_RANGE = (0.1, 3600.0)
# A token travels in a header line; aiohttp refuses header lines over 8 KiB.
MAX_TOKEN_BYTES = 4096


def parse_http_addr(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8080``); ValueError naming the fix."""
    try:
        host, port_text = split_host_port(text)
    except AddrError as exc:
        raise ValueError(f"{exc}; use host:port, e.g. 127.0.0.1:8500") from None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def http_problems(cfg: AgentConfig, error: type[ConfigError]) -> list[ConfigError]:
    """Every problem of the ``http_*`` keys of ``cfg`` (``error`` is ConfigError)."""
    problems: list[ConfigError] = []

    def bad(key: str, message: str) -> None:
        problems.append(error(f"Invalid {key}: {message}", key=key, stage="setup"))

    if cfg.http_addr:
        try:
            parse_http_addr(cfg.http_addr)
        except ValueError as exc:
            bad("http_addr", str(exc))
    else:
        for key in ("http_token", "http_tls_cert", "http_tls_key"):
            if getattr(cfg, key):
                bad(key, "set without http_addr; set http_addr (-http-addr) to enable the "
                         "HTTP listener, or remove it")
    token = cfg.http_token
    if token and (len(token.encode()) > MAX_TOKEN_BYTES
                  or any(not c.isprintable() or c.isspace() for c in token)):
        bad("http_token", f"use up to {MAX_TOKEN_BYTES} printable characters without spaces")
    if bool(cfg.http_tls_cert) != bool(cfg.http_tls_key):
        bad("http_tls_cert" if not cfg.http_tls_cert else "http_tls_key",
            "TLS needs both http_tls_cert and http_tls_key (PEM files); set both or neither")
    for key in ("http_tls_cert", "http_tls_key"):
        path = getattr(cfg, key)
        if path and not os.access(path, os.R_OK):
            bad(key, f"cannot read {path!r}; give the path of a readable PEM file")
    for key, (low, high), value in (
            ("http_max_connections", MAX_CONNECTIONS_RANGE, cfg.http_max_connections),
            ("http_max_body_bytes", MAX_BODY_RANGE, cfg.http_max_body_bytes),
            ("http_idle_timeout", IDLE_TIMEOUT_RANGE, cfg.http_idle_timeout)):
        if not low <= value <= high:
            bad(key, f"{value:g} is out of range; use a value in {low:g}..{high:g}")
    return problems
