"""Side-by-side cluster benchmark: pyserf agents vs the real serf binary on loopback.

For each cluster size it starts N agents of one kind, joins them all to the first, and measures:
join convergence (every agent lists N alive; "join s" counts from the last join RPC's
return, "storm s" from the first join sent), a user event -> the last agent's handler ran,
a query -> every agent's response arrived (and when the query call returned: serf always waits
out the timeout, pyserf returns once everyone answered), kill -9 -> every survivor lists it
failed, SIGINT -> every survivor lists it left, and idle RSS / CPU per agent. It also reports
the join storm itself: how long issuing the N-1 join RPCs took, the slowest join RPC, joins that
timed out (each is retried on a fresh connection and counted, never fatal), and the CPU seconds
the seed and the other agents spent from the first join until convergence. Then it prints
pyserf/serf ratios, and how each figure grows from the smallest to the largest size. Usage::

    python benchmarks/cluster_bench.py [--sizes 20,50] [--rounds 1] [--kinds serf,pyserf]
        [--check] [--json out.json] [--profile DIR] [--stop-after-join] [--keep DIR]
        [--counts]
    python benchmarks/cluster_bench.py --report out.json

``--check`` exits 1 when a target is missed: every time ratio <= 1.0, idle CPU per agent <=
serf's, RSS per agent <= 1.5x serf's in the same run.

pyserf runs as installed: HEAD's package is extracted to a temporary directory and
byte-compiled there (``compileall``), so agents load .pyc files instead of compiling every
module at start (this environment sets PYTHONDONTWRITEBYTECODE, which otherwise makes every
start compile). ``--source`` runs the working tree instead. Every agent runs in its own session:
with autogroup scheduling a session is one CPU share, so N agents sharing the benchmark's
session would get no more CPU than one niced job elsewhere. ``--profile DIR`` runs the seed and
one joiner under cProfile on CPU time (DIR/<kind>-<N>-<agent>.prof, top functions printed; see
cpu_profile.py); those runs are for finding a cost, not for the ratios. ``--counts`` has every
pyserf agent count datagrams, streams and its user/system CPU for the storm's two phases (joins
being issued; issued until converged): see agent_counts.py. Convergence, failure and leave are
polled with ``stats`` (member counts) and confirmed with the member list (see wait_all).

Agents bind 127.200-207.x.y (a fresh /24 per cluster) and are all stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import agent_counts  # noqa: E402 (beside this script)

from pyserf.client.rpc_client import RPCClient, RPCError  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_INTERVAL = 0.1
JOIN_WORKERS = 16  # join RPCs in flight at once
JOIN_ATTEMPTS = 3  # a join RPC that times out is retried on a fresh connection


@dataclass
class Proc:
    name: str
    ip: str
    popen: subprocess.Popen
    client: RPCClient | None = None
    profiled: bool = False

    @property
    def rpc(self) -> str:
        return f"{self.ip}:7373"


@dataclass
class Result:
    kind: str
    size: int
    join_times: list[float] = field(default_factory=list)  # per cluster: slowest agent
    join_tail_clusters: int = 0  # clusters where some agent needed > 2 s
    join_issue_s: list[float] = field(default_factory=list)  # first join sent -> last returned
    join_total_s: list[float] = field(default_factory=list)  # first join sent -> converged
    join_rpc_max_s: list[float] = field(default_factory=list)  # slowest single join RPC
    join_rpc_p50_s: list[float] = field(default_factory=list)
    join_timeouts: list[int] = field(default_factory=list)  # join RPCs that timed out
    join_failed: list[int] = field(default_factory=list)  # agents never joined after retries
    storm_cpu_seed_s: list[float] = field(default_factory=list)  # first join -> converged
    storm_cpu_agent_s: list[float] = field(default_factory=list)  # mean over the others
    storm_load: list[float] = field(default_factory=list)  # 1-min load average at convergence
    # Datagrams sent per agent from the first join until convergence, from the kernel's UDP
    # counters (every kind counted the same way; nothing else here speaks UDP meanwhile).
    storm_udp_agent: list[float] = field(default_factory=list)
    join_poll_s: list[float] = field(default_factory=list)  # joins issued -> convergence seen
    # --counts, per cluster: phase ("issue", "converge") -> {"seed": ..., "agent": mean of others}
    counts: list[dict[str, dict[str, dict[str, float]]]] = field(default_factory=list)
    fail_times: list[float] = field(default_factory=list)
    leave_times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)  # event sent -> last handler ran
    query_times: list[float] = field(default_factory=list)  # query sent -> all responses
    query_returns: list[float] = field(default_factory=list)  # query sent -> done record


def prepare_pyserf(tmp: Path, source: bool) -> tuple[Path, dict[str, str]]:
    """(working directory, environment) for pyserf agents: a byte-compiled copy of HEAD's
    package unless ``source`` (the working tree, compiled at every start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "COV_CORE"))}
    if source:
        env["PYTHONPATH"] = str(ROOT)
        return ROOT, env
    # The committed package (HEAD), so a run measures a known commit whatever is being edited.
    installed = tmp / "installed"
    installed.mkdir()
    # setup.py builds the compiled LZW codec; commits before it have none.
    paths = ["pyserf"]
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "HEAD:setup.py"],
                      capture_output=True).returncode == 0:
        paths.append("setup.py")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", *paths],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(installed)], input=archive, check=True)
    if "setup.py" in paths:
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                       cwd=installed, check=True, capture_output=True)
    if not compileall.compile_dir(installed / "pyserf", quiet=1, workers=2):
        raise SystemExit("compileall failed")
    env["PYTHONPATH"] = str(installed)
    return installed, env


def agent_argv(kind: str, name: str, ip: str, workdir: Path, profile: Path | None) -> list[str]:
    if kind == "serf":
        base = [shutil.which("serf") or "serf"]
    elif profile is not None:
        base = [sys.executable, str(ROOT / "benchmarks" / "cpu_profile.py"), str(profile)]
    else:
        base = [sys.executable, "-m", "pyserf"]
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


def connect(proc: Proc, deadline: float, reply_timeout: float = 10.0) -> RPCClient:
    while True:
        try:
            return RPCClient(proc.rpc, timeout=2.0, reply_timeout=reply_timeout)
        except (OSError, RPCError):
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise
            time.sleep(0.1)


def statuses(proc: Proc) -> dict[str, str]:
    try:
        return {m.name: m.status for m in proc.client.members()}
    except (OSError, RPCError):
        return {}


def serf_counts(proc: Proc) -> dict[str, int]:
    """The agent's member counts from ``stats`` (members, failed, left): a constant-size
    answer, where ``members`` lists N entries and at N=200 took seconds per polling round."""
    try:
        counts = proc.client.stats().get("serf", {})
        return {key: int(counts.get(key, -1)) for key in ("members", "failed", "left")}
    except (OSError, RPCError, ValueError):
        return {}


def seen(proc: Proc, quick, check) -> float | None:
    """When the agent answered that ``check(statuses)`` holds, or None. ``quick(counts)``
    is asked first, and the member list only once it holds."""
    if not quick(serf_counts(proc)):
        return None
    answered = time.monotonic()
    return answered if check(statuses(proc)) else None


def wait_all(pool: ThreadPoolExecutor, procs: list[Proc], quick, check, timeout: float
             ) -> dict[str, float]:
    """Poll every agent until ``check(statuses)`` holds; returns name -> seconds until it
    answered so. Rounds poll the cheap ``quick(counts)`` (necessary for ``check``), so a
    round at N=200 takes milliseconds, not the seconds 200 member lists took (the earlier
    results were timed per round, by when it started)."""
    start = time.monotonic()
    done: dict[str, float] = {}
    while len(done) < len(procs) and time.monotonic() - start < timeout:
        pending = [p for p in procs if p.name not in done]
        for proc, when in zip(pending, pool.map(lambda p: seen(p, quick, check), pending),
                              strict=True):
            if when is not None:
                done[proc.name] = when - start
        time.sleep(POLL_INTERVAL)
    return done


@dataclass
class JoinLog:
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def join_one(proc: Proc, seed: str, timeout: float, joins: JoinLog) -> None:
    """Join ``proc`` to the seed; a timed-out RPC is counted and retried on a new connection
    (the late reply would otherwise arrive on the old one)."""
    for _ in range(JOIN_ATTEMPTS):
        client = None
        try:
            client = connect(proc, time.monotonic() + timeout, reply_timeout=timeout)
            started = time.monotonic()
            client.join([seed])
            with joins.lock:
                joins.latencies.append(time.monotonic() - started)
            return
        except (OSError, RPCError) as exc:
            with joins.lock:
                joins.timeouts += 1
            print(f"    join of {proc.name} failed ({exc or type(exc).__name__}); retrying",
                  flush=True)
        finally:
            if client is not None:
                client.close()
    with joins.lock:
        joins.failed.append(proc.name)


def udp_datagrams_sent() -> int:
    """The kernel's count of UDP datagrams sent (all sockets in this network namespace)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("OutDatagrams")])


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


@dataclass
class Setup:
    workdir: Path
    idle_window: float
    join_timeout: float
    join_rpc_timeout: float
    py_cwd: Path
    py_env: dict[str, str]
    profile_dir: Path | None
    stop_after_join: bool
    shared_session: bool = False
    serf_env: dict[str, str] | None = None
    counts: bool = False
    kills: int = 1


def wait_listening(proc: Proc, deadline: float) -> None:
    """Block until the agent's RPC port accepts connections (or it died / time ran out)."""
    while time.monotonic() < deadline and proc.popen.poll() is None:
        try:
            socket.create_connection((proc.ip, 7373), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)


def start_agents(kind: str, size: int, prefix: str, setup: Setup) -> list[Proc]:
    # Each agent gets its own session: with autogroup scheduling (on here) a session is one
    # scheduling group, so N agents in the benchmark's session would share one CPU share with
    # every other session's (even niced) work; as separate sessions they compete like N
    # machines' agents would, and niced work elsewhere yields to them as intended.
    procs: list[Proc] = []
    profiled = {0, size // 2} if setup.profile_dir is not None and kind == "pyserf" else set()
    py_env = setup.py_env
    if setup.counts:
        (setup.workdir / "counts").mkdir()
        py_env = {**py_env, agent_counts.ENV: str(setup.workdir / "counts")}
    for i in range(size):
        name, ip = f"{kind[0]}{i}", f"{prefix}.{i + 1}"
        prof = setup.profile_dir / f"{kind}-{size}-{name}.prof" if i in profiled else None
        log = open(setup.workdir / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child)
        popen = subprocess.Popen(
            agent_argv(kind, name, ip, setup.workdir, prof), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=not setup.shared_session,
            cwd=setup.py_cwd if kind == "pyserf" else None,
            env=py_env if kind == "pyserf" else setup.serf_env)
        procs.append(Proc(name, ip, popen, profiled=prof is not None))
    return procs


def run_cluster(kind: str, size: int, prefix: str, setup: Setup, result: Result) -> None:
    procs: list[Proc] = []
    pool = ThreadPoolExecutor(max_workers=JOIN_WORKERS)
    try:
        started = time.monotonic()
        procs = start_agents(kind, size, prefix, setup)
        deadline = time.monotonic() + 60 + size  # 200 Python starts on 2 cores take a while
        list(pool.map(lambda p: wait_listening(p, deadline), procs))
        for proc in procs:
            proc.client = connect(proc, deadline)
        print(f"  {kind:6} N={size}: {size} agents answering RPC after "
              f"{time.monotonic() - started:.1f}s", flush=True)

        seed = procs[0]
        all_alive = lambda view: (  # noqa: E731
            len(view) == size and all(s == "alive" for s in view.values()))
        pids = [p.popen.pid for p in procs]
        counting = setup.counts and kind == "pyserf"
        if counting:
            agent_counts.signal_all(pids)
        cpu_before = usage(pids)
        udp_before = udp_datagrams_sent()
        joins = JoinLog()
        issued = time.monotonic()
        list(pool.map(lambda p: join_one(p, f"{seed.ip}:7946", setup.join_rpc_timeout, joins),
                      procs[1:]))
        issue_s = time.monotonic() - issued
        if counting:
            agent_counts.signal_all(pids)
        polled = time.monotonic()
        times = wait_all(pool, procs, lambda c: c == {"members": size, "failed": 0, "left": 0},
                         all_alive, setup.join_timeout)
        result.join_poll_s.append(time.monotonic() - polled)
        for proc in [p for p in procs if p.name not in times][:5]:
            view = statuses(proc)
            odd = {name: st for name, st in view.items() if st != "alive"}
            print(f"  {kind:6} N={size}: {proc.name} never converged: {serf_counts(proc)}, "
                  f"{len(view)} listed, not alive: {odd}", flush=True)
        if counting:
            agent_counts.signal_all(pids)
        # As in earlier results, convergence counts from the last join's return (issue_s is
        # reported beside it).
        cpu_after = usage(pids)
        result.storm_udp_agent.append((udp_datagrams_sent() - udp_before) / size)
        storm = [cpu_after[pid][0] - cpu_before[pid][0] for pid in pids
                 if pid in cpu_before and pid in cpu_after]
        result.storm_load.append(os.getloadavg()[0])
        result.join_issue_s.append(issue_s)
        result.join_rpc_max_s.append(max(joins.latencies, default=float("inf")))
        result.join_rpc_p50_s.append(statistics.median(joins.latencies)
                                     if joins.latencies else float("inf"))
        result.join_timeouts.append(joins.timeouts)
        result.join_failed.append(len(joins.failed))
        if storm:
            result.storm_cpu_seed_s.append(storm[0])
            result.storm_cpu_agent_s.append(statistics.mean(storm[1:]) if len(storm) > 1
                                            else 0.0)
        slowest = max(times.values()) if len(times) == size else float("inf")
        result.join_times.append(slowest)
        result.join_total_s.append(issue_s + slowest)
        if slowest > 2.0:
            result.join_tail_clusters += 1
        print(f"  {kind:6} N={size}: join converged in {slowest:.2f}s "
              f"(median agent {statistics.median(times.values()) if times else 0:.2f}s); "
              f"issuing the joins took {issue_s:.2f}s (RPC p50 {result.join_rpc_p50_s[-1]:.2f}s"
              f", max {result.join_rpc_max_s[-1]:.2f}s, {joins.timeouts} timed out, "
              f"{len(joins.failed)} never joined); storm CPU seed {storm[0] if storm else 0:.2f}s"
              f", others {result.storm_cpu_agent_s[-1] if storm else 0:.2f}s each; "
              f"{result.storm_udp_agent[-1]:.0f} datagrams sent per agent; "
              f"load {result.storm_load[-1]:.1f}; convergence seen {result.join_poll_s[-1]:.1f}s "
              f"after the last join returned", flush=True)
        if counting:
            report_counts(kind, size, setup.workdir / "counts", pids, result)
        if setup.stop_after_join:
            time.sleep(5.0)
            return

        time.sleep(3.0)  # let the join gossip drain before measuring
        result.event_times.append(measure_event(procs, setup.workdir))
        all_in, returned = measure_query(procs)
        result.query_times.append(all_in)
        result.query_returns.append(returned)
        print(f"  {kind:6} N={size}: event handled everywhere in "
              f"{result.event_times[-1]:.2f}s, query answered by all in {all_in:.2f}s, "
              f"returned after {returned:.2f}s", flush=True)
        time.sleep(2.0)
        before = usage(pids)
        time.sleep(setup.idle_window)
        after = usage(pids)
        for pid in pids:
            if pid in before and pid in after:
                result.cpu_pct.append(100 * (after[pid][0] - before[pid][0])
                                      / setup.idle_window)
                result.rss_mib.append(after[pid][1])

        # Each kill -9 is one sample of failure detection: the next victim dies once every
        # survivor lists the previous one failed, so the samples do not overlap.
        survivors = list(procs)
        for killed in range(1, setup.kills + 1):
            victim = random.choice([p for p in survivors[1:] if not p.profiled])
            victim.popen.kill()
            victim.popen.wait()
            survivors = [p for p in survivors if p is not victim]
            times = wait_all(pool, survivors, lambda c, k=killed: c.get("failed", 0) >= k,
                             lambda v, name=victim.name: v.get(name) == "failed", 60)
            result.fail_times.append(max(times.values()) if len(times) == len(survivors)
                                     else float("inf"))

        leaver = random.choice([p for p in survivors if p is not seed and not p.profiled])
        leaver.popen.send_signal(signal.SIGINT)
        remaining = [p for p in survivors if p is not leaver]
        times = wait_all(pool, remaining, lambda c: c.get("left", 0) >= 1,
                         lambda v: v.get(leaver.name) == "left", 60)
        result.leave_times.append(max(times.values()) if len(times) == len(remaining)
                                  else float("inf"))
        fails = ", ".join(f"{t:.2f}" for t in result.fail_times[-setup.kills:])
        print(f"  {kind:6} N={size}: failed seen in {fails}s, "
              f"left seen in {result.leave_times[-1]:.2f}s", flush=True)
    finally:
        pool.shutdown(wait=False)
        stop_all(procs)


def report_counts(kind: str, size: int, out_dir: Path, pids: list[int], result: Result
                  ) -> None:
    """Print and keep the --counts differences of the storm's two phases."""
    records = agent_counts.collect(out_dir, pids, 3)
    phases = {}
    for phase, label in enumerate(("issue", "converge")):
        seed, agent = agent_counts.phase_means(records, pids, phase)
        phases[label] = {"seed": seed, "agent": agent}
        print(f"  {kind:6} N={size}: {label:8} per agent: {agent_counts.text(agent)}", flush=True)
        print(f"  {kind:6} N={size}: {label:8} seed:      {agent_counts.text(seed)}", flush=True)
    if len(records) < len(pids):
        print(f"  {kind:6} N={size}: {len(pids) - len(records)} agents wrote no counts")
    result.counts.append(phases)


def stop_all(procs: list[Proc]) -> None:
    """Profiled agents get SIGINT (cProfile writes its file on a clean exit); the rest -9."""
    for proc in procs:
        if proc.client is not None:
            proc.client.close()
        if proc.popen.poll() is None:
            if proc.profiled:
                proc.popen.send_signal(signal.SIGINT)
            else:
                proc.popen.kill()
    for proc in procs:
        try:
            proc.popen.wait(30 if proc.profiled else 10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(10)


def print_profiles(profile_dir: Path) -> None:
    for path in sorted(profile_dir.glob("*.prof")):
        print(f"\n== {path.name}: top 25 by own time")
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(25)


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2f}"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or statistics.mean(b) == 0:
        return "-"
    return f"{statistics.mean(a) / statistics.mean(b):.2f}"


TIME_TARGET = 1.0  # pyserf/serf for every timing
CPU_TARGET = 1.0  # pyserf/serf idle CPU per agent
RSS_TARGET = 1.5  # pyserf/serf idle RSS per agent, both measured in the same run

# (label, Result attribute) for the table, the growth and the JSON.
FIGURES = [("join s", "join_times"), ("issue s", "join_issue_s"), ("storm s", "join_total_s"),
           ("jrpc max", "join_rpc_max_s"), ("storm seed", "storm_cpu_seed_s"),
           ("storm agt", "storm_cpu_agent_s"), ("storm udp", "storm_udp_agent"),
           ("failed s", "fail_times"),
           ("left s", "leave_times"), ("event s", "event_times"), ("query s", "query_times"),
           ("q-ret s", "query_returns"), ("RSS MiB", "rss_mib"), ("CPU %", "cpu_pct")]


def missed_targets(results: dict[tuple[str, int], Result]) -> list[str]:
    """The targets the printed ratios miss, for ``--check``."""
    misses = []
    for size in sorted({s for _, s in results}):
        p, s = results[("pyserf", size)], results[("serf", size)]
        pairs = [("join", p.join_times, s.join_times, TIME_TARGET),
                 ("join issue", p.join_issue_s, s.join_issue_s, TIME_TARGET),
                 ("join storm", p.join_total_s, s.join_total_s, TIME_TARGET),
                 ("failed", p.fail_times, s.fail_times, TIME_TARGET),
                 ("left", p.leave_times, s.leave_times, TIME_TARGET),
                 ("event", p.event_times, s.event_times, TIME_TARGET),
                 ("query", p.query_times, s.query_times, TIME_TARGET),
                 ("idle CPU", p.cpu_pct, s.cpu_pct, CPU_TARGET),
                 ("RSS", p.rss_mib, s.rss_mib, RSS_TARGET)]
        for name, mine, theirs, target in pairs:
            if not mine or not theirs:
                misses.append(f"N={size} {name}: no measurement")
            elif statistics.mean(theirs) > 0 and \
                    statistics.mean(mine) / statistics.mean(theirs) > target:
                misses.append(f"N={size} {name}: ratio {ratio(mine, theirs)} > {target}")
        if sum(p.join_failed):
            misses.append(f"N={size} joins: {sum(p.join_failed)} agents never joined")
    return misses


def report(results: dict[tuple[str, int], Result], kinds: list[str]) -> list[str]:
    print()
    print(f"{'N':>4} {'kind':7} {'tail>2s':>8} {'j-t/o':>5} "
          + " ".join(f"{label:>9}" for label, _ in FIGURES))
    for (kind, size), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{size:>4} {kind:7} {r.join_tail_clusters:>3}/{len(r.join_times):<4} "
              f"{sum(r.join_timeouts):>5} "
              + " ".join(f"{fmt(getattr(r, attr)):>9}" for _, attr in FIGURES))
    sizes = sorted({s for _, s in results})
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth N={lo} -> N={hi} (mean at {hi} / mean at {lo}; N grew {hi / lo:g}x)")
        for kind in kinds:
            if (kind, lo) in results and (kind, hi) in results:
                a, b = results[(kind, lo)], results[(kind, hi)]
                print(f"  {kind:7}" + "  ".join(
                    f"{label} {ratio(getattr(b, attr), getattr(a, attr))}"
                    for label, attr in FIGURES))
    if "serf" not in kinds or "pyserf" not in kinds:
        return []
    print(f"\npyserf/serf ratios (targets: times <= {TIME_TARGET}, idle CPU per agent <= "
          f"{CPU_TARGET}, RSS per agent <= {RSS_TARGET})")
    for size in sizes:
        p, s = results[("pyserf", size)], results[("serf", size)]
        print(f"  N={size}: join {ratio(p.join_times, s.join_times)}  "
              f"failed {ratio(p.fail_times, s.fail_times)}  "
              f"left {ratio(p.leave_times, s.leave_times)}  "
              f"event {ratio(p.event_times, s.event_times)}  "
              f"query {ratio(p.query_times, s.query_times)}  "
              f"query-return {ratio(p.query_returns, s.query_returns)}  "
              f"idle CPU {ratio(p.cpu_pct, s.cpu_pct)}  "
              f"RSS {ratio(p.rss_mib, s.rss_mib)} ({fmt(p.rss_mib)} vs {fmt(s.rss_mib)} MiB)  "
              f"join issue {ratio(p.join_issue_s, s.join_issue_s)}  "
              f"join storm {ratio(p.join_total_s, s.join_total_s)}  "
              f"storm CPU/agent {ratio(p.storm_cpu_agent_s, s.storm_cpu_agent_s)}  "
              f"storm datagrams/agent {ratio(p.storm_udp_agent, s.storm_udp_agent)}")
    misses = missed_targets(results)
    for miss in misses:
        print(f"  MISSED {miss}")
    return misses


def prioritise_observer(nice: int) -> str:
    """Give the benchmark's own session (autogroup) the weight of ``nice``.

    Under a 200-agent storm (load 30-70) the benchmark is one session among 200: its 16 join
    and polling threads waited for the CPU like any agent, so a polling round took seconds and
    the join RPCs' timing included the observer's own queueing. A heavier group runs the
    observer promptly; it is idle between its calls, so the agents keep the CPU otherwise."""
    path = Path("/proc/self/autogroup")
    try:
        path.write_text(str(nice))
        return path.read_text().strip().split(" ", 1)[1]
    except (OSError, IndexError):
        return "unchanged (no autogroup)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--rounds", type=int, default=1, help="clusters per kind and size")
    parser.add_argument("--observer-nice", type=int, default=-10,
                        help="nice of the benchmark's own autogroup (0: as started)")
    parser.add_argument("--kinds", default="serf,pyserf")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window in seconds")
    parser.add_argument("--join-timeout", type=float, default=100.0,
                        help="seconds to wait for join convergence")
    parser.add_argument("--join-rpc-timeout", type=float, default=30.0,
                        help="seconds one join RPC may take before it is retried")
    parser.add_argument("--source", action="store_true",
                        help="run pyserf from the checkout (compiling at every start)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the pyserf seed and one joiner under cProfile into DIR")
    parser.add_argument("--stop-after-join", action="store_true",
                        help="measure only the join storm")
    parser.add_argument("--shared-session", action="store_true",
                        help="agents stay in the benchmark's session (one autogroup CPU share)")
    parser.add_argument("--serf-gomaxprocs", type=int, metavar="N",
                        help="run serf with GOMAXPROCS=N (its default is the core count)")
    parser.add_argument("--kills", type=int, default=1, metavar="K",
                        help="kill -9 K agents one after another per cluster (K samples of "
                             "failure detection)")
    parser.add_argument("--counts", action="store_true",
                        help="pyserf agents count datagrams, streams and CPU per storm phase")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR (agent logs kept) instead of a temporary directory")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a pyserf/serf target is missed")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="print the tables of an earlier --json file instead of running")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        loaded = {}
        for raw in saved["results"]:
            res = Result(**raw)
            if not res.join_total_s:  # files from before that figure was recorded
                res.join_total_s = [a + b for a, b in zip(res.join_issue_s, res.join_times,
                                                          strict=True)]
            loaded[(res.kind, res.size)] = res
        print(f"# {' '.join(saved['argv'])}")
        misses = report(loaded, sorted({k for k, _ in loaded}, reverse=True))
        return 1 if args.check and misses else 0
    smallest = min(int(n) for n in args.sizes.split(","))
    if not 1 <= args.kills <= smallest - 3:
        parser.error(f"--kills must be between 1 and {smallest - 3} (the smallest size less "
                     "the seed, the leaver and one survivor)")
    if "serf" in kinds and not shutil.which("serf"):
        print("serf not found: apt-get install serf", file=sys.stderr)
        return 1
    observer = prioritise_observer(args.observer_nice)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print(f"# {' '.join(sys.argv)}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"pyserf {'working tree from source' if args.source else head + ' byte-compiled'}; "
          f"load before start {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; "
          f"benchmark's scheduling group {observer})", flush=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    serf_env = None
    if args.serf_gomaxprocs:
        serf_env = {**os.environ, "GOMAXPROCS": str(args.serf_gomaxprocs)}
    results: dict[tuple[str, int], Result] = {}
    subnet = 0
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(tempfile.mkdtemp(prefix="pyserf-bench-", dir=args.keep))
          if args.keep is not None else tempfile.TemporaryDirectory(prefix="pyserf-bench-")
          ) as tmp:
        py_cwd, py_env = prepare_pyserf(Path(tmp), args.source)
        if args.counts:
            agent_counts.install(Path(tmp) / "hook", py_env)
        for size in (int(s) for s in args.sizes.split(",")):
            for rnd in range(args.rounds):
                for kind in kinds:
                    res = results.setdefault((kind, size), Result(kind, size))
                    prefix = f"127.{200 + subnet // 250}.{subnet % 250}"
                    subnet += 1
                    workdir = Path(tmp) / f"{kind}-{size}-{rnd}"
                    workdir.mkdir()
                    setup = Setup(workdir, args.idle, args.join_timeout, args.join_rpc_timeout,
                                  py_cwd, py_env, args.profile, args.stop_after_join,
                                  args.shared_session, serf_env, args.counts, args.kills)
                    run_cluster(kind, size, prefix, setup, res)
    misses = report(results, kinds)
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"argv": sys.argv, "byte_compiled": not args.source,
             "results": [asdict(r) for r in results.values()], "missed": misses},
            indent=1) + "\n")
    if args.profile is not None:
        print_profiles(args.profile)
    return 1 if args.check and misses else 0


if __name__ == "__main__":
    sys.exit(main())
