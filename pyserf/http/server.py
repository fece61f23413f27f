"""The HTTP listener: aiohttp behind a connection cap, bearer-token auth, TLS and timeouts.

Imported only when ``http_addr`` is set (aiohttp costs an agent several MiB). Every byte a
client sends is hostile until proven otherwise:

- connections: at most ``max_connections`` at once; one more is answered 429 and closed at
  accept, before a byte is parsed;
- time: a connection that has not finished a request's headers within ``idle_timeout`` (a
  slowloris), or sits idle between requests that long, is closed (aiohttp's keep-alive timer
  runs from the accept and partial data does not reset it); a body must arrive within
  ``idle_timeout`` too, and so must a TLS handshake;
- size: request lines and header fields at most 8 KiB, 64 header lines, bodies at most
  ``max_body`` bytes (413; compressed bodies are not inflated);
- auth: ``Authorization: Bearer <token>`` compared in constant time (401 without, 403 wrong).

Streams (SSE, blocking queries) are bounded in number (429 beyond) and never block the agent:
see :mod:`pyserf.http.sse` and :class:`pyserf.http.routes.Hub`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyserf.http.metrics import METRICS_PATH, MetricsEndpoint
from pyserf.http.routes import Endpoints, Hub, json_response
from pyserf.http.views import ApiError

if TYPE_CHECKING:
    import ssl

    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

MAX_LINE = 8190
MAX_HEADERS = 64
# How long agent shutdown waits for requests still running (streams are told to end first).
SHUTDOWN_GRACE = 1.0
_STATUS_FIX = {
    404: ("path", "see the endpoints listed in pyserf/http/routes.py (GET /v1/agent/members, "
                  "GET /v1/event/stream, ...)"),
    405: ("method", "use the method the endpoint takes (see the Allow header)"),
    413: ("body", "send a smaller body (limit: http_max_body_bytes)"),
}


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(exc.body(), exc.status, headers)


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap with a 429 and closes it, reading nothing."""

    BODY = json.dumps({"Error": "too many connections", "Field": "connection",
                       "Fix": "retry later, reuse a keep-alive connection, or raise "
                              "http_max_connections"}).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        head = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                + str(len(self.BODY)).encode() + b"\r\n\r\n")
        transport.write(head + self.BODY)  # type: ignore[attr-defined]
        transport.close()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context from PEM files (TLS 1.2 at least); ssl.SSLError/OSError if unusable.
    (ssl is imported here only: without TLS the agent keeps OpenSSL out, see cli agent.)"""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class HTTPListener:
    """The agent's HTTP API on one address; :meth:`start` then :meth:`close`."""

    def __init__(self, agent: AgentAPI, *, token: str = "", max_connections: int = 256,
                 max_body: int = 64 * 1024, idle_timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None, metrics_auth: bool = False) -> None:
        self.agent = agent
        self.token = token.encode()
        self.metrics_auth = metrics_auth  # /metrics needs the token too (http_metrics_auth)
        self.metrics = MetricsEndpoint(agent)
        self.max_connections = max_connections
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.hub = Hub(agent)
        self.endpoints = Endpoints(agent, self.hub, max_body, idle_timeout)
        self.runner: web.AppRunner | None = None
        self.server: asyncio.Server | None = None
        self.refused = 0

    @property
    def address(self) -> tuple[str, int]:
        if self.server is None:
            raise RuntimeError("the HTTP listener is not started")
        sock = self.server.sockets[0]
        host, port = sock.getsockname()[:2]
        return host, port

    async def start(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.max_body)
        self.endpoints.register(app.router)
        app.router.add_get(METRICS_PATH, self.metrics.handle)
        self.runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE,
            keepalive_timeout=self.idle_timeout, max_line_size=MAX_LINE,
            max_field_size=MAX_LINE, max_headers=MAX_HEADERS, auto_decompress=False,
            lingering_time=1.0)
        await self.runner.setup()
        handlers = self.runner.server
        assert handlers is not None  # AppRunner.setup() created it
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            if len(handlers.connections) >= self.max_connections:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning("agent.http: connection refused: %d at the limit of %d "
                                "(http_max_connections); %d refused so far",
                                len(handlers.connections), self.max_connections, self.refused)
                return _Refuse()
            return handlers()

        try:
            self.server = await loop.create_server(
                protocol, host, port, ssl=self.ssl_context, backlog=128, reuse_address=True,
                ssl_handshake_timeout=self.idle_timeout if self.ssl_context else None)
        except BaseException:
            await self.runner.cleanup()
            raise
        self.hub.start()

    async def close(self) -> None:
        self.hub.stop()
        if self.server is not None:
            self.server.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def _authorized(self, request: web.Request) -> None:
        if not self.token or (request.path == METRICS_PATH and not self.metrics_auth):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            raise ApiError(401, "missing bearer token", "Authorization",
                           "send the header Authorization: Bearer <http_token>")
        if not hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self.token):
            raise ApiError(403, "invalid bearer token", "Authorization",
                           "send the http_token the agent was configured with")

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        try:
            self._authorized(request)
            return await handler(request)
        except ApiError as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="pyserf"'} if exc.status == 401 else None
            return error_response(exc, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            field, fix = _STATUS_FIX.get(exc.status, ("", ""))
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(ApiError(exc.status, exc.reason.lower(), field, fix), headers)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:  # a bug must not leak a traceback page or kill the connection loop
            log.exception("agent.http: internal error serving %s %s", request.method,
                          request.path[:200])
            return error_response(ApiError(500, "internal error", "", "see the agent's log"))


async def start_listener(agent: AgentAPI, config: Any) -> HTTPListener:
    """Start the listener ``config``'s ``http_*`` keys describe (already validated).

    Raises OSError (bind) or ssl.SSLError (unusable certificate or key)."""
    from pyserf.http.settings import parse_http_addr

    host, port = parse_http_addr(config.http_addr)
    context = None
    if config.http_tls_cert:
        context = tls_context(config.http_tls_cert, config.http_tls_key)
    elif config.http_token and not host.startswith("127.") and host not in ("::1", "localhost"):
        log.warning("agent.http: the bearer token is sent in clear text to %s; set "
                    "http_tls_cert and http_tls_key to encrypt it", config.http_addr)
    listener = HTTPListener(agent, token=config.http_token,
                            max_connections=config.http_max_connections,
                            max_body=config.http_max_body_bytes,
                            idle_timeout=config.http_idle_timeout, ssl_context=context,
                            metrics_auth=config.http_metrics_auth)
    await listener.start(host, port)
    return listener
