"""Counts that do not depend on timing, taken inside each agent of a cluster_bench run.

``cluster_bench.py --counts`` puts a ``sitecustomize`` module on the pyserf agents' path. It
counts, at the socket (so any pyserf version is measured the same way, telemetry or not):
datagrams and their bytes each way, memberlist streams opened and accepted (push-pulls,
joins included: TCP to or from port 7946) and RPC connections accepted; and on SIGUSR2 it
writes those counts with the process's user and system CPU seconds to
``<dir>/<pid>.<n>.json`` (n = 0, 1, ... per signal). The benchmark signals every agent at
each phase boundary and reports the differences.

The hook costs a Python call per socket operation (~1 us against the ~100 us a datagram
costs the agent), so CPU figures from a counting run are slightly higher than without it.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from pathlib import Path

ENV = "PYSERF_BENCH_COUNTS"
GOSSIP_PORT = 7946

HOOK = f'''
"""cluster_bench --counts: socket counts and CPU, written on SIGUSR2 (see agent_counts.py)."""
import json, os, resource, signal, socket

_OUT = os.environ.get("{ENV}")
if _OUT:
    _counts = dict.fromkeys(("udp_out", "udp_out_bytes", "udp_in", "udp_in_bytes",
                             "tcp_out", "tcp_in", "rpc_in"), 0)
    _sendto, _recvfrom = socket.socket.sendto, socket.socket.recvfrom
    _accept, _connect = socket.socket.accept, socket.socket.connect

    def _counted_sendto(self, data, *args):
        sent = _sendto(self, data, *args)
        _counts["udp_out"] += 1
        _counts["udp_out_bytes"] += sent
        return sent

    def _counted_recvfrom(self, *args):
        data, addr = _recvfrom(self, *args)
        _counts["udp_in"] += 1
        _counts["udp_in_bytes"] += len(data)
        return data, addr

    def _counted_accept(self):
        conn, addr = _accept(self)
        _counts["tcp_in" if self.getsockname()[1] == {GOSSIP_PORT} else "rpc_in"] += 1
        return conn, addr

    def _counted_connect(self, address):
        if self.type == socket.SOCK_STREAM and address[1] == {GOSSIP_PORT}:
            _counts["tcp_out"] += 1
        return _connect(self, address)

    socket.socket.sendto = _counted_sendto
    socket.socket.recvfrom = _counted_recvfrom
    socket.socket.accept = _counted_accept
    socket.socket.connect = _counted_connect
    _taken = [0]

    def _write(signum, frame):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record = dict(_counts, user=usage.ru_utime, sys=usage.ru_stime)
        path = os.path.join(_OUT, f"{{os.getpid()}}.{{_taken[0]}}.json")
        _taken[0] += 1
        with open(path + ".tmp", "w") as out:
            json.dump(record, out)
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR2, _write)
'''

FIGURES = ("udp_out", "udp_in", "udp_out_bytes", "udp_in_bytes", "tcp_out", "tcp_in",
           "rpc_in", "user", "sys")


def install(hook_dir: Path, env: dict[str, str]) -> None:
    """Write the hook into ``hook_dir`` and put it on the agents' path; it counts in agents
    whose environment names an output directory under ENV."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))


def signal_all(pids: list[int]) -> None:
    """Ask every agent for its counts now (each writes its next numbered file)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass


def collect(out_dir: Path, pids: list[int], taken: int, timeout: float = 60.0
            ) -> dict[int, list[dict[str, float]]]:
    """pid -> its ``taken`` records, oldest first (agents that never wrote them are left out)."""
    deadline = time.monotonic() + timeout
    records: dict[int, list[dict[str, float]]] = {}
    while time.monotonic() < deadline:
        for pid in pids:
            if pid in records:
                continue
            paths = [out_dir / f"{pid}.{n}.json" for n in range(taken)]
            if all(p.exists() for p in paths):
                records[pid] = [json.loads(p.read_text()) for p in paths]
        if len(records) == len(pids):
            break
        time.sleep(0.2)
    return records


def phase_means(records: dict[int, list[dict[str, float]]], pids: list[int], phase: int
                ) -> tuple[dict[str, float], dict[str, float]]:
    """(seed's, mean of the others') differences between record ``phase`` and the next."""
    def delta(pid: int) -> dict[str, float]:
        a, b = records[pid][phase], records[pid][phase + 1]
        return {k: b[k] - a[k] for k in FIGURES}

    seed = delta(pids[0]) if pids[0] in records else {}
    others = [delta(pid) for pid in pids[1:] if pid in records]
    means = {k: statistics.mean(d[k] for d in others) for k in FIGURES} if others else {}
    return seed, means


def text(figures: dict[str, float]) -> str:
    if not figures:
        return "-"
    return (f"udp out {figures['udp_out']:.0f} ({figures['udp_out_bytes'] / 1024:.0f} KiB) "
            f"in {figures['udp_in']:.0f} ({figures['udp_in_bytes'] / 1024:.0f} KiB), "
            f"streams out {figures['tcp_out']:.2f} in {figures['tcp_in']:.2f}, "
            f"rpc in {figures['rpc_in']:.2f}, cpu user {figures['user']:.3f} s "
            f"sys {figures['sys']:.3f} s")
