"""The per-push-pull CPU cost of the sans-I/O machines against the state size, in isolation.

In a join storm every joiner push-pulls with the seed: the seed answers with its whole state
(encode, LZW-compress) and merges the joiner's; the joiner decompresses, decodes and merges N
entries. Later periodic and catch-up syncs exchange two full states between members that
already agree. This times each step on one CPU, no sockets, for growing N, and prints the cost
per member entry: a constant column means the step scales linearly with the state. Usage::

    python benchmarks/pushpull_cost.py [--sizes 50,100,200,400,800] [--repeat 5]
        [--no-compression]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.memberlist import lzw  # noqa: E402
from pyserf.memberlist.timers import Scheduler  # noqa: E402
from pyserf.memberlist.types import MemberlistConfig  # noqa: E402
from pyserf.serf.config import SerfConfig  # noqa: E402
from pyserf.serf.core import Serf  # noqa: E402

PORT = 7946


def make_node(i: int, compression: bool) -> Serf:
    name, ip = f"n{i}", f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
    ml = MemberlistConfig(name=name, advertise_addr=ip, advertise_port=PORT, bind_port=PORT,
                          enable_compression=compression)
    serf = Serf(SerfConfig(node_name=name, tags={"role": "bench", "dc": "dc1"}), ml,
                Scheduler(), random.Random(i))
    serf.start(0.0)
    return serf


def push_pull_payload(serf: Serf, join: bool) -> bytes:
    """What ``serf`` sends to open a push-pull (its whole state, framed and compressed)."""
    ml = serf.memberlist
    return ml._stream_payload(ml._local_state(join, 1.0))


def best_of(repeat: int, step: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,100,200,400,800")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    compression = not args.no_compression
    seed = make_node(0, compression)
    addr = ("10.0.0.1", PORT)
    print(f"# {' '.join(sys.argv)}  (compression {'on' if compression else 'off'}; best of "
          f"{args.repeat}; CPU time of this process)")
    print(f"{'N':>5} {'state B':>8} {'B/entry':>8} | {'seed join us':>12} {'us/entry':>8} | "
          f"{'compress us':>11} {'us/entry':>8} | {'decompress':>10} {'us/entry':>8} | "
          f"{'joiner merge':>12} {'us/entry':>8} | {'in-sync pp':>10} {'us/entry':>8}")
    joined = 1
    for n in sizes:
        # Grow the seed to n members the way a join storm does: one join push-pull each.
        last: list[float] = []  # the seed's cost of the last few joins, at ~n members
        while joined < n:
            joiner = make_node(joined, compression)
            payload = push_pull_payload(joiner, True)
            started = time.process_time()
            seed.memberlist.handle_stream(payload, (f"10.9.0.{joined % 250}", 40000), 1.0)
            last = [*last[-4:], time.process_time() - started]
            joined += 1
        seed_join = min(last) if last else 0.0
        raw = seed.memberlist._local_state(True, 1.0)
        compressed = lzw.compress(raw)
        t_compress = best_of(args.repeat, lambda raw=raw: lzw.compress(raw))
        t_decompress = best_of(args.repeat, lambda c=compressed: lzw.decompress(c))
        state = push_pull_payload(seed, False)

        def fresh_merge(state: bytes = state) -> None:
            # A joiner (knowing only itself) taking the seed's reply.
            make_node(10**6, compression).memberlist.handle_stream(state, addr, 2.0)

        base = best_of(args.repeat, lambda: make_node(10**6, compression))
        t_fresh = max(0.0, best_of(args.repeat, fresh_merge) - base)
        # Two members that already agree: a periodic or catch-up sync, both directions' work
        # on one side (answer with the whole state, merge the whole state).
        twin = make_node(10**6 + 1, compression)
        twin.memberlist.handle_stream(state, addr, 2.0)
        t_sync = best_of(args.repeat,
                         lambda s=state, t=twin: t.memberlist.handle_stream(s, addr, 3.0))
        us = 1e6

        def per(t: float, n: int = n) -> str:
            return f"{t * 1e6 / n:8.1f}"

        print(f"{n:>5} {len(state):>8} {len(raw) / n:8.1f} | {seed_join * us:12.0f} "
              f"{per(seed_join)} | "
              f"{t_compress * us:11.0f} {per(t_compress)} | {t_decompress * us:10.0f} "
              f"{per(t_decompress)} | {t_fresh * us:12.0f} {per(t_fresh)} | "
              f"{t_sync * us:10.0f} {per(t_sync)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
