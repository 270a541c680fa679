"""cache/atomicfile.py: a file is replaced whole, and a failed write leaves nothing."""
from __future__ import annotations

import os

import pytest

from cache.atomicfile import write_atomically


def test_replaces_whole_with_the_mode_asked(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    old_umask = os.umask(0o077)  # the mode asked is the mode given, whatever the umask
    try:
        write_atomically(str(path), b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["f.json"]


def test_the_temp_file_may_live_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(src), real_replace(src, dst)))
    write_atomically(str(tmp_path / "blob"), b"data", tmp_dir=str(tmp_path / "tmp"))
    assert os.path.dirname(seen[0]) == str(tmp_path / "tmp")
    assert (tmp_path / "blob").read_bytes() == b"data"
    assert os.listdir(tmp_path / "tmp") == []


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

