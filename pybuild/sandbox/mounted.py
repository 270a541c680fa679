"""A rootfs overlay the calling process can read and write, with no mount on the host.

`mounted_rootfs` starts the sandbox helper in "mount" mode: a fresh process that
unshares a mount namespace, mounts the overlay on a directory of a tmpfs private to that
namespace (nothing is created on the host), and waits. The
caller reaches the merged tree through `/proc/<helper pid>/root/<dir>`. When the
context ends, or if pybuild dies (its end of the helper's stdin closes), the helper
exits and the mount disappears with its namespace: nothing to unmount, even after a
crash.

Note: paths under the yielded directory are host paths into the mount; absolute
symlinks found inside point at the host's /, so resolve rootfs paths with a resolver
that stays inside the rootfs.
"""
from __future__ import annotations

import contextlib
import marshal
import os
import subprocess
import threading
from typing import Iterator

from pybuild.errors import SandboxError
from pybuild.sandbox.forkserver import spawn_helper


# helpers still tearing down a writable mount (`defer_release`), by upper and work dir
_releasing: dict[str, object] = {}
_releasing_lock = threading.Lock()


def wait_released(path: str) -> None:
    """Wait until no deferred mount uses `path` (an upper or work dir, or a directory
    holding them) any more. The snapshot store calls this before it renames or removes
    such a directory."""
    path = os.path.abspath(path)
    with _releasing_lock:
        procs = {k: p for k, p in _releasing.items()
                 if k == path or k.startswith(path + "/")}
    for proc in set(procs.values()):
        _reap(proc)
    with _releasing_lock:
        for k in [k for k, p in _releasing.items() if p in procs.values()]:
            del _releasing[k]


def _reap(proc) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def mounted_rootfs(lowerdirs: list[str], upperdir: str | None = None,
                   workdir: str | None = None, *, defer_release: bool = False) -> Iterator[str]:
    """Yield a path where lowerdirs (top first) + upperdir are visible merged; read-only
    without an upperdir.

    `defer_release` (with an upperdir): when the body succeeds, return without waiting
    for the mount's teardown (~8 us per file the copy made: 0.16 s for 20,000 files),
    so that it overlaps whatever comes next, e.g. writing the layer tar, which only
    reads the upper dir. Call `wait_released()` (SnapshotStore.adopt and discard do)
    before moving or removing the upper or work dir."""
    if upperdir is not None and workdir is None:
        raise SandboxError("mounted_rootfs: an upperdir needs a workdir")
    spec = marshal.dumps({
        "scratch": "/tmp",
        "lowers": [os.path.abspath(p) for p in lowerdirs],
        "upper": os.path.abspath(upperdir) if upperdir else None,
        "work": os.path.abspath(workdir) if workdir else None,
    })
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    # the helper holds the mount until its stdin closes (or pybuild dies)
    hold_r, hold_w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    proc = deferred = None
    try:
        try:
            proc = spawn_helper("mount", spec_r, status_w, stdin=hold_r, stdout=null, stderr=2)
        finally:
            for fd in (spec_r, status_w, hold_r, null):
                os.close(fd)
        os.write(spec_w, spec)
        os.close(spec_w)
        spec_w = -1
        status = b""
        while True:
            chunk = os.read(status_r, 4096)
            if not chunk:
                break
            status += chunk
        text = status.decode("utf-8", "replace")
        if not text.startswith("R "):
            msg = text[2:].strip() if text.startswith("E ") else "the mount helper exited"
            raise SandboxError(f"cannot mount the rootfs: {msg}")
        yield f"/proc/{proc.pid}/root{text[2:].strip()}"
        if defer_release and upperdir is not None:
            with _releasing_lock:
                _releasing[os.path.abspath(upperdir)] = proc
                _releasing[os.path.abspath(workdir)] = proc  # type: ignore[arg-type]
            deferred = proc
    finally:
        if spec_w >= 0:
            os.close(spec_w)
        os.close(status_r)
        os.close(hold_w)
        if proc is not None and proc is not deferred:
            _reap(proc)
