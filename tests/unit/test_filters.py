"""Filters are Go regexps (RE2): serf's matches, serf's refusals and error texts, linear time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyserf.serf import filters
from pyserf.serf.filters import FilterError, compile_anchored, search

# What real serf 0.9.4 answers to `serf members -tag role=<expr>` (its agent log, verbatim).
SERF_ERRORS = {
    "(abc": "missing closing ): `^(abc$`",
    "(?:){4294967294}": "invalid repeat count: `{4294967294}`",
    "a{1001}": "invalid repeat count: `{1001}`",
    "(a)\\1": "invalid escape sequence: `\\1`",
    "(?=x)": "invalid or unsupported Perl syntax: `(?=`",
    "\\C": "invalid escape sequence: `\\C`",
    "x**": "invalid nested repetition operator: `**`",
    "[z-a]": "invalid character class range: `z-a`",
    ")": "unexpected ): `^)$`",
    "(?P<>a)": "invalid named capture: `(?P<>`",
    "[abc": "missing closing ]: `[abc$`",
    "\\8": "invalid escape sequence: `\\8`",
}


@pytest.mark.parametrize("expr", sorted(SERF_ERRORS))
def test_bad_patterns_get_serfs_error_text(expr):
    with pytest.raises(FilterError) as info:
        compile_anchored(expr)
    expected = f"error parsing regexp: {SERF_ERRORS[expr]}"
    assert info.value.go_error == expected
    assert str(info.value) == f"Failed to compile regex: {expected}"
    assert search(expr, "anything (abc") is False  # a query filter that cannot compile


@pytest.mark.parametrize("expr", ["(?<=a)b", "(?!a)", "(?>a)", "a++", "\\Z"])
def test_perl_only_syntax_is_refused_as_go_refuses_it(expr):
    with pytest.raises(FilterError):
        compile_anchored(expr)


def test_serf_compatible_matches():
    assert search("web.*", "xweb1")  # query tag filters are unanchored (regexp.MatchString)
    assert not search("^web", "xweb1")
    assert compile_anchored("web.*").search("web1")
    assert not compile_anchored("web").search("web1")  # members -tag is anchored
    assert compile_anchored("^db-[0-9]+$").search("db-12")
    assert compile_anchored(r"db-\d+").search("db-7")
    assert not compile_anchored(r"db-\d+").search("db-x")
    assert compile_anchored("(?i)WEB").search("web")
    assert compile_anchored(r"[[:alpha:]]+\pN").search("abc7")
    assert compile_anchored("x{01}").search("x{01}")  # Go reads a leading-zero count literally


def test_dollar_means_end_of_text_as_in_go():
    # Python's re lets "$" match before a trailing newline; Go (and RE2) do not.
    assert not search("a$", "a\n")
    assert not compile_anchored("a").search("a\n")


def test_anchoring_is_serfs_textual_concatenation():
    # serf compiles fmt.Sprintf("^%s$", expr): a top-level alternation binds the anchors to
    # its first and last branch only (real serf: -name 'fx|zz' lists fx, -name 'zz|f' does not).
    assert compile_anchored("fx|zz").search("fx")
    assert not compile_anchored("zz|f").search("fx")
    assert compile_anchored("*").search("")  # "^*$": Go repeats the empty-width ^
    assert compile_anchored("a\\").search("a$")  # "^a\$": an escaped dollar


def test_catastrophic_patterns_run_in_linear_time():
    text = "a" * 100_000 + "b"
    assert search("(a*)*$", text)  # Python's re backtracks exponentially on "a...ab" with (a*)*c
    assert not search("(a*)*c", text)
    assert not search("(x+x+)+y", "x" * 100_000)
    assert not compile_anchored("(a|a)*").search(text)


def test_long_patterns_are_refused():
    with pytest.raises(FilterError, match="expression too large"):
        compile_anchored("a" * (filters.MAX_PATTERN_BYTES + 1))
    compile_anchored("a" * (filters.MAX_PATTERN_BYTES - 2))  # "^" + expr + "$" fits exactly


def test_program_too_large_for_the_memory_budget_is_refused():
    with pytest.raises(FilterError, match="expression too large"):
        compile_anchored(r"\pL{1000}")


def test_unencodable_text_is_an_error_or_no_match():
    with pytest.raises(FilterError):
        compile_anchored("\udcff")
    assert search("a", "\udcff") is False


def test_cache_is_bounded():
    for i in range(filters.CACHE_SIZE * 3):
        search(f"pattern-{i}", "x")
    assert len(filters._cache) <= filters.CACHE_SIZE
    assert compile_anchored("web.*") is compile_anchored("web.*")


def test_re2_is_imported_only_when_a_filter_is_used():
    code = ("import sys; import pyserf.serf.core, pyserf.serf.filters as f;"
            "assert 're2' not in sys.modules; f.search('a', 'a'); assert 're2' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
