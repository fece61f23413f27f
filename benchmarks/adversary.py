"""The issue-8 adversary campaign: every attack against pyserf and real serf, plain and encrypted.

    .venv/bin/python benchmarks/adversary.py [--impl pyserf|serf|both] [--mode plain|encrypted|both]
                                             [--quick] [--attack NAME ...]

Prints one row per attack (ok/BROKEN and why, frames and bytes sent, peak RSS, worst ping
latency during the attack) and writes them to benchmarks/results/adversary.json. The attacks
and health criteria live in tests/e2e/adversary_lib.py, shared with tests/e2e/test_adversary.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e import adversary_lib as adv  # noqa: E402
from tests.e2e.harness import SERF  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "adversary.json"


def explain_deaths(arena: adv.Arena, results: list[adv.Result]) -> None:
    """Name the frames behind every "process exited" (run again, one frame at a time)."""
    by_name = {a.name: a for a in adv.ATTACKS}
    for result in results:
        if "process exited" in result.reason and result.attack in by_name:
            killers = adv.explain(arena, by_name[result.attack])
            result.extra["killers"] = killers
            for line in killers:
                print(f"  {arena.kind} {arena.mode} {result.attack} killed by {line}",
                      flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["pyserf", "serf", "both"], default="both")
    parser.add_argument("--mode", choices=["plain", "encrypted", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="the e2e test's smaller sizes")
    parser.add_argument("--attack", action="append", default=[],
                        choices=[a.name for a in adv.ATTACKS], help="run only these")
    parser.add_argument("--explain", action="store_true",
                        help="for attacks that kill the agent, find the frames that do it")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    impls = ["pyserf", "serf"] if args.impl == "both" else [args.impl]
    modes = ["plain", "encrypted"] if args.mode == "both" else [args.mode]
    if "serf" in impls and SERF is None:
        print("error: the real serf binary is not installed (apt-get install serf); "
              "the serf comparison cannot run", file=sys.stderr)
        return 2
    sizes = adv.QUICK if args.quick else adv.FULL
    results: list[adv.Result] = []
    started = time.monotonic()
    for impl in impls:
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix=f"adv-{impl}-{mode}-") as tmp:
                arena = adv.Arena(Path(tmp), impl, mode == "encrypted", sizes)
                try:
                    got = adv.run_all(arena, args.attack or None,
                                      report=lambda r: print(adv.format_table([r])
                                                             .splitlines()[1], flush=True))
                    if args.explain:
                        explain_deaths(arena, got)
                    results += got
                finally:
                    arena.close()
    print()
    print(adv.format_table(results))
    broken = [r for r in results if not r.ok]
    print(f"\n{len(results)} checks, {len(broken)} broken, "
          f"{time.monotonic() - started:.0f} s; RSS bound {adv.RSS_BOUND_MIB} MiB, "
          f"probes within {adv.HEALTH_TIMEOUT_S} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "rss_bound_mib": adv.RSS_BOUND_MIB, "health_timeout_s": adv.HEALTH_TIMEOUT_S,
        "join_bound_s": adv.TCP_TIMEOUT_S[sizes.peers_profile] + adv.JOIN_SLACK_S,
        "sizes": "quick" if args.quick else "full",
        "results": [r.row() for r in results]}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
