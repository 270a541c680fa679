"""THE path resolver: paths inside a root filesystem, resolved as if the root were `/`.

Every module that reads or writes a path inside a rootfs or a build context goes through
`resolve_in_root`: symlinks are followed the way the kernel would inside a chroot (an
absolute target starts again at the root, `..` stops at the root), so the host path it
returns is always inside the root, whatever the symlinks in the tree say. A rootfs where
`/etc -> /` or a context holding `passwd -> /etc/passwd` cannot make a COPY read or write
outside its root.

Components that do not exist are kept literally (they are about to be created).
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat

from pybuild.errors import PybuildError

__all__ = ["PathResolveError", "resolve_in_root", "resolve_rel", "safe_join", "rel_to_root",
           "MAX_SYMLINKS"]

# Linux gives up after 40 links in one lookup; continuity's RootPath allows 255.
MAX_SYMLINKS = 255


class PathResolveError(PybuildError):
    """A path cannot be resolved inside its root (a symlink loop, say)."""


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_rel(root: str, path: str, *, follow_final: bool = True) -> str:
    """Like resolve_in_root, but returns the resolved path relative to the root
    ("" for the root itself, else "a/b", never with `..`)."""
    resolved: list[str] = []
    # Docker cleans the given path lexically first (`a/link/..` is `a`); `..` inside
    # symlink targets is resolved against the real parent, as the kernel does.
    pending = _split(posixpath.normpath("/" + path))
    pending.reverse()  # a stack: the next component is pending[-1]
    links = 0
    while pending:
        comp = pending.pop()
        if comp == ".":
            continue
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, comp)
        is_final = not pending
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(comp)
            continue
        except NotADirectoryError:
            resolved.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode) and (follow_final or not is_final):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathResolveError(
                    f"too many levels of symbolic links while resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = _split(target)
            parts.reverse()
            pending.extend(parts)
            continue
        resolved.append(comp)
    return "/".join(resolved)


def resolve_in_root(root: str, path: str, *, follow_final: bool = True) -> str:
    """The host path of `path` inside `root`, symlinks resolved inside the root.

    `path` may be absolute or relative (both start at the root). With
    `follow_final=False` a final symlink is returned as itself (its parents are resolved).
    The result always starts with `root`.
    """
    rel = resolve_rel(root, path, follow_final=follow_final)
    return os.path.join(root, rel) if rel else root


def safe_join(root: str, rel: str) -> str:
    """Join a *relative, already clean* path under root, refusing `..` and absolute parts.

    For names that come from walking a tree (never from users): no symlink resolution."""
    parts = rel.split("/") if rel else []
    for p in parts:
        if p in ("", ".", ".."):
            raise PathResolveError(f"unsafe path component in {rel!r}")
    return os.path.join(root, *parts) if parts else root


def rel_to_root(root: str, host_path: str) -> str:
    """The root-relative path ("" for the root) of a host path known to be inside root."""
    root = root.rstrip("/") or "/"
    if host_path == root:
        return ""
    prefix = root if root.endswith("/") else root + "/"
    if not host_path.startswith(prefix):
        raise PathResolveError(f"{host_path!r} is not inside {root!r}")
    return host_path[len(prefix):]


def is_dir_nofollow(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
