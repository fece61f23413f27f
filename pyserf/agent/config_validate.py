"""After merging: serf's fix-ups (with their warnings) and the checks it refuses to start on.

:func:`finalize` is what serf's agent command does to the merged config before using it;
:func:`validate` lists every problem in serf's checking order, each tagged with the start-up
stage at which serf reports it (:data:`pyserf.agent.config.STAGES`), so the agent prints it
where serf would.
"""

from __future__ import annotations

import socket

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN
from pyserf.agent.config import (
    LOG_LEVELS,
    PROFILES,
    USER_EVENT_SIZE_LIMIT_MAX,
    AgentConfig,
    ConfigError,
)
from pyserf.gocompat.durations import format_duration
from pyserf.memberlist import security

__all__ = ["finalize", "first_problem", "validate"]

MIN_RETRY_INTERVAL = 1.0
MIN_BROADCAST_TIMEOUT = 1.0


def finalize(cfg: AgentConfig) -> tuple[AgentConfig, list[str]]:
    """Apply serf's post-merge fix-ups; returns (new config, warning lines to print).

    Empty node name → hostname; ``role`` → tag ``role``; retry interval and broadcast timeout
    raised to 1 s; log level upper-cased.
    """
    out = cfg.copy()
    warnings: list[str] = []
    if not out.node_name:
        out.node_name = socket.gethostname()
    if out.role:
        warnings.append("Deprecation warning: 'Role' has been replaced with 'Tags'")
        out.tags = {**out.tags, "role": out.role}
    if out.retry_interval < MIN_RETRY_INTERVAL:
        out.retry_interval = MIN_RETRY_INTERVAL
        warnings.append(
            f"Warning: 'RetryInterval' is too low. Setting to {format_duration(out.retry_interval)}"
        )
    if out.broadcast_timeout < MIN_BROADCAST_TIMEOUT:
        out.broadcast_timeout = MIN_BROADCAST_TIMEOUT
        warnings.append(
            "Warning: 'BroadcastTimeout' is too low. Setting to "
            + format_duration(out.broadcast_timeout)
        )
    if out.rejoin_after_leave and not out.snapshot_path:
        warnings.append("Warning: 'RejoinAfterLeave' enabled without snapshot file")
    out.log_level = out.log_level.upper()
    return out, warnings


def _interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def validate(cfg: AgentConfig) -> list[ConfigError]:
    """Return every problem serf would refuse to start with, in serf's checking order."""
    problems: list[ConfigError] = []
    for script in cfg.event_scripts():
        if not script.valid():
            problems.append(ConfigError(f"Invalid event script: {script}", key="event_handlers"))
    if cfg.interface and not _interface_exists(cfg.interface):
        problems.append(
            ConfigError(
                "Invalid network interface: route ip+net: no such network interface",
                key="interface",
            )
        )
    level = cfg.log_level.upper()
    if level not in LOG_LEVELS:
        problems.append(
            ConfigError(
                f"Invalid log level: {level}. Valid log levels are: [{' '.join(LOG_LEVELS)}]",
                key="log_level", stage="logger",
            )
        )
    key_size_error = ""
    if cfg.encrypt_key:
        try:
            security.parse_key_b64(cfg.encrypt_key)
        except ValueError as exc:
            # serf decodes the key before "Starting Serf agent..." but memberlist checks its
            # size only when Serf is created.
            if str(exc).startswith("illegal base64"):
                problems.append(ConfigError(f"Invalid encryption key: {exc}",
                                            key="encrypt_key", stage="setup"))
            else:
                key_size_error = f"Failed to create memberlist: {exc}"
    if cfg.profile not in PROFILES:
        problems.append(ConfigError(f"Unknown profile: {cfg.profile}", key="profile",
                                    stage="setup"))
    if cfg.tags_file and cfg.tags:
        problems.append(ConfigError("Tags config not allowed while using tag files",
                                    key="tags_file", stage="create"))
    if cfg.keyring_file and cfg.encrypt_key:
        problems.append(ConfigError("Encryption key not allowed while using a keyring",
                                    key="keyring_file", stage="create"))
    if not SERF_PROTOCOL_MIN <= cfg.protocol <= SERF_PROTOCOL_MAX:
        side = "low" if cfg.protocol < SERF_PROTOCOL_MIN else "high"
        problems.append(
            ConfigError(
                f"Protocol version '{cfg.protocol}' too {side}. Must be in range: "
                f"[{SERF_PROTOCOL_MIN}, {SERF_PROTOCOL_MAX}]",
                key="protocol", stage="serf",
            )
        )
    if cfg.user_event_size_limit > USER_EVENT_SIZE_LIMIT_MAX:
        problems.append(
            ConfigError(
                f"user event size limit exceeds limit of {USER_EVENT_SIZE_LIMIT_MAX} bytes",
                key="user_event_size_limit", stage="serf",
            )
        )
    if cfg.hosts_file:
        from pyserf.agent.hosts_file import HostsFileError, parse_settings  # only when used

        try:
            parse_settings(cfg.hosts_file)
        except HostsFileError as exc:
            problems.append(ConfigError(str(exc), key="hosts_file"))
    from pyserf.http.settings import http_problems  # pure; aiohttp is not imported

    problems.extend(http_problems(cfg, ConfigError))
    if key_size_error and not cfg.keyring_file:
        problems.append(ConfigError(key_size_error, key="encrypt_key", stage="serf"))
    return problems


def first_problem(cfg: AgentConfig, stage: str) -> ConfigError | None:
    """The problem serf reports at ``stage`` of its start-up, if any."""
    return next((p for p in validate(cfg) if p.stage == stage), None)
