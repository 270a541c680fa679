"""The namespaced sandbox (run_sandboxed) and mounted_rootfs, on a busybox rootfs."""
from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import tarfile
import threading
import time

import pytest

from pybuild.errors import SandboxError
from pybuild.sandbox.mounted import mounted_rootfs
from pybuild.sandbox.namespaces import BindMount, ExecFailed, SandboxSpec, run_sandboxed
from pybuild.snapshot.diff import write_layer_tar

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/bin/busybox"),
                       reason="needs root, namespaces, overlayfs and /bin/busybox"),
]

APPLETS = ["sh", "echo", "cat", "ls", "rm", "id", "hostname", "ps", "true", "false", "mkdir",
           "touch", "pwd", "nc", "sleep", "test", "wc", "grep", "stat", "mknod"]


@pytest.fixture(scope="module")
def busybox(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("busybox")
    (root / "bin").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\nwheel:x:10:\n")
    (root / "etc" / "motd").write_text("hello from the lower layer\n")
    (root / "tmp").mkdir(mode=0o1777)
    return str(root)


class Run:
    def __init__(self, tmp_path, lowers):
        self.upper = tmp_path / "upper"
        self.work = tmp_path / "work"
        self.upper.mkdir()
        self.work.mkdir()
        self.lowers = tuple(lowers)

    def __call__(self, script: str, **kw) -> tuple[int, str]:
        out = bytearray()
        spec = SandboxSpec(lowerdirs=self.lowers, upperdir=str(self.upper), workdir=str(self.work),
                           args=kw.pop("args", ("/bin/sh", "-c", script)),
                           env=kw.pop("env", ("PATH=/bin",)), **kw)
        res = run_sandboxed(spec, on_output=out.extend)
        return res.exit_code, out.decode()


@pytest.fixture
def run(tmp_path, busybox):
    return Run(tmp_path, [busybox])


def test_output_and_exit_code(run):
    assert run("echo hello; echo oops >&2") == (0, "hello\noops\n")
    assert run("exit 7")[0] == 7
    assert run("kill -9 $$")[0] == 128 + 9


def test_noop_step_leaves_empty_upper(run):
    assert run("true")[0] == 0
    assert os.listdir(run.upper) == []


def test_delete_lower_file_gives_whiteout(run):
    code, _ = run("rm /etc/motd && echo new > /etc/added && mkdir -p /data && echo d > /data/f")
    assert code == 0
    st = os.lstat(run.upper / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (run.upper / "proc").exists() and not (run.upper / "etc" / "hosts").exists()
    buf = io.BytesIO()
    write_layer_tar(str(run.upper), buf)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))]
    assert names == ["data", "data/f", "etc", "etc/added", "etc/.wh.motd"]  # sorted by real name


def test_pid_namespace(run):
    code, out = run("ps -o pid,comm")
    assert code == 0
    pids = [line.split()[0] for line in out.splitlines()[1:]]
    assert "1" in pids and len(pids) <= 4  # helper (PID 1), sh, ps


def test_hostname_and_hosts(run):
    code, out = run("hostname; cat /etc/hosts", hostname="box")
    assert code == 0
    assert out.splitlines()[0] == "box" != socket.gethostname()
    assert "127.0.0.1" in out


def test_host_files_invisible(run, tmp_path):
    marker = tmp_path / "host-secret"
    marker.write_text("TOPSECRET")
    code, out = run(f"cat {marker} 2>/dev/null || echo missing; ls /")
    assert out.split() == ["missing", "bin", "dev", "etc", "proc", "sys", "tmp"]


@pytest.fixture
def listener():
    """A TCP port on the host's 127.0.0.1 that accepts and closes every connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def test_network_none_cannot_reach_host(run, listener):
    code, out = run(f"echo x | nc -w 2 127.0.0.1 {listener} && echo CONNECTED; "
                    f"cat /sys/class/net/lo/operstate 2>/dev/null; ls /sys/class/net")
    assert "CONNECTED" not in out
    assert out.split()[-1] == "lo"  # only loopback in the new netns


def test_network_host_reaches_host(run, listener):
    code, out = run(f"echo x | nc -w 2 127.0.0.1 {listener} && echo CONNECTED", network="host")
    assert "CONNECTED" in out


def test_user_resolution(run):
    assert run("id", user="app")[1].strip() == "uid=1000(app) gid=1000(app) groups=50(staff)"
    assert run("id -u; id -g", user="1000")[1].split() == ["1000", "1000"]
    assert run("id -u; id -g", user="app:wheel")[1].split() == ["1000", "10"]
    assert run("id -u; id -g; echo $HOME", user="4242:77")[1].split() == ["4242", "77", "/"]
    assert run("echo $HOME", user="app")[1].strip() == "/home/app"
    with pytest.raises(SandboxError, match="unable to find user nobody"):
        run("id", user="nobody")
    with pytest.raises(SandboxError, match="unable to find group nogroup"):
        run("id", user="app:nogroup")


def test_cwd_created(run):
    code, out = run("pwd; stat -c %u /srv/app/x", cwd="/srv/app/x", user="app")
    assert code == 0 and out.split() == ["/srv/app/x", "0"]
    assert (run.upper / "srv" / "app" / "x").is_dir()
    with pytest.raises(SandboxError, match="working directory"):
        run("pwd", cwd="/nope", create_cwd=False)


def test_exec_failure(run):
    with pytest.raises(ExecFailed, match="executable file not found: nosuchcmd") as exc:
        run("", args=("nosuchcmd",))
    assert exc.value.exit_code == 127
    with pytest.raises(ExecFailed) as exc:
        run("", args=("/etc/motd",))
    assert exc.value.exit_code == 126


def test_env_and_args(run):
    code, out = run("", args=("/bin/sh", "-c", 'echo "$FOO" "$0" "$1"', "zero", "one"),
                    env=("PATH=/bin", "FOO=bar baz"))
    assert out == "bar baz zero one\n"


def test_bind_and_tmpfs_mounts(run, tmp_path):
    src = tmp_path / "ctx"
    src.mkdir()
    (src / "f").write_text("from host")
    code, out = run("cat /mnt/ctx/f; echo; touch /mnt/ctx/g 2>/dev/null || echo RO; echo t > /scratch/t && cat /scratch/t",
                    mounts=(BindMount(str(src), "/mnt/ctx"),), tmpfs=(("/scratch", 1 << 20),))
    assert code == 0 and out.split() == ["from", "host", "RO", "t"]
    assert not (src / "g").exists()
    assert not (run.upper / "mnt").exists() and not (run.upper / "scratch").exists()
    code, out = run("echo w > /mnt/ctx/g", mounts=(BindMount(str(src), "/mnt/ctx", readonly=False),))
    assert code == 0 and (src / "g").read_text() == "w\n"


def test_mount_target_symlink_stays_in_rootfs(run, tmp_path):
    src = tmp_path / "ctx"
    src.mkdir()
    (src / "f").write_text("x")
    # /evil -> / in the rootfs: a mount on /evil/etc/target must land in the rootfs
    run("ln -s / /evil 2>/dev/null || /bin/busybox ln -s / /evil")
    code, out = run("cat /etc/target/f", mounts=(BindMount(str(src), "/evil/etc/target"),))
    assert out == "x"
    assert not os.path.exists("/etc/target")


def test_device_nodes_unusable(run):
    code, out = run("mknod /tmp/mem c 1 1 && cat /tmp/mem > /dev/null && echo READ; echo x > /dev/null && echo NULLOK")
    assert "READ" not in out and "NULLOK" in out


def test_scratch_rootfs(tmp_path, busybox):
    # no lowers: the command comes from a read-only bind mount
    r = Run(tmp_path, [])
    code, out = r("", args=("/b/busybox", "sh", "-c", "/b/busybox ls /"),
                  mounts=(BindMount(os.path.join(busybox, "bin"), "/b"),))
    assert code == 0 and sorted(out.split()) == ["b", "dev", "proc", "sys"]
    assert os.listdir(r.upper) == []


def _pids_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_background_processes_die_with_the_command(run):
    before = open("/proc/self/mountinfo").read()
    code, _ = run("sleep 4711 & sleep 4711 & exit 0")
    assert code == 0
    assert _pids_with("4711") == []
    assert open("/proc/self/mountinfo").read() == before


def test_interrupt_kills_sandbox(run):
    spec = SandboxSpec(lowerdirs=run.lowers, upperdir=str(run.upper), workdir=str(run.work),
                       args=("/bin/sh", "-c", "echo started; sleep 4712"), env=("PATH=/bin",))

    def on_output(_data):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sandboxed(spec, on_output=on_output)
    deadline = time.monotonic() + 5
    while _pids_with("4712") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with("4712") == []


def test_mounted_rootfs_leaves_no_mount(tmp_path, busybox):
    before = open("/proc/self/mountinfo").read()
    upper, work = tmp_path / "u", tmp_path / "w"
    upper.mkdir()
    work.mkdir()
    with mounted_rootfs([busybox], str(upper), str(work)) as root:
        assert sorted(os.listdir(root)) == ["bin", "etc", "tmp"]
        assert open(os.path.join(root, "etc", "motd")).read().startswith("hello")
        with open(os.path.join(root, "etc", "new"), "w") as f:
            f.write("n")
        os.unlink(os.path.join(root, "etc", "motd"))
        assert open("/proc/self/mountinfo").read() == before
    assert open("/proc/self/mountinfo").read() == before
    assert (upper / "etc" / "new").read_text() == "n"
    assert stat.S_ISCHR(os.lstat(upper / "etc" / "motd").st_mode)

    # read-only view of two layers
    with mounted_rootfs([str(upper), busybox]) as root:
        assert "motd" not in os.listdir(os.path.join(root, "etc"))
        with pytest.raises(OSError):
            open(os.path.join(root, "x"), "w")
    # a scratch rootfs: no lowers, only an upper
    u2, w2 = tmp_path / "u2", tmp_path / "w2"
    u2.mkdir()
    w2.mkdir()
    with mounted_rootfs([], str(u2), str(w2)) as root:
        assert os.listdir(root) == []
        os.mkdir(os.path.join(root, "made"))
    assert os.listdir(u2) == ["made"]
    assert open("/proc/self/mountinfo").read() == before
    assert not [d for d in os.listdir("/tmp") if d.startswith("pybuild-mnt-")]


def test_mounted_rootfs_bad_layer(tmp_path):
    with pytest.raises(SandboxError, match="cannot mount"):
        with mounted_rootfs([str(tmp_path / "missing")]):
            pass


def test_overhead_report(busybox, tmp_path, capsys):
    """Not an assertion on time: prints the per-run overhead for the report."""
    r = Run(tmp_path, [busybox])
    times = []
    for _ in range(10):
        t = time.monotonic()
        assert r("", args=("/bin/true",))[0] == 0
        times.append(time.monotonic() - t)
    times.sort()
    with capsys.disabled():
        print(f"\nrun_sandboxed /bin/true: median {times[5] * 1000:.1f} ms, min {times[0] * 1000:.1f} ms")


def test_stdin_and_inherited_stdio(run, capfd):
    r, w = os.pipe()
    os.write(w, b"piped in\n")
    os.close(w)
    try:
        spec = SandboxSpec(lowerdirs=run.lowers, upperdir=str(run.upper), workdir=str(run.work),
                           args=("/bin/sh", "-c", "cat; echo to-stderr >&2; umask"), env=("PATH=/bin",))
        res = run_sandboxed(spec, stdin=r, inherit_stdio=True)
    finally:
        os.close(r)
    assert res.exit_code == 0
    out, err = capfd.readouterr()
    assert out == "piped in\n0022\n" and err == "to-stderr\n"


_DIES = """
import sys
sys.path.insert(0, {repo!r})
from pybuild.sandbox.namespaces import SandboxSpec, run_sandboxed
from pybuild.sandbox.mounted import mounted_rootfs
import time
if sys.argv[1] == "run":
    run_sandboxed(SandboxSpec(lowerdirs=({lower!r},), upperdir={upper!r}, workdir={work!r},
                              args=("/bin/sleep", "4714"), env=()))
else:
    with mounted_rootfs([{lower!r}]) as m:
        print(m, flush=True)
        time.sleep(4715)
"""


@pytest.mark.parametrize("mode", ["run", "mount"])
def test_parent_death_kills_everything(run, mode):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _DIES.format(repo=repo, lower=run.lowers[0], upper=str(run.upper), work=str(run.work))
    before = open("/proc/self/mountinfo").read()
    proc = subprocess.Popen([sys.executable, "-c", code, mode], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 10
    helper_marker = "_helper.py"
    while time.monotonic() < deadline and not [p for p in _pids_with(helper_marker)
                                               if _is_child_of(p, proc.pid)]:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 5
    while (_pids_with("4714") or [p for p in _pids_with(helper_marker) if _is_child_of(p, proc.pid)]) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with("4714") == []
    assert [p for p in _pids_with(helper_marker) if _is_child_of(p, proc.pid)] == []
    assert open("/proc/self/mountinfo").read() == before


def _is_child_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) in (parent, 1)
    except OSError:
        return False


def test_layers_chain_through_store(tmp_path, busybox):
    """RUN → upperdir → snapshot → lower of the next RUN, as the solver will do it."""
    from pybuild.snapshot.store import SnapshotStore
    store = SnapshotStore(str(tmp_path / "store"))
    lowers: list[str] = [busybox]
    for i, script in enumerate(["echo one > /f1 && rm /etc/motd", "cat /f1 > /f2; ls /etc"]):
        upper, work = store.new_work()
        out = bytearray()
        res = run_sandboxed(SandboxSpec(tuple(lowers), upper, work, ("/bin/sh", "-c", script),
                                        ("PATH=/bin",)), on_output=out.extend)
        assert res.exit_code == 0
        lowers.insert(0, store.adopt(f"sha256:{i}", upper))
    assert "motd" not in out.decode()
    assert open(os.path.join(lowers[0], "f2")).read() == "one\n"
    assert sorted(os.listdir(lowers[0])) == ["f2"]
    assert os.listdir(store.work_dir) == []


def test_parallel_runs(tmp_path, busybox):
    import concurrent.futures

    def one(i):
        u, w = tmp_path / f"u{i}", tmp_path / f"w{i}"
        u.mkdir()
        w.mkdir()
        out = bytearray()
        res = run_sandboxed(SandboxSpec((busybox,), str(u), str(w),
                                        ("/bin/sh", "-c", f"echo {i} > /n; cat /n"), ("PATH=/bin",)),
                            on_output=out.extend)
        return res.exit_code, out.decode().strip()

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one, range(8)))
    assert results == [(0, str(i)) for i in range(8)]


def test_many_layers(tmp_path, busybox):
    """120 lowerdirs with long paths still mount (the options stay under one page)."""
    lowers = []
    for i in range(120):
        d = tmp_path / ("a-rather-long-directory-name-for-layer-number-%03d" % i)
        d.mkdir()
        (d / f"f{i:03d}").write_text(str(i))
        lowers.append(str(d))
    with mounted_rootfs(lowers + [busybox]) as root:
        assert len([n for n in os.listdir(root) if n.startswith("f")]) == 120
    r = Run(tmp_path, lowers + [busybox])
    code, out = r("ls / | grep -c '^f'")
    assert code == 0 and out.strip() == "120"


def test_stub_messages_are_sanitized():
    from pybuild.sandbox.namespaces import _stubs
    msgs = [("/proc", "d"), ("/../../etc/x", "f"), ("/a/./b", "d"), ("relative", "d"), ("/ok/file", "f"),
            ("/x", "z")]
    raw = "".join(f"S {os.fsencode(p).hex()} {k}\n" for p, k in msgs) + "S nothex d\nE boom\n"
    assert _stubs(bytearray(raw.encode())) == [("/proc", "d"), ("/ok/file", "f")]
