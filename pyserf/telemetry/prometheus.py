"""Prometheus text exposition (format 0.0.4) of the recorder's totals and of the process.

Served by the HTTP listener's ``GET /metrics``. Names follow Prometheus conventions: the
go-metrics name with every character outside ``[a-zA-Z0-9_]`` as ``_``
(``serf-agent.memberlist.gossip`` -> ``serf_agent_memberlist_gossip``), counters as
``*_total``, samples (timers in ms) as summaries (``_count``, ``_sum``), gauges without
go-metrics' host name part; the process metrics are those of Prometheus' client libraries
(``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ...).

Rendered here rather than by prometheus-client: importing that package loads ssl, http.server,
urllib and wsgiref (its push and server helpers) into the agent, which keeps ssl out unless
TLS is on. The tests parse this output with prometheus-client's parser.
"""

from __future__ import annotations

import math
import os
import re
import resource

from pyserf.telemetry.recorder import SERVICE, Recorder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(key: str) -> str:
    """``memberlist.gossip`` -> ``serf_agent_memberlist_gossip``."""
    return _INVALID.sub("_", f"{SERVICE}.{key}")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Families:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def add(self, name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
        if name in self.seen:  # two keys may map to one name: the first wins
            return
        self.seen.add(name)
        self.lines.append(f"# HELP {name} {_help(doc)}\n# TYPE {name} {kind}\n")
        self.lines.extend(f"{name}{suffix} {_value(v)}\n" for suffix, v in samples)


def _process(families: _Families) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    families.add("process_cpu_seconds_total", "counter",
                 "Total user and system CPU time spent in seconds.",
                 [("", usage.ru_utime + usage.ru_stime)])
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm", "rb") as statm:
            vm, rss = (int(x) * page for x in statm.read().split()[:2])
        with open("/proc/self/stat", "rb") as stat:
            start_ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime"))
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return  # not Linux: CPU time only
    families.add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                 [("", vm)])
    families.add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                 [("", rss)])
    families.add("process_start_time_seconds", "gauge",
                 "Start time of the process since unix epoch in seconds.",
                 [("", boot + start_ticks / os.sysconf("SC_CLK_TCK"))])
    families.add("process_open_fds", "gauge", "Number of open file descriptors.", [("", fds)])
    families.add("process_max_fds", "gauge", "Maximum number of open file descriptors.",
                 [("", resource.getrlimit(resource.RLIMIT_NOFILE)[0])])


def render(recorder: Recorder) -> bytes:
    """The whole exposition: serf's metrics, then the process metrics."""
    families = _Families()
    for key, total in sorted(recorder.counter_totals.items()):
        families.add(prometheus_name(key) + "_total", "counter", f"serf counter {key}",
                     [("", total)])
    for key, value in sorted(recorder.gauge_values.items()):
        families.add(prometheus_name(key), "gauge", f"serf gauge {key}", [("", value)])
    for key, agg in sorted(recorder.sample_totals.items()):
        families.add(prometheus_name(key), "summary", f"serf sample {key} (timers in ms)",
                     [("_count", agg.count), ("_sum", agg.total)])
    _process(families)
    families.add("serf_agent_telemetry_dropped_names_total", "counter",
                 "Metrics dropped because their name was new past the cap.",
                 [("", recorder.dropped)])
    return "".join(families.lines).encode()
