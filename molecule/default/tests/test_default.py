"""Verify the pyserf role on every molecule instance (pytest-testinfra over SSH).

testinfra runs every test against one host before moving on to the next, so the kill -9 test
(last in this file) waits until the whole cluster is back before the next host's checks run.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

PORT = 7946
PYSERF = "pyserf"  # on PATH (/usr/local/bin/pyserf), as an operator types it
CONFIG = "/etc/pyserf/config.json"
REJOIN_TIMEOUT = 60  # seconds: kill -9 -> restarted -> every agent sees all alive again
RULES_FILE = "/etc/iptables/rules.v4"
RESTORE_UNIT = "pyserf-iptables-restore.service"
# With 3 members the suspicion timeout is SuspicionMult(4) * max(1, log10(3)) * ProbeInterval(1 s)
# = 4 s after the failed probe (at most ~1 s + the 0.5 s probe timeout): a peer marks a silent
# node failed about 5.5 s after it stops. Wait up to 4x that on these busy containers.
FAILED_TIMEOUT = 22
# While checking that peers notice a crash, hold systemd's restart back this long (RestartSec),
# well past FAILED_TIMEOUT.
HELD_RESTART_SEC = 30

# node1's HTTP listener (molecule.yml host_vars)
HTTP_HOST = "node1"
HTTP_ADDR = "127.0.0.1:8500"
HTTP_TOKEN = "molecule-http-token"
HTTP_START_TIMEOUT = 20  # seconds: the role waits for the RPC; the listener may follow it

SCENARIO = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

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


def test_pyserf_on_path_for_every_login(host):
    """A plain `pyserf` works over ssh (how every check in this file runs it) and in any
    user's login shell: /usr/local/bin/pyserf points into the venv."""
    link = host.file("/usr/local/bin/pyserf")
    assert link.is_symlink and link.linked_to == "/opt/pyserf/venv/bin/pyserf"
    res = host.run("runuser -u nobody -- sh -lc 'command -v pyserf && pyserf members'")
    assert res.rc == 0, res.stderr
    assert res.stdout.splitlines()[0] == "/usr/local/bin/pyserf"
    assert host.backend.get_hostname() in res.stdout


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_gossip_port_listening(host, proto):
    listening = host.socket.get_listening_sockets()
    assert any(s.startswith(f"{proto}://") and s.endswith(f":{PORT}") for s in listening), listening


def gossip_rules(host) -> dict[str, str]:
    """The live INPUT rules the role added, by protocol."""
    pattern = re.compile(
        rf"^-A INPUT .*-p (tcp|udp) .*--dport {PORT} .*--comment \"pyserf gossip\" .*-j ACCEPT$"
    )
    return {m[1]: m[0] for r in host.iptables.rules("filter", "INPUT") if (m := pattern.match(r))}


def gossip_rule_packets(host) -> dict[str, int]:
    """Packets each gossip rule has matched so far, by protocol (iptables-save's counters)."""
    pattern = re.compile(
        rf"^\[(\d+):\d+\] -A INPUT .*-p (tcp|udp) .*--dport {PORT} .*pyserf gossip")
    return {m[2]: int(m[1]) for line in host.check_output("iptables-save -c").splitlines()
            if (m := pattern.match(line))}


def member_addrs(host) -> dict[str, str]:
    """Member name -> IP address, as this host's agent lists them."""
    return {m["name"]: m["addr"].rsplit(":", 1)[0] for m in json.loads(
        host.check_output(f"{PYSERF} members -format=json"))["members"]}


def test_firewall_rules_match_real_gossip(host):
    """Both ACCEPT rules exist and real cluster traffic goes through them: the INPUT policy is
    ACCEPT in these containers, so only the counters show the rules match gossip."""
    assert set(gossip_rules(host)) == {"tcp", "udp"}
    assert wait_all_alive(host, 30) is not None
    before = gossip_rule_packets(host)
    me = host.backend.get_hostname()
    my_addr = member_addrs(host)[me]
    for peer in NODES:  # a join is a TCP push-pull to the gossip port of the host joined
        if peer != me:
            assert RUNNER.get_host(peer).run(f"{PYSERF} join {my_addr}:{PORT}").rc == 0
    deadline = time.monotonic() + 10
    while True:  # probes arrive over UDP every second
        after = gossip_rule_packets(host)
        if all(after.get(p, 0) > before.get(p, 0) for p in ("tcp", "udp")) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(after.get(p, 0) > before.get(p, 0) for p in ("tcp", "udp")), (before, after)


def test_firewall_rules_persist(host):
    """rules.v4 holds the rules and the restore unit puts them back after they are lost."""
    saved = host.file(RULES_FILE)
    assert saved.is_file and saved.user == "root"
    for proto in ("tcp", "udp"):
        assert re.search(rf"^-A INPUT .*-p {proto} .*--dport {PORT} .*-j ACCEPT$",
                         saved.content_string, re.M), saved.content_string
    assert host.service(RESTORE_UNIT).is_enabled
    for rule in gossip_rules(host).values():  # lose the live rules, as a reboot would
        host.check_output(f"iptables {rule.replace('-A INPUT', '-D INPUT', 1)}")
    assert gossip_rules(host) == {}
    assert host.run(f"systemctl restart {RESTORE_UNIT}").rc == 0
    assert set(gossip_rules(host)) == {"tcp", "udp"}


def run_role_verify(*args: str) -> subprocess.CompletedProcess[str]:
    """The role's cluster check (tasks_from: verify, as playbooks/site.yml's last play runs it)
    through verify.yml, with molecule's inventory and ansible.cfg (ANSIBLE_CONFIG)."""
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(SCENARIO / "verify.yml"), *args],
        capture_output=True, text=True, timeout=300, check=False)


def test_role_verify_sees_every_host_alive():
    res = run_role_verify()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    recap = {m[1]: m[2] for m in re.finditer(r"^(\S+)\s+: ok=(\d+) .*failed=0", res.stdout, re.M)}
    assert set(recap) == set(NODES) and all(int(ok) > 0 for ok in recap.values()), out[-4000:]


def test_role_verify_names_a_host_that_is_down():
    """The same check fails, naming the host, when one agent has left the cluster."""
    down, observer = NODES[-1], NODES[0]
    RUNNER.get_host(down).check_output("systemctl stop pyserf")  # SIGINT: a graceful leave
    try:
        res = run_role_verify("--limit", observer, "-e", "pyserf_verify_retries=3")
    finally:
        RUNNER.get_host(down).check_output("systemctl start pyserf")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-4000:]
    assert f"{observer}: after 3 retries, pyserf members does not list as alive: {down}" in out, \
        out[-4000:]
    for name in NODES:
        seen = wait_all_alive(RUNNER.get_host(name), REJOIN_TIMEOUT)
        assert seen is not None and set(NODES) <= seen, (name, seen)


EVENTS_LOG = "/var/lib/pyserf/member-events.log"
SCRIPT = "/etc/pyserf/handlers/record-member-events.sh"


def test_handler_script_deployed_and_ran_on_member_events(host, cfg):
    """The role installed the script from pyserf_handler_scripts, the config references it, and
    the agent ran it for the join of every member of the cluster."""
    script = host.file(SCRIPT)
    assert script.is_file and script.user == "root" and script.group == "pyserf"
    assert script.mode == 0o750, oct(script.mode)
    assert cfg["event_handlers"] == [f"member-join,member-leave,member-failed={SCRIPT}"]
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while not set(NODES) <= seen and time.monotonic() < deadline:
        log = host.run(f"cat {EVENTS_LOG}").stdout
        seen = {line.split()[1] for line in log.splitlines() if line.startswith("member-join ")}
        time.sleep(0.5)
    assert set(NODES) <= seen, log


def hosts_block(h) -> list[str]:
    text = h.file("/etc/hosts").content_string
    inner = text.split("# BEGIN pyserf hosts_file", 1)[1].split("# END pyserf hosts_file")[0]
    return [line.split() for line in inner.splitlines()[1:] if line]


def test_etc_hosts_kept_by_the_agent(host):
    """/etc/hosts is a link into the agent's directory, keeps the container's own lines and
    has one line per member with its .lan alias; the resolver answers with it."""
    link = host.file("/etc/hosts")
    assert link.is_symlink and link.linked_to == "/var/lib/pyserf-hosts/hosts"
    assert "localhost" in link.content_string  # the lines the file had before
    addrs = member_addrs(host)
    deadline = time.monotonic() + 20
    while (block := hosts_block(host)) != [[addrs[n], n, f"{n}.lan"] for n in NODES] \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert block == [[addrs[n], n, f"{n}.lan"] for n in NODES], block
    other = next(n for n in NODES if n != host.backend.get_hostname())
    res = host.run(f"runuser -u nobody -- getent hosts {other}.lan")
    assert res.rc == 0 and res.stdout.split()[0] == addrs[other], res.stdout + res.stderr


def test_cluster_encrypted(host, cfg):
    assert cfg.get("encrypt_key")
    res = host.run(f"{PYSERF} info -format=json")
    assert res.rc == 0, res.stderr
    assert str(json.loads(res.stdout)["serf"]["encrypted"]).lower() == "true"
    text = host.run(f"{PYSERF} info").stdout
    assert re.search(r"^\s*encrypted = true$", text, re.M), text


TRY_JOIN_LIMIT = 6  # seconds a throwaway agent may take to join before it is interrupted


def try_join(host, cfg, *key_args: str) -> tuple[int, str]:
    """Start a throwaway agent on a spare port of this host that joins another host: it exits
    at once if its start-up join fails, else leaves when interrupted (SIGINT: a graceful leave)
    as soon as it reports the join, or after TRY_JOIN_LIMIT seconds."""
    me = host.backend.get_hostname()
    addrs = member_addrs(host)
    ip, peer_ip = addrs[me], next(a for n, a in addrs.items() if n in NODES and n != me)
    agent = (f"{PYSERF} agent -node=probe-{me} -bind={ip}:7999 -rpc-addr=127.0.0.1:7998 "
             f"-join={peer_ip}:{PORT} {' '.join(key_args)}")
    # Polls the agent's output rather than sleeping a fixed time: saves ~5 s per call.
    script = (
        f'out=$(mktemp); {agent} >"$out" 2>&1 & pid=$!; '
        f"i=0; while [ $i -lt {TRY_JOIN_LIMIT * 10} ] && kill -0 $pid 2>/dev/null "
        '&& ! grep -q "Join completed" "$out"; do sleep 0.1; i=$((i + 1)); done; '
        'kill -INT $pid 2>/dev/null; wait $pid; rc=$?; cat "$out"; rm -f "$out"; exit $rc')
    res = host.run(f"bash -c {shlex.quote(script)}")
    return res.rc, res.stdout + res.stderr


def test_gossip_needs_the_key(host, cfg):
    """The cluster's gossip is really encrypted: an agent without the key cannot join it, and
    the same agent with the key can (so the refusal is about the key, not the network)."""
    rc, out = try_join(host, cfg)
    assert rc == 1 and "Remote state is encrypted and encryption is not configured" in out, out
    rc, out = try_join(host, cfg, f"-encrypt={cfg['encrypt_key']}")
    assert "Join completed. Synced with 1 initial agents" in out, out


def peer_status(name: str, about: str) -> str | None:
    res = RUNNER.get_host(name).run(f"{PYSERF} members -format=json -name={about}")
    if res.rc != 0:
        return None
    found = [m["status"] for m in json.loads(res.stdout)["members"] if m["name"] == about]
    return found[0] if found else None


def wait_status(peers: list[str], about: str, status: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        seen = {p: peer_status(p, about) for p in peers}
        if all(s == status for s in seen.values()) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def test_kill_9_peers_notice_then_restart_and_rejoin(host):
    """kill -9: the peers declare the node failed (the restart is held back long enough for
    that), then systemd restarts it and every agent sees all three alive again."""
    me = host.backend.get_hostname()
    peers = [n for n in NODES if n != me]
    dropin = "/run/systemd/system/pyserf.service.d"
    host.check_output(f"mkdir -p {dropin} && printf '[Service]\\nRestartSec={HELD_RESTART_SEC}\\n'"
                      f" > {dropin}/hold.conf && systemctl daemon-reload")
    try:
        pid_before = unit_prop(host, "MainPID")
        restarts_before = int(unit_prop(host, "NRestarts"))
        assert pid_before not in ("", "0")
        assert host.run(f"kill -9 {pid_before}").rc == 0
        seen = wait_status(peers, me, "failed", FAILED_TIMEOUT)
        assert set(seen.values()) == {"failed"}, seen
    finally:
        host.run(f"rm -f {dropin}/hold.conf && systemctl daemon-reload")
    # A restart queued with the old RestartSec still waits for it; start it now instead.
    host.run("systemctl start pyserf")
    deadline = time.monotonic() + 30
    while True:
        pid, state = unit_prop(host, "MainPID"), unit_prop(host, "ActiveState")
        if pid not in ("0", pid_before) and state == "active" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert pid not in ("0", pid_before), (pid_before, pid, state)
    assert state == "active"
    assert int(unit_prop(host, "NRestarts")) >= restarts_before

    # the new process rejoins: it sees all three alive, and so does every other agent
    seen = wait_all_alive(host, REJOIN_TIMEOUT)
    assert seen is not None and set(NODES) <= seen, seen
    for name in NODES:
        seen = wait_all_alive(RUNNER.get_host(name), REJOIN_TIMEOUT)
        assert seen is not None and set(NODES) <= seen, (name, seen)


def test_crash_restart_is_automatic(host):
    """Without the hold, systemd restarts a crashed agent by itself (Restart=on-failure)."""
    pid_before = unit_prop(host, "MainPID")
    restarts_before = int(unit_prop(host, "NRestarts"))
    assert host.run(f"kill -9 {pid_before}").rc == 0
    deadline = time.monotonic() + 30
    while True:  # RestartSec=1
        pid, state = unit_prop(host, "MainPID"), unit_prop(host, "ActiveState")
        if pid not in ("0", pid_before) and state == "active" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (pid, state) != (pid_before, "active") and state == "active", (pid_before, pid, state)
    assert int(unit_prop(host, "NRestarts")) == restarts_before + 1
    for name in NODES:
        seen = wait_all_alive(RUNNER.get_host(name), REJOIN_TIMEOUT)
        assert seen is not None and set(NODES) <= seen, (name, seen)


def http_get(h, url: str, token: str = "") -> tuple[int, str]:
    """(status, body) of a GET from inside host h (curl is not in the image: python3 is);
    status 0 when nothing answers."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1])\n"
        "if sys.argv[2]: req.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=5)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
        "except OSError:\n"
        "    print(0)\n")
    res = h.run(f"python3 -c {shlex.quote(script)} {shlex.quote(url)} {shlex.quote(token)}")
    status, _, body = res.stdout.partition("\n")
    return int(status or 0), body


def test_http_api_members_on_one_host():
    """node1 serves /v1/agent/members listing every molecule host alive with Consul's keys;
    without the token it answers 401; the other hosts have no listener."""
    h = RUNNER.get_host(HTTP_HOST)
    url = f"http://{HTTP_ADDR}/v1/agent/members"
    deadline = time.monotonic() + HTTP_START_TIMEOUT
    while True:
        status, body = http_get(h, url, HTTP_TOKEN)
        alive = ({m["Name"] for m in json.loads(body) if m["Status"] == "alive"}
                 if status == 200 else set())
        if set(NODES) <= alive or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, (status, body)
    assert alive == set(NODES), body
    assert {"Name", "Addr", "Port", "Tags", "Status"} <= set(json.loads(body)[0])
    assert http_get(h, url)[0] == 401
    for other in set(NODES) - {HTTP_HOST}:
        assert http_get(RUNNER.get_host(other), url, HTTP_TOKEN)[0] == 0, other


def test_http_metrics_on_the_listener_host():
    """The role's agent serves /metrics through prometheus-client (the http extra installs
    it): open without the token (pyserf_http_metrics_auth is false by default), with serf's
    metric names and the process collector's."""
    h = RUNNER.get_host(HTTP_HOST)
    url = f"http://{HTTP_ADDR}/metrics"
    deadline = time.monotonic() + HTTP_START_TIMEOUT
    while True:
        status, body = http_get(h, url)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, (status, body[:500])
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines()
             if line and not line.startswith("#")}
    assert any(n.startswith("serf_agent_memberlist_") for n in names), sorted(names)[:40]
    assert "process_resident_memory_bytes" in names, sorted(names)[:40]
