"""RUN --mount: what each `graph.Mount` of a step becomes in its sandbox, for one run.

- bind: a stage or image is mounted inside the sandbox from its layer dirs (TreeMount);
  the context is bound from the host (read-only), or from a staged copy when a
  .dockerignore hides part of it. `rw` writes land on a throwaway overlay upper (or a
  throwaway copy) and are gone when the step ends.
- cache: a directory of the store (`<root>/cachemounts/<digest of id and from>`), kept
  across builds and never part of a layer (the mount point stub is removed from the
  upperdir like every other stub). Its content is not in the cache key, as in BuildKit.
  Every user holds a flock on `<dir>.lock`: `shared` a shared lock, `locked` an exclusive
  one (steps with the same id run one at a time), `private` an exclusive one if nobody
  else uses the cache, else a fresh directory of its own, discarded afterwards.
- tmpfs: a tmpfs of the given size.
- secret: bytes handed to the sandbox through a pipe, written to a tmpfs inside it (and/or
  set as an environment variable): never on disk, in a layer, a key or the history.
- ssh: the agent socket bound into the sandbox, SSH_AUTH_SOCK pointing at it; a private
  key file is served by an `ssh-agent` started for the step.

The bytes and paths of mounted content are chosen here; the cache key sees only the mount
definitions (and, for a context bind, the content checksum of what it selects: solver).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from cache.digest import digest_json
from pybuild import graph
from pybuild.errors import PybuildError
from pybuild.sandbox.namespaces import BindMount, SecretFile, TreeMount

__all__ = ["MountError", "PreparedMounts", "prepared_mounts", "cache_mount_dir", "CACHE_MOUNTS_DIR"]

CACHE_MOUNTS_DIR = "cachemounts"


class MountError(PybuildError):
    """A RUN --mount cannot be provided (a required secret or ssh agent is missing, a
    source path does not exist, ...)."""


@dataclass(frozen=True)
class PreparedMounts:
    """A step's mounts made ready for its sandbox: binds, layer trees, tmpfs dirs, secret
    files, and the env vars they add (`env=` secrets, `SSH_AUTH_SOCK`)."""

    binds: tuple[BindMount, ...] = ()
    trees: tuple[TreeMount, ...] = ()
    tmpfs: tuple[tuple[str, int], ...] = ()
    secrets: tuple[SecretFile, ...] = field(default=(), repr=False)
    env: tuple[str, ...] = field(default=(), repr=False)  # added to the step's process env


def cache_mount_dir(store_path: str, cache_id: str, source_key: str = "") -> str:
    """The directory of one cache mount: by id, and by the cache key of its `from` (a
    cache seeded from another stage is another cache)."""
    d = digest_json({"id": cache_id, "from": source_key})
    return os.path.join(store_path, CACHE_MOUNTS_DIR, d.split(":", 1)[1])


@contextlib.contextmanager
def prepared_mounts(op: graph.Exec, solver: Any) -> Iterator[PreparedMounts]:
    """Make the mounts of `op` ready (locks taken, copies staged, agents started) for the
    duration of the step. `solver` gives `root`, `states`, `contexts`, `secrets`, `ssh`."""
    with contextlib.ExitStack() as stack:
        p = _Preparer(op, solver, stack)
        for m in op.mounts:
            p.add(m)
        yield PreparedMounts(tuple(p.binds), tuple(p.trees), tuple(p.tmpfs), tuple(p.secrets),
                             tuple(p.env))


class _Preparer:
    def __init__(self, op: graph.Exec, solver: Any, stack: contextlib.ExitStack):
        self.op = op
        self.solver = solver
        self.root = solver.root
        self.stack = stack
        self.binds: list[BindMount] = []
        self.trees: list[TreeMount] = []
        self.tmpfs: list[tuple[str, int]] = []
        self.secrets: list[SecretFile] = []
        self.env: list[str] = []
        self.held: dict[str, str] = {}  # cache dir -> directory mounted for it in this step
        self.ssh_sock_set = any(e.startswith("SSH_AUTH_SOCK=") for e in op.env)

    def add(self, m: graph.Mount) -> None:
        handler = getattr(self, f"_{m.type}", None)
        if handler is None:
            raise MountError(f"unsupported mount type {m.type!r} for {m.target}")
        handler(m)

    # ---------------------------------------------------------------- helpers
    def _scratch_dir(self, prefix: str) -> str:
        d = tempfile.mkdtemp(prefix=prefix, dir=self.root.blobs.tmp_dir)
        self.stack.callback(shutil.rmtree, d, True)
        return d

    def _layer_dirs(self, source: graph.Op) -> list[str]:
        return self.root.layer_dirs(self.solver.states[source.digest].layers)

    def _context(self, name: str):
        try:
            return self.solver.contexts[name]
        except KeyError:
            raise MountError(f"no build context named {name!r} was given") from None

    # ---------------------------------------------------------------- bind
    def _bind(self, m: graph.Mount) -> None:
        if m.source is None or not isinstance(m.source, graph.LocalSource):
            lowers = self._layer_dirs(m.source) if m.source is not None else []
            self.trees.append(TreeMount(tuple(lowers), m.target, m.selector or "/", m.readonly))
            return
        from pybuild.pathres import resolve_in_root

        ctx = self._context(m.source.name)
        host = resolve_in_root(ctx.root, m.selector or "/")
        if not os.path.lexists(host):
            raise MountError(f"bind mount source {m.selector} not found in the build context")
        isdir = os.path.isdir(host)
        if ctx.ignore_patterns:
            # the sandbox must not see what .dockerignore hides (BuildKit never sends it)
            staged = self._stage_context(ctx, m)
            self.binds.append(BindMount(staged, m.target, m.readonly))
        elif isdir and not m.readonly:
            self.trees.append(TreeMount((host,), m.target, "/", False))
        elif not isdir and not m.readonly:
            d = self._scratch_dir("mount-")
            shutil.copy2(host, os.path.join(d, "f"))
            self.binds.append(BindMount(os.path.join(d, "f"), m.target, False))
        else:
            self.binds.append(BindMount(host, m.target, True))

    def _stage_context(self, ctx, m: graph.Mount) -> str:
        from pybuild import fileops
        from pybuild.pathres import resolve_in_root

        d = self._scratch_dir("mount-")
        action = graph.Copy(source=m.source, src=(m.selector or "/",), dest="/")
        fileops.apply_copy(action, ctx.root, d, ignore=ctx.is_ignored)
        if os.path.isdir(resolve_in_root(ctx.root, m.selector or "/")):
            return d
        return os.path.join(d, os.path.basename((m.selector or "/").rstrip("/")))

    # ---------------------------------------------------------------- tmpfs
    def _tmpfs(self, m: graph.Mount) -> None:
        self.tmpfs.append((m.target, int(m.size or 0)))

    # ---------------------------------------------------------------- cache
    def _cache(self, m: graph.Mount) -> None:
        source_key = self.solver.states[m.source.digest].cache_key if m.source is not None else ""
        final = cache_mount_dir(self.root.path, m.cache_id, source_key)
        if final in self.held:  # the same cache twice in one step: one lock, one dir
            self.binds.append(BindMount(self.held[final], m.target, m.readonly))
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        lock_fd = os.open(final + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.stack.callback(os.close, lock_fd)
        path = final
        if m.sharing == "locked":
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        elif m.sharing == "private":
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # nobody else had it: now let shared users in, but make the next private
                # user see it as busy
                fcntl.flock(lock_fd, fcntl.LOCK_SH)
            except BlockingIOError:
                path = tempfile.mkdtemp(prefix=os.path.basename(final)[:16] + ".private-",
                                        dir=os.path.dirname(final))
                self.stack.callback(shutil.rmtree, path, True)
                os.rmdir(path)
        else:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        if not os.path.isdir(path):
            self._create_cache(path, m)
        else:
            os.utime(path)  # last use, for `pybuild prune` (pybuild/storegc.py)
        self.held[final] = path
        self.binds.append(BindMount(path, m.target, m.readonly))

    def _create_cache(self, path: str, m: graph.Mount) -> None:
        """A new cache dir: seeded from `from`/`source` when given, else empty with the
        mount's mode and owner. Made aside and renamed, so a crash leaves no half cache."""
        tmp = tempfile.mkdtemp(prefix=".new-", dir=os.path.dirname(path))
        try:
            if m.source is not None:
                self._seed_cache(tmp, m)
            else:
                os.chown(tmp, m.uid, m.gid)
                os.chmod(tmp, m.mode & 0o7777)
            try:
                os.rename(tmp, path)
            except OSError:
                if not os.path.isdir(path):  # not a lost race with another creator
                    raise
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

    def _seed_cache(self, tmp: str, m: graph.Mount) -> None:
        from pybuild.pathres import resolve_in_root
        from pybuild.sandbox.mounted import mounted_rootfs

        lowers = self._layer_dirs(m.source)
        if not lowers:
            return
        with mounted_rootfs(lowers) as rootfs:
            src = resolve_in_root(rootfs, m.selector or "/")
            if not os.path.isdir(src):
                raise MountError(f"cache mount source {m.selector} is not a directory "
                                 f"in the stage it is mounted from")
            st = os.stat(src)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            r = subprocess.run(["cp", "-a", "--", src + "/.", tmp + "/"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise MountError(f"cannot seed cache mount {m.target}: {r.stderr.strip()}")

    # ---------------------------------------------------------------- secret
    def _secret(self, m: graph.Mount) -> None:
        value = self.solver.secrets.get(m.secret_id)
        if value is None:
            if m.required:
                raise MountError(
                    f"secret {m.secret_id!r} is required by this step but was not given: "
                    f"pass --secret id={m.secret_id},src=FILE or --secret id={m.secret_id},env=VAR")
            return  # an optional secret that is missing is simply not mounted (BuildKit)
        if isinstance(value, str):
            value = value.encode()
        env_name = getattr(m, "env", "")
        if env_name:
            self.env.append(f"{env_name}={os.fsdecode(value)}")
        if m.target:
            self.secrets.append(SecretFile(m.target, value, m.mode, m.uid, m.gid))

    # ---------------------------------------------------------------- ssh
    def _ssh(self, m: graph.Mount) -> None:
        paths = tuple(self.solver.ssh.get(m.secret_id) or ())
        if not paths:
            if m.required:
                raise MountError(
                    f"ssh agent {m.secret_id!r} is required by this step but was not given: "
                    f"pass --ssh {m.secret_id}[=/path/to/socket-or-key]")
            return
        sock = next((p for p in paths if _is_socket(p)), None) or self._agent_for_keys(paths)
        self.binds.append(BindMount(sock, m.target, False))
        if not self.ssh_sock_set:
            self.env.append(f"SSH_AUTH_SOCK={m.target}")
            self.ssh_sock_set = True

    def _agent_for_keys(self, keys: tuple[str, ...]) -> str:
        """An ssh-agent holding `keys`, alive for this step only."""
        agent = shutil.which("ssh-agent")
        add = shutil.which("ssh-add")
        if not agent or not add:
            raise MountError("--ssh with key files needs ssh-agent and ssh-add (openssh-client)")
        # a short path: unix socket names are limited to 108 bytes
        d = tempfile.mkdtemp(prefix="pybuild-ssh-")
        self.stack.callback(shutil.rmtree, d, True)
        sock = os.path.join(d, "agent.sock")
        proc = subprocess.Popen([agent, "-D", "-a", sock], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            proc.kill()
            proc.wait()
        self.stack.callback(stop)
        deadline = time.monotonic() + 5
        while not _is_socket(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise MountError("ssh-agent did not start")
            time.sleep(0.01)
        env = {"SSH_AUTH_SOCK": sock, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        r = subprocess.run([add, "-q", *keys], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise MountError(f"ssh-add could not load {', '.join(keys)}: "
                             f"{(r.stderr or r.stdout).strip()} (keys with a passphrase need "
                             "your own agent: --ssh default)")
        return sock


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False

