"""Content-addressed storage for pybuild: blobs by sha256 and an index of cache records.

This package imports nothing of `pybuild` or `frontends`, so it could be published alone.
The names below are imported on first use: `import cache.digest` alone must stay cheap
(the CLI's whole-build memo check runs before anything heavy is imported).
"""
from __future__ import annotations

_EXPORTS = {
    "Digest": "cache.digest", "DigestWriter": "cache.digest", "digest_bytes": "cache.digest",
    "digest_file": "cache.digest", "digest_json": "cache.digest",
    "BlobStore": "cache.store", "BlobNotFound": "cache.store",
    "CacheIndex": "cache.index", "CacheRecord": "cache.index",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cache' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
