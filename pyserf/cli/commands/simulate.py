"""``simulate``: the cluster simulator (pyserf.sim), imported only when this command runs."""

from __future__ import annotations

from pyserf.cli.registry import command


def _simulate_help() -> str:
    from pyserf.sim.cli import HELP

    return HELP


# A 2,000-node run holds ~3.5 GB of small objects: freeing them at exit took most of a minute.
@command("simulate", "Simulates a cluster in virtual time: convergence and cost",
         _simulate_help, skip_teardown=True)
def cmd_simulate(args: list[str]) -> int:
    from pyserf.sim.cli import main as simulate  # the simulator stays out of the agent

    return simulate(args)
