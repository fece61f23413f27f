"""Side-by-side cluster benchmark: pyserf agents vs the real serf binary on loopback.

For each cluster size it starts N agents of one kind, joins them all to the first, and measures:
join convergence (every agent lists N alive), a user event -> the last agent's handler ran,
a query -> every agent's response arrived (and when the query call returned: serf always waits
out the timeout, pyserf returns once everyone answered), kill -9 -> every survivor lists it
failed, SIGINT -> every survivor lists it left, and idle RSS / CPU per agent. Then it prints
pyserf/serf ratios. Usage::

    python benchmarks/cluster_bench.py [--sizes 20,50] [--rounds 1] [--kinds serf,pyserf] [--check]

``--check`` exits 1 when a ratio misses its target (times <= 1.0, idle CPU <= 1.5, RSS <= 30 MiB).

Agents bind 127.200-207.x.y (a fresh /24 per cluster) and are all stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.client.rpc_client import RPCClient, RPCError  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_INTERVAL = 0.1


@dataclass
class Proc:
    name: str
    ip: str
    popen: subprocess.Popen
    client: RPCClient | None = None

    @property
    def rpc(self) -> str:
        return f"{self.ip}:7373"


@dataclass
class Result:
    kind: str
    size: int
    join_times: list[float] = field(default_factory=list)  # per cluster: slowest agent
    join_tail_clusters: int = 0  # clusters where some agent needed > 2 s
    fail_times: list[float] = field(default_factory=list)
    leave_times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)  # event sent -> last handler ran
    query_times: list[float] = field(default_factory=list)  # query sent -> all responses
    query_returns: list[float] = field(default_factory=list)  # query sent -> done record


def agent_argv(kind: str, name: str, ip: str, workdir: Path) -> list[str]:
    base = [shutil.which("serf") or "serf"] if kind == "serf" else [sys.executable, "-m",
                                                                     "pyserf"]
    # The user-event handler stamps the time it ran; the query handler answers at once.
    stamp = f"user:bench=date +%s.%N > {workdir}/$SERF_SELF_NAME.ran"
    return [*base, "agent", f"-node={name}", f"-bind={ip}:7946", f"-rpc-addr={ip}:7373",
            f"-event-handler={stamp}", "-event-handler=query:benchq=echo ok"]


def measure_event(procs: list[Proc], workdir: Path, timeout: float = 30.0) -> float:
    """Send a non-coalesced user event; seconds until the last agent's handler ran."""
    sent = time.time()
    procs[-1].client.user_event("bench", b"go", coalesce=False)
    deadline = time.monotonic() + timeout
    stamps: dict[str, float] = {}
    while len(stamps) < len(procs) and time.monotonic() < deadline:
        for proc in procs:
            if proc.name not in stamps:
                try:
                    stamps[proc.name] = float((workdir / f"{proc.name}.ran").read_text())
                except (OSError, ValueError):
                    pass
        time.sleep(0.02)
    return max(stamps.values()) - sent if len(stamps) == len(procs) else float("inf")


def measure_query(procs: list[Proc]) -> tuple[float, float]:
    """(seconds until every agent's response arrived, seconds until the query returned)."""
    sent = time.monotonic()
    stream = procs[0].client.query("benchq", b"", request_ack=True)
    responders: set[str] = set()
    all_in = float("inf")
    for record in stream:
        if record["Type"] == "response":
            responders.add(record["From"])
            if len(responders) == len(procs):
                all_in = time.monotonic() - sent
    return all_in, time.monotonic() - sent


def connect(proc: Proc, deadline: float) -> RPCClient:
    while True:
        try:
            return RPCClient(proc.rpc, timeout=2.0, reply_timeout=10.0)
        except (OSError, RPCError):
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise
            time.sleep(0.1)


def statuses(proc: Proc) -> dict[str, str]:
    try:
        return {m.name: m.status for m in proc.client.members()}
    except (OSError, RPCError):
        return {}


def wait_all(pool: ThreadPoolExecutor, procs: list[Proc], check, timeout: float
             ) -> dict[str, float]:
    """Poll every agent until ``check(statuses)`` holds; returns name -> seconds to hold."""
    start = time.monotonic()
    done: dict[str, float] = {}
    while len(done) < len(procs) and time.monotonic() - start < timeout:
        pending = [p for p in procs if p.name not in done]
        views = pool.map(statuses, pending)
        now = time.monotonic() - start
        for proc, view in zip(pending, views, strict=True):
            if check(view):
                done[proc.name] = now
        time.sleep(POLL_INTERVAL)
    return done


def usage(pids: list[int]) -> dict[int, tuple[float, float]]:
    """pid -> (cpu seconds, rss MiB)."""
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK
            rss = 0.0
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
            out[pid] = (cpu, rss)
        except (OSError, IndexError, ValueError):
            continue
    return out


def run_cluster(kind: str, size: int, prefix: str, workdir: Path, result: Result,
                idle_window: float, join_timeout: float) -> None:
    procs: list[Proc] = []
    pool = ThreadPoolExecutor(max_workers=16)
    try:
        for i in range(size):
            name, ip = f"{kind[0]}{i}", f"{prefix}.{i + 1}"
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
            popen = subprocess.Popen(agent_argv(kind, name, ip, workdir), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs.append(Proc(name, ip, popen))
        deadline = time.monotonic() + 60
        for proc in procs:
            proc.client = connect(proc, deadline)

        seed = procs[0]
        all_alive = lambda view: (  # noqa: E731
            len(view) == size and all(s == "alive" for s in view.values()))
        list(pool.map(lambda p: p.client.join([f"{seed.ip}:7946"]), procs[1:]))
        times = wait_all(pool, procs, all_alive, join_timeout)
        slowest = max(times.values()) if len(times) == size else float("inf")
        result.join_times.append(slowest)
        if slowest > 2.0:
            result.join_tail_clusters += 1
        print(f"  {kind:6} N={size}: join converged in {slowest:.2f}s "
              f"(median agent {statistics.median(times.values()) if times else 0:.2f}s)",
              flush=True)

        time.sleep(3.0)  # let the join gossip drain before measuring
        result.event_times.append(measure_event(procs, workdir))
        all_in, returned = measure_query(procs)
        result.query_times.append(all_in)
        result.query_returns.append(returned)
        print(f"  {kind:6} N={size}: event handled everywhere in "
              f"{result.event_times[-1]:.2f}s, query answered by all in {all_in:.2f}s, "
              f"returned after {returned:.2f}s", flush=True)
        time.sleep(2.0)
        pids = [p.popen.pid for p in procs]
        before = usage(pids)
        time.sleep(idle_window)
        after = usage(pids)
        for pid in pids:
            if pid in before and pid in after:
                result.cpu_pct.append(100 * (after[pid][0] - before[pid][0]) / idle_window)
                result.rss_mib.append(after[pid][1])

        victim = random.choice(procs[1:])
        victim.popen.kill()
        victim.popen.wait()
        survivors = [p for p in procs if p is not victim]
        times = wait_all(pool, survivors, lambda v: v.get(victim.name) == "failed", 60)
        result.fail_times.append(max(times.values()) if len(times) == len(survivors)
                                 else float("inf"))

        leaver = random.choice([p for p in survivors if p is not seed])
        leaver.popen.send_signal(signal.SIGINT)
        remaining = [p for p in survivors if p is not leaver]
        times = wait_all(pool, remaining, lambda v: v.get(leaver.name) == "left", 60)
        result.leave_times.append(max(times.values()) if len(times) == len(remaining)
                                  else float("inf"))
        print(f"  {kind:6} N={size}: failed seen in {result.fail_times[-1]:.2f}s, "
              f"left seen in {result.leave_times[-1]:.2f}s", flush=True)
    finally:
        pool.shutdown(wait=False)
        for proc in procs:
            if proc.client is not None:
                proc.client.close()
            if proc.popen.poll() is None:
                proc.popen.kill()
        for proc in procs:
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f}"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or statistics.mean(b) == 0:
        return "-"
    return f"{statistics.mean(a) / statistics.mean(b):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--rounds", type=int, default=1, help="clusters per kind and size")
    parser.add_argument("--kinds", default="serf,pyserf")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window in seconds")
    parser.add_argument("--join-timeout", type=float, default=100.0)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a pyserf/serf ratio or the RSS target is missed")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if "serf" in kinds and not shutil.which("serf"):
        print("serf not found: apt-get install serf", file=sys.stderr)
        return 1
    results: dict[tuple[str, int], Result] = {}
    subnet = 0
    with tempfile.TemporaryDirectory(prefix="pyserf-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for rnd in range(args.rounds):
                for kind in kinds:
                    res = results.setdefault((kind, size), Result(kind, size))
                    prefix = f"127.{200 + subnet // 250}.{subnet % 250}"
                    subnet += 1
                    workdir = Path(tmp) / f"{kind}-{size}-{rnd}"
                    workdir.mkdir()
                    run_cluster(kind, size, prefix, workdir, res, args.idle,
                                args.join_timeout)
    print()
    header = (f"{'N':>4} {'kind':7} {'join s':>8} {'tail>2s':>8} {'failed s':>9} "
              f"{'left s':>7} {'event s':>8} {'query s':>8} {'q-ret s':>8} {'RSS MiB':>8} "
              f"{'CPU %':>6}")
    print(header)
    for (kind, size), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{size:>4} {kind:7} {fmt(r.join_times):>8} "
              f"{r.join_tail_clusters:>3}/{len(r.join_times):<4} {fmt(r.fail_times):>9} "
              f"{fmt(r.leave_times):>7} {fmt(r.event_times):>8} {fmt(r.query_times):>8} "
              f"{fmt(r.query_returns):>8} {fmt(r.rss_mib):>8} {fmt(r.cpu_pct):>6}")
    if "serf" in kinds and "pyserf" in kinds:
        print("\npyserf/serf ratios (targets: times <= 1.0, CPU <= 1.5; RSS target <= 30 MiB)")
        for size in sorted({s for _, s in results}):
            p, s = results[("pyserf", size)], results[("serf", size)]
            print(f"  N={size}: join {ratio(p.join_times, s.join_times)}  "
                  f"failed {ratio(p.fail_times, s.fail_times)}  "
                  f"left {ratio(p.leave_times, s.leave_times)}  "
                  f"event {ratio(p.event_times, s.event_times)}  "
                  f"query {ratio(p.query_times, s.query_times)}  "
                  f"query-return {ratio(p.query_returns, s.query_returns)}  "
                  f"idle CPU {ratio(p.cpu_pct, s.cpu_pct)}  "
                  f"RSS {fmt(p.rss_mib)} MiB vs {fmt(s.rss_mib)} MiB")
        misses = missed_targets(results)
        for miss in misses:
            print(f"  MISSED {miss}")
        if args.check and misses:
            return 1
    return 0


TIME_TARGET = 1.0  # pyserf/serf for every timing
CPU_TARGET = 1.5  # pyserf/serf idle CPU
RSS_TARGET_MIB = 30.0  # pyserf idle RSS per agent


def missed_targets(results: dict[tuple[str, int], Result]) -> list[str]:
    """The targets the printed ratios miss, for ``--check``."""
    misses = []
    for size in sorted({s for _, s in results}):
        p, s = results[("pyserf", size)], results[("serf", size)]
        pairs = [("join", p.join_times, s.join_times, TIME_TARGET),
                 ("failed", p.fail_times, s.fail_times, TIME_TARGET),
                 ("left", p.leave_times, s.leave_times, TIME_TARGET),
                 ("event", p.event_times, s.event_times, TIME_TARGET),
                 ("query", p.query_times, s.query_times, TIME_TARGET),
                 ("idle CPU", p.cpu_pct, s.cpu_pct, CPU_TARGET)]
        for name, mine, theirs, target in pairs:
            if not mine or not theirs:
                misses.append(f"N={size} {name}: no measurement")
            elif statistics.mean(theirs) > 0 and \
                    statistics.mean(mine) / statistics.mean(theirs) > target:
                misses.append(f"N={size} {name}: ratio {ratio(mine, theirs)} > {target}")
        if p.rss_mib and statistics.mean(p.rss_mib) > RSS_TARGET_MIB:
            misses.append(f"N={size} RSS {fmt(p.rss_mib)} MiB > {RSS_TARGET_MIB}")
    return misses


if __name__ == "__main__":
    sys.exit(main())
