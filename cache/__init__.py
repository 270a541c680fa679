"""Content-addressed storage for pybuild: blobs by sha256 and an index of cache records.

This package imports nothing of `pybuild` or `frontends`, so it could be published alone.
"""
from cache.digest import Digest, DigestWriter, digest_bytes, digest_file, digest_json
from cache.store import BlobStore, BlobNotFound
from cache.index import CacheIndex, CacheRecord

__all__ = [
    "Digest", "DigestWriter", "digest_bytes", "digest_file", "digest_json",
    "BlobStore", "BlobNotFound", "CacheIndex", "CacheRecord",
]
