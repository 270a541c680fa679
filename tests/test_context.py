"""Build context: .dockerignore view and content checksums (the COPY part of cache keys)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pybuild.context import BuildContext
from pybuild.errors import ContextError
from pybuild.fileops import apply_copy
from pybuild.graph import Copy, LocalSource

SHARED = Path(__file__).resolve().parent / "shared"
E2E = SHARED / "conformance" / "buildkit" / "e2e" / "dockerignore_cases.json"


def write(path: Path, data: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


@pytest.fixture
def ctx_dir(tmp_path) -> Path:
    root = tmp_path / "ctx"
    for name, data in {"app/main.py": "print(1)", "app/util.py": "u", "README.md": "r",
                       "build.log": "noise", "node_modules/x/index.js": "js"}.items():
        write(root / name, data)
    return root


def make(root: Path, patterns=(), **kw) -> BuildContext:
    return BuildContext(str(root), patterns, racy_window_ns=0, **kw)


def test_checksum_is_stable_and_ignores_mtime(ctx_dir):
    ctx = make(ctx_dir)
    first = ctx.checksum(["."])
    assert first.startswith("sha256:") and len(first) == 71
    os.utime(ctx_dir / "app" / "main.py", ns=(1, 1))
    os.utime(ctx_dir / "app", ns=(5, 5))
    assert make(ctx_dir).checksum(["."]) == first


def test_checksum_changes_on_content_mode_name_and_symlink(ctx_dir):
    base = make(ctx_dir).checksum(["app"])
    write(ctx_dir / "app" / "main.py", "print(2)")
    changed = make(ctx_dir).checksum(["app"])
    assert changed != base
    os.chmod(ctx_dir / "app" / "main.py", 0o755)
    moded = make(ctx_dir).checksum(["app"])
    assert moded != changed
    os.rename(ctx_dir / "app" / "util.py", ctx_dir / "app" / "util2.py")
    renamed = make(ctx_dir).checksum(["app"])
    assert renamed != moded
    os.symlink("main.py", ctx_dir / "app" / "link")
    linked = make(ctx_dir).checksum(["app"])
    os.unlink(ctx_dir / "app" / "link")
    os.symlink("util2.py", ctx_dir / "app" / "link")
    assert make(ctx_dir).checksum(["app"]) not in (linked, renamed)


def test_checksum_only_covers_selected_files(ctx_dir):
    app = make(ctx_dir).checksum(["app"])
    write(ctx_dir / "README.md", "changed")
    assert make(ctx_dir).checksum(["app"]) == app
    py = make(ctx_dir).checksum(["app/*.py"])
    write(ctx_dir / "app" / "notes.txt", "not selected")
    assert make(ctx_dir).checksum(["app/*.py"]) == py
    assert make(ctx_dir).checksum(["app"]) != app


def test_checksum_respects_dockerignore_and_excludes(ctx_dir):
    patterns = ["*.log", "node_modules"]
    all_ = make(ctx_dir, patterns).checksum(["."])
    write(ctx_dir / "build.log", "more noise")
    write(ctx_dir / "node_modules" / "y.js", "dep")
    assert make(ctx_dir, patterns).checksum(["."]) == all_
    assert make(ctx_dir).checksum(["."]) != all_  # without the ignore file they count
    ex = make(ctx_dir).checksum(["."], ["README.md"])
    write(ctx_dir / "README.md", "edited")
    assert make(ctx_dir).checksum(["."], ["README.md"]) == ex


def test_ignored_source_is_not_found(ctx_dir):
    ctx = make(ctx_dir, ["*.log"])
    assert ctx.is_ignored("build.log") and ctx.is_ignored("/build.log")
    assert not ctx.is_ignored("app/main.py")
    with pytest.raises(ContextError) as exc:
        ctx.checksum(["build.log"])
    assert str(exc.value) == 'failed to compute cache key: "/build.log": not found'
    with pytest.raises(ContextError) as exc:
        ctx.checksum(["/missing"])
    assert str(exc.value) == 'failed to compute cache key: "/missing": not found'


def test_exception_reincludes_below_ignored_dir(ctx_dir):
    ctx = make(ctx_dir, ["node_modules", "!node_modules/x/index.js"])
    paths = [p for _, ps in ctx.select(["."]) for p in ps]
    assert "node_modules/x/index.js" in paths and "node_modules" in paths
    ctx2 = make(ctx_dir, ["node_modules"])
    assert not any(p.startswith("node_modules") for _, ps in ctx2.select(["."]) for p in ps)


def test_sources_never_escape_the_context(ctx_dir, tmp_path):
    write(tmp_path / "secret", "s")
    os.symlink(str(tmp_path / "secret"), ctx_dir / "leak")
    ctx = make(ctx_dir)
    with pytest.raises(ContextError):
        ctx.checksum(["leak"])
    with pytest.raises(ContextError):
        ctx.checksum(["../secret"])
    # ../app is clamped to app
    assert [m.rel for m, _ in ctx.select(["../app"])] == ["app"]


def test_bad_ignore_patterns():
    with pytest.raises(ContextError):
        BuildContext(".", ["!"])
    with pytest.raises(ContextError):
        BuildContext(".", ["["])


def test_stat_cache_rehashes_only_touched_files(ctx_dir, tmp_path):
    cache = str(tmp_path / "statcache.json")
    ctx = make(ctx_dir, stat_cache_path=cache)
    first = ctx.checksum(["."])
    assert ctx.stats.hashed_files == 5 and ctx.stats.cached_files == 0
    assert json.loads(Path(cache).read_text())["version"] == 1

    again = make(ctx_dir, stat_cache_path=cache)  # a later build: nothing read
    assert again.checksum(["."]) == first
    assert again.stats.hashed_files == 0 and again.stats.cached_files == 5

    os.utime(ctx_dir / "README.md", None)  # touched, same bytes
    touched = make(ctx_dir, stat_cache_path=cache)
    assert touched.checksum(["."]) == first
    assert touched.stats.hashed_files == 1 and touched.stats.cached_files == 4

    write(ctx_dir / "app" / "util.py", "v")  # same size, new content
    edited = make(ctx_dir, stat_cache_path=cache)
    assert edited.checksum(["."]) != first
    assert edited.stats.hashed_files == 1


def test_racy_files_are_not_cached(ctx_dir, tmp_path):
    cache = str(tmp_path / "statcache.json")
    ctx = BuildContext(str(ctx_dir), stat_cache_path=cache, racy_window_ns=10**15)
    ctx.checksum(["app"])
    again = BuildContext(str(ctx_dir), stat_cache_path=cache, racy_window_ns=10**15)
    again.checksum(["app"])
    assert again.stats.hashed_files == 2  # just-written files are always re-read


def test_stat_cache_name_is_per_root(tmp_path):
    a = BuildContext.stat_cache_for(str(tmp_path), "/ctx/a")
    assert a.startswith(str(tmp_path)) and a != BuildContext.stat_cache_for(str(tmp_path), "/b")


def test_damaged_stat_cache_is_ignored(ctx_dir, tmp_path):
    cache = tmp_path / "statcache.json"
    cache.write_text("{not json")
    ctx = make(ctx_dir, stat_cache_path=str(cache))
    assert ctx.checksum(["app"]) == make(ctx_dir).checksum(["app"])


def test_checksum_copy_matches_parents_selection(ctx_dir):
    ctx = make(ctx_dir)
    action = Copy(source=LocalSource(), src=("app/*.py",), dest="/out/", parents=True)
    with_parents = ctx.checksum_copy(action)
    assert with_parents != ctx.checksum(["app/*.py"])
    assert [p for _, ps in ctx.select(["app/*.py"], parents=True) for p in ps] == \
        ["", "app", "app/main.py", "app/util.py"]


def _e2e_cases():
    if not E2E.is_file():
        return []
    data = json.loads(E2E.read_bytes().decode("utf-8"))
    return [pytest.param(c, id=c["name"]) for c in data["cases"]
            if c["name"] != "testDockerignoreOverride"]  # covered below, needs no base image


@pytest.mark.parametrize("case", _e2e_cases())
def test_e2e_dockerignore_copy_dot(case, tmp_path):
    """The e2e scenarios reduced to what this layer does: `COPY . .` through the ignore view."""
    from frontends.dockerfile.dockerignore import load_dockerignore

    root = tmp_path / "ctx"
    for name, data in case["context"].items():
        write(root / name, data)
    patterns = load_dockerignore(str(root), str(root / "Dockerfile"))
    if not case.get("expect_ok", True):
        with pytest.raises(ContextError):
            BuildContext(str(root), patterns)
        return
    ctx = BuildContext(str(root), patterns)
    out = tmp_path / "out"
    out.mkdir()
    apply_copy(Copy(source=LocalSource(), src=(".",), dest="."), str(root), str(out),
               ignore=ctx.ignore_filter)
    for name, data in case.get("expect_files", {}).items():
        assert (out / name).read_text() == data
    for name in case.get("expect_absent", []):
        assert not (out / name).exists()


def test_dockerignore_override_per_dockerfile(tmp_path):
    from frontends.dockerfile.dockerignore import load_dockerignore

    root = tmp_path / "ctx"
    for name, data in {"Dockerfile.dockerignore": "\nbar\n", "Dockerfile2.dockerignore": "\nfoo\n",
                       "foo": "c", "bar": "c", ".dockerignore": "foo\nbar\n"}.items():
        write(root / name, data)
    one = BuildContext(str(root), load_dockerignore(str(root), str(root / "Dockerfile")))
    two = BuildContext(str(root), load_dockerignore(str(root), str(root / "Dockerfile2")))
    assert not one.is_ignored("foo") and one.is_ignored("bar")
    assert two.is_ignored("foo") and not two.is_ignored("bar")


def test_odd_names_are_copied_and_hashed(tmp_path):
    root = tmp_path / "ctx"
    root.mkdir()
    odd = os.fsencode(str(root)) + b"/caf\xe9 \n name"  # not UTF-8, with a newline
    with open(odd, "wb") as f:
        f.write(b"data")
    ctx = make(root)
    first = ctx.checksum(["."])
    assert make(root).checksum(["."]) == first
    out = tmp_path / "out"
    out.mkdir()
    apply_copy(Copy(source=LocalSource(), src=(".",), dest="/"), str(root), str(out),
               ignore=ctx.ignore_filter)
    assert os.listdir(os.fsencode(str(out))) == [b"caf\xe9 \n name"]


def test_copy_through_ignore_filter_keeps_reincluded_files(ctx_dir, tmp_path):
    ctx = make(ctx_dir, ["**", "!app/*.py", "!README.md"])
    out = tmp_path / "out"
    out.mkdir()
    apply_copy(Copy(source=LocalSource(), src=(".",), dest="/app/"), str(ctx_dir), str(out),
               ignore=ctx.ignore_filter)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert got == ["app", "app/README.md", "app/app", "app/app/main.py", "app/app/util.py"]
    # the checksum sees the same selection: an ignored file changing does not matter
    before = ctx.checksum(["."])
    write(ctx_dir / "node_modules" / "x" / "index.js", "changed")
    assert make(ctx_dir, ["**", "!app/*.py", "!README.md"]).checksum(["."]) == before
