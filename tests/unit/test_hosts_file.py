"""The hosts_file block: rendering, merging into a file, hostile member data, config checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pyserf.agent import config_decode, config_load, config_validate, hosts_file
from pyserf.agent.config import ConfigError
from pyserf.agent.hosts_file import (
    BEGIN,
    END,
    HostsFileError,
    HostsFileSettings,
    HostsFileSync,
    host_lines,
    merge_block,
    parse_settings,
    render_block,
)
from pyserf.serf.members import Member, MemberStatus

ALIVE = MemberStatus.ALIVE


def member(name: str, addr: str = "10.0.0.1", status: MemberStatus = ALIVE,
           **tags: str) -> Member:
    return Member(name, addr, 7946, dict(tags), status)


def test_lines_alive_members_sorted_with_domain_alias():
    members = [member("web2", "10.0.0.2"), member("web1", "10.0.0.1"),
               member("gone", "10.0.0.3", MemberStatus.LEFT),
               member("dead", "10.0.0.4", MemberStatus.FAILED),
               member("v6", "fd00::1")]
    lines = host_lines(members, HostsFileSettings("/x", domain="lan"))
    assert lines == ["fd00::1\tv6 v6.lan", "10.0.0.1\tweb1 web1.lan",
                     "10.0.0.2\tweb2 web2.lan"]  # by name
    assert host_lines(members[:2], HostsFileSettings("/x")) == [
        "10.0.0.1\tweb1", "10.0.0.2\tweb2"]


def test_tag_filters_are_anchored_re2_like_members_tag():
    members = [member("a", role="web-1"), member("b", role="xweb"), member("c"),
               member("d", role="web", dc="eu")]
    only_web = HostsFileSettings("/x", tags={"role": "web.*"})
    assert [line.split("\t")[1] for line in host_lines(members, only_web)] == ["a", "d"]
    both = HostsFileSettings("/x", tags={"role": "web.*", "dc": "eu|us"})
    assert [line.split("\t")[1] for line in host_lines(members, both)] == ["d"]
    missing_matches_empty = HostsFileSettings("/x", tags={"role": ""})
    assert [line.split("\t")[1] for line in host_lines(members, missing_matches_empty)] == ["c"]


@pytest.mark.parametrize("name", [
    "evil\n10.6.6.6 bank.example", "two words", "x#comment", "nul\0byte", "tab\there", "",
    "-leading", "trailing.", "ünïcode", "a" * 254, "dot..\r"])
def test_hostile_names_are_skipped_with_a_warning(name):
    warnings: list[str] = []
    lines = host_lines([member(name), member("ok", "10.0.0.9")], HostsFileSettings("/x"),
                       warn=warnings.append)
    assert lines == ["10.0.0.9\tok"]
    assert len(warnings) == 1 and "not a valid host name" in warnings[0]
    assert "\n" not in warnings[0] and "\0" not in warnings[0]


def test_bad_address_is_skipped_and_the_block_has_one_line_per_member():
    warnings: list[str] = []
    lines = host_lines([member("x", "10.0.0.1\n10.6.6.6 evil"), member("y", "10.0.0.2")],
                       HostsFileSettings("/x"), warn=warnings.append)
    assert lines == ["10.0.0.2\ty"] and "not an IP address" in warnings[0]
    block = render_block(lines)
    assert block.count(b"\n") == 3 and block.startswith(BEGIN + b"\n")
    assert block.endswith(END + b"\n")


ORIGINAL = b"127.0.0.1\tlocalhost\n# keep me \xff (not UTF-8)\r\n::1 localhost ip6-localhost\n"


def test_merge_appends_then_replaces_in_place_then_removes_byte_exact():
    first = merge_block(ORIGINAL, render_block(["10.0.0.1\ta"]))
    assert first == ORIGINAL + render_block(["10.0.0.1\ta"])
    # an administrator adds a line after the block: it stays after the new block
    edited = first + b"192.0.2.7 printer\n"
    second = merge_block(edited, render_block(["10.0.0.1\ta", "10.0.0.2\tb"]))
    assert second == ORIGINAL + render_block(["10.0.0.1\ta", "10.0.0.2\tb"]) + \
        b"192.0.2.7 printer\n"
    assert merge_block(second, None) == ORIGINAL + b"192.0.2.7 printer\n"
    assert merge_block(ORIGINAL, None) == ORIGINAL


def test_merge_into_file_without_final_newline_and_duplicate_blocks():
    assert merge_block(b"1.2.3.4 x", render_block([])) == b"1.2.3.4 x\n" + render_block([])
    twice = render_block(["10.0.0.1\told"]) + b"mid\n" + render_block(["10.0.0.2\tolder"])
    assert merge_block(twice, render_block(["10.0.0.3\tnew"])) == \
        render_block(["10.0.0.3\tnew"]) + b"mid\n"


def test_merge_refuses_a_begin_without_end():
    with pytest.raises(HostsFileError, match="without the END marker"):
        merge_block(ORIGINAL + BEGIN + b"\n10.0.0.1 a\n", render_block([]))


def test_sync_writes_atomically_keeps_mode_and_follows_symlinks(tmp_path: Path):
    real = tmp_path / "store" / "hosts"
    real.parent.mkdir()
    real.write_bytes(ORIGINAL)
    real.chmod(0o644)
    link = tmp_path / "hosts"
    link.symlink_to(real)
    members = [member("a", "10.0.0.1")]
    sync = HostsFileSync(HostsFileSettings(str(link), domain="lan"), lambda: members)
    sync.sync()
    assert link.is_symlink()  # the file behind the link was replaced, not the link
    assert real.read_bytes() == ORIGINAL + render_block(["10.0.0.1\ta a.lan"])
    assert stat.S_IMODE(real.stat().st_mode) == 0o644
    assert sorted(os.listdir(real.parent)) == ["hosts"]  # no temp file left behind
    members.append(member("b", "10.0.0.2"))
    sync.on_event(hosts_file.MemberEvent("member-join", members[1:]))
    assert render_block(["10.0.0.1\ta a.lan", "10.0.0.2\tb b.lan"]) in real.read_bytes()
    sync.remove()
    assert real.read_bytes() == ORIGINAL


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch):
    path = tmp_path / "hosts"
    path.write_bytes(ORIGINAL)

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hosts_file.os, "replace", crash)
    sync = HostsFileSync(HostsFileSettings(str(path)), lambda: [member("a")])
    sync.sync()  # logged, not raised: a full disk must not stop the agent
    assert path.read_bytes() == ORIGINAL
    assert os.listdir(tmp_path) == ["hosts"]


def test_sync_creates_a_missing_file(tmp_path: Path):
    path = tmp_path / "hosts"
    HostsFileSync(HostsFileSettings(str(path)), lambda: [member("a")]).sync()
    assert path.read_bytes() == render_block(["10.0.0.1\ta"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize(("raw", "message"), [
    ("/etc/hosts", "expected an object"),
    ({}, "\"path\" is required"),
    ({"path": "hosts"}, "absolute file name"),
    ({"path": "/etc/hosts", "tag": {}}, "unknown key(s) tag"),
    ({"path": "/etc/hosts", "tags": {"role": 5}}, "\"tags\" must map"),
    ({"path": "/etc/hosts", "tags": {"role": "(web"}}, "missing closing )"),
    ({"path": "/etc/hosts", "domain": "bad domain"}, "\"domain\" must be a DNS domain"),
    ({"path": "/etc/hosts", "domain": "-x.lan"}, "\"domain\" must be a DNS domain"),
])
def test_bad_settings_are_refused_clearly(raw, message):
    with pytest.raises(HostsFileError) as info:
        parse_settings(raw)
    assert message in str(info.value)


def test_agent_config_decodes_merges_and_validates_the_block():
    cfg, keys = config_decode.decode_config(
        {"hosts_file": {"path": "/etc/hosts", "tags": {"role": "web.*"}, "domain": "lan"}})
    assert "hosts_file" in keys
    assert parse_settings(cfg.hosts_file) == HostsFileSettings(
        "/etc/hosts", {"role": "web.*"}, "lan")
    later, later_keys = config_decode.decode_config({"hosts_file": {"path": "/tmp/h"}})
    merged = config_load.merge(cfg, later, later_keys)
    assert merged.hosts_file == {"path": "/tmp/h"}  # replaced as a whole, not key by key
    assert config_validate.validate(merged) == []
    bad, _ = config_decode.decode_config({"hosts_file": {"path": "/etc/hosts", "domain": "a b"}})
    problems = config_validate.validate(bad)
    assert [p.key for p in problems] == ["hosts_file"]
    with pytest.raises(ConfigError, match="'hosts_file' expected a map"):
        config_decode.decode_config({"hosts_file": "/etc/hosts"})
