"""Unusable addresses give serf's own errors, never a Python traceback (issue 9).

Each case runs `pyserf agent` and the real `serf agent` with the same flags and compares every
``==>`` line. Only Go's resolver adds the DNS server it asked ("lookup x on 10.0.0.53:53"),
which is dropped before comparing.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, next_subnet

pytestmark = pytest.mark.e2e


def banner_lines(cmd: list[str]) -> tuple[list[str], int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=CHILD_ENV)
    out = proc.stdout + proc.stderr
    lines = [re.sub(r" on [0-9a-f.:\[\]]+:53:", ":", line) for line in out.splitlines()
             if line.startswith("==>")]
    return lines, proc.returncode, out


@pytest.mark.parametrize("flags", [
    ["-bind=999.1.1.1"],
    ["-bind={ip}", "-rpc-addr=notanaddr"],
    ["-bind={ip}", "-rpc-addr=a:b:c"],
    ["-bind={ip}", "-rpc-addr=nosuchhost.invalid:7373"],
    ["-bind={ip}", "-advertise=nosuch.invalid"],
])
def test_bad_addresses_read_as_serfs(need_serf, flags):
    results = []
    for binary in (PYSERF, [SERF]):
        ip = f"{next_subnet()}.1"
        args = [f.format(ip=ip) for f in flags]
        results.append(banner_lines([*binary, "agent", "-node=n", *args]))
    (mine, mine_rc, mine_out), (theirs, theirs_rc, _) = results
    assert "Traceback" not in mine_out
    assert mine == theirs, mine_out
    assert mine_rc == theirs_rc == 1
