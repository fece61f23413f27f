"""A pyserf agent driven by the real serf CLI, plus agent lifecycle: signals, reload, auth."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, members, next_subnet, run_cli, wait_until

pytestmark = pytest.mark.e2e


def _member(cli: str, rpc: str, name: str) -> tuple[str, str, dict[str, str]]:
    """(addr, status, tags) of one member; empty while the agent does not answer or does not
    know the member yet, so polling predicates retry instead of raising KeyError."""
    return members(cli, rpc).get(name, ("", "", {}))


def test_real_serf_cli_drives_a_pyserf_agent(cluster, need_serf):
    p1 = cluster.start("pyserf", "p1", "-tag", "role=web", "-event-handler=user:deploy=true")
    p2 = cluster.start("pyserf", "p2")

    out = run_cli("serf", "join", p2.ip, rpc=p1.rpc)
    assert out.returncode == 0
    assert "Successfully joined cluster by contacting 1 nodes." in out.stdout
    out = run_cli("serf", "join", "127.0.0.1:1", rpc=p1.rpc)
    assert out.returncode == 1
    assert ("Failed to join 127.0.0.1: dial tcp 127.0.0.1:1: connect: connection refused"
            in out.stdout)

    wait_until(lambda: len(members("serf", p1.rpc)) == 2, 10, what="two members")
    text = run_cli("serf", "members", "-status=alive", "-tag", "role=web", rpc=p1.rpc).stdout
    assert text.split() == ["p1", f"{p1.ip}:7946", "alive", "role=web"]
    detailed = run_cli("serf", "members", "-detailed", "-name=p2", rpc=p1.rpc).stdout
    assert "Protocol Version: 5  Available Protocol Range: [2, 5]" in detailed

    info = run_cli("serf", "info", "-format=json", rpc=p1.rpc)
    assert info.returncode == 0
    data = json.loads(info.stdout)
    assert data["agent"] == {"name": "p1"}
    assert data["serf"]["members"] == "2" and data["serf"]["encrypted"] == "false"
    assert data["tags"] == {"role": "web"}
    assert data["event_handlers"] == {"user:deploy": "true"}

    out = run_cli("serf", "event", "deploy", "v2", rpc=p1.rpc)
    assert out.returncode == 0
    assert out.stdout.strip() == "Event 'deploy' dispatched! Coalescing enabled: true"
    out = run_cli("serf", "event", "big", "x" * 600, rpc=p1.rpc)
    assert out.returncode == 1
    assert ("user event exceeds configured limit of 512 bytes before encoding"
            in out.stdout + out.stderr)

    out = run_cli("serf", "leave", rpc=p2.rpc)
    assert out.returncode == 0 and "Graceful leave complete" in out.stdout
    assert p2.proc.wait(10) == 0
    wait_until(lambda: _member("serf", p1.rpc, "p2")[1] == "left", 10, what="p2 left")


def test_force_leave_and_prune(cluster):
    p1 = cluster.start("pyserf", "p1")
    p2 = cluster.start("pyserf", "p2", f"-join={p1.ip}")
    wait_until(lambda: _member("pyserf", p1.rpc, "p2")[1] == "alive", 10,
               what="p2 alive")
    p2.proc.kill()
    wait_until(lambda: _member("pyserf", p1.rpc, "p2")[1] == "failed", 30, what="p2 failed")
    out = run_cli("pyserf", "force-leave", "p2", rpc=p1.rpc)
    assert (out.returncode, out.stdout) == (0, "")
    wait_until(lambda: _member("pyserf", p1.rpc, "p2")[1] == "left", 10, what="p2 left")
    out = run_cli("pyserf", "force-leave", "-prune", "p2", rpc=p1.rpc)
    assert out.returncode == 0
    # p1 lists itself whenever it answers: an empty answer is no answer, not "pruned".
    wait_until(lambda: (view := members("pyserf", p1.rpc)) and "p2" not in view, 10,
               what="p2 pruned")
    # Unknown names are not an error, as in serf.
    assert run_cli("pyserf", "force-leave", "nosuch", rpc=p1.rpc).returncode == 0


def test_sighup_reloads_tags_and_peers_see_the_update(cluster, tmp_path, need_serf):
    config = tmp_path / "p1.json"
    config.write_text(json.dumps({"tags": {"role": "web"}}))
    s1 = cluster.start("serf", "s1")
    p1 = cluster.start("pyserf", "p1", f"-config-file={config}", f"-join={s1.ip}")
    wait_until(lambda: _member("serf", s1.rpc, "p1")[2] == {"role": "web"}, 10,
               what="serf sees p1's tags")
    config.write_text(json.dumps({"tags": {"role": "db", "dc": "east"}}))
    p1.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _member("serf", s1.rpc, "p1")[2] == {"role": "db", "dc": "east"}, 10,
               what="serf sees the reloaded tags")
    assert "Reloading configuration..." in p1.log()
    assert p1.alive()


def test_sigterm_exits_without_leaving(cluster):
    p1 = cluster.start("pyserf", "p1")
    p2 = cluster.start("pyserf", "p2", f"-join={p1.ip}")
    wait_until(lambda: len(members("pyserf", p1.rpc)) == 2, 10, what="joined")
    assert cluster.stop(p2, signal.SIGTERM) == 1
    assert "Caught signal: terminated" in p2.log()
    wait_until(lambda: _member("pyserf", p1.rpc, "p2")[1] == "failed", 30, what="p2 failed")


def test_rpc_auth(cluster, tmp_path, need_serf):
    config = tmp_path / "auth.json"
    config.write_text(json.dumps({"rpc_auth": "s3cret"}))
    p1 = cluster.start("pyserf", "p1", f"-config-file={config}")
    out = run_cli("serf", "members", rpc=p1.rpc)
    assert out.returncode == 1 and "Authentication required" in out.stdout
    out = run_cli("serf", "members", "-rpc-auth=wrong", rpc=p1.rpc)
    assert out.returncode == 1 and "Invalid authentication token" in out.stdout
    out = run_cli("serf", "members", "-rpc-auth=s3cret", rpc=p1.rpc)
    assert out.returncode == 0 and out.stdout.startswith("p1 ")
    out = run_cli("pyserf", "members", rpc=p1.rpc, env={"SERF_RPC_AUTH": "s3cret"})
    assert out.returncode == 0 and out.stdout.startswith("p1 ")


def test_bad_config_exits_1_naming_the_key(cluster, tmp_path):
    """serf's mapstructure texts name the key at fault; the agent prints them and nothing
    else, and -config-check (pyserf's) prints the same."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tags": {"a": 1}}))
    agent = cluster.start("pyserf", "p1", f"-config-file={bad}", wait=False)
    assert agent.proc.wait(15) == 1
    assert agent.log() == (f"==> Error decoding '{bad}': 1 error(s) decoding:\n\n* 'tags[a]' "
                           "expected type 'string', got unconvertible type 'float64', value: "
                           "'1'\n")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"nodename": "x"}))
    out = run_cli("pyserf", "agent", f"-config-file={unknown}", "-config-check")
    assert (out.returncode, out.stdout, out.stderr) == (
        1, f"==> Error decoding '{unknown}': 1 error(s) decoding:\n\n* '' has invalid keys: "
           "nodename\n", "")


def test_tags_file_is_restored_and_rewritten(cluster, tmp_path):
    tags_file = tmp_path / "tags.json"
    tags_file.write_text(json.dumps({"role": "web"}))
    p1 = cluster.start("pyserf", "p1", f"-tags-file={tags_file}")
    assert "Restored 1 tag(s) from" in p1.log()
    assert _member("pyserf", p1.rpc, "p1")[2] == {"role": "web"}
    assert run_cli("pyserf", "tags", "-set", "v=2", rpc=p1.rpc).returncode == 0
    assert json.loads(tags_file.read_text()) == {"role": "web", "v": "2"}
    assert oct(tags_file.stat().st_mode & 0o777) == "0o600"
    # Tags in the config next to a tags file are refused, naming the key.
    clash = cluster.start("pyserf", "p2", f"-tags-file={tags_file}", "-tag", "a=b", wait=False)
    assert clash.proc.wait(15) == 1
    assert "Tags config not allowed while using tag files" in clash.log()


def test_retry_join_gives_up_after_max_attempts(cluster):
    agent = cluster.start("pyserf", "lonely", "-retry-join=127.0.0.1:1", "-retry-interval=1s",
                          "-retry-max=2", wait=False)
    assert agent.proc.wait(20) == 1
    assert "maximum retry join attempts made, exiting" in agent.log()
    assert agent.log().count("Join failed") == 2


def test_retry_join_succeeds_once_the_peer_appears(cluster):
    ip = cluster._ip()
    waiting = cluster.start("pyserf", "waiting", f"-retry-join={ip}", "-retry-interval=1s")
    cluster.start("pyserf", "late", ip=ip)
    wait_until(lambda: "late" in members("pyserf", waiting.rpc), 15, what="retry join")


def test_leave_on_terminate_and_skip_leave_on_interrupt(cluster, tmp_path):
    p1 = cluster.start("pyserf", "p1")
    term_cfg = tmp_path / "term.json"
    term_cfg.write_text(json.dumps({"leave_on_terminate": True}))
    int_cfg = tmp_path / "int.json"
    int_cfg.write_text(json.dumps({"skip_leave_on_interrupt": True}))
    p2 = cluster.start("pyserf", "p2", f"-config-file={term_cfg}", f"-join={p1.ip}")
    p3 = cluster.start("pyserf", "p3", f"-config-file={int_cfg}", f"-join={p1.ip}")
    wait_until(lambda: len(members("pyserf", p1.rpc)) == 3, 10, what="three members")
    assert cluster.stop(p2, signal.SIGTERM) == 0  # graceful despite SIGTERM
    assert cluster.stop(p3, signal.SIGINT) == 1  # no leave despite Ctrl-C
    wait_until(lambda: _member("pyserf", p1.rpc, "p2")[1] == "left", 10, what="p2 left")
    wait_until(lambda: _member("pyserf", p1.rpc, "p3")[1] == "failed", 30, what="p3 failed")


@pytest.mark.parametrize(("content", "flag", "message"), [
    ({"reconnect_interval": "abc"}, None, 'time: invalid duration "abc"'),
    ({"tags": {"a": 1}}, None, "'tags[a]' expected type 'string'"),
    ({"nodename": "x"}, None, "invalid keys: nodename"),
    (None, "-encrypt=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "==> Starting Serf agent...\n==> Failed to "
     "start the Serf agent: Error creating Serf: Failed to create memberlist: key size must be "
     "16, 24 or 32 bytes\n"),
    (None, "-protocol=9", "==> Starting Serf agent...\n==> Failed to start the Serf agent: "
     "Error creating Serf: Protocol version '9' too high. Must be in range: [2, 5]\n"),
], ids=["duration", "tag-type", "unknown-key", "key-size", "protocol"])
def test_config_errors_match_serf(tmp_path, content, flag, message, need_serf):
    """pyserf and serf refuse the same bad settings with the same output, byte for byte, and
    exit 1; the expected words are pinned too, so both cannot drift together."""
    args = []
    if content is not None:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        args.append(f"-config-file={path}")
    if flag:
        args.append(flag)
    outs = {cli: run_cli(cli, "agent", "-node=x", "-bind=127.0.0.1:0",
                         "-rpc-addr=127.0.0.1:0", *args, timeout=20)
            for cli in ("serf", "pyserf")}
    serf, mine = outs["serf"], outs["pyserf"]
    assert (mine.returncode, mine.stdout, mine.stderr) == (1, serf.stdout, serf.stderr)
    assert serf.returncode == 1
    assert message in serf.stdout


def _first_lines(argv: list[str], last: str, timeout: float = 15.0) -> list[str]:
    """The agent's stdout up to the line ``last`` (bounded by ``timeout``); then it is stopped."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=CHILD_ENV, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while last not in lines and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            line = proc.stdout.readline() if ready else ""
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        proc.kill()
        proc.wait(5)
    return lines


def test_iface_with_unspecified_bind_says_which_address(need_serf):
    """-iface=lo with -bind=0.0.0.0: both print which address of lo they bound, first."""
    outs = []
    for binary in ([SERF], PYSERF):
        ip = f"{next_subnet()}.1"
        outs.append(_first_lines([*binary, "agent", "-node=n", "-iface=lo", "-bind=0.0.0.0:0",
                                  f"-rpc-addr={ip}:7373"], "==> Serf agent running!"))
    expected = ["==> Using interface 'lo' address '127.0.0.1'", "==> Starting Serf agent...",
                "==> Starting Serf agent RPC...", "==> Serf agent running!"]
    assert outs == [expected, expected]


def test_agent_on_the_pure_python_codec_warns_and_still_gossips_with_both(
        cluster, monkeypatch, need_serf):
    """Without the compiled LZW codec (not built, or PYSERF_PURE_LZW set) an agent says so at
    start, and its compressed push-pulls and datagrams still interoperate with a pyserf agent on
    the compiled codec and with real serf, both ways."""
    from tests.e2e import harness

    warning = "LZW runs in pure Python"
    compiled = cluster.start("pyserf", "compiled")
    monkeypatch.setattr(harness, "CHILD_ENV", {**CHILD_ENV, "PYSERF_PURE_LZW": "1"})
    pure = cluster.start("pyserf", "pure", f"-join={compiled.ip}")
    monkeypatch.setattr(harness, "CHILD_ENV", CHILD_ENV)
    real = cluster.start("serf", "real", f"-join={pure.ip}")
    for agent in (compiled, pure, real):
        wait_until(lambda a=agent: sorted(s for _, s, _ in members(a.kind, a.rpc).values())
                   == ["alive"] * 3, 20, what=f"{agent.name} to list all three alive")
    assert warning in pure.log()
    assert warning not in compiled.log(), "the compiled codec is not built"
    # A tag update travels as a gossiped datagram big enough to be compressed.
    tag = "x" * 300
    assert run_cli("serf", "tags", f"-set=big={tag}", rpc=real.rpc).returncode == 0
    for agent in (compiled, pure):
        wait_until(lambda a=agent: _member("pyserf", a.rpc, "real")[2].get("big") == tag, 15,
                   what=f"{agent.name} to see real's new tag")
