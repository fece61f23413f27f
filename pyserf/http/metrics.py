"""``GET /metrics``: the agent's telemetry in Prometheus' text format (issue 14, item 2).

Served whenever the listener runs: every agent counts in memory (see :mod:`pyserf.telemetry`).
prometheus-client is imported on the first request, not with the listener. Open without a
token unless ``http_metrics_auth`` is true (scrapers rarely carry one); the listener's
middleware decides that (see :class:`pyserf.http.server.HTTPListener`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

METRICS_PATH = "/metrics"


class MetricsEndpoint:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._registry: CollectorRegistry | None = None

    async def handle(self, request: web.Request) -> web.Response:
        from pyserf.telemetry.prometheus import exposition, registry

        if self._registry is None:
            # An agent run by the CLI always has telemetry; one embedded without it still
            # serves the process metrics.
            telemetry = getattr(self.agent, "telemetry", None)
            self._registry = registry(telemetry.refresh if telemetry is not None else None)
        body, content_type = exposition(self._registry, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})
