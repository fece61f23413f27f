"""The RPC commands that answer with one reply: members, join, leave, tags, keys and the rest.

Each ``cmd_<name>`` takes the client's :class:`~pyserf.agent.rpc_session.Session`, the
request's ``Seq`` and its decoded body (:mod:`pyserf.agent.rpc_limits`), acts through the
agent API and sends serf's reply. The commands that open a stream (monitor, stream, query)
live in :mod:`pyserf.agent.rpc_streams`; handshake and auth in :mod:`pyserf.agent.rpc`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyserf.agent.rpc_session import CloseConnection
from pyserf.memberlist import codec, security
from pyserf.serf import filters, internal_queries
from pyserf.serf.config import SerfError
from pyserf.serf.members import Member

if TYPE_CHECKING:
    from pyserf.agent.rpc_session import Session

# Wall-clock seconds one members-filtered request may spend matching (serf has no bound,
# but it matches in its own goroutine; here matching shares the event loop), and the longest
# stretch it may hold the loop between two yields.
MEMBER_FILTER_BUDGET = 5.0
FILTER_SLICE = 0.02


def member_record(member: Member) -> dict[str, Any]:
    """A member as serf's IPC sends it (members replies and member-event stream records)."""
    return {"Name": member.name, "Addr": codec.ip_to_bytes(member.addr), "Port": member.port,
            "Tags": dict(member.tags), "Status": member.status.label(),
            "ProtocolMin": member.protocol_min, "ProtocolMax": member.protocol_max,
            "ProtocolCur": member.protocol_cur, "DelegateMin": member.delegate_min,
            "DelegateMax": member.delegate_max, "DelegateCur": member.delegate_cur}


def anchored(expr: str) -> Any:
    """Compile a members-filtered pattern as serf does (``^expr$``) with RE2 semantics, which
    run in linear time like Go's regexp; serf drops the client on a bad pattern."""
    try:
        return filters.compile_anchored(expr)
    except filters.FilterError as exc:
        raise CloseConnection(str(exc)) from None


def _tag_value(key: str) -> Callable[[Member], str]:
    """What a members-filtered tag pattern is matched against (empty when the tag is unset)."""
    return lambda member: member.tags.get(key, "")


async def cmd_members(session: Session, seq: int, body: dict) -> None:
    members = [member_record(x) for x in session.agent.members()]
    session.send(seq, body={"Members": members}, has_body=True)


async def cmd_members_filtered(session: Session, seq: int, body: dict) -> None:
    # Compiled up front as serf does, so a bad pattern fails before any matching.
    checks: list[tuple[Any, Callable[[Member], str]]] = [
        (anchored(expr), _tag_value(key)) for key, expr in body["Tags"].items()]
    status_re, name_re = anchored(body["Status"]), anchored(body["Name"])
    if body["Status"]:
        checks.append((status_re, lambda m: m.status.label()))
    if body["Name"]:
        checks.append((name_re, lambda m: m.name))
    # RE2 is linear in the text, but a pattern near RE2's size limit still costs up to
    # ~0.1 s on a 512-byte tag value: yield to the loop between matches and give up on
    # a request that takes longer than MEMBER_FILTER_BUDGET.
    started = paused = time.monotonic()
    out = []
    for member in session.agent.members():
        for pattern, text in checks:
            matched = pattern.match(text(member))
            now = time.monotonic()
            if now - started > MEMBER_FILTER_BUDGET:
                raise CloseConnection(f"member filters took over {MEMBER_FILTER_BUDGET:g}s")
            if now - paused > FILTER_SLICE:
                await asyncio.sleep(0)
                paused = time.monotonic()
            if not matched:
                break
        else:
            out.append(member_record(member))
    session.send(seq, body={"Members": out}, has_body=True)


async def cmd_join(session: Session, seq: int, body: dict) -> None:
    num, error = await session.agent.join(body["Existing"], body["Replay"])
    session.send(seq, error or "", {"Num": num}, has_body=True)


async def cmd_leave(session: Session, seq: int, body: dict) -> None:
    error = await session.agent.leave()
    session.send(seq, error or "")
    await session.writer.drain()
    session.agent.stop(1 if error else 0)


async def cmd_force_leave(session: Session, seq: int, body: dict) -> None:
    error = await session.agent.force_leave(body["Node"], body["Prune"])
    session.send(seq, error or "")


async def cmd_event(session: Session, seq: int, body: dict) -> None:
    try:
        session.agent.user_event(body["Name"], body["Payload"], body["Coalesce"])
    except SerfError as exc:
        session.send(seq, str(exc))
        return
    session.send(seq)


async def cmd_tags(session: Session, seq: int, body: dict) -> None:
    tags = session.agent.local_tags()
    tags.update(body["Tags"])
    for key in body["DeleteTags"]:
        tags.pop(key, None)
    try:
        error = await session.agent.set_tags(tags)
    except SerfError as exc:
        error = str(exc)
    session.send(seq, error or "")


async def cmd_stats(session: Session, seq: int, body: dict) -> None:
    session.send(seq, body=session.agent.stats(), has_body=True)


async def cmd_get_coordinate(session: Session, seq: int, body: dict) -> None:
    coord = session.agent.coordinate(body["Node"])
    if coord is None:
        empty = {"Adjustment": 0.0, "Error": 0.0, "Height": 0.0, "Vec": None}
        session.send(seq, body={"Coord": empty, "Ok": False}, has_body=True)
        return
    session.send(seq, body={"Coord": coord, "Ok": True}, has_body=True)


async def cmd_install_key(session: Session, seq: int, body: dict) -> None:
    await _key_command(session, seq, internal_queries.INSTALL_KEY, body["Key"])


async def cmd_use_key(session: Session, seq: int, body: dict) -> None:
    await _key_command(session, seq, internal_queries.USE_KEY, body["Key"])


async def cmd_remove_key(session: Session, seq: int, body: dict) -> None:
    await _key_command(session, seq, internal_queries.REMOVE_KEY, body["Key"])


async def cmd_list_keys(session: Session, seq: int, body: dict) -> None:
    await _key_command(session, seq, internal_queries.LIST_KEYS, "")


async def _key_command(session: Session, seq: int, name: str, text: str) -> None:
    try:
        key = security.parse_key_b64(text) if name != internal_queries.LIST_KEYS else b""
    except ValueError as exc:
        empty: dict[str, Any] = {"Keys": None, "Messages": {}, "NumErr": 0, "NumNodes": 0,
                                 "NumResp": 0}
        session.send(seq, str(exc), empty, has_body=True)
        return
    op = await session.agent.key_operation(name, key)
    reply = {"Keys": op.keys if name == internal_queries.LIST_KEYS else None,
             "Messages": op.messages, "NumErr": op.num_err, "NumNodes": op.num_nodes,
             "NumResp": op.num_resp}
    session.send(seq, op.error(), reply, has_body=True)


COMMANDS = {
    "members": cmd_members,
    "members-filtered": cmd_members_filtered,
    "join": cmd_join,
    "leave": cmd_leave,
    "force-leave": cmd_force_leave,
    "event": cmd_event,
    "tags": cmd_tags,
    "stats": cmd_stats,
    "get-coordinate": cmd_get_coordinate,
    "install-key": cmd_install_key,
    "use-key": cmd_use_key,
    "remove-key": cmd_remove_key,
    "list-keys": cmd_list_keys,
}
