"""What the agent's in-memory metrics recorder costs: per call, and per simulated packet.

1. Micro-benchmark: nanoseconds per ``incr`` / ``sample`` / ``gauge`` / ``measure_since`` call
   on the machines' no-op :data:`NULL_METRICS` and on ``pyserf.telemetry.recorder.Recorder``
   (no network sinks: the in-memory part every agent runs), best of ``--repeat`` runs.
2. Per packet: the same simulated join storm (``-n`` nodes join one seed over 5 virtual seconds,
   then ``--virtual`` seconds in all) with every node on the no-op recorder, then with every node
   counting into its own Recorder (what each agent process does); CPU microseconds per packet
   for both and their difference, and the metric calls a packet makes (counted, deterministic).

``--tree DIR`` imports pyserf from another checkout (``git archive REV | tar -x -C DIR``) to
compare a revision. Usage::

    python benchmarks/recorder_cost.py [-n 200] [--virtual 30] [--repeat 5] [--tree DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CALLS = 200_000


def per_call_ns(metrics: Any, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` nanoseconds per call of each Metrics method (loop overhead removed)."""
    def timed(body: Any) -> float:
        return min(timeit.repeat(body, number=1, repeat=repeat))

    def empty() -> None:
        for _ in range(CALLS):
            pass

    def incr() -> None:
        call = metrics.incr
        for _ in range(CALLS):
            call("memberlist.udp.sent", 148)

    def sample() -> None:
        call = metrics.sample
        for _ in range(CALLS):
            call("memberlist.probeNode", 1.5)

    def gauge() -> None:
        call = metrics.gauge
        for _ in range(CALLS):
            call("memberlist.health.score", 0)

    def measure_since() -> None:
        start, since = metrics.start, metrics.measure_since
        for _ in range(CALLS):
            since("memberlist.gossip", start())

    loop = timed(empty)
    return {name: 1e9 * (timed(body) - loop) / CALLS for name, body in
            (("incr", incr), ("sample", sample), ("gauge", gauge),
             ("start+measure_since", measure_since))}


def storm(n: int, virtual: float, recorder: str) -> dict[str, float]:
    """A join storm with every node on ``recorder`` ("null", "recorder" or "counting")."""
    from pyserf.memberlist.metrics import Metrics
    from pyserf.sim.network import SimNetwork
    from pyserf.telemetry.recorder import Recorder

    calls = [0]

    class Counting(Metrics):
        def incr(self, key: str, value: float = 1.0) -> None:
            calls[0] += 1

        def gauge(self, key: str, value: float) -> None:
            calls[0] += 1

        def sample(self, key: str, value: float) -> None:
            calls[0] += 1

        def measure_since(self, key: str, start: float) -> None:
            calls[0] += 1

    gc.collect()
    net = SimNetwork(seed=1)
    streams = [0]
    deliver = net._deliver_stream

    def counted(sender: Any, action: Any) -> None:
        streams[0] += 1
        deliver(sender, action)

    net._deliver_stream = counted  # type: ignore[method-assign]
    nodes = [net.add_node(f"n{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(n)]
    for node in nodes:
        if recorder == "recorder":
            node.serf.use_metrics(Recorder())
        elif recorder == "counting":
            node.serf.use_metrics(Counting())
    start = net.now
    joins = sorted(start + net.rng.uniform(0, 5.0) for _ in nodes[1:])
    cpu0 = time.process_time()
    for node, at in zip(nodes[1:], joins, strict=True):
        net.run_until(at)
        net.join(node, nodes[0])
    net.run_until(start + virtual)
    cpu = time.process_time() - cpu0
    packets = net.packets_sent + streams[0]
    return {"packets": packets, "cpu_s": cpu, "cpu_us_per_packet": 1e6 * cpu / packets,
            "calls_per_packet": calls[0] / packets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="simulated cluster size")
    parser.add_argument("--virtual", type=float, default=30.0, help="virtual seconds simulated")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many micro runs")
    parser.add_argument("--storms", type=int, default=2,
                        help="storms per recorder (alternated; the best CPU counts)")
    parser.add_argument("--tree", default=str(ROOT), help="import pyserf from this checkout")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    from pyserf.memberlist.metrics import NULL_METRICS
    from pyserf.telemetry.recorder import Recorder

    result: dict[str, Any] = {"tree": args.tree,
                              "ns_per_call": {"null": per_call_ns(NULL_METRICS, args.repeat),
                                              "recorder": per_call_ns(Recorder(), args.repeat)}}
    runs: dict[str, list[dict[str, float]]] = {"null": [], "recorder": []}
    for _ in range(args.storms):
        for kind in runs:
            runs[kind].append(storm(args.n, args.virtual, kind))
    best = {kind: min(r, key=lambda x: x["cpu_us_per_packet"]) for kind, r in runs.items()}
    counting = storm(args.n, args.virtual, "counting")
    result["storm"] = {"n": args.n, "virtual_s": args.virtual, **{
        f"{kind}_cpu_us_per_packet": b["cpu_us_per_packet"] for kind, b in best.items()},
        "packets": best["null"]["packets"], "calls_per_packet": counting["calls_per_packet"]}
    storm_result = result["storm"]
    storm_result["recorder_us_per_packet"] = (storm_result["recorder_cpu_us_per_packet"]
                                              - storm_result["null_cpu_us_per_packet"])
    if args.json:
        print(json.dumps(result))
        return
    for kind, calls in result["ns_per_call"].items():
        print(f"{kind:>9} ns/call: " + "  ".join(f"{k} {v:6.0f}" for k, v in calls.items()))
    print(f"storm n={args.n} {args.virtual:.0f} virtual s, {storm_result['packets']} packets, "
          f"{storm_result['calls_per_packet']:.1f} metric calls/packet: "
          f"cpu us/packet null {storm_result['null_cpu_us_per_packet']:.1f}, recorder "
          f"{storm_result['recorder_cpu_us_per_packet']:.1f} "
          f"(+{storm_result['recorder_us_per_packet']:.1f})")


if __name__ == "__main__":
    main()
