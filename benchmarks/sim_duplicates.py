"""What a datagram of old news costs its receiver (issue 11: is the simulator's cost per
packet in re-reading gossip everyone already knows?).

Runs a simulated N-node join storm with tracing, takes its full datagrams (over 1,000 bytes:
~20 piggybacked messages each), and replays them to one node that has already seen them all,
so every message is a known duplicate. Prints the CPU microseconds per datagram and, with
``--profile``, where they go. Usage::

    python benchmarks/sim_duplicates.py [-n 200] [--count 3000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserf.sim.network import SimNetwork  # noqa: E402

SOURCE = ("10.1.0.9", 7946)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--count", type=int, default=3000, help="datagrams replayed")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # Replayed pings name other nodes: memberlist warns about each; not what is measured.
    logging.getLogger("pyserf").setLevel(logging.ERROR)
    net = SimNetwork(seed=1, trace=True)
    nodes = [net.add_node(f"n{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(args.n)]
    for i, node in enumerate(nodes[1:], 1):
        net.call_at(i / args.n, lambda now, node=node: net.join(node, nodes[0]))
    net.run_until(net.now + 6.0)
    assert net.trace is not None
    sample = [s.data for s in net.trace if s.transport == "udp" and len(s.data) > 1000]
    sample = sample[:args.count]
    machine = nodes[7].serf.memberlist
    now = net.now

    def replay() -> None:
        for data in sample:
            machine.receive_packet(data, SOURCE, now)
        machine.take_actions()

    replay()  # the first pass learns what is new and fills the decode memos
    cpu = time.process_time()
    replay()
    per = (time.process_time() - cpu) / len(sample) * 1e6
    print(f"N={args.n}: {len(sample)} datagrams of known news, {per:.1f} us CPU each")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(replay)
        pstats.Stats(profile).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
