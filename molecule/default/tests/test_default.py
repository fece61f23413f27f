"""Verify the pyserf role on every molecule instance (pytest-testinfra over SSH).

testinfra runs every test against one host before moving on to the next, so the kill -9 test
(last in this file) waits until the whole cluster is back before the next host's checks run.
"""

import json
import os
import re
import time

import pytest
import testinfra.utils.ansible_runner

PORT = 7946
PYSERF = "/opt/pyserf/venv/bin/pyserf"
CONFIG = "/etc/pyserf/config.json"
REJOIN_TIMEOUT = 60  # seconds: kill -9 -> restarted -> every agent sees all alive again

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
NODES = sorted(RUNNER.get_hosts("pyserf"))


@pytest.fixture(scope="module")
def cfg(host):
    return json.loads(host.file(CONFIG).content_string)


def alive_members(h) -> set[str] | None:
    """Names this host's agent lists as alive, or None if its RPC does not answer."""
    res = h.run(f"{PYSERF} members -format=json")
    if res.rc != 0:
        return None
    return {m["name"] for m in json.loads(res.stdout)["members"] if m["status"] == "alive"}


def wait_all_alive(h, timeout: float) -> set[str] | None:
    deadline = time.monotonic() + timeout
    while True:
        seen = alive_members(h)
        if seen is not None and set(NODES) <= seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def unit_prop(host, prop: str) -> str:
    return host.run(f"systemctl show -p {prop} --value pyserf").stdout.strip()


def test_three_instances():
    assert len(NODES) == 3, NODES


def test_service_enabled_running_supervised(host):
    svc = host.service("pyserf")
    assert svc.is_enabled
    assert svc.is_running
    assert unit_prop(host, "Restart") == "on-failure"
    assert unit_prop(host, "User") == "pyserf"


def test_config_file(host, cfg):
    f = host.file(CONFIG)
    assert f.is_file
    assert f.user == "root"
    assert f.group == "pyserf"
    assert f.mode & ~0o640 == 0, oct(f.mode)  # 0640 or stricter
    assert cfg["node_name"] == host.backend.get_hostname()
    assert cfg["bind"].endswith(f":{PORT}")
    assert cfg["tags"] == {"role": "molecule", "dc": "lab"}
    assert cfg["rpc_addr"] == "127.0.0.1:7373"
    # retry_join: the first three hosts of the group, minus this one
    assert len(cfg["retry_join"]) == 2


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_gossip_port_listening(host, proto):
    listening = host.socket.get_listening_sockets()
    assert any(s.startswith(f"{proto}://") and s.endswith(f":{PORT}") for s in listening), listening


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_firewall_accepts_gossip(host, proto):
    rules = host.iptables.rules("filter", "INPUT")
    pattern = re.compile(
        rf"^-A INPUT .*-p {proto} .*--dport {PORT} .*--comment \"pyserf gossip\" .*-j ACCEPT$"
    )
    assert any(pattern.match(r) for r in rules), rules


def test_members_all_alive(host):
    seen = wait_all_alive(host, 30)
    assert seen is not None and set(NODES) <= seen, seen


def test_cluster_encrypted(host, cfg):
    assert cfg.get("encrypt_key")
    res = host.run(f"{PYSERF} info -format=json")
    assert res.rc == 0, res.stderr
    assert str(json.loads(res.stdout)["serf"]["encrypted"]).lower() == "true"
    text = host.run(f"{PYSERF} info").stdout
    assert re.search(r"^\s*encrypted = true$", text, re.M), text


def test_kill_9_restarts_and_rejoins(host):
    pid_before = unit_prop(host, "MainPID")
    restarts_before = int(unit_prop(host, "NRestarts"))
    assert pid_before not in ("", "0")
    assert host.run(f"kill -9 {pid_before}").rc == 0

    deadline = time.monotonic() + 30
    while True:  # systemd notices the crash and restarts the agent (RestartSec=1)
        pid, state = unit_prop(host, "MainPID"), unit_prop(host, "ActiveState")
        if pid not in ("0", pid_before) and state == "active" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert pid not in ("0", pid_before), (pid_before, pid, state)
    assert state == "active"
    assert int(unit_prop(host, "NRestarts")) > restarts_before

    # the new process rejoins: it sees all three alive, and so does every other agent
    seen = wait_all_alive(host, REJOIN_TIMEOUT)
    assert seen is not None and set(NODES) <= seen, seen
    for name in NODES:
        seen = wait_all_alive(RUNNER.get_host(name), REJOIN_TIMEOUT)
        assert seen is not None and set(NODES) <= seen, (name, seen)
