"""The committed serf fixtures are what the real serf binary produces today.

Runs scripts/capture-serf-fixtures --quick into a temporary directory (three serf agents per
run behind a recording relay on 127.231.x.x, plain and encrypted at once, plus every error case)
and compares with tests/fixtures/serf-0.9.4: error texts must be identical (they are
deterministic); packets differ in sequence numbers, nonces and timing, so for them the test
compares structure: the same kinds of message, each with the same msgpack fields, all decoded
and re-encoded byte for byte by pyserf as the unit tests do with the committed capture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pyserf.memberlist import codec
from pyserf.memberlist.codec import MsgType, PushPull
from pyserf.serf import messages
from tests.e2e.harness import REPO, SERF
from tests.unit.test_codec import (
    CAPTURES,
    EXPECTED_KINDS,
    FIELDS,
    Part,
    body_start,
    datagrams,
    decoded,
    encoded,
    load_fixture,
    streams,
    unwrap,
)

SCRIPT = REPO / "scripts" / "capture-serf-fixtures"
# The quick run takes ~13 s alone (C's failure detection with -profile=local is most of it:
# suspicion 3 * max(1, log10(3)) * 1 s probe interval = 3 s after the first missed probe, then
# the dead message's gossip); 30 s is the budget the test command grants it, and the script's
# own waits end every stage well before the hard timeout below.
BUDGET = 30.0
HARD_TIMEOUT = 150.0
# Whether serf batches gossip into a datagram it then compresses depends on timing, so a
# compressed datagram is not required of every run (the push-pull streams always are).
TIMING_DEPENDENT = {"compress"}

pytestmark = pytest.mark.skipif(SERF is None, reason="the real `serf` binary is not on PATH")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("capture")
    start = time.monotonic()
    # Its own session, so a run that overstays is stopped with the serf agents it started
    # (subprocess.run's timeout kills the script alone and left them running).
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--net", "127.231", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=HARD_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The script's own cleanup first; then whatever of the session is left (serf agents
        # outlive a SIGTERM by seconds).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the capture overstayed {HARD_TIMEOUT:.0f} s; stopped with its agents")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, stdout + stderr
    data = {name: json.loads((out / name).read_text())
            for name in (*CAPTURES, "errors.json", "config-merge.json", "meta.json")}
    data["elapsed"] = elapsed
    return data


def leaves(capture: dict) -> list[Part]:
    return [part for record, _, plain in datagrams(capture) for part in unwrap(plain, record)]


def field_shapes(parts: list[Part]) -> dict[str, set[bytes]]:
    """Per kind of message, the msgpack field names serf used."""
    shapes: dict[str, set[bytes]] = {}
    for part in parts:
        if part.kind in FIELDS:
            body = msgpack.unpackb(part.raw[body_start(part):], raw=True)
            shapes.setdefault(part.kind, set()).update(body)
    return shapes


def test_quick_capture_is_bounded(fresh: dict[str, Any]) -> None:
    assert fresh["elapsed"] < BUDGET, f"quick capture took {fresh['elapsed']:.1f} s"
    assert fresh["meta.json"]["mode"] == "quick"


def test_error_texts_and_merge_are_identical(fresh: dict[str, Any]) -> None:
    committed = load_fixture("errors.json")["cases"]
    now = fresh["errors.json"]["cases"]
    assert [c["id"] for c in now] == [c["id"] for c in committed]
    for old, new in zip(committed, now, strict=True):
        assert new == old, old["id"]
    assert fresh["meta.json"]["serf_version"] == load_fixture("meta.json")["serf_version"]
    assert fresh["config-merge.json"] == load_fixture("config-merge.json")


@pytest.mark.parametrize("name", CAPTURES)
def test_wire_capture_has_the_committed_structure(fresh: dict[str, Any], name: str) -> None:
    capture, committed = fresh[name], load_fixture(name)
    assert capture["encrypted"] == committed["encrypted"]
    assert [s["step"] for s in capture["steps"]] == [s["step"] for s in committed["steps"]]
    parts = leaves(capture)
    old_parts = leaves(committed)
    kinds = {p.kind for p in parts}
    assert kinds >= EXPECTED_KINDS - TIMING_DEPENDENT, EXPECTED_KINDS - kinds
    # Every kind of message has the fields it had when the fixtures were captured.
    new_shapes, old_shapes = field_shapes(parts), field_shapes(old_parts)
    for kind in FIELDS:
        assert new_shapes.get(kind) == old_shapes[kind], kind
    # ... and pyserf decodes and re-encodes each one to serf's bytes.
    for part in parts:
        if part.kind in FIELDS:
            assert encoded(part, decoded(part)) == part.raw, part.kind
        elif part.kind == "compound":
            assert codec.make_compound(codec.split_compound(part.raw[1:])[0]) == part.raw
        elif part.kind == "compress":
            assert codec.compress(codec.decompress_body(part.raw[1:])) == part.raw
    events = {(e.name, e.payload) for e in (decoded(p) for p in parts
                                           if p.kind == "user:user_event")}
    assert events == {("deploy", b"v2")}
    assert set(capture["cli"]) == set(committed["cli"])
    if "members-json" in committed["cli"]:
        def members(text: str) -> list[tuple[str, dict, str, dict]]:
            return sorted((m["name"], m["tags"], m["status"], m["protocol"])
                          for m in json.loads(text)["members"])
        assert members(capture["cli"]["members-json"]) == members(
            committed["cli"]["members-json"])


@pytest.mark.parametrize("name", CAPTURES)
def test_push_pull_streams_have_the_committed_structure(fresh: dict[str, Any],
                                                        name: str) -> None:
    def shape(capture: dict) -> list[tuple[int, bool, list[str], list[str]]]:
        out = []
        for _, _, plain in streams(capture):
            assert plain[0] == MsgType.COMPRESS
            inner = codec.decompress_body(plain[1:])
            assert codec.compress(inner) == plain
            push_pull = PushPull.decode_stream(inner[1:])
            assert push_pull.encode() == inner
            state = messages.PushPullState.decode_state(push_pull.user_state)
            assert state.encode() == push_pull.user_state
            out.append((inner[0], push_pull.join, sorted(n.name for n in push_pull.nodes),
                        sorted(state.status_ltimes)))
        return sorted(out)

    assert shape(fresh[name]) == shape(load_fixture(name))


def test_pyserf_only_texts_do_not_occur_in_serf() -> None:
    """pyserf's only added texts are `-config-check`, its verdict line and `-wait-full` (the
    PYSERF_* tables of the unit tests); the serf binary holds none of them, nor the suffixes
    pyserf once added to errors, while it does hold the texts the tests take as serf's."""
    from tests.unit.test_cli_parse import PYSERF_CONFIG_VALID, PYSERF_EXTRA_OPTIONS

    assert SERF is not None
    binary = Path(SERF).read_bytes()
    ours = {PYSERF_CONFIG_VALID.removeprefix("==> ").strip(), " (flag -", " (key '", ", column ",
            *(f"-{o}" for o in PYSERF_EXTRA_OPTIONS)}
    assert [text for text in sorted(ours) if text.encode() in binary] == []
    for text in ("illegal base64 data at input byte", "Failed to create memberlist: ",
                 "Invalid encryption key: ", "has invalid keys: ",
                 "Failed to setup the Serf agent: ", "Failed to decode keyring file: ",
                 "Empty primary key not allowed", "after top-level value",
                 "has no '%s' address", "failed to open snapshot: "):
        assert text.encode() in binary, text


def test_fixture_readme_names_every_file() -> None:
    fixtures = Path(REPO, "tests", "fixtures", "serf-0.9.4")
    readme = (fixtures / "README.md").read_text()
    for path in fixtures.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, path.name
    assert "scripts/capture-serf-fixtures" in readme
