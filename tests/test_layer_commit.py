"""A step's upper dir streamed into a layer blob (pybuild/snapshot/commit.py) gives the
very bytes of the former route: the tar written to a file, then compressed."""
from __future__ import annotations

import io
import os

import pytest

from cache.store import BlobStore
from pybuild.image.compression import compress_layer
from pybuild.snapshot.commit import layer_from_upper
from pybuild.snapshot.diff import write_layer_tar


def _upper(root) -> str:
    up = root / "u"
    (up / "app" / "many").mkdir(parents=True)
    for i in range(300):  # many small header/data/padding writes
        (up / "app" / "many" / f"f{i:03d}").write_text(f"file {i}\n" * (i % 7))
    # bigger than the 1 MiB buffer and the gzip block, not a multiple of either
    (up / "app" / "big.bin").write_bytes(os.urandom(3 * (1 << 20) + 12345))
    (up / "app" / "link").symlink_to("many/f001")
    os.link(up / "app" / "many" / "f002", up / "app" / "hard")
    for p in up.rglob("*"):
        os.utime(p, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return str(up)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_streamed_layer_equals_tar_then_compress(tmp_path, compression):
    up = _upper(tmp_path)
    tar = io.BytesIO()
    write_layer_tar(up, tar)
    tar.seek(0)
    want = compress_layer(tar, BlobStore(str(tmp_path / "a")), compression)
    store = BlobStore(str(tmp_path / "b"))
    got = layer_from_upper(up, store, compression)
    assert got == want
    assert store.has(got.digest)


def test_empty_upper_makes_no_blob(tmp_path):
    (tmp_path / "u").mkdir()
    store = BlobStore(str(tmp_path / "s"))
    assert layer_from_upper(str(tmp_path / "u"), store) is None
    assert list(store.digests()) == []
    assert os.listdir(store.tmp_dir) == []
