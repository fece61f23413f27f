"""The recorder the agent hands the machines when telemetry is on, and its in-memory store.

:class:`Recorder` takes each counter, gauge and sample under serf's key (``memberlist.gossip``),
adds go-metrics' service prefix (``serf-agent.``), and

- aggregates it in memory the way go-metrics' InmemSink does (10 s intervals kept for a
  minute), which SIGUSR1 prints in go-metrics' InmemSignal format;
- keeps running totals for Prometheus (``GET /metrics``);
- hands a statsd line (``name:value|c``, ``|g``, ``|ms``) to each network sink.

Keys can carry names from the network (``serf.events.<event name>``), so memory is bounded:
at most ``MAX_NAMES`` distinct keys (and ``MAX_NAME_LENGTH`` characters each) are ever
tracked; a metric under a key past the cap is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pyserf.memberlist.metrics import Metrics

log = logging.getLogger("pyserf.agent")

SERVICE = "serf-agent"  # go-metrics' DefaultConfig("serf-agent") in serf's agent command
MAX_NAMES = 1000
MAX_NAME_LENGTH = 200
INTERVAL = 10.0  # serf: metrics.NewInmemSink(10*time.Second, time.Minute)
RETAIN = 60.0
MAX_INTERVALS = int(RETAIN / INTERVAL)

COUNTER, GAUGE, SAMPLE = "c", "g", "ms"  # the statsd type of each kind
_STARTED = time.monotonic()  # Go's monotonic clock reading counts from process start

# statsd's separators (':' '|' newline) and anything unprintable would break or forge lines:
# go-metrics maps ':' and ' ' to '_'; the rest (names a peer chose) are mapped too.
_UNSAFE = re.compile(r"[\s:|@#\x00-\x1f\x7f]")


class LineSink(Protocol):
    def push(self, line: str) -> None: ...


@dataclass(slots=True)
class Aggregate:
    """go-metrics' AggregateSample: count, sum, sum of squares, min, max, last update."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = 0.0
    high: float = 0.0
    updated: float = 0.0
    since_start: float = 0.0  # Go prints a time.Now() with its monotonic reading (m=+...)

    def ingest(self, value: float, now: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value
        if self.count == 1 or value < self.low:
            self.low = value
        if self.count == 1 or value > self.high:
            self.high = value
        self.updated = now
        self.since_start = time.monotonic() - _STARTED

    def stddev(self) -> float:
        num = self.count * self.squares - self.total * self.total
        div = self.count * (self.count - 1)
        return math.sqrt(num / div) if div and num > 0 else 0.0

    def text(self) -> str:
        """AggregateSample.String(), as InmemSignal prints it."""
        if self.count == 0:
            return "Count: 0"
        updated = f"{go_time(self.updated)} m=+{self.since_start:.9f}"
        if self.stddev() == 0:
            return f"Count: {self.count} Sum: {self.total:0.3f} LastUpdated: {updated}"
        return (f"Count: {self.count} Min: {self.low:0.3f} Mean: {self.total / self.count:0.3f} "
                f"Max: {self.high:0.3f} Stddev: {self.stddev():0.3f} Sum: {self.total:0.3f} "
                f"LastUpdated: {updated}")


@dataclass(slots=True)
class Interval:
    start: float
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, Aggregate] = field(default_factory=dict)
    samples: dict[str, Aggregate] = field(default_factory=dict)


def go_time(epoch: float, nanos: bool = True) -> str:
    """A wall time as Go's time.Time.String() prints it (local zone)."""
    local = time.localtime(epoch)
    text = time.strftime("%Y-%m-%d %H:%M:%S", local)
    if nanos:
        frac = f"{epoch % 1:.9f}"[2:].rstrip("0")
        if frac:
            text += "." + frac
    zone = time.strftime("%z", local)
    return f"{text} {zone} {time.strftime('%Z', local) or zone}"


def statsd_line(name: str, value: float, kind: str) -> str:
    """One go-metrics statsd line: ``%s:%f|<kind>\\n``."""
    return f"{name}:{value:f}|{kind}\n"


class Recorder(Metrics):
    """Counts for the machines and the agent shell; see the module docstring."""

    __slots__ = ("sinks", "hostname", "clock", "names", "dropped", "intervals",
                 "counter_totals", "gauge_values", "sample_totals", "_warned")

    def __init__(self, sinks: Iterable[LineSink] = (), hostname: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.sinks = list(sinks)
        # go-metrics puts the host name in gauge keys when a network sink is set
        # (serf-agent.<host>.runtime.alloc_bytes); serf turns it off otherwise.
        self.hostname = _UNSAFE.sub("_", hostname) if self.sinks else ""
        self.clock = clock
        self.names: dict[str, tuple[str, str]] = {}  # key -> (full name, kind)
        self.dropped = 0
        self.intervals: list[Interval] = []
        self.counter_totals: dict[str, float] = {}
        self.gauge_values: dict[str, float] = {}
        self.sample_totals: dict[str, Aggregate] = {}
        self._warned = False

    # -- the Metrics interface -------------------------------------------------------------

    def incr(self, key: str, value: float = 1.0) -> None:
        name = self._name(key, COUNTER)
        if name is None:
            return
        now = self.clock()
        self._interval(now).counters.setdefault(name, Aggregate()).ingest(value, now)
        self.counter_totals[key] = self.counter_totals.get(key, 0.0) + value
        self._send(name, value, COUNTER)

    def gauge(self, key: str, value: float) -> None:
        name = self._name(key, GAUGE)
        if name is None:
            return
        self._interval(self.clock()).gauges[name] = value
        self.gauge_values[key] = value
        self._send(name, value, GAUGE)

    def sample(self, key: str, value: float) -> None:
        name = self._name(key, SAMPLE)
        if name is None:
            return
        now = self.clock()
        self._interval(now).samples.setdefault(name, Aggregate()).ingest(value, now)
        total = self.sample_totals.get(key)
        if total is None:
            total = self.sample_totals[key] = Aggregate()
        total.ingest(value, now)
        self._send(name, value, SAMPLE)

    def start(self) -> float:
        return time.perf_counter()

    def measure_since(self, key: str, start: float) -> None:
        self.sample(key, (time.perf_counter() - start) * 1000.0)

    # -- internals -------------------------------------------------------------------------

    def _name(self, key: str, kind: str) -> str | None:
        known = self.names.get(key)
        if known is not None:
            return known[0] if known[1] == kind else None
        if len(self.names) >= MAX_NAMES or len(key) > MAX_NAME_LENGTH:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("agent: telemetry keeps at most %d metric names of at most %d "
                            "characters; dropping %r and any further new name", MAX_NAMES,
                            MAX_NAME_LENGTH, key[:80])
            return None
        safe = _UNSAFE.sub("_", key)
        if kind == GAUGE and self.hostname:
            safe = f"{self.hostname}.{safe}"
        name = f"{SERVICE}.{safe}"
        self.names[key] = (name, kind)
        return name

    def _interval(self, now: float) -> Interval:
        start = now - now % INTERVAL
        intervals = self.intervals
        if intervals and intervals[-1].start == start:
            return intervals[-1]
        current = Interval(start)
        intervals.append(current)
        if len(intervals) > MAX_INTERVALS:
            del intervals[0]
        return current

    def _send(self, name: str, value: float, kind: str) -> None:
        if self.sinks:
            line = statsd_line(name, value, kind)
            for sink in self.sinks:
                sink.push(line)

    # -- readers -------------------------------------------------------------------------

    def dump(self) -> str:
        """What go-metrics' InmemSignal writes: every retained interval but the current one."""
        self._interval(self.clock())
        out: list[str] = []
        for intv in self.intervals[:-1]:
            stamp = go_time(intv.start, nanos=False)
            out += [f"[{stamp}][G] '{n}': {v:0.3f}\n" for n, v in sorted(intv.gauges.items())]
            out += [f"[{stamp}][C] '{n}': {a.text()}\n" for n, a in sorted(intv.counters.items())]
            out += [f"[{stamp}][S] '{n}': {a.text()}\n" for n, a in sorted(intv.samples.items())]
        return "".join(out)
