"""``pyserf simulate``: run a cluster scenario in virtual time and report what operators plan
with. Only the standard library is imported at the top, so ``pyserf.cli`` can take the help
text from here without loading the simulator into every agent."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyserf.cli.flags import FlagSet

APP = "pyserf"
SCENARIOS = ("join", "fail", "leave", "event", "partition")
# Room left for the interpreter and the run's own lists next to the estimate.
MEMORY_HEADROOM = 0.8
# Longest virtual span a time flag accepts: a run's cost grows with N times the virtual time
# it covers, and nothing a scenario waits for takes longer (serf's reconnect retries every 30 s).
MAX_VIRTUAL_S = 3600.0
MAX_WORKERS = 64
# -sync-quantum's default and bound. In a 2,000-node join 2 ms windows hold ~55 events per
# worker instead of ~8, and move 72 % of the hops between workers by 0.48 ms on average
# (benchmarks/results/sim_scale.txt, section 13) where a LAN probe waits 500 ms for its ack;
# above 50 ms the delay would be a visible part of the timers measured.
DEFAULT_SYNC_QUANTUM = 0.002
MAX_SYNC_QUANTUM = 0.050

HELP = f"""
Usage: {APP} simulate [options]

  Simulates a cluster of pyserf agents in one process, in virtual time (no
  sockets, no agents started), makes one change and reports how long each
  node took to see it and what it cost. The same seed gives the same result.

Options:

  -nodes=50                 Cluster size.
  -scenario=join            What happens:
                              join       all nodes start and join node 0
                                         within -join-window (a restart)
                              fail       a converged cluster, one node is
                                         killed (kill -9): time until each
                                         survivor lists it failed, next to
                                         the Lifeguard suspicion bounds
                              leave      one node leaves gracefully: time
                                         until each node lists it left
                              event      one node sends a user event: time
                                         until each node received it
                              partition  two halves cut off from each other
                                         for -partition-for, then healed:
                                         time until each node lists all
                                         members alive again
  -loss=0                   Fraction of datagrams lost (0 to 1).
  -profile=lan              memberlist timings: lan, wan or local.
  -latency=MIN-MAX          One-way delay per hop, uniform between MIN and MAX
                            (Go durations, e.g. 1ms-5ms; one value for fixed).
                            Default by profile: lan 200us-500us, wan 10ms-100ms,
                            local 50us-500us.
  -seed=1                   Seed of every random choice.
  -duration=0               Virtual time to wait for every node after the
                            change before reporting it unconverged (0: chosen
                            from the profile and scenario; at most 1h).
  -join-window=1s           Spread of the nodes' start times (join and setup).
  -partition-for=0          How long the partition holds (0: until both halves
                            have failed each other).
  -encrypt                  Encrypt gossip (AES-GCM) as with -encrypt on agents.
  -workers=1                Processes to run the nodes on (auto: one per
                            core). Above 1, forked workers each run a share
                            of the nodes and swap their traffic every
                            -sync-quantum or minimum one-way latency of
                            virtual time, whichever is longer; every
                            scenario works (a different draw from 1).
  -sync-quantum=2ms         With -workers above 1, the shortest window between
                            the workers' swaps (at most 50ms). A hop between
                            nodes of different workers that would arrive
                            inside the window it was sent in arrives at the
                            window's end, up to this much later; the report
                            says how many did. 0 keeps every delay exact and
                            a seed's report the same for any -workers above
                            1, but at LAN latencies the workers then swap so
                            often that they run no faster than one.
  -worker-stats             With -workers above 1, print what each worker
                            spent (CPU, waiting, memory) to stderr.
  -format=text              Output format: text or json.
  -plot=FILE.png            Also draw the convergence curve (needs matplotlib).
"""


def _mem_available() -> int:
    """Bytes the kernel says a new allocation can get without swapping."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _parse_latency(text: str, parse_duration: Any) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    lo = parse_duration(low)
    hi = parse_duration(high) if sep else lo
    if lo < 0 or hi < lo:
        raise ValueError("MIN must be >= 0 and <= MAX")
    return lo, hi


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def render_text(r: dict[str, Any]) -> str:
    c = r["convergence_s"]
    what = {"join": "every node lists all alive", "fail": f"{r.get('subject')} killed",
            "leave": f"{r.get('subject')} leaves", "event": f"user event from {r.get('origin')}",
            "partition": f"{r.get('partition_s')} s split in halves, then healed"}[r["scenario"]]
    lines = [
        ("Scenario", f"{r['scenario']} ({what}), {r['nodes']} nodes, {r['profile']} profile, "
                     f"loss {r['loss']:g}, seed {r['seed']}"),
        ("Converged", f"{'yes' if r['converged'] else 'NO'}, {r['saw_change']} of "
                      f"{r['observers']} nodes saw it"),
        ("Seen by", f"p50 {_fmt_s(c['p50'])}   p90 {_fmt_s(c['p90'])}   "
                    f"p99 {_fmt_s(c['p99'])}   all {_fmt_s(c['max'])}"),
    ]
    if "lifeguard_s" in r:
        lg = r["lifeguard_s"]
        lines.append(("Lifeguard", f"suspicion {lg['min']:.2f} s with {lg['k']} confirmations, "
                                   f"{lg['max']:.2f} s unconfirmed; all within "
                                   f"{lg['bound']:.2f} s"))
    if "last_join_returned_s" in r:
        lines.append(("Joins", f"{r['joins_returned']} of {r['nodes'] - 1} returned, the "
                               f"last at {r['last_join_returned_s']:.3f} s"))
    if "failed_across_split" in r:
        lines.append(("Split", f"up to {r['failed_across_split']} members failed per node "
                               "before the heal"))
    pp = r["push_pull"]
    lines += [
        ("False failures", str(r["false_positives"])),
        ("Per node/s", f"{r['msgs_per_node_s']:.1f} msgs ({r['datagrams_per_node_s']:.1f} "
                       f"datagrams, {r['streams_per_node_s']:.2f} streams), "
                       f"{_size(r['bytes_per_node_s'])} over {r['window_s']:.2f} s"
                       + (" (bytes: compressed sample)" if r["bytes_estimated"] else "")),
        ("Push-pulls", f"{pp['count']} ({pp['per_node_s']:.3f}/node/s), "
                       f"{_size(pp['mean_bytes'])} each (both states, as sent), "
                       f"{_size(pp['bytes_per_node_s'])}/node/s"),
        ("Run", f"{r['virtual_s']:.1f} s virtual in {r['wall_s']:.1f} s wall"
                + (f" on {r['workers']} workers ({r['sync_windows']} sync windows)"
                   if "workers" in r else "")),
    ]
    if "sync_quantum_s" in r:
        lines.append(("Sync quantum", f"{r['sync_quantum_s'] * 1000:g} ms: {r['hops_delayed']} "
                                      f"of {r['hops_between_workers']} hops between workers "
                                      f"arrived later than drawn, by "
                                      f"{r['delay_added_ms_mean']:.3f} ms on average"))
    if not r["setup_converged"]:
        lines.append(("Warning", "the cluster had not converged before the change"))
    width = max(len(k) for k, _ in lines) + 2
    return "\n".join(f"{(k + ':').ljust(width)}{v}" for k, v in lines)


def plot(path: str, report: dict[str, Any], curve: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = report["observers"]
    xs = [0.0, *curve]
    ys = [0.0, *((i + 1) / total for i in range(len(curve)))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(xs, ys, where="post", label="nodes that saw it")
    if "lifeguard_s" in report:
        bounds = report["lifeguard_s"]
        ax.axvline(bounds["min"], linestyle="--", color="tab:green",
                   label=f"suspicion, {bounds['k']} confirmations")
        ax.axvline(bounds["bound"], linestyle="--", color="tab:red", label="Lifeguard bound")
        ax.legend(loc="lower right")
    ax.set_xlabel("virtual seconds after the change")
    ax.set_ylabel("fraction of nodes that saw it")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{report['scenario']}: {report['nodes']} nodes, {report['profile']}, "
                 f"loss {report['loss']:g}, seed {report['seed']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    from pyserf.cli.flags import FlagError, FlagSet
    from pyserf.cli.output import err_out, out
    from pyserf.gocompat.durations import parse_duration
    from pyserf.gocompat.strconv import quote as go_quote
    from pyserf.memberlist.profiles import PROFILES

    args = list(sys.argv[1:] if argv is None else argv)
    fs = FlagSet("simulate", lambda: out(HELP.strip()))
    fs.int("nodes", 50)
    fs.string("scenario", "join")
    fs.string("loss", "0")
    fs.string("profile", "lan")
    fs.string("latency", "")
    fs.int("seed", 1)
    fs.duration("duration", 0.0)
    fs.duration("join-window", 1.0)
    fs.duration("partition-for", 0.0)
    fs.bool("encrypt")
    fs.string("format", "text")
    fs.string("plot", "")
    fs.string("workers", "1")
    fs.duration("sync-quantum", DEFAULT_SYNC_QUANTUM)
    fs.bool("worker-stats")
    try:
        rest = fs.parse(args)
        loss = float(fs["loss"])
    except FlagError:
        return 1
    except ValueError:
        err_out(f"invalid value {go_quote(fs['loss'])} for flag -loss: parse error")
        fs.usage()
        return 1
    latency = None
    if fs["latency"]:
        try:
            latency = _parse_latency(fs["latency"], parse_duration)
        except ValueError as exc:
            out(f"Error: invalid -latency {go_quote(fs['latency'])}: {exc}")
            return 1
    problems = []
    if rest:
        problems.append(f"unexpected arguments: {' '.join(rest)}")
    if fs["nodes"] < 2:
        problems.append("-nodes must be at least 2")
    if fs["scenario"] not in SCENARIOS:
        problems.append(f"-scenario must be one of {', '.join(SCENARIOS)}")
    if not (0.0 <= loss < 1.0) or math.isnan(loss):
        problems.append("-loss must be at least 0 and below 1")
    if fs["profile"] not in PROFILES:
        problems.append(f"-profile must be one of {', '.join(PROFILES)}")
    if fs["format"] not in ("text", "json"):
        problems.append(f'Invalid output format "{fs["format"]}"')
    if not 0 <= fs["sync-quantum"] <= MAX_SYNC_QUANTUM:
        problems.append("-sync-quantum must be 0 to 50ms")
    if fs["duration"] < 0 or fs["join-window"] < 0 or fs["partition-for"] < 0:
        problems.append("-duration, -join-window and -partition-for cannot be negative")
    for flag in ("duration", "join-window", "partition-for"):
        if fs[flag] > MAX_VIRTUAL_S:
            problems.append(f"-{flag} must be at most 1h: the run's cost grows with the "
                            "virtual time it covers")
    workers = _workers(fs["workers"], problems)
    if workers > 1 and problems == [] and fs["nodes"] < workers:
        problems.append(f"-workers={workers} needs at least as many -nodes")
    if (workers > 1 and not problems and _lowest_latency(latency, fs["profile"]) <= 0
            and fs["sync-quantum"] <= 0):
        problems.append("-workers above 1 needs a minimum -latency or a -sync-quantum above "
                        "0: it is how far the workers may run apart in virtual time")
    if problems:
        for problem in problems:
            out(f"Error: {problem}")
        return 1
    if fs["plot"]:
        folder = os.path.dirname(os.path.abspath(fs["plot"]))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            # Found out before the run, not after minutes of it.
            out(f"Error: cannot write -plot {go_quote(fs['plot'])}: {folder} is not a "
                "writable directory")
            return 1
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            out("Error: -plot needs matplotlib: pip install matplotlib "
                "(or pip install 'pyserf[sim]')")
            return 1

    # The simulated agents' own log lines (refutations, failed push-pulls) are not the
    # operator's; what they add up to is in the report.
    pyserf_log = logging.getLogger("pyserf")
    saved_level = pyserf_log.level
    pyserf_log.setLevel(logging.CRITICAL)
    try:
        return _run(fs, loss, latency, workers, out)
    finally:
        pyserf_log.setLevel(saved_level)  # a caller in the same process keeps its logging


def _workers(text: str, problems: list[str]) -> int:
    """The -workers value: a count, or auto (0) for the cores this process may use."""
    if text in ("auto", "0"):
        return max(1, len(os.sched_getaffinity(0)))
    try:
        workers = int(text)
    except ValueError:
        workers = -1
    if not 1 <= workers <= MAX_WORKERS:
        problems.append(f"-workers must be auto or 1 to {MAX_WORKERS}")
        return 1
    return workers


def _lowest_latency(latency: tuple[float, float] | None, profile: str) -> float:
    from pyserf.sim.scenarios import DEFAULT_LATENCY

    return (latency or DEFAULT_LATENCY[profile])[0]


def _run(fs: FlagSet, loss: float, latency, workers: int, out) -> int:
    from pyserf.sim import scenarios

    nodes = fs["nodes"]
    need, available = scenarios.estimate_bytes(nodes, workers), _mem_available()
    if need > MEMORY_HEADROOM * available:
        spare = int(MEMORY_HEADROOM * available) - scenarios.worker_bytes(workers)
        fit = scenarios.max_nodes_for(spare)
        out(f"Error: {nodes} nodes need about {_gib(need)} ({nodes}x{nodes} member-view "
            f"entries of ~{scenarios.BYTES_PER_ENTRY} bytes), but only {_gib(available)} of "
            f"memory is available; at most {fit} nodes fit here")
        return 1

    opts = scenarios.Options(nodes=nodes, scenario=fs["scenario"], seed=fs["seed"], loss=loss,
                             profile=fs["profile"], latency=latency, duration=fs["duration"],
                             join_window=fs["join-window"],
                             partition_for=fs["partition-for"], encrypt=fs["encrypt"],
                             sync_quantum=fs["sync-quantum"] if workers > 1 else 0.0)
    if workers > 1:
        from pyserf.sim import shards

        try:
            report, stats = shards.simulate(opts, workers)
        except shards.ShardError as exc:
            out(f"Error: {exc}")
            if exc.detail:
                print(exc.detail, file=sys.stderr)
            return 1
        if fs["worker-stats"]:
            print(shards.stats_table(stats), file=sys.stderr)
    else:
        report = scenarios.simulate(opts)
    curve = report.pop("curve")
    if fs["plot"]:
        try:
            plot(fs["plot"], report, curve)
        except OSError as exc:
            out(f"Error writing {fs['plot']}: {exc}")
            return 1
    if fs["format"] == "json":
        out(json.dumps(report))
    else:
        out(render_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
