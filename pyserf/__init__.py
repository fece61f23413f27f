"""pyserf: decentralised membership, failure detection and events, wire-compatible with Serf."""

__version__ = "0.1.0"

# What `pyserf version` reports and what the agent advertises to peers.
SERF_PROTOCOL_MIN = 2
SERF_PROTOCOL_MAX = 5
