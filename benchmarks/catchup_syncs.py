"""Push-pulls in a simulated join storm, by why each was opened (issue 11, item 0).

Runs ``pyserf simulate``'s join scenario (N nodes join node 0 within ``--window`` virtual
seconds, until every node lists all N alive) and counts each push-pull a node opened as: the
join itself, the follow-up after a node's own join, a catch-up sync started by news heard by
gossip, a catch-up sync following one that brought news, or memberlist's periodic sync.
Prints the report's convergence and traffic, the counts per node over the storm, and the rate
serf's own settings imply (one periodic push-pull per scaled interval, plus the join). Usage::

    python benchmarks/catchup_syncs.py -n 200 [--seed 1] [--window 1] [--no-eager]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.memberlist.memberlist import Memberlist  # noqa: E402
from pyserf.memberlist.profiles import LAN, push_pull_scale  # noqa: E402
from pyserf.sim import scenarios  # noqa: E402


def instrument(counts: collections.Counter, eager: bool) -> None:
    """Wrap the machine's push-pull entry points to tag each exchange with its reason."""
    machine = Memberlist
    reason: list[str | None] = [None]
    starting: list[str | None] = [None]
    push_pull, start, arm, sync = (machine._push_pull, machine._start_eager_sync,
                                   machine._arm_eager_sync, machine._eager_sync)
    init = machine.__init__

    def tagged_push_pull(self, addr, join, now, on_done):
        counts["join" if join else (reason[0] or "periodic")] += 1
        return push_pull(self, addr, join, now, on_done)

    def tagged_start(self, now, follow_up=False):
        starting[0] = "follow_up" if follow_up else "news"
        try:
            return start(self, now, follow_up)
        finally:
            starting[0] = None

    def tagged_arm(self, when):
        if self._eager_timer is None or self._eager_timer.cancelled:
            self._bench_reason = starting[0] or "again"
        return arm(self, when)

    def tagged_sync(self, now):
        reason[0] = "eager_" + getattr(self, "_bench_reason", "?")
        try:
            return sync(self, now)
        finally:
            reason[0] = None

    def configured(self, config, *args, **kwargs):
        config.eager_sync = eager
        init(self, config, *args, **kwargs)

    machine._push_pull = tagged_push_pull
    machine._start_eager_sync = tagged_start
    machine._arm_eager_sync = tagged_arm
    machine._eager_sync = tagged_sync
    machine.__init__ = configured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=1.0, help="join window, seconds")
    parser.add_argument("--no-eager", action="store_true", help="catch-up syncs off")
    args = parser.parse_args()
    counts: collections.Counter = collections.Counter()
    instrument(counts, eager=not args.no_eager)
    cpu = time.process_time()
    report = scenarios.simulate(scenarios.Options(nodes=args.n, scenario="join", seed=args.seed,
                                                  join_window=args.window))
    report.pop("curve", None)
    n = args.n
    serf_interval = push_pull_scale(LAN.push_pull_interval, n)
    print(json.dumps({k: report[k] for k in ("nodes", "seed", "converged", "convergence_s",
                                             "window_s", "push_pull", "bytes_per_node_s")}))
    catch_up = sum(v for k, v in counts.items() if k.startswith("eager"))
    print(f"push-pulls by reason: {dict(sorted(counts.items()))}")
    print(f"per node over the storm: {sum(counts.values()) / n:.2f} push-pulls, of which "
          f"{catch_up / n:.2f} catch-up syncs")
    print(f"serf's settings: periodic push-pull every {serf_interval:.0f} s at N={n} "
          f"({1 / serf_interval:.4f} per node per second) plus the join")
    print(f"cpu {time.process_time() - cpu:.1f} s")


if __name__ == "__main__":
    main()
