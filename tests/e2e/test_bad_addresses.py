"""Unusable addresses give serf's own errors, never a Python traceback (issue 9).

Each case runs `pyserf agent` and the real `serf agent` with the same flags and compares the
exit status, stdout and stderr exactly: neither prints its held-back log on a failed start.
Only Go's resolver adds the DNS server it asked ("lookup x on 10.0.0.53:53"), which is dropped
before comparing, and the private loopback address each run gets reads as ``<ip>``.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.harness import CHILD_ENV, PYSERF, SERF, next_subnet

pytestmark = pytest.mark.e2e


def outcome(binary: list[str], flags: list[str]) -> tuple[int, str, str]:
    ip = f"{next_subnet()}.1"
    proc = subprocess.run([*binary, "agent", "-node=n", *(f.format(ip=ip) for f in flags)],
                          capture_output=True, text=True, timeout=20, env=CHILD_ENV)

    def clean(text: str) -> str:
        return re.sub(r" on [0-9a-f.:\[\]]+:53:", ":", text).replace(ip, "<ip>")

    return proc.returncode, clean(proc.stdout), clean(proc.stderr)


@pytest.mark.parametrize("flags", [
    ["-bind=999.1.1.1"],
    ["-bind={ip}", "-rpc-addr=notanaddr"],
    ["-bind={ip}", "-rpc-addr=a:b:c"],
    ["-bind={ip}", "-rpc-addr={ip}"],
    ["-bind={ip}", "-rpc-addr=nosuchhost.invalid:7373"],
    ["-bind={ip}", "-advertise=nosuch.invalid"],
    ["-bind={ip}", "-advertise={ip}:99999"],
], ids=["bind-not-an-ip", "rpc-no-port", "rpc-colons", "rpc-missing-port", "rpc-unknown-host",
        "advertise-unknown-host", "advertise-port-range"])
def test_bad_addresses_read_as_serfs(need_serf, flags):
    mine = outcome(PYSERF, flags)
    theirs = outcome([SERF], flags)
    assert "Traceback" not in mine[1] + mine[2]
    assert mine == theirs
    assert theirs[0] == 1
