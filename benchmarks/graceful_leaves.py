"""Graceful leaves reported as failures, real serf vs pyserf, with real agents on loopback.

Each run starts six agents in one encrypted cluster (four observers, two leavers), waits until
all list all six alive, sends SIGINT to both leavers at once and, 3 s after they exit, reads
each observer's log for "EventMemberFailed: <leaver>". serf 0.9 reports a graceful leaver failed
when every gossiped copy of its leave intent missed the observer before its goodbye (the
memberlist dead message about itself) arrived; it corrects that to a forced leave at the next
push-pull. pyserf reports a goodbye as a leave, and a pyserf leaver also sends its intent
straight to every member.

Layouts: ``ssssss`` (all serf), ``spspsp`` (observers s p s p, leavers s p) and ``pppppp``.
Usage::

    python benchmarks/graceful_leaves.py [--runs 25] [--layouts ssssss,spspsp,pppppp]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SERF, Cluster, statuses, wait_until  # noqa: E402


def one_run(layout: str) -> tuple[int, int, list[str]]:
    """(pairs reported failed, observer-leaver pairs, which) for one cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="graceful-leaves-"))
    key = subprocess.run([SERF, "keygen"], capture_output=True, text=True,
                         check=True).stdout.strip()
    cluster = Cluster(tmp)
    try:
        agents = []
        for i, kind in enumerate(layout):
            join = [f"-join={agents[0].ip}"] if agents else []
            agents.append(cluster.start("serf" if kind == "s" else "pyserf", f"n{i}{kind}",
                                        f"-encrypt={key}", *join))
        names = {a.name for a in agents}
        # serf alone can take a periodic push-pull (30 s) to list a member whose alive it
        # missed: up to two of those.
        wait_until(lambda: all(statuses(a.rpc) == dict.fromkeys(names, "alive")
                               for a in agents), 65, what="six alive everywhere")
        observers, leavers = agents[:4], agents[4:]
        for agent in leavers:
            cluster.send(agent, signal.SIGINT)
        for agent in leavers:
            agent.proc.wait(15)
        time.sleep(3.0)
        failed = [f"{o.name} saw {leaver.name} failed" for o in observers for leaver in leavers
                  if re.search(rf"EventMemberFailed: {leaver.name} ", o.log())]
        return len(failed), len(observers) * len(leavers), failed
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--layouts", default="ssssss,spspsp,pppppp")
    args = parser.parse_args()
    if SERF is None:
        sys.exit("the real serf binary is needed (apt-get install serf)")
    for layout in args.layouts.split(","):
        failed = pairs = runs_with_any = 0
        for _ in range(args.runs):
            f, p, which = one_run(layout)
            failed, pairs, runs_with_any = failed + f, pairs + p, runs_with_any + bool(f)
            for line in which:
                print(f"  {layout}: {line}", flush=True)
        print(f"{layout}: {failed}/{pairs} observer-leaver pairs reported a graceful leave as "
              f"failed; {runs_with_any}/{args.runs} runs had one", flush=True)


if __name__ == "__main__":
    main()
