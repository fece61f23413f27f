"""Telemetry as serf's agent sets it up: the in-memory sink always, statsd/statsite on request.

serf's agent always aggregates its metrics in memory (go-metrics' InmemSink) and prints them on
SIGUSR1; ``statsd_addr`` / ``statsite_addr`` add network sinks. :func:`start` does the same for
every pyserf agent: it builds the :class:`~pyserf.telemetry.recorder.Recorder` (and the sinks
only when an address is set: :mod:`pyserf.telemetry.sinks` is not imported otherwise), makes
SIGUSR1 print the in-memory intervals to stderr, and ticks the recorder (its clock, its 10 s
intervals): once a second on a timer of its own when a network sink is flushed, else on the
agent's own timer wake-ups (:meth:`Telemetry.on_wake`), so an idle agent without a sink wakes
no more often than its protocol timers make it (tests/e2e/test_idle.py). go-metrics' runtime
gauges are taken every second when a network sink wants them, else only where they can be
seen: at the end of each interval and before a read (SIGUSR1, ``GET /metrics``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from pyserf.telemetry.recorder import LineSink, Recorder

if TYPE_CHECKING:
    from pyserf.telemetry.sinks import StatsdSink, StatsiteSink

__all__ = ["SinkAddressError", "Telemetry", "start"]

TICK = 1.0  # the recorder's clock resolution; also go-metrics' runtime ProfileInterval


class SinkAddressError(ValueError):
    """A statsd_addr/statsite_addr that cannot be used; the message says why."""


class Telemetry:
    """The running telemetry of one agent; :meth:`close` stops it."""

    def __init__(self, recorder: Recorder, sinks: list[StatsdSink | StatsiteSink],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.recorder = recorder
        self.sinks = sinks
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def refresh(self) -> Recorder:
        """The recorder, brought up to now (runtime gauges, clock, intervals) for a reader."""
        self.emit_runtime()
        self.recorder.tick(time.time())
        return self.recorder

    def dump_to_stderr(self) -> None:
        sys.stderr.write(self.refresh().dump())
        sys.stderr.flush()

    def _tick(self) -> None:
        self._timer = self.loop.call_later(TICK, self._tick)
        self.on_wake()

    def on_wake(self) -> None:
        """Move the recorder's clock to now. The agent calls this at each of its timer
        wake-ups (several a second: probe and gossip), the sinks' own tick once a second."""
        now = time.time()
        if self.sinks or self.recorder.interval_over(now):
            self.emit_runtime()  # into the interval that is ending, as its last values
        self.recorder.tick(now)

    def emit_runtime(self) -> None:
        """go-metrics' runtime gauges, in the nearest Python terms: asyncio tasks for
        goroutines, RSS for sys_bytes, allocated blocks for heap_objects, gc collections."""
        rec = self.recorder
        rec.gauge("runtime.num_goroutines", len(asyncio.all_tasks(self.loop)))
        rec.gauge("runtime.heap_objects", sys.getallocatedblocks())
        rec.gauge("runtime.total_gc_runs", sum(g["collections"] for g in gc.get_stats()))
        try:
            with open("/proc/self/statm", "rb") as statm:
                rec.gauge("runtime.sys_bytes", int(statm.read().split()[1]) * self._page)
        except (OSError, ValueError, IndexError):
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sink in self.sinks:
            sink.close()
        try:
            self.loop.remove_signal_handler(signal.SIGUSR1)
        except (ValueError, RuntimeError):
            pass


def _start_sinks(config: Any, loop: asyncio.AbstractEventLoop) -> list[StatsdSink | StatsiteSink]:
    """The network sinks ``config`` asks for; SinkAddressError (serf's "Failed to start ...
    sink") when an address is unusable, with none left running."""
    from pyserf.telemetry.sinks import StatsdSink, StatsiteSink

    sinks: list[StatsdSink | StatsiteSink] = []
    try:
        if config.statsite_addr:
            try:
                sinks.append(StatsiteSink(loop, config.statsite_addr))
            except SinkAddressError as exc:
                raise SinkAddressError(f"Failed to start statsite sink. Got: {exc}") from None
        if config.statsd_addr:
            try:
                sinks.append(StatsdSink(loop, config.statsd_addr))
            except SinkAddressError as exc:
                raise SinkAddressError(f"Failed to start statsd sink. Got: {exc}") from None
    except SinkAddressError:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def start(config: Any, loop: asyncio.AbstractEventLoop) -> Telemetry:
    """Start the in-memory recorder, SIGUSR1 and the sinks ``config`` asks for; raises
    SinkAddressError before anything started when a sink address is unusable."""
    sinks = _start_sinks(config, loop) if config.statsd_addr or config.statsite_addr else []
    hostname = ""
    if sinks:
        import socket

        hostname = socket.gethostname()
    lines: list[LineSink] = list(sinks)
    telemetry = Telemetry(Recorder(lines, hostname), sinks, loop)
    loop.add_signal_handler(signal.SIGUSR1, telemetry.dump_to_stderr)
    if sinks:
        telemetry._tick()
    else:
        telemetry.on_wake()
    return telemetry
