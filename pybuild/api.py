"""The library surface of pybuild: every CLI feature is a call here, returning typed results.

    from pybuild import api
    result = api.build("examples/hello", tags=["hello:1"])
    print(result.manifest_digest)
    api.run("hello:1").exit_code
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pybuild.errors import ImageNotFound, PybuildError
from pybuild.storeroot import StoreRoot

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:  # imported where used: save, images, ... need no progress view
    from pybuild.progress import BaseView, ProgressSink


# --------------------------------------------------------------------------- results


# `--output` values live in their own module (pybuild/image/outputs.py); re-exported here
from pybuild.image.outputs import ImageOptions, OutputSpec  # noqa: E402,F401


@dataclass(frozen=True)
class BuildResult:
    """What `build` made: the image, its names and outputs, and each step's result."""
    manifest_digest: str
    config_digest: str
    tags: tuple[str, ...]
    steps: tuple  # tuple[solver.StepResult, ...]
    outputs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    explanations: tuple = ()  # tuple[pybuild.explain.Explanation, ...] (build(explain=True))

    @property
    def cached_steps(self) -> int:
        return sum(1 for s in self.steps if s.cached)

    @property
    def run_steps(self) -> int:
        return sum(1 for s in self.steps if not s.cached)


@dataclass(frozen=True)
class RunResult:
    """How a `run` container ended."""
    exit_code: int
    container_id: str


@dataclass(frozen=True)
class LoadedImage:
    """An image `load` or `import_rootfs` put in the store, with the names it got."""
    manifest_digest: str
    tags: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- resolver


class StoreResolver:
    """Resolves FROM references: the local store first, else a registry pull (`pull=True`:
    tags are always asked of the registry again, as `--pull` does)."""

    def __init__(self, root: StoreRoot, pull: bool = False,
                 insecure_registries: Sequence[str] = ()):
        self.root = root
        self.pull = pull
        self.insecure_registries = tuple(insecure_registries)

    def resolve(self, ref: str, platform: str | None = None):
        from pybuild.graph import ResolvedImage
        from pybuild.registry.resolve import resolve_image

        image = resolve_image(self.root, ref, platform, pull_always=self.pull,
                              insecure=self.insecure_registries)
        cfg = image.config
        plat = f"{cfg.os}/{cfg.architecture}" + (f"/{cfg.variant}" if cfg.variant else "")
        return ResolvedImage(ref, image.manifest_digest, cfg.config, plat)


# --------------------------------------------------------------------------- build


def build(context: str = ".", dockerfile: str | None = None, *,
          dockerfile_text: str | None = None, tags: Sequence[str] = (),
          build_args: Mapping[str, str] | None = None, target: str | None = None,
          network: str = "default", no_cache: bool = False,
          outputs: Sequence[OutputSpec | str] = (), progress: str | ProgressSink = "auto",
          root: str | StoreRoot | None = None, jobs: int | None = None,
          no_cache_filter: Sequence[str] = (), pull: bool = False,
          explain: bool = False, push: bool = False,
          insecure_registries: Sequence[str] = (),
          secrets: Mapping[str, bytes | str] | Sequence[str] | None = None,
          ssh: Mapping[str, str | Sequence[str]] | Sequence[str] | None = None,
          cache_to: Sequence = (), cache_from: Sequence = ()) -> BuildResult:
    """Build a Dockerfile. `dockerfile` defaults to `<context>/Dockerfile`; `dockerfile_text`
    (e.g. read from stdin) takes precedence over reading it.

    `no_cache_filter`: stages (names or indexes) whose steps run even when cached.
    `pull`: ask the registry again about base-image tags that came from a registry
    (`--pull`); names of local builds and imports stay local. `push`: push every tag to
    its registry (`--push`). `insecure_registries`: hosts that may be spoken to over
    plain HTTP (loopback ones always may). `explain`: say why each step that
    missed the cache did (progress info lines, and `BuildResult.explanations`).
    `secrets`: {id: value}, or `--secret` strings ("id=X,src=FILE", "id=X,env=VAR"), for
    RUN --mount=type=secret. `ssh`: {id: socket or key path(s)}, or `--ssh` strings
    ("default", "id=PATH"), for RUN --mount=type=ssh. See docs/mounts.md.
    `cache_to`/`cache_from`: shared cache exports and imports, as
    `pybuild.cachetransfer.CacheSpec`s or `--cache-to`/`--cache-from` strings
    ("type=registry,ref=R,mode=max", "type=local,src=DIR", "type=inline", a bare ref).
    See docs/cache.md."""
    from pybuild.assemble import image_config_file
    from pybuild.context import BuildContext
    from pybuild.solver import Solver
    from frontends.dockerfile.dockerignore import find_ignore_file, read_dockerignore

    if network not in ("default", "none", "host"):
        raise PybuildError(f"unsupported network mode {network!r}: use default, none or host")
    # read secrets and check ssh sockets now: a typo must fail before any step runs
    secret_values, ssh_sources = _secret_values(secrets), _ssh_sources(ssh)
    store = _root(root)
    from pybuild.sandbox.forkserver import prestart
    prestart()  # the sandbox's fork server starts while the Dockerfile is checked, compiled
    if cache_to or cache_from:
        from pybuild.cachetransfer import BuildCaches
        caches = BuildCaches(store, cache_to, cache_from, insecure=insecure_registries)
    else:  # the common build: pybuild.cachetransfer (~4 ms of imports) is not needed
        caches = _NoCaches(store)
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
        # text from stdin has no file next to which a `<name>.dockerignore` could sit:
        # as with `docker build -f -`, only `<context>/.dockerignore` applies
        path = dockerfile
        filename = "Dockerfile"
    specs = [o if isinstance(o, OutputSpec) else OutputSpec.parse(o) for o in outputs]
    if any(s.image.rewrite_timestamp for s in specs) and _source_date_epoch(build_args) is None:
        raise PybuildError("rewrite-timestamp=true needs SOURCE_DATE_EPOCH (set the environment "
                           "variable or --build-arg SOURCE_DATE_EPOCH=...)")
    # the whole-build memo (pybuild/buildmemo.py) of a build into the local store only
    from pybuild.buildmemo import BuildPlan, Recorder
    memo = Recorder.start(store.path, context, path, dockerfile_text, build_args, target,
                          network, eligible=not (specs or push or no_cache or pull or explain
                                                 or secrets or ssh or no_cache_filter
                                                 or cache_to or cache_from))
    # the plan an earlier build of this request left (only the context changed since):
    # no checks, no compile, no frontend imported
    plan = memo.plan(store) if memo else None
    no_cache_ops: frozenset[str] = frozenset()
    recheck = None
    if plan is None:
        from frontends.dockerfile.compile import compile_dockerfile

        def checks() -> tuple:
            return _build_checks(context, path, dockerfile_text, filename, build_args, target,
                                 store, memo.checks_resolver if memo else None)

        checked = checks()
        resolver = StoreResolver(store, pull, insecure_registries)
        compiled = compile_dockerfile(dockerfile_text,
                                      resolver=memo.resolver(resolver) if memo else resolver,
                                      filename=filename, build_args=dict(build_args or {}),
                                      target=target, network=network)
        plan = BuildPlan(compiled.target, _warning_lines(compiled.warnings, checked),
                         compiled.unused_build_args)
        no_cache_ops = _no_cache_ops(compiled, no_cache_filter)

        def recheck() -> tuple:  # after a pull: what the checks say with the base known
            return _warning_lines(compiled.warnings, checks())
    ignore_file = find_ignore_file(context, path)
    patterns: list[str] = []
    if ignore_file:
        with open(ignore_file, encoding="utf-8") as f:
            patterns = read_dockerignore(f.read())
    # one stat cache per context directory, kept in the store (not in the context: writing
    # it there would change the context)
    ctx = BuildContext(context, patterns, stat_cache_path=BuildContext.stat_cache_for(
        os.path.join(store.path, "contexts"), context))
    if memo:
        memo.watch_context(ctx)
    scope = f"{os.path.abspath(path) if path else '-'}|{target or ''}"

    # held shared until the image is tagged: a `prune` waits for running builds, so it
    # never takes a blob or snapshot a build is using or has just made
    held = contextlib.ExitStack()
    held.enter_context(store.blobs.lock(exclusive=False))
    view, sink = _view(progress)
    if memo:
        sink = memo.sink(sink)
    try:
        solver_root = caches.start(lambda text: sink_info(sink, text))
        solver = Solver(solver_root, {"context": ctx}, sink, no_cache=no_cache, jobs=jobs,
                        no_cache_ops=no_cache_ops, scope=scope, explain=explain,
                        secrets=secret_values, ssh=ssh_sources, imported=caches.imported)
        solver.solve(plan.target.root)
        base_image = None
        if plan.target.base is not None:
            base_image = store.images.get(plan.target.base.manifest_digest)
        sde = _source_date_epoch(build_args)
        config_file, layers = image_config_file(plan.target, solver.states, base_image, sde)
        config_file = caches.image_config(config_file, plan.target, solver.states, layers)
        image = store.images.commit(config_file, layers)
        normalized = []
        for t in tags:
            store.images.tag(t, image.manifest_digest)
            normalized.append(t)
        exports = _Exports(store, image, sde, len(base_image.layers) if base_image else 0)
        written = [_export(store, exports.image_for(spec), tuple(tags), spec,
                           insecure_registries)
                   for spec in specs]
        image = exports.primary(specs)  # an image output's own manifest, when it has one
        if push:  # `--push`: every -t name goes to its registry
            written += [_push_image(store, image, t, insecure_registries) for t in tags]
        caches.export(plan.target, solver.states, lambda text: sink_info(sink, text))
        warnings = plan.warnings
        for w in warnings:
            sink_info(sink, f"WARNING: {w}")
        if plan.unused_build_args:
            sink_info(sink, "[Warning] One or more build-args "
                      f"[{' '.join(plan.unused_build_args)}] were not consumed")
        if memo:  # a base pulled by this build was unknown to its checks: ask them again
            memo.save(store, plan, image, tags, solver.steps, recheck)
    finally:
        held.close()
        caches.close()
        if view is not None:
            view.close()
    return BuildResult(image.manifest_digest, image.config_digest, tuple(normalized),
                       tuple(solver.steps), tuple(w for w in written if w),
                       warnings, tuple(solver.explanations))


class _NoCaches:
    """`pybuild.cachetransfer.BuildCaches` of a build with no --cache-to/--cache-from,
    which does nothing: the solver gets the store itself and no imported cache."""

    imported = None

    def __init__(self, root: StoreRoot):
        self.root = root

    def start(self, info) -> StoreRoot:
        return self.root

    def image_config(self, config_file, target, states, layers):
        return config_file

    def export(self, target, states, info) -> list[str]:
        return []

    def close(self) -> None:
        pass


def _build_checks(context, path, text, filename, build_args, target, store,
                  wrap_resolver=None) -> tuple:
    """Build checks of a build (only the stages the target needs). `check=error=true`
    fails the build here, before anything runs; a broken Dockerfile is left to the
    compiler, which says what is wrong with it. `wrap_resolver`: see `_run_checks`."""
    result = _run_checks(context, path, text, filename=filename, build_args=build_args,
                         target=target, all_stages=False, store=store,
                         wrap_resolver=wrap_resolver)
    violation = result.violation(filename, _lines(text))
    if violation is not None and result.error is None:
        raise violation
    return result.warnings


def _warning_lines(compiler_warnings: Sequence[str], checked) -> tuple[str, ...]:
    # the parser's empty-continuation warning is also a check (NoEmptyContinuation),
    # which `# check=skip=` can silence: show it once, as the check
    return tuple(w for w in compiler_warnings if not w.startswith("Empty continuation line")) \
        + tuple(w.short for w in checked)


def check(context: str = ".", dockerfile: str | None = None, *,
          dockerfile_text: str | None = None, build_args: Mapping[str, str] | None = None,
          target: str | None = None, root: str | StoreRoot | None = None) -> list:
    """Build checks only (`pybuild build --check`, BuildKit's `--call=check`): every stage,
    nothing built. Returns the warnings (`frontends.dockerfile.checks.Warning`); raises the
    Dockerfile's DefinitionError if it has one (its `.warnings` holds what was found
    before it). `check=error=true` does not raise here: any warning is a failed check."""
    context = os.path.abspath(context)
    if not os.path.isdir(context):
        raise PybuildError(f"build context {context!r} is not a directory")
    path = dockerfile if dockerfile_text is not None else (
        dockerfile or os.path.join(context, "Dockerfile"))
    if dockerfile_text is None:
        try:
            with open(path, encoding="utf-8") as f:
                dockerfile_text = f.read()
        except FileNotFoundError:
            raise PybuildError(f"failed to read Dockerfile: {path}: no such file") from None
    filename = os.path.basename(path) if path else "Dockerfile"
    store = _existing_store(root)
    result = _run_checks(context, path, dockerfile_text, filename=filename,
                         build_args=build_args, target=target, all_stages=True, store=store)
    if result.error is not None:
        result.error.warnings = result.warnings
        raise result.error
    return list(result.warnings)


def _run_checks(context: str, dockerfile_path: str | None, text: str, *, filename: str,
                build_args: Mapping[str, str] | None, target: str | None, all_stages: bool,
                store: StoreRoot | None, wrap_resolver=None):
    """The checker with this context's ignore file and the store's base image configs
    (looked up through `wrap_resolver(resolver)` when given: the memo records them)."""
    from frontends.dockerfile.checks import run_checks
    from frontends.dockerfile.compile import _host_platform
    from frontends.dockerfile.dockerignore import load_dockerignore
    from pybuild.buildcheck import LocalImageResolver, ignore_checker

    resolver = LocalImageResolver(store) if store is not None else None
    if resolver is not None and wrap_resolver is not None:
        resolver = wrap_resolver(resolver)
    return run_checks(text, build_args=build_args, target=target, all_stages=all_stages,
                      is_ignored=ignore_checker(load_dockerignore(context, dockerfile_path)),
                      resolver=resolver,
                      build_platform=_host_platform(), filename=filename)


def _existing_store(root: str | StoreRoot | None) -> StoreRoot | None:
    """The store to read base image configs from, if there is one (checks create none)."""
    from pybuild.storeroot import default_root

    if isinstance(root, StoreRoot):
        return root
    path = os.path.abspath(root or default_root())
    return StoreRoot.open(path) if os.path.isdir(path) else None


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.rstrip("\r") for line in text.split("\n"))


def _no_cache_ops(compiled, stages: Sequence[str]) -> frozenset[str]:
    """The steps of the stages named by --no-cache-filter (a stage the target does not
    need is not built, so naming it is not an error)."""
    wanted = {s.strip().lower() for item in stages for s in item.split(",") if s.strip()}
    out: set[str] = set()
    for name, digests in getattr(compiled, "stage_ops", ()):
        if name.lower() in wanted:
            out.update(digests)
    return frozenset(out)


def _secret_values(secrets) -> dict[str, bytes]:
    """`secrets=`: {id: value} as given, or `--secret` strings (id=X,src=FILE | env=VAR)."""
    from pybuild.buildsecrets import load_secrets

    if not secrets:
        return {}
    if isinstance(secrets, Mapping):
        return {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in secrets.items()}
    return load_secrets(list(secrets))


def _ssh_sources(ssh) -> dict[str, tuple[str, ...]]:
    """`ssh=`: {id: socket-or-key path(s)}, or `--ssh` strings (default | id=PATH)."""
    from pybuild.buildsecrets import SshSource, load_ssh

    if not ssh:
        return {}
    if isinstance(ssh, Mapping):
        return load_ssh([SshSource(k, (v,) if isinstance(v, str) else tuple(v))
                         for k, v in ssh.items()])
    return load_ssh(list(ssh))


def sink_info(sink: ProgressSink, text: str) -> None:
    from pybuild.progress import ProgressEvent
    sink(ProgressEvent("info", "", text))


def source_date_epoch(build_args: Mapping[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH from the build args, else the environment (None when unset)."""
    return _source_date_epoch(build_args)


def _source_date_epoch(build_args: Mapping[str, str] | None) -> int | None:
    value = (build_args or {}).get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"SOURCE_DATE_EPOCH must be an integer, got {value!r}") from None


def _view(progress: str | ProgressSink) -> tuple[BaseView | None, ProgressSink]:
    from pybuild.progress import make_view

    if callable(progress):
        return None, progress
    view = make_view(progress)
    return view, view


def _export(store: StoreRoot, image, tags: tuple[str, ...], spec: OutputSpec,
            insecure_registries: Sequence[str] = ()) -> str:
    if spec.type in ("image", "registry"):
        attrs = dict(spec.attrs)
        names = [n for n in attrs.get("name", "").split(",") if n] or list(tags)
        pushed = []
        for name in names:
            store.images.tag(name, image.manifest_digest)
            # type=registry is type=image,push=true (BuildKit's shorthand)
            if spec.type == "registry" or attrs.get("push", "").lower() == "true":
                pushed.append(_push_image(store, image, name, insecure_registries))
        return ", ".join(pushed)
    if spec.type in ("oci", "docker"):
        return _write_images(store, [(image, list(tags))], spec.dest, spec.type)
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
         names: Mapping[str, list[str]] | None = None,
         options: ImageOptions | None = None,
         source_date_epoch: int | None = None) -> str:
    """Write images to an OCI layout tarball (`format="oci"`) or docker-archive (`"docker"`).

    `options` converts them on the way (compression, media types, rewrite-timestamp with
    `source_date_epoch`); by default layers go as stored, and a docker-archive gets Docker
    media types. An image named by a tag is saved under that name; by digest or ID
    prefix, unnamed (as `docker save` does)."""
    from pybuild.image.convert import convert_image

    if format not in ("oci", "docker"):
        raise PybuildError(f"unsupported format {format!r}: use oci or docker")
    if options is None:
        options = ImageOptions(oci_mediatypes=format == "oci")
    store = _root(root)
    entries = []
    for ref in refs:
        image = get_image(ref, store)
        tags = list((names or {}).get(ref, [])) or _tag_of(store, ref, image.manifest_digest)
        image, _ = convert_image(store.images, image, options,
                                 source_date_epoch=source_date_epoch)
        entries.append((image, tags))
    return _write_images(store, entries, dest, format)


def _tag_of(store: StoreRoot, ref: str, manifest_digest: str) -> list[str]:
    """[ref] when `ref` is a name whose tag points at the image; [] for a digest, an ID
    prefix (`ab12cd`, resolved like `docker save ab12cd`) or `name@sha256:...`."""
    from pybuild.image.store import InvalidReference, parse_ref

    try:
        parsed = parse_ref(ref)
    except InvalidReference:
        return []
    if parsed.digest:
        return [ref] if parsed.tag else []
    return [ref] if store.index.get_tag(str(parsed)) == manifest_digest else []


class _Exports:
    """The images a build's outputs get: converted once per set of `ImageOptions`."""

    def __init__(self, store: StoreRoot, image, epoch: int | None, base_layers: int):
        self.store, self.image, self.epoch, self.base_layers = store, image, epoch, base_layers
        self._done: dict[ImageOptions, object] = {}

    def image_for(self, spec: OutputSpec):
        if spec.type in ("local", "tar"):
            return self.image
        if spec.image not in self._done:
            from pybuild.image.convert import convert_image

            converted, _ = convert_image(self.store.images, self.image, spec.image,
                                         source_date_epoch=self.epoch,
                                         keep_layers=self.base_layers)
            if spec.type in ("image", "registry") and converted is not self.image:
                converted = self.store.images.register(
                    self.store.blobs.read(converted.manifest_digest))
            self._done[spec.image] = converted
        return self._done[spec.image]

    def primary(self, specs: Sequence[OutputSpec]):
        for spec in specs:
            if spec.type in ("image", "registry"):
                return self.image_for(spec)
        return self.image


def _write_images(store: StoreRoot, entries: list, dest: str, format: str) -> str:
    from pybuild.image.archive import write_docker_archive
    from pybuild.image.layout import write_oci_layout_tar

    dest = os.path.abspath(dest)
    tmp = dest + ".tmp"
    try:
        with open(tmp, "wb") as f:
            if format == "oci":
                write_oci_layout_tar(store.images, entries, f)
            else:
                write_docker_archive(store.images, entries, f)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def history(ref: str, *, root: str | StoreRoot | None = None) -> list:
    """Like `docker history`: `pybuild.image.history.HistoryRow`s, newest first."""
    from pybuild.image.history import image_history

    return image_history(get_image(ref, _root(root)))


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


# --------------------------------------------------------------------------- registries


def pull(ref: str, *, platform: str | None = None, root: str | StoreRoot | None = None,
         insecure_registries: Sequence[str] = ()):
    """Like `docker pull`: returns a `pybuild.registry.pull.PullResult`."""
    from pybuild.registry.pull import pull as _pull

    return _pull(_root(root), ref, platform=platform, insecure=insecure_registries)


def push(ref: str, dest: str | None = None, *, root: str | StoreRoot | None = None,
         insecure_registries: Sequence[str] = ()):
    """Like `docker push` (`dest` pushes under another name): a `PushResult`."""
    from pybuild.registry.push import push as _push

    store = _root(root)
    return _push(store, get_image(ref, store), dest or ref, insecure=insecure_registries)


def _push_image(store: StoreRoot, image, name: str, insecure_registries: Sequence[str]) -> str:
    from pybuild.registry.push import push as _push

    return _push(store, image, name, insecure=insecure_registries).ref


def login(registry: str, username: str, password: str, *,
          insecure_registries: Sequence[str] = ()) -> str:
    """Check the credentials against the registry, then keep them where Docker does.
    Returns where they were stored."""
    from pybuild.registry.auth import Credentials, store_credentials
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.reference import normalize_registry

    creds = Credentials(username, password)
    with RegistryClient(normalize_registry(registry), credentials=creds,
                        insecure=insecure_registries) as client:
        client.ping()
    return store_credentials(registry, creds)


def logout(registry: str) -> bool:
    from pybuild.registry.auth import erase_credentials

    return erase_credentials(registry)


# --------------------------------------------------------------------------- housekeeping


def du(*, root: str | StoreRoot | None = None, grace: float | None = None):
    """What the store holds (blobs, snapshots, cache mounts) and what `prune` would free:
    a `pybuild.storegc.DiskUsage`."""
    from pybuild.storegc import GRACE_SECONDS, disk_usage

    return disk_usage(_root(root), grace=GRACE_SECONDS if grace is None else grace)


def prune(*, all: bool = False, keep_storage: str | int | None = None,
          filters: Sequence[str] = (), root: str | StoreRoot | None = None, wait=None,
          grace: float | None = None):
    """Remove build cache not needed by tagged images (`pybuild.storegc`): with `all`,
    every cache record; with `keep_storage` (bytes or "10GB"), least recently used first
    until the store fits; `filters=["until=24h"]` spares what was used more recently.
    Waits for running builds (calling `wait()` first, if given). Blobs, snapshots and
    temp files younger than `grace` seconds (default 60) are spared: commands other than
    build write them without waiting for a prune. A `PruneResult`."""
    from pybuild.storegc import GRACE_SECONDS, parse_filters, parse_size, prune as _prune

    keep = parse_size(keep_storage) if isinstance(keep_storage, str) else keep_storage
    return _prune(_root(root), all_cache=all, keep_storage=keep,
                  until=parse_filters(filters), wait=wait,
                  grace=GRACE_SECONDS if grace is None else grace)


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
