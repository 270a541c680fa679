"""The store marks the parents of step upper dirs and unpack dirs as top directories
(ext4's TOPDIR flag), so new trees are not packed among the inodes of deleted ones."""
import fcntl
import os
import sys

import pytest

from pybuild.dirspread import FS_IOC_GETFLAGS, FS_TOPDIR_FL, spread_subdirectories
from pybuild.snapshot.store import SnapshotStore


def _flags(path: str) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        return int.from_bytes(buf, sys.byteorder)
    except OSError:
        return None
    finally:
        os.close(fd)


def _supports_topdir(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    return spread_subdirectories(str(probe)) and bool(_flags(str(probe)) & FS_TOPDIR_FL)


def test_store_marks_work_and_unpack_dirs(tmp_path):
    if not _supports_topdir(tmp_path):
        pytest.skip("the test directory's filesystem has no TOPDIR flag")
    SnapshotStore(str(tmp_path / "store"))
    for name in ("w", "t"):
        assert _flags(str(tmp_path / "store" / name)) & FS_TOPDIR_FL, name
    # snapshots are renamed into s/, never created there: it keeps its default placement
    assert not _flags(str(tmp_path / "store" / "s")) & FS_TOPDIR_FL


def test_setting_twice_keeps_other_flags(tmp_path):
    if not _supports_topdir(tmp_path):
        pytest.skip("the test directory's filesystem has no TOPDIR flag")
    d = tmp_path / "d"
    d.mkdir()
    before = _flags(str(d))
    assert spread_subdirectories(str(d)) and spread_subdirectories(str(d))
    assert _flags(str(d)) == before | FS_TOPDIR_FL


def test_refusals_are_not_errors(tmp_path):
    assert spread_subdirectories(str(tmp_path / "missing")) is False
    f = tmp_path / "file"
    f.write_text("x")
    assert spread_subdirectories(str(f)) is False
