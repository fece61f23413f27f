"""Start real pyserf and serf agent processes on loopback addresses and observe them.

Every agent gets its own 127.x.y.z address; its RPC listens on the same address, port 7373,
so no port bookkeeping is needed. Only processes started here are ever signalled.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERF = shutil.which("serf")
PYSERF = [sys.executable, "-m", "pyserf"]
REPO = Path(__file__).resolve().parents[2]
# Agents run from temporary directories; make sure they import this checkout.
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p), "PYTHONUNBUFFERED": "1"}


def _first_subnet() -> int:
    """Where this process's prefixes start (the n of next_subnet). pytest-xdist workers gw0,
    gw1, ... run test files side by side and their pids may agree modulo anything, so each
    owns 1000 prefixes from 127.144 on (gw15 ends at 127.207, below 127.231, the fixture
    capture's net); a lone pytest stays at its pid-derived offset in 127.100-127.140."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return (os.getpid() % 50) * 200
    index = int(worker.removeprefix("gw"))
    if index >= 16:
        raise RuntimeError(f"xdist worker {worker}: 127.x prefixes are laid out for 16")
    return 44 * 250 + index * 1000


_subnet = itertools.count(10 + _first_subnet())


def next_subnet() -> str:
    """A fresh 127.<a>.<b> prefix per cluster so tests never hear each other."""
    n = next(_subnet)
    return f"127.{100 + n // 250}.{n % 250}"


@dataclass
class Agent:
    kind: str  # "pyserf" or "serf"
    name: str
    ip: str
    proc: subprocess.Popen | None
    log_path: Path
    extra: list[str] = field(default_factory=list)
    port: int = 7946
    rpc_port: int = 7373

    @property
    def rpc(self) -> str:
        return f"{self.ip}:{self.rpc_port}"

    @property
    def bind(self) -> str:
        return f"{self.ip}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None


def binary(kind: str) -> list[str]:
    """The argv prefix that runs ``serf`` or ``pyserf``."""
    return [SERF] if kind == "serf" else list(PYSERF)


def child_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """CHILD_ENV with ``env`` laid over it; a None value removes that variable."""
    merged = {**CHILD_ENV, **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def run_cli(cli: str, *args: str, rpc: str | None = None, timeout: float = 20.0,
            env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run ``serf``/``pyserf`` CLI subcommand args (the first arg is the subcommand)."""
    argv = [*binary(cli), args[0]]
    if rpc:
        argv.append(f"-rpc-addr={rpc}")
    argv.extend(args[1:])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=child_env(env))


def members(cli: str, rpc: str) -> dict[str, tuple[str, str, dict[str, str]]]:
    """name -> (addr, status, tags) as the given CLI reports it (via -format json)."""
    out = run_cli(cli, "members", "-format=json", rpc=rpc)
    if out.returncode != 0:
        return {}
    data = json.loads(out.stdout)
    return {m["name"]: (m["addr"], m["status"], m.get("tags") or {})
            for m in data.get("members") or []}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2,
               what: str = "condition") -> float:
    """Poll until true; returns seconds waited, raises AssertionError on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = next_subnet()
        self.agents: list[Agent] = []
        self._host = 1

    def _ip(self) -> str:
        ip = f"{self.prefix}.{self._host}"
        self._host += 1
        return ip

    def start(self, kind: str, name: str, *args: str, ip: str | None = None, port: int = 7946,
              rpc_port: int = 7373, wait: bool = True, cwd: Path | None = None) -> Agent:
        ip = ip or self._ip()
        argv = [*binary(kind), "agent", f"-node={name}", f"-bind={ip}:{port}",
                f"-rpc-addr={ip}:{rpc_port}", *args]
        return self._launch(Agent(kind, name, ip, None, self.tmp / f"{name}.log", list(args),
                                  port, rpc_port), argv, wait, cwd)

    def start_in_netns(self, netns: str, name: str, *args: str, kind: str = "pyserf",
                       ip: str = "", wait: bool = True) -> Agent:
        """Start an agent inside a network namespace (flags decide bind and RPC; ``ip`` is
        only recorded, for tests that address the agent from outside)."""
        argv = ["ip", "netns", "exec", netns, *binary(kind), "agent", f"-node={name}", *args]
        return self._launch(Agent(kind, name, ip, None, self.tmp / f"{name}.log", list(args)),
                            argv, wait, None)

    def _launch(self, agent: Agent, argv: list[str], wait: bool, cwd: Path | None) -> Agent:
        with open(agent.log_path, "wb") as log:
            agent.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                          cwd=cwd or self.tmp)
        self.agents.append(agent)
        if wait:
            # Polled finely: tests start agents by the dozen and each start is ~0.5 s.
            wait_until(lambda: "agent running" in agent.log() or not agent.alive(), 15,
                       interval=0.05, what=f"{agent.name} to start")
            assert agent.alive(), f"{agent.name} exited:\n{agent.log()}"
        return agent

    def send(self, agent: Agent, sig: int) -> None:
        if agent.alive():
            agent.proc.send_signal(sig)

    def stop(self, agent: Agent, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        self.send(agent, sig)
        try:
            return agent.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            return agent.proc.wait(5)

    def close(self) -> None:
        for agent in self.agents:
            if agent.alive():
                agent.proc.kill()
        for agent in self.agents:
            try:
                agent.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


# ---- helpers for the interop tests (tests/e2e/test_interop_*.py) ---------------------------


def statuses(rpc: str) -> dict[str, str]:
    """name -> status straight over RPC: fast enough to time protocol events (a CLI run costs
    a process start). {} while the agent does not answer, so polling predicates retry."""
    from pyserf.client.rpc_client import RPCClient, RPCError

    try:
        with RPCClient(rpc, timeout=2.0, reply_timeout=3.0) as client:
            return {m.name: m.status for m in client.members()}
    except (RPCError, OSError):
        return {}


def both_cli_views(agents: list[Agent]) -> dict[tuple[str, str], dict[str, tuple[str, dict]]]:
    """(cli, agent name) -> {member: (status, tags)} through `serf members` and `pyserf
    members` (JSON) on every given agent."""
    return {(cli, agent.name): {n: (status, tags) for n, (_a, status, tags)
                                in members(cli, agent.rpc).items()}
            for agent in agents for cli in ("serf", "pyserf")}


EVENT_LOGGER = """#!/bin/sh
# One line per event: kind|user event name|member names (or the payload), space-separated.
printf '%s|%s|%s\\n' "$SERF_EVENT" "$SERF_USER_EVENT" "$(cut -f1 | tr '\\n' ' ')" >> "$1"
"""


def event_logger(tmp: Path) -> Path:
    """A handler script that appends every event it gets to the file named by its argument."""
    script = tmp / "log-event.sh"
    if not script.exists():
        script.write_text(EVENT_LOGGER)
        script.chmod(0o755)
    return script


def logged_events(path: Path) -> list[tuple[str, str, list[str]]]:
    """(kind, user event name, names or payload words) per line a logger handler wrote."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        kind, _, rest = line.partition("|")
        name, _, words = rest.partition("|")
        rows.append((kind, name, words.split()))
    return rows
