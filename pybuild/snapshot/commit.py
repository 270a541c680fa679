"""A finished step's upper dir becomes a layer blob, in one streaming pass.

The tar (snapshot/diff.py) goes through a 1 MiB buffer straight into the compressing,
hashing blob writer (image/compression.layer_writer): no temporary tar is written to
disk and read back (for a 500 MB COPY that was 1 GB of disk traffic), and the small
header/data/padding writes of many small files reach the compressor as a few large
ones. The bytes are those of the temporary-file route: neither the tar writer nor the
gzip writer depends on how the stream is chunked.
"""
from __future__ import annotations

from pybuild.image.types import LayerRecord

BUFFER = 1 << 20


class _Empty(Exception):
    """The upper dir holds nothing: no blob may land in the store."""


class _Buffered:
    def __init__(self, sink, size: int = BUFFER):
        self._sink = sink
        self._size = size
        self._buf = bytearray()

    def write(self, data) -> int:
        n = len(data)
        if n >= self._size and not self._buf:
            self._sink.write(data)  # a big file's chunk: no copy
            return n
        self._buf += data
        if len(self._buf) >= self._size:
            self.flush()
        return n

    def flush(self) -> None:
        if self._buf:
            self._sink.write(bytes(self._buf))
            self._buf.clear()


def layer_from_upper(upper: str, blobs, compression: str = "gzip") -> LayerRecord | None:
    """The layer blob of `upper` (committed to `blobs`), or None when it is empty."""
    from pybuild.image.compression import layer_writer
    from pybuild.snapshot.diff import write_layer_tar

    try:
        with layer_writer(blobs, compression) as sink:
            out = _Buffered(sink)
            stats = write_layer_tar(upper, out)
            if stats.entries == 0:
                raise _Empty
            out.flush()
    except _Empty:
        return None
    return sink.record
