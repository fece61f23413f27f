"""pyserf.agent.agent.Agent offers every operation of pyserf.agent.api.AgentAPI, with the same
parameters and the same sync/async kind, and the HTTP layer depends on nothing else of it."""

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


def _operations() -> list[str]:
    return [name for name, value in vars(AgentAPI).items()
            if callable(value) and not name.startswith("_")]


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


def test_http_layer_uses_only_the_agent_api() -> None:
    """Every ``agent.<attr>`` / ``self.agent.<attr>`` in pyserf/http is an AgentAPI operation,
    and nothing there imports the agent's modules."""
    operations = set(_operations())
    for path in sorted((ROOT / "pyserf" / "http").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in AGENT_MODULES, path
            if isinstance(node, ast.Attribute) and (
                    (isinstance(node.value, ast.Name) and node.value.id == "agent")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "agent")):
                assert node.attr in operations, f"{path.name}: agent.{node.attr}"
