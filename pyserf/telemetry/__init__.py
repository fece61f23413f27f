"""Telemetry as serf's agent sets it up: statsd/statsite sinks, SIGUSR1 dump, runtime gauges.

Imported only when ``statsd_addr``, ``statsite_addr`` or ``http_addr`` is set (an agent without
them keeps the machines' no-op recorder and never loads this package). :func:`start` builds
the :class:`~pyserf.telemetry.recorder.Recorder`, its sinks and the once-a-second runtime
gauges, and makes SIGUSR1 print the in-memory intervals to stderr.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from typing import Any

from pyserf.telemetry.recorder import Recorder
from pyserf.telemetry.sinks import SinkAddressError, StatsdSink, StatsiteSink

__all__ = ["SinkAddressError", "Telemetry", "start"]

log = logging.getLogger("pyserf.agent")

RUNTIME_INTERVAL = 1.0  # go-metrics' ProfileInterval


class Telemetry:
    """The running telemetry of one agent; :meth:`close` stops it."""

    def __init__(self, recorder: Recorder, sinks: list[StatsdSink | StatsiteSink],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.recorder = recorder
        self.sinks = sinks
        self.loop = loop
        self._runtime: asyncio.TimerHandle | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def dump_to_stderr(self) -> None:
        sys.stderr.write(self.recorder.dump())
        sys.stderr.flush()

    def emit_runtime(self) -> None:
        """go-metrics' runtime gauges, in the nearest Python terms: asyncio tasks for
        goroutines, RSS for sys_bytes, allocated blocks for heap_objects, gc collections."""
        self._runtime = self.loop.call_later(RUNTIME_INTERVAL, self.emit_runtime)
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
        if self._runtime is not None:
            self._runtime.cancel()
        for sink in self.sinks:
            sink.close()
        try:
            self.loop.remove_signal_handler(signal.SIGUSR1)
        except (ValueError, RuntimeError):
            pass


def start(config: Any, loop: asyncio.AbstractEventLoop) -> Telemetry:
    """Start what ``config`` asks for; SinkAddressError (serf's "Failed to start ... sink")
    when an address is unusable, before anything was started."""
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
    telemetry = Telemetry(Recorder(sinks, socket.gethostname()), sinks, loop)
    loop.add_signal_handler(signal.SIGUSR1, telemetry.dump_to_stderr)
    telemetry.emit_runtime()
    return telemetry
