"""Blobs by sha256 digest under `<root>/blobs/sha256/`, written atomically.

A blob appears under its final name only once it is complete and its digest checked
(temp file in the same filesystem, fsync-free rename), so a crash or Ctrl-C never leaves
a half-written blob where a reader could find it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os

from cache.atomicfile import write_atomically
from cache.digest import CHUNK, Digest, DigestWriter, check_digest, digest_bytes

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import BinaryIO, Iterator


class BlobNotFound(KeyError):
    def __init__(self, digest: str):
        super().__init__(digest)
        self.digest = digest

    def __str__(self) -> str:
        return f"blob {self.digest} is not in the store"


class DigestMismatch(ValueError):
    pass


class BlobWriter:
    """A file being written into the store; `commit()` names it by its digest."""

    def __init__(self, store: "BlobStore"):
        import tempfile  # here: a command that only reads blobs never needs it

        self._store = store
        fd, self._tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self._file = os.fdopen(fd, "wb")
        self._hasher = DigestWriter(self._file)
        self.digest: Digest | None = None

    def write(self, data: bytes) -> int:
        return self._hasher.write(data)

    def flush(self) -> None:
        self._file.flush()

    @property
    def size(self) -> int:
        return self._hasher.size

    def commit(self, expected: Digest | None = None) -> Digest:
        self._file.close()
        digest = self._hasher.digest
        if expected is not None and expected != digest:
            os.unlink(self._tmp)
            raise DigestMismatch(f"expected {expected}, got {digest}")
        self._store._adopt(self._tmp, digest)
        self.digest = digest
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class BlobStore:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.blob_dir = os.path.join(self.root, "blobs", "sha256")
        self.tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    def path(self, digest: Digest) -> str:
        return os.path.join(self.blob_dir, check_digest(digest).split(":", 1)[1])

    def has(self, digest: Digest) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: Digest) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        if not self.has(digest):
            # the digest is known: the bytes go straight into place, with no second hashing
            # pass and no tempfile module (a docker-format `save`, which stores one small
            # manifest, then loads neither OpenSSL nor tempfile); the temp file is in
            # tmp_dir, which clean_tmp() empties after a crash
            write_atomically(self.path(digest), data, tmp_dir=self.tmp_dir)
        return digest

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None) -> Digest:
        """Copy a stream in, verifying it against `expected` when given."""
        if expected is not None and self.has(expected):
            return expected
        w = BlobWriter(self)
        try:
            while chunk := stream.read(CHUNK):
                w.write(chunk)
            return w.commit(expected)
        except BaseException:
            w.abort()
            raise

    def put_file(self, path: str, expected: Digest | None = None) -> Digest:
        with open(path, "rb") as f:
            return self.put_stream(f, expected)

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """`with store.writer() as w: w.write(...)`; the blob is committed on success and
        discarded on any exception. `w.digest` holds the digest afterwards."""
        w = BlobWriter(self)
        try:
            yield w
            if w.digest is None:
                w.commit()
        except BaseException:
            w.abort()
            raise

    def _adopt(self, tmp_path: str, digest: Digest) -> None:
        final = self.path(digest)
        if os.path.exists(final):
            os.unlink(tmp_path)
            return
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, final)

    def delete(self, digest: Digest) -> int:
        try:
            size = os.stat(self.path(digest)).st_size
            os.unlink(self.path(digest))
            return size
        except FileNotFoundError:
            return 0

    def digests(self) -> Iterator[Digest]:
        for name in os.listdir(self.blob_dir):
            if len(name) == 64:
                yield "sha256:" + name

    def clean_tmp(self) -> None:
        """Remove leftovers of interrupted writes (call with the store lock held)."""
        import shutil

        for name in os.listdir(self.tmp_dir):
            p = os.path.join(self.tmp_dir, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)

    @contextlib.contextmanager
    def lock(self, exclusive: bool = True) -> Iterator[None]:
        """A whole-store advisory lock: builds hold it shared, GC holds it exclusive."""
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)
