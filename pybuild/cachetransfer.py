"""The shared build cache in transit: `--cache-to` and `--cache-from`.

The format lives in `cache/exchange.py`; this module moves it. Three places a cache
can live (docs/cache.md, "Shared cache format"):

- `type=registry,ref=REF`: an OCI image manifest pushed under REF whose config blob is
  the cache config and whose layers are the layer blobs;
- `type=local,dest|src=DIR`: the same manifest in an OCI image layout directory;
- `type=inline`: records in the result image's config (a label), naming its own
  layers; imported with `--cache-from IMAGE-REF` like a registry cache.

Import is lazy. `load_imports` fetches only manifests and cache configs and builds one
`ImportedCache`, which the solver asks when its local index misses. A hit costs nothing
until a layer's bytes are needed: by a step that must run on top of it (the solver's
root is wrapped in `LazyLayerRoot`, whose `layer_dirs` fetches first), or at the end
for the result image's own layers (`ImportedCache.ensure`). A record lands in the local
index once its blob is in the store, so the next build finds it without the import.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from cache.exchange import (CACHE_CONFIG_MEDIA_TYPE, INLINE_LABEL, CacheConfig, CacheFormatError,
                            CacheLayer, make_cache_config, make_inline, parse_inline)
from pybuild import graph
from pybuild.errors import PybuildError

CACHE_TYPES = ("registry", "local", "inline")
DEFAULT_LOCAL_TAG = "latest"
_CONFIG_LIMIT = 64 << 20  # a cache config of a million steps is ~150 MB; refuse beyond this
_KEYS = {
    "to": {"registry": {"ref", "mode", "ignore-error"},
           "local": {"dest", "mode", "tag", "ignore-error"},
           "inline": {"mode"}},
    "from": {"registry": {"ref"}, "local": {"src", "tag"}},
}


class InvalidCacheSpec(PybuildError):
    """A `--cache-to` or `--cache-from` value that cannot be honoured."""


class CacheExportError(PybuildError):
    pass


@dataclass(frozen=True)
class CacheSpec:
    """One `--cache-to` / `--cache-from` value, parsed."""

    type: str             # registry | local | inline
    ref: str = ""         # registry: the cache's (or, for an inline cache, the image's) name
    path: str = ""        # local: the layout directory (dest= on export, src= on import)
    tag: str = DEFAULT_LOCAL_TAG  # local: the layout's index.json entry name
    mode: str = "min"     # export: min (the result image's steps) | max (every step)
    ignore_error: bool = False

    @classmethod
    def parse(cls, text: str, direction: str) -> "CacheSpec":
        """BuildKit's syntax (`type=registry,ref=R,mode=max`); a bare `REF` means
        `type=registry,ref=REF`. `direction` is "to" or "from"."""
        flag = f"--cache-{direction}"
        text = text.strip()
        if not text:
            raise InvalidCacheSpec(f"empty {flag} value")
        if "=" not in text:
            return cls._checked(cls("registry", ref=text), flag)
        from pybuild.image.outputs import split_attrs

        attrs = split_attrs(text, flag, InvalidCacheSpec)
        kind = attrs.pop("type", "registry" if "ref" in attrs else "")
        allowed = _KEYS[direction]
        if kind not in allowed:
            hint = (" (an inline cache is imported with --cache-from IMAGE-REF)"
                    if kind == "inline" else "")
            raise InvalidCacheSpec(f"unsupported {flag} type {kind!r} in {text!r}: use "
                                   f"{', '.join(allowed)}{hint}")
        unknown = sorted(set(attrs) - allowed[kind])
        if unknown:
            raise InvalidCacheSpec(f"unknown {flag} option {unknown[0]!r} for type={kind}: "
                                   f"known options are {', '.join(sorted(allowed[kind]))}")
        mode = attrs.get("mode", "min").lower() or "min"
        if mode not in ("min", "max"):
            raise InvalidCacheSpec(f"{flag} mode must be min or max, got {mode!r}")
        if kind == "inline" and mode != "min":
            raise InvalidCacheSpec("--cache-to type=inline supports mode=min only (the image "
                                   "holds its own layers, not those of other stages)")
        ignore = attrs.get("ignore-error", "false").lower()
        if ignore not in ("true", "false"):
            raise InvalidCacheSpec(f"{flag} ignore-error must be true or false, got {ignore!r}")
        spec = cls(kind, ref=attrs.get("ref", ""),
                   path=attrs.get("dest" if direction == "to" else "src", ""),
                   tag=attrs.get("tag", DEFAULT_LOCAL_TAG) or DEFAULT_LOCAL_TAG,
                   mode=mode, ignore_error=ignore == "true")
        return cls._checked(spec, flag)

    @staticmethod
    def _checked(spec: "CacheSpec", flag: str) -> "CacheSpec":
        from pybuild.registry.reference import parse_ref

        if spec.type == "registry":
            if not spec.ref:
                raise InvalidCacheSpec(f"{flag} type=registry needs ref=REGISTRY/REPO:TAG")
            try:
                parse_ref(spec.ref)
            except PybuildError as e:
                raise InvalidCacheSpec(f"{flag}: {e}") from None
        if spec.type == "local" and not spec.path:
            key = "dest" if flag.endswith("to") else "src"
            raise InvalidCacheSpec(f"{flag} type=local needs {key}=DIR")
        return spec


def parse_specs(items: Iterable["CacheSpec | str"], direction: str) -> list[CacheSpec]:
    return [i if isinstance(i, CacheSpec) else CacheSpec.parse(i, direction) for i in items]


# --------------------------------------------------------------------------- import


class _RegistryOrigin:
    def __init__(self, client, path: str):
        self.client, self.path = client, path

    def fetch(self, root, layer) -> None:
        from pybuild.registry.pull import fetch_blob, note_blob_source

        fetch_blob(self.client, self.path, layer.descriptor(), root.blobs)
        note_blob_source(root.index, layer.digest, f"{self.client.endpoint.domain}/{self.path}")

    def read_small(self, desc) -> bytes:
        from cache.digest import digest_bytes
        from pybuild.registry.client import repo_scope
        from pybuild.registry.errors import BlobVerificationError

        if desc.size > _CONFIG_LIMIT:
            raise CacheFormatError(f"cache config {desc.digest} is too large ({desc.size} bytes)")
        data = self.client.request("GET", f"/v2/{self.path}/blobs/{desc.digest}",
                                   repo_scope(self.path)).content
        if digest_bytes(data) != desc.digest:
            raise BlobVerificationError(f"blob {desc.digest} from {self.client.endpoint.domain}/"
                                        f"{self.path} is corrupt")
        return data


class _LayoutOrigin:
    def __init__(self, path: str):
        from pybuild.image.layout import DirSource

        self.path = path
        self.src = DirSource(path)

    def fetch(self, root, layer) -> None:
        from pybuild.image.layout import import_blob

        import_blob(self.src, root.images, layer.descriptor())

    def read_small(self, desc) -> bytes:
        from pybuild.image.layout import _read_verified

        return _read_verified(self.src, desc)


class ImportedCache:
    """Records from `--cache-from` sources, merged (the first source naming a key wins),
    and where each layer blob can be fetched from. Shared by the solver's threads."""

    def __init__(self, root):
        self.root = root
        self.steps: dict[str, object] = {}   # key -> LayerRecord | None
        self.created: dict[str, str] = {}  # layer digest -> when its step first made it
        self._origins: dict[str, object] = {}  # layer digest -> origin
        self._pending: dict[str, set[str]] = {}  # layer digest -> keys hit, not yet indexed
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self.fetched: list[str] = []  # layer digests downloaded, in order
        self._clients: list = []
        self._verified: set[tuple[str, str]] = set()  # (digest, diff_id) checked

    def add(self, table: dict, origin, created: dict | None = None) -> int:
        """Merge {key -> LayerRecord | None} whose layers `origin` serves
        (`created`: layer digest -> the time its step made it, where the source says)."""
        for digest, when in (created or {}).items():
            self.created.setdefault(digest, when)
        n = 0
        for key, layer in table.items():
            if key in self.steps:
                continue
            self.steps[key] = layer
            n += 1
            if layer is not None:
                self._origins.setdefault(layer.digest, origin)
        return n

    def __len__(self) -> int:
        return len(self.steps)

    def lookup(self, key: str) -> tuple[bool, object]:
        """(hit, layer). A hit is written into the local index now if its blob is there
        (or it added no layer), else once `ensure` has fetched the blob."""
        if key not in self.steps:
            return False, None
        layer = self.steps[key]
        if layer is not None and self.root.blobs.has(layer.digest) \
                and not self._diff_id_ok(layer):
            return False, None  # a record that lies about its layer: run the step
        if layer is None or self.root.blobs.has(layer.digest):
            self._index(key, layer)
        else:
            with self._lock:
                self._pending.setdefault(layer.digest, set()).add(key)
        return True, layer

    def can_fetch(self, digest: str) -> bool:
        return digest in self._origins

    def ensure(self, layers: Iterable) -> None:
        """Make every blob of `layers` present, fetching the imported ones that are not.
        Blobs this cache does not know are left alone (the caller's own layers)."""
        for layer in layers:
            if layer.digest not in self._origins:
                continue
            with self._lock:
                lock = self._fetching.setdefault(layer.digest, threading.Lock())
            with lock:  # two steps needing one layer download it once
                if not self.root.blobs.has(layer.digest):
                    self._origins[layer.digest].fetch(self.root, layer)
                    with self._lock:
                        self.fetched.append(layer.digest)
                if not self._diff_id_ok(layer):
                    raise PybuildError(
                        f"imported cache: layer {layer.digest} is not the diff_id "
                        f"{layer.diff_id} its record claims (a corrupt or forged cache)")
            with self._lock:
                keys = self._pending.pop(layer.digest, set())
            for key in keys:
                self._index(key, layer)

    def _diff_id_ok(self, layer) -> bool:
        """Whether the stored blob uncompresses to the diff_id the record claims: image
        configs and the snapshot store (keyed by diff_id) trust it, blob digests do not
        cover it."""
        if (layer.digest, layer.diff_id) in self._verified:
            return True
        from pybuild.image.compression import diff_id_of

        with self.root.blobs.open(layer.digest) as f:
            ok = diff_id_of(f) == layer.diff_id
        if ok:
            with self._lock:
                self._verified.add((layer.digest, layer.diff_id))
        return ok

    def _index(self, key: str, layer) -> None:
        from pybuild.solver import put_step_record

        put_step_record(self.root.index, key, layer,
                        self.created.get(layer.digest) if layer is not None else None)

    def keep_client(self, client) -> None:
        self._clients.append(client)

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


class LazyLayerRoot:
    """The store root as a solver with an imported cache sees it: the same store, but
    unpacking a layer chain first fetches the imported layers it lacks."""

    def __init__(self, root, imported: ImportedCache):
        self._root = root
        self._imported = imported

    def __getattr__(self, name: str):
        return getattr(self._root, name)

    def layer_dirs(self, layers) -> list[str]:
        self._imported.ensure(layers)
        return self._root.layer_dirs(layers)


def load_imports(root, specs: Sequence[CacheSpec], *, insecure: Sequence[str] = (),
                 warn: Callable[[str], None] = lambda s: None) -> ImportedCache:
    """Fetch the records (never the layers) of every `--cache-from` source. A source
    that cannot be read is a warning, as in BuildKit: the build goes on without it."""
    imported = ImportedCache(root)
    for spec in specs:
        try:
            if spec.type == "local":
                n = imported.add(*_read_layout(spec))
            else:
                n = imported.add(*_read_registry(spec, insecure, imported))
        except (PybuildError, CacheFormatError, OSError) as e:  # registry, layout, format
            warn(f"WARNING: importing cache from {spec.ref or spec.path} failed: {e}")
            continue
        warn(f"importing cache from {spec.ref or spec.path}: {n} steps")
    return imported


def _layer_record(layer: CacheLayer):
    from pybuild.image.types import LayerRecord

    return LayerRecord(layer.digest, layer.diff_id, layer.size, layer.media_type)


def _table(config: CacheConfig, manifest) -> tuple[dict, dict]:
    """The config's records and its layers' creation times, once its layers are checked
    against the manifest's."""
    listed = {(d.digest, d.size) for d in manifest.layers}
    for layer in config.layers:
        if (layer.digest, layer.size) not in listed:
            raise CacheFormatError(f"the cache config names layer {layer.digest}, which its "
                                   "manifest does not list")
    times = {layer.digest: layer.created for layer in config.layers if layer.created}
    return ({k: (_layer_record(v) if v is not None else None)
             for k, v in config.table().items()}, times)


def _read_registry(spec: CacheSpec, insecure: Sequence[str], imported: ImportedCache):
    from pybuild.image import mediatypes as mt
    from pybuild.image.types import ImageConfigFile, Index, Manifest, Platform
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.pull import choose_platform, fetch_manifest
    from pybuild.registry.reference import parse_ref

    ref = parse_ref(spec.ref)
    client = RegistryClient(ref.domain, insecure=insecure)
    imported.keep_client(client)  # lazy fetches use it later in the build
    fetched = fetch_manifest(client, ref)
    if fetched.media_type in mt.INDEXES:  # an inline cache in a multi-platform image
        desc = choose_platform(Index.from_json(fetched.data), Platform.host(), spec.ref)
        fetched = fetch_manifest(client, ref, desc.digest)
    manifest = Manifest.from_json(fetched.data)
    origin = _RegistryOrigin(client, ref.path)
    config_bytes = origin.read_small(manifest.config)
    if manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE:
        table, times = _table(CacheConfig.from_json(config_bytes), manifest)
        return table, origin, times
    if manifest.config.media_type not in mt.CONFIGS:
        raise CacheFormatError(f"{spec.ref} is neither a pybuild cache nor an image "
                               f"(config type {manifest.config.media_type})")
    config = ImageConfigFile.from_json(config_bytes)
    text = dict(config.config.labels).get(INLINE_LABEL)
    if not text:
        raise CacheFormatError(f"{spec.ref} is an image without an inline cache (build it "
                               "with --cache-to type=inline)")
    if len(config.diff_ids) != len(manifest.layers):
        raise CacheFormatError(f"{spec.ref}: its config and manifest disagree on the layers")
    from pybuild.image.types import LayerRecord

    layers = [LayerRecord(d.digest, diff_id, d.size, d.media_type)
              for d, diff_id in zip(manifest.layers, config.diff_ids)]
    table = parse_inline(text, [layer.digest for layer in layers])
    # the image's history says when each layer was made: lines that made no layer skipped
    made = [h.created for h in config.history if not h.empty_layer]
    times = {layer.digest: when for layer, when in zip(layers, made) if when}
    return {k: (layers[i] if i is not None else None) for k, i in table.items()}, origin, times


def _read_layout(spec: CacheSpec):
    import json

    from pybuild.image.layout import INDEX_FILE, ImageArchiveError, blob_name
    from pybuild.image.types import Index, Manifest

    if not os.path.isdir(spec.path):
        raise ImageArchiveError(f"{spec.path}: no such directory")
    origin = _LayoutOrigin(spec.path)
    with origin.src.open(INDEX_FILE) as f:
        try:
            index = Index.from_json(f.read())
        except (ValueError, json.JSONDecodeError) as e:
            raise ImageArchiveError(f"{spec.path}/{INDEX_FILE}: {e}") from None
    desc = _named(index, spec.tag)
    if desc is None:
        raise ImageArchiveError(f"{spec.path} has no cache named {spec.tag!r}")
    manifest = Manifest.from_json(origin.read_small(desc))
    if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE:
        raise CacheFormatError(f"{spec.path}:{spec.tag} is not a pybuild cache")
    table, times = _table(CacheConfig.from_json(origin.read_small(manifest.config)), manifest)
    # a directory copied in part: a record whose blob is not there would be a hit that
    # fails the build when its layer is needed; without it, the step just runs
    table = {k: layer for k, layer in table.items()
             if layer is None or origin.src.has(blob_name(layer.digest))}
    return table, origin, times


def _named(index, tag: str):
    from pybuild.image import mediatypes as mt

    for d in index.manifests:
        if d.annotation(mt.ANNOTATION_REF_NAME) == tag:
            return d
    return None


# --------------------------------------------------------------------------- export


def step_records(target: graph.ImageTarget, states: dict, mode: str) -> dict:
    """{cache key -> LayerRecord | None} of the steps to export. mode=min: the steps
    whose layers make the result image (its stage's chain above the base); mode=max:
    every step the build solved, other stages included."""
    if mode == "max":
        ops = [op for op in target.root.walk() if _is_step(op)]
    else:
        ops = [op for op in _result_chain(target.root) if _is_step(op)]
    out = {}
    for op in ops:
        state = states.get(op.digest)
        if state is not None:
            out[state.cache_key] = state.layer
    return out


def layer_times(states: dict) -> dict:
    """layer digest -> when its step first made it, for the layers the solver knows it of."""
    return {s.layer.digest: s.created for s in states.values() if s.layer and s.created}


def _is_step(op: graph.Op) -> bool:
    # sources that are not looked up by key (base images, scratch, the context) have no
    # record to share: FROM resolves the base itself; a Merge runs nothing (its linked
    # copies are the steps)
    return not isinstance(op, (graph.ImageSource, graph.Scratch, graph.LocalSource,
                               graph.Merge))


def _result_chain(op: graph.Op | None):
    """The ops whose layers make a state: down the `root` chain, and into the linked
    copies a Merge stacks on it (COPY --link)."""
    while op is not None:
        yield op
        if isinstance(op, graph.Merge):
            for upper in op.upper:
                yield from _result_chain(upper)
        op = getattr(op, "root", None)


def inline_cache(target: graph.ImageTarget, states: dict) -> str:
    """The inline cache (label value) of the result image: its chain's steps, each
    naming its layer by index in the image's layer list."""
    final = [layer.digest for layer in states[target.root.digest].layers]
    records = {}
    for op in _result_chain(target.root):
        state = states.get(op.digest)
        if _is_step(op) and state is not None:
            # by digest, not chain length: a linked copy's own chain starts at scratch
            records[state.cache_key] = final.index(state.layer.digest) if state.layer else None
    return make_inline(records, final)


def export_cache(root, spec: CacheSpec, records: dict, imported: ImportedCache | None, *,
                 insecure: Sequence[str] = (), created: dict | None = None) -> str:
    """Write `records` ({key -> LayerRecord | None}) as a registry or local cache.
    `created`: layer digest -> when its step made it. Returns where it went."""
    created = created or {}
    from pybuild.image import mediatypes as mt
    from pybuild.image.types import Descriptor, Manifest

    config = make_cache_config(
        {k: (CacheLayer(v.digest, v.diff_id, v.size, v.media_type, created.get(v.digest))
             if v else None)
         for k, v in records.items()}, spec.mode)
    config_bytes = config.to_json()
    config_digest = root.blobs.put_bytes(config_bytes)
    layers = [_layer_record(layer) for layer in config.layers]
    manifest = Manifest(Descriptor(CACHE_CONFIG_MEDIA_TYPE, config_digest, len(config_bytes)),
                        tuple(layer.descriptor() for layer in layers),
                        media_type=mt.OCI_MANIFEST)
    if spec.type == "registry":
        return _push_cache(root, spec, manifest, layers, imported, insecure)
    return _write_layout(root, spec, manifest, layers, imported)


def _push_cache(root, spec: CacheSpec, manifest, layers: list, imported, insecure) -> str:
    from concurrent.futures import ThreadPoolExecutor

    from pybuild.image import mediatypes as mt
    from pybuild.registry.client import RegistryClient
    from pybuild.registry.pull import note_blob_source
    from pybuild.registry.push import Pusher
    from pybuild.registry.reference import parse_ref

    ref = parse_ref(spec.ref)
    with RegistryClient(ref.domain, insecure=insecure) as client:
        pusher = Pusher(root, client, ref)

        def one(layer) -> None:
            if not root.blobs.has(layer.digest):
                # an imported layer never downloaded: the destination may hold it already
                # (--cache-from and --cache-to the same ref); only if not, fetch it now
                r = client.request("HEAD", f"/v2/{ref.path}/blobs/{layer.digest}",
                                   pusher.scope, ok=(200, 404))
                if r.status_code == 200:
                    return
                _ensure(root, layer, imported)
            pusher.push_blob(layer.descriptor())

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, layers))
        pusher.push_blob(manifest.config)
        data = manifest.to_json()
        pusher.put_manifest(data, mt.OCI_MANIFEST, ref.tag or "latest")
        for layer in layers:
            if root.blobs.has(layer.digest):
                note_blob_source(root.index, layer.digest, pusher.repository)
    return str(ref)


def _ensure(root, layer, imported) -> None:
    if imported is not None:
        imported.ensure([layer])
    if not root.blobs.has(layer.digest):
        raise CacheExportError(f"cannot export the cache: layer {layer.digest} is not in the "
                               "store (was it pruned during the build?)")


def _write_layout(root, spec: CacheSpec, manifest, layers: list, imported) -> str:
    """An OCI image layout in `spec.path`: blobs added (existing ones kept), the cache
    manifest named `spec.tag` in index.json (other names kept), index.json replaced
    last, atomically, so a reader never sees it name a missing blob."""
    import json
    import shutil

    from cache.atomicfile import write_atomically
    from pybuild.image import mediatypes as mt
    from pybuild.image.layout import INDEX_FILE, OCI_LAYOUT_FILE, blob_name, layout_file
    from pybuild.image.types import Descriptor, Index

    dest = os.path.abspath(spec.path)
    blob_dir = os.path.join(dest, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    data = manifest.to_json()
    digest = root.blobs.put_bytes(data)
    for d in [layer.digest for layer in layers] + [manifest.config.digest, digest]:
        target = os.path.join(dest, blob_name(d))
        if os.path.exists(target):
            continue
        layer = next((x for x in layers if x.digest == d), None)
        if layer is not None:
            _ensure(root, layer, imported)
        tmp = target + ".tmp"
        shutil.copyfile(root.blobs.path(d), tmp)
        os.replace(tmp, target)
    entries = []
    index_path = os.path.join(dest, INDEX_FILE)
    if os.path.exists(index_path):
        with open(index_path, "rb") as f:
            try:
                entries = [d for d in Index.from_json(f.read()).manifests
                           if d.annotation(mt.ANNOTATION_REF_NAME) != spec.tag]
            except (ValueError, json.JSONDecodeError):
                entries = []  # not ours to repair: replaced by a fresh index
    entry = Descriptor(mt.OCI_MANIFEST, digest, len(data)).with_annotations(
        **{mt.ANNOTATION_REF_NAME: spec.tag})
    for name, body in ((OCI_LAYOUT_FILE, layout_file()),
                       (INDEX_FILE, Index(tuple(entries + [entry])).to_json())):
        write_atomically(os.path.join(dest, name), body)
    return dest


# --------------------------------------------------------------------------- one build


class BuildCaches:
    """What one build does with `--cache-from` and `--cache-to`, in the order the build
    needs it (api.build calls these few methods)."""

    def __init__(self, root, cache_to: Iterable = (), cache_from: Iterable = (), *,
                 insecure: Sequence[str] = ()):
        # parsed before anything runs: a typo fails the build at once
        self.to = parse_specs(cache_to, "to")
        self.sources = parse_specs(cache_from, "from")
        self.root = root
        self.insecure = tuple(insecure)
        self.imported: ImportedCache | None = None

    def start(self, info: Callable[[str], None]) -> object:
        """Read the records of every source; the store root the solver should use."""
        if not self.sources:
            return self.root
        self.imported = load_imports(self.root, self.sources, insecure=self.insecure,
                                     warn=info)
        return LazyLayerRoot(self.root, self.imported)

    def image_config(self, config_file, target: graph.ImageTarget, states: dict, layers):
        """Before the image is committed: its layers fetched (a warm build from an
        imported cache has only their records), and the inline cache added when asked."""
        from dataclasses import replace

        if self.imported is not None:
            self.imported.ensure(layers)
        if any(s.type == "inline" for s in self.to):
            labels = config_file.config.with_label(INLINE_LABEL, inline_cache(target, states))
            config_file = replace(config_file, config=labels)
        return config_file

    def export(self, target: graph.ImageTarget, states: dict,
               info: Callable[[str], None]) -> list[str]:
        out = []
        for spec in self.to:
            if spec.type == "inline":
                continue
            records = step_records(target, states, spec.mode)
            try:
                out.append(export_cache(self.root, spec, records, self.imported,
                                        insecure=self.insecure, created=layer_times(states)))
            except (PybuildError, OSError) as e:
                if not spec.ignore_error:
                    raise CacheExportError(f"exporting the cache to {spec.ref or spec.path} "
                                           f"failed: {e}") from None
                info(f"WARNING: exporting the cache to {spec.ref or spec.path} failed: {e}")
                continue
            info(f"exported cache ({len(records)} steps, mode={spec.mode}) to {out[-1]}")
        return out

    def close(self) -> None:
        if self.imported is not None:
            self.imported.close()
