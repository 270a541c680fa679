"""A local build context: its `.dockerignore` view and content checksums of what COPY reads.

`BuildContext.checksum()` is the content part of a COPY step's cache key. It covers
exactly the entries `pybuild.fileops` would copy for the same sources (same selection
code: wildcards, directory contents, `--exclude`, `--parents`, `.dockerignore`):
names, file types, modes, owners, sizes, contents and symlink targets -- never mtimes,
so touching a file keeps the cache, and editing it (or its mode) does not.

Owners: like BuildKit's file sync (which sends every context file as 0:0), the context
is seen as owned by root unless `reset_owner=False`; a COPY from it gives 0:0 anyway.

File contents are hashed once and remembered in a small JSON stat cache keyed by
(size, mtime_ns, inode, ctime_ns): an unchanged context is checked with stat() calls
only, and a touched file is re-hashed alone. Files changed within `racy_window_ns` of
being hashed are not remembered (a later write in the same timestamp tick would look
unchanged -- git's "racy clean" problem).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from cache.atomicfile import write_atomically
from cache.digest import digest_bytes, digest_stream, entry_body
from pybuild.errors import ContextError
from pybuild.fileops import (ENTER, LEAF, FileOpError, IgnoreView, SourceMatch,
                             resolve_sources, walk_selection)
from pybuild.graph import Copy
from pybuild.pathres import PathResolveError
from pybuild.patternmatcher import PatternError, PatternMatcher

__all__ = ["BuildContext", "ContextStats", "IgnoreFilter"]

_CACHE_VERSION = 1
# how json.dumps writes each type a checksum record holds (str: escaped, ensure_ascii)
_ENCODE = {str: json.encoder.encode_basestring_ascii, int: int.__repr__,
           bool: lambda b: "true" if b else "false", type(None): lambda _: "null"}


def _encode_record(fields: tuple) -> str:
    """The same text as json.dumps(list(fields), separators=(",", ":")) (cache keys
    depend on it: tests/test_fast_rebuild.py checks), at a fraction of the cost:
    json.dumps builds a new encoder for each of the tens of thousands of records of a
    big context."""
    try:
        return "[" + ",".join([_ENCODE[f.__class__](f) for f in fields]) + "]"
    except KeyError:  # a type no record has today
        return json.dumps(list(fields), separators=(",", ":"))


@dataclass
class ContextStats:
    """Counters since the context was opened (tests and progress output read them)."""

    hashed_files: int = 0  # file contents read and hashed
    cached_files: int = 0  # file digests taken from the stat cache


class IgnoreFilter:
    """`rel -> ignored?` for fileops, plus `prune_dir(rel)`: an ignored directory no `!`
    exception can reach inside, which a walker may skip whole."""

    def __init__(self, matcher: PatternMatcher):
        self._matcher = matcher

    def __call__(self, rel: str) -> bool:
        if not self._matcher:
            return False
        return self._matcher.matches(rel)

    def prune_dir(self, rel: str) -> bool:
        return not self._matcher.may_include_under(rel)


class BuildContext:
    """A directory sent to a build, seen through its .dockerignore patterns."""

    def __init__(self, root: str, ignore_patterns: Sequence[str] = (), *,
                 stat_cache_path: str | None = None, reset_owner: bool = True,
                 racy_window_ns: int = 2_000_000_000):
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise ContextError(f"build context {root!r} is not a directory")
        try:
            self._matcher = PatternMatcher(list(ignore_patterns))
        except PatternError as e:
            raise ContextError(f"invalid .dockerignore pattern: {e}") from None
        self.ignore_filter = IgnoreFilter(self._matcher)
        self.stat_cache_path = stat_cache_path
        self.reset_owner = reset_owner
        self.racy_window_ns = racy_window_ns
        self.stats = ContextStats()
        self._lock = threading.Lock()
        self._cache: dict[str, list] | None = None
        self._dirty = False
        # (host path, lstat, body) of every non-directory entry checksum() read, when a
        # list is set here (pybuild.buildmemo records what a build depended on)
        self.reads: list | None = None

    @staticmethod
    def stat_cache_for(cache_dir: str, root: str) -> str:
        """A stat cache file name for the context at `root`, inside `cache_dir` (keep it
        out of the context itself: writing it would change the context)."""
        key = digest_bytes(os.path.abspath(root).encode("utf-8", "surrogateescape"))
        return os.path.join(cache_dir, f"context-{key[7:39]}.json")

    # ----------------------------------------------------------------- ignore

    @property
    def ignore_patterns(self) -> tuple[str, ...]:
        return tuple(("!" if p.exclusion else "") + p.cleaned for p in self._matcher.patterns)

    def is_ignored(self, rel: str) -> bool:
        """Is the context-relative path `rel` excluded by .dockerignore (itself or a parent)?"""
        try:
            return self.ignore_filter(rel.lstrip("/"))
        except PatternError as e:
            raise ContextError(f"invalid .dockerignore pattern: {e}") from None

    def view(self) -> IgnoreView:
        """The .dockerignore view fileops copies through (`apply_copy(..., ignore=...)`)."""
        return IgnoreView(self.root, self.ignore_filter)

    # ----------------------------------------------------------------- selection

    def select(self, sources: Sequence[str], excludes: Sequence[str] = (), *,
               follow_symlinks: bool = True, parents: bool = False,
               allow_wildcard: bool = True, allow_empty_wildcard: bool = True,
               source_cwd: str = "/") -> list[tuple[SourceMatch, list[str]]]:
        """What a COPY of `sources` takes: each match with the context-relative paths of the
        entries below it, in copy order."""
        view = self.view()
        ex = self._excludes(excludes)
        out = []
        for match in self._resolve(sources, ex, view, follow_symlinks=follow_symlinks,
                                   parents=parents, allow_wildcard=allow_wildcard,
                                   allow_empty_wildcard=allow_empty_wildcard,
                                   source_cwd=source_cwd):
            paths = []
            for event, entry in self._walk(match, ex, view):
                if event in (ENTER, LEAF):
                    paths.append(_join(match.rel, entry.rel))
            out.append((match, paths))
        return out

    # ----------------------------------------------------------------- checksums

    def checksum(self, sources: Sequence[str], excludes: Sequence[str] = (), *,
                 follow_symlinks: bool = True, parents: bool = False,
                 allow_wildcard: bool = True, allow_empty_wildcard: bool = True,
                 source_cwd: str = "/", entries: dict[str, str] | None = None) -> str:
        """sha256 digest of everything a COPY of `sources` would read from the context.

        `entries`, when given, receives context path -> sha256 of that entry's record
        (what `pybuild build --explain` diffs to name a changed file).
        Raises ContextError for a missing (or ignored) source, with BuildKit's message.
        """
        view = self.view()
        ex = self._excludes(excludes)
        lines: list[bytes] = []  # hashed at once: one call, small or large (cache/digest.py)

        def record(*fields: object) -> None:
            line = _encode_record(fields).encode() + b"\n"
            lines.append(line)
            if entries is not None and fields[0] in ("dir", "file"):
                rel = _join(where[0], str(fields[1])) or "."
                entries[rel] = digest_bytes(line)[7:]

        where = [""]  # the current match's context path, for `entries`

        with self._lock:
            self._load_cache()
            try:
                record("pybuild.context.v1", bool(parents))
                for src in sources:
                    record("src", src)
                    for match in self._resolve([src], ex, view, follow_symlinks=follow_symlinks,
                                               parents=parents, allow_wildcard=allow_wildcard,
                                               allow_empty_wildcard=allow_empty_wildcard,
                                               source_cwd=source_cwd):
                        record("match", match.rel, match.name,
                               str(match.include.patterns[0]) if match.include else None)
                        where[0] = match.rel
                        for event, entry in self._walk(match, ex, view):
                            if event == ENTER:
                                record("dir", entry.rel, *self._header(entry.st))
                            elif event == LEAF:
                                body = self._body(_join(match.rel, entry.rel), entry.host,
                                                  entry.st)
                                record("file", entry.rel, *self._header(entry.st), *body)
                                if self.reads is not None:
                                    self.reads.append((entry.host, entry.st, body))
                            else:
                                record("end")
            except OSError as e:
                raise ContextError(f"failed to read build context: {e.filename}: "
                                   f"{e.strerror}") from None
            finally:
                self._save_cache()
        return digest_bytes(b"".join(lines))

    def checksum_copy(self, action: Copy) -> str:
        """checksum() with a Copy action's own selection options."""
        return self.checksum(action.src, action.exclude, follow_symlinks=action.follow_symlinks,
                             parents=action.parents, allow_wildcard=action.allow_wildcard,
                             allow_empty_wildcard=action.allow_empty_wildcard,
                             source_cwd=action.source_cwd)

    # ----------------------------------------------------------------- internals

    def _excludes(self, excludes: Sequence[str]) -> PatternMatcher | None:
        if not excludes:
            return None
        try:
            return PatternMatcher(list(excludes))
        except PatternError as e:
            raise ContextError(f"invalid exclude pattern: {e}") from None

    def _resolve(self, sources, ex, view, **kw) -> list[SourceMatch]:
        try:
            return resolve_sources(self.root, list(sources), excludes=ex, ignore=view, **kw)
        except (FileOpError, PatternError, PathResolveError) as e:
            raise ContextError(str(e)) from None
        except OSError as e:
            raise ContextError(f"failed to read build context: {e.filename}: {e.strerror}") \
                from None

    def _walk(self, match, ex, view):
        try:
            yield from walk_selection(match, excludes=ex, ignore=view)
        except (FileOpError, PatternError) as e:
            raise ContextError(str(e)) from None
        except OSError as e:
            raise ContextError(f"failed to read build context: {e.filename}: {e.strerror}") \
                from None

    def _header(self, st: os.stat_result) -> tuple[int, int, int]:
        uid, gid = (0, 0) if self.reset_owner else (st.st_uid, st.st_gid)
        return st.st_mode, uid, gid

    def _body(self, rel: str, host: str, st: os.stat_result) -> tuple:
        return entry_body(host, st, lambda path: self._file_digest(rel, path, st))

    def _file_digest(self, rel: str, host: str, st: os.stat_result) -> str:
        key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        assert self._cache is not None
        hit = self._cache.get(rel)
        if hit is not None and hit[:4] == key:
            self.stats.cached_files += 1
            return hit[4]
        try:
            with open(host, "rb", buffering=0) as f:
                digest, _ = digest_stream(f)
                after = os.fstat(f.fileno())
        except OSError as e:
            raise ContextError(f"failed to read /{rel}: {e.strerror}") from None
        self.stats.hashed_files += 1
        unchanged = [after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns] == key
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > self.racy_window_ns
        if unchanged and settled:
            self._cache[rel] = key + [digest]
            self._dirty = True
        elif rel in self._cache:
            del self._cache[rel]
            self._dirty = True
        return digest

    def _load_cache(self) -> None:
        if self._cache is not None:
            return
        self._cache = {}
        if not self.stat_cache_path:
            return
        try:
            with open(self.stat_cache_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return  # no cache yet, or a damaged one: start over
        if (isinstance(data, dict) and data.get("version") == _CACHE_VERSION
                and data.get("root") == self.root and isinstance(data.get("entries"), dict)):
            self._cache = {k: v for k, v in data["entries"].items()
                           if isinstance(v, list) and len(v) == 5}

    def _save_cache(self) -> None:
        if not (self.stat_cache_path and self._dirty and self._cache is not None):
            return
        path = os.path.abspath(self.stat_cache_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = json.dumps({"version": _CACHE_VERSION, "root": self.root,
                           "entries": self._cache}, separators=(",", ":"))
        write_atomically(path, data.encode("utf-8"), mode=0o600)
        self._dirty = False


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if not b:
        return a
    return f"{a}/{b}"
