"""Join storm in the simulator: what the extra anti-entropy costs per node, next to serf.

N nodes join one seed, the joins spread uniformly over ``--window`` virtual seconds (the real
benchmark issues them 16 at a time over RPC). Over the storm (first join until ``--settle``
seconds after the last) it measures, per node per virtual second: push-pulls initiated
(join / periodic / eager) and served, stream bytes, gossip datagrams and their bytes, and the
CPU the handlers took (wall time inside the real machines, which is what each agent would
spend; 200 real agents share this machine's 2 cores). Join convergence is the virtual time
until every node lists all N alive. Serf's implied rate is one periodic push-pull per
30 s x pushPullScale(N) per node plus the one join push-pull.

Each variant runs in its own process so trees can be compared: ``--before REV`` runs the same
storm on ``git archive REV`` (e.g. the commit before the budget), next to the working tree
with eager sync on and off. Usage::

    python benchmarks/join_storm.py -n 200 [-n 500] [--window 5] [--before REV]

Prints one table per size with ratios to serf's implied push-pull rate.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERF_PUSH_PULL_INTERVAL = 30.0  # memberlist's LAN default, as serf configures it


def serf_push_pull_period(n: int) -> float:
    """memberlist's pushPullScale: 30 s up to 32 nodes, times ceil(log2 n - log2 32) + 1."""
    if n <= 32:
        return SERF_PUSH_PULL_INTERVAL
    return SERF_PUSH_PULL_INTERVAL * (math.ceil(math.log2(n) - math.log2(32)) + 1)


# -- worker: one storm in one tree -----------------------------------------------------------


class _Clock:
    """Exclusive wall time per category, so nested handlers are not counted twice."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()
        self._stack: list[list] = []

    def wrap(self, category: str, fn):
        def timed(*args, **kwargs):
            frame = [category, time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                took = time.perf_counter() - frame[1]
                self.spent[category] += took - frame[2]
                if self._stack:
                    self._stack[-1][2] += took
        return timed


def storm(n: int, window: float, settle: float, seed: int, loss: float, eager: bool) -> dict:
    from pyserf.memberlist.types import OpenStream, SendPacket
    from pyserf.sim.network import SimNetwork

    net = SimNetwork(seed=seed, loss=loss)
    counts: Counter[str] = Counter()
    clock = _Clock()

    def instrument(node) -> None:
        ml = node.serf.memberlist
        ml.config.eager_sync = eager
        push_pull, periodic = ml._push_pull, ml._periodic_push_pull
        serve, take = ml.handle_stream, ml.take_actions

        periodic_now = [False]

        def counted_push_pull(addr, join, now, on_done):
            kind = "pp-join" if join else "pp-periodic" if periodic_now[0] else "pp-extra"
            counts[kind] += 1
            return push_pull(addr, join, now, on_done)

        def counted_periodic(now, reschedule=True):
            periodic_now[0] = reschedule
            try:
                return periodic(now, reschedule)
            finally:
                periodic_now[0] = False

        def counted_serve(data, source, now):
            reply = serve(data, source, now)
            counts["served"] += 1
            counts["stream-bytes"] += len(data) + len(reply or b"")
            return reply

        def counted_take():
            actions = take()
            for action in actions:
                if isinstance(action, SendPacket):
                    counts["datagrams"] += 1
                    counts["udp-bytes"] += len(action.data)
                elif isinstance(action, OpenStream):
                    counts["streams"] += 1
            return actions

        ml._push_pull = clock.wrap("push-pull", counted_push_pull)
        ml._periodic_push_pull = counted_periodic
        ml.handle_stream = clock.wrap("push-pull", counted_serve)
        ml.stream_reply = clock.wrap("push-pull", ml.stream_reply)
        ml.receive_packet = clock.wrap("udp", ml.receive_packet)
        ml.take_actions = counted_take
        node.scheduler.run_due = clock.wrap("timers", node.scheduler.run_due)
        first = ml._loops.get("push-pull")
        if first is not None:  # scheduled at start, before the wrapper existed
            first.cancel()
            ml._schedule_push_pull(first.when)

    wall = time.perf_counter()
    nodes = []
    for i in range(n):
        node = net.add_node(f"n{i}", f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}")
        instrument(node)
        nodes.append(node)
    counts.clear()
    clock.spent.clear()
    start = net.now
    rng = net.rng
    when = sorted(start + rng.uniform(0, window) for _ in nodes[1:])
    converged: dict[str, float] = {}
    end = start + window + settle

    def check() -> None:
        for node in nodes:
            if node.name not in converged and sum(
                    1 for m in node.serf.member_list() if m.status.label() == "alive") == n:
                converged[node.name] = net.now - start

    for node, at in zip(nodes[1:], when, strict=True):
        net.run_until(at)
        net.join(node, nodes[0])
    step = 0.1
    while net.now < end - 1e-9:
        net.run_until(min(end, net.now + step))
        check()
    span = end - start
    late = max(converged.values()) if len(converged) == n else math.inf
    last_join = when[-1] - start if when else 0.0
    per_node_s = n * span
    return {
        "n": n, "eager": eager, "span": span, "window": window,
        "converged_all_s": late,
        "after_last_join_s": late - last_join,
        "converged_p50_s": sorted(converged.values())[len(converged) // 2] if converged
        else math.inf,
        "converged_nodes": len(converged),
        "pp_join": counts["pp-join"] / per_node_s,
        "pp_periodic": counts["pp-periodic"] / per_node_s,
        "pp_extra": counts["pp-extra"] / per_node_s,
        "pp_served": counts["served"] / per_node_s,
        "stream_bytes": counts["stream-bytes"] / per_node_s,
        "datagrams": counts["datagrams"] / per_node_s,
        "udp_bytes": counts["udp-bytes"] / per_node_s,
        "cpu_pp_ms": 1000 * clock.spent["push-pull"] / per_node_s,
        "cpu_udp_ms": 1000 * clock.spent["udp"] / per_node_s,
        "cpu_timers_ms": 1000 * clock.spent["timers"] / per_node_s,
        "wall_s": time.perf_counter() - wall,
    }


# -- driver ----------------------------------------------------------------------------------


def run_variant(tree: Path, args: argparse.Namespace, n: int, eager: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", str(tree),
           "-n", str(n), "--window", str(args.window), "--settle", str(args.settle),
           "--seed", str(args.seed), "--loss", str(args.loss), "--eager", str(int(eager))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def checkout(rev: str, into: Path) -> Path:
    """The files of ``rev`` (committed code only) in a directory of their own."""
    tree = into / "tree"
    tree.mkdir()
    git = subprocess.Popen(["git", "-C", str(ROOT), "archive", rev], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=git.stdout, check=True)
    if git.wait() != 0:
        raise SystemExit(f"git archive {rev} failed")
    return tree


def table(n: int, rows: list[tuple[str, dict]]) -> None:
    serf_sync = 1 / serf_push_pull_period(n)
    print(f"\nN={n}: joins over {rows[0][1]['window']:.1f} s, measured over "
          f"{rows[0][1]['span']:.1f} s; serf's periodic push-pull every "
          f"{serf_push_pull_period(n):.0f} s = {serf_sync:.4f}/node/s")
    print(f"{'variant':14} {'join s':>7} {'tail s':>6} {'extra pp':>9} {'x serf':>7} "
          f"{'all pp':>7} {'x serf':>7} {'served':>7} {'strm B':>8} {'dgrams':>7} "
          f"{'udp B':>7} {'cpu pp':>7} {'cpu udp':>7} {'cpu all':>7} {'wall s':>7}")
    print(f"{'':14} {'':>7} {'':>6} {'/node/s':>9} {'':>7} {'/node/s':>7} {'':>7} "
          f"{'/node/s':>7} {'/node/s':>8} {'/node/s':>7} {'/node/s':>7} {'ms/n/s':>7} "
          f"{'ms/n/s':>7} {'cores':>7}")
    serf_all = serf_sync + rows[0][1]["pp_join"]
    for label, r in rows:
        every = r["pp_join"] + r["pp_periodic"] + r["pp_extra"]
        cores = n * (r["cpu_pp_ms"] + r["cpu_udp_ms"] + r["cpu_timers_ms"]) / 1000
        print(f"{label:14} {r['converged_all_s']:7.2f} {r['after_last_join_s']:6.2f} "
              f"{r['pp_extra']:9.4f} {r['pp_extra'] / serf_sync:7.2f} {every:7.4f} "
              f"{every / serf_all:7.2f} {r['pp_served']:7.4f} {r['stream_bytes']:8.0f} "
              f"{r['datagrams']:7.2f} {r['udp_bytes']:7.0f} {r['cpu_pp_ms']:7.2f} "
              f"{r['cpu_udp_ms']:7.2f} {cores:7.2f} {r['wall_s']:7.1f}")
    print(f"{'serf (implied)':14} {'':>7} {'':>6} {'0':>9} {'':>7} {serf_all:7.4f} "
          f"{1.0:7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="cluster size (repeatable)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="virtual seconds over which the N-1 joins are issued")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="virtual seconds measured after the last join")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--before", help="git revision to compare against (e.g. HEAD~1)")
    parser.add_argument("--no-off", action="store_true", help="skip the eager-off variant")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--eager", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [200]
    if args.worker:
        sys.path.insert(0, args.tree)
        print(json.dumps(storm(sizes[0], args.window, args.settle, args.seed, args.loss,
                               bool(args.eager))))
        return 0
    with tempfile.TemporaryDirectory(prefix="join-storm-") as tmp:
        before = checkout(args.before, Path(tmp)) if args.before else None
        for n in sizes:
            rows = []
            if before is not None:
                rows.append((f"before {args.before}", run_variant(before, args, n, True)))
            rows.append(("eager (now)", run_variant(ROOT, args, n, True)))
            if not args.no_off:
                rows.append(("eager off", run_variant(ROOT, args, n, False)))
            table(n, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
