"""Two clusters merged by one join, in the simulator: how long until everyone lists everyone.

The shape of tests/e2e/test_mixed_cluster.py: s2 and p3 form one cluster, s1, p1 and p2
another, then s2 joins p2. Each trial is a fresh seed; it is timed from the merging join until
every node lists all five alive (virtual seconds, bounded at 60). Three variants, same seeds:

- ``serf``: every node runs memberlist's rules only (no pyserf catch-up syncs at all);
- ``mixed, no merge syncs``: s1 and s2 serf-like, the p nodes pyserf without the syncs that
  follow a merging join (pyserf before they existed);
- ``mixed``: s1 and s2 serf-like, the p nodes pyserf as shipped.

Prints, per variant, the trials slower than 20 s (the e2e test's bound), the median, p99 and
the slowest. Usage::

    python benchmarks/cluster_merge.py [--trials 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.memberlist import state  # noqa: E402
from pyserf.sim.network import SimNetwork  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    args = parser.parse_args()
    variants = (("serf", set(NAMES), False),
                ("mixed, no merge syncs", {"s1", "s2"}, False),
                ("mixed", {"s1", "s2"}, True))
    print(f"{args.trials} seeds each; seconds from the merging join until all list all five")
    for label, serf_like, merge_syncs in variants:
        times = sorted(run(args.trials, serf_like, merge_syncs))
        slow = sum(t > 20.0 for t in times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"{label:24s} over 20 s: {slow:4d}/{len(times)}   median "
              f"{statistics.median(times):5.2f}   p99 {p99:5.2f}   max {times[-1]:5.2f}")


if __name__ == "__main__":
    main()
