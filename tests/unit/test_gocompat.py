"""pyserf.gocompat pins Go's texts and parsing rules. Expected values are Go's (documented
behaviour of its standard library, or printed by serf 0.9.4 where a case was run against the
binary, as noted)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from pyserf.gocompat import durations, fmt, hostport, jsonenc, jsonerr, strconv
from pyserf.gocompat.errno import errno_text

# ---- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (90, "1m30s"), (90.0, "1m30s"), (60, "1m0s"), (3600, "1h0m0s"), (3661.5, "1h1m1.5s"),
    (30, "30s"), (0.25, "250ms"), (0, "0s"), (-90, "-1m30s"),
])
def test_format_duration_is_time_duration_string(seconds: float, text: str) -> None:
    """time.Duration.String: minutes and hours split out ("90s" is never printed)."""
    assert durations.format_duration(seconds) == text


@pytest.mark.parametrize(("ns", "text"), [
    (1, "1ns"), (1_500, "1.5\u00b5s"), (1_000_000, "1ms"),
    ((1 << 63) - 1, "2562047h47m16.854775807s"), (-(1 << 63), "-2562047h47m16.854775808s"),
])
def test_format_duration_ns_extremes(ns: int, text: str) -> None:
    assert durations.format_duration_ns(ns) == text


def test_parse_and_format_round_trip() -> None:
    for text in ("1m30s", "1h0m0s", "1.5s", "250ms", "-2m3s"):
        assert durations.format_duration_ns(durations.parse_duration_ns(text)) == text


def test_parse_duration_errors_quote_like_go_time() -> None:
    with pytest.raises(ValueError, match=r'^time: unknown unit "x" in duration "1x"$'):
        durations.parse_duration("1x")
    with pytest.raises(ValueError, match=r'^time: missing unit in duration "1"$'):
        durations.parse_duration("1")


# ---- strconv --------------------------------------------------------------------------------


def test_quote() -> None:
    assert strconv.quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert strconv.quote("\x01\u00e9\u2028") == '"\\x01\u00e9\\u2028"'
    assert strconv.quote("\udcff") == '"\\xff"'  # an undecodable byte, as Go prints it


@pytest.mark.parametrize(("text", "value"), [
    ("10", 10), ("-3", -3), ("+4", 4), ("0x1f", 31), ("0o17", 15), ("017", 15), ("0b101", 5),
    ("1_000", 1000), ("0", 0), ("0x_1f", 31), ("0_7", 7), ("-9223372036854775808", -(1 << 63)),
])
def test_parse_int(text: str, value: int) -> None:
    assert strconv.parse_int(text) == value


@pytest.mark.parametrize(("text", "err"), [
    ("", "invalid syntax"), ("abc", "invalid syntax"), ("1.5", "invalid syntax"),
    ("08", "invalid syntax"), ("1__0", "invalid syntax"), ("_1", "invalid syntax"),
    ("0x", "invalid syntax"), ("1_", "invalid syntax"), ("\u0661", "invalid syntax"),
    ("9223372036854775808", "value out of range"), ("9" * 5000, "value out of range"),
])
def test_parse_int_errors(text: str, err: str) -> None:
    with pytest.raises(strconv.NumError) as info:
        strconv.parse_int(text)
    assert info.value.err == err
    assert str(info.value) == f"strconv.ParseInt: parsing {strconv.quote(text)}: {err}"


@pytest.mark.parametrize(("text", "message"), [
    # serf 0.9.4 `serf join 127.0.0.93:<port>`: memberlist reads the port with ParseUint
    ("http", 'strconv.ParseUint: parsing "http": invalid syntax'),
    ("+80", 'strconv.ParseUint: parsing "+80": invalid syntax'),
    ("", 'strconv.ParseUint: parsing "": invalid syntax'),
    ("99999", 'strconv.ParseUint: parsing "99999": value out of range'),
])
def test_parse_uint16_errors(text: str, message: str) -> None:
    with pytest.raises(strconv.NumError, match=f"^{message}$".replace("+", r"\+")):
        strconv.parse_uint(text, 10, 16)
    assert strconv.parse_uint("65535", 10, 16) == 65535


def test_parse_bool() -> None:
    assert all(strconv.parse_bool(t) for t in ("1", "t", "T", "TRUE", "true", "True"))
    assert not any(strconv.parse_bool(t) for t in ("0", "f", "F", "FALSE", "false", "False"))
    with pytest.raises(strconv.NumError, match='^strconv.ParseBool: parsing "yes": invalid'):
        strconv.parse_bool("yes")


# ---- fmt ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (1e6, "1e+06"), (123456.0, "123456"), (0.0001, "0.0001"), (1e-05, "1e-05"),
    (2.5, "2.5"), (-3.25e30, "-3.25e+30"), (1e21, "1e+21"), (0.1 + 0.2, "0.30000000000000004"),
    (-0.0, "-0"), (float("inf"), "+Inf"), (float("nan"), "NaN"),
])
def test_float_v(value: float, text: str) -> None:
    assert fmt.float_v(value) == text


def test_value_v_of_json_values() -> None:
    assert fmt.value_v({"b": [1, "x", None], "a": True}) == "map[a:true b:[1 x <nil>]]"
    assert fmt.json_type({}) == "map[string]interface {}" and fmt.json_type(3) == "float64"


def test_sharp_v_matches_serf_monitor() -> None:
    assert fmt.sharp_v("query") == '"query"'
    assert fmt.sharp_v(None) == "<nil>"
    assert fmt.sharp_v(b"pay") == "[]byte{0x70, 0x61, 0x79}"
    assert fmt.sharp_v(4) == "4" and fmt.sharp_v(7946) == "0x1f0a" and fmt.sharp_v(-1) == "-1"
    assert fmt.sharp_v(1.0) == "1" and fmt.sharp_v(2.5) == "2.5"
    members = [{"Addr": b"\x7f\x00\x00\x3d", "Name": "t1", "Port": 7946, "Tags": {"a": "b"}}]
    assert fmt.sharp_v(members) == (
        '[]interface {}{map[interface {}]interface {}{"Addr":[]uint8{0x7f, 0x0, 0x0, 0x3d}, '
        '"Name":"t1", "Port":0x1f0a, "Tags":map[interface {}]interface {}{"a":"b"}}}'
    )


# ---- encoding/json --------------------------------------------------------------------------


def test_marshal_indent_escapes_like_go() -> None:
    assert jsonenc.marshal_indent({"a": "<b>&\u2028\x01\b\n\"\\", "e": {}, "l": [],
                                   "n": None}) == (
        '{\n  "a": "\\u003cb\\u003e\\u0026\\u2028\\u0001\\u0008\\n\\"\\\\",\n'
        '  "e": {},\n  "l": [],\n  "n": null\n}'
    )
    assert json.loads(jsonenc.marshal_indent({"x": [1, True, "\u00e9"]})) == {
        "x": [1, True, "\u00e9"]}


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (1e6, "1000000"), (1e20, "100000000000000000000"), (1e21, "1e+21"),
    (1e-6, "0.000001"), (1e-7, "1e-7"), (-2.5e-10, "-2.5e-10"), (0.5, "0.5"),
])
def test_marshal_float_like_encoding_json(value: float, text: str) -> None:
    assert jsonenc.marshal_indent(value) == text


@pytest.mark.parametrize(("data", "message"), [
    (b"", "EOF"), (b"  \n", "EOF"), (b"{", "unexpected EOF"),
    (b"{x", "invalid character 'x' looking for beginning of object key string"),
    (b"NaN", "invalid character 'N' looking for beginning of value"),
    (b'{"a": Infinity}', "invalid character 'I' looking for beginning of value"),
    (b'{"a": -Infinity}', "invalid character 'I' in numeric literal"),
    (b"1.x", "invalid character 'x' after decimal point in numeric literal"),
    (b"1ex", "invalid character 'x' in exponent of numeric literal"),
    (b'{"a": tru}', "invalid character '}' in literal true (expecting 'e')"),
    (b'"\\q"', "invalid character 'q' in string escape code"),
])
def test_decode_first_errors_are_gos(data: bytes, message: str) -> None:
    with pytest.raises(jsonerr.JSONError) as info:
        jsonerr.decode_first(data)
    assert str(info.value) == message


@pytest.mark.parametrize(("data", "value"), [
    (b'{"a": 1} trailing garbage', {"a": 1}), (b"01", 0), (b" [1, 2]x", [1, 2]),
    (b"null", None), (b'"\xff"', "\ufffd"), (b"1 .x", 1),
])
def test_decode_first_reads_only_the_first_value(data: bytes, value: Any) -> None:
    assert jsonerr.decode_first(data) == value


def test_unmarshal_strings_refuses_what_json_accepts_but_go_does_not() -> None:
    with pytest.raises(jsonerr.JSONError, match="^invalid character 'N' looking for"):
        jsonerr.unmarshal_strings(b"[NaN]", "[]string")
    with pytest.raises(jsonerr.JSONError, match="^invalid character 'x' after top-level"):
        jsonerr.unmarshal_strings(b'["a"] x', "[]string")


def test_gocompat_imports_no_json_or_decimal() -> None:
    """The agent imports gocompat while idle: json and decimal come only with their use."""
    code = ("import sys\nimport pyserf.gocompat.strconv, pyserf.gocompat.durations, "
            "pyserf.gocompat.fmt, pyserf.gocompat.errno, pyserf.gocompat.hostport, "
            "pyserf.gocompat.jsonerr, pyserf.gocompat.jsonenc\n"
            "from pyserf.gocompat import fmt\nfmt.value_v(1.5)\n"
            "print(sorted(m for m in ('json', 'decimal', '_decimal') if m in sys.modules))")
    # Without the coverage tracer the test command starts in every child: it imports json.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "COV_CORE"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == "[]"


# ---- errno ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text"), [
    (errno.ECONNREFUSED, "connection refused"), (errno.EADDRINUSE, "address already in use"),
    (errno.ENOENT, "no such file or directory"), (errno.EACCES, "permission denied"),
    (errno.EHOSTUNREACH, "no route to host"), (errno.EREMOTEIO, "remote I/O error"),
])
def test_errno_text_is_gos(code: int, text: str) -> None:
    assert errno_text(OSError(code, "ignored")) == text


# ---- host:port ------------------------------------------------------------------------------


def _expect(call: Any, result: Any) -> None:
    """``call()`` returns ``result``, or (for a string) raises ValueError with that text."""
    if isinstance(result, str):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == result
    else:
        assert call() == result



@pytest.mark.parametrize(("text", "result"), [
    ("a:1", ("a", "1")), ("[::1]:7946", ("::1", "7946")), (":80", ("", "80")),
    ("[fe80::1%lo]:1", ("fe80::1%lo", "1")), ("a:", ("a", "")),
    ("a", "address a: missing port in address"),
    ("::1", "address ::1: too many colons in address"),
    ("[::1]", "address [::1]: missing port in address"),
    ("[::1", "address [::1: missing ']' in address"),
    ("[::1]::1", "address [::1]::1: too many colons in address"),
    ("[::1]x:1", "address [::1]x:1: missing port in address"),
    ("a[:1", "address a[:1: unexpected '[' in address"),
    ("a]:1", "address a]:1: unexpected ']' in address"),
])
def test_split_host_port(text: str, result: Any) -> None:
    _expect(lambda: hostport.split_host_port(text), result)


def test_join_and_tcp_addr_strings() -> None:
    assert hostport.join_host_port("::1", 7946) == "[::1]:7946"
    assert hostport.join_host_port("10.0.0.1", "80") == "10.0.0.1:80"
    assert hostport.format_tcp_addr("<nil>", 1) == ":1"
    assert hostport.ip_string(b"\x00" * 10 + b"\xff\xff\x7f\x00\x00\x01") == "127.0.0.1"
    assert hostport.ip_string(b"") == "<nil>"


@pytest.mark.parametrize(("text", "result"), [
    ("", 0), ("+", 0), ("-0", 0), ("80", 80), ("+80", 80), ("http", 80),
    ("-1", "address -1: invalid port"), ("65536", "address 65536: invalid port"),
    ("9" * 5000, f"address {'9' * 5000}: invalid port"),
    ("nosuchservice", "address tcp/nosuchservice: unknown port"),
])
def test_parse_port_like_lookup_port(text: str, result: Any) -> None:
    """serf 0.9.4 -rpc-addr=127.0.0.1:+ listens (port 0); 127.0.0.1:echo resolves."""
    _expect(lambda: hostport.parse_port(text), result)


@pytest.mark.parametrize(("text", "result"), [
    # each as serf 0.9.4's `serf join <text>` resolved or refused it
    ("127.0.0.93", ("", "127.0.0.93", 7946)), ("x/127.0.0.93", ("x", "127.0.0.93", 7946)),
    ("a/b/127.0.0.93", ("a", "b/127.0.0.93", 7946)), ("::1", ("", "::1", 7946)),
    ("[::1]", ("", "::1", 7946)), ("[::1]:7946", ("", "::1", 7946)),
    ("/127.0.0.93", "empty node name provided"),
    ("[::1]x", "address [::1]x]:7946: missing port in address"),
    ("127.0.0.93:http", 'strconv.ParseUint: parsing "http": invalid syntax'),
    ("127.0.0.93:-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
    ("a:b:c", ("", "a:b:c", 7946)),
])
def test_join_parts_like_memberlist(text: str, result: Any) -> None:
    _expect(lambda: hostport.join_parts(text, 7946), result)


def test_lookup_error_names_the_server_only_for_domain_names(monkeypatch:
                                                             pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostport, "_nameserver", lambda: "10.0.0.53:53")
    assert hostport.lookup_error("nosuch.invalid") == (
        "lookup nosuch.invalid on 10.0.0.53:53: no such host")
    for name in ("1.2.3.4.5", "a..b", "a:b:c", " x", "x-", "-x.y"):
        assert hostport.lookup_error(name) == f"lookup {name}: no such host"


def test_retry_join_logs_its_interval_as_go_does(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """serf logs ``retrying in %v`` of a time.Duration: 90 s is "1m30s" (it was "90s")."""
    import asyncio
    import logging
    from types import SimpleNamespace

    from pyserf.agent import lifecycle
    from pyserf.agent.config import AgentConfig

    async def no_sleep(_: float) -> None:
        return None

    async def failing_join(addresses: list[str], replay: bool) -> tuple[int, str]:
        return 0, "boom\n"

    agent = SimpleNamespace(shutdown_event=asyncio.Event(), join=failing_join, exit_code=0)
    config = AgentConfig(retry_join=["127.0.0.1"], retry_interval=90.0, retry_max_attempts=1)
    monkeypatch.setattr(lifecycle.asyncio, "sleep", no_sleep)
    with caplog.at_level(logging.WARNING, logger=lifecycle.log.name):
        asyncio.run(lifecycle._retry_join(agent, config))  # type: ignore[arg-type]
    assert "agent: Join failed: boom, retrying in 1m30s" in caplog.messages
