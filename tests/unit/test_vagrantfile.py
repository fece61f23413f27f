"""The repo's Vagrantfile passes `vagrant validate` (no VM is started).

Without a provider plugin Vagrant cannot pick a provider, so validation then ignores provider
blocks (`--ignore-provider`); with vagrant-libvirt installed the libvirt config is validated too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANT = shutil.which("vagrant")

pytestmark = pytest.mark.skipif(
    VAGRANT is None,
    reason="vagrant is not installed (apt-get install --no-install-recommends vagrant)",
)


@pytest.fixture(scope="module")
def vagrant_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vagrant-home")


@pytest.fixture(scope="module")
def libvirt_plugin(vagrant_home: Path) -> bool:
    out = subprocess.run(
        [VAGRANT, "plugin", "list"],
        env=_env(vagrant_home, vagrant_home / "dot"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "vagrant-libvirt" in out.stdout


def _env(home: Path, dotfile: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSERF_", "VAGRANT_"))}
    env.update(
        VAGRANT_CWD=str(REPO),
        VAGRANT_HOME=str(home),
        VAGRANT_DOTFILE_PATH=str(dotfile),  # keep .vagrant/ out of the repo
        VAGRANT_CHECKPOINT_DISABLE="1",
        **extra,
    )
    return env


def _validate(home: Path, tmp_path: Path, libvirt: bool, **extra: str):
    cmd = [VAGRANT, "validate"]
    if libvirt:
        extra.setdefault("VAGRANT_DEFAULT_PROVIDER", "libvirt")
    else:
        cmd.append("--ignore-provider")
    return subprocess.run(
        cmd,
        env=_env(home, tmp_path / "dot-vagrant", **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_defaults(vagrant_home: Path, tmp_path: Path, libvirt_plugin: bool) -> None:
    res = _validate(vagrant_home, tmp_path, libvirt_plugin)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout


def test_validate_offline_lab_settings(
    vagrant_home: Path, tmp_path: Path, libvirt_plugin: bool
) -> None:
    """What scripts/vagrant-lab sets: 3 VMs, TCG, direct kernel boot, local box."""
    res = _validate(
        vagrant_home,
        tmp_path,
        libvirt_plugin,
        PYSERF_VMS="3",
        PYSERF_BOX="pyserf/debian12-lab",
        PYSERF_LIBVIRT_DRIVER="qemu",
        PYSERF_LIBVIRT_KERNEL="/var/tmp/pyserf-vagrant-lab/box/vmlinuz",
        PYSERF_LIBVIRT_INITRD="/var/tmp/pyserf-vagrant-lab/box/initrd.img",
        PYSERF_LIBVIRT_PREFIX="pyserf_",
        PYSERF_ENCRYPT_KEY="5K9OtfxlnVbLFILADWEaXw==",
        PYSERF_ROLES="web,db,lb",
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"PYSERF_VMS": "0"}, "PYSERF_VMS"),
        ({"PYSERF_NETWORK": "10.213.7.0/28"}, "PYSERF_NETWORK"),
        ({"PYSERF_LIBVIRT_KERNEL": "/boot/vmlinuz"}, "PYSERF_LIBVIRT_INITRD"),
    ],
)
def test_bad_settings_are_rejected(
    vagrant_home: Path, tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    res = _validate(vagrant_home, tmp_path, False, **extra)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr


def test_provisioned_playbook_exists() -> None:
    # `vagrant validate` does not check the Ansible provisioner's playbook path.
    assert (REPO / "playbooks" / "site.yml").is_file()
