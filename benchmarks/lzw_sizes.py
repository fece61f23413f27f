"""Which datagram sizes LZW shrinks: the threshold under which memberlist skips compression.

Runs a simulated join storm (N nodes join node 0 within one virtual second, then ``--run``
seconds), compresses every datagram a machine hands its sender as memberlist would, and
prints per size bucket how many there were, the share that shrank and the bytes saved. Usage::

    python benchmarks/lzw_sizes.py [-n 50] [--run 20] [--bucket 20] [--top 400]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.memberlist import codec  # noqa: E402
from pyserf.memberlist.memberlist import Memberlist  # noqa: E402
from pyserf.sim.network import SimNetwork  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--run", type=float, default=20.0, help="virtual seconds")
    parser.add_argument("--bucket", type=int, default=20, help="bucket width, bytes")
    parser.add_argument("--top", type=int, default=400, help="last bucket starts here")
    args = parser.parse_args()
    stats: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    raw_send = Memberlist._raw_send

    def measured(self, addr, msg, node, now):
        size = len(codec.compress(msg))
        row = stats[min(len(msg) // args.bucket * args.bucket, args.top)]
        row[0] += 1
        row[1] += size < len(msg)
        row[2] += len(msg)
        row[3] += min(size, len(msg))
        return raw_send(self, addr, msg, node, now)

    Memberlist._raw_send = measured
    net = SimNetwork(seed=1)
    nodes = [net.add_node(f"n{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(args.n)]
    for i, node in enumerate(nodes[1:], 1):
        net.call_at(i / args.n, lambda now, node=node: net.join(node, nodes[0]))
    net.run_until(net.now + args.run)
    total = sum(row[0] for row in stats.values())
    print("bytes        datagrams  share  shrank  saved")
    for start in sorted(stats):
        count, shrank, before, after = stats[start]
        label = f"{start}-{start + args.bucket - 1}" if start < args.top else f"{start}+"
        print(f"{label:<12} {count:9d} {count / total:6.1%} {shrank / count:7.1%} "
              f"{1 - after / before:6.1%}")


if __name__ == "__main__":
    main()
