"""moby/patternmatcher and ignorefile vectors (../shared/conformance/patternmatcher), plus
Go filepath.Match / path.Clean details the vectors rely on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile.dockerignore import find_ignore_file, read_dockerignore
from pybuild.patternmatcher import (BadPatternError, MatchInfo, Pattern, PatternError,
                                    PatternMatcher, clean_path, contains_wildcards, go_match,
                                    matches)

SHARED = Path(__file__).resolve().parent / "shared"
PM_DIR = SHARED / "conformance" / "patternmatcher"

if not PM_DIR.is_dir():  # pragma: no cover - the corpus lives beside the repo
    pytest.skip("conformance corpus not found", allow_module_level=True)

CASES = json.loads((PM_DIR / "patternmatcher_cases.json").read_bytes().decode("utf-8"))
IGNOREFILE = json.loads((PM_DIR / "ignorefile_readall_cases.json").read_bytes().decode("utf-8"))


def _params(section: str):
    for i, case in enumerate(CASES[section]["cases"]):
        yield pytest.param(case, id=f"{section}-{i}-{case.get('name', case.get('pattern', ''))}")


@pytest.mark.parametrize("case", _params("simple_matches"))
def test_simple_matches(case):
    if case.get("error"):
        with pytest.raises(PatternError):
            matches(case["path"], case["patterns"])
    else:
        assert matches(case["path"], case["patterns"]) is case["match"]


def _walk_parents_first(pm: PatternMatcher, path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    info = MatchInfo()
    result = False
    for i in range(len(parts)):
        result, info = pm.matches_using_parent_results("/".join(parts[:i + 1]), info)
    return result


@pytest.mark.parametrize("case", list(_params("matches")) + list(_params("multi_pattern_matches")))
def test_matches(case):
    patterns = case.get("patterns") or [case["pattern"]]
    pm = PatternMatcher(patterns)
    assert pm.matches_or_parent_matches(case["path"]) is case["match"]
    assert pm.matches(case["path"]) is case["match"]  # cleaned first: same answers
    assert pm.matches_using_parent_results(case["path"])[0] is case["match"]
    if case["path"].strip("/"):
        assert _walk_parents_first(pm, case["path"]) is case["match"]


@pytest.mark.parametrize("case", _params("filepath_match_compat"))
def test_filepath_match_compat(case):
    if case["error"] is not None:
        with pytest.raises(BadPatternError) as exc:
            matches(case["path"], [case["pattern"]])
        assert str(exc.value) == case["error"]
    else:
        assert matches(case["path"], [case["pattern"]]) is case["match"]


@pytest.mark.parametrize("case", _params("compile"))
def test_compile(case):
    kind, regexp = Pattern(clean_path(case["pattern"])).compile()
    assert kind == case["match_type"]
    assert regexp == case["regexp"]


@pytest.mark.parametrize("case", _params("clean_patterns"))
def test_clean_patterns(case):
    if case.get("expect_error"):
        with pytest.raises(PatternError):
            PatternMatcher(case["patterns"])
        return
    pm = PatternMatcher(case["patterns"])
    if "expect_pattern_count" in case:
        assert len(pm.patterns) == case["expect_pattern_count"]
    if "expect_exclusions" in case:
        assert pm.exclusions is case["expect_exclusions"]


@pytest.mark.parametrize("case", CASES["malformed_repeat"])
def test_malformed_repeat(case):
    pm = PatternMatcher(case["patterns"])  # validation of the regexp is lazy
    for _ in range(3):
        with pytest.raises(BadPatternError) as exc:
            pm.matches_or_parent_matches(case["path"])
        assert str(exc.value) == case["error"]


@pytest.mark.parametrize("case", IGNOREFILE["cases"], ids=lambda c: repr(c["input"])[:30])
def test_ignorefile_readall(case):
    assert read_dockerignore(case["input"]) == case["expected"]


# ------------------------------------------------------------------ our own details


@pytest.mark.parametrize("pattern,name,ok", [
    ("*", "a/b", False), ("*/b", "a/b", True), ("a?c", "abc", True), ("[[]", "[", True),
    ("a\\*", "a*", True), ("*.txt", ".txt", True), ("**", "a", True),
])
def test_go_match(pattern, name, ok):
    assert go_match(pattern, name) is ok


@pytest.mark.parametrize("raw,clean", [
    ("", "."), ("/", "/"), ("a/../..", ".."), ("/../a", "/a"), ("a//b/./c/", "a/b/c"),
    ("//a", "/a"), ("./", "."),
])
def test_clean_path(raw, clean):
    assert clean_path(raw) == clean


def test_contains_wildcards():
    assert contains_wildcards("a/*.txt") and contains_wildcards("a[bc]")
    assert not contains_wildcards("a\\*b") and not contains_wildcards("plain/path")


def test_dockerignore_reading_details():
    text = "\ufeff# comment\n  spaced  \r\n!  /abs/../x/\n#x\n \n/\n"
    assert read_dockerignore(text) == ["spaced", "!x", "/"]
    assert read_dockerignore(b"a\nb") == ["a", "b"]
    assert read_dockerignore("") == []


def test_find_ignore_file(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    df = ctx / "sub" / "app.Dockerfile"
    df.parent.mkdir()
    df.write_text("FROM scratch\n")
    assert find_ignore_file(str(ctx), str(df)) is None
    (ctx / ".dockerignore").write_text("x\n")
    assert find_ignore_file(str(ctx), str(df)) == str(ctx / ".dockerignore")
    (df.parent / "app.Dockerfile.dockerignore").write_text("y\n")
    assert find_ignore_file(str(ctx), str(df)) == str(df) + ".dockerignore"


def test_may_include_under():
    pm = PatternMatcher(["**", "!keep/deep/*.txt"])
    assert pm.may_include_under("keep")
    assert pm.may_include_under("keep/deep")
    assert not pm.may_include_under("other")
    assert not PatternMatcher(["node_modules"]).may_include_under("node_modules")
