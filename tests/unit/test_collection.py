"""The repository as the Ansible collection pyserf.cluster: built and installed like a user
would without Galaxy, then used by FQCN from a directory outside the repository."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.ansible_collection import REPO, ansible_env, ansible_tool, build_and_install

pytestmark = pytest.mark.skipif(ansible_tool("ansible-galaxy") is None,
                                reason="ansible-core is not installed (scripts/bootstrap --lab)")

PLAYBOOK = """
- name: The role by FQCN from the installed collection (its checks only)
  hosts: local
  gather_facts: false
  roles:
    - role: pyserf.cluster.pyserf
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("collection")
    tarball, collections = build_and_install(tmp)
    return tmp, tarball, collections


def test_tarball_holds_the_collection_and_nothing_else(installed):
    _, tarball, _ = installed
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for wanted in ("MANIFEST.json", "meta/runtime.yml",
                   "roles/pyserf/tasks/main.yml", "roles/pyserf/meta/argument_specs.yml",
                   "plugins/inventory/members.py", "plugins/module_utils/serf_rpc.py",
                   "plugins/doc_fragments/serf_rpc.py"):
        assert wanted in names, wanted
    leaked = {n.split("/")[0] for n in names} - {
        "MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "meta", "roles", "plugins"}
    assert leaked == set(), leaked  # no pyserf/, tests/, lab/, .venv ...


def test_installed_role_has_no_path_into_the_repository(installed):
    _, _, collections = installed
    role = collections / "ansible_collections/pyserf/cluster/roles/pyserf"
    texts = "\n".join(p.read_text() for p in role.rglob("*") if p.is_file())
    assert "role_path" not in texts
    assert str(REPO) not in texts


def test_role_by_fqcn_runs_outside_the_repository(installed):
    tmp, _, collections = installed
    work = tmp / "elsewhere"
    work.mkdir()
    (work / "play.yml").write_text(PLAYBOOK)
    (work / "inventory.ini").write_text(
        "[local]\ncontroller ansible_connection=local pyserf_install_method=pip "
        "pyserf_hosts_file='{\"path\": \"/etc/hosts\"}'\n")
    res = subprocess.run(
        [ansible_tool("ansible-playbook"), "-i", "inventory.ini", "--tags", "pyserf_assert",
         "play.yml"], capture_output=True, text=True, env=ansible_env(tmp, collections),
        cwd=work, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "TASK [pyserf.cluster.pyserf : Check that pyserf_tags is a map" in out, out[-3000:]
    assert "controller                 : ok=" in out and "failed=0" in out, out[-3000:]


def test_inventory_plugin_documented(installed):
    tmp, _, collections = installed
    res = subprocess.run([ansible_tool("ansible-doc"), "-t", "inventory",
                          "pyserf.cluster.members"], capture_output=True, text=True,
                         env=ansible_env(tmp, collections), cwd=tmp, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    for option in ("rpc_addr", "rpc_auth", "status", "tags", "keyed_groups", "cache_plugin"):
        assert option in res.stdout, option
