"""pyserf.cluster.members: ansible-inventory against a live mixed cluster (pyserf + serf agents
on 127.x), through the collection as built and installed from this repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible_collection import ansible_env, ansible_tool, build_and_install
from tests.e2e.harness import statuses, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    ansible_tool("ansible-inventory") is None,
    reason="ansible-core is not installed (scripts/bootstrap --lab)")]

TOKEN = "inventory-test-token"


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("collection")
    return tmp, build_and_install(tmp)[1]


def source(tmp: Path, label: str, **options) -> Path:
    """A members.yml source file with these options and the test's group rules."""
    data = {"plugin": "pyserf.cluster.members",
            "keyed_groups": [{"key": "serf_tags.role", "prefix": "role"},
                             {"key": "serf_status", "prefix": "status"}],
            "groups": {"europe": "serf_tags.dc | default('') == 'eu'"},
            "compose": {"serf_dc": "serf_tags.dc | default('none')"},
            **options}
    path = tmp / f"{label}.members.yml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def inventory(env_tmp: tuple[Path, Path], src: Path, *args: str) -> subprocess.CompletedProcess:
    tmp, collections = env_tmp
    return subprocess.run([ansible_tool("ansible-inventory"), "-i", str(src), *args],
                          capture_output=True, text=True, env=ansible_env(tmp, collections),
                          cwd=src.parent, timeout=120, check=False)


def plain(value):
    """ansible-inventory's JSON with the unsafe markers (network data) taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def listing(env_tmp, src: Path) -> dict:
    res = inventory(env_tmp, src, "--list")
    assert res.returncode == 0, res.stdout + res.stderr
    return plain(json.loads(res.stdout))


def group_hosts(data: dict, group: str) -> set[str]:
    return set(data.get(group, {}).get("hosts", []))


@pytest.fixture
def mixed(cluster, need_serf, tmp_path):
    auth = tmp_path / "rpc-auth.json"  # serf sets rpc_auth only from a config file
    auth.write_text(json.dumps({"rpc_auth": TOKEN}))
    p1 = cluster.start("pyserf", "p1", "-tag", "role=web", "-tag", "dc=eu")
    p2 = cluster.start("pyserf", "p2", "-tag", "role=db", "-tag", "dc=eu", f"-join={p1.bind}")
    s1 = cluster.start("serf", "s1", "-tag", "role=web", "-tag", "dc=us",
                       f"-config-file={auth}", f"-join={p1.bind}")
    s2 = cluster.start("serf", "s2", "-tag", "role=cache", f"-join={p1.bind}")
    agents = {a.name: a for a in (p1, p2, s1, s2)}
    wait_until(lambda: all(set(statuses(a.rpc).values()) == {"alive"}
                           and len(statuses(a.rpc)) == 4 for a in (p1, p2, s2)),
               20, what="the four agents to see each other alive")
    return agents


def test_groups_and_vars_from_a_pyserf_and_a_serf_agent(mixed, collections, tmp_path):
    p1, s1 = mixed["p1"], mixed["s1"]
    for label, src in [
            ("pyserf", source(tmp_path, "via-pyserf", rpc_addr=p1.rpc)),
            ("serf", source(tmp_path, "via-serf", rpc_addr=s1.rpc, rpc_auth=TOKEN))]:
        data = listing(collections, src)
        assert group_hosts(data, "role_web") == {"p1", "s1"}, label
        assert group_hosts(data, "role_db") == {"p2"}, label
        assert group_hosts(data, "role_cache") == {"s2"}, label
        assert group_hosts(data, "status_alive") == {"p1", "p2", "s1", "s2"}, label
        assert group_hosts(data, "europe") == {"p1", "p2"}, label
        hostvars = data["_meta"]["hostvars"]
        for name, agent in mixed.items():
            v = hostvars[name]
            assert v["ansible_host"] == agent.ip and v["serf_port"] == agent.port, (label, v)
            assert v["serf_status"] == "alive" and v["serf_protocol"] >= 2, (label, v)
        assert hostvars["s1"]["serf_tags"] == {"role": "web", "dc": "us"}
        assert hostvars["s2"]["serf_dc"] == "none" and hostvars["p2"]["serf_dc"] == "eu"

    # the form an operator reads: --graph --vars
    res = inventory(collections, source(tmp_path, "graph", rpc_addr=p1.rpc), "--graph", "--vars")
    assert res.returncode == 0, res.stderr
    assert "@role_web:" in res.stdout and "@europe:" in res.stdout, res.stdout
    assert f"{{ansible_host = {p1.ip}}}" in res.stdout, res.stdout
    assert "{serf_status = alive}" in res.stdout, res.stdout


def test_filters_are_anchored_re2_applied_by_the_agent(mixed, collections, tmp_path):
    p1, s1 = mixed["p1"], mixed["s1"]
    web = listing(collections, source(tmp_path, "web", rpc_addr=p1.rpc, tags={"role": "web"}))
    assert set(web["_meta"]["hostvars"]) == {"p1", "s1"}
    # anchored: "we" alone matches no role; an RE2 class and alternation work on both agents
    for rpc, auth in [(p1.rpc, ""), (s1.rpc, TOKEN)]:
        none = listing(collections, source(tmp_path, "we", rpc_addr=rpc, rpc_auth=auth,
                                           tags={"role": "we"}))
        assert none["_meta"]["hostvars"] == {}
        some = listing(collections, source(tmp_path, "re2", rpc_addr=rpc, rpc_auth=auth,
                                           name="[ps][12]", tags={"role": "web|cache"}))
        assert set(some["_meta"]["hostvars"]) == {"p1", "s1", "s2"}


def test_wrong_token_or_dead_agent_fails_clearly(mixed, collections, tmp_path):
    res = inventory(collections, source(tmp_path, "badauth", rpc_addr=mixed["s1"].rpc,
                                        rpc_auth="wrong"), "--list")
    assert "pyserf.cluster.members" in res.stderr and "Invalid authentication token" in \
        res.stderr, res.stderr
    res = inventory(collections, source(tmp_path, "nobody", rpc_addr="127.0.0.1:1"), "--list")
    assert "cannot connect to the agent's RPC at 127.0.0.1:1" in res.stderr, res.stderr


def test_cached_inventory_answers_while_the_agent_is_down(mixed, collections, tmp_path, cluster):
    p2 = mixed["p2"]
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile",
             "cache_connection": str(tmp_path / "cache"), "cache_timeout": 3600}
    src = source(tmp_path, "cached", rpc_addr=p2.rpc, **cache)
    first = listing(collections, src)
    assert len(first["_meta"]["hostvars"]) == 4
    assert cluster.stop(p2) == 0
    assert listing(collections, src)["_meta"]["hostvars"] == first["_meta"]["hostvars"]
    res = inventory(collections, src, "--list", "--flush-cache")
    assert res.returncode != 0 or "cannot connect" in res.stderr, res.stdout


def test_playbook_targets_a_tag_group(mixed, collections, tmp_path):
    out = tmp_path / "ran"
    out.mkdir()
    (tmp_path / "play.yml").write_text(f"""
- name: Every web server, wherever it runs
  hosts: role_web
  connection: local
  gather_facts: false
  tasks:
    - name: Record which host ran, and its member data
      ansible.builtin.copy:
        content: "{{{{ ansible_host }}}} {{{{ serf_tags.dc }}}} {{{{ serf_status }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}"
        mode: "0644"
""")
    tmp, collections_path = collections
    src = source(tmp_path, "play", rpc_addr=mixed["p1"].rpc)
    res = subprocess.run([ansible_tool("ansible-playbook"), "-i", str(src), "play.yml"],
                         capture_output=True, text=True, env=ansible_env(tmp, collections_path),
                         cwd=tmp_path, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["p1", "s1"]
    assert (out / "s1").read_text() == f"{mixed['s1'].ip} us alive"


def test_member_names_that_are_not_host_names_are_skipped(cluster, need_serf, collections,
                                                         tmp_path):
    p1 = cluster.start("pyserf", "p1")
    cluster.start("serf", "evil {{ lookup('env', 'HOME') }}", f"-join={p1.bind}")
    wait_until(lambda: len(statuses(p1.rpc)) == 2, 20, what="the second member")
    res = inventory(collections, source(tmp_path, "evil", rpc_addr=p1.rpc), "--list")
    assert res.returncode == 0, res.stderr
    assert set(plain(json.loads(res.stdout))["_meta"]["hostvars"]) == {"p1"}
    assert "skipping member \"evil {{ lookup(" in " ".join(res.stderr.split()), res.stderr


NO_PYSERF = """
import importlib.abc, importlib.util, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyserf" or name.startswith("pyserf."):
            raise ImportError("pyserf is not installed on this controller")

sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("serf_rpc", sys.argv[1])
serf_rpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serf_rpc)
with serf_rpc.SerfRPC(sys.argv[2], sys.argv[3]) as rpc:
    print(json.dumps(rpc.members_filtered(tags={"role": "web"})))
print(sorted(m for m in sys.modules if m.startswith("pyserf")))
"""


def test_rpc_client_needs_no_pyserf_on_the_controller(mixed):
    """The plugin's client, with every pyserf import refused, talks to both kinds of agent."""
    client = Path(__file__).resolve().parents[2] / "plugins/module_utils/serf_rpc.py"
    for agent, auth in [(mixed["p1"], ""), (mixed["s1"], TOKEN)]:
        res = subprocess.run([sys.executable, "-c", NO_PYSERF, str(client), agent.rpc, auth],
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        found, imported = res.stdout.splitlines()
        assert sorted(m["name"] for m in json.loads(found)) == ["p1", "s1"]
        assert imported == "[]"
