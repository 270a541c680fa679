"""Layer compression: a tar in, a `LayerRecord` out; and the way back to the tar.

`compress_layer` hashes the uncompressed tar (diff_id) and the compressed bytes (digest)
in the same pass that writes the blob, so nothing is read twice. Output is deterministic:
gzip is written by `parallel_gzip` (fixed blocks deflated on all cores; no file name,
mtime 0), zstd always runs in multi-threaded mode (`threads=-1`: its output differs
between single-threaded `threads=0` and multi-threaded mode, but not between 1 and N
workers), and levels are pinned.
"""
from __future__ import annotations

import contextlib
import io
import os

from cache.digest import CHUNK, DigestWriter
from cache.store import BlobStore
from pybuild.errors import PybuildError
from pybuild.image import mediatypes as mt
from pybuild.image.types import LayerRecord

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import BinaryIO, Iterator

GZIP_LEVEL = 6  # what Go's compress/gzip (and so BuildKit) calls the default
ZSTD_LEVEL = 3  # zstd's own default
COMPRESSIONS = ("gzip", "zstd", "uncompressed")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CompressionError(PybuildError):
    pass


def compress_layer(source: str | BinaryIO, store: BlobStore, compression: str = "gzip",
                   level: int | None = None) -> LayerRecord:
    """Compress an uncompressed layer tar (a path or a readable stream) into the store."""
    if compression not in COMPRESSIONS:
        raise CompressionError(
            f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return compress_layer(f, store, compression, level)
    with layer_writer(store, compression, level) as sink:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
    assert sink.record is not None
    return sink.record


class LayerSink:
    """A writable for an uncompressed layer tar; `record` is set once the layer is in the
    store (see `layer_writer`)."""

    def __init__(self, tar_hash: DigestWriter):
        self._tar_hash = tar_hash
        self.record: LayerRecord | None = None

    def write(self, data: bytes) -> int:
        return self._tar_hash.write(data)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def layer_writer(store: BlobStore, compression: str = "gzip",
                 level: int | None = None) -> Iterator[LayerSink]:
    """Stream a tar straight into a compressed blob, no temp file:

        with layer_writer(blobs) as sink:
            write_layer_tar(upper, sink)
        sink.record  # LayerRecord

    Nothing lands in the store if the body raises."""
    if compression not in COMPRESSIONS:
        raise CompressionError(
            f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    with store.writer() as blob:
        compressor = _compressor(blob, compression, level)
        sink = LayerSink(DigestWriter(compressor))
        yield sink
        compressor.close()  # writes the trailer; leaves the blob open
        digest = blob.commit()
        size = blob.size
    sink.record = LayerRecord(digest, sink._tar_hash.digest, size,
                              mt.LAYER_BY_COMPRESSION[compression])


class _Passthrough:
    """The 'uncompressed' compressor: writes straight through; close() does nothing."""

    def __init__(self, out: BinaryIO):
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        pass


def _compressor(out: BinaryIO, compression: str, level: int | None):
    """A writable whose close() finishes the compressed stream without closing `out`."""
    check_level(compression, level)
    if compression == "gzip":
        from pybuild.image.parallel_gzip import ParallelGzipWriter

        # no file name, mtime 0: the header must not depend on where or when we ran
        return ParallelGzipWriter(out, GZIP_LEVEL if level is None else level)
    if compression == "zstd":
        import zstandard

        # threads=-1: all cores, and the same bytes whatever their number (>= 1)
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL if level is None else level,
                                        threads=-1, write_checksum=False,
                                        write_content_size=False)
        return cctx.stream_writer(out, closefd=False)
    return _Passthrough(out)


LEVEL_RANGES = {"gzip": (0, 9), "zstd": (1, 22)}


def check_level(compression: str, level: int | None) -> None:
    """Refuse a level the compressor does not have (BuildKit's ranges)."""
    if level is None:
        return
    lo, hi = LEVEL_RANGES.get(compression, (0, -1))
    if compression == "uncompressed":
        raise CompressionError("compression-level needs compression=gzip or zstd")
    if not lo <= level <= hi:
        raise CompressionError(f"{compression} compression level must be {lo}-{hi}, got {level}")


def sniff_compression(head: bytes) -> str:
    """'gzip', 'zstd' or 'uncompressed' from a blob's first bytes (media types lie:
    docker-archive layers and some registries get them wrong)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "uncompressed"


def decompressing_reader(stream: BinaryIO) -> BinaryIO:
    """Wrap `stream` so reads give the uncompressed bytes, whatever the compression."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    kind = sniff_compression(buffered.peek(4)[:4])  # type: ignore[attr-defined]
    if kind == "gzip":
        from pybuild.image.parallel_gzip import gzip_reader

        return gzip_reader(buffered)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


def open_uncompressed(store: BlobStore, layer: LayerRecord) -> BinaryIO:
    """The layer's tar as a readable stream (close it when done)."""
    return decompressing_reader(store.open(layer.digest))


def diff_id_of(stream: BinaryIO) -> str:
    """sha256 of the uncompressed content of a (possibly compressed) layer stream."""
    w = DigestWriter()
    reader = decompressing_reader(stream)
    while chunk := reader.read(CHUNK):
        w.write(chunk)
    return w.digest
