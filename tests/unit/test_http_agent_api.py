"""pyserf.agent.agent.Agent offers every operation of pyserf.agent.api.AgentAPI, with the same
parameters and the same sync/async kind, and the operator surfaces (HTTP, RPC, handler scripts,
mDNS discovery) depend on nothing else of it: no ``agent.serf``, no ``agent.pump()``."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from pyserf.agent.agent import Agent
from pyserf.agent.api import AgentAPI

ROOT = Path(__file__).resolve().parents[2]
# The agent's own modules, which the HTTP layer must reach only through AgentAPI.
AGENT_MODULES = {"pyserf.agent.agent", "pyserf.agent.lifecycle", "pyserf.agent.transport",
                 "pyserf.agent.persistence"}


# The agent modules that must reach the agent only through AgentAPI, beside pyserf/http
# (lifecycle.py is the agent's own; it still uses its config, log handler and handlers).
API_CLIENTS = ["rpc.py", "rpc_session.py", "rpc_commands.py", "rpc_streams.py", "handlers.py",
               "discovery.py", "hosts_file.py"]


def _operations() -> list[str]:
    return [name for name, value in vars(AgentAPI).items()
            if callable(value) and not name.startswith("_")]


def _properties() -> list[str]:
    return [name for name, value in vars(AgentAPI).items() if isinstance(value, property)]


def _agent_uses(path: Path) -> list[tuple[str, set[str] | None]]:
    """(attribute, imported names or None) for every ``agent.<attr>`` / ``self.agent.<attr>``
    and every ``from <module> import ...`` in ``path``."""
    uses: list[tuple[str, set[str] | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            uses.append((node.module or "", {alias.name for alias in node.names}))
        if isinstance(node, ast.Attribute) and (
                (isinstance(node.value, ast.Name) and node.value.id == "agent")
                or (isinstance(node.value, ast.Attribute) and node.value.attr == "agent")):
            uses.append((node.attr, None))
    return uses


def test_agent_satisfies_the_agent_api() -> None:
    operations = _operations()
    assert {"members", "join", "query", "subscribe", "key_operation"} <= set(operations)
    for name in operations:
        wanted = inspect.signature(getattr(AgentAPI, name))
        have = inspect.signature(getattr(Agent, name))
        assert list(have.parameters) == list(wanted.parameters), name
        assert [p.kind for p in have.parameters.values()] == [
            p.kind for p in wanted.parameters.values()], name
        assert inspect.iscoroutinefunction(getattr(Agent, name)) == (
            inspect.iscoroutinefunction(getattr(AgentAPI, name))), name


def test_rpc_handlers_and_discovery_use_only_the_agent_api() -> None:
    """They name no Agent class and no agent attribute outside AgentAPI (so neither
    ``agent.serf`` nor ``agent.pump``: operations pump inside the agent)."""
    allowed = set(_operations()) | set(_properties())
    for name in API_CLIENTS:
        path = ROOT / "pyserf" / "agent" / name
        for attr, imported in _agent_uses(path):
            if imported is not None:
                assert attr not in AGENT_MODULES and "Agent" not in imported, (name, attr)
            else:
                assert attr in allowed, f"{name}: agent.{attr}"
    assert "serf" not in allowed and "pump" not in allowed


def test_http_layer_uses_only_the_agent_api() -> None:
    """Every ``agent.<attr>`` / ``self.agent.<attr>`` in pyserf/http is an AgentAPI operation,
    and nothing there imports the agent's modules."""
    operations = set(_operations())
    for path in sorted((ROOT / "pyserf" / "http").glob("*.py")):
        for attr, imported in _agent_uses(path):
            if imported is not None:
                assert attr not in AGENT_MODULES, path
            else:
                assert attr in operations, f"{path.name}: agent.{attr}"
