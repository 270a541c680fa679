"""Entry point of the sandbox helper process: `python -I -S _helper.py MODE SPEC_FD STATUS_FD`.

Started fresh (never forked from pybuild, which may have threads), it reads a marshalled
spec from SPEC_FD and reports on STATUS_FD with one line per message:

    S <hex path> <d|f>    a mount point stub created inside the rootfs (the caller removes
                          it from the upperdir afterwards, so it never lands in a layer)
    E <message>           setting up failed
    X <code> <message>    the command could not be executed (code 126/127, like docker)
    R <path>              (mount mode) the rootfs is mounted at <path> in the helper's namespace

MODE "run": unshare a pid namespace and fork PID 1, which unshares mount/uts/ipc(/net),
mounts the overlay and /proc, /dev, /sys, /etc/hosts, /etc/resolv.conf and the extra
mounts onto targets resolved *inside* the rootfs (symlinks followed as if the rootfs were
/, so nothing lands on the host), pivot_roots, then forks the command as the step's user
and reaps zombies until it exits. PID 1's exit ends the namespace and every process in it.

MODE "mount": unshare a mount namespace, mount the overlay on a directory of a tmpfs
private to it, say "R <dir>", and wait for stdin to close; the caller reaches the mount via /proc/<pid>/root.

MODE "serve" (`_helper.py serve SOCK_FD`): the fork server of sandbox/forkserver.py; each
request forks a child that runs "run" or "mount" exactly as above.

Imports are kept to C-backed modules plus `linux` (ctypes): startup time is the
sandbox's overhead.
"""
import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import linux as L  # noqa: E402  (the ctypes wrappers next to this file)

_O_PATH = os.O_PATH | os.O_CLOEXEC
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# docker's default capability set for containers (RUN steps get the same)
_DEFAULT_CAPS = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})
# CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
# SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP


class SetupError(Exception):
    pass


def _status(fd: int, line: str) -> None:
    data = (line.replace("\n", " ") + "\n").encode("utf-8", "surrogateescape")
    try:
        os.write(fd, data)
    except OSError:
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


# --- paths inside the rootfs ---------------------------------------------------------

class Resolver:
    """Resolves paths inside a rootfs directory fd, following symlinks as if the rootfs
    were /, creating missing mount points (recorded as stubs) when asked."""

    def __init__(self, rootfd: int, status_fd: int):
        self.rootfd = rootfd
        self.status_fd = status_fd

    def resolve(self, path: str, create: str = "") -> int | None:
        """An O_PATH fd of `path`, or None if missing and `create` is ""; `create` is
        "d" (directory) or "f" (file) for the last component; parents are directories."""
        comps = [c for c in path.split("/") if c and c != "."]
        stack: list[tuple[int, str]] = [(self.rootfd, "")]
        links = 0
        try:
            while comps:
                c = comps.pop(0)
                if c == "..":
                    if len(stack) > 1:
                        os.close(stack.pop()[0])
                    continue
                dfd, rel = stack[-1]
                here = rel + "/" + c
                try:
                    fd = os.open(c, _O_PATH | os.O_NOFOLLOW, dir_fd=dfd)
                except FileNotFoundError:
                    if not create:
                        return None
                    kind = create if not comps else "d"
                    if kind == "f":
                        os.close(os.open(c, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd))
                    else:
                        os.mkdir(c, 0o755, dir_fd=dfd)
                    _status(self.status_fd, f"S {os.fsencode(here).hex()} {kind}")
                    fd = os.open(c, _O_PATH | os.O_NOFOLLOW, dir_fd=dfd)
                st = os.fstat(fd)
                if (st.st_mode & 0o170000) == 0o120000:  # symlink: substitute, stay inside
                    os.close(fd)
                    links += 1
                    if links > 40:
                        raise SetupError(f"too many levels of symbolic links in {path}")
                    target = os.readlink(c, dir_fd=dfd)
                    new = [x for x in target.split("/") if x and x != "."]
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop()[0])
                    comps = new + comps
                    continue
                if comps and (st.st_mode & 0o170000) != 0o040000:
                    os.close(fd)
                    raise SetupError(f"{path}: {here} is not a directory in the rootfs")
                stack.append((fd, here))
            if len(stack) == 1:
                return os.open(".", _O_PATH, dir_fd=self.rootfd)
            return stack.pop()[0]
        finally:
            for fd, _ in stack[1:]:
                os.close(fd)

    def is_dir(self, path: str) -> bool:
        fd = self.resolve(path)
        if fd is None:
            return False
        try:
            return (os.fstat(fd).st_mode & 0o170000) == 0o040000
        finally:
            os.close(fd)


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _open_host(path: str, what: str) -> int:
    try:
        return os.open(path, _O_PATH)
    except OSError as e:
        raise SetupError(f"{what} {path}: {e.strerror}") from None


def _mount_overlay(target: str, lower_fds: list[int], upper_fd: int | None, work_fd: int | None,
                   flags: int = 0) -> None:
    lowers = ":".join(_fdpath(fd) for fd in lower_fds)
    # index/redirect_dir/metacopy off: a renamed directory is copied up whole, so the
    # upperdir alone is a complete diff (what an OCI layer needs)
    opts = f"lowerdir={lowers},index=off,redirect_dir=off,metacopy=off"
    attempts = [opts]
    if upper_fd is not None:
        opts += f",upperdir={_fdpath(upper_fd)},workdir={_fdpath(work_fd)}"
        # volatile (Linux 5.10+): without it, the unmount at the end of every step syncs
        # the whole filesystem the upperdir is on (overlayfs' sync_fs), waiting for any
        # unrelated dirty data there: 0.18 s with 300 MB of it. Every (upper, work) pair
        # is mounted once and the store never fsyncs anyway (blobs are renamed into place,
        # consistent across a killed process, not across a power cut), so nothing is lost.
        # The kernel refuses to mount a pair again while its volatile marker is there
        # (meant to catch a crash before a sync); a caller re-running in the same upperdir
        # has nothing to catch, so the marker goes.
        try:
            os.unlink("work/incompat/volatile/dirty", dir_fd=work_fd)
            os.rmdir("work/incompat/volatile", dir_fd=work_fd)
        except OSError:
            pass  # none yet (the common case)
        attempts = [opts + ",volatile", opts]
    for i, attempt in enumerate(attempts):
        try:
            L.mount("overlay", target, "overlay", flags, attempt)
            return
        except OSError as e:
            if e.errno == 22 and i + 1 < len(attempts):  # EINVAL: a kernel without volatile
                continue
            raise SetupError(f"cannot mount the rootfs overlay ({len(lower_fds)} layers): "
                             f"{e.strerror}") from None


class Layers:
    """O_PATH fds of the overlay's directories, opened before anything is mounted over
    the host paths they live under."""

    def __init__(self, lowers: list[str], upper: str | None, work: str | None):
        self.lowers = [_open_host(p, "layer directory") for p in lowers]
        self.upper = _open_host(upper, "upperdir") if upper else None
        self.work = _open_host(work, "workdir") if upper else None

    @classmethod
    def from_fds(cls, lowers: list, upper, work) -> "Layers":
        """From fds already opened (they are closed by close())."""
        obj = cls.__new__(cls)
        obj.lowers, obj.upper, obj.work = list(lowers), upper, work
        return obj

    def close(self) -> None:
        for fd in self.lowers + [x for x in (self.upper, self.work) if x is not None]:
            os.close(fd)


def _mount_rootfs(target: str, scratch: str | None, layers: Layers, flags: int = 0) -> None:
    """Mount lowers(+upper) at `target`; `scratch` is a private tmpfs dir for an empty lower."""
    lower_fds = list(layers.lowers)
    if layers.upper is None and len(lower_fds) <= 1:
        # overlay needs two lowers without an upper: a read-only bind does the job
        if lower_fds:
            L.mount(_fdpath(lower_fds[0]), target, None, L.MS_BIND | L.MS_REC)
        else:
            L.mount("tmpfs", target, "tmpfs", 0, "mode=0755,size=4k")
        L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | flags)
        return
    empty_fd = None
    if not lower_fds:
        empty = os.path.join(scratch, "empty")
        os.mkdir(empty, 0o755)
        empty_fd = os.open(empty, _O_PATH)
        lower_fds.append(empty_fd)
    try:
        _mount_overlay(target, lower_fds, layers.upper, layers.work,
                       flags | (L.MS_RDONLY if layers.upper is None else 0))
    finally:
        if empty_fd is not None:
            os.close(empty_fd)


# --- mode "mount" ---------------------------------------------------------------------

def _scratch_dir(preferred: str) -> str:
    for d in (preferred, "/tmp", "/run", "/mnt", "/var/tmp"):
        if os.path.isdir(d):
            return d
    raise SetupError("no directory to mount the sandbox's scratch tmpfs on (/tmp, /run, /mnt)")


def mount_main(spec: dict, status_fd: int) -> None:
    try:
        L.unshare(L.CLONE_NEWNS)
        L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        layers = Layers(spec["lowers"], spec["upper"], spec["work"])
        # the mount point lives on a tmpfs private to this namespace, covering /tmp here
        # only: nothing is created on the host, nothing can be left behind
        scratch = _scratch_dir(spec["scratch"])
        L.mount("tmpfs", scratch, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=0755,size=64k")
        target = scratch + "/root"
        os.mkdir(target, 0o755)
        _mount_rootfs(target, scratch, layers)
        layers.close()
    except (SetupError, OSError) as e:
        _status(status_fd, f"E {e}")
        os._exit(1)
    _status(status_fd, "R " + target)
    os.close(status_fd)
    # hold the namespace (and the mount) until the caller closes our stdin or dies
    while os.read(0, 4096):
        pass
    os._exit(0)


# --- mode "run" -----------------------------------------------------------------------

def _hosts(hostname: str) -> str:
    return (f"127.0.0.1\tlocalhost {hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


def _remount_ro(r: Resolver, path: str, flags: int = 0) -> None:
    # an fd opened before a mount names what is underneath it: reopen to get the mount
    fd = r.resolve(path)
    try:
        L.mount(None, _fdpath(fd), None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | flags)
    finally:
        os.close(fd)


def _bind_at(r: Resolver, sfd: int, dst: str, ro: bool) -> None:
    """Bind what `sfd` names onto `dst` in the rootfs (a stub dir or file is created to
    match it); closes `sfd`."""
    isdir = (os.fstat(sfd).st_mode & 0o170000) == 0o040000
    fd = r.resolve(dst, "d" if isdir else "f")
    try:
        L.mount(_fdpath(sfd), _fdpath(fd), None, L.MS_BIND | L.MS_REC)
    finally:
        os.close(fd)
        os.close(sfd)
    if ro:
        _remount_ro(r, dst)


def _mount_tree(r: Resolver, base: str, lower_fds: list, dst: str, selector: str, ro: bool) -> None:
    """Mount layer dirs as one tree on `base` (in the private scratch tmpfs), writable
    through a throwaway tmpfs upper unless `ro`, and bind its `selector` onto `dst`."""
    os.mkdir(base, 0o700)
    if ro:
        target = base
        layers = Layers.from_fds(lower_fds, None, None)
    else:
        L.mount("tmpfs", base, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=0700")
        for d in ("u", "w", "m"):
            os.mkdir(f"{base}/{d}", 0o755)
        target = base + "/m"
        layers = Layers.from_fds(lower_fds, _open_host(base + "/u", "upperdir"),
                                 _open_host(base + "/w", "workdir"))
    try:
        _mount_rootfs(target, base, layers)
    finally:
        layers.close()
    treefd = os.open(target, _O_PATH | os.O_DIRECTORY)
    try:
        sfd = Resolver(treefd, -1).resolve(selector)
    finally:
        os.close(treefd)
    if sfd is None:
        raise SetupError(f"mount source {selector} for {dst}: not found")
    _bind_at(r, sfd, dst, ro)


def _mount_secret(r: Resolver, base: str, dst: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    """The secret's bytes go to a tmpfs of their own (never a disk), bound read-only."""
    os.mkdir(base, 0o700)
    L.mount("tmpfs", base, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
            f"mode=0700,size={len(data) + 8192}")
    path = base + "/secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.chown(path, uid, gid)
    os.chmod(path, mode & 0o7777)
    _bind_at(r, os.open(path, _O_PATH), dst, True)


def _setup_rootfs(spec: dict, status_fd: int) -> None:
    """In PID 1, before pivot_root: mount everything the command sees."""
    host_net = spec["network"] == "host"
    L.unshare(L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | (0 if host_net else L.CLONE_NEWNET))
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)

    # host things we need, opened before anything is mounted over them
    resolv = b""
    if host_net:
        try:
            with open("/etc/resolv.conf", "rb") as f:
                resolv = f.read()
        except OSError:
            pass
    dev_fds = {}
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        try:
            dev_fds[name] = os.open("/dev/" + name, _O_PATH)
        except OSError:
            pass
    bind_fds = [(_open_host(src, "mount source"), dst, ro) for src, dst, ro in spec["mounts"]]
    tree_fds = [([_open_host(p, "mount layer directory") for p in lowers], dst, sel, ro)
                for lowers, dst, sel, ro in spec.get("trees", ())]
    layers = Layers(spec["lowers"], spec["upper"], spec["work"])

    # a private tmpfs for the new root's mount point and generated files; /tmp is only
    # covered inside this mount namespace
    scratch = _scratch_dir(spec["scratch"])
    L.mount("tmpfs", scratch, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=0700,size=1m")
    newroot = scratch + "/root"
    os.mkdir(newroot, 0o755)
    # nodev: a device node made by a RUN step (root has CAP_MKNOD) cannot be opened;
    # the devices the command may use are bound into /dev below
    _mount_rootfs(newroot, scratch, layers, L.MS_NODEV)
    layers.close()

    rootfd = os.open(newroot, _O_PATH | os.O_DIRECTORY)
    r = Resolver(rootfd, status_fd)

    def at(path: str, create: str) -> tuple[int, str]:
        fd = r.resolve(path, create)
        return fd, _fdpath(fd)

    fd, p = at("/proc", "d")
    L.mount("proc", p, "proc", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    os.close(fd)
    fd, p = at("/dev", "d")
    L.mount("tmpfs", p, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_STRICTATIME, "mode=755,size=65536k")
    os.close(fd)
    devfd = r.resolve("/dev")
    try:
        for name, hfd in dev_fds.items():
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666, dir_fd=devfd))
            L.mount(_fdpath(hfd), f"{_fdpath(devfd)}/{name}", None, L.MS_BIND)
        for name in ("pts", "shm"):
            os.mkdir(name, 0o755, dir_fd=devfd)
        L.mount("devpts", f"{_fdpath(devfd)}/pts", "devpts", L.MS_NOSUID | L.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5")
        L.mount("shm", f"{_fdpath(devfd)}/shm", "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
                "mode=1777,size=65536k")
        for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, name, dir_fd=devfd)
    finally:
        os.close(devfd)
    fd, p = at("/sys", "d")
    L.mount("sysfs", p, "sysfs", L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    os.close(fd)

    # like docker: the kernel knobs under /proc read-only, the leaky files masked
    for name in ("bus", "fs", "irq", "sys", "sysrq-trigger"):
        fd = r.resolve("/proc/" + name)
        if fd is not None:
            L.mount(_fdpath(fd), _fdpath(fd), None, L.MS_BIND | L.MS_REC)
            os.close(fd)
            _remount_ro(r, "/proc/" + name, L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
    for name in ("kcore", "keys", "timer_list", "sched_debug"):
        fd = r.resolve("/proc/" + name)
        if fd is not None and "null" in dev_fds:
            L.mount(_fdpath(dev_fds["null"]), _fdpath(fd), None, L.MS_BIND)
        if fd is not None:
            os.close(fd)

    if r.is_dir("/etc"):
        for name, content in (("hosts", _hosts(spec["hostname"]).encode()), ("resolv.conf", resolv)):
            src = f"{scratch}/{name}"
            with open(src, "wb") as f:
                f.write(content)
            os.chmod(src, 0o644)
            sfd = os.open(src, _O_PATH)
            fd, p = at("/etc/" + name, "f")
            L.mount(_fdpath(sfd), p, None, L.MS_BIND)
            os.close(fd)
            os.close(sfd)

    # RUN --mount: outer targets before the ones nested in them (stable otherwise)
    extra = [(dst, "bind", (sfd, ro)) for sfd, dst, ro in bind_fds]
    extra += [(dst, "tmpfs", size) for dst, size in spec["tmpfs"]]
    extra += [(dst, "tree", (fds, sel, ro)) for fds, dst, sel, ro in tree_fds]
    extra += [(s[0], "secret", s) for s in spec.get("secrets", ())]
    extra.sort(key=lambda m: len([c for c in m[0].split("/") if c and c != "."]))
    for n, (dst, kind, arg) in enumerate(extra):
        if kind == "bind":
            sfd, ro = arg
            _bind_at(r, sfd, dst, ro)
        elif kind == "tmpfs":
            fd, p = at(dst, "d")
            L.mount("tmpfs", p, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=1777" + (f",size={arg}" if arg else ""))
            os.close(fd)
        elif kind == "tree":
            fds, sel, ro = arg
            _mount_tree(r, f"{scratch}/t{n}", fds, dst, sel, ro)
        else:
            _mount_secret(r, f"{scratch}/s{n}", *arg)

    for hfd in dev_fds.values():
        os.close(hfd)
    os.close(rootfd)

    L.sethostname(spec["hostname"])
    if not host_net:
        L.loopback_up()

    # pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
    # the new root (no put_old directory needed inside the rootfs)
    os.chdir(newroot)
    L.pivot_root(".", ".")
    L.umount2(".", L.MNT_DETACH)
    os.chdir("/")


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(user: str) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) for a Dockerfile USER value, read from the
    rootfs's /etc/passwd and /etc/group (docker/runc semantics)."""
    # no USER means uid 0 even without an /etc/passwd (a scratch image)
    name, _, group = (user or "0").partition(":")
    passwd = [e for e in _read_db("/etc/passwd") if len(e) >= 6]
    uid = gid = 0
    home = "/"
    matched_name = ""
    entry = _find_entry(passwd, name)
    if entry is not None:
        try:
            uid, gid, home = int(entry[2]), int(entry[3]), entry[5] or "/"
        except ValueError:
            raise SetupError(f"invalid /etc/passwd entry for user {name}") from None
        matched_name = entry[0]
    elif name.isdigit():
        uid = int(name)
    else:
        raise SetupError(f"unable to find user {name}: no matching entries in passwd file")
    groups_db = [e for e in _read_db("/etc/group") if len(e) >= 3]
    sgids: list[int] = []
    if group:
        found = _find_entry(groups_db, group)
        if found is not None:
            gid = int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SetupError(f"unable to find group {group}: no matching entries in group file")
    elif matched_name:
        for e in groups_db:
            members = e[3].split(",") if len(e) > 3 else []
            if matched_name in members and e[2].isdigit() and int(e[2]) not in sgids:
                sgids.append(int(e[2]))
    return uid, gid, sgids, home


def _find_entry(entries: list[list[str]], key: str) -> list[str] | None:
    """The first passwd/group entry named `key`, or with `key` as its numeric id (a name
    wins only by coming first, as in runc's lookup)."""
    for e in entries:
        if e[0] == key or (key.isdigit() and e[2] == key):
            return e
    return None


def _find_executable(arg0: str, env: dict[str, str]) -> str:
    if "/" in arg0:
        return arg0
    for d in (env.get("PATH") or DEFAULT_PATH).split(":"):
        p = (d or ".") + "/" + arg0
        try:
            st = os.stat(p)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000 and st.st_mode & 0o111:
            return p
    raise FileNotFoundError(arg0)


def _exec_command(spec: dict, ids: tuple[int, int, list[int], str], status_fd: int) -> None:
    """In the forked command child: drop privileges, chdir, exec. Never returns."""
    import _signal
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM):
        _signal.signal(sig, _signal.SIG_DFL)  # Python ignores SIGPIPE; a shell must not
    env = {}
    for item in spec["env"]:
        k, _, v = item.partition("=")
        env[k] = v
    uid, gid, sgids, home = ids
    env.setdefault("HOME", home)
    args = spec["args"]
    try:
        L.drop_bounding_caps(_DEFAULT_CAPS, L.last_cap())
        os.setgroups(sgids)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as e:
        _status(status_fd, f"E cannot switch to user {spec['user'] or 'root'}: {e.strerror}")
        os._exit(125)
    try:
        os.chdir(spec["cwd"])
    except OSError as e:
        _status(status_fd, f"E cannot change to working directory {spec['cwd']}: {e.strerror}")
        os._exit(125)
    try:
        path = _find_executable(args[0], env)
    except FileNotFoundError:
        _status(status_fd, f"X 127 executable file not found: {args[0]}: not found in $PATH")
        os._exit(127)
    try:
        os.execve(path, args, env)
    except OSError as e:
        code = 126 if e.errno in (13, 8) else 127  # EACCES, ENOEXEC
        what = "executable file not found" if e.errno == 2 else e.strerror.lower()
        _status(status_fd, f"X {code} {what}: {args[0]}")
        os._exit(code)


def _pid1(spec: dict, status_fd: int, monitor: int) -> None:
    # our parent (the monitor) lives outside the pid namespace, so getppid() is 0 here and
    # cannot confirm it is still alive; the window between fork and prctl is tiny
    L.set_pdeathsig(9)
    os.umask(0o022)  # what docker/runc give a container, whatever pybuild's umask is
    try:
        _setup_rootfs(spec, status_fd)
        ids = resolve_user(spec["user"])
        if spec["create_cwd"]:
            os.makedirs(spec["cwd"], 0o755, exist_ok=True)
    except SetupError as e:
        _status(status_fd, f"E {e}")
        os._exit(125)
    except OSError as e:
        _status(status_fd, f"E sandbox setup failed: {e}")
        os._exit(125)
    cmd = os.fork()
    if cmd == 0:
        try:
            _exec_command(spec, ids, status_fd)
        finally:
            os._exit(125)
    # status_fd stays open until PID 1 dies: its EOF tells the caller the whole sandbox
    # (and with it the overlay mount) is gone
    _forward_signals(cmd)
    # PID 1 reaps every orphan; the command's status is the sandbox's
    while True:
        pid, st = os.waitpid(-1, 0)
        if pid == cmd:
            os._exit(_exit_status(st))


def _forward_signals(pid: int) -> None:
    """Pass the signals a user or the solver sends on to `pid` (the sandbox's command)."""
    import _signal

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(sig, forward)


def _exit_status(st: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N for signal N."""
    return os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)


def run_main(spec: dict, status_fd: int, ppid: int | None = None) -> None:
    L.set_pdeathsig(9)
    if os.getppid() != (spec["ppid"] if ppid is None else ppid):
        os._exit(1)
    if spec["setsid"]:
        os.setsid()
    try:
        L.unshare(L.CLONE_NEWPID)
    except OSError as e:
        _status(status_fd, f"E cannot create a pid namespace: {e.strerror}")
        os._exit(125)
    monitor = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            _pid1(spec, status_fd, monitor)
        finally:
            os._exit(125)
    os.close(status_fd)
    _forward_signals(child)
    _, st = os.waitpid(child, 0)
    os._exit(_exit_status(st))


def _helper_main(mode: str, spec_fd: int, status_fd: int, ppid: int | None = None) -> None:
    spec = marshal.loads(_read_all(spec_fd))
    os.close(spec_fd)
    os.set_inheritable(status_fd, False)  # never into the command
    if mode == "mount":
        mount_main(spec, status_fd)
    elif mode == "run":
        run_main(spec, status_fd, ppid)
    else:
        _status(status_fd, f"E unknown helper mode {mode}")
        os._exit(2)


# --- mode "serve" ---------------------------------------------------------------------

def serve_main(sock_fd: int) -> None:
    """The fork server (pybuild/sandbox/forkserver.py has the protocol): fork one helper
    per request from this fresh, single-threaded process, so a RUN or a COPY mount pays
    for a fork instead of an interpreter start-up."""
    import _signal
    import _socket
    import array
    import select
    import fcntl  # noqa: F401  (imported once here for loopback_up in every child)
    import struct  # noqa: F401

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # Ctrl-C is pybuild's to handle
    sock = _socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_w)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    me = os.getpid()
    children: dict[int, int] = {}  # helper pid -> its exit pipe
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    fd_room = _socket.CMSG_SPACE(8 * array.array("i").itemsize)
    while True:
        for fd, _ev in poller.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(children)
                continue
            msg, anc, _flags, _addr = sock.recvmsg(64, fd_room, _socket.MSG_CMSG_CLOEXEC)
            fds = array.array("i")
            for level, kind, data in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            fds = list(fds)
            if not msg:  # pybuild's end is closed: it exited or died; so do its helpers
                for pid in children:
                    _kill(pid)
                os._exit(0)
            if msg[:1] == b"R" and len(fds) == 6:
                _fork_helper(msg[1:].decode(), fds, me, children,
                             (sock_fd, wake_r, wake_w))
            elif msg[:1] == b"K" and msg[1:].isdigit() and int(msg[1:]) in children:
                _kill(int(msg[1:]))  # only a helper not yet reaped: its pid is still ours
            for fd in fds:
                os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def _reap(children: dict[int, int]) -> None:
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = children.pop(pid, None)
        if fd is not None:
            code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -os.WTERMSIG(st)
            try:
                os.write(fd, b"%d\n" % code)
            except OSError:
                pass
            os.close(fd)


def _fork_helper(mode: str, fds: list[int], server: int, children: dict[int, int],
                 own: tuple[int, ...]) -> None:
    spec_r, status_w, fin, fout, ferr, exit_w = fds
    pid = os.fork()
    if pid == 0:
        try:
            import _signal
            _signal.set_wakeup_fd(-1)
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # as a fresh python
            L.set_pdeathsig(9)
            if os.getppid() != server:
                os._exit(1)
            # nothing of the server's, nor other helpers' exit pipes, stays open in here
            for fd in (*own, *children.values(), exit_w):
                os.close(fd)
            for fd, std in ((fin, 0), (fout, 1), (ferr, 2)):
                os.dup2(fd, std)
            for fd in {fin, fout, ferr}:
                os.close(fd)
            _helper_main(mode, spec_r, status_w, server)
        finally:
            os._exit(125)
    children[pid] = os.dup(exit_w)
    try:
        os.write(exit_w, b"%d\n" % pid)
    except OSError:
        pass


def main() -> None:
    mode = sys.argv[1]
    if mode == "serve":
        serve_main(int(sys.argv[2]))
        return
    _helper_main(mode, int(sys.argv[2]), int(sys.argv[3]))


if __name__ == "__main__":
    main()
