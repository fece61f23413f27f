"""Regenerate the seed corpus: one valid encoded message of each type per target.

    .venv/bin/python -m tests.fuzz.make_corpus

Seeds are named ``seed-*`` and written deterministically; other files in the corpus
directories (``finding-*`` regressions, inputs merged from long runs) are left alone.
"""

from __future__ import annotations

from pathlib import Path

from pyserf.memberlist import lzw
from tests.fuzz import targets, wire
from tests.fuzz.harness import OWN_NAME, PEER_NAME, PORT

CORPUS = Path(__file__).resolve().parent / "corpus"
OWN_IP = bytes([10, 0, 0, 1])
PEER_IP = bytes([10, 0, 0, 2])
OTHER_IP = bytes([10, 0, 0, 3])


def serf_messages() -> dict[str, bytes]:
    # Responses aimed at the query the fuzz harness has running (its ID is seeded).
    running = targets.harness().query
    lt, qid = running.ltime, running.id
    conflict = wire.msg(wire.S_CONFLICT_RESPONSE, {
        "Addr": OTHER_IP, "Port": PORT, "Name": OWN_NAME, "Status": 1,
        "Tags": {"role": "x"}, "ProtocolMin": 2, "ProtocolMax": 5, "ProtocolCur": 5,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 5})
    key_response = wire.msg(wire.S_KEY_RESPONSE, {
        "Result": True, "Message": "", "Keys": ["AAECAwQFBgcICQoLDA0ODw=="],
        "PrimaryKey": "AAECAwQFBgcICQoLDA0ODw=="})
    key_request = wire.msg(wire.S_KEY_REQUEST, {"Key": bytes(16)})
    return {
        "leave": wire.msg(wire.S_LEAVE, {"LTime": 5, "Node": PEER_NAME, "Prune": False}),
        "leave-self": wire.msg(wire.S_LEAVE, {"LTime": 9, "Node": OWN_NAME, "Prune": True}),
        "join": wire.msg(wire.S_JOIN, {"LTime": 6, "Node": PEER_NAME}),
        "user-event": wire.msg(wire.S_USER_EVENT, {"LTime": 3, "Name": "deploy",
                                                   "Payload": b"v2", "CC": True}),
        "query": wire.query(2, 42, PEER_IP, PORT, "q", b"p", flags=1, relay_factor=1),
        "query-node-filter": wire.query(3, 43, PEER_IP, PORT, filters=[
            wire.node_filter([OWN_NAME, PEER_NAME])]),
        "query-tag-filter": wire.query(4, 44, PEER_IP, PORT, filters=[
            wire.tag_filter("role", "^a+!$")]),
        "query-conflict": wire.query(5, 45, PEER_IP, PORT, "_serf_conflict", PEER_NAME.encode()),
        "query-install-key": wire.query(6, 46, PEER_IP, PORT, "_serf_install-key", key_request),
        "query-list-keys": wire.query(7, 47, PEER_IP, PORT, "_serf_list-keys"),
        "query-response": wire.query_response(lt, qid, PEER_NAME, b"answer"),
        "query-ack": wire.query_response(lt, qid, PEER_NAME, None, flags=1),
        "query-response-conflict": wire.query_response(lt, qid, PEER_NAME, conflict),
        "query-response-keys": wire.query_response(lt, qid, PEER_NAME, key_response),
        "relay": wire.relay(PEER_IP, PORT, PEER_NAME, wire.query_response(lt, qid, "x", b"r")),
        "push-pull": serf_state(),
    }


def serf_state() -> bytes:
    return wire.serf_push_pull(
        ltime=7, status={PEER_NAME: 3, OWN_NAME: 2, "gone": 4}, left=["gone"], event_ltime=4,
        events=[None, {"LTime": 2, "Events": [{"Name": "deploy", "Payload": b"x"}]}],
        query_ltime=3)


def packets() -> dict[str, bytes]:
    ping = wire.msg(wire.PING, {"SeqNo": 1, "Node": OWN_NAME, "SourceAddr": PEER_IP,
                                "SourcePort": PORT, "SourceNode": PEER_NAME})
    alive = wire.alive("third", OTHER_IP, PORT, 1, wire.tags_meta({"role": "web"}))
    out = {
        "ping": ping,
        "indirect-ping": wire.msg(wire.INDIRECT_PING, {
            "SeqNo": 2, "Target": PEER_IP, "Port": PORT, "Node": PEER_NAME, "Nack": True,
            "SourceAddr": OTHER_IP, "SourcePort": PORT, "SourceNode": "third"}),
        "ack": wire.msg(wire.ACK, {"SeqNo": 1, "Payload": b""}),
        "nack": wire.msg(wire.NACK, {"SeqNo": 1}),
        "suspect": wire.msg(wire.SUSPECT, {"Incarnation": 1, "Node": PEER_NAME, "From": "x"}),
        "suspect-self": wire.msg(wire.SUSPECT, {"Incarnation": 1, "Node": OWN_NAME,
                                                "From": PEER_NAME}),
        "alive": alive,
        "alive-self": wire.alive(OWN_NAME, OWN_IP, PORT, 7),
        "dead": wire.msg(wire.DEAD, {"Incarnation": 1, "Node": PEER_NAME, "From": PEER_NAME}),
        "compound": wire.compound([ping, alive, wire.compound([ping])]),
        "compress": wire.compress(wire.compound([ping, alive])),
        "crc": wire.with_crc(ping),
    }
    for name, data in serf_messages().items():
        if name != "push-pull":
            out[f"user-{name}"] = wire.user(data)
    return out


def streams() -> dict[str, bytes]:
    nodes = [wire.node_state(PEER_NAME, PEER_IP, PORT, 3, 0, wire.tags_meta({"role": "db"})),
             wire.node_state("third", OTHER_IP, PORT, 2, 1),
             wire.node_state("gone", OTHER_IP, 7947, 5, 3)]
    push = wire.push_pull(nodes, serf_state(), join=True)
    return {
        "push-pull": push,
        "push-pull-empty": wire.push_pull([], b""),
        "push-pull-compressed": wire.compress(push),
        "ping": wire.msg(wire.PING, {"SeqNo": 9, "Node": OWN_NAME}),
        "user": bytes((wire.USER,)) + wire.pack({"UserMsgLen": 5}) + wire.msg(
            wire.S_JOIN, {"LTime": 1, "Node": "u"})[:5],
        "err": wire.msg(wire.ERR, {"Error": "nope"}),
    }


def corpus() -> dict[str, dict[str, bytes]]:
    s = streams()
    replies = {k: v for k, v in s.items() if k.startswith("push-pull") or k == "err"}
    lzw_inputs = {k: lzw.compress(v * 3) for k, v in list(packets().items())[:6]}
    return {
        "packet": packets(),
        "stream": s,
        "stream_reply": replies,
        "serf_msg": serf_messages(),
        "serf_state": {"join": b"\x01" + serf_state(), "nojoin": b"\x00" + serf_state()},
        "lzw": lzw_inputs,
    }


def main() -> None:
    total = 0
    for target, seeds in corpus().items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
            total += len(data)
    print(f"wrote {sum(len(s) for s in corpus().values())} seeds, {total} bytes")


if __name__ == "__main__":
    main()
