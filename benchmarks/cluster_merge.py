"""Two clusters merged by one join, in the simulator: how long until everyone lists everyone.

The shape of tests/e2e/test_mixed_cluster.py: s2 and p3 form one cluster, s1, p1 and p2
another, then s2 joins p2. Each trial is a fresh seed; it is timed from the merging join until
every node lists all five alive (virtual seconds, bounded at 60). Three variants, same seeds:

- ``serf``: every node runs memberlist's rules only (no pyserf catch-up syncs at all);
- ``mixed, no merge syncs``: s1 and s2 serf-like, the p nodes pyserf without the syncs that
  follow a merging join (pyserf before they existed);
- ``mixed``: s1 and s2 serf-like, the p nodes pyserf as shipped.

Prints, per variant, the trials slower than 20 s (the e2e test's bound), the median, p99 and
the slowest. Then two pyserf clusters of 30 merged by one join (b0 joins a0 40 s after the
sides formed), with and without the settling sync that follows a burst of members learned by
gossip (memberlist/catchup.py BurstSettler). Usage::

    python benchmarks/cluster_merge.py [--trials 1000] [--trials-30 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.memberlist import catchup, state  # noqa: E402
from pyserf.sim.network import SimNetwork  # noqa: E402
from pyserf.sim.scenarios import two_clusters  # noqa: E402

NAMES = ("s1", "p1", "p2", "s2", "p3")
BOUND = 60.0


def trial(seed: int, serf_like: set[str]) -> float:
    net = SimNetwork(seed=seed)
    nodes = {}
    for i, name in enumerate(NAMES):
        nodes[name] = net.add_node(name, f"10.0.0.{i + 1}")
        if name in serf_like:
            nodes[name].serf.memberlist.config.eager_sync = False
    net.run_until(net.now + 0.5)
    for joiner, seed_node, settle in (("p3", "s2", 0.5), ("p1", "s1", 0.3), ("p2", "p1", 0.3)):
        net.join(nodes[joiner], nodes[seed_node])
        net.run_until(net.now + settle)
    net.join(nodes["s2"], nodes["p2"])
    start = net.now
    everyone = dict.fromkeys(NAMES, "alive")
    while net.now - start < BOUND:
        net.run_until(net.now + 0.1)
        if all(view == everyone for view in net.views().values()):
            return net.now - start
    return BOUND


def run(trials: int, serf_like: set[str], merge_syncs: bool) -> list[float]:
    original = state.merge_sync_targets
    if not merge_syncs:
        state.merge_sync_targets = lambda *args, **kwargs: []  # type: ignore[assignment]
    try:
        return [trial(seed, serf_like) for seed in range(trials)]
    finally:
        state.merge_sync_targets = original


def trial_30(seed: int) -> float:
    net = SimNetwork(seed=seed, record_log=False)
    a, b = two_clusters(net, 30)
    net.join(b[0], a[0])
    start = net.now
    while net.now - start < BOUND:
        net.run_until(net.now + 0.25)
        if all(len(view) == 60 for view in net.views().values()):
            return net.now - start
    return BOUND


def run_30(trials: int, settling: bool) -> list[float]:
    original = catchup.BurstSettler.take
    if not settling:
        catchup.BurstSettler.take = lambda self, now, members: False  # type: ignore[method-assign]
    try:
        return [trial_30(seed) for seed in range(trials)]
    finally:
        catchup.BurstSettler.take = original  # type: ignore[method-assign]


def report(label: str, times: list[float]) -> None:
    times = sorted(times)
    slow = sum(t > 20.0 for t in times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:24s} over 20 s: {slow:4d}/{len(times)}   median "
          f"{statistics.median(times):5.2f}   p99 {p99:5.2f}   max {times[-1]:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--trials-30", type=int, default=30)
    args = parser.parse_args()
    variants = (("serf", set(NAMES), False),
                ("mixed, no merge syncs", {"s1", "s2"}, False),
                ("mixed", {"s1", "s2"}, True))
    print(f"{args.trials} seeds each; seconds from the merging join until all list all five")
    for label, serf_like, merge_syncs in variants:
        report(label, run(args.trials, serf_like, merge_syncs))
    print(f"\n30 + 30 pyserf nodes, {args.trials_30} seeds each; seconds until all list all 60")
    report("no settling sync", run_30(args.trials_30, False))
    report("as shipped", run_30(args.trials_30, True))


if __name__ == "__main__":
    main()
