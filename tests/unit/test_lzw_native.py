"""The compiled LZW codec (``_lzw.c``) against the pure-Python one: same bytes, same refusals.

tests/unit/test_lzw.py runs its vectors and limits against both; here they meet on inputs
Hypothesis draws, on damaged streams and on the decoder's edge cases.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyserf.memberlist import lzw
from pyserf.memberlist.lzw import LZWError
from tests.unit.test_lzw import CLEAR, EOF, pack_codes


def test_compiled_codec_is_in_use() -> None:
    """scripts/bootstrap installs a C compiler, so a test run without the compiled codec
    means the build skipped it (it is optional) and agents run at a fraction of the speed."""
    if os.environ.get("PYSERF_PURE_LZW"):
        pytest.skip("PYSERF_PURE_LZW asks for the pure-Python codec")
    assert lzw.NATIVE, "pyserf/memberlist/_lzw.c was not built: is a C compiler installed?"
    assert lzw.compress is not lzw.compress_py and lzw.decompress is not lzw.decompress_py


def _outcome(fn, *args) -> bytes | str:
    try:
        return fn(*args)
    except LZWError:
        return "LZWError"


needs_native = pytest.mark.skipif(not lzw.NATIVE, reason="the compiled codec is not built")


@needs_native
@settings(max_examples=400, deadline=None)
@given(data=st.one_of(st.binary(max_size=3000),
                      st.lists(st.sampled_from([b"a", b"b", b"ab", b"\x00" * 7, b"Name"]),
                               max_size=2000).map(b"".join)))
def test_compiled_compress_matches_python(data: bytes) -> None:
    out = lzw.compress(data)
    assert out == lzw.compress_py(data)
    assert lzw.decompress(out) == data


@needs_native
@settings(max_examples=600, deadline=None)
@given(blob=st.binary(max_size=400), limit=st.integers(min_value=-1, max_value=5000))
def test_compiled_decompress_agrees_on_any_bytes(blob: bytes, limit: int) -> None:
    # Random bytes are mostly invalid streams: both must refuse them, or both give the same.
    assert _outcome(lzw.decompress, blob, limit) == _outcome(lzw.decompress_py, blob, limit)


@needs_native
@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), flips=st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)), max_size=4))
def test_compiled_decompress_agrees_on_damaged_streams(data: bytes,
                                                       flips: list[tuple[int, int]]) -> None:
    # Valid streams with a few bits flipped reach the deep branches (codes near hi, KwKwK,
    # the full table) that random bytes rarely do.
    stream = bytearray(lzw.compress_py(data))
    for index, bit in flips:
        stream[index % len(stream)] ^= 1 << bit
    got = _outcome(lzw.decompress, bytes(stream), 1 << 20)
    assert got == _outcome(lzw.decompress_py, bytes(stream), 1 << 20)


@needs_native
def test_compiled_decompress_agrees_on_full_tables_and_bombs() -> None:
    generation = [CLEAR, 0, *range(258, 4095)]
    literals = [(i * 7) % 256 for i in range(3839)]
    cases = [
        pack_codes(generation * 3 + [EOF]),
        pack_codes([CLEAR, *literals, 4095, ord("X"), 4095, 300, CLEAR, 113, 113, 258, EOF]),
        pack_codes([CLEAR, *literals, 4095, 4095, EOF]),
        lzw.compress_py(os.urandom(300_000)),
    ]
    for stream in cases:
        for limit in (0, 100, 1 << 20, 1 << 25):
            assert _outcome(lzw.decompress, stream, limit) == _outcome(lzw.decompress_py,
                                                                       stream, limit)
