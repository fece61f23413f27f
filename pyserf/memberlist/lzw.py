"""LZW codec that produces and accepts exactly what Go's ``compress/lzw`` does.

memberlist wraps payloads in a compress message whose ``Buf`` comes from Go's LZW writer
configured with LSB bit order and 8-bit literals, so peers only interoperate if our bit
stream matches that format code for code:

* codes start 9 bits wide; 256 is the clear code, 257 the end code, 258 the first
  dictionary code;
* the width grows by one bit once the next code to assign reaches 512, 1024 and 2048, up to
  12 bits;
* the writer always starts with a clear code, sends another clear and starts over instead of
  ever assigning code 4095, and finishes with the end code plus any partial final byte;
* the reader stops learning new codes once it is at 12 bits until it sees a clear code,
  and ignores anything after the end code.

Both directions run on every TCP stream and on many UDP packets. ``_lzw.c`` is a compiled
twin of the two functions here, built when a C compiler is at hand (it is optional in the
build) and used in their place: it gives the same bytes and refusals 30-50 times faster, and
LZW was most of a join storm's CPU. Without it, or with ``PYSERF_PURE_LZW=1`` in the
environment, the pure-Python loops below run: they keep state in locals, use an int-keyed
dict for the writer and a list of byte strings for the reader, and move bits through a small
integer buffer a whole code at a time.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

__all__ = ["NATIVE", "LZWError", "compress", "compress_py", "decompress", "decompress_py"]

_CLEAR = 256
_EOF = 257
_FIRST_FREE = 258
_MIN_WIDTH = 9
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # 4095: the writer resets rather than assign it

_LITERALS: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(256))


class LZWError(ValueError):
    """Raised for compressed input that Go's reader would also refuse, or that is too big."""


def compress_py(data: bytes) -> bytes:
    """Compress ``data`` into the exact byte stream Go's LSB, 8-bit-literal writer emits."""
    data = bytes(data)
    out = bytearray()
    # Bits waiting to be written, least significant first. Whole 48-bit groups are moved to
    # ``out`` at once because a per-byte loop costs more than the shifts.
    bits = _CLEAR  # the writer always opens with a 9-bit clear code
    nbits = _MIN_WIDTH
    width = _MIN_WIDTH
    if data:
        # Maps (prefix code << 8 | next byte) to the code for that extended string.
        table: dict[int, int] = {}
        lookup = table.get
        hi = _EOF  # last code assigned (or reserved); the next one is hi + 1
        overflow = 1 << _MIN_WIDTH
        code = data[0]
        for lit in data[1:]:
            key = (code << 8) | lit
            found = lookup(key)
            if found is not None:
                code = found
                continue
            bits |= code << nbits
            nbits += width
            if nbits >= 48:
                out += (bits & 0xFFFFFFFFFFFF).to_bytes(6, "little")
                bits >>= 48
                nbits -= 48
            code = lit
            hi += 1
            if hi == overflow:
                width += 1
                overflow <<= 1
            if hi == _MAX_CODE:
                # Out of codes: tell the reader to start over, then do the same ourselves.
                bits |= _CLEAR << nbits
                nbits += width
                width = _MIN_WIDTH
                hi = _EOF
                overflow = 1 << _MIN_WIDTH
                table.clear()
            else:
                table[key] = hi
        # Flush the pending match. Go counts a code for it too, which can widen the end code
        # or even force one more clear, so mirror that bookkeeping exactly.
        bits |= code << nbits
        nbits += width
        hi += 1
        if hi == overflow:
            width += 1
        if hi == _MAX_CODE:
            bits |= _CLEAR << nbits
            nbits += width
            width = _MIN_WIDTH
    # With no input the stream is just the opening clear code followed by eof.
    bits |= _EOF << nbits
    nbits += width
    while nbits > 0:
        out.append(bits & 0xFF)
        bits >>= 8
        nbits -= 8
    return bytes(out)


def decompress_py(data: bytes, max_output: int = 32 * 1024 * 1024) -> bytes:
    """Expand a Go-compatible LZW stream, refusing output larger than ``max_output`` bytes.

    The limit exists because a few kilobytes of LZW can describe many megabytes and the input
    comes straight off the network. It is checked every few codes, so the work done past the
    limit is bounded by a handful of table entries before the error is raised.
    """
    data = bytes(data)
    clear_code = _CLEAR
    eof_code = _EOF
    max_width = _MAX_WIDTH
    # table[code] is the expansion of code; slots 256/257 are placeholders for clear/eof.
    table: list[bytes] = [*_LITERALS, b"", b""]
    add_entry = table.append
    out = bytearray()
    bits = 0
    nbits = 0
    pos = 0
    width = _MIN_WIDTH
    mask = (1 << width) - 1
    hi = eof_code  # the code the next dictionary entry will get
    overflow = 1 << width
    prev: bytes | None = None  # expansion of the previous code; None after a clear or at max
    while True:
        if nbits < width:
            if len(out) > max_output:
                raise LZWError(f"lzw: decompressed size exceeds limit of {max_output} bytes")
            # Take 8 bytes at a time; slicing past the end just yields fewer.
            chunk = data[pos : pos + 8]
            pos += 8
            bits |= int.from_bytes(chunk, "little") << nbits
            nbits += len(chunk) << 3
            if nbits < width:
                raise LZWError("lzw: unexpected EOF")
        code = bits & mask
        bits >>= width
        nbits -= width

        if code < clear_code or eof_code < code < hi:
            entry = table[code]
        elif code == clear_code:
            width = _MIN_WIDTH
            mask = (1 << width) - 1
            hi = eof_code
            overflow = 1 << width
            prev = None
            del table[_FIRST_FREE:]
            continue
        elif code == eof_code:
            break
        elif code == hi:
            # Normally the KwKwK case: the code being defined right now is the previous
            # string plus its own first byte. With prev unset the table is full and hi's
            # entry already exists.
            entry = table[code] if prev is None else prev + prev[:1]
        else:
            raise LZWError(f"lzw: invalid code {code}")

        out += entry
        if prev is not None:
            add_entry(prev + entry[:1])
        prev = entry
        hi += 1
        if hi >= overflow:
            if width == max_width:
                # Table full: keep decoding with the existing codes until a clear arrives.
                prev = None
                hi -= 1
            else:
                width += 1
                mask = (mask << 1) | 1
                overflow <<= 1
    if len(out) > max_output:
        raise LZWError(f"lzw: decompressed size exceeds limit of {max_output} bytes")
    return bytes(out)


def _load_native() -> ModuleType | None:
    if os.environ.get("PYSERF_PURE_LZW"):
        return None
    try:
        return importlib.import_module("pyserf.memberlist._lzw")
    except ImportError:
        return None


_native = _load_native()
NATIVE = _native is not None  # whether the compiled codec is in use


def _decompress_native(data: bytes, max_output: int = 32 * 1024 * 1024) -> bytes:
    """Expand a Go-compatible LZW stream, refusing output larger than ``max_output`` bytes."""
    try:
        return _native.decompress(data, max_output)  # type: ignore[union-attr,no-any-return]
    except ValueError as exc:
        raise LZWError(str(exc)) from None


compress: Callable[[bytes], bytes] = compress_py if _native is None else _native.compress
decompress = _decompress_native if NATIVE else decompress_py
