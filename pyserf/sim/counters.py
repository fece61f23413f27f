"""Traffic counters for capacity planning: what each simulated node sent and received.

Kept per node as plain integer slots (cheap to bump on every datagram); totals are summed only
when a snapshot is taken. Two snapshots give rates over a window: messages and bytes per node
per second, push-pulls per node per second and their size.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = (
    "udp_sent", "udp_bytes_sent", "udp_received", "udp_bytes_received",
    "streams_opened", "streams_served", "tcp_bytes_sent", "tcp_bytes_received",
    "push_pulls", "push_pulls_served", "push_pull_bytes",
    # Nodes that send uncompressed (the simulator's default) still estimate what the wire
    # would carry: a deterministic sample of datagrams and streams is compressed as the agent
    # would, and these are the sample's sizes before and after.
    "udp_sampled_bytes", "udp_sampled_compressed", "tcp_sampled_bytes", "tcp_sampled_compressed",
)


class NodeCounters:
    """One node's traffic. ``push_pull_bytes`` counts what the node wrote in push-pull
    streams (its request when it opened one, its reply when it served one), so the sum over
    nodes is all push-pull traffic."""

    __slots__ = FIELDS
    # The slots, all set to 0 by __init__ (declared for type checkers).
    udp_sent: int
    udp_bytes_sent: int
    udp_received: int
    udp_bytes_received: int
    streams_opened: int
    streams_served: int
    tcp_bytes_sent: int
    tcp_bytes_received: int
    push_pulls: int
    push_pulls_served: int
    push_pull_bytes: int
    udp_sampled_bytes: int
    udp_sampled_compressed: int
    tcp_sampled_bytes: int
    tcp_sampled_compressed: int

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class CounterSnapshot:
    """Counters at virtual time ``time``: ``total`` over all nodes and ``per_node``."""

    time: float
    total: dict[str, int]
    per_node: dict[str, dict[str, int]]

    def delta(self, earlier: CounterSnapshot) -> dict[str, int]:
        """Total counts between ``earlier`` and this snapshot."""
        return {k: v - earlier.total.get(k, 0) for k, v in self.total.items()}

    def rates(self, earlier: CounterSnapshot, nodes: int | None = None) -> dict[str, float]:
        """Per node per second between ``earlier`` and this snapshot (``nodes`` defaults to
        the nodes counted now), plus ``push_pull_mean_bytes``: request and reply of one
        push-pull in the window."""
        window = self.time - earlier.time
        count = nodes if nodes is not None else len(self.per_node)
        if window <= 0 or count <= 0:
            raise ValueError("rates need a later snapshot and at least one node")
        delta = self.delta(earlier)
        rates = {f"{k}_per_node_s": v / window / count for k, v in delta.items()}
        pulls = delta["push_pulls"]
        rates["push_pull_mean_bytes"] = delta["push_pull_bytes"] / pulls if pulls else 0.0
        rates["msgs_per_node_s"] = (delta["udp_sent"] + delta["streams_opened"]) / window / count
        rates["bytes_per_node_s"] = (delta["udp_bytes_sent"] + delta["tcp_bytes_sent"]) \
            / window / count
        rates["compressed_bytes_per_node_s_est"] = (
            delta["udp_bytes_sent"] * _ratio(delta, "udp")
            + delta["tcp_bytes_sent"] * _ratio(delta, "tcp")) / window / count
        return rates


def _ratio(delta: dict[str, int], transport: str) -> float:
    """Compressed over sent size in the sample (1.0 without one: sent as is)."""
    sampled = delta[f"{transport}_sampled_bytes"]
    return delta[f"{transport}_sampled_compressed"] / sampled if sampled else 1.0


def snapshot(time: float, counters: dict[str, NodeCounters]) -> CounterSnapshot:
    per_node = {name: c.as_dict() for name, c in counters.items()}
    total = dict.fromkeys(FIELDS, 0)
    for values in per_node.values():
        for k, v in values.items():
            total[k] += v
    return CounterSnapshot(time, total, per_node)
