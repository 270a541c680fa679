"""The sandbox fork server (pybuild/sandbox/forkserver.py): helpers forked from one
long-lived process behave as freshly started ones, and nothing outlives pybuild."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from pybuild.sandbox import forkserver
from pybuild.sandbox.mounted import mounted_rootfs
from pybuild.sandbox.namespaces import SandboxSpec, run_sandboxed

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"),
                       reason="needs root, namespaces, overlayfs and /bin/busybox"),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _work(tmp_path, name: str) -> tuple[str, str]:
    u, w = tmp_path / f"{name}-u", tmp_path / f"{name}-w"
    u.mkdir()
    w.mkdir()
    return str(u), str(w)


def test_helpers_are_forked_by_the_server(tmp_path, base_rootfs):
    upper, work = _work(tmp_path, "a")
    with mounted_rootfs([str(base_rootfs)], upper, work) as root:
        helper = int(root.split("/")[2])  # /proc/<pid>/root/...
        server = _ppid(helper)
        assert server != os.getpid()
        assert _cmdline(server)[-2:-1] == ["serve"] and _ppid(server) == os.getpid()
        with open(os.path.join(root, "made-here"), "w") as f:
            f.write("x")
    assert open(os.path.join(upper, "made-here")).read() == "x"
    out = bytearray()
    res = run_sandboxed(SandboxSpec((str(base_rootfs),), upper, work,
                                    ("/bin/sh", "-c", "cat /made-here; echo; exit 3"),
                                    ("PATH=/bin",)), on_output=out.extend)
    assert (res.exit_code, bytes(out)) == (3, b"x\n")


def test_one_helper_ending_does_not_wait_for_another(tmp_path, base_rootfs):
    """Each helper's exit pipe lives only in the server: a helper forked later must not
    hold an earlier one's, or the earlier one's end would go unseen while it runs."""
    import threading

    u1, w1 = _work(tmp_path, "a")
    u2, w2 = _work(tmp_path, "b")
    first = mounted_rootfs([str(base_rootfs)], u1, w1)
    first_pid = int(first.__enter__().split("/")[2])
    second = mounted_rootfs([str(base_rootfs)], u2, w2)
    second_root = second.__enter__()
    try:
        ending = threading.Thread(target=first.__exit__, args=(None, None, None), daemon=True)
        ending.start()
        ending.join(5)
        assert not ending.is_alive(), "the first helper's exit waited for the second helper"
        assert not _alive(first_pid)
        assert os.path.isdir(second_root)  # the other mount is still there
    finally:
        second.__exit__(None, None, None)


def test_kill_reaches_a_forked_helper(tmp_path, base_rootfs):
    upper, work = _work(tmp_path, "a")
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    hold_r, hold_w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    proc = forkserver.spawn_helper("mount", spec_r, status_w, stdin=hold_r, stdout=null,
                                   stderr=null)
    for fd in (spec_r, status_w, hold_r, null):
        os.close(fd)
    try:
        assert isinstance(proc, forkserver.HelperProcess)
        import marshal
        os.write(spec_w, marshal.dumps({"scratch": "/tmp", "lowers": [str(base_rootfs)],
                                        "upper": upper, "work": work}))
        os.close(spec_w)
        assert os.read(status_r, 4096).startswith(b"R ")
        assert proc.poll() is None
        proc.kill()
        assert proc.wait(timeout=10) == -9
    finally:
        os.close(status_r)
        os.close(hold_w)


_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from pybuild.sandbox.mounted import mounted_rootfs
with mounted_rootfs([{lower!r}]) as m:
    print(m, flush=True)
    time.sleep(4716)
"""


def test_server_and_helpers_die_with_pybuild(base_rootfs):
    before = open("/proc/self/mountinfo").read()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=REPO, lower=str(base_rootfs))],
                            stdout=subprocess.PIPE, text=True)
    try:
        root = proc.stdout.readline().strip()
        helper = int(root.split("/")[2])
        server = _ppid(helper)
        assert _ppid(server) == proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 10
    while (_alive(server) or _alive(helper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server) and not _alive(helper)
    assert open("/proc/self/mountinfo").read() == before


def test_without_the_server_helpers_start_fresh(tmp_path, base_rootfs, monkeypatch):
    monkeypatch.setenv("PYBUILD_FORKSERVER", "0")
    upper, work = _work(tmp_path, "a")
    with mounted_rootfs([str(base_rootfs)], upper, work) as root:
        helper = int(root.split("/")[2])
        assert _ppid(helper) == os.getpid()
    out = bytearray()
    res = run_sandboxed(SandboxSpec((str(base_rootfs),), upper, work, ("/bin/sh", "-c", "echo ok"),
                                    ("PATH=/bin",)), on_output=out.extend)
    assert (res.exit_code, bytes(out)) == (0, b"ok\n")


def _tree(root: str) -> dict:
    """Everything a layer records of a tree: names, types, modes, owners, whole-second
    mtimes, contents, link targets, devices, xattrs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            entry = [st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns // 10**9]
            if os.path.islink(p):
                entry.append(os.readlink(p))
            elif os.path.isfile(p):
                entry.append(open(p, "rb").read())
            elif not os.path.isdir(p):
                entry.append(st.st_rdev)
            # overlay's bookkeeping (trusted.overlay.origin of a copied-up dir) is not
            # layer content; an opaque mark is
            entry.append(sorted((x, os.getxattr(p, x, follow_symlinks=False))
                                for x in os.listxattr(p, follow_symlinks=False)
                                if not x.startswith("trusted.overlay.") or x.endswith("opaque")))
            out[os.path.relpath(p, root)] = entry
    return out


def test_deferred_release_and_adopted_upper_equals_its_tar(tmp_path, base_rootfs):
    """A COPY's upper dir is tarred while its overlay is still being torn down, then
    adopted as the layer's snapshot: the store waits for the teardown first, and the
    adopted dir is exactly what extracting the layer tar gives."""
    import io

    from pybuild.sandbox import mounted
    from pybuild.snapshot.diff import write_layer_tar
    from pybuild.snapshot.extract import extract_layer
    from pybuild.snapshot.store import SnapshotStore

    store = SnapshotStore(str(tmp_path / "store"))
    upper, work = store.new_work()
    with mounted.mounted_rootfs([str(base_rootfs)], upper, work, defer_release=True) as root:
        helper = int(root.split("/")[2])
        os.makedirs(os.path.join(root, "app", "sub"))
        with open(os.path.join(root, "app", "sub", "f"), "w") as f:
            f.write("data")
        os.chmod(os.path.join(root, "app", "sub", "f"), 0o640)
        os.symlink("sub/f", os.path.join(root, "app", "link"))
        os.unlink(os.path.join(root, "bin", "sh"))  # a whiteout in the upper dir
        os.setxattr(os.path.join(root, "app"), "user.note", b"kept")
    assert os.path.abspath(upper) in mounted._releasing
    tar = io.BytesIO()
    write_layer_tar(upper, tar)
    adopted = store.adopt("sha256:layer", upper)
    assert not _alive(helper) and mounted._releasing == {}
    assert os.listdir(store.work_dir) == []
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tar.seek(0)
    extract_layer(tar, str(fresh))
    got, want = _tree(adopted), _tree(str(fresh))
    assert set(got) == {"app", "app/sub", "app/sub/f", "app/link", "bin", "bin/sh"}
    assert got == want


def test_copy_into_a_mounted_overlay_keeps_every_attribute(tmp_path, base_rootfs):
    """COPY as the solver runs it: files made through their fds in a mounted overlay
    (copy_file_range refused across filesystems, so sendfile after the first file) carry
    the source's content, mode (setuid kept after chown), xattrs and times; an existing
    file is replaced, a directory in the way is an error."""
    import stat

    from pybuild import fileops, graph

    src = tmp_path / "ctx"
    (src / "d").mkdir(parents=True)
    for i in range(50):
        (src / "d" / f"f{i}").write_bytes(bytes([i]) * (i * 1000))
    tool = src / "d" / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o4755)
    os.setxattr(tool, "user.origin", b"ctx")
    os.utime(tool, ns=(1_000_000_000, 1_234_567_890_123))
    upper, work = _work(tmp_path, "a")
    os.makedirs(os.path.join(upper, "d"))
    with open(os.path.join(upper, "d", "f3"), "w") as f:
        f.write("old")
    os.makedirs(os.path.join(upper, "e", "tool"))
    copy = graph.Copy(source=graph.LocalSource("context"), src=("d/",), dest="/d/")
    with mounted_rootfs([str(base_rootfs)], upper, work) as root:
        fileops.apply_copy(copy, str(src), root)
        with pytest.raises(fileops.FileOpError, match="cannot replace to directory"):
            fileops.apply_copy(graph.Copy(source=graph.LocalSource("context"),
                                          src=("d/tool",), dest="/e/"), str(src), root)
    for i in range(50):
        assert open(os.path.join(upper, "d", f"f{i}"), "rb").read() == bytes([i]) * (i * 1000)
    st = os.stat(os.path.join(upper, "d", "tool"))
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (0, 0)
    assert st.st_mtime_ns == 1_234_567_890_123
    assert os.getxattr(os.path.join(upper, "d", "tool"), "user.origin") == b"ctx"


def test_starting_the_server_in_the_background_imports_nothing():
    """prestart() runs while the build imports its modules: a module the starting thread
    imported could be seen half-done by them (dataclasses reads sys.modules["typing"]
    without importing it), so that thread imports nothing; prestart imports for it."""
    code = ("import sys, threading\n"
            "from pybuild.sandbox import forkserver\n"
            "real, seen, done = forkserver._get_server, [], threading.Event()\n"
            "def starting():\n"
            "    before = set(sys.modules)\n"
            "    try:\n"
            "        return real()\n"
            "    finally:\n"
            "        seen.append(sorted(set(sys.modules) - before))\n"
            "        done.set()\n"
            "forkserver._get_server = starting\n"
            "forkserver.prestart()\n"
            "assert done.wait(30)\n"
            "assert forkserver._server is not None and forkserver._server.alive()\n"
            "print(seen)\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[[]]"


def test_prestart_called_again_while_starting_starts_no_second_thread(monkeypatch):
    """The CLI, build() and the solver each call prestart(): one thread starts the server."""
    release, calls = threading.Event(), []

    def slow_start():  # the server's start, held until all three calls are made
        calls.append(1)
        release.wait(10)

    monkeypatch.setattr(forkserver, "_server", None)
    monkeypatch.setattr(forkserver, "_starting", None)
    monkeypatch.setattr(forkserver, "_get_server", slow_start)
    for _ in range(3):
        forkserver.prestart()
    starting = forkserver._starting
    release.set()
    starting.join(10)
    assert calls == [1]
