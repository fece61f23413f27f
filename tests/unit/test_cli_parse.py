"""CLI behaviour that needs no agent: Go flag parsing, formatting, dispatch, errors, exit codes.

Expected outputs come from tests/fixtures/serf-0.9.4/errors.json, which
scripts/capture-serf-fixtures wrote by running the real serf 0.9.4 binary with the same
arguments (errors go to stdout, flag errors and -h help to stderr, unknown commands exit 127).
What pyserf prints that serf does not is listed in the PYSERF_* tables: none of it occurs in
the serf binary.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pyserf import __version__
from pyserf.agent.config import AgentConfig
from pyserf.agent.config_load import ConfigSources
from pyserf.cli import (
    COMMANDS,
    FlagError,
    FlagSet,
    columnize,
    main,
    member_lines,
    members_json,
    stats_text,
    top_help,
)
from pyserf.client.rpc_client import Member
from tests.unit.test_codec import load_fixture
from tests.unit.test_config import serf_case, serf_cases, write_case_files

DEAD_RPC = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SERF_RPC_ADDR", "PYSERF_RPC_ADDR", "SERF_RPC_AUTH", "PYSERF_RPC_AUTH"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def new_flagset() -> tuple[FlagSet, list[str]]:
    calls: list[str] = []
    fs = FlagSet("t", lambda: calls.append("usage"))
    fs.string("name", "def")
    fs.bool("detailed")
    fs.bool("coalesce", True)
    fs.int("count", 0)
    fs.duration("timeout", 0.0)
    fs.strings("tag")
    return fs, calls


# ---- Go flag semantics ----------------------------------------------------------------------


def test_flag_forms() -> None:
    fs, _ = new_flagset()
    rest = fs.parse(["-name=a", "--count", "7", "-detailed", "-coalesce=false",
                     "-tag", "a=1", "--tag=b=2", "-timeout=1.5s", "pos", "-x"])
    assert fs["name"] == "a" and fs["count"] == 7 and fs["detailed"] is True
    assert fs["coalesce"] is False and fs["tag"] == ["a=1", "b=2"]
    assert fs["timeout"] == 1.5
    assert rest == ["pos", "-x"]  # flags must precede positional args
    assert fs.given == {"name", "count", "detailed", "coalesce", "tag", "timeout"}


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_bool_true_spellings(value: str) -> None:
    fs, _ = new_flagset()
    fs.parse([f"-detailed={value}"])
    assert fs["detailed"] is True


def test_bool_flag_does_not_take_next_arg() -> None:
    fs, _ = new_flagset()
    assert fs.parse(["-detailed", "false"]) == ["false"]
    assert fs["detailed"] is True


def test_double_dash_and_single_dash() -> None:
    fs, _ = new_flagset()
    assert fs.parse(["--", "-name=x"]) == ["-name=x"]
    assert fs["name"] == "def"
    fs, _ = new_flagset()
    assert fs.parse(["-", "x"]) == ["-", "x"]


def test_flag_error_calls_usage_once(capsys: pytest.CaptureFixture[str]) -> None:
    # The texts of Go's flag errors are checked against serf in test_cli_matches_serf.
    fs, calls = new_flagset()
    with pytest.raises(FlagError):
        fs.parse(["-count=abc"])
    assert capsys.readouterr().err.startswith('invalid value "abc" for flag -count')
    assert calls == ["usage"]


def test_help_flag_inside_flagset_prints_usage_only(capsys: pytest.CaptureFixture[str]) -> None:
    fs, calls = new_flagset()
    with pytest.raises(FlagError):
        fs.parse(["-help=1"])
    assert capsys.readouterr().err == "" and calls == ["usage"]


# ---- formatting -----------------------------------------------------------------------------


def test_columnize_pads_all_but_last_column() -> None:
    lines = ["e1|127.0.0.20:7946|alive|long=abcdef,role=x", "e2|127.0.0.21:7946|alive|",
             "e333|127.0.0.22:7946|alive"]
    assert columnize(lines) == (
        "e1    127.0.0.20:7946  alive  long=abcdef,role=x\n"
        "e2    127.0.0.21:7946  alive  \n"
        "e333  127.0.0.22:7946  alive"
    )


def test_columnize_matches_serf_for_pipes_and_unicode() -> None:
    # Tag values containing '|' split into extra columns, widths count characters, not bytes,
    # and cells are trimmed: checked against serf's own table in test_member_table_matches_serf;
    # this hand-made case pins the details.
    lines = ["t1|127.0.0.61:7946|alive|w=  sp  ,x=\u00e9|z,role=web,dc=east"
             "|Protocol Version: 5|Available Protocol Range: [2, 5]",
             "t2|127.0.0.62:7946|alive|role=db|Protocol Version: 5"
             "|Available Protocol Range: [2, 5]"]
    assert columnize(lines).split("\n") == [
        "t1  127.0.0.61:7946  alive  w=  sp  ,x=\u00e9  z,role=web,dc=east   Protocol Version: 5"
        "               Available Protocol Range: [2, 5]",
        "t2  127.0.0.62:7946  alive  role=db       Protocol Version: 5  Available Protocol "
        "Range: [2, 5]",
    ]


def test_columnize_empty() -> None:
    assert columnize([]) == ""


def members_fixture() -> list[Member]:
    return [
        Member("a", "127.0.0.10", 7946, {"role": "web", "dc": "east"}, "alive",
               1, 5, 2, 2, 5, 5),
        Member("bb", "::1", 7946, {}, "failed", 1, 5, 2, 2, 5, 4),
    ]


def test_member_table() -> None:
    text = columnize(member_lines(members_fixture(), False)).strip()
    assert text == ("a   127.0.0.10:7946  alive   role=web,dc=east\n"
                    "bb  [::1]:7946       failed")
    detailed = columnize(member_lines(members_fixture(), True)).strip()
    assert detailed.split("\n")[1] == (
        "bb  [::1]:7946       failed                    Protocol Version: 4  "
        "Available Protocol Range: [2, 5]"
    )


def test_members_json_layout() -> None:
    text = members_json(members_fixture()[:1])
    assert text == """{
  "members": [
    {
      "name": "a",
      "addr": "127.0.0.10:7946",
      "port": 7946,
      "tags": {
        "dc": "east",
        "role": "web"
      },
      "status": "alive",
      "protocol": {
        "max": 5,
        "min": 2,
        "version": 5
      }
    }
  ]
}"""
    assert members_json([]) == '{\n  "members": null\n}'


def captured_members() -> list[Member]:
    """The members of the captured cluster, from `serf members -format=json`, tags reversed
    (Go sorts map keys when it prints JSON, so pyserf must too)."""
    members = []
    for rec in json.loads(load_fixture("wire-plain.json")["cli"]["members-json"])["members"]:
        ip, port = rec["addr"].rsplit(":", 1)
        assert int(port) == rec["port"]
        proto = rec["protocol"]
        members.append(Member(rec["name"], ip, rec["port"], dict(reversed(rec["tags"].items())),
                              rec["status"], delegate_min=proto["min"],
                              delegate_max=proto["max"], delegate_cur=proto["version"]))
    assert {m.name for m in members} == {"A", "B", "C"}
    return members


def test_members_json_matches_serf() -> None:
    # B's tags hold "é", "|", "<&>" and spaces.
    captured = load_fixture("wire-plain.json")["cli"]["members-json"]
    assert members_json(captured_members()) + "\n" == captured


@pytest.mark.parametrize(("key", "detailed"), [("members", False), ("members-detailed", True)])
def test_member_table_matches_serf(key: str, detailed: bool) -> None:
    # serf lists members and each member's tags in Go's random map order, so every order is
    # tried; pyserf's table must equal serf's for one of them, '|' in B's tag splitting
    # columns, widths counted in characters and cells trimmed.
    captured = load_fixture("wire-plain.json")["cli"][key]
    members = captured_members()
    orders = [[dict(p) for p in itertools.permutations(m.tags.items())] for m in members]
    tables = set()
    for tag_orders in itertools.product(*orders):
        for row_order in itertools.permutations(range(len(members))):
            chosen = [dataclasses.replace(members[i], tags=tag_orders[i]) for i in row_order]
            tables.add(columnize(member_lines(chosen, detailed)) + "\n")
    assert captured in tables


def test_stats_text() -> None:
    stats = {"tags": {"role": "web", "dc": "east"}, "agent": {"name": "a"}, "event_handlers": {}}
    assert stats_text(stats) == "agent:\n\tname = a\nevent_handlers:\ntags:\n\tdc = east\n" \
                                "\trole = web"


# ---- dispatch, compared with serf ----------------------------------------------------------

# pyserf's own: the program name in usage lines and the first line of `version` (serf 0.9.4
# from Debian prints "0.8.2-dev" there). Help texts describe the same options in pyserf's own
# words, so for them the tests compare the lines up to the usage line and the set of options.
PYSERF_PROGRAM = "pyserf"
PYSERF_VERSION_LINE = f"pyserf {__version__}"
OPTION = re.compile(r"^  -([a-z][\w-]*)", re.MULTILINE)
# pyserf's own options, documented in its help but absent from serf's (README: Beyond Serf).
PYSERF_EXTRA_OPTIONS = {"wait-full", "config-check", "http-addr"}
CLI_CASES = [case_id for case_id in serf_cases("")
             if not case_id.startswith(("agent-", "encrypt:", "duration:", "file:"))]


def same_text(ours: str, serf: str) -> None:
    """Equal, except pyserf's own wording of help bodies and its program and version names."""
    serf = serf.replace("Usage: serf", f"Usage: {PYSERF_PROGRAM}")
    if serf.startswith(serf_case("version")["stdout"].split("\n")[0] + "\n"):
        serf = PYSERF_VERSION_LINE + serf[serf.index("\n"):]
    usage = serf.find("Usage: ")
    if usage < 0:
        assert ours == serf
        return
    head = serf[:serf.index("\n", usage) + 1]
    assert ours[:len(head)] == head
    assert [o for o in OPTION.findall(ours) if o not in PYSERF_EXTRA_OPTIONS] == (
        OPTION.findall(serf))


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_matches_serf(capsys: pytest.CaptureFixture[str], case_id: str) -> None:
    case = serf_case(case_id)
    code, out, err = run(capsys, *case["argv"])
    assert code == case["exit"]
    same_text(out, case["stdout"])
    same_text(err, case["stderr"])


def test_serf_cli_cases_were_captured() -> None:
    assert len(CLI_CASES) == 47
    assert serf_case("no-command")["exit"] == 127


# ---- dispatch -----------------------------------------------------------------------------


def test_no_command_prints_usage_and_exits_127(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 127 and out == ""
    assert err == top_help() + "\n"
    assert err.startswith("Usage: pyserf [--version] [--help] <command> [<args>]\n\n"
                          "Available commands are:\n    agent           Runs a Serf agent\n")
    assert run(capsys, "bogus")[0] == 127


@pytest.mark.parametrize("flag", ["-h", "--help", "-help"])
def test_top_level_help(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, err = run(capsys, flag)
    assert code == 0 and out == "" and "Available commands are:" in err


def test_every_command_listed() -> None:
    assert set(COMMANDS) == {
        "agent", "event", "force-leave", "info", "join", "keygen", "keys", "leave", "members",
        "monitor", "query", "reachability", "rtt", "tags", "version",
        "simulate",  # pyserf's own
    }


def test_subcommand_help_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "members", "x", "-h")
    assert code == 0 and out == ""
    assert err.startswith("Usage: pyserf members [options]")
    code, out, err = run(capsys, "version", "-h")
    assert (code, out, err) == (0, "", "\n")


def test_flags_before_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-x", "members")
    assert code == 1 and out == ""
    assert err.startswith("Invalid flags before the subcommand. If these flags are for\n"
                          "the subcommand, please put them after the subcommand.\n\n"
                          "Usage: pyserf members")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    expected = f"pyserf {__version__}\nAgent Protocol: 5 (Understands back to: 2)\n"
    assert run(capsys, "version") == (0, expected, "")
    assert run(capsys, "-v") == (0, expected, "")
    assert run(capsys, "members", "--version") == (0, expected, "")


def test_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keygen")
    import base64

    assert code == 0 and len(base64.b64decode(out.strip())) == 32


def test_unknown_flag_in_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "members", "-x")
    assert code == 1
    assert err == "flag provided but not defined: -x\n"
    assert out.startswith("Usage: pyserf members [options]")


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # flags must precede positional arguments (Go flag rules)
    for name, *rest in (["members"], ["info"], ["leave"], ["join", "x"], ["event", "e"],
                        ["force-leave", "n"], ["tags", "-set", "a=b"], ["query", "q"],
                        ["rtt", "a"], ["monitor"], ["reachability"], ["keys", "-list"]):
        code, out, err = run(capsys, name, f"-rpc-addr={DEAD_RPC}", *rest)
        cmd = [name, *rest]
        assert code == 1 and err == "", cmd
        assert out == (
            f"Error connecting to Serf agent: dial tcp {DEAD_RPC}: connect: connection refused\n"
        ), cmd


def test_rpc_addr_from_environment(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSERF_RPC_ADDR", "127.0.0.1:2")
    assert "127.0.0.1:2" in run(capsys, "members")[1]
    monkeypatch.setenv("SERF_RPC_ADDR", "127.0.0.1:3")
    assert "127.0.0.1:3" in run(capsys, "members")[1]


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["join"], "At least one address to join must be specified."),
        (["force-leave"], "A node name must be specified to force leave."),
        (["force-leave", "a", "b"], "A node name must be specified to force leave."),
        (["event"], "An event name must be specified."),
        (["event", "a", "b", "c"],
         "Too many command line arguments. Only a name and payload must be specified."),
        (["query"], "A query name must be specified."),
        (["query", "a", "b", "c"],
         "Too many command line arguments. Only a name and payload must be specified."),
    ],
)
def test_argument_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                         first_line: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and err == ""
    lines = out.split("\n")
    assert lines[0] == first_line and lines[1] == ""
    assert lines[2].startswith(f"Usage: pyserf {argv[0]}")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["members", "-tag", "x"], "Error: Invalid tag: 'x'\n"),
        (["query", "-tag", "x", "q"], "Error: Invalid tag: 'x'\n"),
        (["query", "-relay-factor=300", "q"], "Relay factor must be between 0 and 255\n"),
        (["keys", "-list", "-install=abc"],
         "Only one of -install, -use, -remove, or -list allowed\n"),
        (["keys", "-use=a", "-remove=b"],
         "Only one of -install, -use, -remove, or -list allowed\n"),
    ],
)
def test_local_validation_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                 expected: str) -> None:
    assert run(capsys, *argv) == (1, expected, "")


def test_commands_without_action_print_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("tags", "keys"):
        code, out, err = run(capsys, name)
        assert code == 1 and err == "" and out.startswith(f"Usage: pyserf {name}")


def test_members_role_deprecation_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "members", "-role=web", f"-rpc-addr={DEAD_RPC}")
    assert code == 1
    assert out.startswith("Deprecation warning: 'Role' has been replaced with 'Tags'\n"
                          "Error connecting to Serf agent:")


# ---- agent command ----------------------------------------------------------------------------


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-in for pyserf.agent.lifecycle so the agent command can be tested without sockets."""
    seen: dict[str, Any] = {}
    module = types.ModuleType("pyserf.agent.lifecycle")

    def run_agent(config: AgentConfig, sources: ConfigSources) -> int:
        seen["config"] = config
        seen["sources"] = sources
        return 0

    module.run_agent = run_agent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyserf.agent.lifecycle", module)
    import pyserf.agent

    monkeypatch.setattr(pyserf.agent, "lifecycle", module, raising=False)
    return seen


# Problems the agent command reports itself, before anything starts.
CLI_STAGE_CASES = ["agent-bad-tag", "agent-bad-retry-interval", "agent-broadcast-timeout-unit",
                   "agent-missing-config-file", "agent-bad-log-level", "agent-bad-event-handler",
                   "agent-bad-iface"]
# Problems serf meets while building and starting its agent: pyserf's runtime reports them.
RUNTIME_STAGE_CASES = ["agent-protocol-high", "agent-protocol-low", "agent-bad-profile",
                       "encrypt:abc", "encrypt:YWJjZA==", "file:validate-profile",
                       "file:validate-user-event-limit", "file:validate-keyring-and-key",
                       "file:validate-tags-file-and-tags"]


@pytest.mark.parametrize("case_id", CLI_STAGE_CASES)
def test_agent_config_errors(capsys: pytest.CaptureFixture[str], fake_runtime: dict,
                             case_id: str) -> None:
    case = serf_case(case_id)
    assert case["exit"] == 1 and case["stderr"] == ""
    assert run(capsys, *case["argv"]) == (1, case["stdout"], "")
    assert "config" not in fake_runtime


@pytest.fixture
def real_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real start-up path; an agent that does start returns 99 at once instead of
    serving, and the log handler the runtime installs is taken down afterwards."""
    import logging

    from pyserf.agent import lifecycle

    async def no_serving(*_args: Any) -> int:
        return 99

    monkeypatch.setattr(lifecycle, "_wait_for_exit", no_serving)
    monkeypatch.setattr(lifecycle, "_raise_open_file_limit", lambda: None)
    logger = logging.getLogger("pyserf")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


@pytest.mark.parametrize("case_id", RUNTIME_STAGE_CASES)
def test_agent_start_up_errors(capsys: pytest.CaptureFixture[str], real_runtime: None,
                               tmp_path: Path, case_id: str) -> None:
    """serf's exact output, "Starting Serf agent..." and its wording included, and none of
    the log lines held back until the agent runs."""
    case = serf_case(case_id)
    write_case_files(case_id, tmp_path)
    argv = [arg.replace("{dir}", str(tmp_path)) for arg in case["argv"]]
    # Loopback and a free port, in case a regression lets the agent start.
    argv += ["-bind=127.0.0.1:0", "-rpc-addr=127.0.0.1:0"]
    assert run(capsys, *argv) == (1, case["stdout"], "")


def test_agent_unknown_flag(capsys: pytest.CaptureFixture[str], fake_runtime: dict) -> None:
    case = serf_case("agent-undefined-flag")
    code, out, err = run(capsys, *case["argv"])
    assert (code, err) == (case["exit"], case["stderr"])
    same_text(out, case["stdout"])
    assert out.startswith("==> Usage: pyserf agent [options]\n")


def test_agent_file_error_names_file(capsys: pytest.CaptureFixture[str], fake_runtime: dict,
                                     tmp_path: Path) -> None:
    case = serf_case("file:decode-invalid-keys")
    (tmp_path / "x.json").write_text(case["files"]["x.json"])
    argv = [arg.replace("{dir}", str(tmp_path)) for arg in case["argv"]]
    assert run(capsys, *argv) == (1, case["stdout"].replace("{dir}", str(tmp_path)), "")


def test_agent_merges_files_then_flags(capsys: pytest.CaptureFixture[str], fake_runtime: dict,
                                       tmp_path: Path) -> None:
    conf_dir = tmp_path / "d"
    conf_dir.mkdir()
    (conf_dir / "a.json").write_text(json.dumps(
        {"node_name": "file", "tags": {"t": "a", "x": "1"}, "replay_on_join": True,
         "event_handlers": ["member-join=j.sh"]}
    ))
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"log_level": "warn", "tags": {"k": "v"}}))
    argv = ["agent", f"-config-file={first}", "-node=cli", "-tag", "t=cli",
            f"-config-dir={conf_dir}", "-replay=false", "-event-handler", "user:d=u.sh",
            "-join", "127.0.0.1", "-join", "127.0.0.2:7000", "-retry-join", "r",
            "-retry-interval=2s", "-retry-max=3", "-protocol=4", "-profile=local",
            "-bind=127.0.0.1:8000", "-rpc-addr=127.0.0.1:9000", "-disable-compression",
            "-broadcast-timeout=3s", "-rejoin", "-snapshot=/tmp/snap", "-syslog"]
    code, out, _ = run(capsys, *argv)
    assert code == 0, out
    cfg: AgentConfig = fake_runtime["config"]
    assert cfg.node_name == "cli"
    assert cfg.tags == {"k": "v", "t": "cli", "x": "1"}
    assert cfg.log_level == "WARN"
    assert cfg.replay_on_join is False  # explicit -replay=false wins over the file
    assert cfg.event_handlers == ["member-join=j.sh", "user:d=u.sh"]
    assert cfg.start_join == ["127.0.0.1", "127.0.0.2:7000"] and cfg.retry_join == ["r"]
    assert (cfg.retry_interval, cfg.retry_max_attempts, cfg.protocol) == (2.0, 3, 4)
    assert (cfg.profile, cfg.bind, cfg.rpc_addr) == ("local", "127.0.0.1:8000", "127.0.0.1:9000")
    assert cfg.enable_compression is False and cfg.broadcast_timeout == 3.0
    assert cfg.rejoin_after_leave and cfg.snapshot_path == "/tmp/snap" and cfg.enable_syslog
    sources: ConfigSources = fake_runtime["sources"]
    assert sources.paths == [str(first), str(conf_dir)]
    # SIGHUP re-reads the files and re-applies the original flags
    (conf_dir / "a.json").write_text(json.dumps({"tags": {"x": "2"}}))
    again = sources.load()
    assert again.tags == {"k": "v", "t": "cli", "x": "2"} and again.node_name == "cli"


def test_agent_defaults_and_warnings(capsys: pytest.CaptureFixture[str],
                                     fake_runtime: dict) -> None:
    code, out, _ = run(capsys, "agent", "-role=web", "-retry-interval=1ms")
    assert code == 0
    assert out == ("==> Deprecation warning: 'Role' has been replaced with 'Tags'\n"
                   "==> Warning: 'RetryInterval' is too low. Setting to 1s\n")
    cfg: AgentConfig = fake_runtime["config"]
    assert cfg.tags == {"role": "web"} and cfg.protocol == 5 and cfg.enable_compression
    assert cfg.bind == "0.0.0.0:7946" and cfg.node_name


# pyserf's own: `-config-check` and its texts (serf 0.9.4 has no such flag).
PYSERF_CONFIG_VALID = "==> Configuration is valid\n"


def test_agent_config_check(capsys: pytest.CaptureFixture[str], fake_runtime: dict,
                            tmp_path: Path) -> None:
    assert serf_case("agent-config-check")["stderr"] == (
        "flag provided but not defined: -config-check\n")
    assert run(capsys, "agent", "-config-check") == (0, PYSERF_CONFIG_VALID, "")
    conf = tmp_path / "c.json"
    conf.write_text('{"log_level": "loud", "profile": "moon"}')
    code, out, _ = run(capsys, "agent", "-config-check", f"-config-file={conf}")
    assert code == 1
    assert out == ("==> Invalid log level: LOUD. Valid log levels are: "
                   "[TRACE DEBUG INFO WARN ERR]\n"
                   "==> Unknown profile: moon\n")
    assert "config" not in fake_runtime
