"""The library surface of pybuild: every CLI feature is a call here, returning typed results.

    from pybuild import api
    result = api.build("examples/hello", tags=["hello:1"])
    print(result.manifest_digest)
    api.run("hello:1").exit_code
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pybuild.errors import ImageNotFound, PybuildError
from pybuild.progress import BaseView, ProgressSink, make_view
from pybuild.storeroot import StoreRoot


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OutputSpec:
    type: str  # image | oci | docker | tar | local
    dest: str = ""
    attrs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "OutputSpec":
        """`type=oci,dest=app.tar`, or a bare path (`-o DIR`, a local export)."""
        if "=" not in text:
            return cls("local", text)
        attrs: dict[str, str] = {}
        for part in text.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                raise PybuildError(f"invalid --output value {text!r}: expected key=value pairs")
            attrs[k.strip()] = v.strip()
        kind = attrs.pop("type", "")
        if kind not in ("image", "oci", "docker", "tar", "local"):
            raise PybuildError(f"unsupported output type {kind!r}: use image, oci, docker, tar or local")
        dest = attrs.pop("dest", "")
        if kind in ("oci", "docker", "tar", "local") and not dest:
            raise PybuildError(f"output type={kind} needs dest=PATH")
        return cls(kind, dest, tuple(sorted(attrs.items())))


@dataclass(frozen=True)
class BuildResult:
    manifest_digest: str
    config_digest: str
    tags: tuple[str, ...]
    steps: tuple  # tuple[solver.StepResult, ...]
    outputs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def cached_steps(self) -> int:
        return sum(1 for s in self.steps if s.cached)

    @property
    def run_steps(self) -> int:
        return sum(1 for s in self.steps if not s.cached)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    container_id: str


@dataclass(frozen=True)
class LoadedImage:
    manifest_digest: str
    tags: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- resolver


class StoreResolver:
    """Resolves FROM references against the local store (registries come later)."""

    def __init__(self, root: StoreRoot):
        self.root = root

    def resolve(self, ref: str, platform: str | None = None):
        from pybuild.graph import ResolvedImage

        image = self.root.images.lookup(ref)
        if image is None:
            raise ImageNotFound(
                f"{ref}: image not found in the local store ({self.root.path}); "
                f"make it with `pybuild import`, `pybuild load` or a build with -t "
                f"(pulling from registries is not supported yet)")
        cfg = image.config
        plat = f"{cfg.os}/{cfg.architecture}" + (f"/{cfg.variant}" if cfg.variant else "")
        return ResolvedImage(ref, image.manifest_digest, cfg.config, plat)


# --------------------------------------------------------------------------- build


def build(context: str = ".", dockerfile: str | None = None, *,
          dockerfile_text: str | None = None, tags: Sequence[str] = (),
          build_args: Mapping[str, str] | None = None, target: str | None = None,
          network: str = "default", no_cache: bool = False,
          outputs: Sequence[OutputSpec | str] = (), progress: str | ProgressSink = "auto",
          root: str | StoreRoot | None = None, jobs: int | None = None) -> BuildResult:
    """Build a Dockerfile. `dockerfile` defaults to `<context>/Dockerfile`; `dockerfile_text`
    (e.g. read from stdin) takes precedence over reading it."""
    from frontends.dockerfile.compile import compile_dockerfile
    from pybuild.assemble import image_config_file
    from pybuild.context import BuildContext
    from pybuild.solver import Solver
    from frontends.dockerfile.dockerignore import find_ignore_file, read_dockerignore

    if network not in ("default", "none", "host"):
        raise PybuildError(f"unsupported network mode {network!r}: use default, none or host")
    store = _root(root)
    context = os.path.abspath(context)
    if not os.path.isdir(context):
        raise PybuildError(f"build context {context!r} is not a directory")
    if dockerfile_text is None:
        path = dockerfile or os.path.join(context, "Dockerfile")
        try:
            with open(path, encoding="utf-8") as f:
                dockerfile_text = f.read()
        except FileNotFoundError:
            raise PybuildError(f"failed to read Dockerfile: {path}: no such file") from None
        filename = os.path.basename(path)
    else:
        path = dockerfile or os.path.join(context, "Dockerfile")
        filename = "Dockerfile"
    specs = [o if isinstance(o, OutputSpec) else OutputSpec.parse(o) for o in outputs]

    compiled = compile_dockerfile(dockerfile_text, resolver=StoreResolver(store),
                                  filename=filename, build_args=dict(build_args or {}),
                                  target=target, network=network)
    ignore_file = find_ignore_file(context, path)
    patterns: list[str] = []
    if ignore_file:
        with open(ignore_file, encoding="utf-8") as f:
            patterns = read_dockerignore(f.read())
    ctx = BuildContext(context, patterns,
                       stat_cache_path=os.path.join(store.path, "context-stat.db"))

    view, sink = _view(progress)
    try:
        solver = Solver(store, {"context": ctx}, sink, no_cache=no_cache, jobs=jobs)
        solver.solve(compiled.target.root)
        base_image = None
        if compiled.target.base is not None:
            base_image = store.images.get(compiled.target.base.manifest_digest)
        sde = _source_date_epoch(build_args)
        config_file, layers = image_config_file(compiled.target, solver.states, base_image, sde)
        image = store.images.commit(config_file, layers)
        normalized = []
        for t in tags:
            store.images.tag(t, image.manifest_digest)
            normalized.append(t)
        written = [_export(store, image, tuple(tags), spec) for spec in specs]
        for w in compiled.warnings:
            sink_info(sink, f"WARNING: {w}")
        if compiled.unused_build_args:
            sink_info(sink, "[Warning] One or more build-args "
                      f"[{' '.join(compiled.unused_build_args)}] were not consumed")
    finally:
        if view is not None:
            view.close()
    return BuildResult(image.manifest_digest, image.config_digest, tuple(normalized),
                       tuple(solver.steps), tuple(w for w in written if w),
                       tuple(compiled.warnings))


def sink_info(sink: ProgressSink, text: str) -> None:
    from pybuild.progress import ProgressEvent
    sink(ProgressEvent("info", "", text))


def _source_date_epoch(build_args: Mapping[str, str] | None) -> int | None:
    value = (build_args or {}).get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"SOURCE_DATE_EPOCH must be an integer, got {value!r}") from None


def _view(progress: str | ProgressSink) -> tuple[BaseView | None, ProgressSink]:
    if callable(progress):
        return None, progress
    view = make_view(progress)
    return view, view


def _export(store: StoreRoot, image, tags: tuple[str, ...], spec: OutputSpec) -> str:
    if spec.type == "image":
        for name in dict(spec.attrs).get("name", "").split(","):
            if name:
                store.images.tag(name, image.manifest_digest)
        return ""
    if spec.type in ("oci", "docker"):
        return save([image.manifest_digest], spec.dest, format=spec.type, root=store,
                    names={image.manifest_digest: list(tags)})
    if spec.type in ("local", "tar"):
        return _export_rootfs(store, image, spec)
    raise PybuildError(f"unsupported output type {spec.type!r}")


def _export_rootfs(store: StoreRoot, image, spec: OutputSpec) -> str:
    """type=local: the image's filesystem as a directory; type=tar: as one tarball."""
    from pybuild.sandbox.mounted import mounted_rootfs
    from pybuild.snapshot.diff import write_layer_tar

    dest = os.path.abspath(spec.dest)
    with mounted_rootfs(store.layer_dirs(image.layers)) as rootfs:
        if spec.type == "tar":
            with open(dest, "wb") as f:
                write_layer_tar(rootfs, f, overlay_whiteouts=False)
        else:
            import shutil
            shutil.copytree(rootfs, dest, symlinks=True, dirs_exist_ok=True)
    return dest


# --------------------------------------------------------------------------- images


def _root(root: str | StoreRoot | None) -> StoreRoot:
    return root if isinstance(root, StoreRoot) else StoreRoot.open(root)


def get_image(ref: str, root: str | StoreRoot | None = None):
    store = _root(root)
    image = store.images.lookup(ref)
    if image is None:
        raise ImageNotFound(f"no such image: {ref}")
    return image


def import_rootfs(source: str, tag: str | None = None, *,
                  root: str | StoreRoot | None = None) -> LoadedImage:
    """Like `docker import`: a directory or a (compressed) tarball becomes a one-layer image."""
    from pybuild.image.rootfs_import import import_rootfs as _import

    store = _root(root)
    if not os.path.exists(source):
        raise PybuildError(f"{source}: no such file or directory")
    image = _import(source, store.images, store.blobs, tag=tag)
    return LoadedImage(image.manifest_digest, (tag,) if tag else ())


def load(path: str, *, root: str | StoreRoot | None = None, tag: bool = True) -> list[LoadedImage]:
    """An OCI layout (tar or dir) or docker-archive tarball into the store, tags kept."""
    from pybuild.image.layout import read_image_tar

    store = _root(root)
    if not os.path.exists(path):
        raise PybuildError(f"{path}: no such file or directory")
    out = []
    for image, names in read_image_tar(path, store.images):
        if tag:
            for name in names:
                store.images.tag(name, image.manifest_digest)
        out.append(LoadedImage(image.manifest_digest, tuple(names) if tag else ()))
    return out


def save(refs: Sequence[str], dest: str, *, format: str = "oci",
         root: str | StoreRoot | None = None,
         names: Mapping[str, list[str]] | None = None) -> str:
    """Write images to an OCI layout tarball (`format="oci"`) or docker-archive (`"docker"`)."""
    from pybuild.image.archive import write_docker_archive
    from pybuild.image.layout import write_oci_layout_tar

    store = _root(root)
    entries = []
    for ref in refs:
        image = get_image(ref, store)
        tags = list((names or {}).get(ref, [])) or ([ref] if not ref.startswith("sha256:") else [])
        entries.append((image, tags))
    if format not in ("oci", "docker"):
        raise PybuildError(f"unsupported format {format!r}: use oci or docker")
    dest = os.path.abspath(dest)
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        if format == "oci":
            write_oci_layout_tar(store.images, entries, f)
        else:
            write_docker_archive(store.images, entries, f)
    os.replace(tmp, dest)
    return dest


def tag(source: str, target: str, *, root: str | StoreRoot | None = None) -> str:
    store = _root(root)
    image = get_image(source, store)
    store.images.tag(target, image.manifest_digest)
    return image.manifest_digest


def images(*, root: str | StoreRoot | None = None):
    return _root(root).images.images()


def rmi(ref: str, *, root: str | StoreRoot | None = None) -> bool:
    store = _root(root)
    get_image(ref, store)
    return store.images.untag(ref)


# --------------------------------------------------------------------------- run


def run(image: str, command: Sequence[str] | None = None, *, env: Sequence[str] = (),
        workdir: str | None = None, user: str | None = None, network: str = "none",
        rm: bool = True, entrypoint: str | None = None, root: str | StoreRoot | None = None,
        stdio: bool = True, on_output=None) -> RunResult:
    """Start a container from an image (a store reference or an OCI/docker tarball path)."""
    from pybuild.runner.container import ContainerSpec, run_container

    store = _root(root)
    if os.path.isfile(image):
        loaded = load(image, root=store, tag=False)
        if not loaded:
            raise ImageNotFound(f"{image}: no image in the tarball")
        stored = store.images.get(loaded[0].manifest_digest)
    else:
        stored = get_image(image, store)
    spec = ContainerSpec(image=stored, command=tuple(command) if command else None,
                         env=tuple(env), workdir=workdir, user=user, network=network,
                         entrypoint=entrypoint)
    code, cid = run_container(store, spec, remove=rm, inherit_stdio=stdio, on_output=on_output)
    return RunResult(code, cid)


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
