"""The compiled LZW codec under AddressSanitizer and UBSan, against the pure-Python codec.

``pyserf/memberlist/_lzw.c`` decodes bytes straight off the network. This builds it with
``-fsanitize=address,undefined`` into a temporary directory, re-runs itself with the ASan
runtime preloaded, and for ``--seconds`` feeds both codecs random bytes, valid streams with
bits flipped, truncated streams and decompression bombs, under limits from -1 to 16 MiB.
A memory error aborts the run with the sanitizer's report; a disagreement between the codecs
exits 1. Usage::

    python benchmarks/lzw_sanitize.py [--seconds 60] [--seed 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyserf.memberlist import lzw  # noqa: E402
from tests.unit.test_lzw import CLEAR, EOF, pack_codes  # noqa: E402

SOURCE = ROOT / "pyserf" / "memberlist" / "_lzw.c"
ENV_SO = "PYSERF_LZW_ASAN_SO"


def build(into: Path) -> Path:
    so = into / f"_lzw{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=undefined", "-fPIC", "-shared",
                    f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(so)],
                   check=True)
    return so


def outcome(decompress, data: bytes, limit: int) -> bytes | str:
    try:
        return decompress(data, limit)
    except ValueError:
        return "refused"


def campaign(so: Path, seconds: float, seed: int) -> int:
    spec = importlib.util.spec_from_file_location("_lzw", so)
    assert spec is not None and spec.loader is not None
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    rng = random.Random(seed)
    generation = [CLEAR, 0, *range(258, 4095)]
    fixed = [pack_codes(generation * 20 + [EOF]), pack_codes(generation * 2 + [EOF])]
    cases = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kind = rng.randrange(5)
        if kind == 0:
            blob = rng.randbytes(rng.randrange(0, 400))
        elif kind == 4:
            blob = rng.choice(fixed)
        else:
            data = bytes(rng.randrange(rng.choice([2, 16, 256]))
                         for _ in range(rng.randrange(1, 6000)))
            stream = native.compress(data)
            if stream != lzw.compress_py(data) or native.decompress(stream, 1 << 24) != data:
                print(f"compress disagrees or does not round-trip: {data[:64]!r}...")
                return 1
            damaged = bytearray(stream)
            for _ in range(rng.randrange(1, 5)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            blob = bytes(damaged[: rng.randrange(len(damaged) + 1)] if kind == 3 else damaged)
        limit = rng.choice([-1, 0, 10, 1000, 1 << 20, 1 << 24])
        if outcome(native.decompress, blob, limit) != outcome(lzw.decompress_py, blob, limit):
            print(f"decompress disagrees (limit {limit}): {blob.hex()}")
            return 1
        cases += 1
    print(f"{cases} cases in {seconds:.0f} s: no sanitizer report, the codecs agree on all")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if ENV_SO in os.environ:
        return campaign(Path(os.environ[ENV_SO]), args.seconds, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        so = build(Path(tmp))
        runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        env = {**os.environ, ENV_SO: str(so), "LD_PRELOAD": runtime,
               "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
        return subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
