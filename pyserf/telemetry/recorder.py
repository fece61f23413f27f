"""The recorder every agent hands its machines, and its in-memory store.

Like serf's agent, which always runs go-metrics' InmemSink, every pyserf agent counts:
:class:`Recorder` takes each counter, gauge and sample under serf's key (``memberlist.gossip``)
and

- aggregates it in memory the way go-metrics' InmemSink does (10 s intervals kept for a
  minute), which SIGUSR1 prints in go-metrics' InmemSignal format;
- keeps running totals for Prometheus (``GET /metrics``);
- hands a statsd line (``name:value|c``, ``|g``, ``|ms``) to each network sink, when
  ``statsd_addr`` / ``statsite_addr`` set one.

A call is kept cheap because it runs on every packet (about 15 per packet): the key finds its
slot (one per name, made on first use) and the slot's count, sum, sum of squares, min and max
are updated in place. Nothing is allocated and no clock is read: ``LastUpdated`` is the
recorder's own clock, which :meth:`Recorder.tick` advances (the agent ticks it once a second),
and the tick is also what closes a 10 s interval (freezing the slots that were touched into a
record and resetting them), so a call made in the second after a boundary may count in the
interval before. Timers (``measure_since``) read ``time.perf_counter`` as go-metrics reads its
clock: a duration needs two readings.

Keys can carry names from the network (``serf.events.<event name>``), so memory is bounded:
at most ``MAX_NAMES`` distinct keys (and ``MAX_NAME_LENGTH`` characters each) are ever
tracked; a metric under a key past the cap (or under a key already used by another kind) is
dropped and counted in ``dropped``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from pyserf.memberlist.metrics import Metrics

log = logging.getLogger("pyserf.agent")

SERVICE = "serf-agent"  # go-metrics' DefaultConfig("serf-agent") in serf's agent command
MAX_NAMES = 1000
MAX_NAME_LENGTH = 200
INTERVAL = 10.0  # serf: metrics.NewInmemSink(10*time.Second, time.Minute)
RETAIN = 60.0
MAX_INTERVALS = int(RETAIN / INTERVAL)  # the current one included, as go-metrics counts

COUNTER, GAUGE, SAMPLE = "c", "g", "ms"  # the statsd type of each kind
# Go prints a time with its monotonic reading, seconds since the process started (m=+...);
# here: since the recorder module was loaded, at the agent's start.
_STARTED = time.time()

# statsd's separators (':' '|' newline) and anything unprintable would break or forge lines:
# go-metrics maps ':' and ' ' to '_'; the rest (names a peer chose) are mapped too.
_UNSAFE = re.compile(r"[\s:|@#\x00-\x1f\x7f]")


class LineSink(Protocol):
    def push(self, line: str) -> None: ...


class Aggregate:
    """go-metrics' AggregateSample of one finished interval: count, sum, sum of squares,
    min, max and the recorder's time of the last update."""

    __slots__ = ("count", "total", "squares", "low", "high", "updated")

    def __init__(self, count: int, total: float, squares: float, low: float, high: float,
                 updated: float) -> None:
        self.count = count
        self.total = total
        self.squares = squares
        self.low = low
        self.high = high
        self.updated = updated

    def stddev(self) -> float:
        num = self.count * self.squares - self.total * self.total
        div = self.count * (self.count - 1)
        return math.sqrt(num / div) if div and num > 0 else 0.0

    def text(self) -> str:
        """AggregateSample.String(), as InmemSignal prints it."""
        if self.count == 0:
            return "Count: 0"
        updated = f"{go_time(self.updated)} m=+{max(0.0, self.updated - _STARTED):.9f}"
        if self.stddev() == 0:
            return f"Count: {self.count} Sum: {self.total:0.3f} LastUpdated: {updated}"
        return (f"Count: {self.count} Min: {self.low:0.3f} Mean: {self.total / self.count:0.3f} "
                f"Max: {self.high:0.3f} Stddev: {self.stddev():0.3f} Sum: {self.total:0.3f} "
                f"LastUpdated: {updated}")


class _Slot:
    """One counter's or sample's name: the current interval's aggregate, updated in place,
    and the count and sum of the intervals already closed (for Prometheus' totals)."""

    __slots__ = ("key", "name", "count", "total", "squares", "low", "high", "updated",
                 "closed_count", "closed_total")

    def __init__(self, key: str, name: str) -> None:
        self.key = key
        self.name = name
        self.count = 0
        self.total = self.squares = self.low = self.high = self.updated = 0.0
        self.closed_count = 0
        self.closed_total = 0.0

    def close_interval(self) -> Aggregate:
        """The current aggregate, frozen; the slot starts the next interval empty."""
        frozen = Aggregate(self.count, self.total, self.squares, self.low, self.high,
                           self.updated)
        self.closed_count += self.count
        self.closed_total += self.total
        self.count = 0
        self.total = self.squares = 0.0
        return frozen


class _GaugeSlot:
    __slots__ = ("key", "name", "value", "fresh")

    def __init__(self, key: str, name: str) -> None:
        self.key = key
        self.name = name
        self.value = 0.0
        self.fresh = False  # set during the current interval (go-metrics shows it there only)


class Interval:
    """A closed 10 s interval, by go-metrics name."""

    __slots__ = ("start", "gauges", "counters", "samples")

    def __init__(self, start: float) -> None:
        self.start = start
        self.gauges: dict[str, float] = {}
        self.counters: dict[str, Aggregate] = {}
        self.samples: dict[str, Aggregate] = {}


class SampleTotal:
    """A sample's count and sum since the start."""

    __slots__ = ("count", "total")

    def __init__(self, count: int, total: float) -> None:
        self.count = count
        self.total = total


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


def _aggregating(kind: str) -> Callable[..., None]:
    """The hot path of counters (``kind`` COUNTER) or samples (SAMPLE): the key's slot, made
    on first use, takes the value into its aggregate in place."""
    counter = kind == COUNTER

    def record(self: Recorder, key: str, value: float = 1.0) -> None:
        slots = self._counters if counter else self._samples
        slot = slots.get(key)
        if slot is None:
            slot = self._new_slot(key, kind, slots)
            if slot is None:
                return
        if slot.count:
            if value < slot.low:
                slot.low = value
            elif value > slot.high:
                slot.high = value
        else:
            slot.low = slot.high = value
        slot.count += 1
        slot.total += value
        slot.squares += value * value
        slot.updated = self.now
        if self.sinks:
            self._send(slot.name, value, kind)

    record.__name__ = record.__qualname__ = "incr" if counter else "sample"
    record.__doc__ = (Metrics.incr if counter else Metrics.sample).__doc__
    return record


class Recorder(Metrics):
    """Counts for the machines and the agent shell; see the module docstring."""

    __slots__ = ("sinks", "hostname", "clock", "now", "names", "dropped", "finished",
                 "_counters", "_samples", "_gauges", "_start", "_warned")

    def __init__(self, sinks: Iterable[LineSink] = (), hostname: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.sinks = list(sinks)
        # go-metrics puts the host name in gauge keys when a network sink is set
        # (serf-agent.<host>.runtime.alloc_bytes); serf turns it off otherwise.
        self.hostname = _UNSAFE.sub("_", hostname) if self.sinks else ""
        self.clock = clock
        self.now = clock()  # the recorder's clock: advanced by tick(), read by every call
        self.names: dict[str, str] = {}  # key -> kind, for every name ever tracked
        self.dropped = 0
        self.finished: deque[Interval] = deque()  # closed intervals, oldest first
        self._counters: dict[str, _Slot] = {}
        self._samples: dict[str, _Slot] = {}
        self._gauges: dict[str, _GaugeSlot] = {}
        self._start = self.now - self.now % INTERVAL  # the current interval's
        self._warned = False

    # -- the Metrics interface: the hot path -----------------------------------------------

    # incr and sample: the same aggregate (go-metrics ingests counters as samples too)
    if TYPE_CHECKING:
        def incr(self, key: str, value: float = 1.0) -> None: ...

        def sample(self, key: str, value: float) -> None: ...
    else:
        incr = _aggregating(COUNTER)
        sample = _aggregating(SAMPLE)

    def gauge(self, key: str, value: float) -> None:
        slot = self._gauges.get(key)
        if slot is None:
            slot = self._new_gauge(key)
            if slot is None:
                return
        slot.value = value
        slot.fresh = True
        if self.sinks:
            self._send(slot.name, value, GAUGE)

    def start(self) -> float:
        return time.perf_counter()

    def measure_since(self, key: str, start: float) -> None:
        self.sample(key, (time.perf_counter() - start) * 1000.0)

    # -- the clock and the intervals -------------------------------------------------------

    def interval_over(self, now: float) -> bool:
        """Whether ``now`` is past the current interval (a tick at ``now`` closes it)."""
        return now - now % INTERVAL != self._start

    def tick(self, now: float | None = None) -> None:
        """Advance the recorder's clock to ``now`` (default: its clock) and close the current
        interval if ``now`` is past it. The agent calls this once a second and before a read."""
        if now is None:
            now = self.clock()
        self.now = now
        start = now - now % INTERVAL
        if start == self._start:
            return
        closed = Interval(self._start)
        for name_slot in self._counters.values():
            if name_slot.count:
                closed.counters[name_slot.name] = name_slot.close_interval()
        for name_slot in self._samples.values():
            if name_slot.count:
                closed.samples[name_slot.name] = name_slot.close_interval()
        for gauge in self._gauges.values():
            if gauge.fresh:
                closed.gauges[gauge.name] = gauge.value
                gauge.fresh = False
        if closed.counters or closed.samples or closed.gauges:
            self.finished.append(closed)
        self._start = start
        while self.finished and self.finished[0].start <= start - RETAIN:
            self.finished.popleft()

    # -- slots -----------------------------------------------------------------------------

    def _name(self, key: str, kind: str) -> str | None:
        """The go-metrics name for a new ``key``; None (dropped) past the caps or when the
        key already names another kind."""
        if key in self.names:  # a counter cannot also be a gauge or a sample
            self.dropped += 1
            return None
        if len(self.names) >= MAX_NAMES or len(key) > MAX_NAME_LENGTH:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.warning("agent: telemetry keeps at most %d metric names of at most %d "
                            "characters; dropping %r and any further new name", MAX_NAMES,
                            MAX_NAME_LENGTH, key[:80])
            return None
        self.names[key] = kind
        safe = _UNSAFE.sub("_", key)
        if kind == GAUGE and self.hostname:
            safe = f"{self.hostname}.{safe}"
        return f"{SERVICE}.{safe}"

    def _new_slot(self, key: str, kind: str, slots: dict[str, _Slot]) -> _Slot | None:
        name = self._name(key, kind)
        if name is None:
            return None
        slot = slots[key] = _Slot(key, name)
        return slot

    def _new_gauge(self, key: str) -> _GaugeSlot | None:
        name = self._name(key, GAUGE)
        if name is None:
            return None
        slot = self._gauges[key] = _GaugeSlot(key, name)
        return slot

    def _send(self, name: str, value: float, kind: str) -> None:
        line = statsd_line(name, value, kind)
        for sink in self.sinks:
            sink.push(line)

    # -- readers ---------------------------------------------------------------------------

    @property
    def counter_totals(self) -> dict[str, float]:
        """Each counter's sum since the start, by key."""
        return {key: s.closed_total + s.total for key, s in self._counters.items()}

    @property
    def sample_totals(self) -> dict[str, SampleTotal]:
        """Each sample's count and sum since the start, by key."""
        return {key: SampleTotal(s.closed_count + s.count, s.closed_total + s.total)
                for key, s in self._samples.items()}

    @property
    def gauge_values(self) -> dict[str, float]:
        """Each gauge's last value, by key."""
        return {key: g.value for key, g in self._gauges.items()}

    def dump(self) -> str:
        """What go-metrics' InmemSignal writes: every retained interval but the current one."""
        self.tick()
        out: list[str] = []
        for intv in self.finished:
            stamp = go_time(intv.start, nanos=False)
            out += [f"[{stamp}][G] '{n}': {v:0.3f}\n" for n, v in sorted(intv.gauges.items())]
            out += [f"[{stamp}][C] '{n}': {a.text()}\n" for n, a in sorted(intv.counters.items())]
            out += [f"[{stamp}][S] '{n}': {a.text()}\n" for n, a in sorted(intv.samples.items())]
        return "".join(out)
