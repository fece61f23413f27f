"""What the HTTP listener costs an agent: idle RSS, and GET /v1/agent/members throughput.

``rss``: one pyserf agent alone, idle, in three set-ups, each started ``--rounds`` times
(median printed): plain; with ``-http-addr``; with ``-http-addr`` after one ``GET /metrics``
(prometheus-client is imported then). RSS is VmRSS after ``--idle`` seconds; CPU is over them
(clock ticks of 10 ms: use a long ``--idle`` for CPU).

``members``: one pyserf agent with ``-http-addr`` and ``--members - 1`` real serf agents (Go:
cheap on this machine's two cores) joined to it. Once it lists them all alive, ``--clients``
keep-alive HTTP/1.1 connections (asyncio, this process) send ``GET /v1/agent/members`` back
to back for ``--seconds``; prints requests/s, latency percentiles, the response size and the
agent's CPU (in all, and per request: on a shared machine the agent gets only its share of the
cores, so requests/s follow the load while CPU per request does not) and RSS.

pyserf runs from ``--tree`` (default: a byte-compiled copy of HEAD, as an installed package
runs; ``--tree DIR`` is byte-compiled in place). Agents bind 127.211.x.y and are stopped by
PID. Usage::

    python benchmarks/http_cost.py rss [--rounds 3] [--idle 5] [--tree DIR]
    python benchmarks/http_cost.py members [--members 100] [--clients 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
HTTP_PORT = 8500


def prepare_tree(tree: Path | None, tmp: Path) -> Path:
    """A byte-compiled pyserf tree: ``tree`` compiled in place, or HEAD's package in ``tmp``
    (as cluster_bench runs it)."""
    if tree is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cluster_bench import prepare_pyserf

        return prepare_pyserf(tmp, source=False)[0]
    if not compileall.compile_dir(tree / "pyserf", quiet=1, workers=2):
        raise SystemExit("compileall failed")
    return tree


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = next(int(line.split()[1]) / 1024 for line in
               Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return (int(stat[11]) + int(stat[12])) / CLK_TCK, rss


def start_agent(kind: str, name: str, ip: str, tree: Path, log: Path,
                *flags: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "COV_CORE"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(tree)
    base = [shutil.which("serf") or "serf"] if kind == "serf" else [
        sys.executable, "-m", "pyserf"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*base, "agent", f"-node={name}", f"-bind={ip}:7946", f"-rpc-addr={ip}:7373",
             *flags], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=tree if kind == "pyserf" else None, start_new_session=True)


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{log.name}: no {text!r}:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(10)


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
        return bytes(resp.read())


def measure_rss(tree: Path, tmp: Path, rounds: int, idle: float
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """RSS (MiB) after ``idle`` seconds, and CPU (%) over them, per set-up and round."""
    results: dict[str, list[float]] = {"plain": [], "listener": [], "listener+scrape": []}
    cpu: dict[str, list[float]] = {setup: [] for setup in results}
    for round_no in range(rounds):
        for setup in results:
            ip = f"127.211.{random.randint(1, 250)}.{random.randint(2, 250)}"
            log = tmp / f"rss-{setup}-{round_no}.log"
            flags = [] if setup == "plain" else [f"-http-addr={ip}:{HTTP_PORT}"]
            proc = start_agent("pyserf", "rss", ip, tree, log, *flags)
            try:
                wait_for(log, "Serf agent running!", proc, 60)
                if setup == "listener+scrape":
                    get(f"http://{ip}:{HTTP_PORT}/metrics")
                cpu0 = proc_usage(proc.pid)[0]
                time.sleep(idle)
                cpu1, rss = proc_usage(proc.pid)
                results[setup].append(rss)
                cpu[setup].append(100 * (cpu1 - cpu0) / idle)
            finally:
                stop([proc])
    return results, cpu


async def load(ip: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of every GET answered within ``seconds``, and the last body's size."""
    request = (f"GET /v1/agent/members HTTP/1.1\r\nHost: {ip}\r\n\r\n").encode()
    latencies: list[float] = []
    size = [0]
    deadline = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(ip, HTTP_PORT)
        try:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"unexpected answer: {head[:200]!r}")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                size[0] = len(await reader.readexactly(length))
                latencies.append(time.monotonic() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, size[0]


def measure_members(tree: Path, tmp: Path, members: int, clients: int,
                    seconds: float) -> dict[str, float]:
    prefix = f"127.211.{random.randint(1, 250)}"
    seed_ip = f"{prefix}.1"
    seed_log = tmp / "seed.log"
    procs = [start_agent("pyserf", "seed", seed_ip, tree, seed_log,
                         f"-http-addr={seed_ip}:{HTTP_PORT}")]
    try:
        wait_for(seed_log, "Serf agent running!", procs[0], 60)
        for i in range(1, members):
            procs.append(start_agent("serf", f"s{i}", f"{prefix}.{i + 1}", tree,
                                     tmp / f"s{i}.log", f"-join={seed_ip}:7946"))
        url = f"http://{seed_ip}:{HTTP_PORT}/v1/agent/members?status=alive"
        deadline = time.monotonic() + 120
        while len(json.loads(get(url))) < members:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(json.loads(get(url)))} of {members} alive")
            time.sleep(0.5)
        time.sleep(2)
        cpu0, rss0 = proc_usage(procs[0].pid)
        wall0, client0 = time.monotonic(), time.process_time()
        latencies, size = asyncio.run(load(seed_ip, clients, seconds))
        wall = time.monotonic() - wall0
        client_cpu = time.process_time() - client0
        cpu1, rss1 = proc_usage(procs[0].pid)
        latencies.sort()
        return {"members": members, "clients": clients, "seconds": wall,
                "requests": len(latencies), "requests_per_s": len(latencies) / wall,
                "p50_ms": 1e3 * latencies[len(latencies) // 2],
                "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)],
                "body_bytes": size, "agent_cpu_pct": 100 * (cpu1 - cpu0) / wall,
                "client_cpu_pct": 100 * client_cpu / wall,
                # What a busy machine does not change much: the agent's CPU per answer.
                "agent_cpu_ms_per_request": 1e3 * (cpu1 - cpu0) / max(1, len(latencies)),
                "agent_rss_before_mib": rss0, "agent_rss_after_mib": rss1,
                "load_avg_1m": os.getloadavg()[0]}
    finally:
        stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["rss", "members"])
    parser.add_argument("--tree", type=Path, help="a pyserf checkout (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tree = prepare_tree(args.tree, tmp)
        if args.mode == "rss":
            rss, cpu = measure_rss(tree, tmp, args.rounds, args.idle)
            if args.json:
                print(json.dumps({"rss_mib": rss, "idle_cpu_pct": cpu}))
            for setup, values in rss.items():
                print(f"{setup:<16} RSS MiB median {statistics.median(values):5.1f}  "
                      f"({', '.join(f'{v:.1f}' for v in values)}); idle CPU median "
                      f"{statistics.median(cpu[setup]):.2f}%")
        else:
            result = measure_members(tree, tmp, args.members, args.clients, args.seconds)
            if args.json:
                print(json.dumps(result))
            print(f"GET /v1/agent/members, {result['members']} members, "
                  f"{result['clients']} keep-alive clients, {result['seconds']:.1f} s: "
                  f"{result['requests_per_s']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
                  f"p99 {result['p99_ms']:.1f} ms, {result['body_bytes']} B per answer; agent "
                  f"CPU {result['agent_cpu_pct']:.0f}% (client {result['client_cpu_pct']:.0f}%), "
                  f"{result['agent_cpu_ms_per_request']:.2f} ms CPU per request, "
                  f"RSS {result['agent_rss_before_mib']:.1f}"
                  f" -> {result['agent_rss_after_mib']:.1f} MiB (load {result['load_avg_1m']:.1f})")


if __name__ == "__main__":
    main()
