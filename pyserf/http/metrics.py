"""``GET /metrics``: the agent's telemetry in Prometheus' text format (issue 14, item 2).

Open without a token unless ``http_metrics_auth`` is true (scrapers rarely carry one); the
listener's middleware decides that (see :class:`pyserf.http.server.HTTPListener`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyserf.http.views import ApiError

METRICS_PATH = "/metrics"


class MetricsEndpoint:
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    async def handle(self, request: web.Request) -> web.Response:
        telemetry = getattr(self.agent, "telemetry", None)
        if telemetry is None:
            raise ApiError(404, "telemetry is off", "http_addr",
                           "start the agent with http_addr (it turns on in-memory metrics)")
        from pyserf.telemetry.prometheus import CONTENT_TYPE, render

        return web.Response(body=render(telemetry.recorder), headers={"Content-Type": CONTENT_TYPE})
