"""cache/atomicfile.py: a file is replaced whole, and a failed write leaves nothing."""
from __future__ import annotations

import os

import pytest

from cache.atomicfile import write_atomically


def test_replaces_whole_with_the_mode_asked(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    write_atomically(str(path), b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o600 & ~_umask()
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    path.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_atomically(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
