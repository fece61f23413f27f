"""Serf's internal queries (serf/internal_queries.py) between simulated nodes.

_serf_ping is answered by acks alone, _serf_conflict with the responder's view of the contested
name, and the key queries change every node's keyring and report per-node results the way
serf's KeyManager gathers them (serf/internal_query.go, serf/keymanager.go). Texts are the ones
the serf 0.9.4 binary carries.
"""

from __future__ import annotations

import base64
import logging
import os

import msgpack
import pytest

from pyserf.memberlist import security
from pyserf.serf import internal_queries as iq
from pyserf.serf import messages as m
from pyserf.serf.config import SerfError
from pyserf.serf.events import KeyringChanged, QueryReceived
from pyserf.serf.members import MemberStatus
from pyserf.serf.messages import SerfMsg
from pyserf.sim.network import SimNetwork, SimNode

TIMEOUT = 2.0
K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))


def cluster(n: int = 3, keys: list[bytes] | None = None, seed: int = 31,
            **serf_overrides: object) -> SimNetwork:
    net = SimNetwork(seed=seed)
    nodes = [net.add_node(f"n{i}", f"10.2.0.{i + 1}", tags={"role": f"r{i}"},
                          keyring=security.Keyring(keys) if keys else None, **serf_overrides)
             for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(net.now + 3.0)
    assert all(v == {x.name: "alive" for x in nodes} for v in net.views().values())
    return net


def run_query(net: SimNetwork, node: SimNode, name: str, payload: bytes,
              **params: object) -> tuple[list[str], dict[str, bytes]]:
    """One query to its deadline: (acks, responses by node)."""
    acks: list[str] = []
    responses: dict[str, bytes] = {}
    done: list[float] = []
    net.on_query(node, node.serf.query(name, payload, net.now, timeout=TIMEOUT, **params),
                 on_ack=lambda n, when: acks.append(n),
                 on_response=lambda n, data, when: responses.__setitem__(n, data),
                 on_done=lambda when: done.append(when))
    net.run_until(net.now + TIMEOUT + 0.1)
    assert len(done) == 1
    return acks, responses


def key_op(net: SimNetwork, node: SimNode, name: str, key: bytes) -> iq.KeyOperation:
    """A cluster-wide key query gathered as the agent gathers it for ``serf keys``."""
    op = iq.KeyOperation(node.serf.memberlist.num_alive())
    _, responses = run_query(net, node, name, iq.key_request(key))
    for responder, payload in sorted(responses.items()):
        op.add(responder, payload)
    return op


def keyrings(net: SimNetwork) -> dict[str, list[bytes]]:
    return {x.name: list(x.serf.memberlist.config.keyring.keys) for x in net.nodes.values()}


def keyring_saves(net: SimNetwork) -> list[str]:
    """Names of the nodes whose machine reported a changed keyring (the agent then rewrites
    its keyring file), once per change."""
    return [node.name for node in net.nodes.values() for event in node.events
            if isinstance(event, KeyringChanged)]


def user_queries(node: SimNode) -> list[str]:
    return [e.name for e in node.events if isinstance(e, QueryReceived)]


# -- ping and conflict -----------------------------------------------------------------------


def test_ping_is_answered_by_acks_only_and_reaches_no_handler():
    net = cluster()
    acks, responses = run_query(net, net.by_name["n0"], iq.PING, b"", request_ack=True)
    assert sorted(acks) == ["n0", "n1", "n2"]
    assert responses == {}
    assert all(user_queries(x) == [] for x in net.nodes.values())


def test_conflict_query_reports_how_others_see_the_name():
    net = cluster()
    _, responses = run_query(net, net.by_name["n0"], iq.CONFLICT, b"n2")
    # n2 never answers about itself; n0 and n1 answer with their record of n2.
    assert sorted(responses) == ["n0", "n1"]
    for payload in responses.values():
        assert payload[0] == SerfMsg.CONFLICT_RESPONSE
        # serf's Member, in serf's old msgpack format (strings and bytes both raw).
        body = msgpack.unpackb(payload[1:], raw=True)
        assert body == {b"Addr": bytes([10, 2, 0, 3]), b"DelegateCur": 5, b"DelegateMax": 5,
                        b"DelegateMin": 2, b"Name": b"n2", b"Port": 7946, b"ProtocolCur": 2,
                        b"ProtocolMax": 5, b"ProtocolMin": 1,
                        b"Status": int(MemberStatus.ALIVE), b"Tags": {b"role": b"r2"}}
        record = m.ConflictResponse.decode(payload)
        assert (record.name, record.addr, record.port) == ("n2", bytes([10, 2, 0, 3]), 7946)
    # A name nobody knows (and one that is not UTF-8) gets a nil member, not silence.
    _, responses = run_query(net, net.by_name["n0"], iq.CONFLICT, b"\xffghost")
    assert sorted(responses) == ["n0", "n1", "n2"]
    assert all(m.ConflictResponse.decode(p) is None for p in responses.values())


def test_unknown_internal_query_is_logged_and_never_delivered(caplog):
    net = cluster()
    with caplog.at_level(logging.WARNING, logger="pyserf.serf"):
        _, responses = run_query(net, net.by_name["n0"], "_serf_bogus", b"x")
    assert responses == {}
    assert all(user_queries(x) == [] for x in net.nodes.values())
    warned = [r.getMessage() for r in caplog.records if "Unhandled internal" in r.getMessage()]
    assert warned == ["serf: Unhandled internal query '_serf_bogus'"] * 3


def test_a_failed_answer_is_logged_as_serf_logs_it(caplog, monkeypatch):
    # serf: "Failed to respond to conflict|key query: " + Query.Respond's wrapped error.
    net = cluster(keys=[K1])
    n1 = net.by_name["n1"].serf

    def refuse(query, payload, now):  # noqa: ANN001 - mirrors Serf.respond
        raise SerfError("response already sent")

    monkeypatch.setattr(n1, "respond", refuse)
    with caplog.at_level(logging.ERROR, logger="pyserf.serf"):
        _, conflict = run_query(net, net.by_name["n0"], iq.CONFLICT, b"n2")
        _, keys = run_query(net, net.by_name["n0"], iq.LIST_KEYS, iq.key_request(b""))
    assert sorted(conflict) == ["n0"] and sorted(keys) == ["n0", "n2"]
    assert [r.getMessage() for r in caplog.records] == [
        f"serf: Failed to respond to {kind} query: failed to respond to key query: response "
        "already sent" for kind in ("conflict", "key")]


# -- key queries ---------------------------------------------------------------------------------


def test_install_use_remove_rotate_every_keyring():
    net = cluster(keys=[K1])
    n0 = net.by_name["n0"]
    assert keyring_saves(net) == []
    op = key_op(net, n0, iq.INSTALL_KEY, K2)
    assert (op.num_nodes, op.num_resp, op.num_err, op.messages, op.error()) == (3, 3, 0, {}, "")
    assert keyrings(net) == {n: [K1, K2] for n in ("n0", "n1", "n2")}
    op = key_op(net, n0, iq.LIST_KEYS, b"")
    b64 = [base64.b64encode(k).decode() for k in (K1, K2)]
    assert op.keys == {b64[0]: 3, b64[1]: 3} and op.error() == ""
    assert key_op(net, n0, iq.USE_KEY, K2).error() == ""
    assert keyrings(net) == {n: [K2, K1] for n in ("n0", "n1", "n2")}
    assert key_op(net, n0, iq.REMOVE_KEY, K1).error() == ""
    assert keyrings(net) == {n: [K2] for n in ("n0", "n1", "n2")}
    # Each change saved everywhere.
    assert sorted(keyring_saves(net)) == sorted(["n0", "n1", "n2"] * 3)
    # The cluster still talks, on the new key only.
    acks, _ = run_query(net, n0, iq.PING, b"", request_ack=True)
    assert sorted(acks) == ["n0", "n1", "n2"]


@pytest.mark.parametrize(("name", "key", "message"), [
    (iq.REMOVE_KEY, K1, "Removing the primary key is not allowed"),
    (iq.USE_KEY, K3, "Requested key is not in the keyring"),
    (iq.INSTALL_KEY, b"short", "key size must be 16, 24 or 32 bytes"),
], ids=["remove-primary", "use-missing", "install-bad-size"])
def test_refused_key_changes_report_serfs_message_from_every_node(name, key, message):
    net = cluster(keys=[K1, K2])
    assert keyring_saves(net) == []
    op = key_op(net, net.by_name["n1"], name, key)
    assert op.messages == {n: message for n in ("n0", "n1", "n2")}
    assert (op.num_err, op.error()) == (3, "3/3 nodes reported failure")
    assert keyrings(net) == {n: [K1, K2] for n in ("n0", "n1", "n2")}
    assert keyring_saves(net) == []


def test_removing_a_key_that_is_not_installed_is_a_no_op_success():
    net = cluster(keys=[K1, K2])
    assert key_op(net, net.by_name["n0"], iq.REMOVE_KEY, K3).error() == ""
    assert keyrings(net) == {n: [K1, K2] for n in ("n0", "n1", "n2")}


@pytest.mark.parametrize("payload", [b"", b"\x00", bytes([SerfMsg.KEY_REQUEST]) + b"\xc1",
                                     bytes([SerfMsg.KEY_REQUEST]) + msgpack.packb([1, 2]),
                                     bytes([SerfMsg.USER_EVENT]) + msgpack.packb({"Key": K2})],
                         ids=["empty", "type-0", "bad-msgpack", "not-a-map", "wrong-type"])
def test_malformed_key_requests_fail_cleanly_and_change_nothing(payload):
    net = cluster(keys=[K1])
    _, responses = run_query(net, net.by_name["n0"], iq.INSTALL_KEY, payload)
    assert sorted(responses) == ["n0", "n1", "n2"]
    for raw in responses.values():
        response = m.KeyResponse.decode(raw)
        assert response.result is False and response.keys == []
    assert keyrings(net) == {n: [K1] for n in ("n0", "n1", "n2")}
    assert all(x.serf.drops.total() == 0 for x in net.nodes.values())


def _wrapped_size(query: QueryReceived, node: str, keys: list[str], message: str,
                  primary: str) -> int:
    """Bytes of the query-response message carrying this key list (what serf limits)."""
    body = m.encode(SerfMsg.KEY_RESPONSE, {"Keys": keys, "Message": message,
                                           "PrimaryKey": primary, "Result": True})
    return len(m.QueryResponse(query.ltime, query.id, node, 0, body).encode())


def test_a_long_key_list_is_truncated_to_fit_the_response_limit(monkeypatch):
    limit = 1024
    keys = [bytes([i]) * 32 for i in range(1, 22)]  # 21 keys of 44 base64 characters
    net = cluster(keys=keys, query_response_size_limit=limit)
    n0 = net.by_name["n0"]
    seen: list[QueryReceived] = []
    original = iq.handle

    def spy(serf, query, now):  # noqa: ANN001 - mirrors iq.handle
        seen.append(query)
        original(serf, query, now)

    monkeypatch.setattr(iq, "handle", spy)
    _, responses = run_query(net, n0, iq.LIST_KEYS, iq.key_request(b""))
    b64 = [base64.b64encode(k).decode() for k in keys]
    query = seen[0]
    # serf: the most keys (and the note saying how many) whose wrapped response fits.
    shown = max(i for i in range(len(b64) + 1) if _wrapped_size(
        query, "n1", b64[:i], f"truncated key list response, showing first {i} of "
        f"{len(b64)} keys", b64[0]) <= limit)
    assert 0 < shown < len(b64)
    assert sorted(responses) == ["n0", "n1", "n2"]
    response = m.KeyResponse.decode(responses["n1"])
    assert response.keys == b64[:shown] and response.result is True
    assert response.message == (f"truncated key list response, showing first {shown} of "
                                f"{len(b64)} keys")


def test_a_key_list_that_fits_with_no_key_gets_no_answer(caplog):
    # serf tries the whole list, then limit // 25 keys down to one; when even one key's wrapped
    # response is over the limit it logs the failure and answers nothing (acks still come).
    # One key's wrapped answer is 225-231 bytes (44-character key and primary, the note, the
    # wrapper; the ID and clock vary its size); with no key it would be 178-184, and serf never
    # sends that: 200 leaves only the empty list fitting.
    limit = 200
    net = cluster(keys=[K1, K2], query_response_size_limit=limit)
    with caplog.at_level(logging.WARNING, logger="pyserf.serf"):
        acks, responses = run_query(net, net.by_name["n0"], iq.LIST_KEYS, iq.key_request(b""),
                                    request_ack=True)
    assert responses == {}
    assert sorted(acks) == ["n0", "n1", "n2"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["serf: Failed to truncate response so that it fits into message"] * 3


def test_key_queries_without_encryption_say_so():
    net = cluster()
    op = key_op(net, net.by_name["n0"], iq.INSTALL_KEY, K1)
    assert op.messages == {n: "No keyring to modify (encryption not enabled)"
                           for n in ("n0", "n1", "n2")}
    op = key_op(net, net.by_name["n0"], iq.LIST_KEYS, b"")
    assert op.messages == {n: "Keyring is empty (encryption not enabled)"
                           for n in ("n0", "n1", "n2")}
    assert op.error() == "3/3 nodes reported failure"


# -- gathering answers (KeyOperation) -------------------------------------------------------------


def _key_response(result: bool, message: str = "", keys: list[str] | None = None) -> bytes:
    return m.encode(SerfMsg.KEY_RESPONSE, {"Keys": keys, "Message": message, "PrimaryKey": "",
                                           "Result": result})


def test_key_operation_counts_answers_like_serfs_key_manager():
    op = iq.KeyOperation(4)
    assert op.add("a", _key_response(True, keys=["k1", "k2"])) is False
    assert op.add("b", _key_response(True, "a note", keys=["k1"])) is False
    assert op.add("c", _key_response(False, "refused")) is False
    assert op.error() == "1/4 nodes reported failure"
    assert op.add("d", b"") is True  # the last of num_nodes answers completes it
    assert op.keys == {"k1": 2, "k2": 1}
    assert op.messages["b"] == "a note" and op.messages["c"] == "refused"
    assert op.messages["d"].startswith("Invalid key query response type")
    assert (op.num_resp, op.num_err, op.error()) == (4, 2, "2/4 nodes reported failure")
    short = iq.KeyOperation(3)
    short.add("a", _key_response(True))
    assert short.error() == "1/3 nodes reported success"
    broken = iq.KeyOperation(1)
    assert broken.add("a", bytes([SerfMsg.KEY_RESPONSE]) + b"\xc1") is True
    assert broken.messages["a"].startswith("Failed to decode key query response")
    assert broken.error() == "1/1 nodes reported failure"


def test_key_request_carries_the_raw_key():
    key = os.urandom(16)
    raw = iq.key_request(key)
    assert raw[0] == SerfMsg.KEY_REQUEST
    assert msgpack.unpackb(raw[1:], raw=True) == {b"Key": key}
    assert m.KeyRequest.decode(raw).key == key


def test_a_key_operation_reports_every_answer_as_soon_as_all_have_answered():
    net = cluster(keys=[K1])
    n0 = net.by_name["n0"]
    start = net.now
    done: list = []
    net.when_done(n0, n0.serf.key_operation(iq.INSTALL_KEY, K2, net.now),
                  lambda op, when: done.append((op, when)))
    net.run_until(net.now + TIMEOUT + 1.0)
    ((op, when),) = done
    assert (op.num_nodes, op.num_resp, op.num_err, op.error()) == (3, 3, 0, "")
    assert keyrings(net) == {n: [K1, K2] for n in ("n0", "n1", "n2")}
    # Reported when the last member answered, well before the query's timeout.
    assert when - start < 1.0
