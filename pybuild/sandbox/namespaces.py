"""The embedded sandbox: run one command on an overlay rootfs in fresh namespaces.

`run_sandboxed` starts `python -I -S _helper.py run` (a fresh, single-threaded process:
pybuild itself may have threads, which cannot unshare some namespaces), hands it the spec
on a pipe, streams the command's merged stdout+stderr, and returns its exit code. The
helper and everything it started die with pybuild (PR_SET_PDEATHSIG) or on Ctrl-C; the
mounts live only in the sandbox's own mount namespace, so nothing is left on the host.

Mount point stubs the sandbox had to create in the rootfs (/proc, /dev, /sys,
/etc/hosts, mount targets) are removed from the upperdir afterwards when they are still
empty, together with parent directories copied up only for them: a RUN step that
changes nothing yields an empty diff.
"""
from __future__ import annotations

import marshal
import os
import select
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pybuild.errors import BuildCancelled, SandboxError

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_helper.py")


@dataclass(frozen=True)
class BindMount:
    """A host path bound into the sandbox at `target`."""

    source: str
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class TreeMount:
    """A tree made of layer directories (top first; none = empty), mounted inside the
    sandbox and bound at `target` from its `selector` path (resolved inside the tree).
    Writable mounts get a throwaway upper dir on a tmpfs: writes vanish with the sandbox
    (RUN --mount=type=bind,rw)."""

    lowerdirs: tuple[str, ...]
    target: str
    selector: str = "/"
    readonly: bool = True


@dataclass(frozen=True)
class SecretFile:
    """A file whose content only ever exists on a tmpfs inside the sandbox (it reaches the
    helper through a pipe): never on disk, never in the upperdir."""

    target: str
    data: bytes = field(repr=False)
    mode: int = 0o400
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class SandboxSpec:
    """One command to run in a sandbox: its overlay (layers, upper and work dirs), argv,
    environment, user, network and mounts."""

    lowerdirs: tuple[str, ...]      # top first; may be empty (scratch)
    upperdir: str
    workdir: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""                  # "", name, uid, name:group, uid:gid (resolved in the rootfs)
    network: str = "none"           # none | host ("default" is treated as none)
    hostname: str = "pybuild"
    mounts: tuple[BindMount, ...] = ()
    tmpfs: tuple[tuple[str, int], ...] = ()   # (target, size in bytes or 0)
    trees: tuple[TreeMount, ...] = ()
    secrets: tuple[SecretFile, ...] = field(default=(), repr=False)
    create_cwd: bool = True


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed command ended: its exit code and how long it ran (seconds)."""

    exit_code: int
    duration: float


class ExecFailed(SandboxError):
    """The command could not be started (not found, not executable); `exit_code` is what
    docker would report (127 or 126)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _payload(spec: SandboxSpec, inherit_stdio: bool) -> bytes:
    if not spec.args:
        raise SandboxError("no command to run")
    if spec.network not in ("none", "host", "default"):
        raise SandboxError(f"unsupported network mode {spec.network!r} (use none or host)")
    return marshal.dumps({
        "ppid": os.getpid(),
        "setsid": not inherit_stdio,
        "scratch": "/tmp",
        "lowers": [os.path.abspath(p) for p in spec.lowerdirs],
        "upper": os.path.abspath(spec.upperdir),
        "work": os.path.abspath(spec.workdir),
        "args": list(spec.args),
        "env": list(spec.env),
        "cwd": spec.cwd or "/",
        "user": spec.user,
        "network": "host" if spec.network == "host" else "none",
        "hostname": spec.hostname,
        "mounts": [(os.path.abspath(m.source), m.target, m.readonly) for m in spec.mounts],
        "tmpfs": [(t, int(s)) for t, s in spec.tmpfs],
        "trees": [([os.path.abspath(p) for p in t.lowerdirs], t.target, t.selector or "/",
                   t.readonly) for t in spec.trees],
        "secrets": [(s.target, bytes(s.data), s.mode, s.uid, s.gid) for s in spec.secrets],
        "create_cwd": spec.create_cwd,
    })


def run_sandboxed(spec: SandboxSpec, *, on_output: Callable[[bytes], None] | None = None,
                  stdin: int | None = None, inherit_stdio: bool = False,
                  cancel: threading.Event | None = None) -> SandboxResult:
    """Run `spec.args` in a sandbox on the overlay of `spec.lowerdirs` + `spec.upperdir`.

    Returns the command's exit code (128+n if killed by signal n). Raises ExecFailed when
    the command cannot be started, SandboxError when the sandbox cannot be set up, and
    BuildCancelled (after killing the sandbox) once `cancel` is set.
    """
    payload = _payload(spec, inherit_stdio)
    start = time.monotonic()
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    out_r = out_w = None
    if not inherit_stdio:
        out_r, out_w = os.pipe()
    proc = None
    status = bytearray()
    try:
        try:
            proc = _start_helper(spec_r, status_w, stdin, out_w)
        finally:
            for fd in (spec_r, status_w, out_w):
                if fd is not None:
                    os.close(fd)
        _write_all(spec_w, payload)
        os.close(spec_w)
        spec_w = -1
        _pump(out_r, status_r, on_output, status, cancel)
        code = proc.wait()
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()  # the helper's children follow via PR_SET_PDEATHSIG
            proc.wait()
            # PID 1 holds the status pipe until it dies: wait for that, so the overlay is
            # unmounted before the caller touches the upperdir
            _wait_eof(status_r, 10.0)
        raise
    finally:
        for fd in (spec_w, status_r, out_r):
            if fd is not None and fd >= 0:
                os.close(fd)
        if proc is not None:
            _remove_stubs(spec, _stubs(status))
    duration = time.monotonic() - start
    _raise_for_status(status)
    return SandboxResult(code, duration)


def _start_helper(spec_r: int, status_w: int, stdin: int | None, out_w: int | None):
    if out_w is None:  # the terminal's stdio (`pybuild run`): a process of its own
        return subprocess.Popen(
            [sys.executable, "-I", "-S", HELPER, "run", str(spec_r), str(status_w)],
            pass_fds=(spec_r, status_w),
            stdin=stdin if stdin is not None else subprocess.DEVNULL, close_fds=True)
    from pybuild.sandbox.forkserver import spawn_helper

    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) if stdin is None else -1
    try:
        return spawn_helper("run", spec_r, status_w, stdin=stdin if stdin is not None else null,
                            stdout=out_w, stderr=out_w)
    finally:
        if null >= 0:
            os.close(null)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump(out_r: int | None, status_r: int, on_output, status: bytearray,
          cancel: threading.Event | None = None) -> None:
    """Read the command's output and the helper's status pipe until both are closed
    (or `cancel` is set: the caller's cleanup then kills the sandbox)."""
    poller = select.poll()
    open_fds = {status_r}
    poller.register(status_r, select.POLLIN)
    if out_r is not None:
        poller.register(out_r, select.POLLIN)
        open_fds.add(out_r)
    while open_fds:
        if cancel is not None and cancel.is_set():
            raise BuildCancelled("the step was cancelled")
        for fd, _ev in poller.poll(None if cancel is None else 100):
            data = os.read(fd, 65536)
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
            elif fd == status_r:
                status += data
            elif on_output is not None:
                on_output(data)


def _wait_eof(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 65536):
            return


def _lines(status: bytearray) -> list[str]:
    return bytes(status).decode("utf-8", "surrogateescape").splitlines()


def _stubs(status: bytearray) -> list[tuple[str, str]]:
    out = []
    for line in _lines(status):
        if line.startswith("S "):
            try:
                _, hexpath, kind = line.split(" ")
                path = os.fsdecode(bytes.fromhex(hexpath))
            except ValueError:
                continue
            # only plain absolute paths: this pipe comes from inside the sandbox, and the
            # caller removes what it names from the upperdir
            parts = path.split("/")
            if parts[0] == "" and all(c not in ("", ".", "..") for c in parts[1:]) and kind in ("d", "f"):
                out.append((path, kind))
    return out


def _raise_for_status(status: bytearray) -> None:
    for line in _lines(status):
        if line.startswith("E "):
            raise SandboxError(line[2:])
        if line.startswith("X "):
            code, _, msg = line[2:].partition(" ")
            raise ExecFailed(msg, int(code))


def _remove_stubs(spec: SandboxSpec, stubs: list[tuple[str, str]]) -> None:
    """Undo mount point stubs in the upperdir (the overlay is gone once the helper exited)."""
    upper = os.path.abspath(spec.upperdir)
    parents: set[str] = set()
    for path, kind in reversed(stubs):
        p = upper + path
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        try:
            if kind == "d" and stat.S_ISDIR(st.st_mode) and not os.listdir(p):
                os.rmdir(p)
            elif kind == "f" and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(p)
            else:
                continue
        except OSError:
            continue
        parents.add(os.path.dirname(path))
    # parents copied up only to hold a stub: drop them if empty, not opaque, and with the
    # metadata of the lower directory they came from
    for path in sorted(parents, key=len, reverse=True):
        while path not in ("", "/"):
            if not _redundant_copy_up(upper, spec.lowerdirs, path):
                break
            try:
                os.rmdir(upper + path)
            except OSError:
                break
            path = os.path.dirname(path)


def _redundant_copy_up(upper: str, lowers: tuple[str, ...], path: str) -> bool:
    p = upper + path
    try:
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode) or os.listdir(p):
            return False
        for x in os.listxattr(p, follow_symlinks=False):
            if x.endswith("overlay.opaque"):
                return False
    except OSError:
        return False
    for lower in lowers:
        try:
            lst = os.lstat(lower + path)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        return (stat.S_ISDIR(lst.st_mode) and lst.st_mode == st.st_mode
                and lst.st_uid == st.st_uid and lst.st_gid == st.st_gid)
    return False
