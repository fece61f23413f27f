"""`pyserf simulate -workers=N`: a run split over forked workers is deterministic, plays the
same protocol as the single engine, and fails cleanly when a worker does."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from pyserf.sim import cli, scenarios, shards
from pyserf.sim.scenarios import Options, lifeguard, simulate

# Longer hops than a LAN's keep the runs' sync windows few (the lookahead is the minimum).
LATENCY = (0.002, 0.005)


def sharded(workers: int, **kwargs) -> dict:
    opts = Options(**{"latency": LATENCY, "seed": 4, **kwargs})
    report, stats = shards.simulate(opts, workers)
    assert [s.index for s in stats] == list(range(workers))
    assert sum(s.nodes for s in stats) == opts.nodes
    report.pop("curve")
    del report["wall_s"]
    return report


def no_workers_left() -> bool:
    return not multiprocessing.active_children()


def test_a_seed_gives_one_report_for_any_number_of_workers_above_one():
    """Each node draws its traffic's fate from its own generator and every delivery finds
    its node when it arrives, so where a node runs changes nothing: two runs at 2 workers
    and one at 3 agree to the last byte (a packet between workers lost, late or early would
    change some node's view)."""
    first = sharded(2, nodes=20, scenario="join", loss=0.02)
    assert first == sharded(2, nodes=20, scenario="join", loss=0.02)
    three = sharded(3, nodes=20, scenario="join", loss=0.02)
    assert three.pop("workers") == 3 and first.pop("workers") == 2
    assert three.pop("sync_windows") > 0 and first.pop("sync_windows") > 0
    assert three == first
    assert first["converged"] and first["saw_change"] == 20
    assert no_workers_left()


def test_sharded_join_plays_the_protocol_of_the_single_engine():
    one = simulate(Options(nodes=40, scenario="join", seed=4, latency=LATENCY))
    two = sharded(2, nodes=40, scenario="join")
    for r in (one, two):
        assert r["converged"] and r["saw_change"] == r["observers"] == 40
        assert r["joins_returned"] == 39 and r["false_positives"] == 0
        # Everyone lists all 40 about when the last node has started (within the 1 s
        # window), plus a few gossip rounds.
        assert 0.8 <= r["convergence_s"]["p50"] <= r["convergence_s"]["max"] <= 3.0
        assert r["push_pull"]["count"] >= 39
    # Different draws, same protocol: the traffic per node is alike.
    assert two["msgs_per_node_s"] == pytest.approx(one["msgs_per_node_s"], rel=0.25)
    assert two["push_pull"]["mean_bytes"] == pytest.approx(one["push_pull"]["mean_bytes"],
                                                           rel=0.25)


@pytest.mark.parametrize("scenario", ["fail", "leave", "event", "partition"])
def test_every_scenario_converges_across_workers(scenario):
    r = sharded(2, nodes=12, scenario=scenario, latency=(0.004, 0.008))
    assert r["setup_converged"] and r["converged"]
    assert r["saw_change"] == r["observers"] == (12 if scenario == "partition" else 11)
    assert r["false_positives"] == 0
    if scenario == "fail":
        bounds = lifeguard(scenarios.PROFILES["lan"], 12)
        assert bounds["min"] <= r["convergence_s"]["p50"] <= r["convergence_s"]["max"] \
            <= bounds["bound"]
    if scenario == "partition":
        # Both halves failed each other while split (the merged minimum over the workers).
        assert r["failed_across_split"] == 6


def test_a_stream_to_a_node_not_running_is_refused_after_the_round_trip():
    """The refusal comes from the target's share when the connection gets there (the node
    may have started meanwhile), and takes the two one-way delays the opener drew."""
    directory = {scenarios.address(i): (f"n{i}", 0) for i in range(2)}
    net = shards.Seat(0, 1, {}, LATENCY[0], directory).network(seed=1, latency=LATENCY)
    node = net.add_node("n1", scenarios.address(1)[0])
    outcomes: list = []
    net.when_done(node, node.serf.join([("n0", scenarios.address(0))], False, 0.0),
                  lambda outcome, when: outcomes.append((outcome, when)))
    net._run(1.0)
    [(outcome, when)] = outcomes
    assert outcome.contacted == 0 and "connection refused" in outcome.errors[0]
    assert 2 * LATENCY[0] <= when <= 2 * LATENCY[1]


def test_a_worker_that_raises_ends_the_run_with_its_error(monkeypatch, capsys):
    storm = scenarios.Run.join_storm

    def broken(run: scenarios.Run) -> None:
        storm(run)
        if run.seat is not None and run.seat.index == 1:
            run.net.call_at(0.3, lambda now: 1 / 0)

    monkeypatch.setattr(scenarios.Run, "join_storm", broken)
    with pytest.raises(shards.ShardError, match="worker 1 failed: ZeroDivisionError") as info:
        shards.simulate(Options(nodes=10, scenario="join", latency=LATENCY), 2)
    assert "1 / 0" in info.value.detail  # the worker's traceback
    assert no_workers_left()
    code = cli.main(["-nodes=10", "-workers=2", "-latency=2ms-5ms"])
    out, err = capsys.readouterr()
    assert code == 1 and "Error: worker 1 failed: ZeroDivisionError" in out
    assert "Traceback" in err
    assert no_workers_left()


def test_a_worker_that_dies_ends_the_run(monkeypatch):
    storm = scenarios.Run.join_storm

    def dying(run: scenarios.Run) -> None:
        storm(run)
        if run.seat is not None and run.seat.index == 0:
            run.net.call_at(0.5, lambda now: os._exit(7))

    monkeypatch.setattr(scenarios.Run, "join_storm", dying)
    with pytest.raises(shards.ShardError, match=r"worker 0 failed: exited \(code 7\)"):
        shards.simulate(Options(nodes=10, scenario="join", latency=LATENCY), 3)
    assert no_workers_left()


def test_workers_1_is_the_single_engine(capsys):
    assert cli.main(["-nodes=8", "-format=json", "-workers=1"]) == 0
    with_flag = json.loads(capsys.readouterr().out)
    assert cli.main(["-nodes=8", "-format=json"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert "workers" not in with_flag
    del with_flag["wall_s"], without["wall_s"]
    assert with_flag == without


@pytest.mark.parametrize(("argv", "message"), [
    (["-workers=two"], "-workers must be auto or 1 to 64"),
    (["-workers=65"], "-workers must be auto or 1 to 64"),
    (["-workers=-1"], "-workers must be auto or 1 to 64"),
    (["-nodes=3", "-workers=4"], "-workers=4 needs at least as many -nodes"),
    (["-workers=2", "-latency=0-1ms", "-sync-quantum=0"],
     "needs a minimum -latency or a -sync-quantum above 0"),
    (["-workers=2", "-sync-quantum=-1ms"], "-sync-quantum must be 0 to 50ms"),
    (["-workers=2", "-sync-quantum=51ms"], "-sync-quantum must be 0 to 50ms"),
    (["-workers=2", "-sync-quantum=soon"], 'invalid value "soon" for flag -sync-quantum'),
])
def test_bad_worker_counts_are_refused_before_anything_runs(capsys, monkeypatch, argv,
                                                            message):
    monkeypatch.setattr(shards, "simulate", lambda opts, workers: pytest.fail("ran anyway"))
    monkeypatch.setattr(scenarios, "simulate", lambda opts: pytest.fail("ran anyway"))
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert message in captured.out + captured.err


def test_text_report_says_how_many_workers_ran(capsys):
    assert cli.main(["-nodes=6", "-workers=2", "-latency=5ms-8ms"]) == 0
    out = capsys.readouterr().out
    assert "on 2 workers (" in out and "sync windows)" in out


def test_a_sync_quantum_moves_hops_between_workers_to_window_ends_and_stays_deterministic():
    """With a 10 ms quantum over 2-5 ms hops, the workers swap at most every 10 ms: a hop
    between workers that lands inside the window it left in arrives at the window's end
    instead (the report counts those hops and their mean delay). The run is as repeatable as
    an exact one and plays the same protocol (same convergence within the draw's spread),
    with far fewer swaps."""
    quantised = sharded(2, nodes=40, scenario="join", sync_quantum=0.010)
    assert quantised == sharded(2, nodes=40, scenario="join", sync_quantum=0.010)
    exact = sharded(2, nodes=40, scenario="join")
    assert "sync_quantum_s" not in exact and "hops_delayed" not in exact
    assert quantised["sync_quantum_s"] == 0.010
    assert 0 < quantised["hops_delayed"] < quantised["hops_between_workers"]
    # Hops drawn 2-5 ms long in 10 ms windows: most land inside the window they left in and
    # wait out the rest of it, never more than the quantum less the shortest hop.
    assert 0 < quantised["delay_added_ms_mean"] <= 10.0 - 2.0
    assert quantised["sync_windows"] < exact["sync_windows"] / 2
    for r in (quantised, exact):
        assert r["converged"] and r["saw_change"] == 40 and r["false_positives"] == 0
        assert r["convergence_s"]["max"] <= 3.0
    assert no_workers_left()


def test_a_quantum_no_longer_than_the_shortest_hop_changes_nothing():
    """Windows are already the shortest hop long, so no hop can land inside its own: the
    run is the exact one, byte for byte, and reports no quantum."""
    assert sharded(2, nodes=20, scenario="join", sync_quantum=LATENCY[0]) \
        == sharded(2, nodes=20, scenario="join")


def test_the_cli_runs_workers_with_a_2ms_quantum_and_says_so(capsys):
    assert cli.main(["-nodes=30", "-workers=2", "-format=json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["workers"] == 2 and report["sync_quantum_s"] == 0.002
    assert report["converged"] and 0 < report["hops_delayed"] <= report["hops_between_workers"]
    assert cli.main(["-nodes=30", "-workers=2"]) == 0
    out = capsys.readouterr().out
    assert "Sync quantum:   2 ms: " in out and "hops between workers arrived later" in out
    assert cli.main(["-nodes=30", "-workers=2", "-sync-quantum=0", "-format=json"]) == 0
    assert "sync_quantum_s" not in json.loads(capsys.readouterr().out)
    assert no_workers_left()


def test_a_quantised_run_gives_one_report_across_processes():
    """Which hops the quantum moves depends only on the virtual times the workers agree on,
    not on how fast either ran or on the processes' string hashing."""
    argv = [sys.executable, "-m", "pyserf.sim.cli", "-nodes=16", "-scenario=leave",
            "-workers=2", "-format=json", "-seed=3"]

    def one(hashseed: str) -> dict:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True,
                              env={**os.environ, "PYTHONHASHSEED": hashseed})
        result = json.loads(done.stdout)
        del result["wall_s"]
        return result

    first = one("1")
    assert first["sync_quantum_s"] == 0.002 and first["hops_delayed"] > 0
    assert first["converged"] and first["false_positives"] == 0
    assert one("2") == first
