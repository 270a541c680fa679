"""Store housekeeping: what the store holds (`pybuild du`) and taking back space (`pybuild prune`).

What is kept, always: every blob of a tagged image (manifest, config, layers) and the
unpacked snapshots of those layers, so tagged images stay runnable (and a running
container never loses a lowerdir), and whatever records of kinds this module does not
know about point at (registry metadata, say: their values are scanned for digests).

What is build cache, and prunable (least recently used first):
- "step" records (a build step's layer), unless their layer belongs to a tagged image
  (with `all_cache` those go too: the image keeps its blobs, the cache forgets the step);
- records of untagged images, and of layer conversions and HTTP downloads;
- snapshots of layers no kept record needs; cache mounts (`RUN --mount=type=cache`) with
  `all_cache` or an `until` filter;
- blobs nothing kept refers to; leftovers of interrupted builds (work and temp dirs).

Concurrency: `prune` holds the whole-store lock exclusively while it plans and deletes;
every build holds it shared for its whole run, so a prune waits for running builds (and
a build started meanwhile waits for the prune): a build never loses a blob or snapshot
it is using, and a pruned store is consistent for the next build. Commands that write
without that lock (`load`, `import`, `pull`, `run` unpacking layers) are covered by a
grace period: blobs, snapshots and temp files younger than `grace` seconds are kept.
Known gap: a container running an *untagged* image can lose its unpacked layers to a
prune once they are older than the grace period (tagged images' layers are never pruned).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field

from pybuild.errors import PybuildError

STEP_KIND = "step"
IMAGE_KIND = "image"
SNAPSHOT_KIND = "snapshot"
EXPLAIN_KIND = "explain"
# caches whose records may go (their blobs can be made again)
CACHE_KINDS = frozenset({STEP_KIND, "http", "layer-blobs", "layer-rewrite"})
CACHE_MOUNTS_DIR = "cachemounts"
GRACE_SECONDS = 60.0

_DIGEST_IN_TEXT = re.compile(r"sha256:[0-9a-f]{64}")


class PruneError(PybuildError):
    pass


@dataclass(frozen=True)
class UsageRow:
    """One kind of thing in the store: how many, their size and what a prune would free
    (bytes)."""

    kind: str  # blobs | snapshots | cache mounts | build records
    count: int
    size: int
    reclaimable: int


@dataclass(frozen=True)
class DiskUsage:
    """The store's disk usage, one row per kind, with totals."""

    rows: tuple[UsageRow, ...]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.rows)

    @property
    def reclaimable(self) -> int:
        return sum(r.reclaimable for r in self.rows)


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed, by kind, and the bytes it freed."""

    records: int
    blobs: int
    snapshots: int
    cache_mounts: int
    freed: int  # bytes


@dataclass
class _Candidate:
    """One prunable thing: records, or a cache mount dir, with what it holds."""

    last_used: float
    records: list = field(default_factory=list)  # [(kind, key)]
    blobs: set = field(default_factory=set)
    diff_ids: set = field(default_factory=set)
    path: str = ""  # a cache mount dir


@dataclass
class _Plan:
    """What a prune would remove (and `disk_usage` counts as reclaimable): records, blobs,
    snapshots, cache mount dirs and leftovers of interrupted builds."""

    records: list = field(default_factory=list)
    blobs: dict = field(default_factory=dict)  # digest -> size
    snapshots: dict = field(default_factory=dict)  # path -> (diff_id or None, size)
    cache_mounts: dict = field(default_factory=dict)  # path -> size
    leftovers: list = field(default_factory=list)  # work/temp dirs of interrupted builds

    @property
    def freed(self) -> int:
        return (sum(self.blobs.values()) + sum(s for _, s in self.snapshots.values())
                + sum(self.cache_mounts.values()))


# --------------------------------------------------------------------------- parsing


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
               "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2,
               "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1.5g`, `1000` (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise PruneError(f"invalid size {text!r}: use a number with an optional unit "
                         "(B, kB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Go-style durations (`24h`, `1h30m`, `90s`), plus `d` for days -> seconds."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", text or "")
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise PruneError(f"invalid duration {text!r}: use e.g. 24h, 90m, 1h30m, 7d")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_filters(filters) -> float | None:
    """`until=DURATION` filters -> the age (seconds) an item must exceed, or None."""
    until = None
    for f in filters or ():
        key, sep, value = f.partition("=")
        if not sep or key.strip() != "until":
            raise PruneError(f"unsupported filter {f!r}: only until=DURATION is supported")
        until = parse_duration(value.strip())
    return until


# --------------------------------------------------------------------------- usage


def disk_usage(root, *, grace: float = GRACE_SECONDS) -> DiskUsage:
    """Sizes of what the store holds, and what a plain `prune` would free."""
    plan, totals = _make_plan(root, all_cache=False, until=None, keep_storage=None,
                              grace=grace)
    records = sum(1 for _ in root.index.records())
    rows = (
        UsageRow("blobs", totals["blobs"][0], totals["blobs"][1], sum(plan.blobs.values())),
        UsageRow("snapshots", totals["snapshots"][0], totals["snapshots"][1],
                 sum(s for _, s in plan.snapshots.values())),
        UsageRow("cache mounts", totals["cache mounts"][0], totals["cache mounts"][1],
                 sum(plan.cache_mounts.values())),
        UsageRow("build records", records, 0, 0),
    )
    return DiskUsage(rows)


def prune(root, *, all_cache: bool = False, keep_storage: int | None = None,
          until: float | None = None, wait=None,
          grace: float = GRACE_SECONDS) -> PruneResult:
    """Remove build cache (see the module docstring). `wait()` is called when running
    builds hold the store and the prune has to wait for them."""
    import fcntl

    lock_path = os.path.join(root.path, "lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is not None:
                wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        plan, _ = _make_plan(root, all_cache=all_cache, until=until,
                             keep_storage=keep_storage, grace=grace)
        # the next build runs what the cache no longer has, as it would without a memo
        from pybuild.buildmemo import forget
        forget(root.path)
        return _apply(root, plan)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- planning


def _make_plan(root, *, all_cache: bool, until: float | None, keep_storage: int | None,
               grace: float):
    now = time.time()
    cutoff = now - until if until is not None else float("inf")
    settled = now - grace  # files and snapshots younger than this may be in use
    index = root.index
    blobs = root.blobs

    image_records = {r.key: r for r in index.records(IMAGE_KIND)}
    tagged = {t.digest for t in index.tags()}
    expand_cache: dict[str, tuple[set, set]] = {}

    def expand(digest: str) -> tuple[set, set]:
        """An image manifest's blobs and layer diff_ids (just the digest otherwise)."""
        if digest not in expand_cache:
            out_b, out_d = {digest}, set()
            if digest in tagged or digest in image_records:
                try:
                    image = root.images.get(digest)
                    out_b.add(image.config_digest)
                    for layer in image.layers:
                        out_b.add(layer.digest)
                        out_d.add(layer.diff_id)
                except Exception:  # a damaged image: keep what it names, nothing more
                    pass
            expand_cache[digest] = (out_b, out_d)
        return expand_cache[digest]

    kept_blobs: set[str] = set()
    kept_diffs: set[str] = set()
    for d in tagged:
        b, ds = expand(d)
        kept_blobs |= b
        kept_diffs |= ds
    pinned_blobs = set(kept_blobs)

    candidates: list[_Candidate] = []
    snapshot_recs = []
    for rec in index.records():
        if rec.kind == SNAPSHOT_KIND:
            snapshot_recs.append(rec)
            continue
        refs, diffs = _refs(rec, expand)
        old = rec.last_used < cutoff
        if rec.kind == IMAGE_KIND:
            # (an image being loaded is tagged just after it is registered: grace)
            prunable = rec.key not in tagged and rec.last_used < min(cutoff, settled)
        elif rec.kind == STEP_KIND:
            prunable = old and (all_cache or not (refs & pinned_blobs))
        elif rec.kind in CACHE_KINDS:
            prunable = old
        elif rec.kind == EXPLAIN_KIND:
            prunable = all_cache and old
        else:
            prunable = False  # a kind we don't know: keep it and what it points at
        if prunable:
            candidates.append(_Candidate(rec.last_used, [(rec.kind, rec.key)], refs, diffs))
        else:
            kept_blobs |= refs
            kept_diffs |= diffs

    cm_dir = os.path.join(root.path, CACHE_MOUNTS_DIR)
    cache_mounts = _list_dirs(cm_dir)
    cm_sizes = {p: _tree_size(p) for p in cache_mounts}
    for p in cache_mounts:
        mtime = _mtime(p)
        if (all_cache or until is not None or keep_storage is not None) and mtime < cutoff:
            candidates.append(_Candidate(mtime, path=p))

    blob_sizes = {}
    for d in blobs.digests():
        try:
            blob_sizes[d] = os.lstat(blobs.path(d)).st_size
        except FileNotFoundError:
            continue
    snap_by_diff = {}
    for rec in snapshot_recs:
        path = os.path.join(root.path, rec.value.get("dir", ""))
        snap_by_diff[rec.key] = (path, rec.last_used)
    referenced_dirs = {os.path.realpath(p) for p, _ in snap_by_diff.values()}
    snap_sizes = {p: _tree_size(p) for p, _ in snap_by_diff.values() if os.path.isdir(p)}
    orphan_snaps = [p for p in _list_dirs(os.path.join(root.path, "s"))
                    if os.path.realpath(p) not in referenced_dirs]
    for p in orphan_snaps:
        snap_sizes[p] = _tree_size(p)

    totals = {"blobs": (len(blob_sizes), sum(blob_sizes.values())),
              "snapshots": (len(snap_sizes), sum(snap_sizes.values())),
              "cache mounts": (len(cm_sizes), sum(cm_sizes.values()))}

    # choose which candidates go: all of them, or least recently used first until the
    # store fits in keep_storage. Reference counts make each removal O(its references).
    candidates.sort(key=lambda c: c.last_used)
    blob_refs: dict[str, int] = {}
    diff_refs: dict[str, int] = {}
    for c in candidates:
        for d in c.blobs:
            blob_refs[d] = blob_refs.get(d, 0) + 1
        for d in c.diff_ids:
            diff_refs[d] = diff_refs.get(d, 0) + 1
    snap_of_diff = {diff_id: path for diff_id, (path, used) in snap_by_diff.items()
                    if used < min(cutoff, settled) and path in snap_sizes}
    orphan_snaps = [p for p in orphan_snaps if _mtime(p) < settled]

    # work units belong to builds, which all wait for us: any left is an orphan; temp
    # files of unlocked writers (load, import, pull) are spared while they are young
    plan = _Plan(leftovers=_list_dirs(os.path.join(root.path, "w"))
                 + [p for p in _list_entries(os.path.join(root.path, "t"))
                    + _list_entries(blobs.tmp_dir) if _mtime(p) < settled])

    def free_blob(d: str) -> None:
        if d in blob_sizes and d not in kept_blobs and not blob_refs.get(d) and \
                _mtime(blobs.path(d)) < min(cutoff, settled):
            plan.blobs[d] = blob_sizes[d]

    def free_diff(diff_id: str) -> None:
        path = snap_of_diff.get(diff_id)
        if path is not None and diff_id not in kept_diffs and not diff_refs.get(diff_id):
            plan.snapshots[path] = (diff_id, snap_sizes[path])

    # garbage first: what nothing refers to at all
    for d in blob_sizes:
        free_blob(d)
    for diff_id in snap_of_diff:
        free_diff(diff_id)
    for path in orphan_snaps:
        plan.snapshots[path] = (None, snap_sizes[path])

    total = sum(t[1] for t in totals.values())
    for c in candidates:
        if keep_storage is not None and total - plan.freed <= keep_storage:
            break
        plan.records.extend(c.records)
        if c.path:
            plan.cache_mounts[c.path] = cm_sizes.get(c.path, 0)
        for d in c.blobs:
            blob_refs[d] -= 1
            free_blob(d)
        for d in c.diff_ids:
            diff_refs[d] -= 1
            free_diff(d)
    result = plan
    return result, totals


def _refs(rec, expand) -> tuple[set, set]:
    """Blob digests and layer diff_ids a record points at."""
    blobs: set[str] = set()
    diffs: set[str] = set()
    if rec.kind == IMAGE_KIND:
        return expand(rec.key)
    if rec.kind == STEP_KIND:
        layer = (rec.value or {}).get("layer") or {}
        if layer.get("digest"):
            blobs.add(layer["digest"])
        if layer.get("diff_id"):
            diffs.add(layer["diff_id"])
        return blobs, diffs
    if rec.kind == "layer-blobs":  # key: diff_id; value: {variant: {digest, size}}
        diffs.add(rec.key)
    for d in _DIGEST_IN_TEXT.findall(json.dumps(rec.value)):
        b, ds = expand(d)
        blobs |= b
        diffs |= ds
    return blobs, diffs


# --------------------------------------------------------------------------- applying


def _apply(root, plan: _Plan) -> PruneResult:
    index = root.index
    for kind, key in plan.records:
        index.delete(kind, key)
    for digest in plan.blobs:
        root.blobs.delete(digest)
    for path, (diff_id, _size) in plan.snapshots.items():
        if diff_id is not None:
            index.delete(SNAPSHOT_KIND, diff_id)
        shutil.rmtree(path, ignore_errors=True)
    for path in plan.cache_mounts:
        shutil.rmtree(path, ignore_errors=True)
    for path in plan.leftovers:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return PruneResult(len(plan.records), len(plan.blobs), len(plan.snapshots),
                       len(plan.cache_mounts), plan.freed)


# --------------------------------------------------------------------------- helpers


def _list_dirs(parent: str) -> list[str]:
    try:
        with os.scandir(parent) as it:
            return sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def _list_entries(parent: str) -> list[str]:
    try:
        with os.scandir(parent) as it:
            return sorted(e.path for e in it)
    except FileNotFoundError:
        return []


def _mtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _tree_size(path: str) -> int:
    """Bytes of the regular files under `path`, hard links counted once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total

