"""Build this repository as the Ansible collection pyserf.cluster and install it into a
temporary collections path, the way a user without Galaxy access would
(``ansible-galaxy collection build`` + ``install`` of the tarball)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ansible_tool(name: str) -> str | None:
    """The venv's ansible command ``name`` (ansible-galaxy, ...), else the one on PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def ansible_env(tmp: Path, collections: Path) -> dict[str, str]:
    """An environment that sees only ``collections`` (no roles path, no repo config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_ROLES_PATH=str(tmp / "none"),
               ANSIBLE_HOME=str(tmp / "home"), ANSIBLE_LOCAL_TEMP=str(tmp / "tmp"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def build_and_install(tmp: Path) -> tuple[Path, Path]:
    """(the built tarball, the collections path it was installed into)."""
    dist, collections = tmp / "dist", tmp / "collections"
    dist.mkdir(parents=True)
    env = ansible_env(tmp, collections)
    galaxy = ansible_tool("ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", "--output-path", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True, env=env, cwd=tmp, timeout=120)
    tarball = next(dist.glob("pyserf-cluster-*.tar.gz"))
    subprocess.run([galaxy, "collection", "install", "--offline", "-p", str(collections),
                    str(tarball)],
                   check=True, capture_output=True, text=True, env=env, cwd=tmp, timeout=120)
    return tarball, collections
