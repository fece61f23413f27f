"""Serf's internal queries (names starting ``_serf_``), answered by the agent itself.

They never reach event handlers or RPC streams: ``_serf_ping`` exists only for its acks
(``serf reachability``), ``_serf_conflict`` lets a node learn how others see a contested name,
and the key queries drive ``serf keys`` across the cluster.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Protocol

from pyserf.memberlist import codec
from pyserf.memberlist.fields import DecodeError
from pyserf.serf import messages as m

if TYPE_CHECKING:
    from pyserf.memberlist.memberlist import Memberlist
    from pyserf.serf.config import SerfConfig
    from pyserf.serf.events import QueryReceived
    from pyserf.serf.members import MemberState


class QueryAnswerer(Protocol):
    """What answering an internal query uses of the serf machine (its Queries part)."""

    config: SerfConfig
    members: dict[str, MemberState]
    memberlist: Memberlist

    def respond(self, query: QueryReceived, payload: bytes, now: float) -> None: ...
    def keyring_changed(self) -> None: ...

log = logging.getLogger("pyserf.serf")

PREFIX = "_serf_"
PING = PREFIX + "ping"
CONFLICT = PREFIX + "conflict"
INSTALL_KEY = PREFIX + "install-key"
USE_KEY = PREFIX + "use-key"
REMOVE_KEY = PREFIX + "remove-key"
LIST_KEYS = PREFIX + "list-keys"


def respond_error(exc: Exception) -> str:
    """serf's Query.Respond wraps every error in this text (naming key queries whatever the
    query is); the RPC respond reply and the agents' log lines carry it."""
    return f"failed to respond to key query: {exc}"


def is_internal(name: str) -> bool:
    return name.startswith(PREFIX)


def handle(serf: QueryAnswerer, query: QueryReceived, now: float) -> None:
    if query.name == PING:
        return
    if query.name == CONFLICT:
        _conflict(serf, query, now)
    elif query.name in (INSTALL_KEY, USE_KEY, REMOVE_KEY, LIST_KEYS):
        _key_query(serf, query, now)
    else:
        log.warning("serf: Unhandled internal query '%s'", query.name)


def _respond(serf: QueryAnswerer, query: QueryReceived, payload: bytes, now: float) -> None:
    try:
        serf.respond(query, payload, now)
    except Exception as exc:  # noqa: BLE001 - a failed answer is logged, never fatal
        kind = "conflict" if query.name == CONFLICT else "key"
        log.error("serf: Failed to respond to %s query: %s", kind, respond_error(exc))


def _conflict(serf: QueryAnswerer, query: QueryReceived, now: float) -> None:
    node = query.payload.decode("utf-8", "replace")
    if node == serf.config.node_name:
        return
    log.debug("serf: Got conflict resolution query for '%s'", node)
    state = serf.members.get(node)
    body = None
    if state is not None:
        member = state.member
        body = {"Addr": codec.ip_to_bytes(member.addr), "DelegateCur": member.delegate_cur,
                "DelegateMax": member.delegate_max, "DelegateMin": member.delegate_min,
                "Name": member.name, "Port": member.port, "ProtocolCur": member.protocol_cur,
                "ProtocolMax": member.protocol_max, "ProtocolMin": member.protocol_min,
                "Status": int(member.status), "Tags": dict(member.tags)}
    _respond(serf, query, m.encode(m.SerfMsg.CONFLICT_RESPONSE, body), now)


def _key_query(serf: QueryAnswerer, query: QueryReceived, now: float) -> None:
    keyring = serf.memberlist.config.keyring
    response: dict[str, object] = {"Keys": None, "Message": "", "PrimaryKey": "",
                                   "Result": False}
    if keyring is None:
        response["Message"] = ("Keyring is empty (encryption not enabled)"
                               if query.name == LIST_KEYS
                               else "No keyring to modify (encryption not enabled)")
        log.error("serf: %s", response["Message"])
    elif query.name == LIST_KEYS:
        log.info("serf: Received list-keys query")
        keys = [base64.b64encode(k).decode() for k in keyring.keys]
        # An empty keyring (Keyring([])) has no primary: answer "" rather than raise.
        primary = keyring.primary
        response.update(Keys=keys, Result=True,
                        PrimaryKey="" if primary is None else base64.b64encode(primary).decode())
        body = _fitting_key_list(serf, query, response, keys)
        if body is not None:
            _respond(serf, query, body, now)
        return
    else:
        try:
            key = m.KeyRequest.decode(query.payload).key
            action = {INSTALL_KEY: keyring.add_key, USE_KEY: keyring.use_key,
                      REMOVE_KEY: keyring.remove_key}[query.name]
            log.info("serf: Received %s query", query.name[len(PREFIX):])
            action(key)
            response["Result"] = True
            serf.keyring_changed()
        except ValueError as exc:  # DecodeError included: a key request serf could not read
            response["Message"] = str(exc)
            log.error("serf: Failed to %s: %s", query.name[len(PREFIX):].replace("-", " "),
                      exc)
    _respond(serf, query, m.encode(m.SerfMsg.KEY_RESPONSE, response), now)


# serf's lower bound on one key's encoded size: a limit of L bytes never carries more than L // 25.
MIN_ENCODED_KEY_LENGTH = 25


def _fitting_key_list(serf: QueryAnswerer, query: QueryReceived, response: dict[str, object],
                      keys: list[str]) -> bytes | None:
    """The key response whose query-response wrapper fits the size limit, as serf's agent
    (keyListResponseWithCorrectSize): the whole list, else the first n keys with a note, n from
    limit // 25 down to 1; None (logged) when not even one key fits."""
    limit = serf.config.query_response_size_limit
    counts = [len(keys)] + list(range(min(limit // MIN_ENCODED_KEY_LENGTH, len(keys)), 0, -1))
    for shown in counts:
        if shown < len(keys):
            response["Keys"] = keys[:shown]
            response["Message"] = (f"truncated key list response, showing first {shown} of "
                                   f"{len(keys)} keys")
        body = m.encode(m.SerfMsg.KEY_RESPONSE, response)
        wrapped = m.QueryResponse(query.ltime, query.id, serf.config.node_name, 0, body)
        if len(wrapped.encode()) <= limit:
            if shown < len(keys):
                log.warning("serf: %s", response["Message"])
            return body
    log.error("serf: Failed to truncate response so that it fits into message")
    return None


class KeyOperation:
    """Collects the answers to one cluster-wide key query (what ``serf keys`` reports)."""

    def __init__(self, num_nodes: int) -> None:
        self.num_nodes = num_nodes
        self.num_resp = 0
        self.num_err = 0
        self.messages: dict[str, str] = {}
        self.keys: dict[str, int] = {}

    def add(self, node: str, payload: bytes) -> bool:
        """Record one node's answer; True once every node has answered."""
        self.num_resp += 1
        if not payload or payload[0] != m.SerfMsg.KEY_RESPONSE:
            self.messages[node] = f"Invalid key query response type: {payload[:64]!r}"
            self.num_err += 1
            return self.num_resp >= self.num_nodes
        try:
            response = m.KeyResponse.decode(payload)
        except DecodeError as exc:
            self.messages[node] = f"Failed to decode key query response: {exc}"
            self.num_err += 1
            return self.num_resp >= self.num_nodes
        if not response.result:
            self.num_err += 1
        if response.message:
            self.messages[node] = response.message
        for key in response.keys:
            self.keys[key] = self.keys.get(key, 0) + 1
        return self.num_resp >= self.num_nodes

    def error(self) -> str:
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return ""


def key_request(key: bytes) -> bytes:
    return m.KeyRequest(key).encode()
