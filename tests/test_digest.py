"""cache/digest.py: small values are hashed with CPython's own SHA-256 while hashlib is not
loaded (a docker-format `save` then never loads OpenSSL); the digests must be hashlib's."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = r'''
import json, sys
from cache.digest import digest_bytes
sizes = json.loads(sys.argv[1])
out = [digest_bytes(bytes(i % 251 for i in range(n))) for n in sizes]
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
