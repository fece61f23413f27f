"""`pyserf simulate`: reproducible scenario reports with plausible numbers, and refusals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pyserf.memberlist.profiles import LAN
from pyserf.sim import cli, scenarios
from pyserf.sim.scenarios import Options, lifeguard, simulate

N = 20
REQUIRED = {"nodes", "scenario", "seed", "converged", "convergence_s", "false_positives",
            "msgs_per_node_s", "bytes_per_node_s", "wall_s"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(scenario: str, nodes: int = N, **kwargs) -> dict:
    return simulate(Options(nodes=nodes, scenario=scenario, seed=3, **kwargs))


def test_same_seed_same_report_in_other_processes_and_another_seed_differs():
    """The report depends on the seed only: not on the process's string hashing (set order),
    nor on anything left over from an earlier run in the same process."""
    argv = [sys.executable, "-m", "pyserf.sim.cli", "-nodes=12", "-scenario=fail",
            "-format=json"]

    def one(seed: int, hashseed: str) -> dict:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        done = subprocess.run([*argv, f"-seed={seed}"], capture_output=True, text=True,
                              env=env, timeout=60, check=True)
        result = json.loads(done.stdout)
        del result["wall_s"]
        return result

    first = one(5, "1")
    assert first == one(5, "2")
    in_process = simulate(Options(nodes=12, scenario="fail", seed=5))
    del in_process["wall_s"], in_process["curve"]
    assert in_process == first
    assert one(6, "1") != first


@pytest.mark.parametrize("flags, code", [(["-nodes=8", "-format=json"], 0), (["-nodes=1"], 1)])
def test_the_command_ends_its_process_without_teardown_but_with_exit_handlers(tmp_path, flags,
                                                                                code):
    """``pyserf simulate`` as a process skips freeing its heap (tens of seconds at 2,000
    nodes) yet exits like sys.exit: same code, output flushed, exit handlers run (coverage
    saves its data in one). Called in-process, main() returns as before."""
    mark = tmp_path / "atexit-ran"
    program = ("import atexit, sys\n"
               "mark = sys.argv[1]\n"
               "atexit.register(lambda: open(mark, 'w').write('ran'))\n"
               f"sys.argv = ['pyserf', 'simulate', *{flags!r}]\n"
               "from pyserf.cli import main\n"
               "code = main()\n"
               "print('teardown path', code)\n")
    done = subprocess.run([sys.executable, "-c", program, str(mark)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert "teardown path" not in done.stdout
    assert mark.read_text() == "ran"
    if code == 0:
        assert json.loads(done.stdout)["converged"] is True
    else:
        assert "-nodes must be at least 2" in done.stdout


def test_join_storm_converges_in_about_the_join_window():
    r = report("join")
    assert r["converged"] and r["saw_change"] == r["observers"] == N
    # Measured from the first start: nobody lists everyone before the last node started
    # (near the end of the 1 s window), and a LAN cluster of 20 needs no more than a few
    # gossip rounds after that.
    assert 0.8 <= r["convergence_s"]["p50"] <= r["convergence_s"]["max"] <= 3.0
    assert r["false_positives"] == 0
    assert r["msgs_per_node_s"] > 1 and r["bytes_per_node_s"] > 100
    # Every joiner pushes and pulls with the seed at least once, and the join returns once
    # that exchange is answered: before the joiner lists everyone.
    pp = r["push_pull"]
    assert pp["count"] >= N - 1 and r["joins_returned"] == N - 1
    assert r["last_join_returned_s"] <= r["convergence_s"]["max"]
    assert pp["mean_bytes"] > 0
    assert pp["bytes_per_node_s"] == pytest.approx(
        pp["count"] * pp["mean_bytes"] / N / r["window_s"], rel=0.01)


def test_traffic_and_push_pull_sizes_are_what_went_on_the_wire():
    """The report's bytes are the engine's counters: compressed and encrypted as sent, so
    a run with encryption reports bigger push-pulls (the states alone would be the same
    size). (Totals per node are not compared: the runs draw differently, and one or two
    push-pulls more in a 10-node run outweigh the encryption overhead.)"""
    plain, sealed = report("join", nodes=10), report("join", nodes=10, encrypt=True)
    assert plain["push_pull"]["count"] >= 9 and sealed["push_pull"]["count"] >= 9
    assert sealed["push_pull"]["mean_bytes"] > plain["push_pull"]["mean_bytes"]
    for r in (plain, sealed):
        assert r["bytes_per_node_s"] > r["push_pull"]["bytes_per_node_s"] > 0


def test_waiting_for_convergence_pumps_only_nodes_with_input_or_timers():
    """Each step of the engine pumps at most the one node it concerns; the runner's polling
    for convergence adds no pumps of idle nodes (20 nodes x one per 0.5 s check)."""
    run = scenarios.Run(Options(nodes=N, seed=3))
    assert scenarios._converge_setup(run)
    nodes = run.net.by_name.values()
    pumps, steps = sum(n.pumps for n in nodes), run.net.steps
    run.run_to(run.net.now + 20.0, lambda: False)
    assert sum(n.pumps for n in nodes) - pumps <= run.net.steps - steps


def test_kill_is_seen_by_every_survivor_within_the_lifeguard_bounds():
    r = report("fail")
    bounds = r["lifeguard_s"]
    # memberlist's formulas at N = 20 on LAN: SuspicionMult 4 * log10(N) * ProbeInterval 1 s,
    # 6x that unconfirmed, and k = SuspicionMult - 2 confirmations.
    assert bounds["min"] == pytest.approx(4 * math.log10(N), abs=0.001)
    assert bounds["max"] == pytest.approx(6 * 4 * math.log10(N), abs=0.01)
    assert bounds["k"] == 2 and bounds == lifeguard(LAN, N)
    assert r["converged"] and r["saw_change"] == N - 1
    # No verdict before the shortest suspicion a confirmed accusation gets; all of them
    # before a probe round, an unconfirmed suspicion and a few gossip rounds.
    assert bounds["min"] <= r["curve"][0] and r["curve"][-1] <= bounds["bound"]
    assert r["false_positives"] == 0


def test_graceful_leave_and_user_event_spread_by_gossip():
    leave = report("leave")
    assert leave["converged"] and leave["saw_change"] == N - 1
    assert leave["convergence_s"]["max"] < 1.0  # gossiped, no failure detection involved
    assert leave["false_positives"] == 0
    event = report("event")
    assert event["converged"] and event["saw_change"] == N - 1
    assert event["convergence_s"]["max"] < 1.0
    assert event["false_positives"] == 0


def test_event_time_runs_from_the_send_to_each_receipt():
    """With a fixed 10 ms hop the first receivers see the event exactly one hop after it was
    sent (pyserf gossips a new broadcast at once), the rest a whole number of hops later or
    at a gossip tick; nobody is counted at the send itself."""
    hop = 0.01
    r = report("event", latency=(hop, hop))
    curve = r["curve"]
    assert r["converged"] and len(curve) == N - 1
    assert curve[0] == pytest.approx(hop)
    assert all(t >= hop - 1e-9 for t in curve)


def test_partition_fails_the_other_half_then_heals_without_false_failures():
    r = report("partition")
    # Held until both halves failed each other: every node lost the other half.
    assert r["partition_s"] == scenarios.default_partition_for(LAN, N)
    assert r["failed_across_split"] == N // 2
    assert r["converged"] and r["saw_change"] == N
    # Healed by gossip to the recently dead or by serf's reconnect (jittered to 1.5x).
    assert r["convergence_s"]["max"] <= 1.5 * scenarios.RECONNECT_INTERVAL + 2.0
    assert r["false_positives"] == 0


def test_json_is_one_object_with_the_documented_fields(capsys):
    code, out, err = run_cli(capsys, "-nodes=10", "-scenario=event", "-format=json")
    assert code == 0 and err == ""
    result = json.loads(out)  # the whole of stdout: exactly one object
    assert result.keys() >= REQUIRED
    assert result["nodes"] == 10 and result["scenario"] == "event" and result["seed"] == 1
    assert set(result["convergence_s"]) == {"p50", "p90", "p99", "max"}
    assert isinstance(result["converged"], bool) and isinstance(result["wall_s"], float)


def test_text_report_names_what_an_operator_plans_with(capsys):
    code, out, _ = run_cli(capsys, "-nodes=10", "-scenario=fail")
    assert code == 0
    labels = [line.split(":")[0] for line in out.splitlines()]
    assert labels == ["Scenario", "Converged", "Seen by", "Lifeguard", "False failures",
                      "Per node/s", "Push-pulls", "Run"]
    code, out, _ = run_cli(capsys, "-nodes=10", "-scenario=join")
    assert code == 0 and "Joins:" in out and "9 of 9 returned" in out
    # Values start in one column.
    assert len({line.index(line.split(":", 1)[1].strip()) for line in out.splitlines()}) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["-nodes=1"], "Error: -nodes must be at least 2"),
    (["-scenario=reboot"], "Error: -scenario must be one of join, fail, leave, event, partition"),
    (["-loss=1.5"], "Error: -loss must be at least 0 and below 1"),
    (["-loss=nan"], "Error: -loss must be at least 0 and below 1"),
    (["-profile=moon"], "Error: -profile must be one of lan, wan, local"),
    (["-format=xml"], 'Error: Invalid output format "xml"'),
    (["-latency=5ms-1ms"], 'Error: invalid -latency "5ms-1ms": MIN must be >= 0 and <= MAX'),
    (["-duration=-1s"], "Error: -duration, -join-window and -partition-for cannot be negative"),
    (["-duration=61m"], "Error: -duration must be at most 1h: the run's cost grows with the "
                        "virtual time it covers"),
    (["-partition-for=2h"], "Error: -partition-for must be at most 1h: the run's cost grows "
                            "with the virtual time it covers"),
    (["-plot=/nonexistent/x.png"], 'Error: cannot write -plot "/nonexistent/x.png": '
                                   "/nonexistent is not a writable directory"),
    (["join"], "Error: unexpected arguments: join"),
])
def test_bad_values_are_refused_before_anything_runs(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(scenarios, "simulate", lambda opts: pytest.fail("ran anyway"))
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert out.splitlines() == [message] and err == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["-bogus"], "flag provided but not defined: -bogus"),
    (["-nodes=many"], 'invalid value "many" for flag -nodes: parse error'),
    (["-loss=lots"], 'invalid value "lots" for flag -loss: parse error'),
    (["-duration=5"], 'invalid value "5" for flag -duration: parse error'),
])
def test_unparsable_flags_print_the_error_and_usage_like_serf(capsys, monkeypatch, argv,
                                                              message):
    monkeypatch.setattr(scenarios, "simulate", lambda opts: pytest.fail("ran anyway"))
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert err.splitlines() == [message]
    assert out.startswith("Usage: pyserf simulate [options]")


def test_a_cluster_too_big_for_memory_is_refused_before_it_is_built(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_mem_available", lambda: 4 << 30)
    monkeypatch.setattr(scenarios, "simulate", lambda opts: pytest.fail("built anyway"))
    fit = scenarios.max_nodes_for(int(cli.MEMORY_HEADROOM * (4 << 30)))
    assert scenarios.estimate_bytes(fit) <= cli.MEMORY_HEADROOM * (4 << 30) \
        < scenarios.estimate_bytes(fit + 1)
    code, out, _ = run_cli(capsys, f"-nodes={fit + 1}")
    assert code == 1
    assert out.startswith(f"Error: {fit + 1} nodes need about ")
    assert out.rstrip().endswith(f"only 4.0 GiB of memory is available; at most {fit} nodes "
                                 "fit here")


def test_plot_writes_a_png_of_the_convergence_curve(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    code, _, _ = run_cli(capsys, "-nodes=10", "-scenario=event", f"-plot={path}")
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setattr(scenarios, "simulate", lambda opts: pytest.fail("ran anyway"))
    code, out, _ = run_cli(capsys, f"-plot={tmp_path / 'x.png'}")
    assert code == 1
    assert "pip install matplotlib" in out
    assert not (tmp_path / "x.png").exists()


def test_percentiles_count_nodes_that_never_saw_the_change_as_late():
    assert scenarios.percentiles([1.0, 2.0, 3.0, 4.0]) == \
        {"p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    times = [float(i) for i in range(99)] + [None]
    assert scenarios.percentiles(times) == {"p50": 49.0, "p90": 89.0, "p99": 98.0, "max": None}


def test_failure_verdicts_about_live_members_count_as_false_positives():
    from pyserf.sim.network import SimEvent

    run = scenarios.Run(Options(nodes=3))
    run.down.add("n2")
    for kind, subject in [("member-join", "n1"), ("member-failed", "n2"),
                          ("member-failed", "n1"), ("member-leave", "n1")]:
        run._on_event(SimEvent(1.0, "n0", kind, subject))
    assert run.false_positives == 1  # n1 was up; n2 was really down; a leave is no verdict
    assert run.alive["n0"] == -2  # joins count up, failures and leaves down


def load_fidelity():
    import importlib.util
    from pathlib import Path

    name = "benchmarks_fidelity"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_fidelity_simulator_side_times_what_the_cluster_benchmark_times():
    fidelity = load_fidelity()
    n = 5
    times = fidelity.simulate_like_bench(n, seed=1)
    bounds = lifeguard(LAN, n)
    # Joins are timed from the last join call's return, not from the first start: the joins
    # take (n - 1) / JOINS_PER_S = 0.2 s, after which a loopback cluster of 5 converges in
    # a few hops. A kill needs the Lifeguard suspicion.
    assert 0.0 <= times["join"] < (n - 1) / fidelity.JOINS_PER_S / 2
    assert bounds["min"] <= times["failed"] <= bounds["bound"]
    assert 0.0 < times["event"] < 1.0
    # On memberlist's ticker alone the same event waits for gossip rounds.
    assert min(fidelity.event_on_ticker(n, seeds=2)) > times["event"]


def test_fidelity_reads_every_real_run_and_puts_times_on_the_poll_grid():
    fidelity = load_fidelity()
    text = """# header
# first run
  pyserf N=20: join converged in 0.24s (median agent 0.13s)
  pyserf N=50: join converged in 0.50s (median agent 0.00s)
# second run
  serf   N=20: join converged in 0.33s (median agent 0.22s)
  pyserf N=20: event handled everywhere in 0.10s, query answered by all in 0.07s
  pyserf N=20: failed seen in 7.96s, left seen in 0.34s
  pyserf N=20: join converged in 0.14s (median agent 0.14s); issuing the joins took 0.60s (RPC
"""
    real, source = fidelity.parse_text(text)
    assert real[20] == {"join": [0.24, 0.14], "failed": [7.96], "event": [0.10],
                        "median": [0.13, 0.14], "issue": [0.60]}
    assert real[50]["join"] == [0.50] and real[50]["median"] == [0.0]
    assert source == {20: ["first run", "second run"], 50: ["first run"]}
    assert fidelity.parse_text(text, "serf")[0][20]["join"] == [0.33]
    # Every reported time is a poll round's start: the smallest positive one bounds the
    # period (a median agent seen at the first round, at 0, says nothing).
    assert fidelity.poll_period(real, 20) == 0.13 and fidelity.poll_period(real, 50) == 0.5
    assert fidelity.poll_period(real, 99) == fidelity.POLL_INTERVAL
    # The simulated joins take as long to issue as the real ones did, or go at the default
    # pace where the results do not say.
    assert fidelity.join_window(real, 20) == 0.60
    assert fidelity.join_window(real, 50) == 49 / fidelity.JOINS_PER_S
    assert [fidelity.on_poll_grid(t) for t in (0.0, 0.1, 0.1001, 7.05)] == \
        [0.0, 0.1, 0.2, pytest.approx(7.1)]


def test_fidelity_completes_the_text_from_the_json(tmp_path, monkeypatch):
    fidelity = load_fidelity()
    monkeypatch.setattr(fidelity, "ROOT", tmp_path)
    text, data = tmp_path / "bench.txt", tmp_path / "bench.json"
    text.write_text("# run\n  pyserf N=20: join converged in 0.14s (median agent 0.13s)\n"
                    "  pyserf N=20: failed seen in 7.96s, left seen in 0.34s\n")
    data.write_text(json.dumps({"results": [
        {"kind": "pyserf", "size": 20, "join_times": [0.3], "event_times": [0.2]},
        {"kind": "serf", "size": 20, "join_times": [9.0]},
        {"kind": "pyserf", "size": 200, "join_times": [5.0]}]}))
    real, source = fidelity.load_real(data, text)
    # The text's runs stay; the JSON adds what the text lacks.
    assert real[20]["join"] == [0.14] and real[20]["failed"] == [7.96]
    assert real[20]["event"] == [0.2] and real[200]["join"] == [5.0]
    assert source == ["bench.txt: run", "bench.json (N=20,200)"]


def test_every_flag_of_the_issue_reaches_the_run(capsys, tmp_path):
    """-nodes, -scenario, -loss, -profile, -seed, -format and -plot together: the report is
    of that run (the local profile's suspicion is shorter than lan's; the same run without
    the loss differs), and the picture is written."""
    path = tmp_path / "fail.png"
    argv = ["-nodes=8", "-scenario=fail", "-profile=local", "-seed=2", "-format=json"]
    code, out, _ = run_cli(capsys, *argv, "-loss=0.1", f"-plot={path}")
    assert code == 0
    lossy = json.loads(out)
    assert (lossy["nodes"], lossy["scenario"], lossy["profile"], lossy["seed"],
            lossy["loss"]) == (8, "fail", "local", 2, 0.1)
    assert lossy["lifeguard_s"] == lifeguard(scenarios.PROFILES["local"], 8)
    assert lossy["lifeguard_s"]["min"] < lifeguard(LAN, 8)["min"]
    assert lossy["converged"]
    if path.exists():  # matplotlib is optional
        assert path.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(capsys, *argv)
    assert json.loads(out)["seed"] == 2 and json.loads(out) != lossy
