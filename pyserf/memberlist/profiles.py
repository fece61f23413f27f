"""memberlist timing profiles (the values of memberlist 0.2.2's LAN/WAN/Local configs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Timing:
    tcp_timeout: float
    indirect_checks: int
    retransmit_mult: int
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    push_pull_interval: float
    probe_timeout: float
    probe_interval: float
    gossip_nodes: int
    gossip_interval: float
    gossip_to_the_dead_time: float
    awareness_max_multiplier: int = 8
    disable_tcp_pings: bool = False
    udp_buffer_size: int = 1400
    dead_node_reclaim_time: float = 0.0

    def with_overrides(self, **changes: Any) -> Timing:
        # Any: each keyword is checked against its field by dataclasses.replace at run time.
        return replace(self, **changes)


LAN = Timing(tcp_timeout=10.0, indirect_checks=3, retransmit_mult=4, suspicion_mult=4,
             suspicion_max_timeout_mult=6, push_pull_interval=30.0, probe_timeout=0.5,
             probe_interval=1.0, gossip_nodes=3, gossip_interval=0.2,
             gossip_to_the_dead_time=30.0)
WAN = Timing(tcp_timeout=30.0, indirect_checks=3, retransmit_mult=4, suspicion_mult=6,
             suspicion_max_timeout_mult=6, push_pull_interval=60.0, probe_timeout=3.0,
             probe_interval=5.0, gossip_nodes=4, gossip_interval=0.5,
             gossip_to_the_dead_time=60.0)
LOCAL = Timing(tcp_timeout=1.0, indirect_checks=1, retransmit_mult=2, suspicion_mult=3,
               suspicion_max_timeout_mult=6, push_pull_interval=15.0, probe_timeout=0.2,
               probe_interval=1.0, gossip_nodes=3, gossip_interval=0.1,
               gossip_to_the_dead_time=15.0)

PROFILES = {"lan": LAN, "wan": WAN, "local": LOCAL}


def retransmit_limit(mult: int, num_nodes: int) -> int:
    return mult * math.ceil(math.log10(num_nodes + 1))


def suspicion_timeout(mult: int, num_nodes: int, interval: float) -> float:
    """Minimum suspicion time; grows with the log of the cluster size (milliseconds floored)."""
    node_scale = max(1.0, math.log10(max(1.0, float(num_nodes))))
    return math.floor(mult * node_scale * interval * 1000) / 1000


def push_pull_scale(interval: float, num_nodes: int) -> float:
    """Back off anti-entropy above 32 nodes so large clusters do not drown in TCP syncs."""
    threshold = 32
    if num_nodes <= threshold:
        return interval
    multiplier = math.ceil(math.log2(num_nodes) - math.log2(threshold)) + 1
    return interval * multiplier
