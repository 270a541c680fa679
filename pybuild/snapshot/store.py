"""Unpacked layers ("snapshots") on disk, one overlay lowerdir per layer.

Layout under the store root (paths kept short: an overlay mount's options must fit in
one page, so a 100-layer image needs short lowerdirs, as containerd does):

    <root>/s/<n>/          the unpacked layer n (overlay format: whiteouts are 0:0 devices)
    <root>/w/<x>/{u,w}     a work unit: upperdir and workdir of one running step (<x> random)
    <root>/t/              temporary unpack dirs (renamed into s/ when complete)
    <root>/locks/          one lock file per diff_id being unpacked
    <root>/index.db        cache.index.CacheIndex, kind "snapshot": diff_id -> {"dir": "s/<n>"}

A number is taken by `mkdir` (exclusive, atomic, so concurrent processes never share one),
then the complete directory is renamed over that empty placeholder: a reader never sees
a half-unpacked layer. The index record is written after the rename; a crash in between
leaves an unreferenced dir that garbage collection can remove.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Iterator

from cache.index import CacheIndex
from pybuild.dirspread import spread_subdirectories
from pybuild.errors import StoreError
from pybuild.snapshot.extract import decompressing_reader, extract_layer

KIND = "snapshot"


class SnapshotStore:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.snap_dir = os.path.join(self.root, "s")
        self.work_dir = os.path.join(self.root, "w")
        self.tmp_dir = os.path.join(self.root, "t")
        self.lock_dir = os.path.join(self.root, "locks")
        for d in (self.snap_dir, self.work_dir, self.tmp_dir, self.lock_dir):
            os.makedirs(d, exist_ok=True)
        # work units and unpack dirs are where snapshots' files are created
        for d in (self.work_dir, self.tmp_dir):
            spread_subdirectories(d)
        self.index = CacheIndex(os.path.join(self.root, "index.db"))
        self._next = {self.snap_dir: _max_number(self.snap_dir) + 1}

    # lookups ----------------------------------------------------------------------
    def get(self, diff_id: str) -> str | None:
        """The directory of the unpacked layer `diff_id`, or None."""
        rec = self.index.get(KIND, diff_id)
        if rec is None:
            return None
        path = os.path.join(self.root, rec.value["dir"])
        if not os.path.isdir(path):
            self.index.delete(KIND, diff_id)  # removed behind our back (gc, by hand)
            return None
        return path

    def ensure(self, diff_id: str, open_uncompressed: Callable[[], BinaryIO]) -> str:
        """Unpack the layer once and return its directory. Concurrent callers (threads or
        processes) for the same diff_id wait for the first one; nobody unpacks twice."""
        path = self.get(diff_id)
        if path is not None:
            return path
        with self._lock(diff_id):
            path = self.get(diff_id)
            if path is not None:
                return path
            tmp = tempfile.mkdtemp(dir=self.tmp_dir)
            try:
                with contextlib.closing(open_uncompressed()) as stream:
                    # sniffing costs 4 bytes and forgives a caller handing a compressed blob
                    extract_layer(decompressing_reader(stream), tmp)
                return self._commit(diff_id, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def adopt(self, diff_id: str, upper_dir: str) -> str:
        """Keep a finished step's upperdir as the snapshot of the layer made from it.
        The upperdir (and its work unit) are consumed; if the layer is already known,
        the upperdir is discarded and the existing snapshot returned."""
        upper_dir = os.path.abspath(upper_dir)
        _wait_released(upper_dir)
        with self._lock(diff_id):
            existing = self.get(diff_id)
            if existing is not None:
                self.discard(upper_dir)
                return existing
            path = self._commit(diff_id, upper_dir)
        unit = self._work_unit(upper_dir)
        if unit is not None:
            shutil.rmtree(unit, ignore_errors=True)
        return path

    # work units -----------------------------------------------------------------
    def new_work(self) -> tuple[str, str]:
        """A fresh (upperdir, workdir) pair on the store's filesystem; free it with
        `discard()` (either path) or turn the upperdir into a layer with `adopt()`."""
        # a name never reused (unlike snapshot numbers), so a late discard() of a finished
        # unit can never hit another process's fresh one
        unit = tempfile.mkdtemp(dir=self.work_dir, prefix="")
        os.chmod(unit, 0o755)
        upper, work = os.path.join(unit, "u"), os.path.join(unit, "w")
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
        return upper, work

    def discard(self, path: str) -> None:
        """Remove a work unit (given its upperdir or workdir) or a snapshot dir and its
        index records. Paths outside the store are refused."""
        path = os.path.abspath(path)
        unit = self._work_unit(path)
        if unit is not None:
            _wait_released(unit)
            shutil.rmtree(unit, ignore_errors=True)
            return
        if os.path.dirname(path) == self.snap_dir:
            rel = os.path.relpath(path, self.root)
            for rec in list(self.index.records(KIND)):
                if rec.value.get("dir") == rel:
                    self.index.delete(KIND, rec.key)
            shutil.rmtree(path, ignore_errors=True)
            return
        if os.path.dirname(path) == self.tmp_dir:
            shutil.rmtree(path, ignore_errors=True)
            return
        raise StoreError(f"refusing to remove {path}: not a snapshot or work dir of {self.root}")

    # internals --------------------------------------------------------------------
    def _work_unit(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.work_dir)
        if rel.startswith("..") or rel == ".":
            return None
        return os.path.join(self.work_dir, rel.split(os.sep)[0])

    def _allocate(self, parent: str) -> str:
        n = self._next[parent]
        while True:
            path = os.path.join(parent, str(n))
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                n += 1
                continue
            self._next[parent] = n + 1
            return path

    def _commit(self, diff_id: str, src: str) -> str:
        dest = self._allocate(self.snap_dir)
        try:
            os.rename(src, dest)  # over the empty placeholder: atomic
        except OSError:
            os.rmdir(dest)
            raise
        self.index.put(KIND, diff_id, {"dir": os.path.relpath(dest, self.root)})
        return dest

    @contextlib.contextmanager
    def _lock(self, diff_id: str) -> Iterator[None]:
        name = diff_id.replace(":", "-").replace("/", "_")
        fd = os.open(os.path.join(self.lock_dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _wait_released(path: str) -> None:
    """Wait for a COPY's overlay over `path` to be gone (see mounted_rootfs's
    defer_release) before the directory is moved or removed."""
    import sys

    mounted = sys.modules.get("pybuild.sandbox.mounted")  # not imported: nothing mounted
    if mounted is not None:
        mounted.wait_released(path)


def _max_number(parent: str) -> int:
    best = 0
    with os.scandir(parent) as it:
        for e in it:
            if e.name.isdigit():
                best = max(best, int(e.name))
    return best
