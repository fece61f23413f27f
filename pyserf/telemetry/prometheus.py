"""Prometheus exposition of the recorder's totals and of the process, by prometheus-client.

Served by the HTTP listener's ``GET /metrics`` and imported only on its first request
(prometheus-client brings http.server, wsgiref and more for its own servers and push helpers:
about 1.2 MiB that an agent nobody scrapes does not carry; it needs ssl too, which is why an
agent with a listener leaves ssl importable, see pyserf/cli/commands/agent.py).
:class:`RecorderCollector` yields a metric family per recorder key, named by Prometheus'
conventions: the go-metrics name with every character outside ``[a-zA-Z0-9_]`` as ``_``
(``serf-agent.memberlist.gossip`` -> ``serf_agent_memberlist_gossip``), counters as
``*_total``, samples (timers in ms, as Consul's go-metrics Prometheus sink exposes them) as
summaries (``_count``, ``_sum``), gauges without go-metrics' host name part.
prometheus-client's ProcessCollector adds ``process_*``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from pyserf.telemetry.recorder import SERVICE, Recorder

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
DROPPED = "serf_agent_telemetry_dropped_names"


def prometheus_name(key: str) -> str:
    """``memberlist.gossip`` -> ``serf_agent_memberlist_gossip``."""
    return _INVALID.sub("_", f"{SERVICE}.{key}")


class RecorderCollector(Collector):
    """The recorder's counters, gauges and samples as metric families, read at each scrape."""

    def __init__(self, recorder: Callable[[], Recorder]) -> None:
        self.recorder = recorder  # called per scrape: it brings the recorder up to date

    def collect(self) -> Iterator[Metric]:
        rec = self.recorder()
        # Two keys can map to one name (``a-b`` and ``a_b``), and a family's samples carry
        # suffixed names (``x_total``, ``x_count``) another family could be called: the first
        # family to claim a name keeps it, so the exposition never repeats a series.
        taken: set[str] = set()

        def claim(*names: str) -> bool:
            if taken.intersection(names):
                return False
            taken.update(names)
            return True

        if claim(DROPPED, DROPPED + "_total"):
            yield CounterMetricFamily(DROPPED, "Metrics dropped because their name was new "
                                      "past the cap or already named another kind.",
                                      value=rec.dropped)
        for key, total in sorted(rec.counter_totals.items()):
            name = prometheus_name(key)
            if claim(name, name + "_total"):
                yield CounterMetricFamily(name, f"serf counter {key}", value=total)
        for key, value in sorted(rec.gauge_values.items()):
            name = prometheus_name(key)
            if claim(name):
                yield GaugeMetricFamily(name, f"serf gauge {key}", value=value)
        for key, agg in sorted(rec.sample_totals.items()):
            name = prometheus_name(key)
            if claim(name, name + "_count", name + "_sum"):
                yield SummaryMetricFamily(name, f"serf sample {key} (timers in ms)",
                                          count_value=agg.count, sum_value=agg.total)


def registry(recorder: Callable[[], Recorder] | None) -> CollectorRegistry:
    """A private registry (not prometheus-client's global one): the recorder's families, when
    there is a recorder, and the process' (CPU, memory, file descriptors, start time)."""
    reg = CollectorRegistry(auto_describe=False)
    if recorder is not None:
        reg.register(RecorderCollector(recorder))
    ProcessCollector(registry=reg)
    return reg


def exposition(reg: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The body and its content type for a scrape sending ``accept``: Prometheus' text
    format 0.0.4 unless the scraper asks for OpenMetrics."""
    encode, content_type = choose_encoder(accept)
    return encode(reg), content_type
