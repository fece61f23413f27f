"""Hostile-input testing of the sans-I/O machines: harness, fuzz targets and their corpus.

- ``wire.py``: independent encoders for every memberlist and serf message;
- ``harness.py``: one simulated agent, the entry points hostile bytes reach, the invariants;
- ``targets.py``: the fuzz targets (packet, stream, stream_reply, serf_msg, serf_state, lzw);
- ``run.py``: the atheris (libFuzzer) driver; ``make_corpus.py`` regenerates the seeds;
- ``corpus/<target>/``: committed inputs (seeds, plus ``finding-*`` inputs that once broke
  something), replayed by tests/unit/test_fuzz_corpus.py on every unit run.

Short runs (what the test command does, about 20 s per target)::

    scripts/fuzz            # every target, 20 s each
    scripts/fuzz 600 packet # one target for ten minutes

Longer on demand: ``scripts/fuzz 3600``, then ``scripts/fuzz --merge`` to minimise what was
learned into the committed corpus, and commit it. Findings (input + traceback) land in
$FUZZ_FINDINGS (default: a fresh directory under /tmp, printed at the end).
"""
