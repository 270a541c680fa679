"""Go-compatible path patterns: `.dockerignore`, `COPY --exclude`, `COPY --parents` and
COPY source wildcards.

This module owns three Go behaviours that users know from `docker build`, ported so that
the same pattern selects the same files:

- `go_match(pattern, name)`: Go's `path/filepath.Match` (`*`, `?`, `[...]`, `\\` escapes;
  `*` and `?` never cross `/`; a malformed pattern raises `BadPatternError`).
- `clean_path(p)`: Go's `path.Clean` (lexical; `""` -> `"."`).
- `PatternMatcher`: moby/patternmatcher, the `.dockerignore` matcher: patterns are trimmed
  and cleaned, `!` marks an exception, `**` crosses directories, a pattern matches a path
  when it matches the path or any parent directory, and the last matching pattern wins.

Paths given to the matcher are slash-separated and relative to the context root.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from pybuild.errors import PybuildError

__all__ = [
    "BadPatternError", "PatternError", "Pattern", "PatternMatcher", "MatchInfo",
    "go_match", "clean_path", "contains_wildcards", "matches", "matches_or_parent_matches",
    "go_trim_space",
]


class PatternError(PybuildError):
    """A pattern list cannot be used (for example a lone `!`)."""


class BadPatternError(PatternError):
    """Go's `filepath.ErrBadPattern`: the pattern is malformed."""

    def __init__(self, pattern: str = ""):
        self.pattern = pattern
        super().__init__("syntax error in pattern")


# --------------------------------------------------------------------------- Go helpers

# Go's unicode.IsSpace set; Python's str.isspace also counts \x1c-\x1f, Go does not.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def go_trim_space(s: str) -> str:
    """strings.TrimSpace."""
    return s.strip(_GO_SPACE)


def clean_path(p: str) -> str:
    """Go's path.Clean: the shortest lexically equivalent path (never empty)."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    out: list[str] = []
    for part in p.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def contains_wildcards(name: str) -> bool:
    """True if a COPY source needs wildcard expansion (`*`, `?`, `[`; `\\` escapes one char)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off leading stars and the literal/class chunk up to the next star."""
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str, pattern: str) -> tuple[str, str]:
    """One (possibly escaped) character of a class range, and the rest of the chunk."""
    if not chunk or chunk[0] in "-]":
        raise BadPatternError(pattern)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPatternError(pattern)
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPatternError(pattern)
    return r, rest


def _match_chunk(chunk: str, s: str, pattern: str) -> tuple[str, bool]:
    """Match `chunk` at the start of `s`; return (rest of s, ok). After a mismatch the chunk
    is still parsed to the end so that a malformed pattern is always reported (as Go does)."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk.startswith("^"):
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk, pattern)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:], pattern)
                if not failed and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPatternError(pattern)
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def go_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match on a slash-separated name; raises BadPatternError."""
    full = pattern
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        rest, ok = _match_chunk(chunk, name, full)
        if ok and (not rest or pattern):
            name = rest
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                rest, ok = _match_chunk(chunk, name[i + 1:], full)
                if ok:
                    if not pattern and rest:
                        i += 1
                        continue
                    name = rest
                    found = True
                    break
                i += 1
            if found:
                continue
        # a mismatch: still validate the remainder of the pattern, as Go does
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "", full)
        return False
    return name == ""


# --------------------------------------------------------------------------- patterns

_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exactMatch", "prefixMatch", "suffixMatch", "regexpMatch"
_REGEX_ESCAPE = set(".+()|{}$")


@dataclass(eq=False)
class Pattern:
    """One cleaned pattern. Its regular expression is built on first use: like upstream, a
    pattern that `filepath.Match` accepts but that makes no valid regexp (`[z-a]`) fails
    only when matched, and fails every time."""

    cleaned: str
    exclusion: bool = False
    _type: str | None = field(default=None, repr=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.cleaned

    def compile(self) -> tuple[str, str]:
        """(match type, Go-flavoured regexp source or "") -- the upstream classification."""
        reg = "^"
        kind = _EXACT
        p = self.cleaned
        i = 0
        n = len(p)
        first = True
        while i < n:
            ch = p[i]
            i += 1
            if ch == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == _EXACT:
                            kind = _PREFIX
                        else:
                            reg += ".*"
                            kind = _REGEXP
                    else:
                        reg += "(.*/)?"
                        kind = _REGEXP
                    if first:
                        kind = _SUFFIX
                else:
                    reg += "[^/]*"
                    kind = _REGEXP
            elif ch == "?":
                reg += "[^/]"
                kind = _REGEXP
            elif ch in _REGEX_ESCAPE:
                reg += "\\" + ch
            elif ch == "\\":
                if i < n:
                    reg += "\\" + p[i]
                    i += 1
                    kind = _REGEXP
                else:
                    reg += "\\"
            elif ch in "[]":
                reg += ch
                kind = _REGEXP
            else:
                reg += ch
            first = False
        if kind != _REGEXP:
            return kind, ""
        return kind, reg + "$"

    def _prepare(self) -> str:
        if self._type is None:
            kind, reg = self.compile()
            if kind == _REGEXP:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # "possible nested set" for `[[`
                        # fullmatch instead of Go's `$`: Python's `$` also matches before "\n"
                        self._regex = re.compile(reg[:-1])
                except re.error:
                    raise BadPatternError(self.cleaned) from None
            self._type = kind
        return self._type

    def match(self, path: str) -> bool:
        """Does this pattern match `path` itself (no parent logic)?"""
        kind = self._prepare()
        p = self.cleaned
        if kind == _EXACT:
            return path == p
        if kind == _PREFIX:
            return path.startswith(p[:-2])
        if kind == _SUFFIX:
            suffix = p[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self._regex is not None
        return self._regex.fullmatch(path) is not None

    def may_match_under(self, directory: str) -> bool:
        """Could this pattern match `directory`, a parent of it, or anything below it?

        Conservative (True when unsure); used only to avoid walking directories that no
        pattern can reach, never to decide a match."""
        if not directory or directory == ".":
            return True
        psegs = self.cleaned.split("/")
        for i, dseg in enumerate(directory.split("/")):
            if i >= len(psegs):
                return True  # the pattern names a parent of the directory
            seg = psegs[i]
            if "**" in seg:
                return True
            try:
                if not go_match(seg, dseg):
                    return False
            except BadPatternError:
                return True
        return True


@dataclass(frozen=True)
class MatchInfo:
    """Per-pattern results for a directory, handed to its children (upstream MatchInfo)."""

    parent_matched: tuple[bool, ...] = ()


class PatternMatcher:
    """moby/patternmatcher's PatternMatcher.

    `matches(path)` answers "is this path (or one of its parents) selected", with `!`
    exceptions and last-match-wins; it raises `BadPatternError` for a malformed pattern.
    """

    def __init__(self, patterns: Sequence[str]):
        self._patterns: list[Pattern] = []
        self._exclusions = False
        for raw in patterns:
            p = go_trim_space(raw)
            if not p:
                continue
            p = clean_path(p)
            exclusion = False
            if p.startswith("!"):
                if len(p) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                exclusion = True
                p = p[1:]
                self._exclusions = True
            # validate now with filepath.Match, as upstream does; regexp problems show later
            go_match(p, ".")
            self._patterns.append(Pattern(p, exclusion))

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return tuple(self._patterns)

    @property
    def exclusions(self) -> bool:
        """True if any pattern is a `!` exception."""
        return self._exclusions

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def matches_or_parent_matches(self, file: str) -> bool:
        """Upstream MatchesOrParentMatches: `file` is used as given (not cleaned)."""
        matched = False
        parent = _go_dir(file)
        parent_dirs = parent.split("/")
        for pat in self._patterns:
            if pat.exclusion != matched:
                continue  # cannot change the outcome
            hit = pat.match(file)
            if not hit and parent != ".":
                for i in range(len(parent_dirs)):
                    if pat.match("/".join(parent_dirs[:i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pat.exclusion
        return matched

    def matches(self, file: str) -> bool:
        """Clean `file`; "." never matches; else matches_or_parent_matches."""
        file = clean_path(file)
        if file == ".":
            return False
        return self.matches_or_parent_matches(file)

    def matches_exact(self, file: str) -> bool:
        matched = False
        for pat in self._patterns:
            if pat.exclusion != matched:
                continue
            if pat.match(file):
                matched = not pat.exclusion
        return matched

    def matches_using_parent_results(self, file: str,
                                     parent: MatchInfo = MatchInfo()) -> tuple[bool, MatchInfo]:
        """Upstream MatchesUsingParentResults: the walker's fast path. `parent` is the
        MatchInfo returned for the parent directory (empty for a top-level entry)."""
        pm = parent.parent_matched
        if pm and len(pm) != len(self._patterns):
            raise PatternError("wrong number of values in parentMatched")
        matched = False
        out = [False] * len(self._patterns)
        for i, pat in enumerate(self._patterns):
            hit = pm[i] if pm else False
            if not hit:
                if pat.exclusion != matched:
                    continue
                hit = pat.match(file)
                if not hit and not pm:
                    parent_path = _go_dir(file)
                    if parent_path != ".":
                        dirs = parent_path.split("/")
                        for j in range(len(dirs)):
                            if pat.match("/".join(dirs[:j + 1])):
                                hit = True
                                break
            out[i] = hit
            if hit:
                matched = not pat.exclusion
        return matched, MatchInfo(tuple(out))

    def may_include_under(self, directory: str) -> bool:
        """Could a `!` exception re-include something below `directory`? When False, a
        walker may skip an ignored directory whole."""
        return any(p.exclusion and p.may_match_under(directory) for p in self._patterns)

    def may_match_under(self, directory: str) -> bool:
        """Could a (non-exception) pattern select `directory` or something below it?"""
        return any(not p.exclusion and p.may_match_under(directory) for p in self._patterns)


def _go_dir(p: str) -> str:
    """Go's filepath.Dir for slash paths."""
    i = p.rfind("/")
    return clean_path(p[:i + 1]) if i >= 0 else "."


def matches(file: str, patterns: Sequence[str]) -> bool:
    """Upstream package function Matches / MatchesOrParentMatches (same answers)."""
    return PatternMatcher(patterns).matches(file)


def matches_or_parent_matches(file: str, patterns: Sequence[str]) -> bool:
    return PatternMatcher(patterns).matches(file)
