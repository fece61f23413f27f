"""``agent``: map serf's agent flags onto the config, load and check it, then run the agent.

Only what a plain agent needs is imported here: the RPC client, json and the simulator stay out
of its process (tests/unit/test_agent_rss.py). The agent's config modules are imported when the
command runs: every other command (``members``, ``join``, ...) imports this module to list it,
and they took ~20 ms of each CLI call's start
(-X importtime: config_load and what it imports, 17-20 ms).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pyserf.cli.flags import FlagError, FlagSet
from pyserf.cli.output import out
from pyserf.cli.registry import APP, COMMANDS, command
from pyserf.gocompat.durations import parse_duration_ns

if TYPE_CHECKING:
    from pyserf.agent.config import AgentConfig

AGENT_HELP = f"""
Usage: {APP} agent [options]

  Starts the agent and runs until it is interrupted. The agent is a single
  node of the cluster.

Options:

  -bind=0.0.0.0:7946       Address to bind network listeners to; IPv6 as [::1]
                           or [::1]:7946.
  -iface                   Network interface to bind to (instead of, or checked
                           against, -bind); also the multicast device for
                           -discover.
  -advertise=0.0.0.0       Address to advertise to the other cluster members.
  -config-file=foo         JSON file to read configuration from. Repeatable.
  -config-dir=foo          Directory whose *.json files are read, in
                           alphabetical order. Repeatable.
  -config-check            Validate the configuration and exit (0 when valid).
  -discover=cluster        Cluster name for mDNS peer discovery.
  -http-addr=addr:port     Serve the HTTP API (issue 14) on this address; off
                           by default. See the http_* config keys.
  -encrypt=foo             Base64 key (16, 24 or 32 bytes) encrypting gossip.
  -keyring-file            File persisting the encryption keyring.
  -event-handler=foo       Script to run on events, "[filter=]script".
                           Repeatable; see below.
  -join=addr               Agent to join at startup. Repeatable.
  -log-level=info          Log level of the agent.
  -node=hostname           Name of this node; must be unique in the cluster.
  -profile=[lan|wan|local] Timing profile. Default lan.
  -protocol=n              Serf protocol version to speak (default: newest).
  -rejoin                  Ignore a previous leave recorded in the snapshot.
  -retry-join=addr         Agent to join, retried until it works. Repeatable.
  -retry-interval=30s      Time between -retry-join attempts.
  -retry-max=0             Maximum -retry-join attempts (0 = no limit).
  -disable-compression     Disable message compression for broadcasts.
  -role=foo                Deprecated: same as '-tag role=foo'.
  -rpc-addr=127.0.0.1:7373 Address of the RPC listener.
  -snapshot=path/to/file   Snapshot file for rejoining after restarts.
  -tag key=value           Tag of this node. Repeatable.
  -tags-file=/path/to/file File persisting the tags (not with -tag or config
                           tags).
  -syslog                  Also send logs to syslog.
  -broadcast-timeout=5s    Time allowed for broadcasts such as leave and
                           force-leave to go out.

Event handlers:

  A handler is "script" (all events), "TYPE=script" with TYPE one of
  member-join, member-leave, member-failed, member-update, member-reap, user,
  query, or "user:NAME=script" / "query:NAME=script" for one user event or
  query name. Several filters may be comma-separated.
"""


def _agent_out(msg: str) -> None:
    out("==> " + msg)


# Agent flags that set one config key each, taken only when given (so a config file's value
# stands otherwise).
STRING_KEYS = {
    "bind": "bind", "advertise": "advertise", "encrypt": "encrypt_key",
    "keyring-file": "keyring_file", "log-level": "log_level", "node": "node_name",
    "role": "role", "rpc-addr": "rpc_addr", "profile": "profile",
    "snapshot": "snapshot_path", "discover": "discover", "iface": "interface",
    "tags-file": "tags_file", "http-addr": "http_addr",
}
LIST_KEYS = {"event-handler": "event_handlers", "join": "start_join", "retry-join": "retry_join"}
BOOL_KEYS = {"replay": "replay_on_join", "syslog": "enable_syslog",
             "rejoin": "rejoin_after_leave"}
DURATION_KEYS = {"retry-interval": "retry_interval", "broadcast-timeout": "broadcast_timeout"}


def agent_flag_set(paths: list[str]) -> FlagSet:
    """serf's agent flags; -config-file and -config-dir both append to ``paths``, in order."""
    fs = FlagSet("agent", lambda: _agent_out(COMMANDS["agent"].help))
    for name in (*STRING_KEYS, *DURATION_KEYS):
        fs.string(name)
    fs.strings("config-file", paths)
    fs.strings("config-dir", paths)
    for name in (*LIST_KEYS, "tag"):
        fs.strings(name)
    for name in (*BOOL_KEYS, "disable-compression", "config-check"):
        fs.bool(name)
    fs.int("protocol", -1)
    fs.int("retry-max", 0)
    return fs


def flags_config(fs: FlagSet) -> tuple[AgentConfig, set[str]]:
    """The config the parsed flags describe and the keys they set (they win over files).

    Raises ConfigError or ValueError (a bad tag or duration) with the text serf prints.
    """
    from pyserf.agent.config import AgentConfig, unmarshal_tags

    flags = AgentConfig()
    keys: set[str] = set()
    for flag, key in STRING_KEYS.items():
        if flag in fs.given:
            setattr(flags, key, fs[flag])
            keys.add(key)
    for flag, key in LIST_KEYS.items():
        if flag in fs.given:
            setattr(flags, key, list(fs[flag]))
            keys.add(key)
    for flag, key in BOOL_KEYS.items():
        if flag in fs.given:
            setattr(flags, key, fs[flag])
            keys.add(key)
    if "disable-compression" in fs.given:
        flags.enable_compression = not fs["disable-compression"]
        keys.add("enable_compression")
    if "protocol" in fs.given:
        flags.protocol = fs["protocol"]
        keys.add("protocol")
    if "retry-max" in fs.given:
        flags.retry_max_attempts = fs["retry-max"]
        keys.add("retry_max_attempts")
    flags.tags = unmarshal_tags(fs["tag"])
    if fs["tag"]:
        keys.add("tags")
    for flag, key in DURATION_KEYS.items():
        text = fs[flag]
        if not text:
            continue
        setattr(flags, key, parse_duration_ns(text) / 1e9)
        keys.add(key)
    return flags, keys


@command("agent", "Runs a Serf agent", AGENT_HELP)
def cmd_agent(args: list[str]) -> int:
    from pyserf.agent.config import ConfigError
    from pyserf.agent.config_load import ConfigSources

    paths: list[str] = []
    fs = agent_flag_set(paths)
    try:
        fs.parse(args)
    except FlagError:
        return 1
    try:
        flags, keys = flags_config(fs)
    except (ConfigError, ValueError) as exc:
        _agent_out(f"Error: {exc}")
        return 1

    sources = ConfigSources(paths=list(paths), flags=flags, flag_keys=frozenset(keys),
                            argv=list(args))
    try:
        config = sources.load_unvalidated()
    except ConfigError as exc:
        _agent_out(str(exc))
        return 1
    problems = sources.problems(config)
    if fs["config-check"]:  # a pyserf extension: every problem, then the verdict
        for warning in sources.warnings:
            _agent_out(warning)
        for problem in problems:
            _agent_out(str(problem))
        if problems:
            return 1
        _agent_out("Configuration is valid")
        return 0
    # The problems serf finds while reading the config come before its warnings and the
    # log level after them; the rest are reported by the agent as it starts (run_agent).
    early = [p for p in problems if p.stage == "config"]
    if early:
        _agent_out(str(early[0]))
        return 1
    for warning in sources.warnings:
        _agent_out(warning)
    late = [p for p in problems if p.stage == "logger"]
    if late:
        _agent_out(str(late[0]))
        return 1

    # A reload requested while we are still starting must not kill us (systemd would not
    # restart an agent that died of SIGHUP); the event loop takes the signal over shortly.
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The agent never speaks TLS. Keeping the ssl module out of the process (asyncio treats it
    # as optional) saves about 4.5 MiB of OpenSSL per agent. The HTTP listener may (https), and
    # its /metrics needs prometheus-client, which imports ssl (and cannot once aiohttp loaded
    # urllib.request without it).
    if "asyncio" not in sys.modules and not config.http_addr:
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from pyserf.agent.lifecycle import run_agent

    return int(run_agent(config, sources) or 0)
