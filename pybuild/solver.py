"""The solver: runs a build graph, looking every op up in the cache first.

Ops are scheduled in dependency order on a bounded thread pool, so independent
branches (stages) run in parallel, identical vertices (same digest) run once, and
only what the target reaches is run at all.

Cache keys (DESIGN.md): an op's key is the sha256 of its definition with every input
replaced by that input's cache key, and every read of a local context replaced by the
content checksum of exactly the files it selects (names, modes, owners, content; never
mtimes). A base image enters by manifest digest. A key maps ("step", key) in the index
to the layer the op added (or none, when it changed nothing), so a hit reuses the very
same blob: nothing is re-tarred or re-compressed.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping

from cache.digest import digest_json
from pybuild import graph
from pybuild.assemble import created_timestamp
from pybuild.errors import BuildCancelled, PybuildError, StepFailed
from pybuild.progress import ProgressEvent, ProgressSink, null_sink
from pybuild.workers import Workers

STEP_RECORD = "step"
OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class SolvedState:
    """A solved op: the full layer chain of its filesystem and what it added."""

    layers: tuple  # tuple[LayerRecord, ...], bottom first
    cache_key: str
    layer: Any = None  # LayerRecord | None: what this op added
    cached: bool = False
    # when `layer` was first made (RFC 3339, UTC), kept in its step record: the history
    # time of its step, so a cached rebuild gives the same image config (as BuildKit does)
    created: str | None = None


@dataclass(frozen=True)
class StepResult:
    """One step of a build: its cache key, whether it came from the cache, how long it
    took and the layer it made (None if none)."""

    vertex: str
    name: str
    cache_key: str
    cached: bool
    duration: float
    layer_digest: str | None


class Solver:
    def __init__(self, root, contexts: Mapping[str, Any] | None = None,
                 sink: ProgressSink = null_sink, *, no_cache: bool = False,
                 jobs: int | None = None, secrets: Mapping[str, bytes] | None = None,
                 no_cache_ops: frozenset[str] = frozenset(), scope: str = "",
                 explain: bool = False, ssh: Mapping[str, Any] | None = None,
                 imported=None):
        self.root = root  # pybuild.storeroot.StoreRoot
        # --cache-from records (pybuild.cachetransfer.ImportedCache): asked on a local miss
        self.imported = imported
        # RUN --mount=type=secret|ssh: values never reach a cache key, a layer or the log
        self.secrets = dict(secrets or {})  # id -> bytes
        self.ssh = dict(ssh or {})  # id -> (agent socket or key file paths)
        self.contexts = dict(contexts or {})  # name -> pybuild.context.BuildContext
        self.sink = sink
        self.no_cache = no_cache
        self.no_cache_ops = frozenset(no_cache_ops)  # op digests that must run (--no-cache-filter)
        self.scope = scope  # what makes step positions unique in the store (Dockerfile, target)
        self.explain = explain
        self.explanations: list = []  # list[pybuild.explain.Explanation], when explain=True
        self._positions: dict[str, str] = {}
        self._tl = threading.local()
        self.jobs = jobs or max(2, os.cpu_count() or 2)
        self.states: dict[str, SolvedState] = {}
        self.steps: list[StepResult] = []
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._owner_ids: dict[str, dict[str, str]] = {}  # FileOp digest -> linkusers owners

    # ------------------------------------------------------------------ scheduling
    def solve(self, target: graph.Op) -> SolvedState:
        ops = [op for op in target.walk() if not isinstance(op, graph.LocalSource)]
        self._positions.update(_step_positions(ops))
        pending = {op.digest: op for op in ops if op.digest not in self.states}
        deps = {d: {i.digest for i in op.inputs if not isinstance(i, graph.LocalSource)}
                for d, op in pending.items()}
        running: set[str] = set()
        error: BaseException | None = None
        if any(isinstance(op, (graph.Exec, graph.FileOp)) for op in pending.values()):
            from pybuild.sandbox.forkserver import prestart
            prestart()  # warm by the first step that misses the cache (sandbox/forkserver.py)
        workers = Workers(self.jobs, name="solve")
        try:
            while pending or running:
                if error is None:  # ready ops, as many as there are free workers
                    for d in [d for d in pending if not (deps[d] - self.states.keys())]:
                        if len(running) >= self.jobs:
                            break
                        op = pending.pop(d)
                        workers.submit(d, lambda op=op: self._solve_one(op))
                        running.add(d)
                if not running:
                    break
                d, exc = workers.finished()
                running.discard(d)
                if exc is not None:  # the first failure wins; the other steps are cancelled
                    if error is None or isinstance(error, BuildCancelled):
                        error = exc
                    self._cancelled.set()
                if error is not None:
                    pending.clear()
        except BaseException:
            # Ctrl-C (KeyboardInterrupt lands in this, the main thread): running steps see
            # the event, kill their sandboxes and remove their work dirs before we return
            self._cancelled.set()
            raise
        finally:
            workers.close()
        if error is not None:
            raise error
        return self.states[target.digest]

    # ------------------------------------------------------------------ one op
    def _solve_one(self, op: graph.Op) -> None:
        if self._cancelled.is_set():
            raise BuildCancelled("the build was cancelled")
        key = self.cache_key(op)
        name = self.describe(op)
        start = time.monotonic()
        parent = self._parent_layers(op)
        if isinstance(op, (graph.Scratch, graph.ImageSource)):
            state = self._source_state(op, key)
            self._finish(op, state)
            if isinstance(op, graph.ImageSource):
                self.sink(ProgressEvent("cached", op.digest, name))
                self._record(op, name, state, 0.0)
            return
        if isinstance(op, graph.Merge):
            # stacking layers runs nothing and is no step of its own: the linked FileOp
            # below it is the step (cached or run) that users see
            upper = tuple(layer for u in op.upper for layer in self.states[u.digest].layers)
            self._finish(op, SolvedState(parent + upper, key, None, cached=True))
            return
        forced = self.no_cache or op.digest in self.no_cache_ops
        if not forced:
            hit = self._lookup(key, parent)
            if hit is not None:
                self.sink(ProgressEvent("cached", op.digest, name))
                self._remember(op, name, key, forced, hit=True)
                self._finish(op, hit)
                self._record(op, name, hit, 0.0)
                return
        explained = self._remember(op, name, key, forced, hit=False)
        self.sink(ProgressEvent("start", op.digest, name))
        try:
            if isinstance(op, graph.Exec):
                layer = self._run_exec(op, parent, name)
            elif isinstance(op, graph.FileOp):
                layer = self._run_fileop(op, parent)
            elif isinstance(op, (graph.HttpSource, graph.GitSource)):
                layer = self._run_remote(op)
            else:
                raise PybuildError(f"the solver cannot run a {op.kind!r} op")
        except BaseException:
            self.sink(ProgressEvent("error", op.digest, name, duration=time.monotonic() - start))
            raise
        created = created_timestamp()
        put_step_record(self.root.index, key, layer, created)
        if explained is not None:  # only a step that succeeded counts as "the last build"
            self.root.index.put(*explained)
        state = SolvedState(parent + ((layer,) if layer else ()), key, layer, cached=False,
                            created=created)
        duration = time.monotonic() - start
        self.sink(ProgressEvent("done", op.digest, name, duration=duration))
        self._finish(op, state)
        self._record(op, name, state, duration)

    def _remember(self, op: graph.Op, name: str, key: str, forced: bool,
                  hit: bool) -> tuple | None:
        """Keep what this step's key was made of (an explain record), and on a miss with
        `explain` on, say why it missed compared with the last build of the same step.
        A hit updates the record now; a miss returns the (kind, key, value) to record
        once the step has succeeded."""
        from pybuild import explain as ex

        position = self._positions.get(op.digest)
        if position is None:
            return None
        ident = digest_json({"scope": self.scope, "position": position})
        current = _step_record(op, name, key, self._tl.value, self._tl.files,
                               self._tl.files_sums)
        prev_rec = self.root.index.get(ex.EXPLAIN_RECORD, ident, touch=False)
        previous = ex.StepRecord.from_json(prev_rec.value) if prev_rec is not None else None
        if not hit and self.explain:
            why = ex.explain(name, current, previous, no_cache=forced)
            with self._lock:
                self.explanations.append(why)
            self.sink(ProgressEvent("info", "", "explain: " + why.render()))
        if previous is not None and previous.key == key:
            return None
        if hit:
            self.root.index.put(ex.EXPLAIN_RECORD, ident, current.to_json())
            return None
        return (ex.EXPLAIN_RECORD, ident, current.to_json())

    def _finish(self, op: graph.Op, state: SolvedState) -> None:
        with self._lock:
            self.states[op.digest] = state

    def _record(self, op: graph.Op, name: str, state: SolvedState, duration: float) -> None:
        with self._lock:
            self.steps.append(StepResult(op.digest, name, state.cache_key, state.cached, duration,
                                         state.layer.digest if state.layer else None))

    def _parent_layers(self, op: graph.Op) -> tuple:
        root_op = getattr(op, "root", None)
        if root_op is None:
            return ()
        return self.states[root_op.digest].layers

    def _source_state(self, op: graph.Op, key: str) -> SolvedState:
        if isinstance(op, graph.Scratch):
            return SolvedState((), key, None, cached=True)
        image = self.root.images.get(op.manifest_digest)
        return SolvedState(tuple(image.layers), key, None, cached=True)

    def _lookup(self, key: str, parent: tuple) -> SolvedState | None:
        rec = self.root.index.get(STEP_RECORD, key)
        if rec is None:
            return self._lookup_imported(key, parent)
        layer = _layer_from_json(rec.value.get("layer"))
        if layer is not None and not self.root.blobs.has(layer.digest):
            # the blob was pruned: an imported cache may still serve it, else run again
            return self._lookup_imported(key, parent)
        return SolvedState(parent + ((layer,) if layer else ()), key, layer, cached=True,
                           created=rec.value.get("created"))

    def _lookup_imported(self, key: str, parent: tuple) -> SolvedState | None:
        """A hit in the --cache-from records: its layer is fetched only when needed."""
        if self.imported is None:
            return None
        hit, layer = self.imported.lookup(key)
        if not hit:
            return None
        return SolvedState(parent + ((layer,) if layer else ()), key, layer, cached=True,
                           created=self.imported.created.get(layer.digest) if layer else None)

    # ------------------------------------------------------------------ cache keys
    def cache_key(self, op: graph.Op) -> str:
        self._tl.files = {}  # context path -> entry digest, for the explain record
        self._tl.files_sums = []
        if isinstance(op, (graph.HttpSource, graph.GitSource)):
            # a remote source's key is its content (or commit), resolved by asking it now
            self._tl.value = {"kind": op.kind, "resolved": self._remote(op).cache_key(op)}
            return self._tl.value["resolved"]
        self._tl.value = self._key_value(op, top=True)
        if isinstance(op, graph.FileOp) and op.users_from is not None:
            # COPY --link --chown=NAME: the ids the names resolve to, not the stage's layers
            self._tl.value["users_from"] = self._owners(op)
        return digest_json({"v": 1, "op": self._tl.value})

    def _owners(self, op: graph.FileOp) -> dict[str, str]:
        from pybuild.linkusers import owners_of

        with self._lock:
            known = self._owner_ids.get(op.digest)
        if known is None:
            known = owners_of(op, self.root, self.states[op.users_from.digest].layers,
                              _empty_dir(self.root))
            with self._lock:
                self._owner_ids[op.digest] = known
        return known

    def _key_value(self, value: Any, top: bool = False) -> Any:
        if isinstance(value, graph.Op) and not top:
            if isinstance(value, graph.LocalSource):
                return {"local": value.name}
            # the input's result is part of the key: a step re-run with --no-cache (or a
            # --no-cache-filter stage) that produced different bytes rebuilds its users
            state = self.states[value.digest]
            return {"key": state.cache_key, "layer": state.layer.digest if state.layer else None}
        if isinstance(value, graph.Copy) and isinstance(value.source, graph.LocalSource):
            d = self._dataclass_value(value)
            ctx = self._context(value.source.name)
            files = getattr(self._tl, "files", None)
            content = ctx.checksum(value.src, value.exclude,
                                   follow_symlinks=value.follow_symlinks, parents=value.parents,
                                   allow_wildcard=value.allow_wildcard,
                                   allow_empty_wildcard=value.allow_empty_wildcard,
                                   source_cwd=value.source_cwd, entries=files)
            if files is not None:
                self._tl.files_sums.append(content)
            d["source"] = {"local": value.source.name, "content": content}
            return d
        if isinstance(value, graph.Mount) and isinstance(value.source, graph.LocalSource):
            d = self._dataclass_value(value)
            ctx = self._context(value.source.name)
            d["source"] = {"local": value.source.name, "content": ctx.checksum((value.selector,))}
            return d
        if isinstance(value, tuple):
            return [self._key_value(v) for v in value]
        if isinstance(value, bytes):
            return {"bytes": value.hex()}
        if hasattr(value, "__dataclass_fields__"):
            d = self._dataclass_value(value)
            if isinstance(value, graph.Op):
                d["kind"] = value.kind
            return d
        return value

    def _dataclass_value(self, value: Any) -> dict:
        return {f.name: self._key_value(getattr(value, f.name)) for f in fields(value)
                if not f.metadata.get("nokey")}

    def _context(self, name: str):
        try:
            return self.contexts[name]
        except KeyError:
            raise PybuildError(f"no build context named {name!r} was given") from None

    @staticmethod
    def describe(op: graph.Op) -> str:
        if isinstance(op, graph.ImageSource):
            return f"[internal] load {op.ref or op.manifest_digest}"
        if isinstance(op, graph.Scratch):
            return "scratch"
        if isinstance(op, graph.HttpSource):
            from pybuild.httpsource import redact
            return f"[internal] download {redact(op.url)}"
        if isinstance(op, graph.GitSource):
            from pybuild.httpsource import redact
            return f"[internal] git {redact(op.remote)}#{op.ref or 'HEAD'}"
        return getattr(op, "description", "") or op.kind

    # ------------------------------------------------------------------ execution
    def _run_exec(self, op: graph.Exec, parent: tuple, name: str):
        from pybuild.runmounts import prepared_mounts
        from pybuild.sandbox.namespaces import SandboxSpec, run_sandboxed

        snapshots = self.root.snapshots
        lowers = self.root.layer_dirs(parent)
        upper, work = snapshots.new_work()
        tail = _Tail(OUTPUT_TAIL_LINES)

        def on_output(data: bytes) -> None:
            tail.feed(data)
            self.sink(ProgressEvent("log", op.digest, name, data=data))

        try:
            with prepared_mounts(op, self) as mounts:
                # network "default" is a fresh netns with only `lo` up, like "none": the
                # host's namespaces are never touched (no bridge, no veth, no address); see
                # docs/network.md. Only "host" shares the host's network.
                spec = SandboxSpec(
                    lowerdirs=tuple(lowers), upperdir=upper, workdir=work, args=tuple(op.args),
                    env=_with_proxy_env(op) + mounts.env, cwd=op.cwd or "/", user=op.user,
                    network="host" if op.network == "host" else "none",
                    hostname=op.hostname or "pybuild", mounts=mounts.binds,
                    tmpfs=mounts.tmpfs, trees=mounts.trees, secrets=mounts.secrets)
                result = run_sandboxed(spec, on_output=on_output, cancel=self._cancelled)
            if result.exit_code != 0:
                raise StepFailed(_command_text(op), result.exit_code, tail.text())
            return self._commit_upper(upper)
        except BaseException:
            snapshots.discard(upper)
            raise
        finally:
            snapshots.discard(work)

    def _remote(self, op: graph.Op):
        """This solve's resolver of HTTP or git sources (it remembers what it fetched)."""
        from pybuild.gitsource import GitSources
        from pybuild.httpsource import HttpSources

        with self._lock:
            if not hasattr(self, "_remotes"):
                self._remotes = {"http": HttpSources(self.root), "git": GitSources(self.root)}
            return self._remotes[op.kind]

    def _run_remote(self, op: graph.Op):
        """A download or a git checkout, as the one layer of its own filesystem."""
        upper, work = self.root.snapshots.new_work()
        try:
            self._remote(op).materialize(op, upper)
            return self._commit_upper(upper)
        except BaseException:
            self.root.snapshots.discard(upper)
            raise
        finally:
            self.root.snapshots.discard(work)

    def _run_fileop(self, op: graph.FileOp, parent: tuple):
        from pybuild import fileops
        from pybuild.linkusers import with_owners
        from pybuild.sandbox.mounted import mounted_rootfs

        snapshots = self.root.snapshots
        lowers = self.root.layer_dirs(parent)
        upper, work = snapshots.new_work()
        actions = op.actions
        if op.users_from is not None:
            actions = with_owners(actions, self._owners(op))
        try:
            # the overlay's teardown overlaps the layer tar (SnapshotStore waits for it)
            with mounted_rootfs(lowers, upper, work, defer_release=True) as dest:
                for action in actions:
                    if isinstance(action, graph.Copy):
                        self._apply_copy(action, dest)
                    elif isinstance(action, graph.Mkdir):
                        fileops.apply_mkdir(action, dest)
                    elif isinstance(action, graph.Mkfile):
                        fileops.apply_mkfile(action, dest)
            return self._commit_upper(upper)
        except BaseException:
            snapshots.discard(upper)
            raise
        finally:
            snapshots.discard(work)

    def _apply_copy(self, action: graph.Copy, dest: str) -> None:
        from pybuild import fileops
        from pybuild.sandbox.mounted import mounted_rootfs

        if isinstance(action.source, graph.LocalSource):
            ctx = self._context(action.source.name)
            fileops.apply_copy(action, ctx.root, dest, ignore=ctx.is_ignored)
            return
        src_layers = self.states[action.source.digest].layers
        if not src_layers:
            fileops.apply_copy(action, _empty_dir(self.root), dest)
            return
        with mounted_rootfs(self.root.layer_dirs(src_layers)) as src:
            fileops.apply_copy(action, src, dest)

    def _commit_upper(self, upper: str):
        """Turn a step's upperdir into a layer blob (None if the step changed nothing),
        keeping the upperdir itself as the unpacked snapshot of that layer."""
        from pybuild.snapshot.commit import layer_from_upper

        layer = layer_from_upper(upper, self.root.blobs)  # streamed: no temporary tar
        if layer is None:
            self.root.snapshots.discard(upper)
            return None
        self.root.snapshots.adopt(layer.diff_id, upper)
        return layer


def _step_positions(ops: list) -> dict[str, str]:
    """op digest -> its step position (pybuild.explain.step_position) for Exec/FileOp."""
    from pybuild.explain import step_position

    chains: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    # a linked copy (a FileOp on Scratch) takes the place of the Merge that stacks it
    linked = {u.digest for op in ops if isinstance(op, graph.Merge) for u in op.upper}
    for op in ops:  # inputs before users (graph.Op.walk order)
        root = getattr(op, "root", None)
        if root is None or op.digest in linked:
            continue
        word = (getattr(op, "description", "") or op.kind).split(" ", 1)[0].upper()
        chains[op.digest] = chains.get(root.digest, []) + [word]
        shape = ">".join(chains[op.digest])
        seen[shape] = seen.get(shape, 0) + 1
        out[op.digest] = step_position(chains[op.digest], seen[shape])
        for u in getattr(op, "upper", ()):
            out[u.digest] = out[op.digest]
    return out


def _step_record(op: graph.Op, name: str, key: str, value: dict, files: dict,
                 sums: list):
    """The explain record of a step from its key value (see Solver._key_value)."""
    from pybuild.explain import FILE_DIGEST_CHARS, MAX_FILES, StepRecord

    settings = {k: v for k, v in value.items() if k not in ("root", "kind")}
    inputs: dict[str, str] = {}

    def pull_inputs(v, path: str):
        # inputs other than the parent (COPY --from, mount sources) are reported by name;
        # local content is reported file by file, so both leave the settings
        if isinstance(v, dict):
            if "key" in v and "layer" in v:
                inputs[path] = digest_json(v)
                return "<input>"
            if "local" in v and "content" in v:
                return {"local": v["local"]}
            return {k: pull_inputs(x, f"{path}.{k}" if path else k) for k, x in v.items()}
        if isinstance(v, list):
            return [pull_inputs(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return v

    settings = pull_inputs(settings, "")
    base = None
    bottom = op
    while getattr(bottom, "root", None) is not None:
        bottom = bottom.root
    if isinstance(bottom, graph.ImageSource):
        base = (bottom.ref or "", bottom.manifest_digest)
    kept = None if len(files) > MAX_FILES else {
        p: d[:FILE_DIGEST_CHARS] for p, d in sorted(files.items())}
    return StepRecord(key, name, op.kind, settings,
                      digest_json(value.get("root")) if value.get("root") else None,
                      base, inputs, kept, digest_json(sums) if sums else "")


class _Tail:
    """The last N lines of a step's output, for the error message of a failed step."""

    def __init__(self, n: int):
        self.n = n
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf = b"\n".join((self.buf + data).split(b"\n")[-(self.n + 1):])

    def text(self) -> str:
        return self.buf.decode(errors="replace")


def _with_proxy_env(op: graph.Exec) -> tuple[str, ...]:
    """The step's env plus the proxy variables it does not set itself (those are kept
    out of the cache key: changing a proxy must not rebuild anything)."""
    names = {e.partition("=")[0] for e in op.env}
    return tuple(op.env) + tuple(e for e in op.proxy_env if e.partition("=")[0] not in names)


def _command_text(op: graph.Exec) -> str:
    # BuildKit's wording: process "/bin/sh -c make" did not complete successfully
    return f"process \"{' '.join(op.args)}\""


def put_step_record(index, key: str, layer, created: str | None) -> None:
    """The ("step", key) record: the layer the step added (or none) and when it was first
    made (the history time a cached rebuild reuses)."""
    value = {"layer": _layer_json(layer)}
    if created is not None:
        value["created"] = created
    index.put(STEP_RECORD, key, value)


def _layer_json(layer) -> dict | None:
    if layer is None:
        return None
    return {"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
            "media_type": layer.media_type}


def _layer_from_json(d: dict | None):
    if not d:
        return None
    from pybuild.image.types import LayerRecord
    return LayerRecord(d["digest"], d["diff_id"], d["size"], d["media_type"])


def _empty_dir(root) -> str:
    path = os.path.join(root.path, "empty")
    os.makedirs(path, exist_ok=True)
    return path
