"""Event handler scripts (agent/handlers.py) with real short shell commands.

Serf's contract (cmd/serf/command/agent/invoke.go, event_handler.go): a spec is
``[filter[,filter...]=]command``; the script gets SERF_EVENT, SERF_SELF_NAME, SERF_SELF_ROLE,
SERF_TAG_* (names upper-cased, anything outside [A-Z0-9_] turned into "_"), SERF_USER_EVENT /
SERF_USER_LTIME or SERF_QUERY_NAME / SERF_QUERY_LTIME; member events arrive on stdin as
``name\\taddr\\trole\\ttags`` lines with tabs and newlines escaped, user events and queries as
the payload with a newline added; a query is answered with the last 8 KiB of the output.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from asyncio import base_subprocess
from pathlib import Path
from typing import Any

import pytest

from pyserf.agent import handlers
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.members import Member, MemberStatus


def dump_command(out: Path) -> str:
    """A handler that saves its SERF_* environment and its stdin next to ``out``."""
    return f'env | grep "^SERF_" | sort > "{out}.env"; cat > "{out}.stdin"'


class FakeAgent:
    """The parts of AgentAPI the handler manager uses (no serf machine behind it);
    responses are recorded."""

    node_name = "self-node"

    def __init__(self, tags: dict[str, str] | None = None) -> None:
        self.tags = dict(tags or {})
        self.responses: list[tuple[str, bytes]] = []
        self.respond_error: Exception | None = None

    def local_tags(self) -> dict[str, str]:
        return dict(self.tags)

    def respond(self, query: QueryReceived, payload: bytes) -> None:
        if self.respond_error is not None:
            raise self.respond_error
        query.responded = True
        self.responses.append((query.name, payload))

    def spawn(self, coro: Any) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(coro)


def run(coro: Any, timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def query(name: str = "ask", payload: bytes = b"p", ltime: int = 7) -> QueryReceived:
    return QueryReceived(ltime, name, payload, 1, ("127.0.0.1", 7946), "asker",
                         time.monotonic() + 60, 0)


async def invoke(agent: FakeAgent, command: str, event: Any, timeout: float = 0.0) -> None:
    manager = handlers.HandlerManager(agent, timeout)  # type: ignore[arg-type]
    script = handlers._Script(command, [], command, asyncio.Queue(), asyncio.Queue())
    await manager._invoke(script, event)


def dumped(tmp_path: Path, agent: FakeAgent, event: Any) -> tuple[dict[str, str], bytes]:
    """Run the env/stdin dump script for ``event``: (SERF_* environment, stdin bytes)."""
    run(invoke(agent, dump_command(tmp_path / "out"), event))
    env = dict(line.split("=", 1) for line in (tmp_path / "out.env").read_text().splitlines())
    return env, (tmp_path / "out.stdin").read_bytes()


# -- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "wanted", "unwanted", "command"), [
    ("user:deploy=run.sh", [("user", "deploy")],
     [("user", "deploy2"), ("user", ""), ("member-join", ""), ("query", "deploy")], "run.sh"),
    ("member-join,member-leave=notify", [("member-join", ""), ("member-leave", "")],
     [("member-failed", ""), ("member-update", ""), ("user", "x")], "notify"),
    ("query:load=uptime", [("query", "load")], [("query", "other"), ("user", "load")],
     "uptime"),
    ("user=log", [("user", "a"), ("user", "b")], [("query", "a"), ("member-reap", "")], "log"),
    ("handle-all", [("member-join", ""), ("user", "x"), ("query", "y"), ("member-reap", "")],
     [], "handle-all"),
    ("user:a,query:b=echo x=y", [("user", "a"), ("query", "b")], [("user", "b")], "echo x=y"),
])
def test_handler_specs_select_events_as_serf_does(spec, wanted, unwanted, command):
    async def main() -> None:
        manager = handlers.HandlerManager(FakeAgent())  # type: ignore[arg-type]
        manager.load([spec])
        (script,) = manager.scripts
        assert script.command == command
        assert [script.wants(*w) for w in wanted] == [True] * len(wanted)
        assert [script.wants(*u) for u in unwanted] == [False] * len(unwanted)
        await manager.close()

    run(main())


def test_reload_keeps_unchanged_scripts_and_describes_them_by_filter():
    async def main() -> None:
        manager = handlers.HandlerManager(FakeAgent())  # type: ignore[arg-type]
        manager.load(["user:deploy=a.sh", "member-join,member-leave=b.sh"])
        first = manager.scripts[0]
        assert manager.describe() == {"user:deploy": "a.sh", "member-join:": "b.sh",
                                      "member-leave:": "b.sh"}
        manager.load(["user:deploy=a.sh", "query=c.sh"])
        assert manager.scripts[0] is first  # same queue and workers: nothing queued is lost
        assert manager.describe() == {"user:deploy": "a.sh", "query:": "c.sh"}
        await manager.close()

    run(main())


# -- environment and stdin ---------------------------------------------------------------------


def test_member_event_environment_and_stdin_lines(tmp_path):
    agent = FakeAgent({"role": "web", "dc-1": "east", "rack.x": "r 2"})
    members = [Member("we\tird\nname", "10.0.0.7", 7946, {"role": "db\tx"},
                      MemberStatus.ALIVE),
               Member("plain", "10.0.0.8", 7946, {}, MemberStatus.ALIVE)]
    env, stdin = dumped(tmp_path, agent, MemberEvent("member-join", members))
    assert env == {"SERF_EVENT": "member-join", "SERF_SELF_NAME": "self-node",
                   "SERF_SELF_ROLE": "web", "SERF_TAG_ROLE": "web", "SERF_TAG_DC_1": "east",
                   "SERF_TAG_RACK_X": "r 2"}
    # name, address, role, tags (k=v joined by commas), tabs and newlines escaped.
    assert stdin == (b"we\\tird\\nname\t10.0.0.7\tdb\\tx\trole=db\\tx\n"
                     b"plain\t10.0.0.8\t\t\n")


def test_member_event_tags_line_holds_every_tag(tmp_path):
    member = Member("n", "10.0.0.9", 7946, {"role": "lb", "dc": "east", "az": "b"},
                    MemberStatus.FAILED)
    env, stdin = dumped(tmp_path, FakeAgent(), MemberEvent("member-failed", [member]))
    assert env["SERF_EVENT"] == "member-failed" and env["SERF_SELF_ROLE"] == ""
    name, addr, role, tags = stdin.decode().rstrip("\n").split("\t")
    assert (name, addr, role) == ("n", "10.0.0.9", "lb")
    # serf ranges over a Go map, so the order varies; the pairs do not.
    assert sorted(tags.split(",")) == ["az=b", "dc=east", "role=lb"]


@pytest.mark.parametrize(("payload", "stdin"), [(b"v=2", b"v=2\n"), (b"two\nlines\n",
                                                                       b"two\nlines\n"),
                                                 (b"", b"")])
def test_user_event_environment_and_payload(tmp_path, payload, stdin):
    env, got = dumped(tmp_path, FakeAgent({"role": "web"}),
                      UserEventReceived(42, "deploy", payload, True))
    assert env == {"SERF_EVENT": "user", "SERF_SELF_NAME": "self-node", "SERF_SELF_ROLE": "web",
                   "SERF_TAG_ROLE": "web", "SERF_USER_EVENT": "deploy", "SERF_USER_LTIME": "42"}
    assert got == stdin


def test_query_environment_and_payload(tmp_path):
    env, got = dumped(tmp_path, FakeAgent(), query("load", b"x", ltime=9))
    assert env == {"SERF_EVENT": "query", "SERF_SELF_NAME": "self-node", "SERF_SELF_ROLE": "",
                   "SERF_QUERY_NAME": "load", "SERF_QUERY_LTIME": "9"}
    assert got == b"x\n"


# -- query responses ---------------------------------------------------------------------------


def test_query_is_answered_with_the_output_and_stdout_stderr_merged():
    agent = FakeAgent()
    run(invoke(agent, "read line; echo out-$line; echo err >&2", query(payload=b"in")))
    assert agent.responses == [("ask", b"out-in\nerr\n")]


def test_query_response_is_the_last_8_kib_of_the_output(caplog):
    agent = FakeAgent()
    command = "head -c 10000 /dev/zero | tr '\\0' a; printf END"
    with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
        run(invoke(agent, command, query()))
    ((name, payload),) = agent.responses
    assert len(payload) == handlers.OUTPUT_LIMIT == 8 * 1024
    assert payload == b"a" * (8 * 1024 - 3) + b"END"
    assert [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]


def test_truncation_warning_counts_every_byte_the_script_wrote(caplog):
    command = "head -c 10000 /dev/zero"
    with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
        run(invoke(FakeAgent(), command, query()))
    assert [r.getMessage() for r in caplog.records] == [
        f"agent: Script '{command}' generated 10000 bytes of output, truncated to 8192"]


def test_a_failing_script_is_logged_with_its_exit_status(caplog):
    with caplog.at_level(logging.ERROR, logger="pyserf.agent"):
        run(invoke(FakeAgent(), "exit 3", UserEventReceived(1, "e", b"", False)))
    assert [r.getMessage() for r in caplog.records] == [
        "agent: Error invoking script 'exit 3': exit status 3"]


def test_no_output_or_an_answered_query_sends_nothing_and_failures_are_logged(caplog):
    agent = FakeAgent()
    run(invoke(agent, "true", query()))
    answered = query()
    answered.responded = True  # e.g. by an RPC client first
    run(invoke(agent, "echo late", answered))
    assert agent.responses == []
    agent.respond_error = RuntimeError("response exceeds limit of 1024 bytes")
    with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
        run(invoke(agent, "echo hi", query()))
    # serf: the query's String() ("query: <name>") and Respond's wrapped error.
    assert [r.getMessage() for r in caplog.records] == [
        "agent: Failed to respond to query 'query: ask': failed to respond to key query: "
        "response exceeds limit of 1024 bytes"]


def test_a_failing_query_handler_sends_no_response(caplog):
    agent = FakeAgent()
    with caplog.at_level(logging.ERROR, logger="pyserf.agent"):
        run(invoke(agent, "echo partial; exit 3", query()))
    assert [r.getMessage() for r in caplog.records] == [
        "agent: Error invoking script 'echo partial; exit 3': exit status 3"]
    assert agent.responses == []


# -- queues, ordering, timeouts ---------------------------------------------------------------


def test_events_reach_one_script_in_order_one_at_a_time(tmp_path):
    log = tmp_path / "order"
    # Each run notes start and end; overlapping runs would interleave the lines.
    command = (f'echo "start $SERF_USER_LTIME" >> {log}; sleep 0.05; '
               f'echo "end $SERF_USER_LTIME" >> {log}')

    async def main() -> None:
        manager = handlers.HandlerManager(FakeAgent())  # type: ignore[arg-type]
        manager.load([f"user={command}"])
        for ltime in range(1, 6):
            manager.dispatch(UserEventReceived(ltime, "e", b"", False))
        deadline = time.monotonic() + 10
        while (not log.exists() or log.read_text().count("end") < 5) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await manager.close()

    run(main())
    assert log.read_text().split("\n")[:-1] == [f"{what} {i}" for i in range(1, 6)
                                                for what in ("start", "end")]


def _children() -> list[int]:
    """Processes this test process started that have not been reaped yet."""
    me = str(os.getpid())
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == me:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_a_stuck_handler_holds_up_neither_queries_nor_other_scripts(tmp_path):
    pid_file = tmp_path / "stuck.pid"
    marker = tmp_path / "other"
    # Queries get "pong" at once; user events hang.
    command = (f'if [ "$SERF_EVENT" = query ]; then echo pong; '
               f'else echo $$ > {pid_file}; exec sleep 30; fi')

    async def main() -> float:
        agent = FakeAgent()
        manager = handlers.HandlerManager(agent)  # type: ignore[arg-type]
        manager.load([f"user,query:ping={command}", f"user:later=touch {marker}"])
        manager.dispatch(UserEventReceived(1, "first", b"", False))
        deadline = time.monotonic() + 5
        while not pid_file.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stuck_script = manager.scripts[0]
        try:
            # The first script is stuck in sleep; fill its event queue to the brim as well.
            for i in range(handlers.HANDLER_QUEUE_LIMIT + 5):
                manager.dispatch(UserEventReceived(i + 2, "more", b"", False))
            assert stuck_script.queue.full()
            started = time.monotonic()
            manager.dispatch(query("ping"))
            manager.dispatch(UserEventReceived(999, "later", b"", False))
            while (not agent.responses or not marker.exists()) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            took = time.monotonic() - started
            assert agent.responses == [("ping", b"pong\n")]
            assert marker.exists()
        finally:
            # Empty the stuck script's queue, end its sleep, and let its worker go idle.
            while not stuck_script.queue.empty():
                stuck_script.queue.get_nowait()
            os.kill(int(pid_file.read_text()), 9)
            while _children() and time.monotonic() < deadline + 5:
                await asyncio.sleep(0.01)
            await manager.close()
        return took

    assert run(main()) < 2.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and awaiting its reaper, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_timeout_kills_the_script_and_its_children_after_the_slow_warning(tmp_path, caplog,
                                                                         monkeypatch):
    monkeypatch.setattr(handlers, "SLOW_WARNING", 0.5)  # serf's 1 s, shortened for speed
    child_pid = tmp_path / "child.pid"
    command = f"sleep 30 & echo $! > {child_pid}; wait"
    timeout = 0.8
    agent = FakeAgent()
    try:
        with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
            started, started_wall = time.monotonic(), time.time()
            run(invoke(agent, command, query(), timeout=timeout))
            took = time.monotonic() - started
        pid = int(child_pid.read_text())
        deadline = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), "the script's child survived the timeout kill"
    finally:
        if child_pid.exists() and _alive(int(child_pid.read_text())):
            os.kill(int(child_pid.read_text()), 9)
    # Killed at the timeout (plus scheduling slack), not when the sleep would have ended,
    # and the kill is decided at the timeout itself.
    assert timeout <= took < timeout + 2.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"agent: Script '{command}' slow, execution exceeding 1s",
                        f"agent: Script '{command}' timed out after 0.8s, killing it"]
    decided = caplog.records[1].created - started_wall
    assert timeout - 0.05 <= decided < timeout + 0.5, decided
    assert agent.responses == []  # a killed query handler does not answer


@pytest.mark.serial  # a wall-clock bound: run alone (scripts/test)
def test_a_grandchild_that_escapes_the_kill_does_not_hold_the_handler(tmp_path, caplog,
                                                                     monkeypatch):
    monkeypatch.setattr(handlers, "KILL_GRACE", 0.3)
    escaped = tmp_path / "escaped.pid"
    # setsid puts the grandchild in a session of its own: killpg cannot reach it, and it
    # keeps the script's output pipe open.
    command = f"setsid sh -c 'echo $$ > {escaped}; exec sleep 30' & wait"
    timeout = 0.5
    async def main() -> str:
        try:
            await invoke(FakeAgent(), command, query(), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported below, after the clean-up
            failure = f"{type(exc).__name__}: {exc}"
        else:
            return ""
        # The failure leaves the subprocess transport open (its stdout pipe is held by the
        # escaped grandchild): close it while the loop runs, or its finaliser fires later,
        # in another test, against a closed loop.
        for obj in gc.get_objects():
            if isinstance(obj, base_subprocess.BaseSubprocessTransport) and \
                    not obj.is_closing():
                obj.close()
        await asyncio.sleep(0.05)
        return failure

    try:
        with caplog.at_level(logging.WARNING, logger="pyserf.agent"):
            started = time.monotonic()
            failure = run(main())
            took = time.monotonic() - started
        assert failure == ""
    finally:
        deadline = time.monotonic() + 2
        while not escaped.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if escaped.exists() and _alive(int(escaped.read_text())):
            os.kill(int(escaped.read_text()), 9)
    assert timeout + handlers.KILL_GRACE <= took < timeout + handlers.KILL_GRACE + 2.0
    assert caplog.records[-1].getMessage() == (
        f"agent: Script '{command}' pipes still open {handlers.KILL_GRACE:g}s after kill; "
        "abandoning its output")
