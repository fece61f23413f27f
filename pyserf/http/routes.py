"""The HTTP API's endpoints (Consul-shaped JSON) and the hub that feeds streams.

    GET    /v1/agent/members[?status=&name=&tag=k:re][&index=N&wait=30s]   (X-Serf-Index)
    GET    /v1/agent/self
    PUT    /v1/agent/join?address=A[&address=B][&replay]
    PUT    /v1/agent/leave                          (then the agent shuts down)
    PUT    /v1/agent/force-leave/{node}[?prune]
    PUT    /v1/agent/tags                           {"Set": {"k": "v"}, "Delete": ["k"]}
    PUT    /v1/event/fire/{name}[?coalesce=false]   body = payload
    POST   /v1/query/{name}[?node=&tag=k:re&timeout=&ack&relay=&stream]   body = payload
    GET    /v1/coordinate/{node}
    GET|POST|PUT|DELETE /v1/agent/keyring          list | install | use | remove {"Key": ...}
    GET    /v1/event/stream[?type=member-join,user:deploy&heartbeat=15s]   (SSE)

Payloads travel as Go's JSON encodes []byte: base64 (null when empty).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyserf.agent.event_filter import parse_event_filter
from pyserf.http.sse import EventRing, StreamEvent, Subscriber, TypeFilter, comment, frame
from pyserf.http.views import (
    DEFAULT_WAIT,
    MAX_QUERY_TIMEOUT,
    MAX_WAIT,
    ApiError,
    MemberFilter,
    event_json,
    member_json,
    parse_bool,
    parse_duration_param,
    parse_index,
    parse_int,
    payload_json,
)
from pyserf.memberlist import security
from pyserf.serf import filters, internal_queries
from pyserf.serf.config import SerfError

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

# Concurrent long-lived requests, each bounded so a client cannot pin the agent's memory.
MAX_STREAMS = 128
MAX_WAITERS = 1024
MAX_QUERIES = 64
MAX_JOIN_ADDRESSES = 64
MAX_NAME = 512
# Each streamed event is checked against every filter of every stream.
MAX_TYPE_FILTERS = 64
DEFAULT_HEARTBEAT = 15.0
MIN_HEARTBEAT = 1.0
STREAM_BUFFER = 64 * 1024
REPLAY_BATCH = 64
# Members matched between two yields to the loop (a large cluster with RE2 filters).
MATCH_SLICE = 256


class Hub:
    """Turns agent events into the membership index and the SSE ring and fan-out."""

    def __init__(self, agent: AgentAPI) -> None:
        self.agent = agent
        self.ring = EventRing()
        self.subscribers: set[Subscriber] = set()
        self.index = 1
        self.waiters = 0
        self.changed = asyncio.Event()
        self.closing = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.agent.subscribe(self.on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.closing.set()
        for sub in list(self.subscribers):
            sub.wake()

    def on_event(self, event: Any) -> None:
        """Called by the agent for every event: appends only, never awaits a client."""
        shaped = event_json(event)
        if shaped is None:
            return
        kind, name, record = shaped
        if kind.startswith("member-"):
            self.index += 1
            self.changed.set()
            self.changed = asyncio.Event()
        streamed = self.ring.append(kind, name, record)
        for sub in list(self.subscribers):
            sub.push(streamed)

    async def wait_change(self, index: int, timeout: float) -> None:
        """Return once the index moves past ``index``, at ``timeout``, or at shutdown. An
        index ahead of ours (an agent restarted since) answers at once, as Consul does."""
        if index != self.index or timeout <= 0:
            return
        if self.waiters >= MAX_WAITERS:
            raise ApiError(429, "too many blocking queries", "index",
                           "retry later or poll without index")
        self.waiters += 1
        waits = [asyncio.ensure_future(self.changed.wait()),
                 asyncio.ensure_future(self.closing.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiters -= 1
            for w in waits:
                w.cancel()

    def dropped(self, sub: Subscriber, peer: Any) -> None:
        log.warning("agent.http: event stream client %s dropped: it read too slowly (%d "
                    "events unread)", peer, sub.limit)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")) + "\n", status=status,
                        content_type="application/json", headers=headers)


def _name(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if not value or len(value) > MAX_NAME:
        raise ApiError(400, f"{key}: empty or longer than {MAX_NAME} characters", key,
                       f"give a {key} of 1..{MAX_NAME} characters")
    return value


def _sse_response() -> web.StreamResponse:
    return web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})


class Endpoints:
    def __init__(self, agent: AgentAPI, hub: Hub, max_body: int, io_timeout: float) -> None:
        self.agent = agent
        self.hub = hub
        self.max_body = max_body
        self.io_timeout = io_timeout
        self.queries = 0

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/agent/members", self.members)
        router.add_get("/v1/agent/self", self.self_info)
        router.add_put("/v1/agent/join", self.join)
        router.add_put("/v1/agent/leave", self.leave)
        router.add_put("/v1/agent/force-leave/{node}", self.force_leave)
        router.add_put("/v1/agent/tags", self.tags)
        router.add_put("/v1/event/fire/{name}", self.fire)
        router.add_post("/v1/query/{name}", self.query)
        router.add_get("/v1/coordinate/{node}", self.coordinate)
        for method in ("GET", "POST", "PUT", "DELETE"):
            router.add_route(method, "/v1/agent/keyring", self.keyring)
        router.add_get("/v1/event/stream", self.stream)

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise web.HTTPRequestEntityTooLarge(self.max_body, request.content_length)
        try:
            return await asyncio.wait_for(request.read(), self.io_timeout)
        except TimeoutError:
            raise ApiError(408, "the request body did not arrive in time", "body",
                           "send the whole body promptly") from None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await self._body(request)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nesting
            raise ApiError(400, f"body: not JSON: {str(exc)[:200]}", "body",
                           "send a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body: not a JSON object", "body", "send a JSON object")
        return body

    # -- membership --------------------------------------------------------------------

    async def members(self, request: web.Request) -> web.Response:
        params = request.query
        member_filter = MemberFilter.parse(params)
        if "index" in params:
            index = parse_index(params["index"])
            wait = parse_duration_param(params.get("wait", ""), "wait", DEFAULT_WAIT, MAX_WAIT)
            await self.hub.wait_change(index, wait)
        members = self.agent.members()
        if member_filter.empty():
            out = [member_json(m) for m in members]
        else:
            out = []
            for count, member in enumerate(members, 1):
                if member_filter.matches(member):
                    out.append(member_json(member))
                if count % MATCH_SLICE == 0:
                    await asyncio.sleep(0)
        return json_response(out, headers={"X-Serf-Index": str(self.hub.index)})

    async def self_info(self, request: web.Request) -> web.Response:
        me = self.agent.local_member()
        return json_response({"Config": {"NodeName": me.name, "Tags": dict(me.tags)},
                              "Member": member_json(me), "Stats": self.agent.stats()})

    async def join(self, request: web.Request) -> web.Response:
        addresses = request.query.getall("address", [])
        if not addresses or len(addresses) > MAX_JOIN_ADDRESSES or any(
                not a or len(a) > MAX_NAME for a in addresses):
            raise ApiError(400, "address: give 1..64 non-empty addresses", "address",
                           "PUT /v1/agent/join?address=10.0.0.1[:7946]&address=...")
        replay = parse_bool(request.query, "replay")
        num, error = await self.agent.join(list(addresses), replay)
        if error and not num:
            raise ApiError(500, error.strip(), "address",
                           "give the bind address of a running agent that this one can reach")
        return json_response({"Num": num})

    async def leave(self, request: web.Request) -> web.StreamResponse:
        error = await self.agent.leave()
        response = json_response({"Left": not error, **({"Error": error} if error else {})},
                                 500 if error else 200)
        # Answer first: the agent (and this listener) shut down right after.
        await response.prepare(request)
        await response.write_eof()
        self.agent.stop(1 if error else 0)
        return response

    async def force_leave(self, request: web.Request) -> web.Response:
        node = _name(request, "node")
        prune = parse_bool(request.query, "prune")
        error = await self.agent.force_leave(node, prune)
        if error:
            raise ApiError(500, error, "node", "give the name of a failed or left member")
        return json_response({"Node": node, "Prune": prune})

    async def tags(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        to_set = body.get("Set") or {}
        to_delete = body.get("Delete") or []
        if not isinstance(to_set, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in to_set.items()):
            raise ApiError(400, "Set: not an object of strings", "Set",
                           'send {"Set": {"role": "web"}}')
        if not isinstance(to_delete, list) or not all(isinstance(k, str) for k in to_delete):
            raise ApiError(400, "Delete: not a list of strings", "Delete",
                           'send {"Delete": ["role"]}')
        unknown = set(body) - {"Set", "Delete"}
        if unknown:
            field = sorted(unknown)[0][:64]
            raise ApiError(400, f"{field}: unknown key", field, "use only Set and Delete")
        tags = self.agent.local_tags()
        tags.update(to_set)
        for key in to_delete:
            tags.pop(key, None)
        try:
            error = await self.agent.set_tags(tags)
        except SerfError as exc:
            raise ApiError(413, str(exc), "Set", "use fewer or shorter tags") from None
        if error:
            raise ApiError(500, error, "Set", "retry; the tag update did not go out")
        return json_response({"Tags": self.agent.local_tags()})

    async def coordinate(self, request: web.Request) -> web.Response:
        node = _name(request, "node")
        coord = self.agent.coordinate(node)
        if coord is None:
            raise ApiError(404, f"node: no coordinate for {node[:64]!r}", "node",
                           "give the name of a member (coordinates come with its pings)")
        return json_response({"Node": node, "Coord": coord})

    # -- events and queries ------------------------------------------------------------

    async def fire(self, request: web.Request) -> web.Response:
        name = _name(request, "name")
        coalesce = parse_bool(request.query, "coalesce", default=True)
        payload = await self._body(request)
        try:
            self.agent.user_event(name, payload, coalesce)
        except SerfError as exc:
            raise ApiError(413, str(exc), "payload",
                           "send a smaller payload (the agent's user_event_size_limit)") from None
        return json_response({"Name": name, "Size": len(payload)})

    async def query(self, request: web.Request) -> web.StreamResponse:
        name = _name(request, "name")
        if name.startswith(internal_queries.PREFIX):
            raise ApiError(403, f"name: queries cannot use the {internal_queries.PREFIX!r} "
                           "prefix", "name", "choose another query name")
        params = request.query
        tag_filters: dict[str, str] = {}
        for text in params.getall("tag", []):
            key, sep, expr = text.partition(":")
            try:
                if not sep or not key:
                    raise filters.FilterError("not key:regexp")
                filters.compile_search(expr)
            except filters.FilterError as exc:
                raise ApiError(400, f"tag: {exc}", "tag", "write tag=key:regexp") from None
            tag_filters[key] = expr
        nodes = params.getall("node", [])
        timeout = parse_duration_param(params.get("timeout", ""), "timeout", 0.0,
                                       MAX_QUERY_TIMEOUT)
        relay = parse_int(params, "relay", 0, 5, 0)
        ack = parse_bool(params, "ack")
        stream = parse_bool(params, "stream")
        payload = await self._body(request)
        if self.queries >= MAX_QUERIES:
            raise ApiError(429, "too many queries in flight", "name", "retry later")
        events: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        try:
            handle = self.agent.query(
                name, payload, filter_nodes=list(nodes), filter_tags=tag_filters,
                request_ack=ack, relay_factor=relay, timeout=timeout,
                on_ack=lambda node: events.put_nowait(("ack", node, b"")),
                on_response=lambda node, data: events.put_nowait(("response", node, data)),
                on_done=lambda: events.put_nowait(("done", "", b"")))
        except SerfError as exc:
            raise ApiError(400, str(exc), "payload", "send a smaller payload or fewer "
                           "filters (the agent's query_size_limit)") from None
        self.queries += 1
        try:
            if stream:
                return await self._stream_query(request, events)
            acks: list[str] = []
            responses: dict[str, str | None] = {}
            while True:
                kind, node, data = await events.get()
                if kind == "done":
                    return json_response({"Acks": acks, "Responses": responses})
                if kind == "ack":
                    acks.append(node)
                else:
                    responses[node] = payload_json(data)
        finally:
            self.queries -= 1
            handle.closed = True

    async def _stream_query(self, request: web.Request,
                            events: asyncio.Queue[tuple[str, str, bytes]]
                            ) -> web.StreamResponse:
        response = _sse_response()
        await response.prepare(request)
        while True:
            kind, node, data = await events.get()
            record = {"From": node, "Payload": payload_json(data)} if kind != "done" else {}
            await asyncio.wait_for(
                response.write(frame(None, kind, json.dumps(record, separators=(",", ":")))),
                self.io_timeout)
            if kind == "done":
                await response.write_eof()
                return response

    async def keyring(self, request: web.Request) -> web.Response:
        operation = {"GET": internal_queries.LIST_KEYS, "POST": internal_queries.INSTALL_KEY,
                     "PUT": internal_queries.USE_KEY,
                     "DELETE": internal_queries.REMOVE_KEY}[request.method]
        key = b""
        if request.method != "GET":
            body = await self._json_body(request)
            text = body.get("Key")
            if not isinstance(text, str):
                raise ApiError(400, "Key: missing or not a string", "Key",
                               'send {"Key": "<base64 key from pyserf keygen>"}')
            try:
                key = security.parse_key_b64(text)
            except ValueError as exc:
                raise ApiError(400, f"Key: {exc}", "Key",
                               "give a base64 key of 16, 24 or 32 bytes (pyserf keygen)"
                               ) from None
        op = await self.agent.key_operation(operation, key)
        error = op.error()
        body = {"Keys": op.keys if request.method == "GET" else None,
                "Messages": op.messages, "NumNodes": op.num_nodes, "NumResp": op.num_resp,
                "NumErr": op.num_err}
        if error:
            body["Error"] = error
        return json_response(body, 500 if error else 200)

    # -- the event stream --------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        matchers = parse_event_filter(request.query.get("type", "*"))
        if len(matchers) > MAX_TYPE_FILTERS:
            raise ApiError(400, f"type: {len(matchers)} filters", "type",
                           f"give at most {MAX_TYPE_FILTERS} comma-separated filters")
        if not all(m.valid() for m in matchers):
            raise ApiError(400, "type: unknown event type", "type",
                           "use member-join, member-leave, member-failed, member-update, "
                           "member-reap, user[:name], query[:name] or *, comma-separated")
        heartbeat = max(MIN_HEARTBEAT, parse_duration_param(
            request.query.get("heartbeat", ""), "heartbeat", DEFAULT_HEARTBEAT, 60.0))
        hub = self.hub
        if len(hub.subscribers) >= MAX_STREAMS:
            raise ApiError(429, f"too many event streams (limit {MAX_STREAMS})", "stream",
                           "retry later or share one stream")
        wake = asyncio.Event()
        peer = request.remote
        transport = request.transport

        def drop(sub: Subscriber) -> None:
            # Abort, not close: close would wait to flush what the client never reads.
            hub.dropped(sub, peer)
            if transport is not None:
                transport.abort()

        sub = Subscriber(TypeFilter(tuple(matchers)).matches, wake.set, drop)
        response = _sse_response()
        if transport is not None:
            # Small kernel and transport buffers: a client that stops reading is noticed
            # after ~200 KiB, not the megabytes TCP autotuning would queue, then dropped.
            transport.set_write_buffer_limits(high=STREAM_BUFFER)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_BUFFER)
        await response.prepare(request)
        last_id = request.headers.get("Last-Event-ID", "")
        exact, missed = hub.ring.since(last_id) if last_id else (True, [])
        hub.subscribers.add(sub)  # no await since the ring was read: nothing lost or doubled
        try:
            head = comment("stream open")
            if not exact:
                head += frame(None, "gap", json.dumps({"LastEventID": last_id[:64],
                                                       "Resumed": False}))
            await asyncio.wait_for(response.write(head), self.io_timeout)
            # The missed events are written straight out (there may be more than a live
            # queue holds); live ones queue up meanwhile and follow.
            missed = [e for e in missed if sub.accepts(e)]
            for start in range(0, len(missed), REPLAY_BATCH):
                await asyncio.wait_for(response.write(b"".join(
                    frame(hub.ring.event_id(e.seq), e.type, e.data)
                    for e in missed[start:start + REPLAY_BATCH])), self.io_timeout)
            await self._pump(response, sub, wake, heartbeat)
        except TimeoutError:  # a write stuck for io_timeout: the client stopped reading
            if not sub.dropped:
                sub.dropped = True
                drop(sub)
        except ConnectionError:  # gone (or aborted by drop)
            pass
        finally:
            hub.subscribers.discard(sub)
        return response

    async def _pump(self, response: web.StreamResponse, sub: Subscriber, wake: asyncio.Event,
                    heartbeat: float) -> None:
        ring, closing = self.hub.ring, self.hub.closing
        while not sub.dropped and not closing.is_set():
            wake.clear()
            batch: list[StreamEvent] = sub.take()
            if batch:
                data = b"".join(frame(ring.event_id(e.seq), e.type, e.data) for e in batch)
                await asyncio.wait_for(response.write(data), self.io_timeout)
                continue
            try:
                await asyncio.wait_for(wake.wait(), heartbeat)
            except TimeoutError:
                await asyncio.wait_for(response.write(comment("heartbeat")), self.io_timeout)
