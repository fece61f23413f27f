"""Agent configuration: every key of serf's agent JSON config, its kind and its defaults.

Serf users keep their JSON config files and scripts when they switch to pyserf, so the keys,
their defaults and the error texts follow serf 0.9.4. Around this schema:
:mod:`pyserf.agent.config_decode` turns a JSON object into a partial config (mapstructure's
checks and texts), :mod:`pyserf.agent.config_load` reads files and directories and merges
sources in serf's order (:class:`~pyserf.agent.config_load.ConfigSources`, re-read on SIGHUP),
and :mod:`pyserf.agent.config_validate` applies serf's fix-ups and start-up checks.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pyserf import SERF_PROTOCOL_MAX
from pyserf.agent.config_error import ConfigError as ConfigError
from pyserf.agent.config_error import unmarshal_tags as unmarshal_tags
from pyserf.agent.event_filter import EventScript, parse_event_scripts

__all__ = [
    "AgentConfig",
    "CONFIG_KEYS",
    "ConfigError",
    "KINDS",
    "LOG_LEVELS",
    "PROFILES",
    "STAGES",
    "USER_EVENT_SIZE_LIMIT_MAX",
    "unmarshal_tags",
]

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERR")
PROFILES = ("lan", "wan", "local")
USER_EVENT_SIZE_LIMIT_MAX = 9216

# When serf's agent command reports each kind of problem, in its order: "config" while reading
# the configuration (before its warnings), "logger" when setting up logging, "setup" while
# building the agent (after the bind/advertise addresses, before "Starting Serf agent..."),
# "create" when creating the agent ("Failed to setup the Serf agent: ...") and "serf" when
# creating Serf ("Failed to start the Serf agent: Error creating Serf: ...").
STAGES = ("config", "logger", "setup", "create", "serf")


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
KINDS: dict[str, str] = {
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
CONFIG_KEYS: tuple[str, ...] = tuple(KINDS)
assert set(CONFIG_KEYS) == {f.name for f in dataclasses.fields(AgentConfig)}
