"""Bad command-line and config input: `pyserf` answers exactly as the real `serf` binary does.

Every case runs the same argv under both programs, side by side, from the same directory (so
relative paths print the same) and compares the exit status, stdout and stderr after one
documented normalisation, `normalise`:

- a usage/help block is compared up to its ``Usage: <prog> <command>`` line only, with the
  program name read as ``serf``: the help body below it is each program's own wording (the
  top-level usage keeps its list of commands, which is serf's, less the commands only pyserf
  has: ``simulate``);
- Go's resolver names the DNS server it asked (``lookup x on 10.0.0.53:53:``); that is dropped.

Nothing else is forgiven, and pyserf's output must never hold a Python traceback: any
difference is a failure. ``-config-check``, pyserf's one extension of the agent command, is
not in the table (serf rejects the flag); `test_config_check_is_a_pyserf_extension` pins it.

Files that root could read anyway are made unreadable by running both programs without the
DAC-override capabilities (``setpriv --bounding-set``), so "permission denied" is real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, next_subnet

pytestmark = pytest.mark.e2e

# Other files the cases point at (created in a fresh directory per test).
FILES: dict[str, str] = {
    "bad.json": "{bad json\n",
    "baddir/a.json": "{bad json\n",
    "unreadable.json": "{}\n",
    "unreadable-dir/a.json": "{}\n",
    "tags.json": "{}\n",
    "keyring.json": "[]\n",
    "snapdir/.keep": "",
}
# -keyring-file / -tags-file contents serf refuses (Go's json.Unmarshal texts, then its own).
KEYRING_FILES: dict[str, str] = {
    "bad-json": "[oops\n",
    "empty": "",
    "trailing-data": "[] x",
    "null": "null",
    "object": '{"a": "b"}',
    "number-key": '["YWJjZGVmZ2hpamtsbW5vcA==", 1]',
    "null-primary": "[null]",
    "bad-base64": '["YWJj", "zz"]',
    "key-size": '["YWJjZGVmZ2hpamtsbW5vcA==", "YWJj"]',
    "unreadable": '["YWJjZGVmZ2hpamtsbW5vcA=="]',
}
TAGS_FILES: dict[str, str] = {
    "bad-json": "{oops\n",
    "empty": "",
    "trailing-data": '{"a": "b"} x',
    "list": '["a"]',
    "number-value": '{"a": 1}',
    "object-value": '{"a": {"b": "c"}}',
    "unreadable": "{}",
}
FILES.update({f"keyring-{name}.json": text for name, text in KEYRING_FILES.items()})
FILES.update({f"tags-{name}.json": text for name, text in TAGS_FILES.items()})
UNREADABLE = ("unreadable.json", "unreadable-dir/a.json", "closed-dir",
              "keyring-unreadable.json", "tags-unreadable.json")

# One -config-file case per file: name -> content.
CONFIG_FILES: dict[str, str] = {
    "array": "[1, 2]",
    "empty": "",
    "unknown-key": '{"no_such_key": 1}',
    "int-type": '{"protocol": "x"}',
    "protocol-high": '{"protocol": 9}',
    "protocol-float": '{"protocol": 1.5}',
    "string-type": '{"node_name": 5}',
    "bool-type": '{"replay_on_join": "yes"}',
    "list-type": '{"start_join": "notalist"}',
    "map-type": '{"tags": "x"}',
    "tag-value-type": '{"tags": {"a": 1}}',
    "duration-unitless": '{"retry_interval": "5"}',
    "duration-unit": '{"reconnect_timeout": "1x"}',
    "profile": '{"profile": "x"}',
    "log-level": '{"log_level": "loud"}',
    "handler": '{"event_handlers": ["bad-type=x.sh"]}',
    "key-base64": '{"encrypt_key": "zz"}',
    "key-size": '{"encrypt_key": "YWJj"}',
    "tags-and-tags-file": '{"tags_file": "tags.json", "tags": {"a": "b"}}',
    "user-event-size": '{"user_event_size_limit": 10000}',
    # Two problems at once: the one serf reports first is the one printed.
    "handler-and-log-level": '{"event_handlers": ["bad-type=x.sh"], "log_level": "loud"}',
    "log-level-and-role": '{"log_level": "loud", "role": "web"}',
    "handler-and-role": '{"event_handlers": ["bad-type=x.sh"], "role": "web"}',
    "profile-and-protocol": '{"profile": "x", "protocol": 9}',
    "protocol-and-key-size": '{"protocol": 9, "encrypt_key": "YWJj"}',
}
FILES.update({f"{name}.json": text for name, text in CONFIG_FILES.items()})


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{ip}" is replaced by a fresh loopback address


def agent(*args: str) -> tuple[str, ...]:
    """An agent argv that could only start on a private loopback address."""
    return ("agent", "-node=n", "-bind={ip}", "-rpc-addr={ip}:7373", *args)


# Agent inputs: id -> the agent flags after agent()'s (split on spaces).
AGENT_CASES: dict[str, str] = {
    # Flag values.
    "agent-protocol-high": "-protocol=9",
    "agent-protocol-low": "-protocol=1",
    "agent-duration-unit": "-retry-interval=abc",
    "agent-duration-unitless": "-broadcast-timeout=5",
    "agent-profile": "-profile=bogus",
    "agent-log-level": "-log-level=bogus",
    "agent-key-base64": "-encrypt=notbase64",
    "agent-key-size": "-encrypt=YWJj",
    "agent-key-and-keyring": "-encrypt=YWJjZGVmZ2hpamtsbW5vcA== -keyring-file=keyring.json",
    "agent-keyring-missing": "-keyring-file=missing/keyring.json",
    "agent-keyring-no-keys": "-keyring-file=keyring.json",
    **{f"agent-keyring-{name}": f"-keyring-file=keyring-{name}.json" for name in KEYRING_FILES},
    **{f"agent-tags-{name}": f"-tags-file=tags-{name}.json" for name in TAGS_FILES},
    "agent-keyring-file-is-a-directory": "-keyring-file=snapdir",
    "agent-keyring-in-closed-dir": "-keyring-file=closed-dir/keyring.json",
    "agent-tags-file-is-a-directory": "-tags-file=snapdir",
    "agent-snapshot-unopenable": "-snapshot=missing/snap",
    "agent-snapshot-is-a-directory": "-snapshot=snapdir",
    "agent-snapshot-in-closed-dir": "-snapshot=closed-dir/snap",
    "agent-tag-no-equals": "-tag novalue",
    "agent-tag-empty-key": "-tag==b",
    "agent-tag-and-tags-file": "-tags-file=tags.json -tag a=b",
    "agent-handler-type": "-event-handler=bogus-type=x.sh",
    "agent-iface-missing": "-iface=nosuchif0",
    "agent-iface-without-bind-address": "-iface=lo",
    # Two problems: serf reports the one it meets first.
    "agent-profile-and-bind": "-profile=bogus -bind=127.0.0.1:99999",
    "agent-key-base64-and-advertise": "-encrypt=zz -advertise=127.0.0.1:x",
    "agent-iface-and-bind-port": "-iface=lo -bind=0.0.0.0:99999",
    "agent-bind-port-and-iface-missing": "-bind=127.0.0.1:99999 -iface=nosuchif0",
    "agent-retry-interval-warning-and-protocol": "-retry-interval=-1s -protocol=9",
    # Addresses.
    "agent-bind-unclosed-bracket": "-bind=[::1",
    "agent-bind-port-range": "-bind=127.0.0.1:99999",
    "agent-bind-port-negative": "-bind=127.0.0.1:-1",
    "agent-bind-v6-port-range": "-bind=[::1]:70000",
    "agent-advertise-port-name": "-advertise=127.0.0.1:abc",
    "agent-rpc-port-range": "-rpc-addr={ip}:99999",
    # Config files and directories.
    "config-bad-json": "-config-file=bad.json",
    "config-dir-with-bad-file": "-config-dir=baddir",
    "config-file-is-dir-with-bad-file": "-config-file=baddir",
    "config-dir-is-a-file": "-config-dir=bad.json",
}
CASES: list[Case] = [
    # Flag parsing (Go's flag package texts, then the usage).
    *(Case(f"agent-flag-{flag}", agent(flag)) for flag in (
        "-nosuchflag", "-protocol=abc", "-protocol=", "-retry-max=x", "-rejoin=maybe",
        "-disable-compression=x", "-join")),
    *(Case(cid, agent(*argv.split(" "))) for cid, argv in AGENT_CASES.items()),
]
# Inputs where pyserf already reads as serf: id -> argv (split on spaces; R is a closed port).
R = "-rpc-addr=127.0.0.1:1"
SAME_AS_SERF: dict[str, str] = {
    "config-missing-file": "-config-file=missing.json",
    "config-missing-dir": "-config-dir=missing",
    "config-unreadable-file": "-config-file=unreadable.json",
    "config-dir-with-unreadable-file": "-config-dir=unreadable-dir",
    "config-unreadable-dir": "-config-dir=closed-dir",
    "unknown-command": "nosuchcmd",
    "members-unknown-flag": "members -bogus",
    "members-status-regexp": f"members {R} -status=[",
    "members-tag-regexp": f"members {R} -tag a=[",
    "members-tag-no-equals": f"members {R} -tag=noequals",
    "members-format": f"members {R} -format=xml",
    "info-format": f"info {R} -format=xml",
    "query-timeout": "query -timeout=abc q",
    "query-relay-factor-type": "query -relay-factor=x q",
    "query-relay-factor-range": f"query {R} -relay-factor=9 q",
    "query-tag-no-equals": f"query {R} -tag noeq q",
    "query-no-name": f"query {R}",
    "event-no-name": f"event {R}",
    "event-bool-flag": "event -coalesce=x ev",
    "event-too-many-args": f"event {R} a b c",
    "tags-nothing-to-do": f"tags {R}",
    "tags-set-no-equals": f"tags {R} -set noeq",
    "keys-no-action": f"keys {R}",
    "keys-flag-needs-value": "keys -install",
    "join-no-address": f"join {R}",
    "force-leave-no-name": f"force-leave {R}",
    "rtt-no-node": f"rtt {R}",
    "rtt-too-many-nodes": f"rtt {R} a b c",
    "monitor-log-level": f"monitor {R} -log-level=bogus",
    "reachability-bool-flag": "reachability -verbose=x",
    "leave-extra-arg": f"leave {R} extra",
}
CASES += [Case(cid, agent(argv) if argv.startswith("-config") else tuple(argv.split(" ")))
          for cid, argv in SAME_AS_SERF.items()]
CASES += [Case(f"config-{name}", agent(f"-config-file={name}.json")) for name in CONFIG_FILES]
# A bad -rpc-addr for every command that talks to an agent, each bad form on some command.
BAD_RPC = ("notanaddr", "a:b:c", "127.0.0.1:1", "127.0.0.1:99999", "127.0.0.1:abc", "[::1")
RPC_COMMANDS = (("members",), ("join", "127.0.0.1"), ("leave",), ("force-leave", "x"),
                ("event", "ev"), ("query", "q"), ("tags", "-set", "a=b"), ("info",),
                ("keys", "-list"), ("monitor",), ("reachability",), ("rtt", "a"))
CASES += [Case(f"rpc-addr-{cmd[0]}-{BAD_RPC[i % len(BAD_RPC)]}",
               (cmd[0], f"-rpc-addr={BAD_RPC[i % len(BAD_RPC)]}", *cmd[1:]))
          for i, cmd in enumerate(RPC_COMMANDS)]
CASES += [Case(f"rpc-addr-members-{bad}", ("members", f"-rpc-addr={bad}")) for bad in BAD_RPC[1:]]


def normalise(text: str) -> str:
    """serf's text and pyserf's compare equal under the rules in the module docstring."""
    text = re.sub(r" on [0-9a-f.:\[\]]+:53:", ":", text)
    kept: list[str] = []
    for line in text.splitlines():
        usage = re.match(r"^((?:==> )?Usage: )(?:serf|pyserf)( .*)$", line)
        if usage:
            kept.append(f"{usage.group(1)}serf{usage.group(2)}")
            if not usage.group(2).startswith(" ["):  # the top-level command list is serf's
                break
            continue
        if re.match(r"^    (?:simulate) ", line):  # pyserf-only commands in the listing
            continue
        kept.append(line)
    return "\n".join(kept)


Outcome = tuple[int, str, str]  # exit status, stdout, stderr (addresses as "<ip>")


def run(binary: list[str], args: tuple[str, ...], cwd: Path) -> Outcome:
    ip = f"{next_subnet()}.1"
    # Root reads mode-000 files anyway; without these capabilities it gets EACCES like anyone.
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])
    proc = subprocess.Popen([*drop, *binary, *(a.format(ip=ip) for a in args)], cwd=cwd,
                            env=CHILD_ENV, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # an input both accept would start an agent: stop it
        proc.kill()
        out, err = proc.communicate(timeout=5)
    return proc.returncode, out.replace(ip, "<ip>"), err.replace(ip, "<ip>")


def make_workdir(root: Path) -> Path:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "closed-dir").mkdir()
    for name in UNREADABLE:
        (root / name).chmod(0)
    return root


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Outcome, Outcome]]:
    """Every case under pyserf and serf, run a few at a time: one case is ~1 s of start-up,
    mostly waiting, so the table costs seconds instead of minutes."""
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    assert shutil.which("setpriv") or os.geteuid() != 0, "setpriv (util-linux) is needed"
    root = make_workdir(tmp_path_factory.mktemp("bad-input"))
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {c.id: (pool.submit(run, PYSERF, c.args, root),
                              pool.submit(run, [SERF], c.args, root)) for c in CASES}
            return {cid: (mine.result(), theirs.result())
                    for cid, (mine, theirs) in futures.items()}
    finally:
        for name in UNREADABLE:
            (root / name).chmod(0o700)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_reads_as_serfs(outcomes, case):
    (mine_rc, mine_out, mine_err), (rc, out, err) = outcomes[case.id]
    assert "Traceback" not in mine_out + mine_err, mine_out + mine_err
    assert (mine_rc, normalise(mine_out), normalise(mine_err)) == \
        (rc, normalise(out), normalise(err))
    assert rc != 0, "not a bad input: serf accepted it"


def test_config_check_is_a_pyserf_extension(tmp_path):
    """serf has no ``-config-check`` (Go's flag error and the usage, exit 1); pyserf's checks
    the configuration without starting an agent: one line and exit 0 when it is valid, every
    problem (not only the first, as the agent would) and exit 1 when it is not."""
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
    (tmp_path / "two.json").write_text('{"profile": "x", "log_level": "loud"}')
    rc, out, err = run([SERF], agent("-config-check"), tmp_path)
    assert (rc, err) == (1, "flag provided but not defined: -config-check\n")
    assert out.startswith("==> Usage: serf agent [options]")
    assert run(PYSERF, agent("-config-check"), tmp_path) == (
        0, "==> Configuration is valid\n", "")
    assert run(PYSERF, agent("-config-check", "-config-file=two.json"), tmp_path) == (
        1, "==> Invalid log level: LOUD. Valid log levels are: [TRACE DEBUG INFO WARN ERR]\n"
           "==> Unknown profile: x\n", "")
