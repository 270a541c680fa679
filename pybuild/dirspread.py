"""Tell the filesystem that a directory's subdirectories are unrelated trees.

Every step's upper dir, every unpacked layer and every container is a tree of its own,
made and later deleted as a whole. Left alone, ext4's Orlov allocator keeps a new
subdirectory (and so every file in it) in its parent's block group: the group where the
previous trees were just deleted. On ext4 without a journal (this machine's root
filesystem) the inode allocator then skips each inode deleted in the last minute or so,
one inode-table lookup per candidate, for every new file: creating 20,000 files right
after a prune took 3.6 to 6.3 s instead of 0.2 s, CPU spent in the kernel's
find_inode_bit/recently_deleted (bench/RESULTS.md; bench/inode_bench.py shows it alone). The TOPDIR flag (`chattr +T`) is the
allocator's own hint for this case: subdirectories of a top directory are spread over
block groups with free inodes and few directories, as if made under the filesystem's
root. Elsewhere the flag is only a placement hint, and a filesystem without it simply
refuses the ioctl.
"""
from __future__ import annotations

import fcntl
import os
import sys

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def spread_subdirectories(path: str) -> bool:
    """Mark `path` as a top directory (best effort). True when the flag is set."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        buf = bytearray(4)  # the kernel reads and writes an int, whatever the name says
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf, sys.byteorder)
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags | FS_TOPDIR_FL).to_bytes(4, sys.byteorder))
        return True
    except OSError:
        return False  # tmpfs, overlayfs: a filesystem without the flag
    finally:
        os.close(fd)
