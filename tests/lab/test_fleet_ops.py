"""Fleet operations on real hosts (systemd-nspawn containers, lab/nspawn-lab.sh), driven by
playbooks/site.yml as an operator would: adding a host leaves the others untouched
(changed=0), and a rolling upgrade to a new wheel version never makes any member see another
as failed. Needs root and the lab base (scripts/bootstrap --lab; lab/nspawn-lab.sh base).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible_collection import build_and_install

REPO = Path(__file__).resolve().parents[2]
LAB_TOOL = REPO / "lab" / "nspawn-lab.sh"
LAB_DIR = Path(os.environ.get("PYSERF_LAB_DIR", "/var/lib/pyserf-lab"))
BIN = Path(sys.executable).parent
# .31-.34: clear of lab-up (.11-.13) and molecule (.21-.23) on the same bridge
HOSTS = {f"fleet{i}": f"10.213.0.{30 + i}" for i in range(1, 5)}
KEY = "abSvP10NQueGlT4ZTGMdqVTkSbb5Pc3Udw5hG8ugiSo="
EVENTS_LOG = "/var/lib/pyserf/member-events.log"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

pytestmark = [pytest.mark.timeout(1500), pytest.mark.skipif(
    os.geteuid() != 0 or not (LAB_DIR / "base").is_dir() or not (BIN / "ansible-playbook").exists(),
    reason="needs root, the lab base (lab/nspawn-lab.sh base) and ansible-core "
           "(scripts/bootstrap --lab)")]

GROUP_VARS = f"""
pyserf_encrypt_key: {KEY}
pyserf_tags: {{role: fleet}}
pyserf_install_method: wheel
pyserf_build_wheels: false
pyserf_handler_scripts:
  - name: record.sh
    content: |
      #!/bin/sh
      while read -r name rest; do echo "$SERF_EVENT $name" >>{EVENTS_LOG}; done
pyserf_event_handlers: ["member-join,member-leave,member-failed=/etc/pyserf/handlers/record.sh"]
"""


FQCN_PLAYBOOK = """
- name: Deploy pyserf with the role of the installed collection
  hosts: pyserf
  become: true
  serial: 1
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


def source_copy(dest: Path, version: str | None = None) -> Path:
    """The committed pyserf sources (HEAD: not edits in progress in the working tree),
    optionally with another version number."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "pyproject.toml",
                              "README.md", "pyserf"], capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    if version:
        for rel, pattern in (("pyproject.toml", r'^version = "[^"]+"'),
                             ("pyserf/__init__.py", r'^__version__ = "[^"]+"')):
            path = dest / rel
            text, n = re.subn(pattern, pattern.split(" = ")[0].lstrip("^") + f' = "{version}"',
                              path.read_text(), count=1, flags=re.M)
            assert n == 1, rel
            path.write_text(text)
    return dest


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[str] = []
        (tmp / "group_vars").mkdir()
        (tmp / "group_vars" / "pyserf.yml").write_text(GROUP_VARS)

    def start(self, name: str) -> None:
        subprocess.run([str(LAB_TOOL), "start", name, HOSTS[name]], check=True, timeout=180,
                       capture_output=True)
        self.started.append(name)

    def inventory(self) -> Path:
        path = self.tmp / "inventory.ini"
        common = (f"ansible_user=root ansible_ssh_private_key_file={LAB_DIR}/id_lab "
                  "ansible_python_interpreter=/usr/bin/python3")
        ssh = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
               f" -o ControlMaster=auto -o ControlPersist=60s -o ControlPath={LAB_DIR}/cm/%C")
        lines = ["[pyserf]", *(f"{n} ansible_host={HOSTS[n]}" for n in self.started),
                 "", "[pyserf:vars]", common.replace(" ", "\n"),
                 f"ansible_ssh_common_args='{ssh}'"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def site(self, *extra: str, playbook: Path = REPO / "playbooks" / "site.yml",
             collections: Path | None = None) -> tuple[str, dict[str, tuple[int, int, int]]]:
        """Run playbooks/site.yml (or ``playbook`` from its own directory, with only the
        ``collections`` path); (output, host -> (changed, unreachable, failed))."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(ANSIBLE_PIPELINING="1", ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(self.tmp / "at"),
                   PATH=f"{BIN}:{env.get('PATH', '')}")
        if collections is not None:
            env.update(ANSIBLE_COLLECTIONS_PATH=str(collections),
                       ANSIBLE_ROLES_PATH=str(self.tmp / "no-roles"))
        res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory()),
                              str(playbook), *extra], cwd=playbook.parent,
                             capture_output=True, text=True, env=env, timeout=900, check=False)
        out = res.stdout + res.stderr
        if res.returncode != 0:
            journals = "".join(
                f"\n--- {name}: journalctl -u pyserf\n"
                + subprocess.run(["ssh", "-F", str(LAB_DIR / "ssh_config"), name,
                                  "journalctl -u pyserf -n 25 --no-pager"], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
                for name in self.started)
            raise AssertionError(out[-5000:] + journals)
        recap: dict[str, tuple[int, int, int]] = {}
        for m in RECAP.finditer(res.stdout):  # two plays: sum per host
            prev = recap.get(m[1], (0, 0, 0))
            recap[m[1]] = (prev[0] + int(m[2]), prev[1] + int(m[3]), prev[2] + int(m[4]))
        return out, recap

    def ssh(self, name: str, command: str) -> str:
        return subprocess.run(
            ["ssh", "-F", str(LAB_DIR / "ssh_config"), name, command], capture_output=True,
            text=True, timeout=60, check=True).stdout

    def stop(self) -> None:
        if self.started:
            subprocess.run([str(LAB_TOOL), "stop", *self.started], timeout=180,
                           capture_output=True, check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fleet")
    f = Fleet(tmp)
    try:
        build_wheels(source_copy(tmp / "src-v1"), tmp / "wheels-v1")
        (tmp / "group_vars" / "pyserf.yml").write_text(
            GROUP_VARS + f"pyserf_wheel_dir: {tmp / 'wheels-v1'}\n")
        for name in ("fleet1", "fleet2", "fleet3"):
            f.start(name)
        # The first rollout goes through the collection as a user installs it (role by FQCN,
        # from a directory outside the repository); the tests then run playbooks/site.yml on
        # the same hosts, so they also show that both deploy exactly the same thing.
        collections = build_and_install(tmp / "collection")[1]
        (tmp / "outside").mkdir()
        (tmp / "outside" / "deploy.yml").write_text(FQCN_PLAYBOOK)
        out, _ = f.site(playbook=tmp / "outside" / "deploy.yml", collections=collections)
        assert "TASK [pyserf.cluster.pyserf : Start pyserf]" in out, out[-3000:]
        yield f
    finally:
        f.stop()


def main_pids(fleet: Fleet) -> dict[str, str]:
    return {name: fleet.ssh(name, "systemctl show -p MainPID --value pyserf").strip()
            for name in fleet.started}


def test_changed_handler_script_reloads_every_agent_without_a_restart(fleet: Fleet):
    """A new text for a pyserf_handler_scripts entry: the role reloads (SIGHUP) each agent
    (same PID, no restart handler) and installs the new text. The group_vars keep it, so the
    tests after this one see a settled fleet."""
    before = main_pids(fleet)
    assert "" not in before.values() and "0" not in before.values(), before
    group_vars = fleet.tmp / "group_vars" / "pyserf.yml"
    text = group_vars.read_text()
    assert text.count("      #!/bin/sh\n") == 1
    group_vars.write_text(text.replace("      #!/bin/sh\n", "      #!/bin/sh\n      # v2\n"))
    out, recap = fleet.site()
    assert all(changed > 0 for changed, _, _ in recap.values()), recap
    assert len(re.findall(r"RUNNING HANDLER \[\S*pyserf : Reload pyserf\]", out)) == 3, out
    assert "RUNNING HANDLER [../roles/pyserf : Restart pyserf]" not in out, out[-3000:]
    reloads = re.findall(r"RUNNING HANDLER \[\S*pyserf : Reload pyserf\] \**\n(\w+): ", out)
    assert reloads == ["changed"] * 3, out[-3000:]
    assert main_pids(fleet) == before
    for name in fleet.started:
        assert "# v2" in fleet.ssh(name, "cat /etc/pyserf/handlers/record.sh"), name


def test_adding_a_host_changes_nothing_on_the_others(fleet: Fleet):
    fleet.start("fleet4")
    out, recap = fleet.site()
    assert set(recap) == set(HOSTS), out[-3000:]
    assert {h: recap[h] for h in ("fleet1", "fleet2", "fleet3")} == {
        h: (0, 0, 0) for h in ("fleet1", "fleet2", "fleet3")}, out[-5000:]
    assert recap["fleet4"][0] > 0 and recap["fleet4"][1:] == (0, 0)
    # the verify play saw four alive members from every host; and from fleet1's CLI:
    members = fleet.ssh("fleet1", "pyserf members -status=alive")
    assert sorted(line.split()[0] for line in members.splitlines()) == sorted(HOSTS)


def watch_members(fleet: Fleet) -> list[tuple[str, subprocess.Popen]]:
    """On every host, `pyserf members -format=json` every 0.3 s, streamed back over one ssh
    session per host (event handlers see coalesced events; this sees every state)."""
    loop = "while sleep 0.3; do pyserf members -format=json 2>/dev/null; echo; done"
    return [(name, subprocess.Popen(["ssh", "-F", str(LAB_DIR / "ssh_config"), name, loop],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True))
            for name in fleet.started]


def test_rolling_upgrade_never_shows_a_member_failed(fleet: Fleet):
    tmp = fleet.tmp
    new_wheels = tmp / "wheels-v2"
    shutil.copytree(tmp / "wheels-v1", new_wheels,
                    ignore=shutil.ignore_patterns("pyserf-*.whl"))
    build_wheels(source_copy(tmp / "src-v2", "0.1.0.post1"), new_wheels, "--no-deps")
    for name in fleet.started:
        fleet.ssh(name, f": >{EVENTS_LOG}")
    watchers = watch_members(fleet)
    try:
        out, recap = fleet.site("-e", f"pyserf_wheel_dir={new_wheels}")
    finally:
        for _, proc in watchers:
            proc.terminate()
    seen = {name: proc.communicate(timeout=30)[0] for name, proc in watchers}
    for name, text in seen.items():
        assert text.count('"members"') > 20, (name, text[-500:])  # it really watched
        assert not re.search(r'"status":\s*"failed"', text), (name, text[-3000:])
    assert all(changed > 0 and failed == 0 for changed, _, failed in recap.values()), recap
    assert out.count("RUNNING HANDLER [../roles/pyserf : Restart pyserf]") == len(HOSTS), \
        out[-3000:]
    logs = {name: fleet.ssh(name, f"cat {EVENTS_LOG}") for name in fleet.started}
    for name, log in logs.items():
        assert fleet.ssh(name, "pyserf version").startswith("pyserf 0.1.0.post1"), name
        assert "member-failed" not in log, (name, log)
        # each other host's restart reached the handler (a leave, or a leave and rejoin that
        # the event coalescing merged into one join)
        others = set(fleet.started) - {name}
        assert others <= {line.split()[1] for line in log.splitlines()}, (name, log)
