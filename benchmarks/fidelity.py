"""Fidelity: the simulator's predictions next to what real pyserf agents measured.

For N=20 and N=50 it runs the simulator (in this process, virtual time) the way
benchmarks/cluster_bench.py runs real agents on loopback: the default (lan) memberlist
timings with loopback latency (the `local` profile's 50-500 us per hop; the agents run lan
timings, so the `local` profile's own timings would not match), the joins to node 0 spread
over as long as the real benchmark took to issue them and timed from when the last one
returned, a kill -9 of a random non-seed agent on a quiet cluster, and a user event from one
agent. Several seeds per size. The real figures are the pyserf rows of every run in
benchmarks/results/cluster_bench.txt (it holds the current runs; older ones are in git
history), completed from cluster_bench.json where the text lacks a size or a figure.

The real benchmark does not see the instant a change lands: it polls every agent's member
list (N RPCs on 16 threads) and sleeps POLL_INTERVAL between rounds, so a join or failure is
counted at the first poll round that shows it. The rounds' period (N member RPCs on 16
threads plus the sleep, longer on a loaded machine) is read off the real runs: every time
they report for a join (slowest or median agent) is a round's start, so the smallest
positive one is at most a period. "sim as measured" puts the simulated join and failure
times on that grid (an upper estimate of what polling adds; "sim raw" is the lower), and the
table gives the ratio for both; the event is timed by the handlers' own clock stamps, so it
is compared as simulated. Usage::

    python benchmarks/fidelity.py [--sizes 20,50] [--seeds 10] [--out FILE]

Prints one row per measurement and size: simulated (raw and as the benchmark would measure it),
real, and the ratio sim/real; a gap beyond 25 % is printed with what explains it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyserf.sim import scenarios  # noqa: E402
from pyserf.sim.network import SimNode  # noqa: E402
from pyserf.sim.scenarios import DEFAULT_LATENCY, Options, simulate  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# cluster_bench.py: wait_all sleeps this long between poll rounds of every agent's members.
POLL_INTERVAL = 0.1
# Join RPCs the real benchmark completes per second (16 client threads, each join waiting for
# its push-pull with the seed; the pace tests/unit/test_join_storm.py assumes as well), for
# results that do not say how long issuing the joins took.
JOINS_PER_S = 20.0
LOOPBACK = DEFAULT_LATENCY["local"]
GAP = 0.25
CORES = 2  # the machine the real figures were measured on
METRICS = ("join", "failed", "event")
# An event that some node got only from a later push-pull, gossip having missed it: each
# holder passes an event on 8 times at N=20-50 (3, 3 and 2 distinct peers in three rounds), so
# all 49 others miss a given node with ((46/49)**2 * 47/49)**49, ~1.3 % of events at N=50
# for some node, with serf's settings as with pyserf's. The real runs show none; such seeds
# are counted apart instead of averaged into the event row.
EVENT_MISSED = 2.0

# What the simulator leaves out, per measurement, for gaps beyond GAP.
EXPLAIN = {
    "join": (
        "The simulated machines take no CPU time, and the real agents do: at the end of a "
        "join storm on 2 cores every agent decodes, merges and re-gossips each alive and "
        "serves push-pulls, so the last alive reaches the slowest agent later than one network "
        "hop. The real time also starts after the last join RPC returned to the client (a "
        "thread pool's reply), not when the seed answered, and ends when the agent answered a "
        "poll (since 46595ff each agent is timed by its own answer; runs before it timed a "
        "whole poll round by its start, which read low)."),
    "failed": (
        "Detection is a handful of probe intervals plus the Lifeguard suspicion timeout; "
        "which prober reaches the dead node first and how fast k independent confirmations "
        "arrive depends on each agent's shuffled probe order, so single runs vary by 1-3 s "
        "(real runs: see min-max). Real agents also delay probes and timeouts by their "
        "event-loop load, and their Lifeguard awareness can lengthen a probe interval."),
    "event": (
        "The simulator counts an event when a machine received it; the real benchmark when "
        "each agent's handler process stamped the time: after the RPC from the client, "
        "decoding, re-gossiping, and forking `sh -c date` on every agent at once, all "
        "sharing 2 cores, which the simulator (no CPU model) cannot show; its network hops "
        "take microseconds on loopback. The table above turns the excess into CPU per "
        "agent next to what the machines and the handler's fork cost here; what that does "
        "not cover is the agent's asyncio shell, sockets and RPC. The simulated spread is "
        "itself two-valued (first wave or a gossip tick), so over a few real runs a size "
        "can land on either side."),
}


@dataclass
class Sim:
    """Per size: the simulated seconds of each seed, raw and on the benchmark's poll grid."""

    raw: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    measured: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    wall: float = 0.0
    event_ticker: list[float] = field(default_factory=list)
    event_missed: list[float] = field(default_factory=list)  # left out of the event row


def on_poll_grid(seconds: float, interval: float = POLL_INTERVAL) -> float:
    """When a poll every ``interval`` from 0 first sees a change that happened at ``seconds``
    (a round's own duration left out: a lower bound of what the benchmark adds)."""
    if seconds <= 0:
        return 0.0
    return math.ceil(round(seconds / interval, 6)) * interval


def last(curve: list[float], observers: int) -> float:
    """The slowest observer's time; inf when some never saw it."""
    return curve[-1] if curve and len(curve) == observers else math.inf


def simulate_like_bench(n: int, seed: int, join_window: float | None = None
                        ) -> dict[str, float]:
    """One seed: seconds until the slowest agent saw each change, as cluster_bench times it.
    ``join_window``: how long issuing the joins takes (default: at JOINS_PER_S)."""
    common = {"nodes": n, "seed": seed, "profile": "lan", "latency": LOOPBACK}
    window = (n - 1) / JOINS_PER_S if join_window is None else join_window
    join = simulate(Options(scenario="join", join_window=window, **common))
    # The real clock starts once every join call has returned.
    join_s = max(0.0, last(join["curve"], n) - join["last_join_returned_s"])
    fail = simulate(Options(scenario="fail", **common))
    event = simulate(Options(scenario="event", **common))
    return {"join": join_s, "failed": last(fail["curve"], n - 1),
            "event": last(event["curve"], n - 1)}


def gossip_on_ticker(node: SimNode) -> None:
    """Make one simulated node gossip as memberlist does: only on its fixed ticker (a random
    phase per node), never at once because something was queued. The machines stay
    pyserf's; only when a round goes out changes (a what-if for serf's slower events)."""
    ml = node.serf.memberlist
    interval = ml.timing.gossip_interval
    phase = random.Random(node.name).uniform(0, interval)

    def resume(now: float) -> None:
        if ml.shutdown_done or not ml._loops or ml._loops.get("gossip") is not None:
            return  # stopped, or the loop is running on its grid already
        ml._loops["gossip"] = ml.scheduler.call_at(now + (phase - now) % interval,
                                                   ml._gossip_tick)

    for queue in ml._broadcast_queues():
        queue.on_queued = resume


@contextmanager
def ticker_gossip() -> Iterator[None]:
    """Every node a scenario adds gossips on memberlist's ticker (see gossip_on_ticker)."""
    add = scenarios.Run.add

    def add_on_ticker(run: scenarios.Run, index: int) -> SimNode:
        node = add(run, index)
        gossip_on_ticker(node)
        return node

    scenarios.Run.add = add_on_ticker
    try:
        yield
    finally:
        scenarios.Run.add = add


def event_on_ticker(n: int, seeds: int) -> list[float]:
    """The event scenario with memberlist's gossip timing, per seed."""
    times = []
    with ticker_gossip():
        for seed in range(1, seeds + 1):
            r = simulate(Options(nodes=n, scenario="event", seed=seed, profile="lan",
                                 latency=LOOPBACK))
            times.append(last(r["curve"], n - 1))
    return times


def poll_period(real: dict[int, dict[str, list[float]]], n: int) -> float:
    """The real benchmark's poll period at size n, at most (see the module docstring)."""
    figures = real.get(n, {})
    starts = [t for t in figures.get("median", []) + figures.get("join", []) if 0 < t < math.inf]
    return max(POLL_INTERVAL, min(starts)) if starts else POLL_INTERVAL


def join_window(real: dict[int, dict[str, list[float]]], n: int) -> float:
    """How long the real benchmark took to issue the joins at size n (its runs' mean), or
    the JOINS_PER_S pace where it did not say."""
    issued = [t for t in real.get(n, {}).get("issue", []) if 0 < t < math.inf]
    return mean(issued) if issued else (n - 1) / JOINS_PER_S


def run_sim(sizes: list[int], seeds: int, periods: dict[int, float],
            windows: dict[int, float]) -> dict[int, Sim]:
    out: dict[int, Sim] = {}
    for n in sizes:
        sim = out[n] = Sim()
        started = time.perf_counter()
        for seed in range(1, seeds + 1):
            for metric, value in simulate_like_bench(n, seed, windows[n]).items():
                if metric == "event" and value >= EVENT_MISSED:
                    sim.event_missed.append(value)
                    continue
                sim.raw[metric].append(value)
                sim.measured[metric].append(
                    value if metric == "event" else on_poll_grid(value, periods[n]))
        sim.event_ticker = event_on_ticker(n, seeds)
        sim.wall = time.perf_counter() - started
    return out


# -- the real measurements ------------------------------------------------------------------

LINE = re.compile(r"^\s*(pyserf|serf)\s+N=(\d+): (.*)$")
# "failed seen in" lists one time per kill with --kills K ("11.05, 10.49s").
FIGURES = {"join": re.compile(r"join converged in ([\d.]+|inf)s"),
           "event": re.compile(r"event handled everywhere in ([\d.]+|inf)s"),
           "failed": re.compile(r"failed seen in ((?:[\d.]+|inf)(?:, (?:[\d.]+|inf))*)s"),
           "median": re.compile(r"median agent ([\d.]+)s"),
           "issue": re.compile(r"issuing the joins took ([\d.]+)s")}


def parse_text(text: str, kind: str = "pyserf"
               ) -> tuple[dict[int, dict[str, list[float]]], dict[int, list[str]]]:
    """Per size, the figures of every run of ``kind`` in the file (older results live in git
    history, not in the file), and the headers ('#' lines) of the blocks they came from."""
    real: dict[int, dict[str, list[float]]] = {}
    source: dict[int, list[str]] = {}
    header = ""
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").strip()
            continue
        match = LINE.match(line)
        if not match or match[1] != kind:
            continue
        n = int(match[2])
        figures = real.setdefault(n, {m: [] for m in FIGURES})
        for metric, pattern in FIGURES.items():
            hit = pattern.search(match[3])
            if hit:
                figures[metric].extend(float(v) for v in hit[1].split(", "))
        if header not in source.setdefault(n, []):
            source[n].append(header)
    return real, source


def parse_json(data: object, kind: str = "pyserf") -> dict[int, dict[str, list[float]]]:
    """cluster_bench's Result records (kind, size, join_times, fail_times, event_times) as a
    list, or under "results"."""
    rows = data.get("results", []) if isinstance(data, dict) else data
    real: dict[int, dict[str, list[float]]] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or row.get("kind") != kind:
            continue
        real[int(row["size"])] = {"join": list(row.get("join_times", [])),
                                  "failed": list(row.get("fail_times", [])),
                                  "event": list(row.get("event_times", [])),
                                  "issue": list(row.get("join_issue_s", []))}
    return real


def load_real(path_json: Path, path_text: Path, kind: str = "pyserf"
              ) -> tuple[dict[int, dict[str, list[float]]], list[str]]:
    """Every run in the text; the JSON (one run's raw figures, also in the text) only for
    sizes or measurements the text lacks. Returns the figures and where they came from."""
    real, headers = parse_text(path_text.read_text(), kind) if path_text.exists() else ({}, {})
    source = [f"{path_text.relative_to(ROOT)}: {h}"
              for h in dict.fromkeys(h for hs in headers.values() for h in hs)]
    try:
        extra = parse_json(json.loads(path_json.read_text()), kind) if path_json.exists() \
            else {}
    except (ValueError, KeyError, TypeError):
        extra = {}
    used = set()
    for n, figures in extra.items():
        mine = real.setdefault(n, {m: [] for m in FIGURES})
        for metric, values in figures.items():
            if values and not mine.get(metric):
                mine[metric] = values
                used.add(n)
    if used:
        source.append(f"{path_json.relative_to(ROOT)} (N={','.join(map(str, sorted(used)))})")
    return real, source


# -- report --------------------------------------------------------------------------------

def spread(values: list[float]) -> str:
    if not values:
        return "-"
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return f"{len(values) - len(finite)}/{len(values)} never"
    return (f"{statistics.mean(values):6.3f} ({min(values):.3f}-{max(values):.3f}, "
            f"{len(values)})")


def mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def table(sim: dict[int, Sim], real: dict[int, dict[str, list[float]]]
          ) -> tuple[list[str], list[tuple[str, int, float]]]:
    rows = [f"{'what':7} {'N':>3}  {'sim raw s':>26}  {'sim as measured s':>26}  "
            f"{'real pyserf s':>26}  {'raw/real':>8}  {'sim/real':>8}"]
    gaps: list[tuple[str, int, float]] = []
    for metric in METRICS:
        for n in sorted(sim):
            mine, theirs = sim[n].measured[metric], real.get(n, {}).get(metric, [])
            known = bool(theirs) and mean(theirs) > 0
            ratio = mean(mine) / mean(theirs) if known else math.nan
            raw = mean(sim[n].raw[metric]) / mean(theirs) if known else math.nan
            rows.append(f"{metric:7} {n:>3}  {spread(sim[n].raw[metric]):>26}  "
                        f"{spread(mine):>26}  {spread(theirs):>26}  {raw:>8.2f}  "
                        f"{ratio:>8.2f}")
            if not math.isnan(ratio) and abs(ratio - 1) > GAP:
                gaps.append((metric, n, ratio))
    return rows, gaps


def machine_cpu_per_event(n: int, seed: int = 1) -> float:
    """CPU seconds one node's machines spend on one user event in an n-node cluster (receive,
    decode, re-gossip with the agent's compression), over an idle stretch of equal length."""
    run = scenarios.Run(Options(nodes=n, seed=seed, profile="lan", latency=LOOPBACK))
    scenarios._converge_setup(run)
    for node in run.net.by_name.values():
        node.serf.memberlist.config.enable_compression = True  # as the agent sends
    span = 3 * scenarios.PROFILES["lan"].gossip_interval  # the event's gossip rounds
    started = time.process_time()
    run.run_to(run.net.now + span)
    idle = time.process_time() - started
    origin = run.net.by_name[run.names[-1]]
    origin.serf.user_event("bench", b"go", False, run.net.now)
    run.kick(origin)
    started = time.process_time()
    run.run_to(run.net.now + span)
    return max(0.0, time.process_time() - started - idle) / n


def handler_cpu(samples: int = 20) -> float:
    """CPU seconds of one run of the benchmark's event handler (`sh -c date > file`),
    parent's spawn and child together, as each agent spends it per event."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["/bin/sh", "-c", f"date +%s.%N > {tmp}/n.ran"]
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.process_time()
        for _ in range(samples):
            subprocess.run(argv, check=True)
        own = time.process_time() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
    return (own + children) / samples


def cpu_model(sim: dict[int, Sim], real: dict[int, dict[str, list[float]]],
              sizes: list[int]) -> list[str]:
    """The real event time beyond the simulated spread, as CPU per agent if all agents' work
    queued on the machine's cores, next to the CPU measured here for one agent's share."""
    handler = handler_cpu()
    lines = ["", *prose("Real event time beyond the simulated spread, as CPU per agent on "
                        f"{CORES} cores ((real - sim) x {CORES} / N), next to what one agent's "
                        "share costs measured here: its machines (with compression) plus the "
                        f"handler's `sh -c date` ({handler * 1000:.1f} ms); the agent's "
                        "asyncio shell, sockets and RPC are in neither:"),
             f"{'N':>3}  {'real - sim s':>12}  {'implied ms/agent':>16}  "
             f"{'measured ms/agent':>17}"]
    for n in sizes:
        theirs = mean(real.get(n, {}).get("event", []))
        extra = theirs - mean(sim[n].raw["event"])
        measured = machine_cpu_per_event(n) + handler
        lines.append(f"{n:>3}  {extra:>12.3f}  {extra * CORES / n * 1000:>16.1f}  "
                     f"{measured * 1000:>17.1f}")
    return lines


def prose(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 100, subsequent_indent=indent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "fidelity.txt"),
                        help="results file ('' to only print)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    real, source = load_real(RESULTS / "cluster_bench.json", RESULTS / "cluster_bench.txt")
    serf, _ = load_real(RESULTS / "cluster_bench.json", RESULTS / "cluster_bench.txt", "serf")
    periods = {n: poll_period(real, n) for n in sizes}
    windows = {n: join_window(real, n) for n in sizes}
    sim = run_sim(sizes, args.seeds, periods, windows)
    rows, gaps = table(sim, real)
    lo, hi = LOOPBACK
    lines = [
        f"# .venv/bin/python benchmarks/fidelity.py --sizes {args.sizes} --seeds {args.seeds}"
        f"   ({time.strftime('%Y-%m-%d')}, {sum(s.wall for s in sim.values()):.0f} s wall)",
        f"# simulator: lan timings, {lo * 1e6:.0f}-{hi * 1e6:.0f} us per hop; joins issued "
        f"over " + ", ".join(f"N={n} {windows[n]:.2f} s" for n in sizes) + "; poll period <= "
        + ", ".join(f"N={n} {periods[n]:.2f} s" for n in sizes),
        *(f"# real: {line}" for line in source),
        "# cells: mean (min-max, runs); 'sim as measured': join and failed put on the "
        "benchmark's poll grid (period at most as given); sim/real is of that",
        "",
        *rows,
    ]
    tick = scenarios.PROFILES["lan"].gossip_interval
    lines += ["", *prose("Event spread in the simulator is two-valued: the first expedited wave "
                         "reaches everyone within a few hops (~1 ms on loopback), or the nodes "
                         f"it missed wait for a gossip tick ({tick:g} s), so a mean near the "
                         "real one says little: the real time is mostly CPU (below). Seeds "
                         "needing a tick:")]
    for n in sizes:
        ticked = sum(1 for t in sim[n].raw["event"] if t >= tick / 2)
        lines.append(f"  N={n}: {ticked} of {len(sim[n].raw['event'])}")
    lines += prose(f"Seeds left out of the event row, where gossip missed a node and a later "
                   f"push-pull delivered the event (>= {EVENT_MISSED:g} s; ~1.3 % of events at "
                   "N=50 by the retransmit arithmetic, serf's as well):")
    for n in sizes:
        missed = ", ".join(f"{t:.1f} s" for t in sim[n].event_missed) or "none"
        lines.append(f"  N={n}: {len(sim[n].event_missed)} of {args.seeds} ({missed})")
    lines += ["", *prose("What-if, the same machines gossiping only on memberlist's ticker "
                         "(no expedited round), next to real serf:"),
              f"{'what':7} {'N':>3}  {'sim s':>26}  {'real serf s':>26}  {'sim/real':>8}"]
    for n in sizes:
        mine, theirs = sim[n].event_ticker, serf.get(n, {}).get("event", [])
        ratio = mean(mine) / mean(theirs) if theirs and mean(theirs) > 0 else math.nan
        lines.append(f"{'event':7} {n:>3}  {spread(mine):>26}  {spread(theirs):>26}  "
                     f"{ratio:>8.2f}")
    lines += cpu_model(sim, real, sizes)
    if gaps:
        lines += ["", f"Gaps beyond {GAP:.0%} (sim/real):"]
        for metric in dict.fromkeys(m for m, _, _ in gaps):
            which = ", ".join(f"N={n} {r:.2f}" for m, n, r in gaps if m == metric)
            lines += prose(f"- {metric} ({which}): {EXPLAIN[metric]}", "  ")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
