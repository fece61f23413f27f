"""memberlist paths the rest of the unit tier left unexercised (found by branch coverage), each
checked for its outcome: joins that report once, leaves and updates with nobody to tell,
shutdown, encryption mismatches on streams, the per-datagram message and nesting budgets, the
push-pull cap, late stream replies, the TCP fallback ping, Lifeguard's awareness deltas, and
the stream framer's and drop log's bounds.
"""

from __future__ import annotations

import logging

import msgpack
import pytest

from pyserf.memberlist import codec, drops, lzw, security
from pyserf.memberlist.codec import Ack, MsgType, NodeStateKind, Ping
from pyserf.memberlist.dispatch import MAX_NESTING, MAX_PACKET_MESSAGES
from pyserf.memberlist.profiles import LAN, Timing
from pyserf.memberlist.pushpull import MAX_PUSH_PULL_REQUESTS
from pyserf.memberlist.types import JoinOutcome, OpenStream, SendPacket
from pyserf.serf import messages as m
from pyserf.serf.events import UserEventReceived
from pyserf.sim.network import SimNetwork, udp_messages

KEY1 = bytes(range(16))
KEY2 = bytes(range(16, 32))
SENDER = ("10.0.0.9", 7946)


def cluster(n: int, seed: int = 1, timing: Timing = LAN, **kwargs) -> tuple[SimNetwork, list]:
    net = SimNetwork(seed=seed, **kwargs)
    nodes = [net.add_node(f"n{i}", f"10.0.0.{i + 1}", timing=timing) for i in range(n)]
    for node in nodes[1:]:
        net.join(node, nodes[0])
    net.run_until(3.0)
    assert all(set(view.values()) == {"alive"} and len(view) == n
               for view in net.views().values())
    return net, nodes


def packets(actions: list) -> list[SendPacket]:
    return [a for a in actions if isinstance(a, SendPacket)]


# -- joins, leaves, updates ----------------------------------------------------------------


def test_join_with_no_targets_reports_at_once():
    net = SimNetwork(seed=1)
    a = net.add_node("a", "10.0.0.1")
    out: list[tuple[JoinOutcome, float]] = []
    a.serf.memberlist.join([], net.now, lambda outcome, when: out.append((outcome, when)))
    assert out == [(JoinOutcome(0, []), net.now)]


def test_join_reaching_one_of_two_targets_reports_once_without_errors():
    net, (a, b) = cluster(2)
    c = net.add_node("c", "10.0.0.3")
    out: list[JoinOutcome] = []
    # One live target and one address nobody listens on: memberlist reports success (and no
    # errors) once both have finished, exactly once.
    c.serf.memberlist.join([("a", a.addr), ("", ("10.0.0.99", 7946))], net.now,
                           lambda outcome, when: out.append(outcome))
    net.run_until(net.now + 2.0)
    assert out == [JoinOutcome(1, [])]
    assert net.views()["c"] == {"n0": "alive", "n1": "alive", "c": "alive"}


def test_leave_and_update_with_nobody_to_tell_finish_at_once():
    net = SimNetwork(seed=2)
    a = net.add_node("a", "10.0.0.1")
    ml = a.serf.memberlist
    done: list[tuple[str | None, float]] = []
    ml.update_node(net.now, 5.0, lambda err, when: done.append((err, when)))
    assert done == [(None, net.now)]  # nobody alive: no broadcast to wait for
    ml.leave(net.now, 5.0, lambda err, when: done.append((err, when)))
    assert done[1:] == [(None, net.now)]
    assert ml.local_node.state == NodeStateKind.LEFT


def test_a_second_leave_returns_at_once_and_the_first_completes_by_gossip():
    net, (a, b) = cluster(2)
    ml = a.serf.memberlist
    done: list[tuple[str, str | None, float]] = []
    start = net.now
    ml.leave(start, 5.0, lambda err, when: done.append(("first", err, when)))
    ml.leave(start, 5.0, lambda err, when: done.append(("second", err, when)))
    assert done == [("second", None, start)]
    net.run_until(start + 6.0)
    assert [(tag, err) for tag, err, _ in done] == [("second", None), ("first", None)]
    assert done[1][2] < start + 2.0  # by retransmit limit, not at the 5 s timeout
    # memberlist's own view (serf, with no leave intent sent here, calls it failed).
    assert b.serf.memberlist.node_map["n0"].state == NodeStateKind.LEFT


def test_update_with_a_peer_finishes_when_the_broadcast_has_gone_out_not_at_the_timeout():
    net, (a, b) = cluster(2)
    done: list[tuple[str | None, float]] = []
    start = net.now
    a.serf.config.tags = {"role": "db"}
    a.serf.memberlist.update_node(start, 5.0, lambda err, when: done.append((err, when)))
    net.run_until(start + 6.0)
    assert len(done) == 1 and done[0][0] is None
    # Finished when its retransmit limit was reached (a few gossip rounds), well before 5 s.
    assert start < done[0][1] < start + 2.0
    assert {mb.name: mb.tags for mb in b.serf.member_list()}["n0"] == {"role": "db"}


def test_shutdown_cancels_suspicions_and_pending_probes():
    net, (a, b, c) = cluster(3)
    net.crash(c)
    ml = a.serf.memberlist
    for _ in range(200):  # 20 s at most: a suspects c within a probe round or two
        if "n2" in ml._suspicions:
            break
        net.run_until(net.now + 0.1)
    assert ml.node_map["n2"].state == NodeStateKind.SUSPECT
    ml.shutdown()
    assert not ml._suspicions and not ml._ack_handlers
    # Far past the longest suspicion timeout: a stopped machine marks nobody failed.
    net.run_until(net.now + 60.0)
    assert ml.node_map["n2"].state == NodeStateKind.SUSPECT
    assert not net.events("member-failed", "n2", observer="n0")


# -- encryption ------------------------------------------------------------------------------


def test_packet_under_another_key_is_dropped_and_counted_one_under_ours_is_answered():
    net = SimNetwork(seed=3)
    a = net.add_node("a", "10.0.0.1", keyring=security.Keyring([KEY1]))
    ml = a.serf.memberlist
    ping = Ping(7, "a").encode()
    ml.receive_packet(security.encrypt(security.Keyring([KEY2]), ping, b""), SENDER, net.now)
    assert ml.drops.counts["packet (decrypt)"] == 1
    assert packets(a.serf.actions()) == []
    ml.receive_packet(security.encrypt(security.Keyring([KEY1]), ping, b""), SENDER, net.now)
    (reply,) = packets(a.serf.actions())
    assert reply.addr == SENDER
    ack = udp_messages(reply.data, security.Keyring([KEY1]))[0]  # gossip may ride along
    assert ack[0] == MsgType.ACK and Ack.decode(codec.unpack_body(ack[1:])).seq_no == 7


def _ring(key: bytes | None) -> security.Keyring | None:
    return security.Keyring([key]) if key else None


@pytest.mark.parametrize(("joiner_key", "target_key", "error"), [
    # The plain target answers with a plain err message, which the encrypting joiner refuses.
    (KEY1, None, "Encryption is configured but remote state is not encrypted"),
    # The target's err reply is itself encrypted: the plain joiner cannot read it.
    (None, KEY1, "Remote state is encrypted and encryption is not configured"),
    # Both encrypted under different keys: each side fails to decrypt the other.
    (KEY2, KEY1, "No installed keys could decrypt the message"),
])
def test_join_across_an_encryption_mismatch_fails_with_memberlists_reason(joiner_key,
                                                                         target_key, error):
    net = SimNetwork(seed=4)
    a = net.add_node("a", "10.0.0.1", keyring=_ring(target_key))
    b = net.add_node("b", "10.0.0.2", keyring=_ring(joiner_key))
    out = net.join(b, a)
    net.run_until(1.0)
    assert out == [JoinOutcome(0, [f"Failed to join 10.0.0.1: {error}"])]
    assert net.views() == {"a": {"a": "alive"}, "b": {"b": "alive"}}


def test_plain_stream_to_an_encrypted_node_is_refused_with_memberlists_text():
    net = SimNetwork(seed=4, compression=False)
    a = net.add_node("a", "10.0.0.1", keyring=security.Keyring([KEY1]))
    ml = a.serf.memberlist
    reply = ml.handle_stream(Ping(1, "a").encode(), SENDER, net.now)
    kind, body = ml._open_stream_message(reply)  # our own reply, under our own key
    assert kind == MsgType.ERR
    assert codec.unpack_body(body) == {
        b"Error": b"Encryption is configured but remote state is not encrypted"}
    assert ml.drops.counts["stream"] == 1


# -- the per-datagram budgets ----------------------------------------------------------------


def _wrapped(msg: bytes, layers: int) -> bytes:
    for _ in range(layers):
        msg = codec.compress(msg)
    return msg


def test_nesting_deeper_than_the_limit_is_dropped_at_the_limit_it_is_answered():
    net = SimNetwork(seed=5)
    a = net.add_node("a", "10.0.0.1")
    ml = a.serf.memberlist
    ml.receive_packet(_wrapped(Ping(1, "a").encode(), MAX_NESTING), SENDER, net.now)
    assert len(packets(a.serf.actions())) == 1
    ml.receive_packet(_wrapped(Ping(2, "a").encode(), MAX_NESTING + 1), SENDER, net.now)
    assert packets(a.serf.actions()) == []
    assert ml.drops.counts["packet"] == 1


def test_a_datagram_stops_at_its_message_budget():
    net = SimNetwork(seed=6, compression=False)
    a = net.add_node("a", "10.0.0.1")
    ml = a.serf.memberlist
    ping = Ping(1, "").encode()
    inner = codec.make_compound([ping] * 255)
    ml.receive_packet(codec.make_compound([inner] * 4), SENDER, net.now)
    # Budget: the outer compound, 4 inner ones and their pings count one each. The outer and
    # three full inner compounds (3 * 256) leave 1024 - 1 - 768 - 1 = 254 pings of the last;
    # the next one trips the budget and the rest of the datagram is dropped.
    answered = 3 * 255 + (MAX_PACKET_MESSAGES - 1 - 3 * 256 - 1)
    assert answered == 1019
    assert len(packets(a.serf.actions())) == answered
    assert ml.drops.counts["packet"] == 1
    with pytest.raises(ValueError, match="at most 255 parts"):
        codec.make_compound([ping] * 256)


# -- streams -------------------------------------------------------------------------------


def test_a_stopped_node_answers_no_stream():
    net, (a, b) = cluster(2)
    ml = a.serf.memberlist
    request = ml._stream_payload(Ping(1, "n0").encode())
    assert ml.handle_stream(request, SENDER, net.now) is not None
    ml.shutdown()
    assert ml.handle_stream(request, SENDER, net.now) is None


def test_push_pulls_past_the_cap_are_refused_until_ours_finish(caplog):
    net, (a, b) = cluster(2)
    ml = a.serf.memberlist
    # Our own outstanding push-pulls count against the cap (memberlist's pending counter).
    for i in range(MAX_PUSH_PULL_REQUESTS):
        ml.join([("", (f"10.0.1.{i + 1}", 7946))], net.now, lambda o, t: None)
    opened = [x for x in ml.take_actions() if isinstance(x, OpenStream)]
    assert len(opened) == MAX_PUSH_PULL_REQUESTS
    request = b.serf.memberlist._stream_payload(b.serf.memberlist._local_state(False, net.now))
    with caplog.at_level(logging.ERROR, "pyserf.memberlist"):
        assert ml.handle_stream(request, b.addr, net.now) is None
    assert "Too many pending push/pull requests" in caplog.text
    ml.stream_failed(opened[0].stream_id, "connect: connection refused", net.now)
    assert ml.handle_stream(request, b.addr, net.now) is not None


def test_a_push_pull_reply_after_its_timeout_is_ignored():
    net = SimNetwork(seed=7)
    a = net.add_node("a", "10.0.0.1")
    b = net.add_node("b", "10.0.0.2")
    ml = b.serf.memberlist
    out: list[JoinOutcome] = []
    ml.join([("a", a.addr)], net.now, lambda outcome, when: out.append(outcome))
    (stream,) = [x for x in ml.take_actions() if isinstance(x, OpenStream)]
    reply = a.serf.memberlist.handle_stream(stream.data, b.addr, net.now)
    ml.stream_failed(stream.stream_id, "i/o timeout", net.now)
    ml.stream_reply(stream.stream_id, reply, net.now)  # too late: nobody waits for it
    assert out == [JoinOutcome(0, ["Failed to join 10.0.0.1: i/o timeout"])]
    assert "a" not in ml.node_map


def test_a_failing_join_callback_does_not_escape_a_failed_stream(caplog):
    net = SimNetwork(seed=8)
    a = net.add_node("a", "10.0.0.1")
    ml = a.serf.memberlist

    def broken(outcome: JoinOutcome, when: float) -> None:
        raise RuntimeError("callback bug")

    ml.join([("", ("10.0.0.99", 7946))], net.now, broken)
    (stream,) = [x for x in ml.take_actions() if isinstance(x, OpenStream)]
    with caplog.at_level(logging.ERROR, "pyserf.memberlist"):
        ml.stream_failed(stream.stream_id, "connect: connection refused", net.now)
    assert "internal error reporting a failed stream" in caplog.text
    assert ml._pending_push_pulls == 0


def test_an_exception_in_the_delegate_never_escapes_handle_stream(monkeypatch):
    net, (a, b) = cluster(2)
    ml = a.serf.memberlist

    def broken(*args, **kwargs):
        raise RuntimeError("delegate bug")

    monkeypatch.setattr(ml.delegate, "notify_msg", broken)
    user = _reliable_user(m.UserEvent(1, "deploy", b"v1", False).encode())
    assert ml.handle_stream(user, b.addr, net.now) is None
    assert ml.drops.counts["stream (internal error)"] == 1


def _reliable_user(serf_msg: bytes) -> bytes:
    """A memberlist reliable (stream) user message: type, header with the length, payload."""
    return (bytes((MsgType.USER,)) + msgpack.packb({"UserMsgLen": len(serf_msg)})
            + serf_msg)


def test_a_reliable_user_message_is_framed_and_delivered_to_serf():
    net, (a, b) = cluster(2, compression=False)
    event = m.UserEvent(a.serf.event_clock.time + 3, "deploy", b"v1", False).encode()
    stream = _reliable_user(event) + b"trailing bytes of the next message"
    frame = codec.stream_frame_length(stream)
    assert frame == len(_reliable_user(event))
    a.serf.events()
    assert a.serf.memberlist.handle_stream(stream[:frame], b.addr, net.now) is None
    received = [e for e in a.serf.events() if isinstance(e, UserEventReceived)]
    assert [(e.name, e.payload) for e in received] == [("deploy", b"v1")]


@pytest.mark.parametrize(("data", "error"), [
    (bytes((MsgType.USER,)) + msgpack.packb([1]), "user message header is not a map"),
    (bytes((MsgType.USER,)) + msgpack.packb({"UserMsgLen": 21 * 1024 * 1024}),
     "user message length"),
    (bytes((MsgType.PUSH_PULL,)) + msgpack.packb("x"), "push-pull header is not a map"),
    (bytes((MsgType.SUSPECT,)) + msgpack.packb({}), "unsupported stream message type"),
    (bytes((MsgType.USER,)) + b"\xc1", "malformed stream message"),
])
def test_the_stream_framer_refuses_what_cannot_be_framed(data, error):
    with pytest.raises(codec.DecodeError, match=error):
        codec.StreamFramer(64 * 1024 * 1024).feed(data)


def test_the_stream_framer_waits_for_an_encryption_header():
    framer = codec.StreamFramer()
    assert framer.feed(b"") is None
    assert framer.feed(bytes((MsgType.ENCRYPT, 0, 0))) is None  # length not all here yet
    assert framer.feed(bytes((0, 3))) is None
    assert framer.feed(b"abc") == bytes((MsgType.ENCRYPT, 0, 0, 0, 3)) + b"abc"


# -- probing ---------------------------------------------------------------------------------


def _first_suspicion(net: SimNetwork, observer: str, subject: str, limit: float):
    end = net.now + limit
    while net.now < end:
        net.run_until(net.now + 0.05)
        found = net.events("suspect", subject, observer=observer)
        if found:
            return found[0]
    raise AssertionError(f"{observer} never suspected {subject}")


def _record_probes(ml) -> list[tuple[object, int]]:
    """(probe, awareness delta) for every probe ``ml`` finishes from now on."""
    finished: list[tuple[object, int]] = []
    finish = ml._finish_probe

    def recording(probe, delta: int, now: float) -> None:
        finished.append((probe, delta))
        finish(probe, delta, now)

    ml._finish_probe = recording
    return finished


def test_a_probe_whose_udp_and_tcp_are_both_lost_suspects_at_its_deadline():
    net, (a, b) = cluster(2)
    finished = _record_probes(a.serf.memberlist)
    net.isolate_inbound("n1")  # UDP and TCP to b are lost; b itself still runs
    suspect = _first_suspicion(net, "n0", "n1", 10.0)
    probe, delta = finished[-1]
    assert probe.target.name == "n1" and not probe.acked and not probe.tcp_ok
    # The fallback TCP ping shares the probe's deadline (probe_interval scaled by awareness,
    # 1x here): the suspicion comes exactly then, not before, and not half a second later.
    assert suspect.time == pytest.approx(probe.deadline, abs=1e-9)
    assert probe.deadline - probe.sent == LAN.probe_interval
    assert delta == 1  # no peer could probe indirectly: the miss counts against us


def test_a_fallback_ping_answered_with_something_else_counts_as_failed(monkeypatch, caplog):
    net, (a, b) = cluster(2)
    finished = _record_probes(a.serf.memberlist)
    net.isolate_inbound("n1", udp=True, tcp=False)  # only the TCP fallback gets through
    err = b.serf.memberlist._stream_payload(codec.encode_err("not an ack"))
    monkeypatch.setattr(b.serf.memberlist, "handle_stream", lambda *args: err)
    with caplog.at_level(logging.ERROR, "pyserf.memberlist"):
        suspect = _first_suspicion(net, "n0", "n1", 10.0)
    assert "Failed fallback ping: unexpected reply" in caplog.text
    probe, _ = finished[-1]
    assert probe.target.name == "n1" and not probe.tcp_ok
    assert suspect.time == pytest.approx(probe.deadline, abs=1e-9)


def test_a_fallback_ping_pending_at_the_deadline_holds_the_verdict_until_it_fails(monkeypatch):
    net, (a, b) = cluster(2)
    ml = a.serf.memberlist
    finished = _record_probes(ml)
    held: list[OpenStream] = []
    deliver = net._deliver_stream
    # a's streams are held (a connect that hangs); the rest of the network runs as usual.
    monkeypatch.setattr(net, "_deliver_stream", lambda sender, action: held.append(action)
                        if sender is a else deliver(sender, action))
    net.isolate_inbound("n1", udp=True, tcp=False)
    end = net.now + 10.0
    while net.now < end and not held:
        net.run_until(net.now + 0.05)
    (fallback,) = held
    probe = ml._probe
    assert probe.tcp_pending
    net.run_until(probe.deadline + 0.2)
    assert not probe.finished and not net.events("suspect", "n1")  # still waiting for TCP
    ml.stream_failed(fallback.stream_id, "i/o timeout", net.now)
    net._pump(a)
    assert finished[-1] == (probe, 1)
    assert [e.time for e in net.events("suspect", "n1")] == [probe.deadline + 0.2]


def test_a_fallback_ping_that_gets_through_prevents_the_suspicion(caplog):
    net, (a, b) = cluster(2)
    net.isolate_inbound("n1", udp=True, tcp=False)
    with caplog.at_level(logging.WARNING, "pyserf.memberlist"):
        net.run_until(net.now + 10.0)
    assert not net.events("suspect", "n1")
    assert "Was able to connect to n1 but other probes failed" in caplog.text


@pytest.mark.parametrize("lost_nacks", [0, 1])
def test_awareness_penalises_a_failed_probe_by_the_nacks_that_did_not_come(lost_nacks):
    # A relay that cannot reach the target answers with a nack, proving our own network
    # works; each expected nack that does not arrive costs one point of health. Relays send
    # the nack probe_timeout after the indirect request, which itself leaves probe_timeout
    # into the probe, so with LAN's 1 s interval nacks land just after the deadline (as in
    # memberlist); a 2 s interval lets them arrive in time.
    timing = LAN.with_overrides(probe_interval=2.0)
    net, nodes = cluster(4, seed=9, timing=timing)
    finished = _record_probes(nodes[0].serf.memberlist)
    for relay in nodes[1:1 + lost_nacks]:
        net.set_link(relay.name, "n0", udp_loss=1.0)  # its nack (and acks) never reach n0
    net.crash(nodes[3])
    end = net.now + 30.0
    while net.now < end and not net.events("member-failed", "n3", observer="n0"):
        net.run_until(net.now + 0.1)
    probes_of_victim = [(p, d) for p, d in finished if p.target.name == "n3"]
    assert probes_of_victim
    for probe, delta in probes_of_victim:
        assert probe.expected_nacks == 2  # the two other nodes relay, both speak protocol 5
        assert probe.nacks == 2 - lost_nacks
        assert delta == lost_nacks


# -- bounds of helpers -----------------------------------------------------------------------


def test_drop_log_forgets_the_oldest_peer_past_its_table_size(caplog):
    log = logging.getLogger("pyserf.test.drops")
    dl = drops.DropLog(log, "memberlist")
    with caplog.at_level(logging.ERROR, "pyserf.test.drops"):
        for i in range(drops.MAX_TRACKED + 1):
            dl.drop("packet", f"peer{i}", "bad", 0.0)
        assert len(dl._limits) == drops.MAX_TRACKED
        caplog.clear()
        dl.drop("packet", "peer0", "bad", 0.1)  # forgotten: logs again at once
        dl.drop("packet", f"peer{drops.MAX_TRACKED}", "bad", 0.1)  # remembered: held back
    assert [r.getMessage() for r in caplog.records] == [
        "memberlist: dropped packet from peer0: bad"]
    assert dl.total() == drops.MAX_TRACKED + 3


def test_lzw_output_limit_is_exact():
    data = bytes(range(256)) * 4
    packed = lzw.compress(data)
    assert lzw.decompress(packed, len(data)) == data
    with pytest.raises(lzw.LZWError, match="exceeds limit"):
        lzw.decompress(packed, len(data) - 1)


def test_the_cipher_cache_stays_bounded_and_still_decrypts():
    keys = [bytes([i]) * 16 for i in range(security._AEAD_CACHE_LIMIT + 1)]
    sealed = [security.encrypt(security.Keyring([k]), b"hello", b"") for k in keys]
    assert len(security._aead_cache) <= security._AEAD_CACHE_LIMIT
    assert all(security.decrypt(security.Keyring([k]), s, b"") == b"hello"
               for k, s in zip(keys, sealed, strict=True))
