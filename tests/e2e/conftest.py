from __future__ import annotations

import pytest

from tests.e2e.harness import SERF, Cluster


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def need_serf():
    if SERF is None:
        pytest.skip("the real serf binary is not installed (apt-get install serf)")
