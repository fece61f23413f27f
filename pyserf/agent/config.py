"""Agent configuration: defaults, JSON files, merging and validation (Go texts: gocompat).

Serf users keep their JSON config files and scripts when they switch to pyserf, so decoding
errors, merge order and validation messages follow serf 0.9.4 (mapstructure + Go's JSON and
``time.ParseDuration``).  One deliberate difference: a boolean that a later source sets
explicitly (``"replay_on_join": false``, ``-replay=false``) overrides earlier sources, where
serf could only ever turn booleans on.  To do that every loader reports which keys it set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN
from pyserf.gocompat.durations import format_duration, parse_duration
from pyserf.gocompat.errno import path_error
from pyserf.gocompat.fmt import json_kind, json_type, value_v
from pyserf.gocompat.jsonerr import JSONError, decode_first
from pyserf.memberlist import security

__all__ = [
    "AgentConfig",
    "ConfigError",
    "ConfigSources",
    "EventFilter",
    "EventScript",
    "LOG_LEVELS",
    "PROFILES",
    "USER_EVENT_SIZE_LIMIT_MAX",
    "decode_config",
    "finalize",
    "first_problem",
    "load_dir",
    "load_file",
    "load_paths",
    "merge",
    "parse_event_filter",
    "parse_event_handler_spec",
    "parse_event_scripts",
    "unmarshal_tags",
    "validate",
]

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
PROFILES = ("lan", "wan", "local")
USER_EVENT_SIZE_LIMIT_MAX = 9216
MIN_RETRY_INTERVAL = 1.0
MIN_BROADCAST_TIMEOUT = 1.0
EVENT_TYPES = (
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
    "user",
    "query",
    "*",
)


class ConfigError(Exception):
    """A configuration problem, worded exactly like serf's message for the same problem.

    ``message`` is serf's text (``str()`` is that text alone, so operators and scripts see
    what serf prints), ``key`` the JSON key at fault when known, ``path`` the file involved and
    ``stage`` when serf's agent command reports it (see ``STAGES``).
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


# --------------------------------------------------------------------------------------------
# AgentConfig
# --------------------------------------------------------------------------------------------


@dataclass
class AgentConfig:
    """Every key of serf's agent JSON config; durations are float seconds."""

    node_name: str = ""
    role: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    tags_file: str = ""
    bind: str = "0.0.0.0:7946"
    advertise: str = ""
    interface: str = ""
    discover: str = ""
    encrypt_key: str = ""
    keyring_file: str = ""
    log_level: str = "INFO"
    rpc_addr: str = "127.0.0.1:7373"
    rpc_auth: str = ""
    event_handlers: list[str] = field(default_factory=list)
    start_join: list[str] = field(default_factory=list)
    replay_on_join: bool = False
    retry_join: list[str] = field(default_factory=list)
    retry_interval: float = 30.0
    retry_max_attempts: int = 0
    rejoin_after_leave: bool = False
    snapshot_path: str = ""
    protocol: int = SERF_PROTOCOL_MAX
    profile: str = "lan"
    leave_on_terminate: bool = False
    skip_leave_on_interrupt: bool = False
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    broadcast_timeout: float = 5.0
    disable_name_resolution: bool = False
    enable_syslog: bool = False
    syslog_facility: str = "LOCAL0"
    statsite_addr: str = ""
    statsd_addr: str = ""
    query_response_size_limit: int = 1024
    query_size_limit: int = 1024
    user_event_size_limit: int = 512
    enable_compression: bool = True
    disable_coordinates: bool = False
    # pyserf extension: kill an event handler still running after this long (0 = never).
    handler_timeout: float = 0.0
    # pyserf extension (issue 14): the HTTP API, off unless http_addr is set (pyserf/http).
    http_addr: str = ""
    http_token: str = ""
    http_metrics_auth: bool = False
    http_tls_cert: str = ""
    http_tls_key: str = ""
    http_max_connections: int = 256
    http_max_body_bytes: int = 64 * 1024
    http_idle_timeout: float = 30.0
    # pyserf extension: keep a block of alive members in a hosts file (agent/hosts_file.py).
    hosts_file: dict[str, Any] = field(default_factory=dict)

    def event_scripts(self) -> list[EventScript]:
        """All handler specs expanded to one script per filter (serf's EventScripts)."""
        result: list[EventScript] = []
        for spec in self.event_handlers:
            result.extend(parse_event_scripts(spec))
        return result

    def copy(self) -> AgentConfig:
        """Deep copy, so merging never aliases another config's dict or lists."""
        return copy.deepcopy(self)


# Value kind of every key; the order is serf's struct order (used for decoding).
_KINDS: dict[str, str] = {
    "node_name": "str",
    "role": "str",
    "disable_coordinates": "bool",
    "tags": "map",
    "tags_file": "str",
    "bind": "str",
    "advertise": "str",
    "encrypt_key": "str",
    "keyring_file": "str",
    "log_level": "str",
    "rpc_addr": "str",
    "rpc_auth": "str",
    "protocol": "int",
    "replay_on_join": "bool",
    "query_response_size_limit": "int",
    "query_size_limit": "int",
    "user_event_size_limit": "int",
    "start_join": "list",
    "event_handlers": "list",
    "profile": "str",
    "snapshot_path": "str",
    "leave_on_terminate": "bool",
    "skip_leave_on_interrupt": "bool",
    "discover": "str",
    "interface": "str",
    "reconnect_interval": "dur",
    "reconnect_timeout": "dur",
    "tombstone_timeout": "dur",
    "disable_name_resolution": "bool",
    "enable_syslog": "bool",
    "syslog_facility": "str",
    "retry_join": "list",
    "retry_max_attempts": "int",
    "retry_interval": "dur",
    "rejoin_after_leave": "bool",
    "enable_compression": "bool",
    "statsite_addr": "str",
    "statsd_addr": "str",
    "broadcast_timeout": "dur",
    "handler_timeout": "dur",
    "http_addr": "str",
    "http_token": "str",
    "http_metrics_auth": "bool",
    "http_tls_cert": "str",
    "http_tls_key": "str",
    "http_max_connections": "int",
    "http_max_body_bytes": "int",
    "http_idle_timeout": "dur",
    "hosts_file": "obj",
}
CONFIG_KEYS: tuple[str, ...] = tuple(_KINDS)
# serf parses the duration strings in this order after decoding, reporting the first failure.
_DURATION_ORDER = (
    "reconnect_interval",
    "reconnect_timeout",
    "tombstone_timeout",
    "retry_interval",
    "broadcast_timeout",
    "handler_timeout",
    "http_idle_timeout",
)
assert set(CONFIG_KEYS) == {f.name for f in dataclasses.fields(AgentConfig)}


def unmarshal_tags(pairs: Iterable[str]) -> dict[str, str]:
    """Turn ``key=value`` strings into a dict; serf's ``Invalid tag: 'x'`` on bad input."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Invalid tag: '{pair}'")
        result[key] = value
    return result


# --------------------------------------------------------------------------------------------
# Event handler specs and filters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """One event filter: ``event`` is a type or ``*``; ``name`` narrows user/query events."""

    event: str
    name: str = ""

    def valid(self) -> bool:
        """Whether serf would accept this filter."""
        return self.event in EVENT_TYPES

    def matches(self, event_type: str, name: str | None = None) -> bool:
        """Whether an event of ``event_type`` (and user/query ``name``) passes this filter."""
        if self.event == "*":
            return True
        if event_type != self.event:
            return False
        if self.event in ("user", "query") and self.name:
            return name == self.name
        return True

    @property
    def key(self) -> str:
        """``event:name``, the key serf's ``info`` uses for handlers."""
        return f"{self.event}:{self.name}"

    def __str__(self) -> str:
        return f"{self.event}:{self.name}" if self.name else self.event


@dataclass(frozen=True)
class EventScript:
    """A handler command bound to one filter (a spec with N filters gives N scripts)."""

    filter: EventFilter
    command: str

    def valid(self) -> bool:
        return self.filter.valid()

    def matches(self, event_type: str, name: str | None = None) -> bool:
        return self.filter.matches(event_type, name)

    def __str__(self) -> str:
        return f"Event '{self.filter}' invoking '{self.command}'"


def parse_event_filter(text: str) -> list[EventFilter]:
    """Split a comma list of filters (``member-join,user:deploy``); empty means ``*``.

    No validation here: the RPC ``stream`` command and handler specs validate separately.
    """
    if text == "":
        text = "*"
    filters: list[EventFilter] = []
    for part in text.split(","):
        for prefix in ("user:", "query:"):
            if part.startswith(prefix):
                filters.append(EventFilter(prefix[:-1], part[len(prefix):]))
                break
        else:
            filters.append(EventFilter(part))
    return filters


def parse_event_handler_spec(spec: str) -> tuple[list[EventFilter], str]:
    """Split ``[filter=]command`` at the first ``=`` into (filters, command)."""
    filt, sep, command = spec.partition("=")
    if not sep:
        filt, command = "", spec
    return parse_event_filter(filt), command


def parse_event_scripts(spec: str) -> list[EventScript]:
    """Expand one handler spec into one EventScript per filter."""
    filters, command = parse_event_handler_spec(spec)
    return [EventScript(f, command) for f in filters]


def _unconvertible(name: str, want: str, value: Any) -> str:
    return (
        f"'{name}' expected type '{want}', got unconvertible type '{json_type(value)}', "
        f"value: '{value_v(value)}'"
    )


def _decode_string(name: str, value: Any, errors: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    errors.append(_unconvertible(name, "string", value))
    return None


def decode_config(raw: Any) -> tuple[AgentConfig, set[str]]:
    """Decode a JSON-decoded object into a partial AgentConfig like serf's mapstructure step.

    Returns the config (unset keys keep defaults) and the keys the object set.  Unknown keys,
    wrong types and bad durations raise ConfigError with serf's wording.
    """
    cfg = AgentConfig()
    keys: set[str] = set()
    if raw is None:
        return cfg, keys
    if not isinstance(raw, dict):
        raise ConfigError(f"'' expected a map, got '{json_kind(raw)}'")
    errors: list[str] = []
    unused = set(raw)
    durations: dict[str, str] = {}
    for name, kind in _KINDS.items():
        if name in raw:
            data_key = name
        else:
            lowered = name.lower()
            data_key = next((k for k in raw if k.lower() == lowered), None)
            if data_key is None:
                continue
        unused.discard(data_key)
        value = raw[data_key]
        if value is None:
            continue
        if kind in ("str", "dur"):
            text = _decode_string(name, value, errors)
            if text is None:
                continue
            if kind == "dur":
                if text:
                    durations[name] = text
                continue
            setattr(cfg, name, text)
        elif kind == "bool":
            if not isinstance(value, bool):
                errors.append(_unconvertible(name, "bool", value))
                continue
            setattr(cfg, name, value)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(_unconvertible(name, "int", value))
                continue
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(_unconvertible(name, "int", value))
                continue
            setattr(cfg, name, int(value))
        elif kind == "map":
            if not isinstance(value, dict):
                errors.append(f"'{name}' expected a map, got '{json_kind(value)}'")
                continue
            tags: dict[str, str] = {}
            for tag_key, tag_value in value.items():
                text = _decode_string(f"{name}[{tag_key}]", tag_value, errors)
                tags[tag_key] = text or ""
            setattr(cfg, name, tags)
        elif kind == "obj":  # checked as a whole by validate()
            if not isinstance(value, dict):
                errors.append(f"'{name}' expected a map, got '{json_kind(value)}'")
                continue
            setattr(cfg, name, copy.deepcopy(value))
        elif kind == "list":
            if not isinstance(value, list):
                errors.append(
                    f"'{name}': source data must be an array or slice, got {json_kind(value)}"
                )
                continue
            items: list[str] = []
            for idx, item in enumerate(value):
                text = _decode_string(f"{name}[{idx}]", item, errors)
                items.append(text or "")
            setattr(cfg, name, items)
        keys.add(name)
    if unused:
        errors.append("'' has invalid keys: " + ", ".join(sorted(unused)))
    if errors:
        points = sorted(f"* {e}" for e in errors)
        raise ConfigError(f"{len(errors)} error(s) decoding:\n\n" + "\n".join(points))
    for name in _DURATION_ORDER:
        if name in durations:
            try:
                setattr(cfg, name, parse_duration(durations[name]))
            except ValueError as exc:
                raise ConfigError(str(exc), key=name) from None
            keys.add(name)
    return cfg, keys


def load_file(path: str) -> tuple[AgentConfig, set[str]]:
    """Read and decode one JSON config file; returns (partial config, keys it set)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise ConfigError(
            f"Error decoding '{path}': read {path}: is a directory", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': {path_error('open', path, exc)}", path=path
        ) from None
    try:
        raw = decode_first(data)
    except JSONError as exc:
        raise ConfigError(f"Error decoding '{path}': {exc}", path=path) from None
    try:
        return decode_config(raw)
    except ConfigError as exc:
        msg = f"Error decoding '{path}': {exc.message}"
        raise ConfigError(msg, key=exc.key, path=path) from None


def load_dir(path: str) -> tuple[AgentConfig, set[str]]:
    """Merge every ``*.json`` file of a directory (sorted, not recursive) into one partial."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': {path_error('open', path, exc)}", path=path
        ) from None
    result = AgentConfig()
    keys: set[str] = set()
    for name in entries:
        sub = os.path.normpath(os.path.join(path, name))
        if os.path.isdir(sub) and not os.path.islink(sub):
            continue
        if not name.endswith(".json"):
            continue
        cfg, sub_keys = load_file(sub)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


def load_paths(paths: Sequence[str]) -> tuple[AgentConfig, set[str]]:
    """Load files and directories in order (serf's ReadConfigPaths), merged into one partial."""
    result = AgentConfig()
    keys: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            cfg, sub_keys = load_dir(path)
        else:
            cfg, sub_keys = load_file(path)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


# --------------------------------------------------------------------------------------------
# Merge, finalize, validate
# --------------------------------------------------------------------------------------------

_DEFAULTS = AgentConfig()


def _implicit_keys(cfg: AgentConfig) -> set[str]:
    """Keys treated as set when a source did not report its keys: values that differ from
    the defaults (so booleans can then only flip away from their default, like serf)."""
    return {k for k in CONFIG_KEYS if getattr(cfg, k) != getattr(_DEFAULTS, k)}


def merge(
    base: AgentConfig, override: AgentConfig, override_keys: Iterable[str] | None = None
) -> AgentConfig:
    """Merge ``override`` onto ``base`` with serf's rules; returns a new config.

    Non-empty strings and non-zero ints/durations replace; ``protocol`` only if > 0; tags merge
    per key; handler and join lists append.  Booleans listed in ``override_keys`` replace even
    when false (pyserf fix).  Without ``override_keys`` a key counts as set when its value
    differs from the default.
    """
    result = base.copy()
    keys = set(override_keys) if override_keys is not None else _implicit_keys(override)
    for name in CONFIG_KEYS:
        if name not in keys:
            continue
        value = getattr(override, name)
        kind = _KINDS[name]
        if kind == "str":
            if value:
                setattr(result, name, value)
        elif kind == "int":
            if (name == "protocol" and value > 0) or (name != "protocol" and value != 0):
                setattr(result, name, value)
        elif kind == "dur":
            if value != 0:
                setattr(result, name, value)
        elif kind == "bool":
            setattr(result, name, bool(value))
        elif kind == "map":
            merged = dict(result.tags)
            merged.update(value)
            result.tags = merged
        elif kind == "obj":  # a later block replaces the whole earlier one
            if value:
                setattr(result, name, copy.deepcopy(value))
        elif kind == "list":
            setattr(result, name, list(getattr(result, name)) + list(value))
    return result


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


# When serf's agent command reports each kind of problem, in its order: "config" while reading
# the configuration (before its warnings), "logger" when setting up logging, "setup" while
# building the agent (after the bind/advertise addresses, before "Starting Serf agent..."),
# "create" when creating the agent ("Failed to setup the Serf agent: ...") and "serf" when
# creating Serf ("Failed to start the Serf agent: Error creating Serf: ...").
STAGES = ("config", "logger", "setup", "create", "serf")


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


# --------------------------------------------------------------------------------------------
# Sources (files + command-line flags), re-loadable on SIGHUP
# --------------------------------------------------------------------------------------------


@dataclass
class ConfigSources:
    """Where a running agent's configuration came from, so SIGHUP can rebuild it.

    ``paths`` are the ``-config-file``/``-config-dir`` arguments in command-line order,
    ``flags`` the partial config built from the other flags and ``flag_keys`` the keys those
    flags set.  ``load()`` re-reads the files every time, like serf's reload.
    """

    paths: list[str] = field(default_factory=list)
    flags: AgentConfig = field(default_factory=AgentConfig)
    flag_keys: frozenset[str] = frozenset()
    argv: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def load_unvalidated(self) -> AgentConfig:
        """Defaults ← files ← flags, then serf's fix-ups; warnings land in ``self.warnings``."""
        cfg = AgentConfig()
        file_cfg, file_keys = load_paths(self.paths)
        cfg = merge(cfg, file_cfg, file_keys)
        cfg = merge(cfg, self.flags, self.flag_keys)
        cfg, self.warnings = finalize(cfg)
        self.keys = set(file_keys) | set(self.flag_keys)
        return cfg

    def problems(self, cfg: AgentConfig) -> list[ConfigError]:
        """Every problem of ``cfg`` (see validate)."""
        return validate(cfg)

    def load(self) -> AgentConfig:
        """Build and validate the config; raises the first ConfigError found."""
        cfg = self.load_unvalidated()
        problems = self.problems(cfg)
        if problems:
            raise problems[0]
        return cfg
