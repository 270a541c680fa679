"""Git references in a build definition: `ADD <git url>`, git build contexts.

`parse_git_ref` tells a git remote from a local path or a plain HTTP(S) URL and splits
it into remote, ref and subdir, the way BuildKit's Dockerfile frontend does (its
`dfgitutil.ParseGitRef`): a URL with a scheme (http, https, git, ssh), an scp-style
`user@host:path`, or the deprecated `github.com/...` shorthand. Options come from the
fragment (`#ref:subdir`) or the query (`?ref=&tag=&branch=&subdir=&checksum=...`).

HTTP(S) URLs only count as git when their path ends in `.git`: anything else is a
file download. This module is pure (no I/O), so the frontend can decide at compile time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pybuild.errors import DefinitionError

__all__ = ["GitRef", "GitRefError", "parse_git_ref", "is_git_ref", "fragment_format"]

_PROTO = re.compile(r"^[a-zA-Z0-9]+://")
_SUPPORTED_PROTOS = frozenset({"http", "https", "git", "ssh"})
# scp-style: user@host:path[?query][#fragment] (git@github.com:moby/buildkit.git)
_SCP = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_BOOL_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_BOOL_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class GitRefError(DefinitionError):
    """A string is not a usable git reference (it may still be a path or a plain URL)."""


@dataclass(frozen=True)
class GitRef:
    """A parsed git reference. `remote` is what `git clone` gets (no fragment/query)."""

    remote: str
    short_name: str
    ref: str = ""  # branch, tag, full ref name or commit; "" = the remote's HEAD
    checksum: str = ""  # expected commit (or prefix)
    subdir: str = ""
    indistinguishable_from_local: bool = False  # `github.com/...`: also a valid path
    unencrypted_tcp: bool = False  # git://
    keep_git_dir: Optional[bool] = None
    submodules: Optional[bool] = None
    mtime: str = ""  # "" (= checkout time) | "checkout" | "commit"
    fetch_by_commit: bool = False


@dataclass
class _Opts:
    """The options of a git reference, from its fragment and query (see `GitRef`)."""

    ref: str = ""
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: Optional[bool] = None
    submodules: Optional[bool] = None
    mtime: str = ""
    fetch_by_commit: bool = False


def _parse_bool(name: str, value: str) -> bool:
    if value == "" or value in _BOOL_TRUE:
        return True  # a bare `?fetch-by-commit` means true
    if value in _BOOL_FALSE:
        return False
    raise GitRefError(f"invalid {name} value: {value!r}")


def _parse_opts(fragment: str, query: list[tuple[str, str]]) -> _Opts:
    opts = _Opts()
    if fragment:
        opts.ref, _, opts.subdir = fragment.partition(":")
    values: dict[str, str] = {}
    for k, v in query:
        values.setdefault(k, v)  # Go's url.Values.Get: the first value wins
    tag, branch, qref = values.get("tag"), values.get("branch"), values.get("ref")
    if tag is not None and branch is not None:
        raise GitRefError("branch conflicts with tag")
    query_ref = ""
    if tag is not None:
        query_ref = "refs/tags/" + tag
    elif branch is not None:
        query_ref = "refs/heads/" + branch
    if qref is not None:
        if query_ref and qref != query_ref:
            raise GitRefError(f"ref conflicts: {qref!r} vs {query_ref!r}")
        query_ref = qref
    if query_ref:
        if opts.ref and opts.ref != query_ref:
            raise GitRefError(f"ref conflicts: {opts.ref!r} vs {query_ref!r}")
        opts.ref = query_ref
    for k, v in values.items():
        if k in ("ref", "tag", "branch"):
            continue
        if k == "subdir":
            if opts.subdir and opts.subdir != v:
                raise GitRefError(f"subdir conflicts: {opts.subdir!r} vs {v!r}")
            opts.subdir = v
        elif k in ("checksum", "commit"):
            opts.checksum = v
        elif k == "keep-git-dir":
            opts.keep_git_dir = _parse_bool(k, v)
        elif k == "submodules":
            opts.submodules = _parse_bool(k, v)
        elif k == "mtime":
            if v not in ("checkout", "commit"):
                raise GitRefError(f"invalid mtime value: {v!r} (use checkout or commit)")
            opts.mtime = v
        elif k == "fetch-by-commit":
            opts.fetch_by_commit = _parse_bool(k, v)
        else:
            raise GitRefError(f"unexpected query {k!r}".replace("'", '"'))
    return opts


def _split_url(text: str) -> tuple[str, str, list[tuple[str, str]], str]:
    """(remote without query/fragment, path, query pairs, fragment) of a scheme URL."""
    try:
        u = urlsplit(text)
    except ValueError as e:  # e.g. "Invalid IPv6 URL" for `http://[::1`
        raise GitRefError(f"{text!r} is not a valid URL: {e}") from None
    remote = urlunsplit((u.scheme, u.netloc, u.path, "", ""))
    return remote, u.path, parse_qsl(u.query, keep_blank_values=True), u.fragment


def parse_git_ref(ref: str) -> GitRef:
    """Parse `ref` as a git reference, or raise `GitRefError` if it is not one."""
    if ref.startswith(("./", "../")):
        raise GitRefError(f"{ref!r} is a local path, not a git reference")
    local_like = False
    unencrypted = False
    if ref.startswith("github.com/"):
        local_like = True
        remote, _path, query, fragment = _split_url("//" + ref)
        remote = remote[2:] if remote.startswith("//") else remote
    elif (m := _PROTO.match(ref)) is not None:
        proto = m.group(0)[:-3].lower()
        if proto not in _SUPPORTED_PROTOS:
            raise GitRefError(f"unsupported git protocol {proto!r} in {ref!r}")
        remote, path, query, fragment = _split_url(ref)
        if proto in ("http", "https") and not path.endswith(".git"):
            raise GitRefError(f"{ref!r} is not a git repository URL (no .git suffix)")
        unencrypted = proto == "git"
    elif (s := _SCP.match(ref)) is not None:
        user, host, path, raw_query, fragment = s.groups()
        remote = f"{user}@{host}:{path}"
        query = parse_qsl(raw_query or "", keep_blank_values=True)
        fragment = fragment or ""
    else:
        raise GitRefError(f"{ref!r} is not a git reference")
    opts = _parse_opts(fragment, query)
    short = remote.rstrip("/").split("/")[-1]
    if short.endswith(".git"):
        short = short[:-4]
    if ":" in short and "/" not in remote.split(":", 1)[1]:
        short = short.split(":", 1)[1]  # git@host:repo.git
    return GitRef(remote=remote, short_name=short, ref=opts.ref, checksum=opts.checksum,
                  subdir=opts.subdir, indistinguishable_from_local=local_like,
                  unencrypted_tcp=unencrypted, keep_git_dir=opts.keep_git_dir,
                  submodules=opts.submodules, mtime=opts.mtime,
                  fetch_by_commit=opts.fetch_by_commit)


def is_git_ref(ref: str) -> bool:
    """True for an unambiguous git reference (ADD treats it as a repository)."""
    try:
        return not parse_git_ref(ref).indistinguishable_from_local
    except GitRefError:
        return False


def fragment_format(ref: str, keep_subdir: bool = False) -> tuple[str, bool]:
    """`ref` normalized to `remote#ref[:subdir]` (query options rewritten as a fragment);
    `(ref, False)` unchanged when it is not a valid git reference."""
    try:
        g = parse_git_ref(ref)
    except GitRefError:
        return ref, False
    out = g.remote
    subdir = g.subdir.lstrip("/") if keep_subdir else ""
    if g.ref or subdir:
        out += "#" + g.ref
        if subdir:
            out += ":" + subdir
    return out, True
