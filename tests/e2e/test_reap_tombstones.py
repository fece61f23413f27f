"""Reaping between real processes: a failed member is forgotten after reconnect_timeout, a left
one after tombstone_timeout, and each agent runs its member-reap handler. Observed from a
serf 0.9.4 agent and a pyserf agent in the same cluster, with one victim of each kind, so each
implementation reaps a member of the other.

serf (and pyserf) check the two lists every reap interval, 15 s, fixed (ReapInterval; the agent
has no setting for it), and drop a member once ``now - time it failed or left > timeout``.
So a member is reaped between ``timeout`` and ``timeout + 15 s`` after its status changed.
serf's agent takes the timeouts as plain durations with no minimum (command/agent/config.go).

The reaper's ticks run from each agent's start, so the victims go down shortly before the
observers' first tick: a reaper that ignored the timeout would reap at that tick, visibly too
early (certainly for the leave; for the kill when failure detection ends before the tick).
The price is waiting for the second tick: ~32 s, forced by the fixed 15 s interval.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from pyserf.client.rpc_client import RPCClient, RPCError
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 5.0  # reconnect_timeout and tombstone_timeout, seconds
REAP_INTERVAL = 15.0  # serf's ReapInterval
POLL = 0.1
SLACK_HIGH = 2.0  # a loaded machine may run the reaper's timer late, never early
# Failure detection of a killed member among four (~5-7 s), then timeout + interval, with
# room for a loaded machine.
DEADLINE = 15.0 + TIMEOUT + REAP_INTERVAL + 10.0

RECORDER = "#!/bin/sh\nprintf '%s %s\\n' \"$SERF_EVENT\" \"$(cut -f1 | tr '\\n' ' ')\" >> \"$1\"\n"


def _view(rpc: str) -> dict[str, str] | None:
    """name -> status over RPC (fast enough to time the reap); None if no answer."""
    try:
        with RPCClient(rpc, timeout=2.0, reply_timeout=3.0) as client:
            return {m.name: m.status for m in client.members()}
    except (RPCError, OSError):
        return None


def _records(path) -> list[tuple[str, list[str]]]:
    try:
        return [(line.split()[0], line.split()[1:]) for line in path.read_text().splitlines()
                if line.strip()]
    except OSError:
        return []


def test_failed_and_left_members_are_reaped_after_their_timeouts(cluster, tmp_path,
                                                                 need_serf):
    config = tmp_path / "reap.json"
    config.write_text(json.dumps({"reconnect_timeout": f"{TIMEOUT:g}s",
                                  "tombstone_timeout": f"{TIMEOUT:g}s"}))
    script = tmp_path / "record.sh"
    script.write_text(RECORDER)
    script.chmod(0o755)
    logs = {name: tmp_path / f"{name}.events" for name in ("s1", "p1")}
    s1 = cluster.start("serf", "s1", f"-config-file={config}",
                       f"-event-handler={script} {logs['s1']}")
    first_tick = time.monotonic() + REAP_INTERVAL  # s1's; p1's is up to a start later
    p1 = cluster.start("pyserf", "p1", f"-config-file={config}", f"-join={s1.ip}",
                       f"-event-handler={script} {logs['p1']}")
    pf = cluster.start("pyserf", "pf", f"-config-file={config}", f"-join={s1.ip}")
    sl = cluster.start("serf", "sl", f"-config-file={config}", f"-join={p1.ip}")
    observers = {"s1": s1, "p1": p1}
    every = {"s1", "p1", "pf", "sl"}
    wait_until(lambda: all(set((_view(o.rpc) or {}).items()) >= {(n, "alive") for n in every}
                           for o in observers.values()), 15, what="four members everywhere")

    # Scheduling, not waiting for a behaviour: the kill lands so that detection (>= 4.5 s:
    # probe, then Lifeguard's 4 s minimum suspicion among four) ends about at the first
    # tick, the leave TIMEOUT - 2 s before it.
    time.sleep(max(0.0, first_tick - 7.0 - time.monotonic()))
    acted = {"pf": time.monotonic()}
    pf.proc.kill()  # fails: reaped after reconnect_timeout
    time.sleep(max(0.0, first_tick - (TIMEOUT - 2.0) - time.monotonic()))
    acted["sl"] = time.monotonic()
    cluster.send(sl, signal.SIGINT)  # leaves: reaped after tombstone_timeout

    # Each poll brackets the moment the agent answered between ``before`` and ``after``, so
    # each transition is known to lie between two polls whatever the machine's load: the
    # status change after the last poll without it (or the kill/leave) and before the first
    # with it; the reap likewise. The bounds are checked against the widest and the narrowest
    # delay those brackets allow.
    expected = {"pf": "failed", "sl": "left"}
    keys = [(o, v) for o in observers for v in expected]
    not_yet = {(o, v): acted[v] for o, v in keys}  # last poll before the status change
    changed: dict[tuple[str, str], float] = {}  # first poll showing the status (after)
    present: dict[tuple[str, str], float] = {}  # last poll still listing it (before)
    gone: dict[tuple[str, str], float] = {}  # first poll without it (after)
    deadline = time.monotonic() + DEADLINE
    while len(gone) < len(keys) and time.monotonic() < deadline:
        for oname, observer in observers.items():
            before = time.monotonic()
            view = _view(observer.rpc)
            after = time.monotonic()
            if view is None:
                continue
            for victim, status in expected.items():
                key = (oname, victim)
                if key in gone:
                    assert victim not in view, f"{victim} came back at {oname}: {view}"
                elif victim in view:
                    present[key] = before
                    if view[victim] == status:
                        changed.setdefault(key, after)
                    else:
                        assert key not in changed, (oname, victim, view[victim])
                        not_yet[key] = before
                else:
                    # Reaped only once seen failed/left, never straight from alive/suspect.
                    assert key in changed, f"{oname} dropped {victim} before it {status}"
                    gone[key] = after
        time.sleep(POLL)
    assert len(gone) == len(keys), f"not reaped in {DEADLINE}s: seen {changed}, gone {gone}"
    assert sl.proc.wait(10) == 0
    for key in keys:
        widest, narrowest = gone[key] - not_yet[key], present[key] - changed[key]
        assert widest > TIMEOUT, (key, widest)  # reaped no earlier than the timeout
        assert narrowest <= TIMEOUT + REAP_INTERVAL + SLACK_HIGH, (key, narrowest)

    # Each observer ran its member-reap handler for both victims (serf coalesces member
    # events for up to 3 s before running handlers).
    for oname, path in logs.items():
        wait_until(lambda path=path: {n for kind, names in _records(path)
                                      if kind == "member-reap" for n in names} == {"pf", "sl"},
                   10, what=f"{oname}'s member-reap handler for pf and sl")
        kinds = {(kind, n) for kind, names in _records(path) for n in names}
        assert {("member-failed", "pf"), ("member-leave", "sl")} <= kinds, (oname, kinds)
    # Only the two victims are gone.
    for observer in observers.values():
        assert _view(observer.rpc) == {"s1": "alive", "p1": "alive"}
