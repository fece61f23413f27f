#!/usr/bin/env python3
"""Before/after of the pyserf/serf ratios across a change (issue 12's acceptance: "the benchmark
ratios against serf do not get worse").

Rounds are interleaved so both versions see the same machine: each round runs
``cluster_bench.py`` for serf and the current HEAD, then for pyserf at the ``--before`` commit
(a temporary worktree running today's cluster_bench.py, so both are measured the same way). Each
ratio divides a pyserf figure by serf's from the same round.

    python benchmarks/redesign_ab.py --before a56b7c2 [--rounds 3] [--sizes 20,50] --out DIR
    python benchmarks/redesign_ab.py --report DIR      # the table from an earlier run's JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "cluster_bench.py"
# (label, cluster_bench result key): every figure its report compares with serf.
FIGURES = [("join", "join_times"), ("join issue", "join_issue_s"), ("join storm", "join_total_s"),
           ("failed", "fail_times"), ("left", "leave_times"), ("event", "event_times"),
           ("query", "query_times"), ("query-return", "query_returns"),
           ("idle CPU", "cpu_pct"), ("RSS", "rss_mib"), ("storm CPU/agent", "storm_cpu_agent_s")]


def _results(path: Path) -> dict[tuple[str, int], dict]:
    return {(r["kind"], r["size"]): r for r in json.loads(path.read_text())["results"]}


def run(before: str, rounds: int, sizes: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tree),
                        before], check=True, capture_output=True)
        try:
            shutil.copy(BENCH, tree / "benchmarks" / "cluster_bench.py")
            for n in range(1, rounds + 1):
                for name, script, kinds in (("after", BENCH, "serf,pyserf"),
                                            ("before", tree / "benchmarks" / "cluster_bench.py",
                                             "pyserf")):
                    print(f"round {n}: {name}", flush=True)
                    with open(out / f"{name}{n}.log", "w") as log:
                        subprocess.run([sys.executable, str(script), "--sizes", sizes,
                                        "--rounds", "1", "--kinds", kinds,
                                        "--json", str(out / f"{name}{n}.json")],
                                       check=True, stdout=log, stderr=subprocess.STDOUT)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    report(out)


def report(out: Path) -> None:
    rounds = sorted(int(p.stem[5:]) for p in out.glob("after*.json"))
    ratios: dict[tuple[int, str, str], list[float]] = {}
    sizes: set[int] = set()
    for n in rounds:
        after, before = _results(out / f"after{n}.json"), _results(out / f"before{n}.json")
        for (kind, size), serf in after.items():
            if kind != "serf" or ("pyserf", size) not in before:
                continue
            sizes.add(size)
            for label, key in FIGURES:
                base = statistics.mean(serf[key])
                for version, res in (("before", before), ("after", after)):
                    value = statistics.mean(res[("pyserf", size)][key])
                    ratios.setdefault((size, label, version), []).append(
                        value / base if base else float("inf"))
    print(f"pyserf/serf ratios, {len(rounds)} rounds (serf from each round's 'after' run)")
    print(f"{'N':>4} {'ratio':16} {'before, per round':>24} {'after, per round':>24}"
          f"   mean before -> after")
    for size in sorted(sizes):
        for label, _ in FIGURES:
            b, a = ratios[(size, label, "before")], ratios[(size, label, "after")]
            print(f"{size:>4} {label:16} {' '.join(f'{x:6.2f}' for x in b):>24} "
                  f"{' '.join(f'{x:6.2f}' for x in a):>24}   "
                  f"{statistics.mean(b):6.2f} -> {statistics.mean(a):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="commit to compare HEAD against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--out", type=Path, help="directory for the JSON and logs")
    parser.add_argument("--report", type=Path, help="print the table of an earlier run")
    args = parser.parse_args()
    if args.report:
        report(args.report)
    elif args.before and args.out:
        run(args.before, args.rounds, args.sizes, args.out)
    else:
        parser.error("give --before and --out, or --report DIR")


if __name__ == "__main__":
    main()
