"""The prologue every RPC command shares (pyserf.cli.rpc): the agent address and token from the
flags reach the client, a failed call prints serf's "<what>: <error>" and exits 1, and the
connection is closed whatever happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pyserf.cli import COMMANDS, main
from pyserf.cli.rpc import RPCCommand
from pyserf.client.errors import RPCError


class RefusingClient:
    """Stands in for RPCClient: connects, then every call fails with '<method> refused'."""

    made: list[RefusingClient] = []

    def __init__(self, addr: str, auth: str) -> None:
        self.addr, self.auth, self.closed = addr, auth, False
        RefusingClient.made.append(self)

    def __enter__(self) -> RefusingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RPCError(f"{name} refused")

        return refuse


# Each RPC command, arguments that get it past its own checks, and what it prints when the
# agent refuses its first call.
CASES = {
    "members": ([], "Error retrieving members: members_filtered refused\n"),
    "join": (["10.0.0.1"], "Error joining the cluster: join refused\n"),
    "leave": ([], "Error leaving: leave refused\n"),
    "force-leave": (["n1"], "Error force leaving: force_leave refused\n"),
    "tags": (["-set", "a=b"], "Error setting tags: update_tags refused\n"),
    "info": ([], "Error querying agent: stats refused\n"),
    "keys": (["-list"], "==> Asking all members for installed keys...\n\n"
                        "Failed to gather member keys: list_keys refused\n"),
    "event": (["deploy"], "Error sending event: user_event refused\n"),
    "query": (["uptime"], "Error sending query: query refused\n"),
    "monitor": ([], "Error starting stream: stream refused\n"),
    "reachability": ([], "Error getting members: members refused\n"),
    "rtt": (["n1", "n2"], "Error getting coordinates: get_coordinate refused\n"),
}


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> list[RefusingClient]:
    RefusingClient.made = []
    monkeypatch.setattr("pyserf.client.rpc_client.RPCClient", RefusingClient)
    return RefusingClient.made


def test_every_rpc_command_goes_through_the_prologue() -> None:
    rpc = {name for name, cmd in COMMANDS.items() if isinstance(cmd.run, RPCCommand)}
    assert rpc == set(CASES)
    assert set(COMMANDS) - rpc == {"agent", "keygen", "simulate", "version"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_call_prints_serfs_error_and_closes(
        capsys: pytest.CaptureFixture[str], refusing: list[RefusingClient], name: str) -> None:
    args, expected = CASES[name]
    code = main([name, "-rpc-addr=10.1.2.3:7373", "-rpc-auth=s3cret", *args])
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, expected, "")
    assert [(c.addr, c.auth, c.closed) for c in refusing] == [("10.1.2.3:7373", "s3cret", True)]


def test_local_checks_come_before_connecting(capsys: pytest.CaptureFixture[str],
                                            refusing: list[RefusingClient]) -> None:
    assert main(["join", "-rpc-addr=10.1.2.3:7373"]) == 1
    assert capsys.readouterr().out.startswith("At least one address to join must be specified.")
    assert refusing == []


def test_tags_reports_a_bad_pair_only_once_connected(capsys: pytest.CaptureFixture[str],
                                                     refusing: list[RefusingClient]) -> None:
    # serf parses -set pairs after connecting; the connection is still closed.
    assert main(["tags", "-set", "nopair"]) == 1
    assert capsys.readouterr().out.startswith("Error: ")
    assert [c.closed for c in refusing] == [True]
