"""The whole-build memo: a rebuild with nothing changed, served without building.

Like ccache's direct mode. After a successful build into the local store, `Recorder`
keeps, under a key made of everything the build was asked for (Dockerfile text, the
candidate .dockerignore files, build args, target, network, SOURCE_DATE_EPOCH, and a
signature of pybuild's own source files), the image it made and what it depended on:

- each base image: the tag it was found under and the manifest digest that tag named;
- the build context: every directory the build could have looked into (the whole
  context minus directories .dockerignore hides for good), with its stat signature
  and a digest of its listing (names, types, symlink targets), taken before the build
  ran; and every file the build's checksums read, with its stat signature and content
  digest (or link target);
- the blobs of the image (manifest, config, layers) and of its base images;
- the progress lines to show again (every step as CACHED, the warnings).

`serve()` (called by the CLI before anything heavy is imported) computes the key and
checks all of that: a directory whose stat changed is listed again, a file whose stat
changed is hashed again (a touched file is still a hit), base tags must name the same
manifests, and every blob must be there. Then it sets the tags and prints what the
build printed. Any doubt is a miss, and a miss is the normal build: the memo can make
a build faster, never different. What it cannot see it does not serve: outputs other
than the local store, --push, --pull, --no-cache, secrets, ssh, remote (http/git)
sources, --check, --explain, a Dockerfile from stdin.

Entries changed less than RACY_NS before they were recorded are "racy" (a later change
within the same timestamp tick would look unchanged, git's racy-clean problem): they
are always re-hashed or re-listed.

Beside each memo lies its plan (`<key>.plan`): what the frontend made of the request
(the build graph, the warnings to show) and every image lookup that answer depended on.
When only the context changed, the memo misses but the plan still holds:
`Recorder.plan()` hands it to the build, which then skips checking and compiling the
Dockerfile, and the import of the whole frontend (lark included): ~33 ms of a 150 ms
edit-and-rebuild. It is kept with pickle, like the memo with marshal: the store is the
user's own, written by this code; a plan that does not load is a miss.
"""
from __future__ import annotations

import marshal
import os
import sys
import time

from cache.atomicfile import write_atomically
from cache.digest import digest_bytes

MEMO_VERSION = 4
MEMO_DIR = "memo"
PLAN_SUFFIX = ".plan"
RACY_NS = 2_000_000_000
# a context with more directories than this is not memoized: checking them all on every
# build would cost more than it saves (and recording them slows the normal build)
MAX_DIRS = 20_000
# set to 1 to never serve a build from the memo, nor take a plan from it (debugging,
# benchmarks of the full path, the tests' oracle); memos are still written
DISABLE_ENV = "PYBUILD_NO_BUILD_MEMO"

_PACKAGES = ("pybuild", "frontends", "cache")
# ends the summary line of a build served from the memo (plain progress)
HIT_NOTE = "from the build memo: nothing it read has changed"


# --------------------------------------------------------------------------- the key


def request_key(context: str, dockerfile_path: str | None, text: str,
                build_args, target: str | None, network: str) -> str | None:
    """The memo key of a build request (None: this request cannot be memoized). Every
    input that can change the image is in it; tags are not (they are set afterwards)."""
    candidates = ([dockerfile_path + ".dockerignore"] if dockerfile_path else []) + [
        os.path.join(context, ".dockerignore")]
    ignores = []
    for c in candidates:
        try:
            with open(c, "rb") as f:
                ignores.append(f.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            ignores.append(None)
        except OSError:
            return None  # unreadable: let the build say why
    value = (MEMO_VERSION, sys.version, context, dockerfile_path, text, tuple(ignores),
             tuple(sorted((build_args or {}).items())), target or "", network,
             os.environ.get("SOURCE_DATE_EPOCH"), _signature_of_this_process())
    return _hex_digest(repr(value))


_SIGNATURE: list = []


def _signature_of_this_process() -> str:
    """`_code_signature()` taken once: the code this process runs is the code it loaded
    (and a build asks for the key two or three times: ~1.5 ms each)."""
    if not _SIGNATURE:
        _SIGNATURE.append(_code_signature())
    return _SIGNATURE[0]


def _code_signature() -> str:
    """Size and mtime of every source file of pybuild, its frontends and cache: changing
    pybuild (an upgrade, a local edit) must not serve what the old code built."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    stack = [os.path.join(top, p) for p in _PACKAGES]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.name.endswith(".py"):
                        st = e.stat()
                        out.append((e.path, st.st_size, st.st_mtime_ns))
                    elif e.name != "__pycache__" and e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:  # gone, or unreadable: signed as absent (the build still runs)
            continue
    out.sort()
    return _hex_digest(repr(out))


def _hex_digest(text: str) -> str:
    return digest_bytes(text.encode("utf-8", "surrogateescape")).partition(":")[2]


def memo_path(store_path: str, key: str) -> str:
    return os.path.join(store_path, MEMO_DIR, key)


# --------------------------------------------------------------------------- entries


def _listing(path: str) -> str:
    """Digest of a directory's entries: names, types and symlink targets (what adding,
    removing, renaming or re-pointing an entry changes)."""
    items = []
    with os.scandir(path) as it:
        for e in it:  # the types come from readdir: no stat calls
            if e.is_file(follow_symlinks=False):
                items.append(e.name + "\0f")
            elif e.is_dir(follow_symlinks=False):
                items.append(e.name + "\0d")
            elif e.is_symlink():
                items.append(e.name + "\0l" + os.readlink(e.path))
            else:
                items.append(e.name + "\0o")
    items.sort()
    return _hex_digest(repr(items))


def _racy(st: os.stat_result, now_ns: int) -> bool:
    return now_ns - max(st.st_mtime_ns, st.st_ctime_ns) <= RACY_NS


def _dir_row(host: str, st: os.stat_result, now_ns: int) -> list:
    return [host, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns,
            st.st_ino, _listing(host), _racy(st, now_ns)]


def context_dirs(root: str, pruned) -> list:
    """Every directory of the context a build may look into (`pruned(rel)`: a directory
    .dockerignore hides with nothing re-included below it), as memo rows."""
    now = time.time_ns()
    rows = [_dir_row(root, os.lstat(root), now)]
    stack = [("", root)]
    while stack:
        rel, host = stack.pop()
        with os.scandir(host) as it:
            subdirs = [(f"{rel}/{e.name}" if rel else e.name, e.path)
                       for e in it if e.is_dir(follow_symlinks=False)]
        for sub_rel, sub_host in subdirs:
            if pruned(sub_rel):
                continue
            rows.append(_dir_row(sub_host, os.lstat(sub_host), now))
            stack.append((sub_rel, sub_host))
        if len(rows) > MAX_DIRS:
            raise _TooBig(root)
    return rows


# --------------------------------------------------------------------------- checking


class _Miss(Exception):
    pass


class _TooBig(Exception):
    pass


def _check_dirs(rows: list) -> bool:
    """Raise _Miss if a directory changed; True when a row's stat moved but its listing
    did not (the memo is worth rewriting)."""
    moved = False
    lstat = os.lstat
    for row in rows:
        host, mode, uid, gid, mtime, ctime, ino, listing, racy = row
        try:
            st = lstat(host)
        except OSError:
            raise _Miss(host) from None
        if st.st_mode != mode or st.st_uid != uid or st.st_gid != gid:
            raise _Miss(host)
        if racy or st.st_mtime_ns != mtime or st.st_ctime_ns != ctime or st.st_ino != ino:
            try:
                if _listing(host) != listing:
                    raise _Miss(host)
            except OSError:
                raise _Miss(host) from None
            row[4:7] = [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            row[8] = _racy(st, time.time_ns())
            moved = True
    return moved


def _check_files(memo: dict) -> bool:
    """Like _check_dirs for the files the build read: a changed stat means hash again.
    The loop over unchanged files is the whole cost of a warm check of a big context:
    one lstat and four compares each (ctime covers mode and owner changes)."""
    hosts, sigs = memo["file_hosts"], memo["file_sigs"]
    lstat = os.lstat
    changed = []
    try:
        for host, (ctime, mtime, ino, size) in zip(hosts, sigs):
            st = lstat(host)
            if (st.st_ctime_ns != ctime or st.st_mtime_ns != mtime or st.st_ino != ino
                    or st.st_size != size):
                changed.append(host)
    except OSError:
        raise _Miss("a file the build read is gone") from None
    racy = memo["file_racy"]
    if not changed and not racy:
        return False
    from cache.digest import entry_body  # the context checksum's own reading of an entry

    where = {h: i for i, h in enumerate(hosts)}
    now = time.time_ns()
    still_racy = []
    for i in sorted({where[h] for h in changed} | set(racy)):
        host = hosts[i]
        mode, uid, gid, body = memo["file_meta"][i]
        try:
            st = lstat(host)
            if st.st_mode != mode or st.st_uid != uid or st.st_gid != gid:
                raise _Miss(host)
            if entry_body(host, st) != body:
                raise _Miss(host)
            after = lstat(host)
        except OSError:
            raise _Miss(host) from None
        sig = (st.st_ctime_ns, st.st_mtime_ns, st.st_ino, st.st_size)
        if (after.st_ctime_ns, after.st_mtime_ns, after.st_ino, after.st_size) != sig:
            raise _Miss(host)  # changing while we read it
        sigs[i] = sig
        if _racy(st, now):
            still_racy.append(i)
    memo["file_racy"] = still_racy
    return True


def _blob_path(store_path: str, digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or "/" in hexpart:
        raise _Miss(digest)
    return os.path.join(store_path, "blobs", "sha256", hexpart)


def load(store_path: str, key: str) -> dict | None:
    try:
        with open(memo_path(store_path, key), "rb") as f:
            memo = marshal.loads(f.read())  # marshal.load(f) reads in tiny pieces: slow
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(memo, dict) or memo.get("v") != MEMO_VERSION:
        return None
    return memo


def _write(store_path: str, key: str, memo: dict) -> None:
    _write_file(memo_path(store_path, key), marshal.dumps(memo))


def _write_file(path: str, data: bytes) -> None:
    """Whole or not at all (cache/atomicfile.py); an error writes nothing: a memo is
    never needed for a build to succeed."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, data)
    except OSError:
        pass


def validate(store_path: str, key: str, tags) -> dict | None:
    """The memo of `key` if everything it depends on is as recorded, else None. Must be
    called with the store lock held shared (the caller sets tags while holding it)."""
    memo = load(store_path, key)
    if memo is None:
        return None
    try:
        if any(t not in memo["tags"] for t in tags):
            return None  # a tag name never normalized: the build knows how
        for digest in memo["blobs"]:
            if not os.path.isfile(_blob_path(store_path, digest)):
                return None
        moved = _check_dirs(memo["dirs"])
        moved = _check_files(memo) or moved
    except (_Miss, KeyError, TypeError, ValueError, IndexError):
        return None  # changed, or a memo of another shape: build
    memo["_moved"] = moved
    return memo


# --------------------------------------------------------------------------- serving


def cli_eligible(a) -> bool:
    """Whether the parsed `pybuild build` arguments are ones the memo can serve."""
    if os.environ.get(DISABLE_ENV) or a.file == "-":
        return False
    for flag in ("check", "explain", "no_cache", "pull", "push", "output", "secret", "ssh",
                 "no_cache_filter", "cache_to", "cache_from", "platform", "label",
                 "build_context", "iidfile", "metadata_file"):
        if getattr(a, flag, None):
            return False
    return True


def serve(a, build_args: dict) -> bool:
    """The CLI's fast path for `pybuild build`: True when the build was served from the
    memo (tags set, output printed), False to run the build."""
    started = time.monotonic()
    if not cli_eligible(a):
        return False
    from pybuild.storepath import default_root

    store_path = os.path.abspath(a.root or default_root())
    if not os.path.isdir(os.path.join(store_path, MEMO_DIR)):
        return False
    context = os.path.abspath(a.context)
    path = os.path.abspath(a.file or os.path.join(context, "Dockerfile"))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    key = request_key(context, path, text, build_args, a.target, a.network)
    if key is None:
        return False
    import fcntl
    import sqlite3

    try:
        fd = os.open(os.path.join(store_path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
    except OSError:
        return False  # the build will say what is wrong with the store
    try:
        # shared, as a build holds it: a prune cannot take the image's blobs meanwhile
        fcntl.flock(fd, fcntl.LOCK_SH)
        memo = validate(store_path, key, a.tag)
        if memo is None:
            return False
        # the tags table of cache/index.py (CacheIndex.get_tag / set_tag), spoken to
        # directly: importing the index module costs more than this whole check
        conn = sqlite3.connect(os.path.join(store_path, "index.db"), timeout=60,
                               isolation_level=None)
        try:
            for name, digest in memo["bases"]:
                row = conn.execute("SELECT digest FROM tags WHERE name=?", (name,)).fetchone()
                if row is None or row[0] != digest:
                    return False
            now = time.time()
            conn.execute("BEGIN")
            for t in a.tag:
                conn.execute(
                    "INSERT INTO tags(name, digest, created) VALUES (?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, "
                    "created=excluded.created", (memo["tags"][t], memo["image"], now))
            conn.executemany("UPDATE records SET last_used=? WHERE kind=? AND key=?",
                             [(now, kind, key) for kind, key in memo["records"]])
            conn.execute("COMMIT")
        finally:
            conn.close()
        if memo.pop("_moved"):  # still locked: a prune's forget() cannot be undone
            _write(store_path, key, memo)  # touched files: remember their new stat
    except (sqlite3.Error, OSError, KeyError, TypeError, ValueError):
        return False  # a store or memo not as expected: the build sorts it out
    finally:
        os.close(fd)
    _replay(memo, "quiet" if a.quiet else a.progress, started)
    if a.quiet:
        print(memo["image"])
    else:
        sys.stderr.write(f"image {memo['image']}\n")
        for t in a.tag:
            sys.stderr.write(f"naming to {t}\n")
    return True


def _replay(memo: dict, progress: str, started: float) -> None:
    """Show what the build showed: each step CACHED, its warnings, the summary line."""
    if progress == "quiet":
        return
    if progress == "plain" or (progress == "auto" and not sys.stderr.isatty()):
        # pybuild.progress.PlainView's lines, without importing it
        out, n = [], 0
        for kind, name in memo["events"]:
            if kind == "step":
                n += 1
                out.append(f"#{n} {name}\n#{n} CACHED\n")
            else:
                out.append(name + "\n")
        out.append(f"{n} steps: 0 run, {n} cached, {time.monotonic() - started:.2f}s "
                   f"({HIT_NOTE})\n")
        sys.stderr.write("".join(out))
        sys.stderr.flush()
        return
    from pybuild.progress import ProgressEvent, make_view

    view = make_view(progress)
    for i, (kind, name) in enumerate(memo["events"]):
        view(ProgressEvent("cached" if kind == "step" else "info",
                           f"memo-{i}" if kind == "step" else "", name))
    view.close()


# --------------------------------------------------------------------------- recording


class BuildPlan:
    """What the frontend made of a build request: the graph of the image to build, the
    warning lines to show, the build args nothing used. (A plain class, not a dataclass:
    this module is imported by the CLI's fast path, before dataclasses are.)"""

    __slots__ = ("target", "warnings", "unused_build_args")

    def __init__(self, target, warnings: tuple, unused_build_args: tuple):
        self.target = target
        self.warnings = tuple(warnings)
        self.unused_build_args = tuple(unused_build_args)


class Recorder:
    """Collects what a build depends on, and writes its memo when it succeeded."""

    def __init__(self, store_path: str, key: str, request: tuple):
        self.store_path = store_path
        self.key = key
        self.request = request  # the arguments of request_key, to see them unchanged
        self.bases: list = []  # (ref, platform, manifest digest, was it in the store already)
        self.checked: list = []  # (ref, manifest digest or None): the checks' last lookups
        self.events: list = []
        self.dirs: list | None = None
        self.ctx = None
        self.ok = True

    @classmethod
    def start(cls, store_path: str, context: str, dockerfile_path: str | None, text: str,
              build_args, target, network, *, eligible: bool) -> "Recorder | None":
        if not eligible or dockerfile_path is None:
            return None
        request = (context, os.path.abspath(dockerfile_path), text, dict(build_args or {}),
                   target, network)
        key = request_key(*request)
        return cls(store_path, key, request) if key else None

    def resolver(self, inner):
        """Wraps the FROM resolver to learn which base images the build used."""
        recorder = self

        class _Logged:
            def __getattr__(self, name):
                return getattr(inner, name)

            def resolve(self, ref, platform=None):
                try:
                    local = inner.root.images.lookup(ref) is not None
                except Exception:  # a bad reference: resolve() says what is wrong
                    local = False
                resolved = inner.resolve(ref, platform)
                recorder.bases.append((ref, platform, resolved.manifest_digest, local))
                return resolved

        return _Logged()

    def checks_resolver(self, inner):
        """Wraps the checks' image resolver (`pybuild.buildcheck.LocalImageResolver`) to
        learn what their warnings depended on; a new run of the checks starts over."""
        found = self.checked = []

        class _Logged:
            def resolve(self, ref, platform=None):
                try:
                    resolved = inner.resolve(ref, platform)
                except Exception:
                    found.append((ref, None))
                    raise
                found.append((ref, resolved.manifest_digest))
                return resolved

        return _Logged()

    def plan(self, store) -> BuildPlan | None:
        """The plan an earlier build with this request key left, if every image lookup it
        depended on answers the same now (see the module doc); else None."""
        if os.environ.get(DISABLE_ENV):
            return None
        try:
            with open(memo_path(self.store_path, self.key) + PLAN_SUFFIX, "rb") as f:
                plan, bases, checked = _pickle().loads(f.read())
        except Exception:  # absent, or unreadable in any way: compile as usual
            return None
        from pybuild.image.types import Platform
        from pybuild.registry.resolve import lookup_local

        try:
            for ref, platform, digest, _ in bases:  # as StoreResolver looks (never --pull)
                want = Platform.parse(platform) if platform else Platform.host()
                image = lookup_local(store, ref, want)
                if image is None or image.manifest_digest != digest:
                    return None
            for ref, digest in checked:  # as LocalImageResolver looks
                image = store.images.lookup(ref)
                if (image.manifest_digest if image is not None else None) != digest:
                    return None
        except Exception:  # a reference that no longer parses, a store in a bad state
            return None
        self.bases = [(ref, platform, digest, True) for ref, platform, digest, _ in bases]
        self.checked = list(checked)
        return plan

    def sink(self, inner):
        events = self.events

        def sink(event):
            if event.kind in ("cached", "start"):
                events.append(("step", event.name))
            elif event.kind == "info":
                events.append(("info", event.name))
            inner(event)

        return sink

    def watch_context(self, ctx) -> None:
        """Before the build reads the context: its directories now, its files as read."""
        self.ctx = ctx
        ctx.reads = []
        # before any read: a file is racy relative to when it was read, not to when the
        # build ended (a change in the read's timestamp tick must not look unchanged)
        self.started_ns = time.time_ns()
        flt = ctx.ignore_filter
        try:
            self.dirs = context_dirs(ctx.root, lambda rel: flt(rel) and flt.prune_dir(rel))
        except (OSError, _TooBig):
            self.ok = False

    def save(self, store, plan: BuildPlan, image, tags, steps=(), recheck=None) -> bool:
        """Write the memo of a successful build; False when it cannot be memoized (never
        an error: the build itself succeeded)."""
        from pybuild.errors import PybuildError

        try:
            return self._save(store, plan, image, tags, steps, recheck)
        except (PybuildError, OSError, ValueError):
            return False

    def _save(self, store, plan, image, tags, steps, recheck) -> bool:
        from pybuild import graph
        from pybuild.image.store import IMAGE_RECORD, InvalidReference, parse_ref
        from pybuild.solver import STEP_RECORD

        if not self.ok or self.ctx is None or self.dirs is None:
            return False
        if request_key(*self.request) != self.key:
            return False  # the Dockerfile or an ignore file changed while we built
        for op in plan.target.root.walk():
            if isinstance(op, (graph.HttpSource, graph.GitSource)):
                return False
        index = store.index
        probes, blobs = [], [image.manifest_digest, image.config_digest]
        blobs += [layer.digest for layer in image.layers]
        if not all(was_local for _, _, _, was_local in self.bases):
            # pulled during this build, after its checks ran without the base's config:
            # memoize only if the checks say the same now (what the next build would show)
            if recheck is None or tuple(recheck()) != plan.warnings:
                return False
        for ref, _, digest, _ in self.bases:
            try:
                parsed = parse_ref(ref)
            except InvalidReference:
                return False
            if parsed.digest:
                if parsed.digest != digest:
                    return False  # an index digest resolved to one of its manifests
            elif index.get_tag(str(parsed)) == digest:
                probes.append((str(parsed), digest))
            else:
                return False
            base = store.images.get(digest)
            blobs += [digest, base.config_digest]
        try:
            names = {t: str(parse_ref(t)) for t in tags}
        except InvalidReference:
            return False
        now = self.started_ns
        hosts, sigs, meta, racy = [], [], [], []
        reads: dict = {}  # a file two COPYs read is checked once
        for host, st, body in self.ctx.reads:
            seen = reads.setdefault(host, (host, st, body))
            if seen[2] != body or seen[1].st_ctime_ns != st.st_ctime_ns:
                return False  # it changed between two reads of this build
        for host, st, body in reads.values():
            if _racy(st, now):
                racy.append(len(hosts))
            hosts.append(host)
            sigs.append((st.st_ctime_ns, st.st_mtime_ns, st.st_ino, st.st_size))
            meta.append((st.st_mode, st.st_uid, st.st_gid, tuple(body)))
        memo = {"v": MEMO_VERSION, "image": image.manifest_digest, "blobs": blobs,
                "bases": probes, "tags": names, "events": self.events, "dirs": self.dirs,
                # cache records a served build counts as used (prune keeps recent ones)
                "records": [(STEP_RECORD, s.cache_key) for s in steps]
                + [(IMAGE_RECORD, image.manifest_digest)],
                "file_hosts": hosts, "file_sigs": sigs, "file_meta": meta, "file_racy": racy}
        old = load(self.store_path, self.key)
        if old is not None and old.get("image") == image.manifest_digest:
            memo["tags"] = {**old["tags"], **names}  # tag names seen by earlier builds
        _write(self.store_path, self.key, memo)
        self._write_plan(plan)
        return True

    def _write_plan(self, plan: BuildPlan) -> None:
        try:
            data = _pickle().dumps((plan, self.bases, self.checked), protocol=5)
        except Exception:  # something in the graph that does not pickle: no plan
            return
        _write_file(memo_path(self.store_path, self.key) + PLAN_SUFFIX, data)


def _pickle():
    """The C pickler alone: the `pickle` module around it (its Python implementation,
    `re`, `struct`...) costs ~1.5 ms of an edit-and-rebuild's start."""
    try:
        import _pickle
    except ImportError:  # another Python than CPython
        import pickle as _pickle
    return _pickle


def forget(store_path: str) -> None:
    """Drop every memo (after a prune: a build should run what the cache no longer has)."""
    import shutil

    shutil.rmtree(os.path.join(store_path, MEMO_DIR), ignore_errors=True)
