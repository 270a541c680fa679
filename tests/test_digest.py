"""cache/digest.py: small values, streams and written layers are hashed with CPython's own
SHA-256 while hashlib is not loaded (a docker-format `save`, an edit-and-rebuild with small
layers then never load OpenSSL); the digests must be hashlib's."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = r'''
import io, json, sys
from cache.digest import DigestWriter, digest_bytes, digest_stream
sizes = json.loads(sys.argv[1])
out = []
for n in sizes:
    data = bytes(i % 251 for i in range(n))
    w = DigestWriter(io.BytesIO())
    for i in range(0, n, 7000):  # pieces, as a tar writer writes
        w.write(memoryview(data)[i:i + 7000])
    stream = digest_stream(io.BytesIO(data))
    assert w.size == stream[1] == n
    assert digest_bytes(data) == w.digest == stream[0], n
    out.append(w.digest)
print(json.dumps({"digests": out, "hashlib": "hashlib" in sys.modules}))
'''


def test_small_values_are_hashed_without_hashlib_and_as_hashlib_would():
    sizes = [0, 1, 55, 56, 64, 1000, (1 << 16) - 1, 1 << 16, (1 << 16) + 1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    small = [n for n in sizes if n < 1 << 16]
    p = subprocess.run([sys.executable, "-S", "-c", PROBE, json.dumps(small)], env=env,
                       check=True, capture_output=True, text=True)
    got = json.loads(p.stdout)
    assert got["hashlib"] is False
    assert got["digests"] == ["sha256:" + hashlib.sha256(bytes(i % 251 for i in range(n)))
                              .hexdigest() for n in small]
    p = subprocess.run([sys.executable, "-S", "-c", PROBE, json.dumps(sizes)], env=env,
                       check=True, capture_output=True, text=True)
    got = json.loads(p.stdout)
    assert got["hashlib"] is True  # a big value takes OpenSSL's
    assert got["digests"] == ["sha256:" + hashlib.sha256(bytes(i % 251 for i in range(n)))
                              .hexdigest() for n in sizes]
