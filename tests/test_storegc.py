"""`pybuild du` and `pybuild prune`: sizes, what goes, what stays, and safety against
concurrent builds on one store."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, needs_root
from pybuild.storegc import PruneError, parse_duration, parse_filters, parse_size


def test_parse_size_duration_filters():
    assert parse_size("10GB") == 10 * 1000**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5k") == 1500
    assert parse_size("0") == 0
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_filters(["until=24h"]) == 86400
    assert parse_filters([]) is None
    for bad in ("ten", "5 parsecs", ""):
        with pytest.raises(PruneError):
            parse_size(bad)
    with pytest.raises(PruneError):
        parse_duration("24")
    with pytest.raises(PruneError, match="only until"):
        parse_filters(["label=x"])


def dockerfile(token: str, name: str, size: int = 200_000, sleep: float = 0) -> str:
    return (f"FROM busybox:local\nRUN sleep {sleep}; echo {token} {name} > /{name}\n"
            f"RUN head -c {size} /dev/urandom > /big-{name}\n")


def du_rows(api, root) -> dict:
    return {r.kind: r for r in api.du(root=str(root), grace=0).rows}


@needs_root
def test_prune_frees_space_and_keeps_tagged_images(tmp_path, fresh_cli):
    from pybuild import api

    store = fresh_cli.root
    token = uuid.uuid4().hex
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    for d, name in ((keep, "keep"), (drop, "drop")):
        d.mkdir()
        (d / "Dockerfile").write_text(dockerfile(token, name, 300_000))
    api.build(str(keep), tags=["keep:1"], progress="quiet", root=str(store))
    api.build(str(drop), progress="quiet", root=str(store))  # untagged: all of it is cache
    # leftovers of an interrupted build
    os.makedirs(store / "w" / "stale" / "u")
    before = du_rows(api, store)
    assert before["blobs"].reclaimable > 300_000  # the untagged image's random layer
    assert before["snapshots"].reclaimable > 300_000

    # the default grace period spares what is younger than a minute: all of it, here
    assert "reclaimed space: 0B" in fresh_cli("prune").stdout
    assert du_rows(api, store)["blobs"].size == before["blobs"].size
    result = api.prune(root=str(store), grace=0)
    assert result.freed > 600_000 and result.blobs > 0 and result.snapshots > 0
    after = du_rows(api, store)
    assert after["blobs"].size < before["blobs"].size - 300_000
    assert after["snapshots"].size < before["snapshots"].size - 300_000
    assert after["blobs"].reclaimable == 0
    assert not (store / "w" / "stale").exists()
    # the tagged image still runs, and still comes from the cache
    assert fresh_cli("run", "--rm", "keep:1", "cat", "/keep").stdout == f"{token} keep\n"
    assert api.build(str(keep), progress="quiet", root=str(store)).run_steps == 0
    # the untagged one is rebuilt: its cache is gone
    assert api.build(str(drop), progress="quiet", root=str(store)).run_steps == 2
    table = fresh_cli("du").stdout
    assert table.splitlines()[0].split() == ["TYPE", "COUNT", "SIZE", "RECLAIMABLE"]


@needs_root
def test_prune_all_until_and_keep_storage(tmp_path, fresh_cli):
    from pybuild import api

    store = fresh_cli.root
    token = uuid.uuid4().hex
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile(token, "x", 100_000))
    api.build(str(ctx), tags=["x:1"], progress="quiet", root=str(store))
    (ctx / "Dockerfile").write_text(dockerfile(token, "y", 100_000))
    api.build(str(ctx), progress="quiet", root=str(store))

    # nothing is older than an hour, and everything fits in a terabyte: nothing goes
    assert api.prune(filters=["until=1h"], root=str(store), grace=0).freed == 0
    assert api.prune(keep_storage="1TB", root=str(store), grace=0).freed == 0
    # fits in 0 bytes: all that is reclaimable goes, as a plain prune would
    assert api.prune(keep_storage=0, root=str(store), grace=0).freed > 100_000
    assert api.build(str(ctx), progress="quiet", root=str(store)).run_steps == 2

    # --all forgets even the steps of tagged images; the images keep their blobs
    (ctx / "Dockerfile").write_text(dockerfile(token, "x", 100_000))
    assert api.build(str(ctx), progress="quiet", root=str(store)).run_steps == 0
    api.prune(all=True, root=str(store), grace=0)
    assert api.build(str(ctx), progress="quiet", root=str(store)).run_steps == 2
    assert fresh_cli("run", "--rm", "x:1", "cat", "/x").stdout == f"{token} x\n"


def _running_with(token: str) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    n += token.encode() in f.read()
            except OSError:
                pass
    return n


@needs_root
def test_concurrent_builds_and_prune_on_one_store(tmp_path, fresh_cli):
    store = fresh_cli.root
    token = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = []
    for name in ("one", "two"):
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile(token, name, sleep=1))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pybuild", "--root", str(store), "build", "-t",
             f"{name}:1", "--progress=plain", str(ctx)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 30
        while _running_with(token) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # both builds are running: the prune has to wait for them, and must not break
        # them, even with no grace period at all
        from pybuild import api

        waited = []
        api.prune(all=True, grace=0, root=str(store), wait=lambda: waited.append(True))
        outs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert waited == [True]
    for name in ("one", "two"):
        out = fresh_cli("run", "--rm", f"{name}:1", "cat", f"/{name}").stdout
        assert out == f"{token} {name}\n"
    api.prune(all=True, grace=0, root=str(store))
    for name in ("one", "two"):
        assert fresh_cli("run", "--rm", f"{name}:1", "cat", f"/{name}").stdout == \
            f"{token} {name}\n"
