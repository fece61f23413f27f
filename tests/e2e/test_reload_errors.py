"""SIGHUP with a config file that cannot be loaded: the agent says why, keeps running with the
configuration it had, and a later SIGHUP with a fixed file applies it. serf 0.9.4 runs the same
steps side by side, so its own output is the reference for the error texts.

serf's handleReload (command/agent/command.go): print "Reloading configuration...", re-read the
files; on an error print it and "Failed to reload configs" and keep the old config. A bad
log_level is not a load error there: serf prints "Invalid log level: ..." keeps its level and
applies the rest (tags, handlers).
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Agent, members, run_cli, wait_until

pytestmark = pytest.mark.e2e

FAILED = "Failed to reload configs"


def _own_tags(agent: Agent) -> dict[str, str] | None:
    """The agent's own tags as its RPC reports them; None while it does not answer."""
    row = members(agent.kind, agent.rpc).get(agent.name)
    return None if row is None else row[2]


def _hup_and_wait(agent: Agent, marker: str) -> None:
    """SIGHUP, then wait until the agent has logged one more ``marker`` than before: the
    reload has been handled, so whatever it would have changed has changed by now."""
    before = agent.log().count(marker)
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: agent.log().count(marker) > before, 10,
               what=f"{agent.name} to report {marker!r}")


def _error_before_failed(log: str, path: Path) -> str:
    """serf's error text for the latest failed reload: everything between "Reloading
    configuration..." and "Failed to reload configs", '==> ' prefixes and the path
    removed (the files of the two agents have different names)."""
    block = log.rsplit("Reloading configuration...", 1)[1].split(FAILED, 1)[0]
    block = block.strip().removesuffix("==>").strip()
    text = "\n".join(line.removeprefix("==> ") for line in block.splitlines())
    return text.replace(str(path), "<path>")


@pytest.mark.parametrize(("broken", "expected"), [
    ('{"tags": {', "Error decoding '<path>': unexpected EOF"),
    (json.dumps({"tags": {"role": 3}}),
     "Error decoding '<path>': 1 error(s) decoding:\n\n* 'tags[role]' expected type 'string', "
     "got unconvertible type 'float64', value: '3'"),
], ids=["truncated-json", "wrong-type"])
def test_broken_config_on_sighup_keeps_the_old_config(cluster, tmp_path, broken, expected,
                                                      need_serf):
    s_conf, p_conf = tmp_path / "s1.json", tmp_path / "p1.json"
    for conf in (s_conf, p_conf):
        conf.write_text(json.dumps({"tags": {"role": "web"}}))
    s1 = cluster.start("serf", "s1", f"-config-file={s_conf}")
    p1 = cluster.start("pyserf", "p1", f"-config-file={p_conf}", f"-join={s1.ip}")
    web = {"role": "web"}
    wait_until(lambda: members("serf", s1.rpc).get("p1", ("", "", {}))[2] == web, 10,
               what="serf to see p1's tags")

    for conf in (s_conf, p_conf):
        conf.write_text(broken)
    for agent in (s1, p1):
        _hup_and_wait(agent, FAILED)
    # The reference: serf's own words (checked, so a change in serf shows up here).
    assert _error_before_failed(s1.log(), s_conf) == expected
    # pyserf logs the same text (inside its log line) and the same verdict.
    reload_part = p1.log().rsplit("Reloading configuration...", 1)[1]
    assert expected.replace("<path>", str(p_conf)) in reload_part
    assert FAILED in reload_part and "Traceback" not in p1.log()
    # Both keep running with the old tags: seen by themselves and by the other side.
    assert s1.alive() and p1.alive()
    assert _own_tags(p1) == web and _own_tags(s1) == web
    assert members("serf", s1.rpc)["p1"][2] == web

    # A fixed file and another SIGHUP: the new tags are applied and gossiped.
    db = {"role": "db"}
    for conf in (s_conf, p_conf):
        conf.write_text(json.dumps({"tags": db}))
    for agent in (s1, p1):
        agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: members("serf", s1.rpc).get("p1", ("", "", {}))[2] == db, 10,
               what="serf to see p1's reloaded tags")
    wait_until(lambda: members("pyserf", p1.rpc).get("s1", ("", "", {}))[2] == db, 10,
               what="pyserf to see s1's reloaded tags")
    assert p1.log().count(FAILED) == 1  # the good reload logged no error


def test_bad_log_level_on_sighup_still_applies_the_rest(cluster, tmp_path, need_serf):
    s_conf, p_conf = tmp_path / "s1.json", tmp_path / "p1.json"
    for conf in (s_conf, p_conf):
        conf.write_text(json.dumps({"tags": {"role": "web"}}))
    s1 = cluster.start("serf", "s1", f"-config-file={s_conf}")
    p1 = cluster.start("pyserf", "p1", f"-config-file={p_conf}")
    invalid = "Invalid log level: BOGUS. Valid log levels are: [TRACE DEBUG INFO WARN ERR]"
    for conf in (s_conf, p_conf):
        conf.write_text(json.dumps({"tags": {"role": "db"}, "log_level": "bogus"}))
    for agent in (s1, p1):
        _hup_and_wait(agent, "Invalid log level")
    assert re.search(r"^==> " + re.escape(invalid) + "$", s1.log(), re.M)
    wait_until(lambda: _own_tags(s1) == {"role": "db"}, 10, what="serf to apply the tags")
    assert FAILED not in s1.log()
    # pyserf must do the same: the message, no failed reload, the new tags.
    assert invalid in p1.log()
    assert FAILED not in p1.log()
    wait_until(lambda: _own_tags(p1) == {"role": "db"}, 5, what="pyserf to apply the tags")
    assert run_cli("pyserf", "members", rpc=p1.rpc).returncode == 0


def test_reload_error_lines_are_serfs(cluster, tmp_path, need_serf):
    lines = {}
    for kind in ("serf", "pyserf"):
        conf = tmp_path / f"{kind}.json"
        conf.write_text("{}")
        agent = cluster.start(kind, f"{kind}1", f"-config-file={conf}")
        conf.write_text('{"tags": {')
        _hup_and_wait(agent, FAILED)
        tail = agent.log().rsplit("==> Reloading configuration...\n", 1)[1]
        lines[kind] = [line.replace(str(conf), "<path>") for line in tail.splitlines()[:2]]
    assert lines["serf"] == ["==> Error decoding '<path>': unexpected EOF", f"==> {FAILED}"]
    assert lines["pyserf"] == lines["serf"]
