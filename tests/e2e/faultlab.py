"""A fault lab: serf and pyserf agents, each in its own network namespace on one bridge, with
faults applied per host, bounded in time, and everything the agents say recorded with a time.

Used by ``benchmarks/faults.py`` (the long campaigns, side by side with serf) and by
``tests/e2e/test_faults.py`` (a short bounded scenario of each kind asserting invariants).

What is observed, and how:
- Every agent's log is read as it is written and stamped on arrival (serf stamps whole seconds
  only). Membership verdicts come from the serf-layer lines both implementations write,
  ``serf: EventMemberFailed/Join/Leave: <name>``: these are written before the agent's 3 s
  member-event coalescing, so a short flap is seen even when handlers never hear of it.
- One RPC ``stream`` per agent receives user events (to count losses and duplicates) and answers
  the harness's queries, so the answers measure the protocol, not the spawning of handlers.
- Faults are host-local: iptables chains in each namespace (partitions, one-way drops, random
  loss), tc netem when the kernel has it (delay), the cgroup ``cpu`` controller (v2 ``cpu.max``
  or v1 ``cpu.cfs_quota_us``) and SIGSTOP/SIGCONT. Only hosts, rules, cgroups and processes
  created here are touched, and :meth:`Lab.close` removes them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pyserf.client.rpc_client import RPCClient, RPCError
from tests.e2e.harness import CHILD_ENV, PYSERF, SERF

QUERY_NAME = "fq"
EVENT_NAME = "fe"

_VERDICT = re.compile(r"serf: EventMember(Join|Failed|Leave)(?: \(forced\))?: (\S+)")
_SUSPECT = re.compile(r"memberlist: Suspect (\S+) has failed")

_LABS = itertools.count()
LOCK = "/run/pyserf-faultlab.lock"  # held while a lab picks its subnet
CG_V2 = Path("/sys/fs/cgroup")
CG_V1 = Path("/sys/fs/cgroup/cpu")


def run(*argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip() or out.returncode}")
    return out


def missing_prerequisites() -> list[str]:
    """Why this machine cannot run the lab ([] when it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("root")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            why.append(tool)
    if SERF is None:
        why.append("the serf binary (apt-get install serf)")
    if cpu_cgroup_kind() is None:
        why.append("a cgroup cpu controller")
    return why


def cpu_cgroup_kind() -> str | None:
    """'v2' when cpu.max is usable, 'v1' for cpu.cfs_quota_us, None without either."""
    controllers = CG_V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return "v2"
    if (CG_V1 / "cpu.cfs_quota_us").exists():
        return "v1"
    return None


# ---- what the lab saw -------------------------------------------------------------------------


@dataclass
class Verdict:
    """One membership verdict an observer logged: kind is 'join', 'failed' or 'leave'."""

    t: float
    observer: str
    member: str
    kind: str


@dataclass
class Agent:
    kind: str  # "pyserf" or "serf"
    name: str
    ip: str
    netns: str
    veth: str
    workdir: Path
    proc: subprocess.Popen | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    starts: int = 0

    @property
    def rpc(self) -> str:
        return f"{self.ip}:7373"

    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "\n".join(line for _t, line in self.lines)


@dataclass
class Fault:
    """A fault that made ``hosts`` unreachable, down, slow or paused from t0 to t1."""

    kind: str
    hosts: frozenset[str]
    t0: float
    t1: float = float("inf")
    # For partitions: which pairs could not talk. None means the hosts could reach nobody.
    cut: Callable[[str, str], bool] | None = None


class Cluster:
    """One serf cluster inside the lab: its agents share a /24."""

    def __init__(self, lab: Lab, label: str, kinds: list[str]) -> None:
        self.lab = lab
        self.label = label
        self.index = len(lab.clusters) + 1
        self.agents: list[Agent] = []
        self.verdicts: list[Verdict] = []
        self.events: dict[str, Counter[str]] = defaultdict(Counter)  # observer -> payload count
        self.event_times: dict[tuple[str, str], float] = {}  # (observer, payload) -> first seen
        self.fired: list[tuple[float, str, str]] = []  # (t, sender, payload)
        self.queries: list[dict] = []
        self.faults: list[Fault] = []
        self.suspects: list[tuple[float, str, str]] = []
        self.heal_began: float | None = None
        # Payload numbers never repeat in a cluster's life: a test's late event must not pass
        # for the next test's event of the same number (a false duplicate).
        self.event_numbers = itertools.count()
        self._lock = threading.Lock()
        self._streams: dict[str, RPCClient] = {}
        self.subnet = f"{lab.prefix}.{self.index}"
        for i, kind in enumerate(kinds):
            name = f"{label}{i:02d}"
            agent = Agent(kind, name, f"{self.subnet}.{i + 2}", f"{lab.tag}-{self.index}-{i}",
                          f"{lab.tag}c{self.index}h{i}", lab.workdir / name)
            agent.workdir.mkdir(parents=True, exist_ok=True)
            self.agents.append(agent)

    # ---- processes ------------------------------------------------------------------------

    def argv(self, agent: Agent, join: str | None) -> list[str]:
        base = [SERF] if agent.kind == "serf" else list(PYSERF)
        argv = [*base, "agent", f"-node={agent.name}", f"-bind={agent.ip}:7946",
                f"-rpc-addr={agent.rpc}", f"-snapshot={agent.workdir / 'snapshot'}",
                "-log-level=info"]
        if join:
            argv.append(f"-join={join}:7946")
        return argv

    def start(self, agent: Agent, join: str | None, wait: float = 30.0) -> None:
        """Start (or restart) an agent in its namespace; returns once its RPC answers."""
        argv = ["ip", "netns", "exec", agent.netns, *self.argv(agent, join)]
        agent.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                      cwd=agent.workdir)
        agent.starts += 1
        threading.Thread(target=self._read_log, args=(agent, agent.proc), daemon=True).start()
        deadline = time.monotonic() + wait
        while not any("agent running" in line for _t, line in agent.lines[-50:]):
            if not agent.up():
                raise RuntimeError(f"{agent.name} exited:\n{agent.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{agent.name} did not start in {wait}s")
            time.sleep(0.05)
        self.watch(agent)

    def _read_log(self, agent: Agent, proc: subprocess.Popen) -> None:
        with open(agent.workdir / "agent.log", "ab") as copy:
            for raw in proc.stdout:
                now = time.monotonic()
                copy.write(raw)
                line = raw.decode(errors="replace").rstrip("\n")
                agent.lines.append((now, line))
                verdict = _VERDICT.search(line)
                if verdict:
                    with self._lock:
                        self.verdicts.append(Verdict(now, agent.name, verdict.group(2),
                                                     verdict.group(1).lower()))
                suspect = _SUSPECT.search(line)
                if suspect:
                    with self._lock:
                        self.suspects.append((now, agent.name, suspect.group(1)))

    def kill(self, agent: Agent, sig: int = signal.SIGKILL, wait: float = 20.0) -> None:
        """Signal the agent's process (started here) and wait for it to exit."""
        if agent.up():
            agent.proc.send_signal(sig)
            try:
                agent.proc.wait(wait)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)
        self._drop_stream(agent)

    def close(self) -> None:
        for agent in self.agents:
            if agent.up():
                agent.proc.kill()
        for agent in self.agents:
            if agent.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.proc.wait(10)
            self._drop_stream(agent)

    # ---- RPC --------------------------------------------------------------------------------

    def client(self, agent: Agent, reply_timeout: float = 10.0) -> RPCClient:
        return RPCClient(agent.rpc, timeout=3.0, reply_timeout=reply_timeout)

    def statuses(self, agent: Agent) -> dict[str, str]:
        try:
            with self.client(agent, reply_timeout=5.0) as client:
                return {m.name: m.status for m in client.members()}
        except (RPCError, OSError):
            return {}

    def watch(self, agent: Agent) -> None:
        """Subscribe to the agent's user events and queries; answer each query at once."""
        client = self.client(agent, reply_timeout=None)
        stream = client.stream(f"user:{EVENT_NAME},query:{QUERY_NAME}")
        self._streams[agent.name] = client

        def pump() -> None:
            while not stream.finished:
                record = stream.next(timeout=1.0)
                if record is None:
                    continue
                now = time.monotonic()
                if record.get("Event") == "query":
                    with contextlib.suppress(RPCError, OSError):
                        client.respond(record["ID"], agent.name.encode())
                    continue
                payload = bytes(record.get("Payload") or b"").decode(errors="replace")
                with self._lock:
                    self.events[agent.name][payload] += 1
                    self.event_times.setdefault((agent.name, payload), now)

        threading.Thread(target=pump, daemon=True).start()

    def _drop_stream(self, agent: Agent) -> None:
        client = self._streams.pop(agent.name, None)
        if client is not None:
            client.close()

    def fire_event(self, sender: Agent, payload: str) -> bool:
        try:
            with self.client(sender) as client:
                client.user_event(EVENT_NAME, payload.encode(), coalesce=False)
        except (RPCError, OSError):
            return False
        with self._lock:
            self.fired.append((time.monotonic(), sender.name, payload))
        return True

    def fire_query(self, origin: Agent) -> None:
        t0 = time.monotonic()
        acks: set[str] = set()
        responses: set[str] = set()
        try:
            with self.client(origin, reply_timeout=60.0) as client:
                for record in client.query(QUERY_NAME, b"q", request_ack=True):
                    (acks if record["Type"] == "ack" else responses).add(record["From"])
        except (RPCError, OSError):
            return
        with self._lock:
            self.queries.append({"t": t0, "t1": time.monotonic(), "origin": origin.name,
                                 "acks": sorted(acks), "responses": sorted(responses)})

    # ---- helpers for scenarios -------------------------------------------------------------

    def by_index(self, indices: Iterable[int]) -> list[Agent]:
        return [self.agents[i] for i in indices]

    def names(self, agents: Iterable[Agent]) -> frozenset[str]:
        return frozenset(a.name for a in agents)

    def kind_of(self, name: str) -> str:
        return next(a.kind for a in self.agents if a.name == name)


class Lab:
    """Network namespaces on one bridge, with agents and faults; :meth:`close` undoes it all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Unique per lab on this machine; short, as it prefixes interface names (15 chars).
        self.tag = f"pf{os.getpid() % 100000}{next(_LABS) % 10}"
        self.bridge = f"{self.tag}br"
        self.prefix = ""  # chosen with the bridge, under a lock (two labs may start at once)
        self.clusters: list[Cluster] = []
        self.netns: list[str] = []
        self.cgroups: list[Path] = []
        self.netem = False
        self.throttled: dict[str, dict[str, int]] = {}
        self.pool = ThreadPoolExecutor(max_workers=16)
        self._bridge_up = False

    @staticmethod
    def _free_prefix() -> str:
        """A 10.x/16 no interface of this machine uses, so two labs never overlap."""
        used = run("ip", "-4", "-o", "addr").stdout
        nets = [ipaddress.ip_interface(w).network for w in used.split() if "/" in w]
        for second in range(200, 250):
            candidate = ipaddress.ip_network(f"10.{second}.0.0/16")
            if not any(candidate.overlaps(n) for n in nets):
                return f"10.{second}"
        raise RuntimeError("no free 10.x/16 for the lab")

    def cluster(self, label: str, kinds: list[str]) -> Cluster:
        if not self._bridge_up:
            with open(LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _make_room_for_neighbours()
                self.prefix = self._free_prefix()
                run("ip", "link", "add", self.bridge, "type", "bridge")
                self._bridge_up = True
                run("ip", "addr", "add", f"{self.prefix}.0.1/16", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
        cluster = Cluster(self, label, kinds)
        self.clusters.append(cluster)
        list(self.pool.map(self._make_host, cluster.agents))
        return cluster

    def _make_host(self, agent: Agent) -> None:
        run("ip", "netns", "add", agent.netns)
        self.netns.append(agent.netns)
        run("ip", "link", "add", agent.veth, "type", "veth", "peer", "name", "eth0", "netns",
            agent.netns)
        run("ip", "link", "set", agent.veth, "master", self.bridge, "up")
        ns = ("ip", "-n", agent.netns)
        run(*ns, "addr", "add", f"{agent.ip}/16", "dev", "eth0")
        run(*ns, "link", "set", "eth0", "up")
        run(*ns, "link", "set", "lo", "up")
        # Faults live in two chains of the host's own tables, flushed to heal.
        self.iptables(agent, "-N", "FAULT_IN")
        self.iptables(agent, "-N", "FAULT_OUT")
        self.iptables(agent, "-A", "INPUT", "-j", "FAULT_IN")
        self.iptables(agent, "-A", "OUTPUT", "-j", "FAULT_OUT")

    def iptables(self, agent: Agent, *args: str) -> None:
        run("ip", "netns", "exec", agent.netns, "iptables", "-w", *args)

    def probe_netem(self, agent: Agent) -> str | None:
        """None when tc netem works in the namespace, else why not (this kernel may lack it)."""
        out = run("ip", "netns", "exec", agent.netns, "tc", "qdisc", "add", "dev", "eth0",
                  "root", "netem", "delay", "1ms", check=False)
        if out.returncode == 0:
            run("ip", "netns", "exec", agent.netns, "tc", "qdisc", "del", "dev", "eth0", "root",
                check=False)
            self.netem = True
            return None
        return out.stderr.strip() or f"tc exited {out.returncode}"

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.close()
        for cg in reversed(self.cgroups):
            with contextlib.suppress(OSError):
                cg.rmdir()
        for ns in self.netns:
            run("ip", "netns", "del", ns, check=False)
        for cluster in self.clusters:
            for agent in cluster.agents:  # gone with the namespace, unless something held it
                run("ip", "link", "del", agent.veth, check=False)
        if self._bridge_up:
            with open(LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                run("ip", "link", "del", self.bridge, check=False)
                _restore_neighbour_limits()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- forming clusters -------------------------------------------------------------------

    def form(self, clusters: list[Cluster], timeout: float = 90.0) -> float:
        """Start every agent (each joining its cluster's first), wait until all see all alive."""
        t0 = time.monotonic()
        list(self.pool.map(lambda c: c.start(c.agents[0], None), clusters))

        def start(c: Cluster, a: Agent) -> None:
            # Dozens of agents starting at once on 2 cores can time a join out: retry it.
            for attempt in range(3):
                try:
                    return c.start(a, c.agents[0].ip)
                except RuntimeError:
                    if attempt == 2:
                        raise
                    time.sleep(2.0)

        list(self.pool.map(lambda ca: start(*ca), [(c, a) for c in clusters
                                                   for a in c.agents[1:]]))
        self.wait_converged(clusters, timeout)
        return time.monotonic() - t0

    def wait_converged(self, clusters: list[Cluster], timeout: float) -> float | None:
        """Seconds until every running agent lists every running agent alive (None: never)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(self.pool.map(converged, clusters)):
                return time.monotonic() - t0
            time.sleep(0.5)
        return None

    # ---- faults -----------------------------------------------------------------------------

    def partition(self, cluster: Cluster, a: list[Agent], b: list[Agent],
                  one_way: bool = False) -> Fault:
        """Drop B's packets at A's hosts and (unless one_way) A's at B's: A -/-> B only when
        one_way, i.e. A hears nothing from B but B still hears A."""
        jobs = [(h, b) for h in a] + ([] if one_way else [(h, a) for h in b])
        list(self.pool.map(lambda j: self._drop_from(*j), jobs))
        names_a, names_b = cluster.names(a), cluster.names(b)

        def cut(x: str, y: str) -> bool:
            return (x in names_a and y in names_b) or (x in names_b and y in names_a)

        return self._record(cluster, Fault("one-way" if one_way else "partition",
                                           names_a | names_b, time.monotonic(), cut=cut))

    def isolate(self, cluster: Cluster, agent: Agent) -> Fault:
        peers = [a for a in cluster.agents if a is not agent]
        ips = ",".join(p.ip for p in peers)
        self.iptables(agent, "-A", "FAULT_IN", "-s", ips, "-j", "DROP")
        self.iptables(agent, "-A", "FAULT_OUT", "-d", ips, "-j", "DROP")
        name = agent.name
        return self._record(cluster, Fault("isolated", frozenset({name}), time.monotonic(),
                                           cut=lambda x, y: x != y and name in (x, y)))

    def _drop_from(self, host: Agent, senders: list[Agent]) -> None:
        self.iptables(host, "-A", "FAULT_IN", "-s", ",".join(s.ip for s in senders), "-j",
                      "DROP")

    def loss(self, cluster: Cluster, hosts: list[Agent], probability: float) -> Fault:
        """Drop each packet from a cluster peer with ``probability`` on arrival at each host.

        Applied on input at every host, every packet between two lossy hosts is exposed once,
        as with netem on egress; the harness's own RPC (from the bridge address) is spared.
        """
        def apply(host: Agent) -> None:
            self.iptables(host, "-A", "FAULT_IN", "-s", f"{cluster.subnet}.0/24", "-m",
                          "statistic", "--mode", "random", "--probability", f"{probability}",
                          "-j", "DROP")

        list(self.pool.map(apply, hosts))
        # Loss does not make a host unreachable or down: recorded for the report only.
        return Fault(f"loss {probability:.0%}", cluster.names(hosts), time.monotonic())

    def delay(self, cluster: Cluster, hosts: list[Agent], ms: int, jitter_ms: int) -> Fault:
        def apply(host: Agent) -> None:
            run("ip", "netns", "exec", host.netns, "tc", "qdisc", "add", "dev", "eth0", "root",
                "netem", "delay", f"{ms}ms", f"{jitter_ms}ms")

        list(self.pool.map(apply, hosts))
        return Fault(f"delay {ms}ms", cluster.names(hosts), time.monotonic())

    def heal(self, cluster: Cluster, hosts: Iterable[Agent] | None = None) -> float:
        """Flush every fault rule (and netem) on the hosts; returns when the healing began,
        which is what reconvergence is measured from (so it includes the flushing itself)."""
        began = time.monotonic()
        cluster.heal_began = began
        def flush(host: Agent) -> None:
            self.iptables(host, "-F", "FAULT_IN")
            self.iptables(host, "-F", "FAULT_OUT")
            if self.netem:
                run("ip", "netns", "exec", host.netns, "tc", "qdisc", "del", "dev", "eth0",
                    "root", check=False)

        list(self.pool.map(flush, list(hosts or cluster.agents)))
        now = time.monotonic()
        for fault in cluster.faults:
            if fault.t1 == float("inf") and fault.kind in ("partition", "one-way", "isolated"):
                fault.t1 = now
        return began

    def starve(self, cluster: Cluster, agents: list[Agent], percent: float,
               period_us: int = 100_000) -> Fault:
        """Cap each agent (and the handlers it spawns) at ``percent`` of one core, enforced
        per ``period_us``: a long period makes the agent run in rare bursts and fall behind
        its socket, as on a host that is busy for whole seconds."""
        kind = cpu_cgroup_kind()
        root = CG_V2 if kind == "v2" else CG_V1
        parent = root / f"{self.lab_cgroup_name}"
        if parent not in self.cgroups:
            parent.mkdir(exist_ok=True)
            self.cgroups.append(parent)
            if kind == "v2":
                with contextlib.suppress(OSError):
                    (root / "cgroup.subtree_control").write_text("+cpu")
                (parent / "cgroup.subtree_control").write_text("+cpu")
        period = period_us
        for agent in agents:
            cg = parent / agent.name
            cg.mkdir(exist_ok=True)
            if cg not in self.cgroups:
                self.cgroups.append(cg)
            quota = max(1000, int(period * percent / 100))
            if kind == "v2":
                (cg / "cpu.max").write_text(f"{quota} {period}")
            else:
                (cg / "cpu.cfs_period_us").write_text(str(period))
                (cg / "cpu.cfs_quota_us").write_text(str(quota))
            (cg / "cgroup.procs").write_text(str(agent.proc.pid))
        return self._record(cluster, Fault(f"starved {percent:g}%", cluster.names(agents),
                                           time.monotonic()))

    @property
    def lab_cgroup_name(self) -> str:
        return f"{self.tag}-faults"

    def unstarve(self, cluster: Cluster, agents: list[Agent]) -> None:
        root = CG_V2 if cpu_cgroup_kind() == "v2" else CG_V1
        for agent in agents:
            cg = root / self.lab_cgroup_name / agent.name
            # Proof the cap bit: periods throttled and the time held back.
            with contextlib.suppress(OSError):
                stat = dict(line.split() for line in (cg / "cpu.stat").read_text().splitlines())
                self.throttled[agent.name] = {k: int(v) for k, v in stat.items()}
            if agent.up():
                # Back to the root group, with every thread and child the agent has now.
                with contextlib.suppress(OSError):
                    for pid in (cg / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            (root / "cgroup.procs").write_text(pid)
        self._end(cluster, "starved", time.monotonic())

    def _record(self, cluster: Cluster, fault: Fault) -> Fault:
        cluster.faults.append(fault)
        return fault

    def _end(self, cluster: Cluster, prefix: str, t: float) -> None:
        for fault in cluster.faults:
            if fault.kind.startswith(prefix) and fault.t1 == float("inf"):
                fault.t1 = t


# The kernel's ARP and NDP tables are shared by every namespace and capped by the host's
# gc_thresh3 (1024 by default): 60 agents that each know 20 peers already overflow it, and an
# overflowing table drops packets ("neighbor table overflow"), which would show up as false
# failures. While any lab runs the limits are raised; the last lab to close restores them.
NEIGH_LIMITS = {f"/proc/sys/net/ipv{v}/neigh/default/gc_thresh{i}": room
                for v in (4, 6) for i, room in ((1, 4096), (2, 16384), (3, 32768))}
NEIGH_SAVED = Path("/run/pyserf-faultlab.neigh.json")


def _make_room_for_neighbours() -> None:
    if not NEIGH_SAVED.exists():
        NEIGH_SAVED.write_text(json.dumps({p: Path(p).read_text().strip()
                                           for p in NEIGH_LIMITS}))
    for path, room in NEIGH_LIMITS.items():
        if int(Path(path).read_text()) < room:
            Path(path).write_text(str(room))


def _restore_neighbour_limits() -> None:
    bridges = run("ip", "-o", "link", "show", "type", "bridge").stdout
    if re.search(r"\d+: pf\d+br[:@]", bridges) or not NEIGH_SAVED.exists():
        return  # another lab still runs
    for path, value in json.loads(NEIGH_SAVED.read_text()).items():
        with contextlib.suppress(OSError):
            Path(path).write_text(value)
    NEIGH_SAVED.unlink()


def converged_report(cluster: Cluster) -> dict[str, dict[str, str]]:
    """What each running agent lists, for failure messages."""
    return {a.name: cluster.statuses(a) for a in cluster.agents if a.up()}


def converged(cluster: Cluster) -> bool:
    """Every running agent lists every running agent alive and the others not alive."""
    up = [a for a in cluster.agents if a.up()]
    want = {a.name for a in up}
    for agent in up:
        view = cluster.statuses(agent)
        if {n for n, s in view.items() if s == "alive"} != want:
            return False
    return True


# ---- background load: events, queries, pauses, churn -----------------------------------------


class Every:
    """Run ``action`` every ``period`` seconds on a thread until stopped (bounded by ``limit``)."""

    def __init__(self, period: float, action: Callable[[int], None], limit: float) -> None:
        self.period = period
        self.action = action
        self.limit = limit
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        end = time.monotonic() + self.limit
        n = 0
        while not self.stopped.is_set() and time.monotonic() < end:
            with contextlib.suppress(Exception):
                self.action(n)
            n += 1
            self.stopped.wait(self.period)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(self.period + 90)


def traffic(lab: Lab, clusters: list[Cluster], senders: dict[str, list[Agent]],
            event_every: float, query_every: float, limit: float, rng: random.Random
            ) -> list[Every]:
    """User events and queries from random always-up agents of each cluster, throughout."""
    def event(_n: int) -> None:
        for c in clusters:
            live = [a for a in senders[c.label] if a.up()]
            if live:
                lab.pool.submit(c.fire_event, rng.choice(live),
                                f"{c.label}-{next(c.event_numbers)}")

    def query(_n: int) -> None:
        for c in clusters:
            live = [a for a in senders[c.label] if a.up()]
            if live:
                lab.pool.submit(c.fire_query, rng.choice(live))

    return [Every(event_every, event, limit), Every(query_every, query, limit)]


def pauses(lab: Lab, clusters: list[Cluster], indices: list[int], stop_for: float,
           every: float, limit: float) -> Every:
    """SIGSTOP the chosen agents for ``stop_for`` seconds every ``every`` seconds (GC-like)."""
    for c in clusters:
        lab._record(c, Fault("paused", c.names(c.by_index(indices)), time.monotonic()))

    def pause(_n: int) -> None:
        victims = [a for c in clusters for a in c.by_index(indices) if a.up()]
        for a in victims:
            a.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(stop_for)
        finally:
            for a in victims:
                a.proc.send_signal(signal.SIGCONT)

    return Every(every, pause, limit)


def end_pauses(lab: Lab, clusters: list[Cluster], indices: list[int]) -> None:
    for c in clusters:
        for a in c.by_index(indices):
            if a.up():
                a.proc.send_signal(signal.SIGCONT)
        lab._end(c, "paused", time.monotonic())


class Churn:
    """Every ``every`` s one running churnable agent is killed (-9) or leaves (SIGINT); it is
    restarted after 5-20 s with its snapshot, joining a random always-up agent."""

    def __init__(self, lab: Lab, clusters: list[Cluster], churnable: list[int],
                 stable: list[int], every: float, limit: float, rng: random.Random,
                 restart: tuple[float, float] = (5.0, 20.0)) -> None:
        self.lab, self.clusters, self.rng = lab, clusters, rng
        self.churnable, self.stable = churnable, stable
        self.restart = restart
        self.kills: list[dict] = []
        self.timers: list[threading.Timer] = []
        self.every = Every(every, self._step, limit)

    def _step(self, n: int) -> None:
        # The same host index and action in every cluster, so the comparison is like for like.
        candidates = [i for i in self.churnable
                      if all(c.agents[i].up() for c in self.clusters)]
        if not candidates:
            return
        index = self.rng.choice(candidates)
        graceful = self.rng.random() < 0.5
        delay = self.rng.uniform(*self.restart)
        for c in self.clusters:
            agent = c.agents[index]
            t = time.monotonic()
            c.kill(agent, signal.SIGINT if graceful else signal.SIGKILL)
            fault = Fault("left" if graceful else "killed", frozenset({agent.name}), t)
            c.faults.append(fault)
            self.kills.append({"cluster": c.label, "agent": agent.name, "t": t,
                               "graceful": graceful})
            timer = threading.Timer(delay, self._restart, args=(c, agent, fault))
            timer.daemon = True
            self.timers.append(timer)
            timer.start()

    def _restart(self, cluster: Cluster, agent: Agent, fault: Fault) -> None:
        seeds = [a for a in cluster.by_index(self.stable) if a.up()]
        with contextlib.suppress(Exception):
            cluster.start(agent, self.rng.choice(seeds).ip if seeds else None)
        fault.t1 = time.monotonic()

    def stop(self) -> None:
        self.every.stop()
        for timer in self.timers:
            timer.join(30)


# ---- measures ---------------------------------------------------------------------------------


HOST_DOWN = ("killed", "left", "isolated", "paused")
CUT_OFF = ("killed", "left", "isolated")


def _down(cluster: Cluster, name: str, t0: float, t1: float,
          kinds: tuple[str, ...] = HOST_DOWN) -> bool:
    """Was the member crashed, gone, isolated (or paused) at some point in [t0, t1]?"""
    return any(name in f.hosts and f.kind in kinds and f.t0 <= t1 and f.t1 >= t0
               for f in cluster.faults)


def _cut(cluster: Cluster, a: str, b: str, t0: float, t1: float) -> bool:
    return any(f.cut is not None and f.t0 <= t1 and f.t1 >= t0 and f.cut(a, b)
               for f in cluster.faults)


def faulted(cluster: Cluster) -> set[str]:
    """Members any fault touched (loss on all hosts is a network condition, not a host fault)."""
    return {n for f in cluster.faults if not f.kind.startswith(("loss", "delay"))
            for n in f.hosts}


def false_failures(cluster: Cluster, t_start: float, t_end: float, window: float = 15.0,
                   observers: Iterable[str] | None = None) -> dict:
    """Failure verdicts about members that were in fact fine.

    ``unfaulted``: about members no fault touched in the whole run (the issue's measure).
    ``live``: about members that were running, not paused and reachable from the observer for
    the ``window`` before the verdict (also counts starved members and same-side partitions).
    Member-seconds run from the verdict to the observer's next join verdict about the member.
    """
    bad = faulted(cluster)
    only = set(observers) if observers is not None else None
    out = {"unfaulted": [0, 0.0], "live": [0, 0.0], "by": defaultdict(lambda: [0, 0.0]),
           "detail": []}
    verdicts = sorted((v for v in cluster.verdicts if t_start <= v.t <= t_end),
                      key=lambda v: v.t)
    for i, v in enumerate(verdicts):
        if v.kind != "failed" or (only is not None and v.observer not in only):
            continue
        if _down(cluster, v.observer, v.t - window, v.t, CUT_OFF):
            continue  # a down or isolated observer's verdicts are its own problem
        back = next((w.t for w in verdicts[i + 1:] if w.observer == v.observer
                     and w.member == v.member and w.kind == "join"), t_end)
        seconds = back - v.t
        live = not _down(cluster, v.member, v.t - window, v.t) and not _cut(
            cluster, v.observer, v.member, v.t - window, v.t)
        if v.member not in bad:
            out["unfaulted"][0] += 1
            out["unfaulted"][1] += seconds
            key = f"{cluster.kind_of(v.observer)}->{cluster.kind_of(v.member)}"
            out["by"][key][0] += 1
            out["by"][key][1] += seconds
        if live:
            out["live"][0] += 1
            out["live"][1] += seconds
        if (live or v.member not in bad) and len(out["detail"]) < 40:
            out["detail"].append({"t": round(v.t - t_start, 2), "observer": v.observer,
                                  "member": v.member, "failed_for_s": round(seconds, 2)})
    out["by"] = {k: tuple(v) for k, v in out["by"].items()}
    # Failed probes ("Suspect X has failed, no acks received") come before any verdict: the
    # early sign of a detector crying wolf even when suspicion timers save the day.
    by_kind: Counter[str] = Counter(
        cluster.kind_of(observer) for t, observer, member in cluster.suspects
        if t_start <= t <= t_end and member not in bad
        and (only is None or observer in only)
        and not _down(cluster, observer, t - window, t, CUT_OFF))
    out["suspicions_unfaulted"] = sum(by_kind.values())
    out["suspicions_by_observer"] = dict(by_kind)
    return out


def log_excerpt(cluster: Cluster, observers: list[str], member: str, t0: float, t1: float,
                limit: int = 60) -> str:
    """What ``member`` and each of ``observers`` logged between t0 and t1 (seconds relative to
    t0), the member's own lines whole and the observers' lines that name it: enough to tell
    a lost message from a wrong verdict when a fault test fails, since the lab's directory is
    gone with the test's temporary files."""
    out = []
    for agent in cluster.agents:
        if agent.name != member and agent.name not in observers:
            continue
        lines = [(t, line) for t, line in agent.lines
                 if t0 <= t <= t1 and (agent.name == member or member in line)]
        out.append(f"--- {agent.name} ({len(lines)} lines)")
        if len(lines) > limit:  # the first after the fault and the last before the end
            lines = [*lines[:limit // 2], (t0, "..."), *lines[-(limit // 2):]]
        out.extend(f"{t - t0:+8.3f} {line}" for t, line in lines)
    return "\n".join(out)


def fault_end(cluster: Cluster, kill: dict) -> float:
    """When the member a churn step stopped was running again (inf if never)."""
    return next(f.t1 for f in cluster.faults
                if f.t0 == kill["t"] and kill["agent"] in f.hosts)


def detection_times(cluster: Cluster, kills: list[dict]) -> list[dict]:
    """For each kill -9: seconds until every agent running throughout logged it failed (and for
    each leave, until every one logged it left). None when the member restarted first."""
    out = []
    for kill in kills:
        if kill["cluster"] != cluster.label:
            continue
        member, t = kill["agent"], kill["t"]
        end = fault_end(cluster, kill)
        want = "leave" if kill["graceful"] else "failed"
        seen: dict[str, float] = {}
        for v in cluster.verdicts:
            if v.member == member and t <= v.t <= end and v.kind in (want, "failed"):
                seen.setdefault(v.observer, v.t - t)
        observers = [a.name for a in cluster.agents
                     if a.name != member and not _down(cluster, a.name, t, end, CUT_OFF)]
        late = [o for o in observers if o not in seen]
        out.append({"member": member, "graceful": kill["graceful"],
                    "all": None if late else max(seen[o] for o in observers),
                    "by_kind": {k: [seen[o] for o in observers
                                    if o in seen and cluster.kind_of(o) == k]
                                for k in ("pyserf", "serf")}})
    return out


def reconvergence(cluster: Cluster, t_heal: float, horizon: float,
                  kind: str | None = None) -> float | None:
    """Seconds after ``t_heal`` until every observer, by its own verdicts, holds every member
    alive (None if some never did within ``horizon``). Members seen failed or left before the
    heal and never rejoined count as not converged."""
    state: dict[str, dict[str, str]] = defaultdict(dict)
    converged_at: dict[str, float] = {}
    everyone = [a.name for a in cluster.agents if kind is None or a.kind == kind]

    def ok(observer: str) -> bool:
        return all(s == "join" for s in state[observer].values())

    for v in sorted(cluster.verdicts, key=lambda v: v.t):
        if v.t > t_heal + horizon:
            break
        state[v.observer][v.member] = v.kind
        if v.t >= t_heal:
            if ok(v.observer):
                converged_at.setdefault(v.observer, v.t)
            else:
                converged_at.pop(v.observer, None)
    worst = 0.0
    for name in everyone:
        if ok(name) and name not in converged_at:
            continue  # never out of step after the heal
        if name not in converged_at:
            return None
        worst = max(worst, converged_at[name] - t_heal)
    return worst


def event_delivery(cluster: Cluster, stable: Iterable[str]) -> dict:
    """Fired user events lost or delivered twice at the agents that were up all along."""
    stable = list(stable)
    fired_at = {p: t for t, _s, p in cluster.fired}
    lost: dict[str, list[str]] = {}
    dup: dict[str, list[str]] = {}
    latencies = []
    for name in stable:
        got = cluster.events.get(name, Counter())
        missing = sorted(set(fired_at) - set(got))
        twice = sorted(p for p, n in got.items() if p in fired_at and n > 1)
        if missing:
            lost[name] = missing
        if twice:
            dup[name] = twice
        latencies += [cluster.event_times[(name, p)] - t for p, t in fired_at.items()
                      if (name, p) in cluster.event_times]
    return {"fired": len(fired_at), "observers": len(stable),
            "lost": sum(map(len, lost.values())), "duplicated": sum(map(len, dup.values())),
            "lost_at": lost, "duplicated_at": dup,
            "max_latency_s": max(latencies, default=None)}


def query_completeness(cluster: Cluster, stable: Iterable[str], t0: float = 0.0) -> dict:
    """Share of the always-up members the origin could reach that answered each query."""
    stable = set(stable)
    shares = []
    short = []
    for q in cluster.queries:
        expected = {n for n in stable if not _cut(cluster, q["origin"], n, q["t"], q["t1"])}
        if expected:
            got = expected & set(q["responses"])
            shares.append(len(got) / len(expected))
            if got != expected:
                short.append({"t": round(q["t"] - t0, 2), "origin": q["origin"],
                              "took_s": round(q["t1"] - q["t"], 2),
                              "missing": sorted(expected - got),
                              "acked_not_answered": sorted(set(q["acks"]) - set(q["responses"]))})
    return {"queries": len(shares),
            "mean": sum(shares) / len(shares) if shares else None,
            "complete": sum(1 for s in shares if s == 1.0), "incomplete": short}


def wait_events_delivered(cluster: Cluster, stable: list[str], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if event_delivery(cluster, stable)["lost"] == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def lab(workdir: Path) -> Iterator[Lab]:
    the_lab = Lab(workdir)
    try:
        yield the_lab
    finally:
        the_lab.close()
