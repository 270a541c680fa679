"""Builds remember context file digests in the store (one stat cache per context dir), so
an unchanged context is checked with stat() calls only and a changed file is re-hashed
alone. (bench/context_bench.py measures it on 20,000 files.)"""
from __future__ import annotations

import json
import time
import types

from conftest import needs_root


def settled(monkeypatch):
    """Files written just now are not remembered (racy-clean); make them look old."""
    import pybuild.context as context

    real = time.time_ns
    monkeypatch.setattr(context, "time", types.SimpleNamespace(time_ns=lambda: real() + 10**11))


@needs_root
def test_build_persists_stat_cache_in_store(tmp_path, store_root, monkeypatch):
    from pybuild import api
    from pybuild.context import BuildContext

    settled(monkeypatch)
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for i in range(30):
        (ctx / "src" / f"f{i}.txt").write_text(f"{i}\n")
    (ctx / "Dockerfile").write_text("FROM busybox:local\nCOPY src /src\n")
    api.build(str(ctx), progress="quiet", root=str(store_root))

    path = BuildContext.stat_cache_for(str(store_root / "contexts"), str(ctx))
    with open(path) as f:
        entries = json.load(f)["entries"]
    assert {f"src/f{i}.txt" for i in range(30)} <= set(entries)

    again = BuildContext(str(ctx), stat_cache_path=path)
    again.checksum(["src"])
    assert (again.stats.hashed_files, again.stats.cached_files) == (0, 30)

    (ctx / "src" / "f7.txt").write_text("changed\n")
    touched = BuildContext(str(ctx), stat_cache_path=path)
    touched.checksum(["src"])
    assert (touched.stats.hashed_files, touched.stats.cached_files) == (1, 29)


def test_two_contexts_keep_their_own_caches(tmp_path):
    from pybuild.context import BuildContext

    a = BuildContext.stat_cache_for(str(tmp_path), str(tmp_path / "a"))
    b = BuildContext.stat_cache_for(str(tmp_path), str(tmp_path / "b"))
    assert a != b  # one shared file would be thrown away each time the context changes
