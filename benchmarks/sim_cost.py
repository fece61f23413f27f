"""What the simulator costs: a join storm of N nodes, wall time per simulated packet and memory.

N nodes join one seed, the joins spread uniformly over ``--window`` virtual seconds; the run
continues until every node lists all N members alive (or ``--virtual`` seconds, whichever is
first; ``--virtual`` alone fixes the span, as for engines too slow to converge). Prints wall and
virtual seconds, datagrams and streams simulated, wall microseconds per simulated packet (the
machines' work included: it is what a simulated packet costs), peak memory and the RSS growth
divided by the N*N member-view entries the cluster ends with, and with ``--profile`` the ten
functions with the most own time.

Each run is its own process, so RSS starts clean and trees can be compared: ``--before REV``
runs the same storm on ``git archive REV`` too and prints the ratios. Usage::

    python benchmarks/sim_cost.py -n 200 -n 1000 [-n 2000] [--before HEAD] [--profile]

Nodes send uncompressed unless ``--compression`` (the simulator's default since serf's
receivers accept both; the wire size is then estimated from a sample, see SimNetwork).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- worker: one storm in one tree -----------------------------------------------------------


def storm(n: int, window: float, virtual: float | None, seed: int, record_log: bool,
          profile: bool, compression: bool = False, eager: bool = True) -> dict:
    import gc

    from pyserf.serf.members import MemberStatus
    from pyserf.sim import network
    from pyserf.sim.network import SimNetwork

    new_engine = hasattr(network, "Latency") or hasattr(SimNetwork, "snapshot_counters")
    kwargs = {"record_log": record_log} if new_engine else {}
    gc.collect()
    rss0 = rss_bytes()
    net = SimNetwork(seed=seed, compression=compression, **kwargs)
    streams = [0]
    deliver = net._deliver_stream

    def counted(sender, action):
        streams[0] += 1
        deliver(sender, action)

    net._deliver_stream = counted
    wall0, cpu0 = time.perf_counter(), time.process_time()
    nodes = [net.add_node(f"n{i}", f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}")
             for i in range(n)]
    if not eager:
        for node in nodes:
            node.serf.memberlist.config.eager_sync = False
    start = net.now
    joins = sorted(start + net.rng.uniform(0, window) for _ in nodes[1:])
    limit = start + (virtual if virtual is not None else max(60.0, 10 * window))
    alive = MemberStatus.ALIVE
    converged: dict[str, float] = {}

    def check() -> None:
        for node in nodes:
            members = node.serf.members
            if node.name not in converged and len(members) == n and all(
                    ms.member.status == alive for ms in members.values()):
                converged[node.name] = net.now - start

    profiler = None
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    for node, at in zip(nodes[1:], joins, strict=True):
        net.run_until(at)
        net.join(node, nodes[0])
    while net.now < limit - 1e-9:
        net.run_until(min(limit, net.now + 0.25))
        if virtual is None or len(converged) < n:
            check()
        if virtual is None and len(converged) == n:
            break
    if profiler is not None:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    gc.collect()
    grown = rss_bytes() - rss0
    entries = sum(len(node.serf.members) for node in nodes)
    packets = net.packets_sent + streams[0]
    result = {
        "engine": "new" if new_engine else "old", "n": n, "seed": seed,
        "compression": compression, "eager_sync": eager,
        "wall_s": wall, "cpu_s": cpu, "virtual_s": net.now - start,
        "converged_s": max(converged.values()) if len(converged) == n else None,
        "converged_nodes": len(converged),
        "datagrams": net.packets_sent, "streams": streams[0], "packets": packets,
        "us_per_packet": 1e6 * wall / packets if packets else math.nan,
        "cpu_us_per_packet": 1e6 * cpu / packets if packets else math.nan,
        "view_entries": entries, "rss_growth_mib": grown / 2**20,
        "bytes_per_view_entry": grown / entries if entries else math.nan,
        "peak_rss_mib": peak_rss_bytes() / 2**20,
    }
    if hasattr(net, "snapshot_counters"):
        total = net.snapshot_counters().total
        sampled = total.get("udp_sampled_bytes", 0)
        if sampled:
            result["udp_compressed_ratio_est"] = total["udp_sampled_compressed"] / sampled
    if profiler is not None:
        import io
        import pstats
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(10)
        result["profile"] = out.getvalue()
    return result


# -- driver ----------------------------------------------------------------------------------


def archive(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                          capture_output=True).stdout
    tmp = into / "tree.tar"
    tmp.write_bytes(data)
    with tarfile.open(tmp) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def run(tree: Path, args: argparse.Namespace, n: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", str(tree),
           "-n", str(n), "--window", str(args.window), "--seed", str(args.seed)]
    if args.virtual is not None:
        cmd += ["--virtual", str(args.virtual)]
    if args.profile:
        cmd.append("--profile")
    if args.keep_log:
        cmd.append("--keep-log")
    if not args.compression:
        cmd.append("--no-compression")
    if args.no_eager:
        cmd.append("--no-eager")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def show(label: str, r: dict) -> None:
    conv = "no" if r["converged_s"] is None else f"{r['converged_s']:.1f}s"
    print(f"{label:<6} n={r['n']:<5} wall {r['wall_s']:8.1f}s (cpu {r['cpu_s']:.1f}s)  "
          f"virtual {r['virtual_s']:6.1f}s  "
          f"converged {conv:>7} ({r['converged_nodes']}/{r['n']})  "
          f"packets {r['packets']:>9} ({r['streams']} streams)  "
          f"{r['us_per_packet']:7.1f} us/packet (cpu {r['cpu_us_per_packet']:.1f})  "
          f"{r['bytes_per_view_entry']:6.0f} B/view entry  peak RSS {r['peak_rss_mib']:.0f} MiB"
          + (f"  udp compressed/sent ~{r['udp_compressed_ratio_est']:.2f}"
             if "udp_compressed_ratio_est" in r else ""), flush=True)
    if r.get("profile"):
        print(r["profile"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="cluster size (repeatable)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="virtual seconds over which the joins are issued")
    parser.add_argument("--virtual", type=float, default=None,
                        help="run exactly this many virtual seconds instead of to convergence")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before", metavar="REV", help="also run on git archive REV")
    parser.add_argument("--profile", action="store_true", help="cProfile top 10 by own time")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep the SimEvent log (new engine; the old one always does)")
    parser.add_argument("--compression", action="store_true",
                        help="nodes LZW-compress what they send, as agents do (pure-Python "
                             "LZW was a third of a packet's cost)")
    parser.add_argument("--no-compression", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-eager", action="store_true",
                        help="turn off memberlist's eager push-pull after a newly learned node")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [200]
    if args.worker:
        sys.path.insert(0, args.tree)
        print(json.dumps(storm(sizes[0], args.window, args.virtual, args.seed,
                               args.keep_log, args.profile, not args.no_compression,
                               not args.no_eager)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        old = archive(args.before, Path(tmp)) if args.before else None
        for n in sizes:
            mine = run(ROOT, args, n)
            show("tree", mine)
            if old is not None:
                theirs = run(old, args, n)
                show(args.before, theirs)
                print(f"       ratio {args.before}/tree: wall "
                      f"{theirs['wall_s'] / mine['wall_s']:.1f}x, cpu per packet "
                      f"{theirs['cpu_us_per_packet'] / mine['cpu_us_per_packet']:.1f}x",
                      flush=True)


if __name__ == "__main__":
    main()
