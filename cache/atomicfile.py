"""A file written whole or not at all: a temp file beside it, renamed over it."""
from __future__ import annotations

import os


def write_atomically(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """`path` gets `data`, or keeps what it had: a reader sees the old file or the new one,
    never half of one. The temp file (`.<name>.<pid>.<random>.tmp`, beside `path`, created
    with `mode` less the umask) is removed on any error, which is raised. No `tempfile`:
    importing it (with shutil and random) is ~2 ms of a command's start."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
