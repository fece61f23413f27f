"""Serf-format log lines, monitor fan-out and syslog forwarding."""

from __future__ import annotations

import logging
import socket

import pytest

from pyserf.agent import logs


@pytest.fixture
def restore_pyserf_logger():
    """logs.install takes over the "pyserf" logger; give it back to pytest afterwards."""
    root = logging.getLogger("pyserf")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved


def test_lines_levels_gate_and_monitor_replay(capsys, restore_pyserf_logger):
    handler = logs.install(logging.INFO)
    log = logging.getLogger("pyserf.test")
    log.info("serf: EventMemberJoin: a 10.0.0.1")
    log.debug("hidden at INFO")
    assert capsys.readouterr().out == ""  # held until the banner
    handler.open_gate()
    line = capsys.readouterr().out
    assert line.startswith("    ")
    assert line.rstrip().endswith("[INFO] serf: EventMemberJoin: a 10.0.0.1")
    got: list[str] = []
    handler.subscribe(logs.TRACE, got.append)
    log.debug("now wanted by the monitor")
    assert got[0].endswith("[INFO] serf: EventMemberJoin: a 10.0.0.1")
    assert got[-1].endswith("[DEBUG] now wanted by the monitor")
    assert "now wanted" not in capsys.readouterr().out  # console stays at INFO
    handler.unsubscribe(got.append)
    assert logging.getLogger("pyserf").level == logging.INFO
    with pytest.raises(ValueError, match="Unknown log level: LOUD"):
        logs.parse_level("LOUD")


def test_syslog_gets_lines_with_facility_and_severity(tmp_path):
    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    try:
        handler = logs.syslog_handler("LOCAL3", logging.INFO, address=path)
        record = logging.LogRecord("pyserf", logging.WARNING, __file__, 1,
                                   "serf: something odd", None, None)
        handler.emit(record)
        data = server.recv(4096).decode()
        priority = int(data[1:data.index(">")])
        assert priority == 19 * 8 + 4  # local3, warning
        assert "pyserf: [WARNING] serf: something odd" in data
        handler.close()
    finally:
        server.close()
    with pytest.raises(ValueError, match="syslog_facility"):
        logs.syslog_handler("LOCAL99", logging.INFO, address=path)


def test_console_lines_are_flushed_once_per_loop_turn(restore_pyserf_logger):
    """Inside the event loop a burst of lines (a joiner logs one per member learned) costs
    one flush, on the loop's next turn; outside a loop every line is flushed at once."""
    import asyncio
    import io

    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Counting()
    handler = logs.install(logging.INFO, stream)
    handler.open_gate()
    log = logging.getLogger("pyserf.test")
    log.info("outside the loop")
    assert stream.flushes == 1

    async def burst() -> tuple[int, int]:
        for i in range(50):
            log.info("serf: EventMemberJoin: n%d 10.0.0.%d", i, i)
        pending = stream.flushes
        await asyncio.sleep(0)
        return pending, stream.flushes

    assert asyncio.run(burst()) == (1, 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 51 and lines[-1].endswith("[INFO] serf: EventMemberJoin: n49 10.0.0.49")


def test_a_flush_that_never_ran_does_not_hold_back_later_lines(monkeypatch,
                                                             restore_pyserf_logger):
    """A loop can close before the flush it was given runs (an interrupted run): the next
    loop schedules its own, and a line outside any loop is flushed at once."""
    import io

    class Loop:
        def __init__(self) -> None:
            self.scheduled: list = []

        def call_soon(self, callback) -> None:
            self.scheduled.append(callback)  # never run: the loop "closed"

    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    stream = Counting()
    handler = logs.install(logging.INFO, stream)
    handler.open_gate()
    log = logging.getLogger("pyserf.test")
    first, second = Loop(), Loop()
    monkeypatch.setattr(logs.asyncio, "get_running_loop", lambda: first)
    log.info("a")
    log.info("b")
    assert len(first.scheduled) == 1 and stream.flushes == 0
    monkeypatch.setattr(logs.asyncio, "get_running_loop", lambda: second)
    log.info("c")
    assert len(second.scheduled) == 1

    def no_loop():
        raise RuntimeError("no running event loop")

    monkeypatch.setattr(logs.asyncio, "get_running_loop", no_loop)
    log.info("d")
    assert stream.flushes == 1
