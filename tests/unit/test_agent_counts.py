"""cluster_bench --counts: the hook an agent process loads counts its socket traffic and writes
it on SIGUSR2 (benchmarks/agent_counts.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import agent_counts  # noqa: E402

CHILD = """
import os, signal, socket
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in (10, 20, 30):
    tx.sendto(b"x" * size, rx.getsockname())
for _ in range(3):
    rx.recvfrom(100)
os.kill(os.getpid(), signal.SIGUSR2)
tx.sendto(b"y", rx.getsockname())
os.kill(os.getpid(), signal.SIGUSR2)
"""


def test_hook_counts_datagrams_and_writes_a_record_per_signal(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    agent_counts.install(tmp_path / "hook", env)
    out = tmp_path / "counts"
    out.mkdir()
    env[agent_counts.ENV] = str(out)
    child = subprocess.run([sys.executable, "-c", CHILD], env=env, timeout=30)
    assert child.returncode == 0
    pid_files = sorted(out.glob("*.json"))
    assert [p.name.split(".", 1)[1] for p in pid_files] == ["0.json", "1.json"]
    first, second = (json.loads(p.read_text()) for p in pid_files)
    assert (first["udp_out"], first["udp_out_bytes"], first["udp_in"], first["udp_in_bytes"]) \
        == (3, 60, 3, 60)
    assert (second["udp_out"], second["udp_in"]) == (4, 3)
    assert first["tcp_out"] == first["tcp_in"] == 0
    assert second["user"] >= first["user"] >= 0


def test_phase_means_separate_the_seed_from_the_others() -> None:
    def record(udp_out: int, user: float) -> dict[str, float]:
        return dict.fromkeys(agent_counts.FIGURES, 0.0) | {"udp_out": udp_out, "user": user}

    records = {1: [record(0, 0.0), record(10, 1.0)], 2: [record(5, 0.5), record(9, 0.7)],
               3: [record(1, 0.1), record(3, 0.5)]}
    seed, others = agent_counts.phase_means(records, [1, 2, 3], 0)
    assert seed["udp_out"] == 10 and seed["user"] == 1.0
    assert others["udp_out"] == 3 and abs(others["user"] - 0.3) < 1e-9
