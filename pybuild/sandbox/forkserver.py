"""Start sandbox helpers by forking them from one long-lived helper process.

A fresh `python -I -S _helper.py` costs ~13 ms of interpreter start-up, paid by every RUN
step and every COPY's rootfs mount (20 times in a 30-step build). The fork server is
that same helper started once per pybuild process in "serve" mode: single-threaded (so
forking it is safe, unlike forking pybuild with its threads), it forks one child per
request, and the child runs exactly what a freshly started helper runs (`run_main`,
`mount_main`): the sandbox itself does not change, only how its first process is made.

Protocol, on a SOCK_SEQPACKET socketpair (fds travel as SCM_RIGHTS):

    b"R" + mode   fds (spec_r, status_w, stdin, stdout, stderr, exit_w): start a helper.
                  The server writes b"<pid>\\n" to exit_w once forked, b"<code>\\n" once
                  reaped (code as Popen.returncode: exit status, or -signal), and closes it.
    b"K" + pid    SIGKILL that helper if the server has not reaped it yet (so a pid can
                  never have been reused).

Lifetime: the server exits, SIGKILLing its helpers, when pybuild's end of the socket
closes, i.e. when pybuild exits or dies. (No PR_SET_PDEATHSIG on the server: it fires
when the *thread* that started the server ends, and a solver pool thread does.)

`PYBUILD_FORKSERVER=0` turns the server off: each helper is then started as a fresh
process, as before; so is any helper whose server cannot be reached.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import threading

from pybuild.errors import SandboxError
from pybuild.sandbox.namespaces import HELPER

_lock = threading.Lock()
_server: "_Server | None" = None
_disabled = False
_starting: "threading.Thread | None" = None  # prestart()'s thread, while it runs


class HelperProcess:
    """A helper forked by the server: the part of Popen's interface the callers use."""

    def __init__(self, pid: int, exit_r: int, server: "_Server"):
        self.pid = pid
        self.returncode: int | None = None
        self._exit_r = exit_r
        self._server = server
        self._buf = b""

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._read(timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"sandbox helper {self.pid}", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            self._server.send(b"K%d" % self.pid, [])

    def _read(self, timeout: float | None) -> None:
        while self.returncode is None:
            ready, _, _ = select.select([self._exit_r], [], [], timeout)
            if not ready:
                return
            data = os.read(self._exit_r, 64)
            if data:
                self._buf += data
                continue
            # EOF: the server has reported the exit status (or is gone)
            os.close(self._exit_r)
            text = self._buf.strip()
            self.returncode = int(text) if text.lstrip(b"-").isdigit() else -9
            return

    def __del__(self) -> None:
        if self.returncode is None and self._exit_r >= 0:
            try:
                os.close(self._exit_r)
            except OSError:
                pass


class _Server:
    def __init__(self):
        # the C module alone, as the helper's end does: `socket` builds its enums when
        # imported (~3 ms, in a thread that shares the GIL with the build's start)
        import _socket

        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", HELPER, "serve", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self.sock = mine
        self._send_lock = threading.Lock()

    def send(self, msg: bytes, fds: list[int]) -> None:
        import _socket
        from array import array

        # what socket.send_fds sends: the fds as one SCM_RIGHTS message beside msg
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array("i", fds))]
        with self._send_lock:
            self.sock.sendmsg([msg], rights)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _get_server() -> _Server | None:
    global _server, _disabled
    with _lock:
        if _disabled or os.environ.get("PYBUILD_FORKSERVER", "1") == "0":
            return None
        if _server is not None and _server.alive():
            return _server
        try:
            _server = _Server()
        except OSError:
            _disabled = True  # cannot start one: fresh helpers from now on
            return None
        return _server


def prestart() -> None:
    """Start the server in the background now (its interpreter start-up then overlaps
    whatever the build does before its first sandbox). The CLI, `build()` and the solver
    each call it; one thread starts the server, the later calls find it running."""
    global _starting
    if _server is None and not _disabled and not (_starting and _starting.is_alive()):
        # everything the starting thread needs is imported here, by the caller: a module
        # half-imported by that thread would be seen as it is by the caller's own imports
        # (dataclasses reads sys.modules["typing"] without importing it, for one)
        import _socket  # noqa: F401
        from array import array  # noqa: F401
        _starting = threading.Thread(target=_get_server, name="forkserver-start", daemon=True)
        _starting.start()


def spawn_helper(mode: str, spec_r: int, status_w: int, *, stdin: int, stdout: int,
                 stderr: int):
    """Start a sandbox helper in `mode` ("run" or "mount") reading its spec from
    `spec_r` and reporting on `status_w`, with the given stdio fds (all stay the
    caller's to close). Returns a HelperProcess, or a Popen when no server is at hand."""
    server = _get_server()
    if server is not None:
        exit_r, exit_w = os.pipe()
        try:
            server.send(b"R" + mode.encode(), [spec_r, status_w, stdin, stdout, stderr, exit_w])
        except OSError:
            os.close(exit_r)
            server = None  # the server died: this helper starts fresh
        finally:
            os.close(exit_w)
        if server is not None:
            proc = HelperProcess(0, exit_r, server)
            pid = _read_pid(exit_r)
            if pid is None:
                proc.wait()
                raise SandboxError("the sandbox fork server could not start a helper")
            proc.pid = pid
            return proc
    return subprocess.Popen(
        [sys.executable, "-I", "-S", HELPER, mode, str(spec_r), str(status_w)],
        pass_fds=(spec_r, status_w), stdin=stdin, stdout=stdout, stderr=stderr,
        close_fds=True)


def _read_pid(fd: int) -> int | None:
    buf = b""
    while not buf.endswith(b"\n"):
        # one byte at a time: the exit code that may follow must stay in the pipe
        b = os.read(fd, 1)
        if not b:
            return None
        buf += b
    return int(buf)
