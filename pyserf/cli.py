"""The ``pyserf`` command line: serf's subcommands, flags, outputs and exit codes.

Scripts written against ``serf`` should keep working, so this mirrors serf 0.9.4's CLI
(mitchellh/cli dispatch + Go ``flag`` parsing): command output *and* error messages go to
stdout like serf's ``BasicUi``; flag-parsing errors and ``-h`` help go to stderr; an unknown or
missing command exits 127.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyserf import SERF_PROTOCOL_MAX, SERF_PROTOCOL_MIN, __version__
from pyserf.agent.config import AgentConfig, ConfigError, ConfigSources, unmarshal_tags
from pyserf.client.errors import RPCError
from pyserf.gocompat.durations import parse_duration, parse_duration_ns
from pyserf.gocompat.fmt import sharp_v
from pyserf.gocompat.jsonenc import marshal_indent as go_json
from pyserf.gocompat.strconv import FALSE, RANGE, TRUE, NumError
from pyserf.gocompat.strconv import parse_int as go_parse_int
from pyserf.gocompat.strconv import quote as go_quote

if TYPE_CHECKING:
    from pyserf.client.rpc_client import Member, RPCClient

APP = "pyserf"
DEFAULT_RPC_ADDR = "127.0.0.1:7373"
INTERNAL_PING = "_serf_ping"

# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Go-compatible flag parsing
# --------------------------------------------------------------------------------------------


class FlagError(Exception):
    """Flag parsing failed; the message and usage have already been printed."""


@dataclass
class _Flag:
    name: str
    kind: str  # "string" | "bool" | "int" | "duration" | "list"
    default: Any
    target: list[str] | None = None


class FlagSet:
    """A small re-implementation of Go's ``flag.FlagSet`` (ContinueOnError)."""

    def __init__(self, name: str, usage: Callable[[], None]) -> None:
        self.name = name
        self.usage = usage
        self._flags: dict[str, _Flag] = {}
        self.values: dict[str, Any] = {}
        self.given: set[str] = set()
        self.args: list[str] = []

    def _add(self, name: str, kind: str, default: Any, target: list[str] | None = None) -> None:
        self._flags[name] = _Flag(name, kind, default, target)
        self.values[name] = default if target is None else target

    def string(self, name: str, default: str = "") -> None:
        self._add(name, "string", default)

    def bool(self, name: str, default: bool = False) -> None:
        self._add(name, "bool", default)

    def int(self, name: str, default: int = 0) -> None:
        self._add(name, "int", default)

    def duration(self, name: str, default: float = 0.0) -> None:
        self._add(name, "duration", default)

    def strings(self, name: str, target: list[str] | None = None) -> None:
        """A repeatable flag appending to ``target`` (several flags may share one list)."""
        self._add(name, "list", None, target if target is not None else [])

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _fail(self, message: str) -> FlagError:
        err_out(message)
        self.usage()
        return FlagError(message)

    def parse(self, args: Sequence[str]) -> list[str]:
        """Parse flags; returns the positional arguments (also kept in ``self.args``)."""
        rest = list(args)
        while rest:
            arg = rest[0]
            if len(arg) < 2 or arg[0] != "-":
                break
            dashes = 1
            if arg[1] == "-":
                dashes = 2
                if len(arg) == 2:
                    rest.pop(0)
                    break
            name = arg[dashes:]
            if not name or name[0] in "-=":
                raise self._fail(f"bad flag syntax: {arg}")
            rest.pop(0)
            value: str | None = None
            if "=" in name[1:]:
                idx = name.index("=", 1)
                name, value = name[:idx], name[idx + 1:]
            flag = self._flags.get(name)
            if flag is None:
                if name in ("help", "h"):
                    self.usage()
                    raise FlagError("help requested")
                raise self._fail(f"flag provided but not defined: -{name}")
            if flag.kind == "bool":
                if value is None or value in TRUE:
                    self.values[name] = True
                elif value in FALSE:
                    self.values[name] = False
                else:
                    raise self._fail(f"invalid boolean value {go_quote(value)} for -{name}: "
                                     "parse error")
                self.given.add(name)
                continue
            if value is None:
                if not rest:
                    raise self._fail(f"flag needs an argument: -{name}")
                value = rest.pop(0)
            try:
                if flag.kind == "string":
                    self.values[name] = value
                elif flag.kind == "int":
                    self.values[name] = go_parse_int(value)
                elif flag.kind == "duration":
                    self.values[name] = parse_duration(value)
                else:
                    assert flag.target is not None
                    flag.target.append(value)
            except ValueError as exc:
                # Go's flag package words strconv's errors its own way.
                reason = "parse error"
                if isinstance(exc, NumError) and exc.err == RANGE:
                    reason = "value out of range"
                raise self._fail(
                    f"invalid value {go_quote(value)} for flag -{name}: {reason}"
                ) from None
            self.given.add(name)
        self.args = rest
        return rest


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

RPC_HELP = """\
  -rpc-addr=127.0.0.1:7373  RPC address of the agent (default $SERF_RPC_ADDR).
  -rpc-auth=""              RPC auth token of the agent (default $SERF_RPC_AUTH)."""


@dataclass
class Command:
    name: str
    synopsis: str
    # A callable for commands whose help lives in a module the agent should not import.
    help_text: str | Callable[[], str]
    run: Callable[[list[str]], int]

    @property
    def help(self) -> str:
        text = self.help_text() if callable(self.help_text) else self.help_text
        return text.strip()


COMMANDS: dict[str, Command] = {}


def command(name: str, synopsis: str,
            help_text: str | Callable[[], str]) -> Callable[[Callable], Callable]:
    def register(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = Command(name, synopsis, help_text, fn)
        return fn

    return register


def _flags(name: str, rpc: bool = True) -> FlagSet:
    """A FlagSet whose usage prints the command help to stdout, like serf."""
    fs = FlagSet(name, lambda: out(COMMANDS[name].help))
    if rpc:
        addr = (
            os.environ.get("SERF_RPC_ADDR")
            or os.environ.get("PYSERF_RPC_ADDR")
            or DEFAULT_RPC_ADDR
        )
        auth = os.environ.get("SERF_RPC_AUTH") or os.environ.get("PYSERF_RPC_AUTH") or ""
        fs.string("rpc-addr", addr)
        fs.string("rpc-auth", auth)
    return fs


def _connect(fs: FlagSet, prefix: str = "") -> RPCClient | None:
    from pyserf.client.rpc_client import RPCClient  # the agent itself never needs the client

    try:
        return RPCClient(fs["rpc-addr"], fs["rpc-auth"])
    except RPCError as exc:
        out(f"{prefix}Error connecting to Serf agent: {exc}")
        return None


def _usage_error(name: str, message: str) -> int:
    out(message)
    out("")
    out(COMMANDS[name].help)
    return 1


def _payload_text(payload: Any) -> str:
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload
    return bytes(payload).decode("utf-8", "surrogateescape")


# ---- members --------------------------------------------------------------------------------


def member_lines(members: Sequence[Member], detailed: bool) -> list[str]:
    """The ``|``-joined rows ``serf members`` feeds to columnize."""
    lines = []
    for m in members:
        tags = ",".join(f"{k}={v}" for k, v in m.tags.items())
        line = f"{m.name}|{m.address}|{m.status}|{tags}"
        if detailed:
            line += (
                f"|Protocol Version: {m.delegate_cur}"
                f"|Available Protocol Range: [{m.delegate_min}, {m.delegate_max}]"
            )
        lines.append(line)
    return lines


def members_json(members: Sequence[Member]) -> str:
    """``serf members -format=json`` output."""
    records = [
        {
            "name": m.name,
            "addr": m.address,
            "port": m.port,
            "tags": {k: m.tags[k] for k in sorted(m.tags)},
            "status": m.status,
            "protocol": {"max": m.delegate_max, "min": m.delegate_min, "version": m.delegate_cur},
        }
        for m in members
    ]
    return go_json({"members": records or None})


@command(
    "members",
    "Lists the members of a Serf cluster",
    f"""
Usage: {APP} members [options]

  Outputs the members of a running agent.

Options:

  -detailed                 Additional information such as protocol versions
                            will be shown (only affects text output format).

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

  -name=<regexp>            Only members whose name matches the regexp are shown.
                            The regexp is anchored at the start and end.

  -role=<regexp>            Deprecated: same as '-tag role=<regexp>'.

  -status=<regexp>          Only members whose status matches the regexp are shown.

  -tag <key>=<regexp>       Only members with the tag <key> matching the regexp
                            are shown. Can be given several times. Anchored.

{RPC_HELP}
""",
)
def cmd_members(args: list[str]) -> int:
    fs = _flags("members")
    fs.bool("detailed")
    fs.string("role")
    fs.string("status")
    fs.string("format", "text")
    tags: list[str] = []
    fs.strings("tag", tags)
    fs.string("name")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    if fs["role"]:
        out("Deprecation warning: 'Role' has been replaced with 'Tags'")
        tags.append(f"role={fs['role']}")
    try:
        req_tags = unmarshal_tags(tags)
    except ConfigError as exc:
        out(f"Error: {exc.message}")
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            members = client.members_filtered(fs["name"], fs["status"], req_tags)
        except RPCError as exc:
            out(f"Error retrieving members: {exc}")
            return 1
    fmt = fs["format"]
    if fmt == "text":
        text = columnize(member_lines(members, fs["detailed"])).strip()
    elif fmt == "json":
        text = members_json(members)
    else:
        out(f'Encoding error: Invalid output format "{fmt}"')
        return 1
    out(text)
    return 0


# ---- join / leave / force-leave -------------------------------------------------------------


@command(
    "join",
    "Tell Serf agent to join cluster",
    f"""
Usage: {APP} join [options] address ...

  Tells a running agent to join the cluster by contacting at least one
  existing member.

Options:

  -replay                   Replay past user events.
{RPC_HELP}
""",
)
def cmd_join(args: list[str]) -> int:
    fs = _flags("join")
    fs.bool("replay")
    try:
        addrs = fs.parse(args)
    except FlagError:
        return 1
    if not addrs:
        return _usage_error("join", "At least one address to join must be specified.")
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            num = client.join(addrs, fs["replay"])
        except RPCError as exc:
            out(f"Error joining the cluster: {exc}")
            return 1
    out(f"Successfully joined cluster by contacting {num} nodes.")
    return 0


@command(
    "leave",
    "Gracefully leaves the Serf cluster and shuts down",
    f"""
Usage: {APP} leave

  Makes the agent leave the cluster gracefully and shut down.

Options:

{RPC_HELP}
""",
)
def cmd_leave(args: list[str]) -> int:
    fs = _flags("leave")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            client.leave()
        except RPCError as exc:
            out(f"Error leaving: {exc}")
            return 1
    out("Graceful leave complete")
    return 0


@command(
    "force-leave",
    'Forces a member of the cluster to enter the "left" state',
    f"""
Usage: {APP} force-leave [options] name

  Forces a member of the cluster into the "left" state. A member that is
  actually alive will rejoin by itself; this is meant for cleaning out
  "failed" nodes that will never come back.

Options:

{RPC_HELP}
  -prune                    Remove the member from the member list entirely.
""",
)
def cmd_force_leave(args: list[str]) -> int:
    fs = _flags("force-leave")
    fs.bool("prune")
    try:
        nodes = fs.parse(args)
    except FlagError:
        return 1
    if len(nodes) != 1:
        return _usage_error("force-leave", "A node name must be specified to force leave.")
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            client.force_leave(nodes[0], fs["prune"])
        except RPCError as exc:
            out(f"Error force leaving: {exc}")
            return 1
    return 0


# ---- tags / info ----------------------------------------------------------------------------


@command(
    "tags",
    "Modify tags of a running Serf agent",
    f"""
Usage: {APP} tags [options] ...

  Modifies the tags of a running agent.

Options:

{RPC_HELP}
  -set key=value            Creates or modifies the value of a tag
  -delete key               Removes a tag, if present
""",
)
def cmd_tags(args: list[str]) -> int:
    fs = _flags("tags")
    pairs: list[str] = []
    deletes: list[str] = []
    fs.strings("set", pairs)
    fs.strings("delete", deletes)
    try:
        fs.parse(args)
    except FlagError:
        return 1
    if not pairs and not deletes:
        out(COMMANDS["tags"].help)
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            tags = unmarshal_tags(pairs)
        except ConfigError as exc:
            out(f"Error: {exc.message}")
            return 1
        try:
            client.update_tags(tags, deletes)
        except RPCError as exc:
            out(f"Error setting tags: {exc}")
            return 1
    out("Successfully updated agent tags")
    return 0


def stats_text(stats: dict[str, dict[str, str]]) -> str:
    """``serf info`` text: sections and keys sorted, values tab-indented."""
    lines = []
    for section in sorted(stats):
        lines.append(f"{section}:")
        values = stats[section] or {}
        for key in sorted(values):
            lines.append(f"\t{key} = {values[key]}")
    return "\n".join(lines).strip()


@command(
    "info",
    "Provides debugging information for operators",
    f"""
Usage: {APP} info [options]

  Provides debugging information for operators.

Options:

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

{RPC_HELP}
""",
)
def cmd_info(args: list[str]) -> int:
    fs = _flags("info")
    fs.string("format", "text")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            stats = client.stats()
        except RPCError as exc:
            out(f"Error querying agent: {exc}")
            return 1
    fmt = fs["format"]
    if fmt == "text":
        text = stats_text(stats)
    elif fmt == "json":
        ordered = {s: {k: stats[s][k] for k in sorted(stats[s])} for s in sorted(stats)}
        text = go_json(ordered)
    else:
        out(f'Encoding error: Invalid output format "{fmt}"')
        return 1
    out(text)
    return 0


# ---- keygen / keys ---------------------------------------------------------------------------


@command(
    "keygen",
    "Generates a new encryption key",
    f"""
Usage: {APP} keygen

  Prints a new random 32-byte encryption key, base64 encoded, ready for the
  agent's -encrypt flag or encrypt_key setting.
""",
)
def cmd_keygen(args: list[str]) -> int:
    out(base64.b64encode(os.urandom(32)).decode("ascii"))
    return 0


def _key_failures(messages: dict[str, str]) -> None:
    if messages:
        out(columnize([f"failed: | {node} | {messages[node]}" for node in sorted(messages)]))


@command(
    "keys",
    "Manipulate the internal encryption keyring used by Serf",
    f"""
Usage: {APP} keys [options]...

  Manages the encryption keyring of every member of the cluster. Changes are
  broadcast to all members and applied locally on each one; every operation
  is idempotent. Exits 0 only if every member answered without error.

  Rotate keys by installing the new key, making it primary with -use, then
  removing the old one. Several installed keys are meant as a transition
  state only.

Options:

  -install=<key>            Install a new key (used for decryption only until
                            it is made primary).
  -use=<key>                Make an installed key the primary (encryption) key.
  -remove=<key>             Remove a key; the primary key cannot be removed.
  -list                     List every installed key and how many members
                            have it.
{RPC_HELP}
""",
)
def cmd_keys(args: list[str]) -> int:
    fs = _flags("keys")
    fs.string("install")
    fs.string("use")
    fs.string("remove")
    fs.bool("list")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    info = "==> "
    found = fs["list"]
    for value in (fs["install"], fs["use"], fs["remove"]):
        if found and value:
            out("Only one of -install, -use, -remove, or -list allowed")
            return 1
        found = found or bool(value)
    if not found:
        out(COMMANDS["keys"].help)
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        if fs["list"]:
            out(info + "Asking all members for installed keys...")
            try:
                resp = client.list_keys()
            except RPCError as exc:
                _key_failures(exc.body.messages if exc.body else {})
                out("")
                out(f"Failed to gather member keys: {exc}")
                return 1
            out(info + "Keys gathered, listing cluster keys...")
            out("")
            out(columnize([f"{k} | [{n}/{resp.num_nodes}]" for k, n in resp.keys.items()]))
            return 0
        actions = (
            ("install", client.install_key, "Installing key on all members...",
             "Error installing key", "Successfully installed key!"),
            ("use", client.use_key, "Changing primary key on all members...",
             "Error changing primary key", "Successfully changed primary key!"),
            ("remove", client.remove_key, "Removing key on all members...",
             "Error removing key", "Successfully removed key!"),
        )
        for flag, call, start, failure, success in actions:
            if not fs[flag]:
                continue
            out(info + start)
            try:
                call(fs[flag])
            except RPCError as exc:
                _key_failures(exc.body.messages if exc.body else {})
                out("")
                out(f"{failure}: {exc}")
                return 1
            out(info + success)
            return 0
    return 0


# ---- event / query ----------------------------------------------------------------------------


@command(
    "event",
    "Send a custom event through the Serf cluster",
    f"""
Usage: {APP} event [options] name payload

  Dispatches a custom user event across the cluster.

Options:

  -coalesce=true/false      Whether this event may be coalesced: repeated events
                            of the same name within a short period are then
                            delivered once, as the last one. Default is true.
{RPC_HELP}
""",
)
def cmd_event(args: list[str]) -> int:
    fs = _flags("event")
    fs.bool("coalesce", True)
    try:
        rest = fs.parse(args)
    except FlagError:
        return 1
    if not rest:
        return _usage_error("event", "An event name must be specified.")
    if len(rest) > 2:
        return _usage_error(
            "event", "Too many command line arguments. Only a name and payload must be specified."
        )
    name = rest[0]
    payload = rest[1].encode("utf-8", "surrogateescape") if len(rest) == 2 else None
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            client.user_event(name, payload, fs["coalesce"])
        except RPCError as exc:
            out(f"Error sending event: {exc}")
            return 1
    coalesce = "true" if fs["coalesce"] else "false"
    out(f"Event '{name}' dispatched! Coalescing enabled: {coalesce}")
    return 0


@command(
    "query",
    "Send a query to the Serf cluster",
    f"""
Usage: {APP} query [options] name payload

  Dispatches a query to the cluster and prints the acks and responses.

Options:

  -format                   If provided, output is returned in the specified
                            format. Valid formats are 'json', and 'text' (default)

  -node=NAME                Only this node answers. Can be given several times.

  -tag key=regexp           Only nodes whose tag matches answer. Can be given
                            several times.

  -timeout="15s"            Overrides the agent's default query timeout.

  -no-ack                   Don't ask nodes to acknowledge the query.

  -relay-factor             Relay each response through this many extra nodes
                            for redundancy.

  -wait-full                Wait out the whole timeout. By default a pyserf agent
                            finishes as soon as every live member the filters
                            select has answered.

{RPC_HELP}
""",
)
def cmd_query(args: list[str]) -> int:
    fs = _flags("query")
    nodes: list[str] = []
    tag_pairs: list[str] = []
    fs.strings("node", nodes)
    fs.strings("tag", tag_pairs)
    fs.duration("timeout", 0.0)
    fs.bool("no-ack")
    fs.string("format", "text")
    fs.int("relay-factor", 0)
    fs.bool("wait-full")
    try:
        rest = fs.parse(args)
    except FlagError:
        return 1
    try:
        filter_tags = unmarshal_tags(tag_pairs)
    except ConfigError as exc:
        out(f"Error: {exc.message}")
        return 1
    if not rest:
        return _usage_error("query", "A query name must be specified.")
    if len(rest) > 2:
        return _usage_error(
            "query", "Too many command line arguments. Only a name and payload must be specified."
        )
    relay = fs["relay-factor"]
    if relay > 255 or relay < 0:
        out("Relay factor must be between 0 and 255")
        return 1
    name = rest[0]
    payload = rest[1].encode("utf-8", "surrogateescape") if len(rest) == 2 else None
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        fmt = fs["format"]
        if fmt not in ("text", "json"):
            out(f"Invalid format: {fmt}")
            return 1
        no_ack = fs["no-ack"]
        try:
            stream = client.query(
                name,
                payload,
                filter_nodes=nodes or None,
                filter_tags=filter_tags or None,
                request_ack=not no_ack,
                relay_factor=relay,
                timeout=fs["timeout"],
                wait_full=fs["wait-full"],
            )
        except RPCError as exc:
            out(f"Error sending query: {exc}")
            return 1
        acks: list[str] = []
        responses: dict[str, str] = {}
        num_resp = 0
        if fmt == "text":
            out(f"Query '{name}' dispatched")
        try:
            for rec in stream:
                sender = rec["From"]
                if rec["Type"] == "ack":
                    acks.append(sender)
                    if fmt == "text":
                        out(f"Ack from '{sender}'")
                    continue
                num_resp += 1
                if fmt == "text":
                    text = _payload_text(rec["Payload"])
                    if text.endswith("\n"):
                        text = text[:-1]
                    out(f"Response from '{sender}': {text}")
                else:
                    raw = rec["Payload"] or b""
                    responses[sender] = bytes(raw).decode("utf-8", "replace")
        except KeyboardInterrupt:
            return 1
    if fmt == "text":
        if not no_ack:
            out(f"Total Acks: {len(acks)}")
        out(f"Total Responses: {num_resp}")
    else:
        ordered = {k: responses[k] for k in sorted(responses)}
        out(go_json({"Acks": acks or None, "Responses": ordered}))
    return 0


# ---- monitor / reachability / rtt ---------------------------------------------------------------


@command(
    "monitor",
    "Stream logs from a Serf agent",
    f"""
Usage: {APP} monitor [options]

  Shows the agent's recent log lines, then streams new ones (and events) as
  they happen. The level may be lower than the agent's own log level, e.g.
  DEBUG lines of an agent logging at INFO.

Options:

  -log-level=info           Log level to stream.
{RPC_HELP}
""",
)
def cmd_monitor(args: list[str]) -> int:
    fs = _flags("monitor")
    fs.string("log-level", "INFO")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    # Ctrl-C ends the monitor even when we were started with SIGINT ignored (a background job,
    # a test runner's worker): Python leaves an inherited SIG_IGN alone, Go's signal.Notify
    # in serf's monitor does not.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            events = client.stream("*")
        except RPCError as exc:
            out(f"Error starting stream: {exc}")
            return 1
        try:
            logs = client.monitor(fs["log-level"])
        except RPCError as exc:
            out(f"Error starting monitor: {exc}")
            return 1
        try:
            while True:
                try:
                    item = client.poll(None)
                except RPCError:
                    break
                if item is None:
                    continue
                seq, rec = item
                if not isinstance(rec, dict):
                    continue
                if seq == logs.seq:
                    out(rec.get("Log") or "")
                elif seq == events.seq:
                    out("Event Info:")
                    for key in sorted(rec):
                        out(f"\t{key}: {sharp_v(rec[key])}")
        except KeyboardInterrupt:
            for sub in (events, logs):
                try:
                    sub.stop()
                except RPCError:
                    pass
            return 0
    out("")
    out("Remote side ended the monitor! This usually means that the\n"
        "remote side has exited or crashed.")
    return 1


_TOO_MANY_ACKS = ("This could mean Serf is detecting false-failures due to a misconfiguration "
                  "or network issue.")
_TOO_FEW_ACKS = ("This could mean Serf gossip packets are being lost due to a misconfiguration "
                 "or network issue.")
_DUPLICATE = ("Duplicate responses means there is a misconfiguration. Verify that node names "
              "are unique.")
_TROUBLESHOOTING = """
Troubleshooting tips:
* Ensure that the bind addr:port is accessible by all other nodes
* If an advertise address is set, ensure it routes to the bind address
* Check that no nodes are behind a NAT
* If nodes are behind firewalls or iptables, check that Serf traffic is permitted (UDP and TCP)
* Verify networking equipment is functional"""


@command(
    "reachability",
    "Test network reachability",
    f"""
Usage: {APP} reachability [options]

  Tests whether every live member can be reached from this agent.

Options:

{RPC_HELP}
  -verbose                  Verbose mode
""",
)
def cmd_reachability(args: list[str]) -> int:
    fs = _flags("reachability")
    fs.bool("verbose")
    try:
        fs.parse(args)
    except FlagError:
        return 1
    verbose = fs["verbose"]
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        try:
            members = client.members()
        except RPCError as exc:
            out(f"Error getting members: {exc}")
            return 1
        live = {m.name for m in members if m.status == "alive"}
        out(f"Total members: {len(members)}, live members: {len(live)}")
        try:
            stream = client.query(INTERNAL_PING, None, request_ack=True)
        except RPCError as exc:
            out(f"Error sending query: {exc}")
            return 1
        out("Starting reachability test...")
        start = last = time.monotonic()
        dups = False
        num_acks = 0
        acks_from: set[str] = set()
        try:
            for rec in stream:
                if rec["Type"] != "ack":
                    continue
                sender = rec["From"]
                if verbose:
                    out(f"\tAck from '{sender}'")
                num_acks += 1
                if sender in acks_from:
                    dups = True
                    out(f"Duplicate response from '{sender}'")
                acks_from.add(sender)
                last = time.monotonic()
        except KeyboardInterrupt:
            out("Test interrupted")
            return 1
    if verbose:
        total = time.monotonic() - start
        out(f"Query time: {total:0.2f} sec, time to last response: {last - start:0.2f} sec")
    code = 0
    if dups:
        out(_DUPLICATE)
        code = 1
    if num_acks == len(live):
        out("Successfully contacted all live nodes")
    elif num_acks > len(live):
        out("Received more acks than live nodes! Acks from non-live nodes:")
        for name in sorted(acks_from - live):
            out(f"\t{name}")
        out(_TOO_MANY_ACKS)
        out(_TROUBLESHOOTING)
        return 1
    else:
        out("Received less acks than live nodes! Missing acks from:")
        for name in sorted(live - acks_from):
            out(f"\t{name}")
        out(_TOO_FEW_ACKS)
        out(_TROUBLESHOOTING)
        return 1
    return code


@command(
    "rtt",
    "Estimates network round trip time between nodes",
    f"""
Usage: {APP} rtt [options] node1 [node2]

  Estimates the round trip time between two nodes from the cluster's network
  coordinates. With one node name, the second defaults to the agent's own
  node. Names are member names as "{APP} members" shows them.

Options:

{RPC_HELP}
""",
)
def cmd_rtt(args: list[str]) -> int:
    fs = _flags("rtt")
    try:
        nodes = fs.parse(args)
    except FlagError:
        return 1
    client = _connect(fs)
    if client is None:
        return 1
    with client:
        if len(nodes) == 1:
            try:
                stats = client.stats()
            except RPCError as exc:
                out(f"Error querying agent: {exc}")
                return 1
            nodes = [nodes[0], (stats.get("agent") or {}).get("name", "")]
        elif len(nodes) != 2:
            return _usage_error("rtt", "One or two node names must be specified")
        coords = []
        for node in nodes:
            try:
                coord = client.get_coordinate(node)
            except RPCError as exc:
                out(f"Error getting coordinates: {exc}")
                return 1
            if coord is None:
                out(f"Could not find a coordinate for node {go_quote(node)}")
                return 1
            coords.append(coord)
    try:
        seconds = coords[0].distance_to(coords[1])
    except ValueError as exc:
        out(f"Error getting coordinates: {exc}")
        return 1
    out(f"Estimated {nodes[0]} <-> {nodes[1]} rtt: {seconds * 1000.0:.3f} ms")
    return 0


@command("version", "Prints the Serf version", "")
def cmd_version(args: list[str]) -> int:
    out(f"{APP} {__version__}")
    out(f"Agent Protocol: {SERF_PROTOCOL_MAX} (Understands back to: {SERF_PROTOCOL_MIN})")
    return 0


def _simulate_help() -> str:
    from pyserf.sim.cli import HELP

    return HELP


@command("simulate", "Simulates a cluster in virtual time: convergence and cost",
         _simulate_help)
def cmd_simulate(args: list[str]) -> int:
    from pyserf.sim.cli import main as simulate  # the simulator stays out of the agent

    return simulate(args)


# ---- agent --------------------------------------------------------------------------------------

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


@command("agent", "Runs a Serf agent", AGENT_HELP)
def cmd_agent(args: list[str]) -> int:
    fs = FlagSet("agent", lambda: _agent_out(COMMANDS["agent"].help))
    paths: list[str] = []
    handlers: list[str] = []
    joins: list[str] = []
    retry_joins: list[str] = []
    tag_pairs: list[str] = []
    for name in ("bind", "advertise", "encrypt", "keyring-file", "log-level", "node", "role",
                 "rpc-addr", "profile", "snapshot", "discover", "iface", "tags-file",
                 "retry-interval", "broadcast-timeout"):
        fs.string(name)
    fs.strings("config-file", paths)
    fs.strings("config-dir", paths)
    fs.strings("event-handler", handlers)
    fs.strings("join", joins)
    fs.strings("retry-join", retry_joins)
    fs.strings("tag", tag_pairs)
    for name in ("replay", "syslog", "rejoin", "disable-compression", "config-check"):
        fs.bool(name)
    fs.int("protocol", -1)
    fs.int("retry-max", 0)
    try:
        fs.parse(args)
    except FlagError:
        return 1

    flags = AgentConfig()
    keys: set[str] = set()
    string_keys = {
        "bind": "bind", "advertise": "advertise", "encrypt": "encrypt_key",
        "keyring-file": "keyring_file", "log-level": "log_level", "node": "node_name",
        "role": "role", "rpc-addr": "rpc_addr", "profile": "profile",
        "snapshot": "snapshot_path", "discover": "discover", "iface": "interface",
        "tags-file": "tags_file",
    }
    for flag, key in string_keys.items():
        if flag in fs.given:
            setattr(flags, key, fs[flag])
            keys.add(key)
    for flag, key, values in (("event-handler", "event_handlers", handlers),
                              ("join", "start_join", joins),
                              ("retry-join", "retry_join", retry_joins)):
        if flag in fs.given:
            setattr(flags, key, list(values))
            keys.add(key)
    for flag, key in (("replay", "replay_on_join"), ("syslog", "enable_syslog"),
                      ("rejoin", "rejoin_after_leave")):
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
    try:
        flags.tags = unmarshal_tags(tag_pairs)
    except ConfigError as exc:
        _agent_out(f"Error: {exc}")
        return 1
    if tag_pairs:
        keys.add("tags")
    for flag, key in (("retry-interval", "retry_interval"),
                      ("broadcast-timeout", "broadcast_timeout")):
        text = fs[flag]
        if not text:
            continue
        try:
            setattr(flags, key, parse_duration_ns(text) / 1e9)
        except ValueError as exc:
            _agent_out(f"Error: {exc}")
            return 1
        keys.add(key)

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
    # as optional) saves about 4.5 MiB of OpenSSL per agent.
    if "asyncio" not in sys.modules:
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from pyserf.agent.runtime import run_agent

    return int(run_agent(config, sources) or 0)


# --------------------------------------------------------------------------------------------
# Dispatch (mitchellh/cli semantics)
# --------------------------------------------------------------------------------------------


def top_help() -> str:
    """The top-level usage listing (without the trailing blank line)."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"Usage: {APP} [--version] [--help] <command> [<args>]", "", "Available commands are:"]
    for name in sorted(COMMANDS):
        lines.append(f"    {name.ljust(width)}    {COMMANDS[name].synopsis}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyserf`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-v", "--version") for a in args):
        args = ["version", *args]
    is_help = False
    top_flags: list[str] = []
    sub = ""
    sub_args: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-h", "-help", "--help"):
            is_help = True
            continue
        if not sub:
            if arg in ("-v", "-version", "--version"):
                continue
            if arg.startswith("-"):
                top_flags.append(arg)
            elif arg:
                sub = arg
                sub_args = args[i + 1:]
    try:
        if is_help and not sub:
            err_out(top_help())
            return 0
        cmd = COMMANDS.get(sub)
        if cmd is None:
            err_out(top_help())
            return 127
        if is_help:
            err_out(cmd.help)
            return 0
        if top_flags:
            err_out("Invalid flags before the subcommand. If these flags are for\n"
                    "the subcommand, please put them after the subcommand.\n")
            err_out(cmd.help)
            return 1
        return cmd.run(sub_args)
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
