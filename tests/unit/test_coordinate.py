"""Vivaldi coordinates: wire form and convergence to real RTTs."""

from __future__ import annotations

import random

import msgpack
import pytest

from pyserf.serf.coordinate import (
    Coordinate,
    VivaldiClient,
    decode_ack_payload,
    encode_ack_payload,
)


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
