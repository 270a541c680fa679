"""Unpacking OCI layer tars into overlay-format snapshot directories, safely.

A layer is extracted into a fresh directory of its own (one overlay lowerdir per layer),
so OCI whiteouts become overlay whiteouts: `.wh.name` a 0:0 character device `name`,
`.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

Whatever the tar says, nothing is written outside the destination: absolute names and
`..` are refused, every parent is opened component by component with O_NOFOLLOW relative
to the destination (a symlink where a parent directory should be is refused, never
followed), hardlinks must point at a file extracted earlier from the same tar, and
overlay's own xattrs are never taken from a tar.

`decompressing_reader` sniffs gzip / zstd / plain from the magic bytes.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
from typing import BinaryIO

from pybuild.errors import PybuildError

_CHUNK = 1 << 20
_WH = ".wh."
_OPQ = ".wh..wh..opq"
_FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


class LayerError(PybuildError):
    """A layer tar is malformed or tries to write outside its destination."""


def _split(name: str, what: str = "entry") -> list[str]:
    if name.startswith("/"):
        raise LayerError(f"layer {what} {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer {what} {name!r} contains '..'")
    return parts


class _Tree:
    """Directory fds of the destination, opened without following symlinks."""

    def __init__(self, dest: str):
        self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: dict[tuple[str, ...], int] = {(): self.root}

    def close(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()

    def forget(self, parts: tuple[str, ...]) -> None:
        # a directory being replaced or removed: drop it and everything cached below it
        for key in [k for k in self._cache if k[:len(parts)] == parts and k]:
            os.close(self._cache.pop(key))

    def dir(self, parts: tuple[str, ...], name: str) -> int:
        """fd of the directory `parts`, creating missing ones (0755, root-owned)."""
        fd = self._cache.get(parts)
        if fd is not None:
            return fd
        parent = self.dir(parts[:-1], name)
        comp = parts[-1]
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(comp, flags, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(comp, 0o755, dir_fd=parent)
            fd = os.open(comp, flags, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise LayerError(f"layer entry {name!r}: parent {'/'.join(parts)!r} is not a "
                                 f"directory (a symlink or file); refusing to write through it") from None
            raise
        self._cache[parts] = fd
        return fd


def _remove(dirfd: int, name: str) -> bool:
    """Remove `name` (a whole tree if a directory); True if something was there."""
    try:
        st = os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)
    return True


def _set_xattrs(target: str | int, dirfd: int | None, pax: dict[str, str], is_link: bool) -> None:
    for key, value in sorted(pax.items()):
        if not key.startswith("SCHILY.xattr."):
            continue
        xname = key[len("SCHILY.xattr."):]
        if xname.startswith(_FORBIDDEN_XATTR_PREFIXES):
            continue
        raw = value.encode("utf-8", "surrogateescape")
        try:
            if isinstance(target, int):
                os.setxattr(target, xname, raw)
            else:
                # no setxattr(dir_fd=...): go through /proc/self/fd, which names the
                # directory we hold open, so no path component is re-resolved
                os.setxattr(f"/proc/self/fd/{dirfd}/{target}", xname, raw, follow_symlinks=False)
        except OSError as e:
            if is_link or e.errno in (errno.ENOTSUP, errno.EPERM):
                continue  # e.g. user.* xattrs on a symlink, or a filesystem without xattrs
            raise


def extract_layer(tar_stream: BinaryIO, dest_dir: str) -> None:
    """Extract an uncompressed layer tar into `dest_dir` (an empty directory) in overlay format."""
    import tarfile

    tree = _Tree(dest_dir)
    dir_times: list[tuple[tuple[str, ...], int]] = []
    opaque_dirs: set[tuple[str, ...]] = set()
    try:
        try:
            tf = tarfile.open(fileobj=tar_stream, mode="r|")
        except tarfile.ReadError as e:
            raise LayerError(f"layer is not a tar archive: {e}") from None
        try:
            for m in tf:
                _extract_one(tf, m, tree, dir_times, opaque_dirs)
        except tarfile.TarError as e:
            raise LayerError(f"layer tar is corrupt: {e}") from None
        for parts in opaque_dirs:
            fd = tree.dir(parts, "/".join(parts))
            os.setxattr(fd, "trusted.overlay.opaque", b"y")
        # directory mtimes last: creating entries inside a directory changes its mtime
        for parts, mtime_ns in reversed(dir_times):
            fd = tree.dir(parts, "/".join(parts))
            os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        tree.close()


def _mtime_ns(m) -> int:
    return int(round(float(m.mtime) * 1_000_000_000))


def _extract_one(tf, m, tree: _Tree, dir_times: list, opaque_dirs: set) -> None:
    parts = tuple(_split(m.name))
    if not parts:
        # the layer's root directory itself: take its metadata
        if not m.isdir():
            raise LayerError(f"layer root entry {m.name!r} is not a directory")
        fd = tree.root
        os.chown(fd, m.uid, m.gid)
        os.chmod(fd, m.mode & 0o7777)
        _set_xattrs(fd, None, m.pax_headers, False)
        dir_times.append(((), _mtime_ns(m)))
        return
    parent_parts, base = parts[:-1], parts[-1]
    pfd = tree.dir(parent_parts, m.name)
    mtime = _mtime_ns(m)

    if base == _OPQ:
        opaque_dirs.add(parent_parts)
        return
    if base.startswith(_WH + _WH):
        return  # other aufs metadata (.wh..wh.plnk, ...): meaningless here
    if base.startswith(_WH):
        victim = base[len(_WH):]
        if not victim:
            raise LayerError(f"layer entry {m.name!r} is a whiteout without a name")
        if _remove(pfd, victim):
            tree.forget(parent_parts + (victim,))
        os.mknod(victim, stat.S_IFCHR | 0, 0, dir_fd=pfd)
        os.chown(victim, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(victim, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        return

    if m.isdir():
        try:
            st = os.lstat(base, dir_fd=pfd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(base, dir_fd=pfd)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = tree.dir(parts, m.name)
        os.chown(fd, m.uid, m.gid)
        os.chmod(fd, m.mode & 0o7777)
        _set_xattrs(fd, None, m.pax_headers, False)
        dir_times.append((parts, mtime))
        return

    # anything else replaces whatever the same tar put at this name before
    if _remove(pfd, base):
        tree.forget(parts)
    is_link = False
    if m.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    _write_all(fd, chunk)
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)
            _set_xattrs(fd, None, m.pax_headers, False)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        return
    if m.issym():
        os.symlink(m.linkname, base, dir_fd=pfd)
        is_link = True
    elif m.islnk():
        tparts = tuple(_split(m.linkname, "hardlink target"))
        if not tparts:
            raise LayerError(f"layer hardlink {m.name!r} points at the layer root")
        tpfd = tree.dir(tparts[:-1], m.linkname)
        try:
            tst = os.lstat(tparts[-1], dir_fd=tpfd)
        except FileNotFoundError:
            raise LayerError(f"layer hardlink {m.name!r} -> {m.linkname!r}: target is not in "
                             f"this layer") from None
        if stat.S_ISDIR(tst.st_mode):
            raise LayerError(f"layer hardlink {m.name!r} -> {m.linkname!r}: target is a directory")
        os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        return  # a hardlink shares the target's inode: its metadata is the target's
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(base, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
    elif m.isfifo():
        os.mkfifo(base, m.mode & 0o7777, dir_fd=pfd)
    else:
        raise LayerError(f"layer entry {m.name!r} has an unsupported type {m.type!r}")
    os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
    if not is_link:
        os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
    _set_xattrs(base, pfd, m.pax_headers, is_link)
    os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --- decompression ------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `stream`: lets us sniff magic bytes of a pipe."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def detect_compression(head: bytes) -> str:
    """"gzip", "zstd" or "" (uncompressed) from the first bytes of a blob."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return ""


def decompressing_reader(stream: BinaryIO, media_type: str | None = None) -> BinaryIO:
    """A reader of the uncompressed bytes of `stream`. The compression is found from the
    magic bytes; `media_type` is only a hint (registries and tools mislabel layers, the
    bytes don't lie)."""
    head = b""
    while len(head) < 4:
        chunk = stream.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    raw = io.BufferedReader(_Prefixed(head, stream), buffer_size=_CHUNK)
    kind = detect_compression(head)
    if kind == "gzip":
        import gzip
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    return raw  # type: ignore[return-value]
