"""Agent configuration: Go-compatible parsing, serf's file decoding errors, merge and validation.

Expected error texts come from tests/fixtures/serf-0.9.4/errors.json, which
scripts/capture-serf-fixtures wrote by running the real serf 0.9.4 binary. pyserf's texts are
serf's, with nothing added: every comparison below is exact.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pyserf.agent.config import AgentConfig, ConfigError, unmarshal_tags
from pyserf.agent.config_decode import decode_config
from pyserf.agent.config_load import ConfigSources, load_dir, load_file, load_paths, merge
from pyserf.agent.config_validate import finalize, first_problem, validate
from pyserf.agent.event_filter import (
    EventFilter,
    parse_event_filter,
    parse_event_handler_spec,
    parse_event_scripts,
)
from pyserf.gocompat.durations import format_duration, parse_duration, parse_duration_ns
from pyserf.gocompat.jsonerr import unmarshal_strings
from tests.unit.test_codec import load_fixture

# serf notices these only while starting the agent and words them so; validate() gives the
# message and the stage at which the agent reports it (pyserf.agent.config.STAGES).
SERF_START_FAILURES = {
    "Starting Serf agent...\n==> Failed to start the Serf agent: Error creating Serf: ": "serf",
    "Starting Serf agent...\n==> Failed to setup the Serf agent: ": "create",
}


def serf_case(case_id: str) -> dict[str, Any]:
    return next(c for c in load_fixture("errors.json")["cases"] if c["id"] == case_id)


def serf_cases(prefix: str) -> list[str]:
    return [c["id"] for c in load_fixture("errors.json")["cases"] if c["id"].startswith(prefix)]


def serf_message(case_id: str) -> str:
    """The message serf printed for a case: its output without the `==> ` banner and, for
    problems serf finds only while starting, without the start-up wording around it."""
    return serf_stage(case_id)[0]


def serf_stage(case_id: str) -> tuple[str, str | None]:
    """(message, the STAGES name its start-up wording stands for, None if printed bare)."""
    text = serf_case(case_id)["stdout"]
    assert text.startswith("==> ") and text.endswith("\n"), text
    text = text[4:-1]
    for prefix, stage in SERF_START_FAILURES.items():
        if text.startswith(prefix):
            return text.removeprefix(prefix), stage
    return text, None


def write_case_files(case_id: str, directory: Path) -> None:
    for name, content in serf_case(case_id)["files"].items():
        (directory / name).write_text(content)


def write(path: Path, content: str | bytes) -> str:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


# ---- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1h2m3.5s", 3_723_500_000_000),
        ("300ms", 300_000_000),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
        ("1\u03bcs", 1_000),
        ("-1s", -1_000_000_000),
        ("+2m", 120_000_000_000),
        ("0", 0),
        ("-0", 0),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("10ns", 10),
        ("9223372036854775807ns", 9223372036854775807),
    ],
)
def test_parse_duration_valid(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == pytest.approx(ns / 1e9)


def serf_duration_errors() -> list[tuple[str, str]]:
    """(text, serf's message) for every `{"retry_interval": <text>}` file serf rejected."""
    out = []
    for case_id in serf_cases("duration:"):
        message = serf_message(case_id)
        out.append((case_id.removeprefix("duration:"), message.split("': ", 1)[1]))
    return out


# From Go's time.ParseDuration, not reachable through serf: serf takes "" as "unset".
GO_ONLY_DURATION_ERRORS = [("", 'time: invalid duration ""')]


@pytest.mark.parametrize(("text", "message"), serf_duration_errors() + GO_ONLY_DURATION_ERRORS)
def test_parse_duration_errors_match_go(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_serf_duration_cases_were_captured() -> None:
    assert len(serf_duration_errors()) == 10


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1, "1s"), (1.5, "1.5s"), (90, "1m30s"), (86400, "24h0m0s"),
     (0.0015, "1.5ms"), (1.5e-6, "1.5\u00b5s"), (1e-9, "1ns"), (-2.0, "-2s")],
)
def test_format_duration_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---- base64 -------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", serf_cases("encrypt:"))
def test_encrypt_key_errors_match_serf(case_id: str) -> None:
    # `serf agent -encrypt=<text>`
    message, stage = serf_stage(case_id)
    problems = validate(AgentConfig(node_name="n", encrypt_key=case_id.removeprefix("encrypt:")))
    assert [(str(p), p.stage) for p in problems] == [(message, stage or "setup")]


def test_encrypt_key_valid() -> None:
    assert validate(AgentConfig(node_name="n",
                                encrypt_key="Uh5k127JCY/U/2Px4bXF/HpDv2w2HjgRuoZDcD9v6Fk=")) == []


# ---- tags ---------------------------------------------------------------------------------


def test_unmarshal_tags() -> None:
    assert unmarshal_tags(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("noequals", "=v"):
        with pytest.raises(ConfigError) as info:
            unmarshal_tags([bad])
        assert info.value.message == f"Invalid tag: '{bad}'"


# ---- file decoding --------------------------------------------------------------------------


def test_load_file_all_keys(tmp_path: Path) -> None:
    data = {
        "node_name": "n1", "role": "web", "tags": {"dc": "east"}, "bind": "127.0.0.1:8000",
        "advertise": "1.2.3.4", "interface": "lo", "discover": "c", "encrypt_key": "k",
        "log_level": "debug", "rpc_addr": "127.0.0.1:1", "rpc_auth": "tok",
        "event_handlers": ["a.sh"], "start_join": ["x"], "replay_on_join": True,
        "retry_join": ["y"], "retry_interval": "10s", "retry_max_attempts": 3,
        "rejoin_after_leave": True, "snapshot_path": "/s", "protocol": 4, "profile": "wan",
        "leave_on_terminate": True, "skip_leave_on_interrupt": True,
        "reconnect_interval": "1m", "reconnect_timeout": "2h", "tombstone_timeout": "3h",
        "broadcast_timeout": "7s", "disable_name_resolution": True, "enable_syslog": True,
        "syslog_facility": "LOCAL1", "statsite_addr": "s:1", "statsd_addr": "d:2",
        "query_response_size_limit": 2000, "query_size_limit": 3000,
        "user_event_size_limit": 600, "enable_compression": False,
        "disable_coordinates": True, "keyring_file": "/kr", "tags_file": "/tf",
    }
    cfg, keys = load_file(write(tmp_path / "all.json", json.dumps(data)))
    assert keys == set(data)
    assert cfg.node_name == "n1" and cfg.tags == {"dc": "east"}
    assert cfg.retry_interval == 10.0 and cfg.reconnect_interval == 60.0
    assert cfg.reconnect_timeout == 7200.0 and cfg.tombstone_timeout == 10800.0
    assert cfg.broadcast_timeout == 7.0 and cfg.protocol == 4
    assert cfg.enable_compression is False and cfg.disable_coordinates is True
    assert cfg.query_size_limit == 3000 and cfg.user_event_size_limit == 600


def test_defaults() -> None:
    cfg = AgentConfig()
    assert cfg.bind == "0.0.0.0:7946" and cfg.rpc_addr == "127.0.0.1:7373"
    assert cfg.log_level == "INFO" and cfg.protocol == 5 and cfg.profile == "lan"
    assert cfg.retry_interval == 30 and cfg.reconnect_interval == 30
    assert cfg.reconnect_timeout == 86400 and cfg.tombstone_timeout == 86400
    assert cfg.broadcast_timeout == 5 and cfg.syslog_facility == "LOCAL0"
    assert (cfg.query_response_size_limit, cfg.query_size_limit) == (1024, 1024)
    assert cfg.user_event_size_limit == 512 and cfg.enable_compression is True


@pytest.mark.parametrize("case_id", serf_cases("file:") + serf_cases("duration:"))
def test_config_file_errors_match_serf(tmp_path: Path, case_id: str) -> None:
    """`serf agent -config-file=<file>`: decoding, JSON syntax and validation errors."""
    write_case_files(case_id, tmp_path)
    path = str(tmp_path / next(iter(serf_case(case_id)["files"])))
    expected = serf_message(case_id).replace("{dir}", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        ConfigSources(paths=[path]).load()
    assert str(info.value) == info.value.message == expected
    if expected.startswith("Error decoding"):
        assert info.value.path == path


def test_serf_file_cases_were_captured() -> None:
    assert len(serf_cases("file:")) == 32


def test_json_syntax_error_is_gos_without_a_position(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{\n  "node_name": "x",\n  "tags": {"a": ]\n}')
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == (
        f"Error decoding '{path}': invalid character ']' looking for beginning of value")


def test_duration_errors_keep_the_key_out_of_the_text(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '{"broadcast_timeout": "5"}')
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.key == "broadcast_timeout"
    assert str(info.value) == f"Error decoding '{path}': time: missing unit in duration \"5\""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file("/nonexistent.json")
    assert str(info.value) == serf_message("agent-missing-config-file")


def test_trailing_data_ignored_and_null_accepted(tmp_path: Path) -> None:
    cfg, keys = load_file(write(tmp_path / "t.json", '{"profile": "wan"} garbage'))
    assert cfg.profile == "wan" and keys == {"profile"}
    cfg, keys = load_file(write(tmp_path / "n.json", "null"))
    assert keys == set()


def test_keys_match_case_insensitively_and_nulls_are_unset(tmp_path: Path) -> None:
    cfg, keys = load_file(write(tmp_path / "f.json", '{"Node_Name": "x", "PROFILE": "wan"}'))
    assert (cfg.node_name, cfg.profile) == ("x", "wan")
    assert keys == {"node_name", "profile"}
    cfg, keys = load_file(write(
        tmp_path / "n.json", '{"tags": {"a": null}, "event_handlers": null, "protocol": 4.9}'
    ))
    assert cfg.tags == {"a": ""} and keys == {"tags", "protocol"} and cfg.protocol == 4


def test_decode_config_directly() -> None:
    cfg, keys = decode_config({"log_level": "warn", "leave_on_terminate": False})
    assert cfg.log_level == "warn" and keys == {"log_level", "leave_on_terminate"}


# ---- directories and merge -------------------------------------------------------------------


def test_merge_matches_serf(tmp_path: Path) -> None:
    """Files, a directory and flags merged as serf merged them (config-merge.json: what
    `serf info` showed for an agent started with the same files and flags)."""
    captured = load_fixture("config-merge.json")
    for name, content in captured["files"].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert captured["argv"] == ["agent", "-config-file={dir}/good.json", "-node=cli-node",
                                "-tag", "t=cli", "-config-dir={dir}/dir"]
    flags = AgentConfig(node_name="cli-node", tags={"t": "cli"})
    sources = ConfigSources(paths=[str(tmp_path / "good.json"), str(tmp_path / "dir")],
                            flags=flags, flag_keys=frozenset({"node_name", "tags"}))
    cfg = sources.load()
    info = captured["info"]
    assert cfg.node_name == info["agent"]["name"]
    assert cfg.tags == info["tags"]
    assert {s.filter.key: s.command for s in cfg.event_scripts()} == info["event_handlers"]
    assert cfg.log_level == "WARN"  # from dir/a.json (serf's info does not show it)
    # pyserf's own fix: the explicit `false` in good.json is honoured; serf forced it back on.
    assert captured["banner"] == ["Message Compression Enabled: true"]
    assert cfg.enable_compression is False
    assert sources.keys >= {"enable_compression", "node_name", "tags", "event_handlers"}


def test_load_dir_sorted_json_only(tmp_path: Path) -> None:
    write(tmp_path / "b.json", '{"node_name": "b", "start_join": ["2"]}')
    write(tmp_path / "a.json", '{"node_name": "a", "start_join": ["1"]}')
    write(tmp_path / "c.json.bak", '{"node_name": "c"}')
    cfg, keys = load_dir(str(tmp_path))
    assert cfg.node_name == "b" and cfg.start_join == ["1", "2"]
    assert keys == {"node_name", "start_join"}


def test_load_dir_error_names_file(tmp_path: Path) -> None:
    write(tmp_path / "a.json", '{"bogus": 1}')
    with pytest.raises(ConfigError) as info:
        load_paths([str(tmp_path) + "/"])
    assert f"Error decoding '{tmp_path}/a.json'" in str(info.value)


def test_merge_rules() -> None:
    base = AgentConfig(node_name="a", protocol=4, tags={"x": "1", "y": "1"},
                       start_join=["j1"], retry_max_attempts=3, replay_on_join=True)
    over = AgentConfig(node_name="", protocol=-1, tags={"y": "2", "z": "3"},
                       start_join=["j2"], retry_max_attempts=0, replay_on_join=False,
                       log_level="DEBUG")
    keys = {"node_name", "protocol", "tags", "start_join", "retry_max_attempts",
            "replay_on_join", "log_level"}
    out = merge(base, over, keys)
    assert out.node_name == "a"  # empty strings never replace
    assert out.protocol == 4  # protocol only if > 0
    assert out.tags == {"x": "1", "y": "2", "z": "3"}
    assert out.start_join == ["j1", "j2"]
    assert out.retry_max_attempts == 3  # zero ints never replace
    assert out.replay_on_join is False  # explicit booleans do (pyserf fix)
    assert out.log_level == "DEBUG"
    # inputs untouched
    assert base.tags == {"x": "1", "y": "1"} and base.start_join == ["j1"]


def test_merge_ignores_unlisted_keys_and_implicit_mode() -> None:
    base = AgentConfig(replay_on_join=True, node_name="a")
    assert merge(base, AgentConfig(node_name="b"), set()).node_name == "a"
    # without key tracking: values differing from defaults count, booleans only turn on
    out = merge(base, AgentConfig(node_name="b", protocol=3))
    assert out.node_name == "b" and out.protocol == 3 and out.replay_on_join is True


def test_boolean_in_later_file_turns_option_off(tmp_path: Path) -> None:
    first = write(tmp_path / "1.json", '{"leave_on_terminate": true, "replay_on_join": true}')
    second = write(tmp_path / "2.json", '{"leave_on_terminate": false}')
    cfg = ConfigSources(paths=[first, second]).load()
    assert cfg.leave_on_terminate is False and cfg.replay_on_join is True


def test_sources_reload_rereads_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write(path, '{"log_level": "debug", "tags": {"a": "1"}}')
    sources = ConfigSources(paths=[str(path)], flags=AgentConfig(node_name="n"),
                            flag_keys=frozenset({"node_name"}))
    assert sources.load().log_level == "DEBUG"
    write(path, '{"log_level": "warn", "tags": {"a": "2"}}')
    cfg = sources.load()
    assert (cfg.log_level, cfg.tags, cfg.node_name) == ("WARN", {"a": "2"}, "n")
    write(path, '{"log_level": "nope"}')
    with pytest.raises(ConfigError) as info:
        sources.load()
    assert info.value.key == "log_level"


# ---- finalize / validate ---------------------------------------------------------------------


def test_finalize_fixups() -> None:
    cfg, warnings = finalize(AgentConfig(role="web", retry_interval=0.01, broadcast_timeout=0.5,
                                         rejoin_after_leave=True, log_level="debug"))
    assert cfg.node_name == socket.gethostname()
    assert cfg.tags == {"role": "web"}
    assert cfg.retry_interval == 1.0 and cfg.broadcast_timeout == 1.0
    assert cfg.log_level == "DEBUG"
    assert warnings == [
        "Deprecation warning: 'Role' has been replaced with 'Tags'",
        "Warning: 'RetryInterval' is too low. Setting to 1s",
        "Warning: 'BroadcastTimeout' is too low. Setting to 1s",
        "Warning: 'RejoinAfterLeave' enabled without snapshot file",
    ]


def test_validate_accepts_defaults() -> None:
    assert validate(AgentConfig()) == []
    good_key = "Uh5k127JCY/U/2Px4bXF/HpDv2w2HjgRuoZDcD9v6Fk="
    assert validate(AgentConfig(encrypt_key=good_key, protocol=2, profile="local")) == []




@pytest.mark.parametrize(
    ("changes", "case_id", "key"),
    [
        ({"log_level": "foo"}, "agent-bad-log-level", "log_level"),
        ({"protocol": 9}, "agent-protocol-high", "protocol"),
        ({"protocol": 1}, "agent-protocol-low", "protocol"),
        ({"profile": "foo"}, "agent-bad-profile", "profile"),
        ({"user_event_size_limit": 9217}, "file:validate-user-event-limit",
         "user_event_size_limit"),
        ({"event_handlers": ["foo:bar=/bin/true"]}, "agent-bad-event-handler", "event_handlers"),
        ({"encrypt_key": "abc"}, "encrypt:abc", "encrypt_key"),
        ({"keyring_file": "/k", "encrypt_key": "Uh5k127JCY/U/2Px4bXF/HpDv2w2HjgRuoZDcD9v6Fk="},
         "file:validate-keyring-and-key", "keyring_file"),
        ({"tags_file": "/t", "tags": {"a": "b"}}, "file:validate-tags-file-and-tags",
         "tags_file"),
        ({"interface": "nosuchiface0"}, "agent-bad-iface", "interface"),
    ],
)
def test_validate_messages(changes: dict, case_id: str, key: str) -> None:
    problems = validate(AgentConfig(**changes))
    assert len(problems) == 1
    message, stage = serf_stage(case_id)
    assert str(problems[0]) == problems[0].message == message
    assert problems[0].key == key
    if stage is not None:  # bare texts come from three stages: see test_problem_stages
        assert problems[0].stage == stage


def test_validate_wrong_key_size() -> None:
    problems = validate(AgentConfig(encrypt_key="YWJjZA=="))
    assert [(str(p), p.key, p.stage) for p in problems] == [
        (serf_message("encrypt:YWJjZA=="), "encrypt_key", "serf")]
    # With a keyring file serf never reaches the key's size: the clash is reported instead.
    problems = validate(AgentConfig(encrypt_key="YWJjZA==", keyring_file="/k"))
    assert [p.stage for p in problems] == ["create"]


@pytest.mark.parametrize(("changes", "stage"), [
    ({"event_handlers": ["foo:bar=x"]}, "config"), ({"interface": "nosuchiface0"}, "config"),
    ({"log_level": "foo"}, "logger"), ({"encrypt_key": "abc"}, "setup"),
    ({"profile": "x"}, "setup"), ({"tags_file": "/t", "tags": {"a": "b"}}, "create"),
    ({"keyring_file": "/k", "encrypt_key": "YWJjZA=="}, "create"), ({"protocol": 1}, "serf"),
    ({"user_event_size_limit": 9217}, "serf"),
])
def test_problem_stages(changes: dict, stage: str) -> None:
    """Each problem is reported where serf's agent command meets it (config.STAGES)."""
    problem = first_problem(AgentConfig(**changes), stage)
    assert problem is not None and [p.stage for p in validate(AgentConfig(**changes))] == [stage]
    assert all(first_problem(AgentConfig(**changes), other) is None
               for other in ("config", "logger", "setup", "create", "serf") if other != stage)


def test_problems_come_in_serfs_order() -> None:
    cfg = AgentConfig(event_handlers=["foo:bar=x"], log_level="x", encrypt_key="abc",
                      profile="x", tags_file="/t", tags={"a": "b"}, protocol=9,
                      user_event_size_limit=9217)
    assert [p.key for p in validate(cfg)] == [
        "event_handlers", "log_level", "encrypt_key", "profile", "tags_file", "protocol",
        "user_event_size_limit"]
    cfg = AgentConfig(protocol=9, encrypt_key="YWJjZA==")  # Serf checks its version first
    assert [p.key for p in validate(cfg)] == ["protocol", "encrypt_key"]


@pytest.mark.parametrize(("data", "go_type", "error"), [
    (b"", "[]string", "unexpected end of JSON input"),
    (b"[", "[]string", "unexpected end of JSON input"),
    (b"[oops", "[]string", "invalid character 'o' looking for beginning of value"),
    (b"[] x", "[]string", "invalid character 'x' after top-level value"),
    (b'{"a": "b"}', "[]string", "json: cannot unmarshal object into Go value of type []string"),
    (b'["a", 1]', "[]string", "json: cannot unmarshal number into Go value of type string"),
    (b'["a", true]', "[]string", "json: cannot unmarshal bool into Go value of type string"),
    (b'"a"', "map[string]string",
     "json: cannot unmarshal string into Go value of type map[string]string"),
    (b'{"a": ["b"]}', "map[string]string",
     "json: cannot unmarshal array into Go value of type string"),
])
def test_unmarshal_strings_errors(data: bytes, go_type: str, error: str) -> None:
    """Texts captured from serf 0.9.4 reading bad -keyring-file / -tags-file contents
    (tests/e2e/test_bad_cli_input.py compares them with the binary's end to end)."""
    with pytest.raises(ValueError) as info:
        unmarshal_strings(data, go_type)
    assert str(info.value) == error


def test_unmarshal_strings_values() -> None:
    assert unmarshal_strings(b" null ", "[]string") is None
    assert unmarshal_strings(b'["a", null]\n', "[]string") == ["a", ""]
    assert unmarshal_strings(b'{"a": null, "b": "c"}', "map[string]string") == {"a": "",
                                                                                 "b": "c"}


def test_user_event_limit_boundary() -> None:
    assert validate(AgentConfig(user_event_size_limit=9216)) == []


def test_config_error_set_by_a_flag_reads_as_serfs() -> None:
    sources = ConfigSources(flags=AgentConfig(log_level="foo"), flag_keys=frozenset({"log_level"}))
    with pytest.raises(ConfigError) as info:
        sources.load()
    assert str(info.value) == serf_message("agent-bad-log-level")
    assert info.value.key == "log_level"


# ---- event handler specs -------------------------------------------------------------------


def test_event_handler_spec_parsing() -> None:
    filters, command = parse_event_handler_spec("member-join,user:deploy=run.sh a=b")
    assert filters == [EventFilter("member-join"), EventFilter("user", "deploy")]
    assert command == "run.sh a=b"  # only the first '=' splits
    filters, command = parse_event_handler_spec("handler.sh")
    assert filters == [EventFilter("*")] and command == "handler.sh"
    assert parse_event_handler_spec("=x.sh") == ([EventFilter("*")], "x.sh")


def test_event_filter_validity_and_matching() -> None:
    for spec in ("member-join", "member-leave", "member-failed", "member-update",
                 "member-reap", "user", "user:x", "query", "query:q", "*", "user:"):
        assert all(f.valid() for f in parse_event_filter(spec)), spec
    assert not any(f.valid() for f in parse_event_filter("foo:bar"))
    assert not parse_event_filter("member-join,bogus")[1].valid()

    star = EventFilter("*")
    assert star.matches("member-join") and star.matches("user", "x")
    user_x = EventFilter("user", "x")
    assert user_x.matches("user", "x") and not user_x.matches("user", "y")
    assert not user_x.matches("query", "x")
    assert EventFilter("user").matches("user", "anything")
    assert EventFilter("query", "q").matches("query", "q")
    assert EventFilter("member-join").matches("member-join")
    assert not EventFilter("member-join").matches("member-leave")
    assert EventFilter("user", "x").key == "user:x" and EventFilter("*").key == "*:"


def test_event_scripts_expand_per_filter() -> None:
    scripts = parse_event_scripts("member-join,member-leave=a.sh")
    assert [str(s) for s in scripts] == [
        "Event 'member-join' invoking 'a.sh'",
        "Event 'member-leave' invoking 'a.sh'",
    ]
    cfg = AgentConfig(event_handlers=["x.sh", "user:d=y.sh"])
    assert [(s.filter.key, s.command) for s in cfg.event_scripts()] == [
        ("*:", "x.sh"), ("user:d", "y.sh")
    ]


@pytest.mark.parametrize(("text", "result"), [
    ("127.0.0.1", ("127.0.0.1", 7946)), ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("127.0.0.1:http", ("127.0.0.1", 80)), ("127.0.0.1:", ("127.0.0.1", 0)),
    ("127.0.0.1:+80", ("127.0.0.1", 80)), ("[::1]:65535", ("::1", 65535)),
    ("127.0.0.1:99999", "address 99999: invalid port"),
    ("127.0.0.1:-1", "address -1: invalid port"), ("[::1]:70000", "address 70000: invalid port"),
    ("127.0.0.1:abc", "address tcp/abc: unknown port"),
    ("[::1", "address [::1: missing ']' in address"),
    ("[::1]", ("::1", 7946)), ("::1", "address ::1: too many colons in address"),
    ("127.0.0.1:+", ("127.0.0.1", 0)), (" 127.0.0.1", (" 127.0.0.1", 7946)),
    ("1.2.3.4]:80", "address 1.2.3.4]:80: unexpected ']' in address"),
    ("[::1]x", "address [::1]x: missing port in address"),
])
def test_bind_and_advertise_ports_read_as_gos(text: str, result: Any) -> None:
    """Go's net.ResolveTCPAddr: service names resolve, the error names only the port (texts
    from serf 0.9.4's `Invalid bind address: ...`, compared end to end in
    tests/e2e/test_bad_cli_input.py)."""
    from pyserf.agent import netutil

    if isinstance(result, tuple):
        assert netutil.split_host_port(text, 7946) == result
    else:
        with pytest.raises(netutil.AddressError) as info:
            netutil.split_host_port(text, 7946)
        assert str(info.value) == result
