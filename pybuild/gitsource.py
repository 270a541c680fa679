"""Solving `graph.GitSource`: `ADD <git url>`, through the `git` command.

The cache key is the commit the ref resolves to (`git ls-remote`, no clone needed), so
a rebuild after the branch moved runs again and one where it did not is cached, as in
BuildKit. Only on a cache miss is the commit fetched (shallow when the server allows)
and checked out into the source's filesystem; `.git` is removed unless `keep_git_dir`.
`--checksum` is a commit (or a prefix of one) the ref must resolve to.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from cache.digest import digest_json
from pybuild import graph
from pybuild.errors import PybuildError

__all__ = ["GitSourceError", "GitSources", "ResolvedRef"]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_HEX = re.compile(r"^[0-9a-f]+$")


class GitSourceError(PybuildError):
    """A git remote could not be read, a ref not found, or a --checksum did not match."""


@dataclass(frozen=True)
class ResolvedRef:
    """A git ref resolved against its remote: the commit, and the ref it came from."""

    commit: str
    refname: str  # the full ref it came from ("" when a commit was given)
    tag_object: str = ""  # an annotated tag's own object id


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # never wait for a password or a host-key prompt: fail with git's message instead
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1",
               GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"))
    return env


def _redact(remote: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:xxxxx@", remote)


def run_git(args: list[str], cwd: str | None = None, what: str = "") -> str:
    if shutil.which("git") is None:
        raise GitSourceError("ADD of a git repository needs the `git` command: "
                             "install it (apt-get install git)")
    p = subprocess.run(["git", *args], cwd=cwd, env=_git_env(), capture_output=True,
                       text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        detail = (p.stderr or p.stdout).strip().splitlines()
        raise GitSourceError(f"{what or 'git ' + args[0]} failed: "
                             + _redact(" / ".join(detail[-3:]) or f"exit code {p.returncode}"))
    return p.stdout


def resolve_ref(remote: str, ref: str) -> ResolvedRef:
    """The commit `ref` names on `remote` (branch, tag, full ref name, HEAD or commit)."""
    if _FULL_SHA.match(ref):
        return ResolvedRef(ref, "")
    out = run_git(["ls-remote", remote], what=f"reading {_redact(remote)}")
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name:
            refs[name] = sha
    want = ref or "HEAD"
    for name in (want, f"refs/tags/{want}", f"refs/heads/{want}"):
        if name in refs:
            peeled = refs.get(name + "^{}")
            if peeled:
                return ResolvedRef(peeled, name, tag_object=refs[name])
            return ResolvedRef(refs[name], name)
    if _HEX.match(ref) and len(ref) >= 4:
        return ResolvedRef(_resolve_commit_prefix(remote, ref), "")
    raise GitSourceError(f"ref {want!r} not found in {_redact(remote)}")


def _resolve_commit_prefix(remote: str, prefix: str) -> str:
    """An abbreviated commit: fetch the remote's refs into a scratch repository and ask."""
    tmp = tempfile.mkdtemp(prefix="pybuild-git-")
    try:
        run_git(["init", "-q", "--bare", tmp])
        run_git(["fetch", "-q", remote, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                cwd=tmp, what=f"fetching {_redact(remote)}")
        try:
            return run_git(["rev-parse", "--verify", "--end-of-options", prefix + "^{commit}"],
                           cwd=tmp).strip()
        except GitSourceError:
            raise GitSourceError(f"ref {prefix!r} not found in {_redact(remote)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class GitSources:
    """Resolves and materializes the git sources of one solve."""

    def __init__(self, root):
        self.root = root
        self._resolved: dict[str, ResolvedRef] = {}

    def resolve(self, op: graph.GitSource) -> ResolvedRef:
        done = self._resolved.get(op.digest)
        if done is None:
            done = resolve_ref(op.remote, op.ref)
            if op.checksum and not (done.commit.startswith(op.checksum)
                                    or (done.tag_object and
                                        done.tag_object.startswith(op.checksum))):
                raise GitSourceError(
                    f"checksum mismatch for {_redact(op.remote)}#{op.ref or 'HEAD'}: "
                    f"expected {op.checksum}, got commit {done.commit}")
            self._resolved[op.digest] = done
        return done

    def cache_key(self, op: graph.GitSource) -> str:
        r = self.resolve(op)
        key = {"v": 1, "kind": "git", "remote": op.remote, "commit": r.commit,
               "keep_git_dir": op.keep_git_dir, "submodules": op.submodules}
        if op.keep_git_dir:
            key["ref"] = r.refname  # the kept .git names the branch
        return digest_json(key)

    def materialize(self, op: graph.GitSource, dest_dir: str) -> None:
        """Check the resolved commit out into the empty directory `dest_dir`."""
        r = self.resolve(op)
        what = f"fetching {_redact(op.remote)}"
        run_git(["init", "-q", dest_dir])
        run_git(["remote", "add", "origin", op.remote], cwd=dest_dir)
        try:
            run_git(["fetch", "-q", "--depth=1", "origin", r.refname or r.commit],
                    cwd=dest_dir, what=what)
        except GitSourceError:
            # dumb servers, or a commit the server does not let us ask for directly
            run_git(["fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*",
                     "+refs/tags/*:refs/tags/*"], cwd=dest_dir, what=what)
        target = r.commit
        branch = r.refname[len("refs/heads/"):] if r.refname.startswith("refs/heads/") else ""
        if op.keep_git_dir and branch:
            run_git(["checkout", "-q", "-B", branch, target], cwd=dest_dir)
        else:
            run_git(["checkout", "-q", "--detach", target], cwd=dest_dir)
        head = run_git(["rev-parse", "HEAD"], cwd=dest_dir).strip()
        if head != r.commit:
            raise GitSourceError(f"{_redact(op.remote)}: checked out {head}, expected {r.commit}")
        if op.submodules and os.path.exists(os.path.join(dest_dir, ".gitmodules")):
            run_git(["submodule", "update", "--init", "--recursive", "--depth=1"],
                    cwd=dest_dir, what="updating submodules")
        if not op.keep_git_dir:
            shutil.rmtree(os.path.join(dest_dir, ".git"))
