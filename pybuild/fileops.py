"""Executing file actions (COPY/ADD, mkdir, mkfile) of a `FileOp` into a root filesystem.

This module owns Docker/BuildKit COPY semantics on plain directories:

- which files a COPY selects (`resolve_sources`, `walk_selection`): wildcards as Go
  `filepath.Match`, a directory source means its contents, `--exclude` patterns (relative
  to each source), `--parents` (the source path kept below the destination, `/./` pivot,
  `**`), and a `.dockerignore` view of the context. `pybuild.context` hashes exactly this
  selection, so a cache key covers what a copy reads;
- where they land (`apply_copy`): trailing `/` or several sources = a directory, missing
  parents created, relative destinations against the WORKDIR;
- what they look like: modes kept (or `--chmod`, octal or symbolic), owners from
  `--chown` (names from the destination's /etc/passwd and /etc/group), else 0:0 for the
  build context and kept for other stages, mtimes kept, symlinks copied as symlinks,
  hard links kept, xattrs copied when possible.

Every source path is resolved inside the source root and every destination inside the
destination root with `pybuild.pathres`, so symlinks can't lead a copy out of either root.

ADD's unpacking of local archives (`Copy.unpack_archives`): a source file that is a tar
(plain, gzip, bzip2, xz or zstd, detected by content) is extracted into the destination
directory, every entry resolved inside the destination root; other files are copied.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from pybuild.errors import PybuildError
from pybuild.graph import Copy, LocalSource, Mkdir, Mkfile
from pybuild.pathres import PathResolveError, rel_to_root, resolve_in_root, resolve_rel
from pybuild.patternmatcher import (MatchInfo, PatternError, PatternMatcher, clean_path,
                                    contains_wildcards, go_match)

__all__ = [
    "FileOpError", "SourceNotFound", "Owner", "ModeSpec", "SourceMatch", "TreeEntry",
    "IgnoreView", "apply_copy", "apply_mkdir", "apply_mkfile", "resolve_sources",
    "walk_selection", "parse_chown", "parse_chmod", "mkdir_all", "unpack_archive",
    "ENTER", "LEAF", "LEAVE",
]

IgnoreFn = Callable[[str], bool]


class FileOpError(PybuildError):
    """A file action cannot be carried out."""


class SourceNotFound(FileOpError):
    """A COPY source does not exist (or is hidden by .dockerignore)."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f'failed to compute cache key: "{path}": not found')


MULTI_SOURCE_ERROR = ("When using COPY with more than one source file, the destination "
                      "must be a directory and end with a /")

# --------------------------------------------------------------------------- owners and modes


@dataclass(frozen=True)
class Owner:
    """A numeric owner (uid, gid) for copied or created files (`--chown`)."""

    uid: int
    gid: int


def _lookup(root: str, path: str, name: str, id_field: int) -> list[str] | None:
    try:
        with open(resolve_in_root(root, path), encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > id_field and fields[0] == name:
                    return fields
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        pass
    return None


def _parse_id(text: str) -> int | None:
    if text.isascii() and text.isdigit():
        value = int(text)
        if value < 2 ** 32 - 1:
            return value
        raise FileOpError(f"invalid id {text!r}: out of range")
    return None


def parse_chown(spec: str, dest_root: str) -> Owner | None:
    """`user[:group]` (names or numbers) -> Owner, names looked up in the destination's
    /etc/passwd and /etc/group. A user alone means its primary group (a number alone: the
    same number as gid, as BuildKit does). "" -> None (no chown)."""
    if not spec:
        return None
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise FileOpError(f"invalid chown value {spec!r}: want user[:group]")
    uid = _parse_id(user)
    if uid is not None:
        gid = uid
    else:
        fields = _lookup(dest_root, "/etc/passwd", user, 3)
        if fields is None:
            raise FileOpError(f"unable to find user {user}: no matching entries in passwd file")
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            raise FileOpError(f"invalid entry for user {user} in /etc/passwd") from None
    if group:
        g = _parse_id(group)
        if g is not None:
            gid = g
        else:
            fields = _lookup(dest_root, "/etc/group", group, 2)
            if fields is None:
                raise FileOpError(
                    f"unable to find group {group}: no matching entries in group file")
            try:
                gid = int(fields[2])
            except ValueError:
                raise FileOpError(f"invalid entry for group {group} in /etc/group") from None
    return Owner(uid, gid)


_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}
_PERM_BITS = {"r": 0o444, "w": 0o222, "x": 0o111}


@dataclass(frozen=True)
class ModeSpec:
    """A `--chmod` value: octal (`755`, replaces the permission bits) or symbolic
    (`u+x,g-w`, `a=rX`, `go=u`), applied like chmod(1) without a umask."""

    text: str
    octal: int | None = None

    def apply(self, mode: int, is_dir: bool) -> int:
        """The new permission bits (07777) for an entry whose current mode is `mode`."""
        if self.octal is not None:
            return (mode & 0o7000) | (self.octal & 0o777)
        m = mode & 0o7777
        for clause in self.text.split(","):
            m = _apply_clause(clause, m, is_dir, self.text)
        return m


def _apply_clause(clause: str, m: int, is_dir: bool, text: str) -> int:
    i = 0
    who = ""
    while i < len(clause) and clause[i] in "ugoa":
        who += clause[i]
        i += 1
    if "a" in who or not who:
        who = "ugo"
    if i >= len(clause) or clause[i] not in "+-=":
        raise FileOpError(f"invalid chmod value {text!r}")
    mask = 0
    for w in who:
        mask |= _WHO_BITS[w]
    while i < len(clause):
        op = clause[i]
        if op not in "+-=":
            raise FileOpError(f"invalid chmod value {text!r}")
        i += 1
        start = i
        while i < len(clause) and clause[i] not in "+-=":
            i += 1
        perms = clause[start:i]
        bits = 0
        if perms in ("u", "g", "o"):
            # copy another class's rwx bits: shift them to all positions, then mask
            shift = {"u": 6, "g": 3, "o": 0}[perms]
            rwx = (m >> shift) & 0o7
            bits = rwx << 6 | rwx << 3 | rwx
        else:
            for p in perms:
                if p in _PERM_BITS:
                    bits |= _PERM_BITS[p]
                elif p == "X":
                    if is_dir or m & 0o111:
                        bits |= 0o111
                elif p == "s":
                    bits |= 0o6000
                elif p == "t":
                    bits |= 0o1000
                else:
                    raise FileOpError(f"invalid chmod value {text!r}")
        bits &= mask
        if op == "+":
            m |= bits
        elif op == "-":
            m &= ~bits
        else:
            clear = mask & ~0o1000 if "o" not in who else mask
            m = (m & ~clear) | bits
    return m


def parse_chmod(spec: str) -> ModeSpec | None:
    """`--chmod` text -> ModeSpec ("" -> None). Raises FileOpError when invalid."""
    if not spec:
        return None
    if all(c in "01234567" for c in spec):
        if len(spec) > 4:
            raise FileOpError(f"invalid chmod value {spec!r}")
        return ModeSpec(spec, int(spec, 8))
    probe = ModeSpec(spec)
    probe.apply(0o644, False)  # validate once, so errors show before anything is copied
    return probe


# --------------------------------------------------------------------------- selection


class IgnoreView:
    """The build context as BuildKit sees it after .dockerignore: an ignored path is gone,
    except a directory that still holds a re-included (`!`) path, which exists as its parent.

    `ignore(rel)` answers for one context-relative path; if it also has a
    `prune_dir(rel) -> bool` attribute (as `BuildContext.ignore_filter` does), ignored
    directories that cannot hold a re-included path are not walked at all.
    """

    def __init__(self, root: str, ignore: IgnoreFn):
        self.root = root
        self._ignore = ignore
        self._prune = getattr(ignore, "prune_dir", None)
        self._nonempty: dict[str, bool] = {}

    def hidden(self, rel: str) -> bool:
        return bool(rel) and self._ignore(rel)

    def can_descend(self, rel: str) -> bool:
        return self._prune is None or not self._prune(rel)

    def visible(self, rel: str, host: str, st: os.stat_result) -> bool:
        if not self.hidden(rel):
            return True
        if not stat.S_ISDIR(st.st_mode) or not self.can_descend(rel):
            return False
        cached = self._nonempty.get(rel)
        if cached is None:
            match = SourceMatch(rel=rel, host=host, st=st, name=posixpath.basename(rel))
            cached = False
            for _ in _walk_dir(match, TreeEntry("", host, st), [], None, None, MatchInfo(),
                               MatchInfo(), self):
                cached = True
                break
            self._nonempty[rel] = cached
        return cached


@dataclass(frozen=True)
class SourceMatch:
    """One selected source: `rel` is its resolved path relative to the source root ("" for
    the root), `name` the name it gets below a directory destination, `include` the
    `--parents` pattern that selects below it (None: everything)."""

    rel: str
    host: str
    st: os.stat_result
    name: str
    include: PatternMatcher | None = None
    from_wildcard: bool = False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


@dataclass(frozen=True)
class TreeEntry:
    """A file or directory below a SourceMatch; `rel` is relative to the match ("" = it)."""

    rel: str
    host: str
    st: os.stat_result


ENTER, LEAF, LEAVE = "enter", "leaf", "leave"


def _display(path: str) -> str:
    return "/" + path.lstrip("/") if path not in ("", ".") else "/"


def _src_path(src: str, source_cwd: str) -> str:
    """A COPY source as a clean root-relative path ("" = root); `..` cannot climb out."""
    joined = posixpath.join(source_cwd or "/", src)
    return clean_path("/" + joined).lstrip("/")


def _split_wildcards(path: str) -> tuple[str, str]:
    """(literal leading directories, the rest starting at the first wildcard segment)."""
    parts = path.split("/") if path else []
    for i, part in enumerate(parts):
        if contains_wildcards(part):
            return "/".join(parts[:i]), "/".join(parts[i:])
    return path, ""


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _match_literal(src_root: str, path: str, follow: bool, view: IgnoreView | None,
                   display: str) -> SourceMatch:
    try:
        rel = resolve_rel(src_root, path, follow_final=follow)
    except PathResolveError as e:
        raise FileOpError(f"{display}: {e}") from None
    host = os.path.join(src_root, rel) if rel else src_root
    st = _lstat(host)
    if st is None or (view is not None and not view.visible(rel, host, st)):
        raise SourceNotFound(display)
    name = posixpath.basename(path) or "/"
    return SourceMatch(rel=rel, host=host, st=st, name=name)


def _wildcard_matches(src_root: str, path: str, follow: bool,
                      view: IgnoreView | None) -> list[str]:
    """Root-relative paths matching a wildcard source, in walk (lexical) order. A matching
    directory is not searched further, like BuildKit's ResolveWildcards."""
    base, pattern = _split_wildcards(path)
    base_rel = resolve_rel(src_root, base, follow_final=follow)
    base_host = os.path.join(src_root, base_rel) if base_rel else src_root
    depth = pattern.count("/") + 1
    go_match(pattern, ".")  # a malformed pattern fails even when nothing would match
    out: list[str] = []

    def walk(host: str, rel: str, level: int) -> None:
        try:
            names = sorted(os.listdir(host))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            child_rel = f"{rel}/{name}" if rel else name
            child_host = os.path.join(host, name)
            st = _lstat(child_host)
            if st is None:
                continue
            ctx_rel = f"{base_rel}/{child_rel}" if base_rel else child_rel
            is_dir = stat.S_ISDIR(st.st_mode)
            if go_match(pattern, child_rel):
                if view is None or view.visible(ctx_rel, child_host, st):
                    out.append(f"{base}/{child_rel}" if base else child_rel)
                continue
            if is_dir and level < depth:
                if view is not None and view.hidden(ctx_rel) and not view.can_descend(ctx_rel):
                    continue
                walk(child_host, child_rel, level + 1)

    if _lstat(base_host) is not None:
        walk(base_host, "", 1)
    return out


def resolve_sources(src_root: str, srcs: Sequence[str], *, source_cwd: str = "/",
                    follow_symlinks: bool = True, allow_wildcard: bool = True,
                    allow_empty_wildcard: bool = True, parents: bool = False,
                    excludes: PatternMatcher | None = None,
                    ignore: IgnoreFn | IgnoreView | None = None) -> list[SourceMatch]:
    """The sources a COPY of `srcs` selects in `src_root`, in order.

    Raises SourceNotFound for a literal path that does not exist (or is ignored) and for a
    wildcard that matches nothing unless `allow_empty_wildcard`.
    """
    view = _as_view(src_root, ignore)
    out: list[SourceMatch] = []
    for src in srcs:
        if parents:
            out.extend(_parents_source(src_root, src, source_cwd, follow_symlinks, view))
            continue
        path = _src_path(src, source_cwd)
        display = _display(path)
        if not (allow_wildcard and contains_wildcards(path)):
            out.append(_match_literal(src_root, path, follow_symlinks, view, display))
            continue
        base, _ = _split_wildcards(path)
        try:
            found = _wildcard_matches(src_root, path, follow_symlinks, view)
        except PathResolveError as e:
            raise FileOpError(f"{display}: {e}") from None
        if not found and not allow_empty_wildcard:
            raise SourceNotFound(display)
        for m in found:
            match = _match_literal(src_root, m, follow_symlinks, view, _display(m))
            if excludes and not match.is_dir:
                # Docker documents `COPY --exclude=*.txt hom* /dir/` as skipping home.txt:
                # a file picked by a wildcard is matched relative to the wildcard's base
                if excludes.matches(m[len(base) + 1:] if base else m):
                    continue
            out.append(SourceMatch(match.rel, match.host, match.st, match.name,
                                   from_wildcard=True))
    return out


def _parents_source(src_root: str, src: str, source_cwd: str, follow: bool,
                    view: IgnoreView | None) -> list[SourceMatch]:
    """`COPY --parents a/b/*.txt` selects from the root with an include pattern, so the
    files keep `a/b/` below the destination; `x/./y/*.txt` pivots at `x`."""
    if "/./" in src:
        pivot, pattern = src.split("/./", 1)
    else:
        pivot, pattern = "", src
    pivot_path = _src_path(pivot, source_cwd)
    pattern = clean_path("/" + pattern).lstrip("/")
    root = _match_literal(src_root, pivot_path, True, view, _display(pivot_path))
    if not pattern:
        return [root]
    if not contains_wildcards(pattern):
        full = f"{pivot_path}/{pattern}" if pivot_path else pattern
        _match_literal(src_root, full, follow, view, _display(full))  # must exist
    try:
        include = PatternMatcher([pattern])
    except PatternError as e:
        raise FileOpError(f"invalid --parents source {src!r}: {e}") from None
    return [SourceMatch(root.rel, root.host, root.st, root.name, include=include)]


def _as_view(src_root: str, ignore: IgnoreFn | IgnoreView | None) -> IgnoreView | None:
    if ignore is None or isinstance(ignore, IgnoreView):
        return ignore
    return IgnoreView(src_root, ignore)


def walk_selection(match: SourceMatch, *, excludes: PatternMatcher | None = None,
                   ignore: IgnoreFn | IgnoreView | None = None,
                   src_root: str = "") -> Iterator[tuple[str, TreeEntry]]:
    """The entries a copy of `match` takes, depth first in name order, as events:
    (ENTER, dir) ... (LEAVE, dir) around a directory's entries, (LEAF, entry) for the rest.
    A directory that is only a parent of selected entries (ignored, excluded or outside
    the --parents pattern itself) is entered just before its first selected entry, and
    not at all if nothing below it is selected."""
    view = _as_view(src_root, ignore)
    root = TreeEntry("", match.host, match.st)
    if not stat.S_ISDIR(match.st.st_mode):
        yield LEAF, root
        return
    yield ENTER, root
    yield from _walk_dir(match, root, [], match.include, excludes, MatchInfo(), MatchInfo(),
                         view)
    yield LEAVE, root


def _walk_dir(match: SourceMatch, parent: TreeEntry, pending: list[list],
              include: PatternMatcher | None, excludes: PatternMatcher | None,
              inc_info: MatchInfo, exc_info: MatchInfo,
              view: IgnoreView | None) -> Iterator[tuple[str, TreeEntry]]:
    try:
        names = sorted(os.listdir(parent.host))
    except OSError as e:
        raise FileOpError(f"failed to read directory {_display(match.rel + '/' + parent.rel)}: "
                          f"{e.strerror}") from None
    for name in names:
        rel = f"{parent.rel}/{name}" if parent.rel else name
        host = os.path.join(parent.host, name)
        st = _lstat(host)
        if st is None:
            continue  # vanished while we walked
        is_dir = stat.S_ISDIR(st.st_mode)
        selected = True
        descend = is_dir
        child_inc = child_exc = MatchInfo()
        if view is not None:
            ctx_rel = f"{match.rel}/{rel}" if match.rel else rel
            if view.hidden(ctx_rel):
                selected = False
                descend = descend and view.can_descend(ctx_rel)
        if include is not None:
            hit, child_inc = include.matches_using_parent_results(rel, inc_info)
            if not hit:
                selected = False
                descend = descend and include.may_match_under(rel)
        if excludes is not None:
            hit, child_exc = excludes.matches_using_parent_results(rel, exc_info)
            if hit:
                selected = False
                descend = descend and excludes.may_include_under(rel)
        entry = TreeEntry(rel, host, st)
        if selected:
            yield from _flush(pending)
            if is_dir:
                yield ENTER, entry
                yield from _walk_dir(match, entry, pending, include, excludes, child_inc,
                                     child_exc, view)
                yield LEAVE, entry
            else:
                yield LEAF, entry
        elif descend:
            item = [entry, False]
            pending.append(item)
            yield from _walk_dir(match, entry, pending, include, excludes, child_inc,
                                 child_exc, view)
            pending.pop()
            if item[1]:
                yield LEAVE, entry


def _flush(pending: list[list]) -> Iterator[tuple[str, TreeEntry]]:
    for item in pending:
        if not item[1]:
            item[1] = True
            yield ENTER, item[0]


# --------------------------------------------------------------------------- writing


def _dest_rel(root: str, host: str) -> str:
    """The path a user knows (`/etc/x`) for a host path inside a root."""
    return "/" + rel_to_root(root, host)


def mkdir_all(root: str, path: str, mode: int = 0o755, owner: Owner | None = None,
              *, times_ns: tuple[int, int] | None = None) -> str:
    """Create `path` (inside root, symlinks resolved inside root) and missing parents.
    New directories get `mode` and `owner` (default: the caller's, i.e. 0:0 as root).
    Returns the host path of the (now existing) directory."""
    try:
        rel = resolve_rel(root, path)
    except PathResolveError as e:
        raise FileOpError(str(e)) from None
    host = root
    for comp in rel.split("/") if rel else []:
        host = os.path.join(host, comp)
        st = _lstat(host)
        if st is None:
            try:
                os.mkdir(host, 0o700)
            except FileExistsError:
                pass
            else:
                if owner is not None:
                    _chown(host, owner.uid, owner.gid)
                os.chmod(host, mode)
                if times_ns is not None:
                    os.utime(host, ns=times_ns)
                continue
            st = os.lstat(host)
        if not stat.S_ISDIR(st.st_mode):
            raise FileOpError(f"mkdir {_dest_rel(root, host)}: not a directory")
    return host


def _copy_data(src: str, dst_fd: int, size: int) -> None:
    with open(src, "rb", buffering=0) as f:
        _copy_fd(f, dst_fd, size)


def _copy_fd(f, dst_fd: int, size: int, use_cfr: bool = True) -> bool:
    """Copy the open file `f` (unbuffered) into `dst_fd`: `size` bytes, or to EOF.
    Returns False when copy_file_range refused to cross filesystems (EXDEV, as from the
    context into an overlay), so that a caller copying many files stops asking."""
    in_fd = f.fileno()
    copied = 0
    cross_ok = True
    use_cfr = use_cfr and hasattr(os, "copy_file_range")
    while copied < size or size == 0:
        chunk = min(size - copied, 1 << 30) if size else 1 << 20
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(in_fd, dst_fd, chunk)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                   errno.EPERM, errno.EBADF):
                    raise
                use_cfr = False
                cross_ok = e.errno != errno.EXDEV
                continue
        else:
            try:
                n = os.sendfile(dst_fd, in_fd, None, chunk)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                data = f.read(1 << 20)
                n = len(data)
                if n:
                    os.write(dst_fd, data)  # short writes are not expected on files
        if n == 0:
            break  # EOF (the file shrank, or was empty)
        copied += n
    return cross_ok


_SKIP_XATTRS = ("security.selinux", "system.")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_xattrs(src: str | int, dst: str | int) -> None:
    """Copy xattrs between paths (symlinks not followed) or open fds."""
    src_kw = {} if isinstance(src, int) else {"follow_symlinks": False}
    dst_kw = {} if isinstance(dst, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(src, **src_kw)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTRS):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, **src_kw), **dst_kw)
        except OSError:
            pass  # like BuildKit: an xattr the destination refuses is logged, not fatal


def _chown(path: str | int, uid: int, gid: int) -> None:
    try:
        if isinstance(path, int):
            os.fchown(path, uid, gid)
        else:
            os.lchown(path, uid, gid)
    except PermissionError:
        # without root (tests, a future rootless mode without an id map) ownership is
        # best effort; as root a refusal is a real error
        if os.geteuid() == 0:
            raise


class _Copier:
    """One apply_copy: owner/mode policy, hard link memory, the destination root."""

    def __init__(self, dest_root: str, owner: Owner | None, reset_owner: bool,
                 mode: ModeSpec | None):
        self.dest_root = dest_root
        self.owner = owner
        self.reset_owner = reset_owner
        self.mode = mode
        self.inodes: dict[tuple[int, int], str] = {}
        self._cfr = True  # copy_file_range still worth trying for this destination

    def ids(self, st: os.stat_result) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        if self.reset_owner:
            return 0, 0
        return st.st_uid, st.st_gid

    def set_meta(self, src: str, dst: str, st: os.stat_result) -> None:
        _chown(dst, *self.ids(st))
        if not stat.S_ISLNK(st.st_mode):
            perm = stat.S_IMODE(st.st_mode)
            if self.mode is not None:
                perm = self.mode.apply(perm, stat.S_ISDIR(st.st_mode))
            os.chmod(dst, perm)  # after chown: chown clears setuid/setgid
        _copy_xattrs(src, dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _put_file(self, src: str, target: str, st: os.stat_result) -> None:
        """A regular file made, filled and given its metadata through open fds: the same
        operations as by path, without walking the (overlay) path again for each."""
        try:
            fd = os.open(target, _CREATE, 0o600)
        except FileExistsError:
            self._make_room(target)
            fd = os.open(target, _CREATE, 0o600)
        try:
            with open(src, "rb", buffering=0) as f:
                self._cfr = _copy_fd(f, fd, st.st_size, self._cfr) and self._cfr
                _chown(fd, *self.ids(st))
                perm = stat.S_IMODE(st.st_mode)
                if self.mode is not None:
                    perm = self.mode.apply(perm, False)
                os.fchmod(fd, perm)  # after chown: chown clears setuid/setgid
                _copy_xattrs(f.fileno(), fd)
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)

    def _make_room(self, target: str) -> None:
        tst = _lstat(target)
        if tst is not None:
            if stat.S_ISDIR(tst.st_mode):
                raise self._err("cannot replace to directory {path} with file", target)
            os.unlink(target)

    def _err(self, msg: str, host: str) -> FileOpError:
        return FileOpError(msg.format(path=_dest_rel(self.dest_root, host)))

    def enter_dir(self, target: str) -> tuple[str, bool, bool]:
        """Make `target` a directory to copy into: (host path, newly created, reached
        through a symlink)."""
        st = _lstat(target)
        if st is None:
            os.mkdir(target, 0o700)
            return target, True, False
        if stat.S_ISDIR(st.st_mode):
            return target, False, False
        if stat.S_ISLNK(st.st_mode):
            # a symlink to a directory in the image (usrmerge's /lib -> usr/lib): merge into
            # its target, resolved inside the destination root (BuildKit refuses with
            # "cannot copy to non-directory"; the classic builder merged, users expect that)
            resolved = resolve_in_root(self.dest_root, _dest_rel(self.dest_root, target))
            rst = _lstat(resolved)
            if rst is not None and stat.S_ISDIR(rst.st_mode):
                return resolved, False, True
        raise self._err("cannot copy to non-directory: {path}", target)

    def put_leaf(self, src: str, target: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode) and st.st_nlink == 1:
            self._put_file(src, target, st)
            return
        self._make_room(target)
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                first = self.inodes.get(key)
                if first is not None:
                    os.link(first, target, follow_symlinks=False)
                    return
                self.inodes[key] = target
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                _copy_data(src, fd, st.st_size)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), target)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) \
                or stat.S_ISSOCK(mode):
            os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        else:
            raise FileOpError(f"unsupported file type {stat.S_IFMT(mode):o}: {src}")
        self.set_meta(src, target, st)

    def copy_match(self, match: SourceMatch, target: str, excludes: PatternMatcher | None,
                   view: IgnoreView | None) -> None:
        """Copy one selected source to `target` (host path, already decided)."""
        stack: list[tuple[TreeEntry, str, bool]] = []
        for event, entry in walk_selection(match, excludes=excludes, ignore=view):
            if event == LEAF:
                dst = target if not entry.rel else os.path.join(stack[-1][1],
                                                                  posixpath.basename(entry.rel))
                self.put_leaf(entry.host, dst, entry.st)
            elif event == ENTER:
                if not entry.rel:
                    # the top directory keeps its metadata unless this copy created it
                    host, created, _ = self.enter_dir(target)
                    stack.append((entry, host, created))
                else:
                    host, _, via_link = self.enter_dir(
                        os.path.join(stack[-1][1], posixpath.basename(entry.rel)))
                    # nested directories take the source's metadata even when they existed,
                    # but a directory reached through an image symlink keeps its own
                    stack.append((entry, host, not via_link))
            else:
                entry, host, apply_meta = stack.pop()
                if apply_meta:
                    self.set_meta(entry.host, host, entry.st)


def _is_dir_dest(dest: str) -> bool:
    return dest in ("", ".") or dest.endswith("/") or dest.endswith("/.")


def apply_copy(action: Copy, src_root: str, dest_root: str, *,
               ignore: IgnoreFn | IgnoreView | None = None,
               reset_owner: bool | None = None, user_root: str | None = None) -> None:
    """Carry out one COPY/ADD action from `src_root` into the rootfs `dest_root`.

    `ignore` hides context paths (the .dockerignore view: pass
    `BuildContext.ignore_filter`). `reset_owner` (default: the source is a LocalSource)
    gives copied files 0:0 unless --chown says otherwise. `--chown` names are looked up
    in `user_root` (default `dest_root`; the solver gives a `COPY --link` its names already
    resolved to ids in the stage, see `pybuild.linkusers`).
    """
    src_root = os.path.abspath(src_root)
    dest_root = os.path.abspath(dest_root)
    if reset_owner is None:
        reset_owner = isinstance(action.source, LocalSource)
    dest = action.dest
    if not dest.startswith("/"):
        dest = posixpath.join(action.dest_cwd or "/", dest) if dest not in ("", ".") \
            else (action.dest_cwd or "/").rstrip("/") + "/"
    dest_is_dir = _is_dir_dest(action.dest) or _is_dir_dest(dest)
    if len(action.src) > 1 and not dest_is_dir:
        raise FileOpError(MULTI_SOURCE_ERROR)
    try:
        owner = parse_chown(action.chown, user_root or dest_root)
        mode = parse_chmod(action.chmod)
        excludes = PatternMatcher(action.exclude) if action.exclude else None
    except PatternError as e:
        raise FileOpError(f"invalid exclude pattern: {e}") from None
    view = _as_view(src_root, ignore)
    try:
        _copy_all(action, src_root, dest_root, dest, dest_is_dir, owner, mode, excludes, view,
                  reset_owner)
    except PatternError as e:
        raise FileOpError(f"invalid pattern: {e}") from None
    except PathResolveError as e:
        raise FileOpError(str(e)) from None
    except OSError as e:
        where = e.filename or ""
        for root in (dest_root, src_root):
            if isinstance(where, str) and (where == root or where.startswith(root + "/")):
                where = _dest_rel(root, where)
                break
        raise FileOpError(f"copy failed: {where}: {e.strerror or e}") from None


def _copy_all(action: Copy, src_root: str, dest_root: str, dest: str, dest_is_dir: bool,
              owner: Owner | None, mode: ModeSpec | None, excludes: PatternMatcher | None,
              view: IgnoreView | None, reset_owner: bool) -> None:
    matches = resolve_sources(
        src_root, action.src, source_cwd=action.source_cwd,
        follow_symlinks=action.follow_symlinks, allow_wildcard=action.allow_wildcard,
        allow_empty_wildcard=action.allow_empty_wildcard, parents=action.parents,
        excludes=excludes, ignore=view)
    if not matches:
        return
    clean_dest = clean_path("/" + dest)
    if action.create_dest_path:
        mkdir_all(dest_root, clean_dest if dest_is_dir else posixpath.dirname(clean_dest),
                  0o755, owner)
    else:
        parent = resolve_in_root(dest_root, posixpath.dirname(clean_dest))
        if _lstat(parent) is None:
            raise FileOpError(f"failed to stat {action.dest}: no such file or directory")
    dst_host = resolve_in_root(dest_root, clean_dest)
    copier = _Copier(dest_root, owner, reset_owner, mode)
    for match in matches:
        if action.unpack_archives and not match.is_dir and match.include is None \
                and _archive_opener(match.host) is not None:
            unpack_archive(match.host, dest_root, clean_dest, owner)
            continue
        # BuildKit's prepareTargetDir: decide the target, then make its parent
        try:
            dst_st = os.stat(dst_host)
        except (FileNotFoundError, NotADirectoryError):
            dst_st = None
        contents = action.dir_contents_only or match.include is not None
        target = dst_host
        if match.include is None and (
                (not contents and match.is_dir and dst_st is not None)
                or (not match.is_dir and dst_st is not None and stat.S_ISDIR(dst_st.st_mode))):
            target = os.path.join(dst_host, match.name)
        target_rel = rel_to_root(dest_root, target)
        if contents and match.is_dir and dst_st is None:
            mkdir_all(dest_root, target_rel, 0o755, owner)
        else:
            mkdir_all(dest_root, posixpath.dirname(target_rel), 0o755, owner)
        copier.copy_match(match, target, excludes, view)


def apply_mkdir(action: Mkdir, dest_root: str, *, user_root: str | None = None) -> None:
    """WORKDIR-style mkdir: parents optional, an existing directory is fine."""
    owner = parse_chown(action.chown, user_root or dest_root)
    path = clean_path("/" + action.path)
    if action.make_parents:
        mkdir_all(dest_root, path, action.mode & 0o7777, owner)
        return
    parent = resolve_in_root(dest_root, posixpath.dirname(path))
    host = os.path.join(parent, posixpath.basename(path)) if path != "/" else dest_root
    try:
        os.mkdir(host, 0o700)
    except FileExistsError:
        if os.path.isdir(host):  # follows a symlink; the parent is already inside the root
            return
        raise FileOpError(f"mkdir {path}: file exists") from None
    except (FileNotFoundError, NotADirectoryError):
        raise FileOpError(f"mkdir {path}: no such file or directory") from None
    if owner is not None:
        os.lchown(host, owner.uid, owner.gid)
    os.chmod(host, action.mode & 0o7777)


def apply_mkfile(action: Mkfile, dest_root: str, *, user_root: str | None = None) -> None:
    """Write `action.data` to `action.path` (replacing a file there, as BuildKit does)."""
    owner = parse_chown(action.chown, user_root or dest_root)
    path = clean_path("/" + action.path)
    if path == "/":
        raise FileOpError("mkfile /: is a directory")
    try:
        host = resolve_in_root(dest_root, path)
    except PathResolveError as e:
        raise FileOpError(str(e)) from None
    st = _lstat(host)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise FileOpError(f"mkfile {path}: is a directory")
    try:
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except (FileNotFoundError, NotADirectoryError):
        raise FileOpError(f"mkfile {path}: no such file or directory") from None
    try:
        view = memoryview(action.data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, action.mode & 0o7777)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- ADD archives

_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))


def _archive_opener(path: str):
    """A function opening `path` as a tar stream, or None if it is not a tar archive.
    Detection is by content (as Docker does): compression magic, then a valid tar header."""
    import tarfile

    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), "")

    @contextlib.contextmanager
    def opener():
        # tarfile leaves a fileobj it was given open: close the file here
        with open(path, "rb") as raw:
            if kind == "zstd":
                import zstandard

                stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
                with tarfile.open(fileobj=stream, mode="r|") as tf:
                    yield tf
            else:
                with tarfile.open(fileobj=raw, mode=f"r|{kind}" if kind else "r|") as tf:
                    yield tf

    try:
        with opener() as tf:
            if tf.next() is None:
                return None
    except Exception:  # any decoding or header error: not an archive, copy it as a file
        return None
    return opener


def unpack_archive(archive: str, dest_root: str, dest: str, owner: Owner | None) -> None:
    """Extract a local tar archive into the directory `dest` of the rootfs (ADD).

    Entries are merged like `tar -x`; every entry's parent is resolved inside the rootfs, a
    name that climbs out of `dest` with `..` is refused, hard links must point inside the
    archive's destination. Owners come from the archive unless `owner` is given."""
    import tarfile

    opener = _archive_opener(archive)
    if opener is None:
        raise FileOpError(f"{os.path.basename(archive)} is not a tar archive")
    base = mkdir_all(dest_root, dest, 0o755, owner)
    base_rel = rel_to_root(dest_root, base)
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    with opener() as tf:
        for member in tf:
            name = clean_path("/" + member.name).lstrip("/")
            lexical = posixpath.normpath(member.name.lstrip("/") or ".")
            if lexical == ".." or lexical.startswith("../"):
                raise FileOpError(f"archive entry {member.name!r} escapes the destination")
            if not name:
                continue
            full = f"{base_rel}/{name}" if base_rel else name
            parent = mkdir_all(dest_root, posixpath.dirname(full), 0o755, owner)
            target = os.path.join(parent, posixpath.basename(full))
            existing = _lstat(target)
            if member.isdir():
                if existing is None:
                    os.mkdir(target, 0o700)
                elif not stat.S_ISDIR(existing.st_mode):
                    os.unlink(target)
                    os.mkdir(target, 0o700)
                dirs.append((target, member))
                continue
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise FileOpError(f"cannot replace directory /{full} with a file from "
                                      f"{os.path.basename(archive)}")
                os.unlink(target)
            if member.isreg():
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    src = tf.extractfile(member)
                    assert src is not None
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            elif member.issym():
                os.symlink(member.linkname, target)
            elif member.islnk():
                link = clean_path("/" + member.linkname).lstrip("/")
                link_rel = f"{base_rel}/{link}" if base_rel else link
                source = resolve_in_root(dest_root, link_rel, follow_final=False)
                if _lstat(source) is None:
                    raise FileOpError(f"archive hard link {member.name!r} -> "
                                      f"{member.linkname!r}: target not found")
                os.link(source, target, follow_symlinks=False)
                continue
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = stat.S_IFCHR if member.ischr() else (
                    stat.S_IFBLK if member.isblk() else stat.S_IFIFO)
                os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            else:
                continue  # other entry types (sparse, vendor) are skipped, as tar -x warns
            _tar_meta(target, member, owner)
    for target, member in reversed(dirs):  # after their contents, so mtimes stick
        _tar_meta(target, member, owner)


def _tar_meta(path: str, member, owner: Owner | None) -> None:
    uid, gid = (owner.uid, owner.gid) if owner is not None else (member.uid, member.gid)
    _chown(path, uid, gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    mtime_ns = int(member.mtime * 1_000_000_000)
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
