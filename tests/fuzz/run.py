"""Run one fuzz target under atheris (libFuzzer), coverage-guided over pyserf's code.

    .venv/bin/python -m tests.fuzz.run TARGET [--seconds N] [--findings DIR] [--merge]

The committed corpus tests/fuzz/corpus/TARGET/ seeds the run; new coverage goes to a scratch
directory, so a CI run never dirties the checkout. ``--merge`` instead minimises scratch plus
committed inputs back into the committed corpus (run it after a long session, then commit).

A failing input does not stop the run: each distinct finding (violation kind, exception type
and the pyserf line that raised) is written once to the findings directory as the input plus a
``.txt`` with the traceback, and the exit status is 1 if anything was found. Copy the inputs
worth keeping into tests/fuzz/corpus/TARGET/ named ``finding-*`` so the unit tier replays them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pyserf"]):
    from tests.fuzz.harness import Violation, describe, quiet_pyserf_logs
    from tests.fuzz.mutator import custom_mutator
    from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent / "corpus"
# libFuzzer's own per-input timeout, a backstop behind the harness's CPU budget.
LIBFUZZER_TIMEOUT = 20
# RSS at which libFuzzer stops the run as out-of-memory.
RSS_LIMIT_MB = 3072
MAX_INPUT_LEN = 16384
# Targets whose inputs are msgpack messages get the structure-aware mutator as well:
# (bytes of flags before the message, whether it is a serf message).
STRUCTURED = {"packet": (0, False), "stream": (0, False), "stream_reply": (0, False),
              "serf_msg": (0, True), "serf_state": (1, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--findings", default=os.environ.get("FUZZ_FINDINGS",
                                                             "/tmp/pyserf-fuzz-findings"))
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--scratch", default="")
    # libFuzzer's merge re-runs argv[0] through the shell with its own flags and directories.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    seeds = CORPUS / args.target
    seeds.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    scratch.mkdir(parents=True, exist_ok=True)
    findings = Path(args.findings) / args.target
    findings.mkdir(parents=True, exist_ok=True)
    seen: set[str] = {p.stem for p in findings.glob("*.txt")}
    target = TARGETS[args.target]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except Violation as v:
            key = v.key()
            digest = hashlib.sha1(key.encode()).hexdigest()[:12]
            if digest not in seen:
                seen.add(digest)
                (findings / digest).write_bytes(data)
                (findings / f"{digest}.txt").write_text(f"{key}\n\n{describe(v)}")
                print(f"FINDING {args.target} {digest}: {key}", flush=True)

    argv0 = f"{sys.executable} -m tests.fuzz.run {args.target} --child --findings {args.findings}"
    if args.child:
        libfuzzer = [argv0]
        atheris.Setup(libfuzzer + extra, one_input, custom_mutator=None)
        with quiet_pyserf_logs():
            atheris.Fuzz()
        return
    libfuzzer = [argv0, f"-timeout={LIBFUZZER_TIMEOUT}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                 f"-max_len={MAX_INPUT_LEN}", "-print_final_stats=1",
                 f"-artifact_prefix={findings}/"]
    if args.merge:
        libfuzzer += ["-merge=1", str(seeds), str(scratch)]
    else:
        libfuzzer += [f"-max_total_time={args.seconds}", str(scratch), str(seeds)]
    mutator = None
    if args.target in STRUCTURED:
        mutator = custom_mutator(*STRUCTURED[args.target])
    atheris.Setup(libfuzzer + extra, one_input, custom_mutator=mutator)
    # libFuzzer ends the process itself (exit()), so findings are written as they happen.
    with quiet_pyserf_logs():
        atheris.Fuzz()


if __name__ == "__main__":
    main()
