"""Serf's configuration and its refusal error."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyserf import SERF_PROTOCOL_MAX


@dataclass
class SerfConfig:
    node_name: str
    tags: dict[str, str] = field(default_factory=dict)
    protocol_version: int = SERF_PROTOCOL_MAX
    broadcast_timeout: float = 5.0
    leave_propagate_delay: float = 1.0
    reap_interval: float = 15.0
    reconnect_interval: float = 30.0
    # Each wait for the next reconnect round is reconnect_interval * U(1 - j, 1 + j). serf
    # waits exactly the interval, so agents started together (a fleet rolled out at once)
    # retry in lockstep and a healed partition waits for their common next round: up to a
    # whole interval. Spread out, the same number of attempts finds the heal within seconds.
    reconnect_jitter: float = 0.5
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    recent_intent_timeout: float = 300.0
    queue_check_interval: float = 30.0
    max_queue_depth: int = 4096
    event_buffer: int = 512
    query_buffer: int = 512
    user_event_size_limit: int = 512
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    disable_name_resolution: bool = False


class SerfError(Exception):
    """An operation was refused; the message is what serf says in the same situation."""

