"""An idle plain agent loads only what it uses, so its RSS stays close to serf's.

RSS itself is measured by benchmarks/cluster_bench.py; this test pins the cause instead: the
modules of features a plain agent (no encryption, no discover, no snapshot, no config file)
never uses stay out of the process. ``python -X importtime`` lists every module imported.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each is loaded only by the feature named: importing it eagerly again costs every agent.
LAZY = {
    "cryptography": "encryption",
    "re2": "filters compiled from a regular expression",
    "zeroconf": "-discover",
    "pyserf.agent.discovery": "-discover",
    "pyserf.client.rpc_client": "the RPC client commands",
    "pyserf.agent.snapshot_file": "-snapshot",
    "pyserf.serf.snapshot": "-snapshot",
    "json": "config, tags and keyring files",
    "decimal": "config decoding errors",
    "aiohttp": "http_addr (the HTTP API)",
    "pyserf.http.server": "http_addr (the HTTP API)",
    "pyserf.telemetry.sinks": "statsd_addr or statsite_addr",
    "prometheus_client": "GET /metrics",
    "pyserf.telemetry.prometheus": "GET /metrics",
}


def _idle_agent_imports(*flags: str) -> set[str]:
    ip = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    # Under scripts/test, coverage starts in every child process (and imports json itself):
    # the agent is measured without it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "COV_CORE"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "pyserf", "agent", "-node=rss",
         f"-bind={ip}:7946", f"-rpc-addr={ip}:7373", *(f.format(ip=ip) for f in flags)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        cwd=ROOT, text=True)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Serf agent running!" in line or time.monotonic() > deadline:
                break
        time.sleep(0.5)  # idle a moment: anything imported on the first timers counts too
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    return {line.rsplit("|", 1)[1].strip() for line in err.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def _loaded(imported: set[str], lazy: dict[str, str]) -> dict[str, str]:
    return {name: why for name, why in lazy.items()
            if name in imported or any(m.startswith(name + ".") for m in imported)}


def test_idle_plain_agent_leaves_optional_modules_unloaded() -> None:
    imported = _idle_agent_imports()
    # The parse saw a running agent: its RPC server, agent and command were imported, and
    # the in-memory metrics recorder every agent runs (as serf's InmemSink).
    assert {"pyserf.agent.agent", "pyserf.agent.lifecycle", "pyserf.agent.rpc",
            "pyserf.telemetry.recorder", "asyncio"} <= imported
    loaded = _loaded(imported, LAZY)
    assert not loaded, f"imported by an idle plain agent, needed only for: {loaded}"


def test_idle_listener_agent_imports_prometheus_client_only_when_scraped() -> None:
    imported = _idle_agent_imports("-http-addr={ip}:8500")
    assert {"aiohttp", "pyserf.http.server"} <= imported
    # The listener brings aiohttp and its JSON API (json); prometheus-client waits for a scrape.
    lazy = {name: why for name, why in LAZY.items()
            if "http_addr" not in why and name != "json"}
    loaded = _loaded(imported, lazy)
    assert not loaded, f"imported by an idle agent with a listener, needed only for: {loaded}"


def test_cli_commands_other_than_agent_leave_the_agent_config_unloaded() -> None:
    """Every CLI call imports all command modules to list them; the agent's config (its
    dataclasses and event filters) loads only when the agent command runs."""
    probe = ("import sys, pyserf.cli.dispatch, pyserf.cli.commands.members; "
             "print(sorted(m for m in sys.modules if m.startswith('pyserf.agent.config')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "['pyserf.agent.config_error']", out
