"""The on-disk root of one pybuild store, and the pieces that live in it.

Layout under the root (`$PYBUILD_ROOT`, else `~/.local/share/pybuild`):

    blobs/sha256/<hex>   content-addressed blobs (cache/store.py)
    index.db             cache records, snapshot records, tags (cache/index.py)
    s/<n>/               unpacked layers in overlay format (pybuild/snapshot/store.py)
    c/<n>/               containers of `pybuild run` (upper + work dirs)
    tmp/                 staging for atomic writes; cleared of leftovers on open
    contexts/            stat caches of build contexts (pybuild/context.py), one per dir
    memo/                whole-build memos: a rebuild with nothing changed (pybuild/buildmemo.py)
    cachemounts/         RUN --mount=type=cache directories (pybuild/runmounts.py)
    lock                 whole-store advisory lock: builds hold it shared, prune exclusive
                         (pybuild/storegc.py)

The directories new trees are made in (`w/`, `t/`, `c/`) carry ext4's TOPDIR flag, so
each tree lands in a block group of its own (pybuild/dirspread.py says why).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from pybuild.storepath import default_root  # noqa: F401  (kept importable from here)


@dataclass
class StoreRoot:
    """A store directory; its blob store, index, images and snapshots opened on first use."""
    path: str

    @classmethod
    def open(cls, path: str | None = None) -> "StoreRoot":
        root = cls(os.path.abspath(path or default_root()))
        os.makedirs(root.path, exist_ok=True)
        return root

    @cached_property
    def blobs(self):
        from cache.store import BlobStore
        return BlobStore(self.path)

    @cached_property
    def index(self):
        from cache.index import CacheIndex
        return CacheIndex(os.path.join(self.path, "index.db"))

    @cached_property
    def images(self):
        from pybuild.image.store import ImageStore
        return ImageStore(self.blobs, self.index)

    @cached_property
    def snapshots(self):
        from pybuild.snapshot.store import SnapshotStore
        return SnapshotStore(self.path)

    @property
    def containers_dir(self) -> str:
        from pybuild.dirspread import spread_subdirectories

        d = os.path.join(self.path, "c")
        os.makedirs(d, exist_ok=True)
        spread_subdirectories(d)  # each container's upper dir is a tree of its own
        return d

    def layer_dirs(self, layers) -> list[str]:
        """Unpacked snapshot dirs of a layer chain, top layer first (overlay lowerdir order)."""
        from pybuild.image.compression import open_uncompressed

        dirs = []
        for layer in layers:
            dirs.append(self.snapshots.ensure(
                layer.diff_id, lambda layer=layer: open_uncompressed(self.blobs, layer)))
        return list(reversed(dirs))
