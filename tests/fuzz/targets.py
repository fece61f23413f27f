"""Fuzz targets: raw bytes in, a :class:`~tests.fuzz.harness.Violation` out if the agent breaks.

Each input runs against a freshly built agent (about 0.1 ms), so a finding replays on its own,
independently of the inputs before it. The same functions serve the coverage-guided fuzzer
(tests/fuzz/run.py) and the corpus replay in the unit tier.
"""

from __future__ import annotations

from collections.abc import Callable

from pyserf.memberlist import lzw
from tests.fuzz import wire
from tests.fuzz.harness import CPU_SECONDS_PER_INPUT, Harness, Violation, guarded

# What LZW decompression may return at most; mirrors the bound pyserf passes for streams.
LZW_TEST_LIMIT = 1 << 20


def harness(encrypted: bool = False, real_peer: bool = False) -> Harness:
    """A fresh target agent that has a query of its own running (see ``h.query``)."""
    h = Harness(seed=7, encrypted=encrypted, real_peer=real_peer)
    # A query of our own is running, so responses and acks have a collector to reach.
    ltime = h.serf.query_clock.time
    h.net.on_query(h.node, h.serf.query("fuzz", b"", h.now, request_ack=True, timeout=30.0))
    h.query = h.serf._queries[ltime]  # its collector: the LTime and ID answers must name
    return h


def _through(entry: str) -> Callable[[bytes], None]:
    """A target that hands the input to one harness entry point, then checks invariants."""

    def target(data: bytes) -> None:
        h = harness()
        getattr(h, entry)(data)
        h.check()

    target.__name__ = entry
    return target


def stream_reply(data: bytes) -> None:
    """The reply to a push-pull we started for a join: it must finish the join either way."""
    h = harness()
    stream_id, outcome = h.start_join()
    h.stream_reply(stream_id, data, outcome)
    h.check()


def serf_state(data: bytes) -> None:
    """Serf's push-pull user state; the first byte picks join or not."""
    h = harness()
    join = bool(data[:1]) and data[0] & 1 == 1
    h.serf_state(data[1:], join)
    h.check()


def _lzw_outcome(decompress: Callable[[bytes, int], bytes], data: bytes) -> bytes | None:
    """The output, or None for a refusal (ValueError); anything else is the finding."""
    try:
        with guarded(CPU_SECONDS_PER_INPUT):
            return decompress(data, LZW_TEST_LIMIT)
    except ValueError:
        return None
    except Exception as exc:  # noqa: BLE001 - the finding
        raise Violation("escaped", f"lzw decompress raised {exc!r}", exc) from None


def lzw_decompress(data: bytes) -> None:
    """LZW decompression is bounded and fails only with ValueError; valid output round-trips.

    The pure-Python codec is the one the fuzzer's coverage can see into; the compiled one,
    which agents use when it is built, must agree with it on every input."""
    out = _lzw_outcome(lzw.decompress_py, data)
    if lzw.NATIVE and _lzw_outcome(lzw.decompress, data) != out:
        raise Violation("lzw-codecs-disagree", "the compiled and pure-Python codecs differ")
    if out is None:
        return
    if len(out) > LZW_TEST_LIMIT:
        raise Violation("lzw-unbounded", f"{len(out)} bytes out, limit {LZW_TEST_LIMIT}")
    if lzw.decompress(lzw.compress(out), LZW_TEST_LIMIT) != out:
        raise Violation("lzw-roundtrip", f"{len(out)} bytes do not survive compress+decompress")
    if lzw.NATIVE and lzw.compress(out) != lzw.compress_py(out):
        raise Violation("lzw-codecs-disagree", "the two codecs compress differently")


TARGETS: dict[str, Callable[[bytes], None]] = {
    # A UDP packet: decryption, CRC, LZW, compound nesting and every message handler.
    "packet": _through("packet"),
    # An inbound TCP stream message: the stream parser, push-pull merge, ping, user.
    "stream": _through("stream"),
    "stream_reply": stream_reply,
    # A serf message (the payload of a memberlist user message).
    "serf_msg": _through("serf_msg"),
    "serf_state": serf_state,
    "lzw": lzw_decompress,
}

__all__ = ["TARGETS", "wire"]
