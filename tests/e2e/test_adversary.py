"""End-to-end adversary (issue 8): a real pyserf agent, plain and encrypted, under every attack.

After each attack the agent must answer a UDP ping, a TCP push-pull, RPC ``members`` and
``event`` within 2 s, be alive with RSS under 150 MiB, and at the end of each group let a
second agent join (criteria and attacks in adversary_lib.py; the serf comparison is
benchmarks/adversary.py). Sizes are the QUICK ones so the module stays within minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import adversary_lib as adv

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

# One case per attack, then the join check of its group, in campaign order.
CASES = []
for _group in adv.GROUPS:
    _members = [a for a in adv.ATTACKS if a.group == _group]
    CASES += [a.name for a in _members]
    if not all(a.fresh for a in _members):
        CASES.append(f"join:{_group}")
BY_NAME = {a.name: a for a in adv.ATTACKS}


@pytest.fixture(scope="module", params=["plain", "encrypted"])
def campaign(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[adv.Campaign]:
    tmp: Path = tmp_path_factory.mktemp(f"adv-{request.param}")
    arena = adv.Arena(tmp, "pyserf", request.param == "encrypted", adv.QUICK)
    try:
        yield adv.Campaign(arena)
    finally:
        arena.close()


@pytest.mark.parametrize("case", CASES)
def test_attack(campaign: adv.Campaign, case: str) -> None:
    if case.startswith("join:"):
        result = campaign.join_check(case.split(":", 1)[1])
    else:
        result = campaign.run(BY_NAME[case])
    assert result.ok, (
        f"{case} broke the {campaign.arena.mode} agent: {result.reason} "
        f"(peak RSS {result.peak_rss_mib} MiB, worst ping {result.worst_ping_ms} ms, "
        f"longest silence {result.longest_silence_ms} ms)")
    assert result.peak_rss_mib <= adv.RSS_BOUND_MIB, result
    # Stopping answering for more than 2 s during the attack breaks the agent too.
    assert result.longest_silence_ms <= adv.HEALTH_TIMEOUT_S * 1000, result
