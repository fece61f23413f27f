"""Bounds and typed request decoding for the agent RPC (IPC) server.

Serf decodes each request into a Go struct with msgpack; a value that does not fit the field
(wrong type, integer out of range) is a decode error, and serf logs it and drops the client
without a reply.  :func:`decode_header` and :func:`decode_body` do the same job here: they
turn the loosely typed msgpack objects into plain values of the widths serf uses, filling
absent or nil fields with Go's zero values, or raise :class:`RequestError`.

Every limit below is a named constant; serf has none of them (Go's goroutines and blocking
sockets bound memory instead), so each says why its value was chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

# -- connections -----------------------------------------------------------------------------

# Concurrent RPC clients past the handshake (and auth). The serf CLI opens one short
# connection per command; long-lived clients are monitors and event streams, which rarely
# number more than a handful. Serf has no cap (a goroutine per client).
MAX_RPC_CLIENTS = 64
# Clients still owing the handshake (or auth). When all slots are taken the oldest is
# closed to admit the newcomer, so idle sockets can never lock a real client out, and a real
# client (whose handshake takes a millisecond or two) could only be pushed out by 512 newer
# connections arriving within that time. An idle one costs ~7 KiB (its msgpack parser is
# made when its first byte arrives), one sending garbage ~35 KiB: at most ~18 MiB in all,
# and with the handshaken clients at most 576 file descriptors, inside the usual 1024.
MAX_PENDING_CLIENTS = 512
# Listen backlog, which asyncio also uses as the number of connections it accepts in one go.
# Its default of 100 overflows under a burst (the kernel then drops SYNs and a real client
# waits a second or more for the retransmit); 1024 makes each accepted burst so large that,
# under a sustained flood, the agent spends seconds working through it (measured: probes up
# to 2.7 s and +50 MiB). 512 (= MAX_PENDING_CLIENTS) kept probes under 0.7 s. Go listens
# with the system's somaxconn (4096 on Linux) but accepts one connection at a time.
LISTEN_BACKLOG = 512
# Seconds a client has to complete handshake, and auth when rpc_auth is set.
HANDSHAKE_TIMEOUT = 5.0
# Seconds a request may take to arrive once its first byte has (memberlist's TCP timeout is
# also 10 s). Between requests a client may idle for ever: monitors and streams do.
FRAME_TIMEOUT = 10.0
# Open streams (monitor, stream, query) per client; a query stream lasts until its timeout.
MAX_CLIENT_STREAMS = 256

# -- buffers ---------------------------------------------------------------------------------

# asyncio's StreamReader buffer per connection and the most one socket read takes (the
# server caps its transports' recv size, 256 KiB by default): the reader pauses once it holds
# more than twice this, so a client parks at most 3 x 4 KiB in it before its request is parsed
# (plus the kernel's socket buffer, which is not the agent's memory).
READ_LIMIT = 4 * 1024

# Bytes of one request before handshake/auth: a handshake is ~30 bytes, an auth request the
# key plus ~30, so 4 KiB is generous and leaves an unauthenticated client nothing to hoard.
PRE_AUTH_BUFFER = 4 * 1024
# Bytes of one request afterwards (serf accepts any size). The largest legitimate requests
# are a user event (payload <= 9 KiB, serf's hard cap), a query (<= query_size_limit, 1 KiB
# by default), tags (<= 512 bytes encoded) and join address lists; 1 MiB is plenty.
MAX_REQUEST_BUFFER = 1024 * 1024
# msgpack containers (arrays plus maps) in one request. An empty list costs ~56 bytes in
# Python against 1 byte on the wire, so 1 MiB of nested empty lists would build ~60 MiB of
# objects; no legitimate request holds more than a few hundred containers.
MAX_REQUEST_CONTAINERS = 8192
# Records queued per subscriber (monitor, stream, query responses): serf's channel of 512.
SUBSCRIBER_BUFFER = 512

# -- fields ----------------------------------------------------------------------------------

# Characters in one string field. Names, keys and filters are short; 64 KiB is larger than
# any value serf itself accepts (a 9 KiB user event), so serf's own size errors still reach
# the client for values between serf's limit and this one.
MAX_STRING = 64 * 1024
# Bytes in one payload field, for the same reason as MAX_STRING.
MAX_PAYLOAD = 64 * 1024
# Entries in a list field (join addresses, query node filters, tags to delete).
MAX_LIST = 1024
# Entries in a map of tags. Serf's encoded tags must fit in 512 bytes, so no more than ~170
# tags can ever be valid; the margin lets serf's own "tags too large" error through.
MAX_TAGS = 1024


class RequestError(ValueError):
    """A request that does not decode into serf's typed struct: serf drops the client."""


def new_unpacker() -> tuple[msgpack.Unpacker, Callable[[], None]]:
    """An unpacker for requests, and a function that resets its per-request container count.

    Containers are counted by hooks so that a request of nested empty arrays or maps is
    refused before it builds millions of objects.
    """
    count = 0

    def counted(value: Any) -> Any:
        nonlocal count
        count += 1
        if count > MAX_REQUEST_CONTAINERS:
            raise RequestError(f"more than {MAX_REQUEST_CONTAINERS} arrays/maps in a request")
        return value

    def reset() -> None:
        nonlocal count
        count = 0

    unpacker = msgpack.Unpacker(
        raw=False, unicode_errors="replace", read_size=1024,
        max_buffer_size=MAX_REQUEST_BUFFER, max_str_len=MAX_REQUEST_BUFFER,
        max_bin_len=MAX_REQUEST_BUFFER, max_array_len=MAX_REQUEST_CONTAINERS * 8,
        max_map_len=MAX_REQUEST_CONTAINERS * 8, max_ext_len=64,
        list_hook=counted, object_hook=counted)
    return unpacker, reset


# -- field decoders ----------------------------------------------------------------------------

Decoder = Callable[[str, Any], Any]


def _fail(field: str, want: str, value: Any) -> RequestError:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return RequestError(f"decode failed: {field}: cannot decode {type(value).__name__} "
                        f"{shown} into {want}")


def _integer(kind: str, low: int, high: int) -> Decoder:
    def decode(field: str, value: Any) -> int:
        if value is None:
            return 0
        # bool is an int subclass in Python, but a msgpack bool never decodes into a Go int.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(field, kind, value)
        if not low <= value <= high:
            raise RequestError(f"decode failed: {field}: {value} overflows {kind}")
        return value

    return decode


UINT8 = _integer("uint8", 0, 2**8 - 1)
INT32 = _integer("int32", -(2**31), 2**31 - 1)
INT64 = _integer("int64", -(2**63), 2**63 - 1)
UINT64 = _integer("uint64", 0, 2**64 - 1)


def _text(field: str, value: Any, limit: int = MAX_STRING) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):  # Go's codec decodes bin into a string field as well
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise _fail(field, "string", value)
    if len(value) > limit:
        raise RequestError(f"decode failed: {field}: string of {len(value)} characters "
                           f"exceeds {limit}")
    return value


def STRING(field: str, value: Any) -> str:  # noqa: N802 - named like the other field kinds
    return _text(field, value)


def BYTES(field: str, value: Any) -> bytes:  # noqa: N802
    if value is None:
        return b""
    if isinstance(value, str):  # and a str into []byte
        value = value.encode()
    if not isinstance(value, bytes):
        raise _fail(field, "[]byte", value)
    if len(value) > MAX_PAYLOAD:
        raise RequestError(f"decode failed: {field}: {len(value)} bytes exceeds {MAX_PAYLOAD}")
    return value


def BOOL(field: str, value: Any) -> bool:  # noqa: N802
    if value is None:
        return False
    if value in (0, 1) and isinstance(value, int):  # Go's codec takes fixint 0/1 as a bool
        return bool(value)
    raise _fail(field, "bool", value)


def STRINGS(field: str, value: Any) -> list[str]:  # noqa: N802
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _fail(field, "[]string", value)
    if len(value) > MAX_LIST:
        raise RequestError(f"decode failed: {field}: {len(value)} entries exceeds {MAX_LIST}")
    return [_text(f"{field}[{i}]", item) for i, item in enumerate(value)]


def TAGS(field: str, value: Any) -> dict[str, str]:  # noqa: N802
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(field, "map[string]string", value)
    if len(value) > MAX_TAGS:
        raise RequestError(f"decode failed: {field}: {len(value)} entries exceeds {MAX_TAGS}")
    out = {}
    for key, item in value.items():
        name = _text(f"{field} key", key)
        out[name] = _text(f"{field}[{name[:40]!r}]", item)
    return out


# Each command's body as serf declares it (cmd/serf/command/agent/ipc.go), plus pyserf's
# optional WaitFull on query. Commands missing here (members, leave, list-keys, stats) have
# no body.
BODIES: dict[str, dict[str, Decoder]] = {
    "handshake": {"Version": INT32},
    "auth": {"AuthKey": STRING},
    "event": {"Name": STRING, "Payload": BYTES, "Coalesce": BOOL},
    "force-leave": {"Node": STRING, "Prune": BOOL},
    "join": {"Existing": STRINGS, "Replay": BOOL},
    "members-filtered": {"Tags": TAGS, "Status": STRING, "Name": STRING},
    "install-key": {"Key": STRING},
    "use-key": {"Key": STRING},
    "remove-key": {"Key": STRING},
    "monitor": {"LogLevel": STRING},
    "stream": {"Type": STRING},
    "stop": {"Stop": UINT64},
    "tags": {"Tags": TAGS, "DeleteTags": STRINGS},
    "query": {"FilterNodes": STRINGS, "FilterTags": TAGS, "RequestAck": BOOL,
              "RelayFactor": UINT8, "Timeout": INT64, "Name": STRING, "Payload": BYTES,
              "WaitFull": BOOL},
    "respond": {"ID": UINT64, "Payload": BYTES},
    "get-coordinate": {"Node": STRING},
}


def decode_header(obj: Any) -> tuple[str, int]:
    """``{Command string, Seq uint64}``; a missing command is "" (serf: unsupported)."""
    if not isinstance(obj, dict):
        raise _fail("request header", "struct", obj)
    return _text("Command", obj.get("Command")), UINT64("Seq", obj.get("Seq"))


def decode_body(command: str, obj: Any) -> dict[str, Any]:
    """The typed body of ``command``: every declared field present, unknown keys ignored."""
    schema = BODIES[command]
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise _fail(f"{command} request", "struct", obj)
    return {name: decode(name, obj.get(name)) for name, decode in schema.items()}
