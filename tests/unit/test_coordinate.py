"""Vivaldi coordinates: wire form and convergence to real RTTs."""

from __future__ import annotations

import random
import subprocess
import sys

import msgpack
import pytest

from pyserf.serf.coordinate import Coordinate, VivaldiClient
from pyserf.serf.ping_delegate import decode_ack_payload, encode_ack_payload


def test_fresh_coordinate_matches_serf_wire_form():
    payload = encode_ack_payload(Coordinate())
    assert payload[0] == 1
    body = msgpack.unpackb(payload[1:], raw=True)
    assert list(body) == [b"Adjustment", b"Error", b"Height", b"Vec"]
    assert body[b"Error"] == 1.5 and body[b"Height"] == 1e-05 and body[b"Vec"] == [0.0] * 8
    assert payload[1:].count(b"\xcb") == 11  # every number a float64, as Go writes them
    assert decode_ack_payload(payload) == Coordinate()


def test_bad_payloads_are_rejected():
    with pytest.raises(ValueError):
        decode_ack_payload(b"\x02" + encode_ack_payload(Coordinate())[1:])
    with pytest.raises(ValueError):
        decode_ack_payload(b"\x01" + msgpack.packb({"Vec": "nope"}))
    client = VivaldiClient()
    with pytest.raises(ValueError):
        client.update("x", Coordinate(vec=[float("nan")] * 8), 0.001)
    with pytest.raises(ValueError):
        client.update("x", Coordinate(), 11.0)


def test_coordinates_converge_to_a_grid_of_rtts():
    """Nodes on a line 10 ms apart learn distances that predict the RTT between any pair."""
    rng = random.Random(3)
    n = 6
    truth = [[abs(i - j) * 0.010 + 0.0005 for j in range(n)] for i in range(n)]
    clients = [VivaldiClient(random.Random(i)) for i in range(n)]
    for _ in range(3000):
        i, j = rng.sample(range(n), 2)
        rtt = truth[i][j] * rng.uniform(0.95, 1.05)
        clients[i].update(f"n{j}", clients[j].coord.copy(), rtt)
    errors = [abs(clients[i].coord.distance(clients[j].coord) - truth[i][j]) / truth[i][j]
              for i in range(n) for j in range(n) if i != j]
    assert max(errors) < 0.25, max(errors)


def test_distance_to_truncates_to_nanoseconds_like_serf():
    a = Coordinate(vec=[0.0015000004] + [0.0] * 7, height=0.0)
    b = Coordinate(vec=[0.0] * 8, height=0.0, adjustment=-0.0005)
    # 1.5000004 ms raw, minus 0.5 ms adjustment: 1.0000004 ms, truncated to whole nanoseconds.
    assert a.distance_to_ns(b) == 1_000_000
    assert a.distance_to(b) == 0.001
    assert a.distance(b) == pytest.approx(0.0010000004)
    # An adjustment that would make the estimate negative is ignored, as in serf.
    assert a.distance_to_ns(Coordinate(vec=[0.0] * 8, height=0.0, adjustment=-1.0)) == 1_500_000
    with pytest.raises(ValueError, match="dimensionality"):
        a.distance_to_ns(Coordinate(vec=[0.0] * 3))


def test_the_rpc_client_shares_member_and_coordinate_without_the_protocol_machines():
    code = ("import sys, pyserf.client.rpc_client as c, pyserf.serf.coordinate as co, "
            "pyserf.serf.members as me; "
            "assert c.Coordinate is co.Coordinate and c.Member is me.Member; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('pyserf'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "pyserf.client.rpc_client" in out
    heavy = [m for m in out if m.startswith(("pyserf.agent", "pyserf.memberlist.memberlist",
                                             "pyserf.serf.core", "pyserf.serf.messages"))]
    assert heavy == []
