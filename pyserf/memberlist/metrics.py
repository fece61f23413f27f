"""What the protocol machines count, without doing any I/O for it.

The machines (memberlist, serf) call a :class:`Metrics` with serf's metric names (go-metrics
keys joined by dots, without the ``serf-agent.`` service prefix): counters, gauges and samples
(timers are samples in milliseconds). This base class does nothing, so the simulator (and a
machine built without an agent) pays one empty method call per event; the agent shell always
swaps in ``pyserf.telemetry.recorder.Recorder``, which aggregates in memory, as serf's agent
always does, and feeds the statsd/statsite sinks when they are configured.
"""

from __future__ import annotations


class Metrics:
    """The no-op recorder every machine starts with."""

    __slots__ = ()

    def incr(self, key: str, value: float = 1.0) -> None:
        """Add ``value`` to counter ``key`` (go-metrics IncrCounter)."""

    def gauge(self, key: str, value: float) -> None:
        """Set gauge ``key`` (go-metrics SetGauge)."""

    def sample(self, key: str, value: float) -> None:
        """Add one sample of ``key`` (go-metrics AddSample; timers in milliseconds)."""

    def start(self) -> float:
        """A start mark for measure_since: the machines read no clock themselves."""
        return 0.0

    def measure_since(self, key: str, start: float) -> None:
        """Sample the milliseconds since ``start`` (go-metrics MeasureSince)."""


NULL_METRICS = Metrics()
