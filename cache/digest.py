"""The one digest helper: `sha256:<hex>` strings for bytes, files, streams and JSON values."""
from __future__ import annotations

import os
import re
import sys

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

Digest = str  # "sha256:<64 hex>"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def check_digest(value: str) -> Digest:
    """Return `value` if it is a well-formed sha256 digest; a digest names a file path, so
    anything else is refused before it can reach the filesystem."""
    if not is_digest(value):
        raise ValueError(f"not a sha256 digest: {value!r}")
    return value


def _sha256(data: bytes = b""):
    """`hashlib.sha256`, imported when first used: hashlib loads OpenSSL (~2.5 ms of a
    command's start), and some commands hash nothing (an OCI `save` of a stored image)."""
    import hashlib

    return hashlib.sha256(data)


# Below this size a digest is taken with CPython's own SHA-256 (no OpenSSL to load) unless
# hashlib is loaded anyway: a command that hashes only small things (a docker-format
# `save`'s manifest; an edit-and-rebuild's changed file and small layers) skips the ~2.7 ms
# of importing hashlib. Above it, OpenSSL's SHA-256 (SHA-NI) is faster. Streams and
# DigestWriter keep their first bytes until they know which side of it they are on.
_SMALL = 1 << 16
# CPython's SHA-256 runs at a fifth of OpenSSL's speed here (250 against 1,370 MB/s): past
# this many bytes in one process (~2 ms of it, what importing hashlib costs) OpenSSL pays
# off, so a build context of 20,000 small files is hashed by OpenSSL as before.
_SMALL_BUDGET = [1 << 19]


def _small_sha256(size: int):
    if "hashlib" in sys.modules or _SMALL_BUDGET[0] < size:
        return None
    _SMALL_BUDGET[0] -= size  # threads may race here: the budget is a rough one
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            return None
    return sha256


def digest_bytes(data: bytes) -> Digest:
    if len(data) < _SMALL:
        small = _small_sha256(len(data))
        if small is not None:
            return "sha256:" + small(data).hexdigest()
    return "sha256:" + _sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Sorted, compact JSON: the same value always gives the same bytes (and digest)."""
    import json  # here: the build memo's fast path hashes without JSON

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_json(value: Any) -> Digest:
    return digest_bytes(canonical_json(value))


def digest_stream(stream: BinaryIO) -> tuple[Digest, int]:
    head = stream.read(CHUNK)
    more = stream.read(CHUNK) if len(head) < _SMALL else b""
    if len(head) < _SMALL and not more:
        return digest_bytes(head), len(head)
    h = _sha256(head)
    h.update(more)
    size = len(head) + len(more)
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def digest_file(path: str) -> Digest:
    with open(path, "rb") as f:
        return digest_stream(f)[0]


def entry_body(path: str, st, file_digest=None) -> tuple:
    """What a content checksum reads of a non-directory entry beyond its stat header: a
    file's size and content digest (`file_digest(path)`, default `digest_file`), a link's
    target, a device's numbers. One definition for the build context's checksums and the
    build memo's re-check of them."""
    import stat

    mode = st.st_mode
    if stat.S_ISREG(mode):
        return st.st_size, (file_digest or digest_file)(path)
    if stat.S_ISLNK(mode):
        return (os.readlink(path),)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return (os.major(st.st_rdev), os.minor(st.st_rdev))
    return ()


class DigestWriter:
    """A write-through file wrapper that hashes and counts what passes through it.

    Used to compute a layer's diff_id (over the tar) and its digest (over the compressed
    bytes) in one pass, without reading anything back.
    """

    def __init__(self, inner: BinaryIO | None = None):
        self._inner = inner
        self._hash = None  # OpenSSL's, from the first write that passes _SMALL bytes
        self._head = bytearray()  # what came before that
        self.size = 0

    def write(self, data: bytes) -> int:
        h = self._hash
        if h is not None:
            h.update(data)
        elif self.size + len(data) < _SMALL:
            self._head += data
        else:
            h = self._hash = _sha256(bytes(self._head))
            self._head = bytearray()
            h.update(data)
        self.size += len(data)
        if self._inner is not None:
            self._inner.write(data)
        return len(data)

    def flush(self) -> None:
        if self._inner is not None:
            self._inner.flush()

    @property
    def digest(self) -> Digest:
        if self._hash is None:
            return digest_bytes(bytes(self._head))
        return "sha256:" + self._hash.hexdigest()
