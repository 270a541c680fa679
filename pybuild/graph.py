"""The build graph IR: immutable ops, each with a digest of its definition.

A frontend (a Dockerfile, a Python script, ...) compiles to these ops and to an
`ImageTarget`; the solver runs them. Nothing here touches the disk: ops are values.

Every op has:
- `inputs`: the ops it reads (its edges),
- `definition()`: a JSON-able dict of its own fields, with inputs by digest,
- `digest`: sha256 of the canonical definition, so two identical vertices are one.

The solver's cache key of an op is the definition digest with the inputs' *cache keys*
in place of their definition digests, plus the content checksum of anything it reads
from a local context (see `pybuild/solver.py`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Protocol

from cache.digest import digest_json
from pybuild.errors import DefinitionError  # noqa: F401  (re-exported for frontends)

# --------------------------------------------------------------------------- image config

# in their own module (image documents need them without the graph); re-exported here
from pybuild.imageconfig import Healthcheck, ImageConfig  # noqa: E402,F401


def replace(obj, **changes):
    """dataclasses.replace, re-exported so frontends need only this module."""
    import dataclasses
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------- ops


class Op:
    """Base of all graph vertices. Subclasses are frozen dataclasses."""

    kind: str = "op"

    @property
    def inputs(self) -> tuple["Op", ...]:
        out: list[Op] = []
        for f in fields(self):  # type: ignore[arg-type]
            out.extend(_ops_in(getattr(self, f.name)))
        return tuple(out)

    def definition(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            if f.metadata.get("nokey"):
                continue
            d[f.name] = _encode(getattr(self, f.name))
        return d

    @functools.cached_property
    def digest(self) -> str:
        return digest_json(self.definition())

    def walk(self) -> Iterator["Op"]:
        """This op and everything it depends on, each once, inputs before users."""
        seen: set[str] = set()
        order: list[Op] = []

        def visit(op: Op) -> None:
            if op.digest in seen:
                return
            seen.add(op.digest)
            for i in op.inputs:
                visit(i)
            order.append(op)

        visit(self)
        return iter(order)


def _ops_in(value: Any) -> Iterator[Op]:
    if isinstance(value, Op):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _ops_in(v)
    elif hasattr(value, "__dataclass_fields__"):
        for f in fields(value):
            yield from _ops_in(getattr(value, f.name))


def _encode(value: Any) -> Any:
    if isinstance(value, Op):
        return {"op": value.digest}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)
                if not f.metadata.get("nokey")}
    return value


def _nokey(default: Any = "") -> Any:
    """A field that describes, but does not define, an op (kept out of its digest)."""
    return field(default=default, metadata={"nokey": True}, compare=False)


@dataclass(frozen=True, eq=False)
class Scratch(Op):
    """The empty filesystem."""

    kind = "scratch"


@dataclass(frozen=True, eq=False)
class ImageSource(Op):
    """A base image's root filesystem, pinned by manifest digest (tags are not keys)."""

    ref: str = _nokey()
    manifest_digest: str = ""
    platform: str = ""
    kind = "image"


@dataclass(frozen=True, eq=False)
class HttpSource(Op):
    """One file downloaded from an HTTP(S) URL, at `/<filename>` (mode 0600, mtime from
    Last-Modified). Its cache key is the content's checksum (resolved at solve time), or
    `checksum` ("sha256:...") when given, which the download must also match."""

    url: str = ""
    filename: str = "__unnamed__"
    checksum: str = ""
    kind = "http"


@dataclass(frozen=True, eq=False)
class GitSource(Op):
    """The checkout of a git repository at `ref` ("" = its HEAD): the whole tree at `/`,
    `.git` only when `keep_git_dir`. Its cache key is the commit it resolves to;
    `checksum` (a commit or a prefix of one) must match that commit."""

    remote: str = ""
    ref: str = ""
    keep_git_dir: bool = False
    checksum: str = ""
    submodules: bool = True
    kind = "git"


@dataclass(frozen=True, eq=False)
class LocalSource(Op):
    """A directory given at solve time by name ("context", or a named build context).

    Its content enters cache keys only through the files a step selects from it.
    """

    name: str = "context"
    kind = "local"


@dataclass(frozen=True)
class Mount:
    """A mount into an Exec's sandbox (RUN --mount)."""

    target: str
    type: str = "bind"  # bind | cache | tmpfs | secret | ssh
    source: Op | None = None
    selector: str = "/"  # path inside source
    readonly: bool = True
    cache_id: str = ""
    sharing: str = "shared"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    size: int = 0
    secret_id: str = ""
    required: bool = False
    env: str = ""  # secret: also (or only, with no target) set as this environment variable


@dataclass(frozen=True, eq=False)
class Exec(Op):
    """Run a process in a sandbox on top of `root`; the files it changes become a layer."""

    root: Op = field(default_factory=Scratch)
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    cwd: str = "/"
    network: str = "default"  # default | none | host
    security: str = "sandbox"
    mounts: tuple[Mount, ...] = ()
    hostname: str = ""
    # the predefined proxy build args (HTTP_PROXY, ...): in the process env, but not in
    # the digest or cache key unless the Dockerfile declares them with ARG (as BuildKit)
    proxy_env: tuple[str, ...] = _nokey(())
    description: str = _nokey()
    kind = "exec"


@dataclass(frozen=True)
class Copy:
    """Copy paths (patterns) of `source` to `dest` in the root, Docker COPY semantics."""

    source: Op
    src: tuple[str, ...]
    dest: str
    chown: str = ""  # "user[:group]", names resolved in the destination rootfs
    chmod: str = ""  # octal or symbolic
    follow_symlinks: bool = True
    allow_wildcard: bool = True
    allow_empty_wildcard: bool = False
    create_dest_path: bool = True
    dir_contents_only: bool = True
    exclude: tuple[str, ...] = ()
    parents: bool = False
    unpack_archives: bool = False  # ADD of a local archive
    source_cwd: str = "/"  # relative src paths start here (a stage's WORKDIR is not used: "/")
    dest_cwd: str = "/"  # WORKDIR, for a relative dest


@dataclass(frozen=True)
class Mkdir:
    """One directory a FileOp makes, with its parents (WORKDIR's, owned by the stage's user)."""

    path: str
    mode: int = 0o755
    make_parents: bool = True
    chown: str = ""


@dataclass(frozen=True)
class Mkfile:
    """One file a FileOp writes with the given bytes (a COPY heredoc, a RUN heredoc script)."""

    path: str
    data: bytes
    mode: int = 0o644
    chown: str = ""


def chown_has_names(spec: str) -> bool:
    """Whether a `user[:group]` chown spec names a user or group (numbers need no
    /etc/passwd): what makes a linked copy depend on its stage's user database."""
    return any(part and not (part.isascii() and part.isdigit()) for part in spec.split(":", 1))


@dataclass(frozen=True, eq=False)
class FileOp(Op):
    """File actions applied in order on top of `root`; the change becomes one layer.

    `users_from`: the filesystem whose /etc/passwd and /etc/group resolve `chown` names
    (None: `root`'s). A COPY --link runs on Scratch but names its owners as the stage
    does; only the ids the names resolve to enter the cache key, not that filesystem."""

    root: Op = field(default_factory=Scratch)
    actions: tuple[Copy | Mkdir | Mkfile, ...] = ()
    users_from: Op | None = None
    description: str = _nokey()
    kind = "file"


@dataclass(frozen=True, eq=False)
class Merge(Op):
    """`root`'s filesystem with the filesystems of `upper` stacked on it, in order
    (BuildKit's MergeOp): its layer chain is root's followed by each upper's, and it adds
    no layer of its own. COPY --link is a FileOp on Scratch merged onto its stage, so that
    copy's layer and cache key do not depend on anything below it (it can be rebased)."""

    root: Op = field(default_factory=Scratch)
    upper: tuple[Op, ...] = ()
    description: str = _nokey()
    kind = "merge"


# --------------------------------------------------------------------------- build target


@dataclass(frozen=True)
class HistoryStep:
    """One line of image history. `op` is the step whose layer this line stands for
    (None for config-only instructions); an op that changed nothing is marked empty."""

    created_by: str
    op: Op | None = None
    comment: str = ""


@dataclass(frozen=True)
class ImageTarget:
    """What a frontend returns for one stage: its filesystem, config and history."""

    root: Op
    config: ImageConfig
    history: tuple[HistoryStep, ...] = ()
    base: ImageSource | None = None  # whose config history comes first
    platform: str = "linux/amd64"
    stage_name: str = ""
    author: str = ""  # MAINTAINER (the config's `author`); "" = the base image's


@dataclass(frozen=True)
class ResolvedImage:
    """What an `ImageResolver` says about a base image reference."""

    ref: str
    manifest_digest: str
    config: ImageConfig
    platform: str = "linux/amd64"


class ImageResolver(Protocol):
    """Given to frontends so they can read a base image's config (ENV, WORKDIR, ...)
    while compiling, without touching the store themselves (BuildKit's metaresolver)."""

    def resolve(self, ref: str, platform: str | None = None) -> ResolvedImage: ...
