"""Replay the committed fuzz corpus through the fuzz targets: a fast regression test.

Every input under tests/fuzz/corpus/<target>/ (valid seeds and ``finding-*`` inputs that once
broke an invariant) must leave the agent within its invariants. See tests/fuzz/__init__.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.harness import Violation, quiet_pyserf_logs
from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"


def _inputs(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


def test_every_target_has_seeds():
    for target in TARGETS:
        seeds = [p for p in _inputs(target) if p.name.startswith("seed-")]
        assert seeds, f"no seeds for {target}: run .venv/bin/python -m tests.fuzz.make_corpus"


def test_corpus_stays_small():
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total < 200 * 1024, f"corpus is {total} bytes: run scripts/fuzz --merge"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_within_invariants(target):
    failures = []
    with quiet_pyserf_logs():
        for path in _inputs(target):
            try:
                TARGETS[target](path.read_bytes())
            except Violation as v:
                failures.append(f"{path.name}: {v.key()}: {v}"[:400])
    assert not failures, f"{len(failures)} corpus input(s) break the agent:\n" + "\n".join(
        failures)
