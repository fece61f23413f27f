"""Fleet operations on the hosts molecule created and converged, driven as an operator would.

Runs in the verify phase after test_default.py (molecule passes the files sorted), on the same
three hosts, so the lab boots and converges one set of hosts instead of two:

1. Adding a host: playbooks/site.yml (converge.yml, with the scenario's variables and its wheel
   build) re-run with a fourth host, all four in one batch, reports changed=0 on the three
   converged ones. That run is molecule's idempotence check too (the scenario has no separate
   idempotence phase), made after test_default.py's restarts, kill -9s and firewall restores.
2. A changed handler script, rolled out through the collection's role by FQCN from a directory
   outside the repository: every agent is reloaded (same PID, no restart), so the collection
   deploys exactly what site.yml deployed but the script; the next member event runs the new
   text, and putting the scenario's script back on one host reloads it again.
3. A rolling upgrade to a new wheel version never makes any member see another as failed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.ansible_collection import build_and_install  # noqa: E402

LAB_TOOL = REPO / "lab" / "nspawn-lab.sh"
LAB_DIR = Path(os.environ.get("PYSERF_LAB_DIR", "/var/lib/pyserf-lab"))
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
# The host added to the converged ones (molecule.yml's provisioner env; destroy.yml stops it)
ADDED_HOST = os.environ["PYSERF_ADDED_HOST"]
ADDED_ADDRESS = os.environ["PYSERF_ADDED_ADDRESS"]
EVENTS_LOG = "/var/lib/pyserf/member-events.log"
VENV_PYTHON = "/opt/pyserf/venv/bin/python"  # the role's default pyserf_venv
SCRIPT_NAME = "record-member-events.sh"
SCRIPT = f"/etc/pyserf/handlers/{SCRIPT_NAME}"
# The changed script still records "<event> <member>" (the upgrade test reads those), marked.
MARKER = "changed-script"
CHANGED_SCRIPT = ("#!/bin/sh\n"
                  f"# {MARKER}: the scenario's record, with a marker on every line\n"
                  "while read -r name rest; do\n"
                  f'  echo "$SERF_EVENT $name {MARKER}" >>{EVENTS_LOG}\n'
                  "done\n")
REJOIN_TIMEOUT = 60  # seconds: a restarted agent is listed alive by every agent again
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
RELOAD = r"RUNNING HANDLER \[\S*pyserf : Reload pyserf\]"
RESTART = r"RUNNING HANDLER \[\S*pyserf : Restart pyserf\]"

pytestmark = pytest.mark.timeout(1500)

# All hosts at once, not in site.yml's serial batches: the batches are there so that restarts
# never take more than one host out of the cluster, and this change must restart none (checked).
FQCN_PLAYBOOK = """
- name: Deploy pyserf with the role of the installed collection
  hosts: pyserf
  become: true
  gather_facts: false  # as in playbooks/site.yml: the role uses no facts
  roles:
    - role: pyserf.cluster.pyserf
- name: Check that every agent lists every host alive
  hosts: pyserf
  gather_facts: false
  tasks:
    - name: The role's cluster check
      ansible.builtin.include_role:
        name: pyserf.cluster.pyserf
        tasks_from: verify
"""


def build_wheels(src: Path, out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check",
                    "--quiet", *extra, "--wheel-dir", str(out), str(src)],
                   check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
                   timeout=600)


def source_copy(dest: Path, version: str) -> Path:
    """The source converge built its wheels from (create.yml's snapshot), with another
    version number."""
    shutil.copytree(EPHEMERAL / "src", dest,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    for rel, pattern in (("pyproject.toml", r'^version = "[^"]+"'),
                         ("pyserf/__init__.py", r'^__version__ = "[^"]+"')):
        path = dest / rel
        text, n = re.subn(pattern, pattern.split(" = ")[0].lstrip("^") + f' = "{version}"',
                          path.read_text(), count=1, flags=re.M)
        assert n == 1, rel
        path.write_text(text)
    return dest


class Fleet:
    """Molecule's hosts plus the ones a test adds, reached with molecule's inventory and
    ansible.cfg (the verifier's environment) and the lab's ssh_config."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        molecule_hosts = yaml.safe_load(INVENTORY.read_text())["all"]["hosts"]
        self.converged = sorted(molecule_hosts)
        self.added: list[str] = []
        self.template = molecule_hosts[self.converged[0]]  # connection vars for added hosts
        self.added_inventory = tmp / "added.yml"
        self.collections: Path | None = None

    @property
    def hosts(self) -> list[str]:
        return self.converged + self.added

    def start(self, name: str, address: str) -> None:
        subprocess.run([str(LAB_TOOL), "start", name, address], check=True, timeout=180,
                       capture_output=True)
        self.added.append(name)
        hosts = {name: {**self.template, "ansible_host": address}}
        self.added_inventory.write_text(yaml.safe_dump({"pyserf": {"hosts": hosts}}))

    def stop_added(self) -> None:
        subprocess.run([str(LAB_TOOL), "stop", ADDED_HOST], timeout=180, capture_output=True,
                       check=False)

    def playbook(self, playbook: Path, *extra: str, env: dict[str, str] | None = None
                 ) -> tuple[str, dict[str, tuple[int, int, int]]]:
        """Run ``playbook`` on every host; (output, host -> (changed, unreachable, failed)).
        Fails with the output and each agent's journal if ansible-playbook does."""
        inventories = ["-i", str(INVENTORY)]
        if self.added:
            inventories += ["-i", str(self.added_inventory)]
        res = subprocess.run([ANSIBLE_PLAYBOOK, *inventories, str(playbook), *extra],
                             cwd=playbook.parent, capture_output=True, text=True,
                             env=env, timeout=900, check=False)
        out = res.stdout + res.stderr
        if res.returncode != 0:
            journals = "".join(
                f"\n--- {name}: journalctl -u pyserf\n"
                + subprocess.run(["ssh", "-F", str(LAB_DIR / "ssh_config"), name,
                                  "journalctl -u pyserf -n 25 --no-pager"], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
                for name in self.hosts)
            raise AssertionError(out[-5000:] + journals)
        recap: dict[str, tuple[int, int, int]] = {}
        for m in RECAP.finditer(res.stdout):  # two plays: sum per host
            prev = recap.get(m[1], (0, 0, 0))
            recap[m[1]] = (prev[0] + int(m[2]), prev[1] + int(m[3]), prev[2] + int(m[4]))
        return out, recap

    def site(self, *extra: str) -> tuple[str, dict[str, tuple[int, int, int]]]:
        """playbooks/site.yml through molecule's converge.yml, as converge ran it."""
        return self.playbook(SCENARIO / "converge.yml", *extra)

    def fqcn(self, *extra: str) -> tuple[str, dict[str, tuple[int, int, int]]]:
        """The role by FQCN from the built and installed collection, run from a directory
        outside the repository that sees no roles path."""
        if self.collections is None:
            self.collections = build_and_install(self.tmp / "collection")[1]
            (self.tmp / "outside").mkdir()
            (self.tmp / "outside" / "deploy.yml").write_text(FQCN_PLAYBOOK)
        env = {k: v for k, v in os.environ.items()
               if k not in ("ANSIBLE_ROLES_PATH", "ANSIBLE_COLLECTIONS_PATH",
                            "ANSIBLE_COLLECTIONS_PATHS")}
        env.update(ANSIBLE_COLLECTIONS_PATH=str(self.collections),
                   ANSIBLE_ROLES_PATH=str(self.tmp / "no-roles"))
        return self.playbook(self.tmp / "outside" / "deploy.yml", *extra, env=env)

    def ssh(self, name: str, command: str) -> str:
        return subprocess.run(
            ["ssh", "-F", str(LAB_DIR / "ssh_config"), name, command], capture_output=True,
            text=True, timeout=60, check=True).stdout

    def alive(self, name: str) -> set[str]:
        members = json.loads(self.ssh(name, "pyserf members -format=json"))["members"]
        return {m["name"] for m in members if m["status"] == "alive"}

    def wait_all_alive(self) -> None:
        """Every agent lists every host alive (within REJOIN_TIMEOUT)."""
        deadline = time.monotonic() + REJOIN_TIMEOUT
        for name in self.hosts:
            while not set(self.hosts) <= (seen := self.alive(name)) \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            assert set(self.hosts) <= seen, (name, seen)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    f.stop_added()  # left over from an interrupted run
    try:
        yield f
    finally:
        f.stop_added()


def handler_results(out: str, handler: str) -> list[tuple[str, str]]:
    """(host, status) of every run of ``handler`` (a RUNNING HANDLER header regex) in an
    ansible-playbook output: one header per batch, then a "status: [host]" line per host."""
    return [(m[2], m[1]) for block in re.findall(handler + r" \**\n((?:\w+: \[.*\n)+)", out)
            for m in re.finditer(r"^(\w+): \[([^\]\s]+)\]", block, re.M)]


def main_pids(fleet: Fleet) -> dict[str, str]:
    return {name: fleet.ssh(name, "systemctl show -p MainPID --value pyserf").strip()
            for name in fleet.hosts}


def test_adding_a_host_changes_nothing_on_the_others(fleet: Fleet):
    converged = list(fleet.converged)
    fleet.start(ADDED_HOST, ADDED_ADDRESS)
    # All hosts in one batch (site.yml's pyserf_serial): the one-host batches converge ran are
    # there to keep restarts one host at a time, and this run must change nothing on three of
    # them (checked below) while the fourth has no agent to restart yet.
    out, recap = fleet.site("-e", f"pyserf_serial={len(fleet.hosts)}")
    assert set(recap) == set(fleet.hosts), out[-3000:]
    assert {h: recap[h] for h in converged} == {h: (0, 0, 0) for h in converged}, out[-5000:]
    assert recap[ADDED_HOST][0] > 0 and recap[ADDED_HOST][1:] == (0, 0)
    # the verify play saw four alive members from every host; and from the first host's CLI:
    members = fleet.ssh(converged[0], "pyserf members -status=alive")
    assert sorted(line.split()[0] for line in members.splitlines()) == sorted(fleet.hosts)


def test_changed_handler_script_reloads_every_agent_without_a_restart(fleet: Fleet):
    """A new text for the pyserf_handler_scripts entry, through the collection by FQCN: the
    role reloads (SIGHUP) each agent (same PID, no restart handler: the collection deploys
    the same as site.yml did but the script) and installs the new text; a member event runs
    it. site.yml's config tasks then put the scenario's script back on one host, which
    reloads it again."""
    before = main_pids(fleet)
    assert "" not in before.values() and "0" not in before.values(), before
    changed = [{"name": SCRIPT_NAME, "content": CHANGED_SCRIPT}]
    # The wheels converge built are in pyserf_wheel_dir already: rebuilding them from the
    # same source is what the add-a-host run checked, not this test.
    out, recap = fleet.fqcn("-e", json.dumps({"pyserf_handler_scripts": changed,
                                              "pyserf_build_wheels": False}))
    assert "TASK [pyserf.cluster.pyserf : Start pyserf]" in out, out[-3000:]
    assert set(recap) == set(fleet.hosts), out[-3000:]
    assert all(changed > 0 for changed, _, _ in recap.values()), recap
    assert not re.search(RESTART, out), out[-3000:]
    # the reload handler ran once on every host, and reloaded it
    reloads = handler_results(out, RELOAD)
    assert sorted(reloads) == [(h, "changed") for h in sorted(fleet.hosts)], out[-3000:]
    assert main_pids(fleet) == before
    for name in fleet.hosts:
        assert MARKER in fleet.ssh(name, f"cat {SCRIPT}"), name

    # a member event (another agent's user-visible leave and rejoin) runs the new text
    target, peer = fleet.hosts[0], fleet.hosts[1]
    fleet.ssh(peer, "systemctl restart pyserf")
    deadline = time.monotonic() + REJOIN_TIMEOUT
    while MARKER not in fleet.ssh(target, f"cat {EVENTS_LOG}") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert MARKER in fleet.ssh(target, f"cat {EVENTS_LOG}")

    # The role's config tasks alone (its pyserf_config tag), as an operator pushes a script.
    out, _ = fleet.site("--limit", target, "--tags", "pyserf_config")
    assert MARKER not in fleet.ssh(target, f"cat {SCRIPT}")
    assert handler_results(out, RELOAD) == [(target, "changed")], out[-3000:]
    assert main_pids(fleet)[target] == before[target]  # putting it back reloads again
    fleet.wait_all_alive()


# The CLI's `members -format=json` every 0.3 s in one long-lived Python per host: a new
# `pyserf` process per sample cost ~0.1 s of CPU, about a core for four hosts, taken from the
# rollout being watched. Bounded by the playbook's own timeout. A sample that raises (pip
# replaces the package under this process during the upgrade) prints nothing.
WATCH = """
import time
from pyserf.cli import main
deadline = time.monotonic() + 900
while time.monotonic() < deadline:
    try:
        main(["members", "-format=json"])
    except (Exception, SystemExit):
        pass
    print(flush=True)
    time.sleep(0.3)
"""


def watch_members(fleet: Fleet) -> list[tuple[str, subprocess.Popen]]:
    """On every host, the agent's members as `pyserf members -format=json` prints them, every
    0.3 s, streamed back over one ssh session per host (event handlers see coalesced events;
    this sees every state)."""
    loop = f"{VENV_PYTHON} -c {shlex.quote(WATCH)} 2>/dev/null"
    return [(name, subprocess.Popen(["ssh", "-F", str(LAB_DIR / "ssh_config"), name, loop],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True))
            for name in fleet.hosts]


def test_rolling_upgrade_never_shows_a_member_failed(fleet: Fleet):
    tmp = fleet.tmp
    new_wheels = tmp / "wheels-v2"
    shutil.copytree(EPHEMERAL / "dist", new_wheels,
                    ignore=shutil.ignore_patterns("pyserf-*.whl"))
    build_wheels(source_copy(tmp / "src-v2", "0.1.0.post1"), new_wheels, "--no-deps")
    for name in fleet.hosts:
        fleet.ssh(name, f": >{EVENTS_LOG}")
    watchers = watch_members(fleet)
    try:
        out, recap = fleet.site("-e", json.dumps({"pyserf_wheel_dir": str(new_wheels),
                                                  "pyserf_build_wheels": False}))
    finally:
        for _, proc in watchers:
            proc.terminate()
    seen = {name: proc.communicate(timeout=30)[0] for name, proc in watchers}
    for name, text in seen.items():
        assert text.count('"members"') > 20, (name, text[-500:])  # it really watched
        assert not re.search(r'"status":\s*"failed"', text), (name, text[-3000:])
    assert set(recap) == set(fleet.hosts), out[-3000:]
    assert all(changed > 0 and failed == 0 for changed, _, failed in recap.values()), recap
    assert out.count("RUNNING HANDLER [../roles/pyserf : Restart pyserf]") == len(fleet.hosts), \
        out[-3000:]
    logs = {name: fleet.ssh(name, f"cat {EVENTS_LOG}") for name in fleet.hosts}
    for name, log in logs.items():
        assert fleet.ssh(name, "pyserf version").startswith("pyserf 0.1.0.post1"), name
        assert "member-failed" not in log, (name, log)
        # each other host's restart reached the handler (a leave, or a leave and rejoin that
        # the event coalescing merged into one join)
        others = set(fleet.hosts) - {name}
        assert others <= {line.split()[1] for line in log.splitlines()}, (name, log)
