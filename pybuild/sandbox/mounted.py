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
import sys
from typing import Iterator

from pybuild.errors import SandboxError
from pybuild.sandbox.namespaces import HELPER


@contextlib.contextmanager
def mounted_rootfs(lowerdirs: list[str], upperdir: str | None = None,
                   workdir: str | None = None) -> Iterator[str]:
    """Yield a path where lowerdirs (top first) + upperdir are visible merged; read-only
    without an upperdir."""
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
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", HELPER, "mount", str(spec_r), str(status_w)],
                pass_fds=(spec_r, status_w), stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(spec_r)
            os.close(status_w)
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
    finally:
        if spec_w >= 0:
            os.close(spec_w)
        os.close(status_r)
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
