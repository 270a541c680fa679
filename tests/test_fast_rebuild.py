"""The whole-build memo (pybuild/buildmemo.py): a CLI rebuild with nothing changed is
served without building, and gives the very image the build gave; anything the build
read that changed makes it build again.

The oracle for every change is the same build with the memo switched off
(PYBUILD_NO_BUILD_MEMO=1): builds are reproducible from the cache (history times come
from the step records), so both must give the same image digest."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from pybuild.buildmemo import _code_signature
from tests.conftest import Cli, needs_root

HIT = "from the build memo"

DOCKERFILE = """\
FROM {base}
ARG GREETING=hi
COPY app/ /app/
COPY *.txt /top/
COPY ignored/ /ignored/
RUN echo "$GREETING" > /greeting && ls -lnR /app /top > /listing && cat /app/a.txt >> /listing
CMD ["cat", "/listing"]
"""

# name -> what it does to the context (and the build args of the rebuild); `hit`: whether
# the memo must still serve it
CASES = {
    "touch": dict(hit=True),
    "same-size-edit": dict(hit=False),
    "chmod": dict(hit=False),
    "added-file-in-copied-dir": dict(hit=False),
    "removed-file": dict(hit=False),
    "added-wildcard-match": dict(hit=False),
    "symlink-retargeted": dict(hit=False),
    "dir-replaced-by-symlink": dict(hit=False),
    "dockerignore-changed": dict(hit=False),
    "build-arg-changed": dict(hit=False),
    "base-retagged": dict(hit=False),
    "image-blob-deleted": dict(hit=False),
    "layer-blob-deleted": dict(hit=False),
    "unread-file-added": dict(hit=None),  # either is right: only the digest is checked
    "reincluded-file-edited": dict(hit=False),
    "reincluded-file-added": dict(hit=False),
    "ignored-file-added-beside-reincluded": dict(hit=None),
    "file-added-in-ignored-dir": dict(hit=True),  # a directory .dockerignore hides for good
}


def make_context(ctx: Path, base: str = "memo-base:1") -> None:
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (ctx / "app" / "a.txt").write_text(f"alpha {ctx.name}\n")  # no layer shared by two cases
    (ctx / "app" / "sub" / "b.txt").write_text("beta\n")
    (ctx / "app" / "other").mkdir()
    (ctx / "app" / "other" / "c.txt").write_text("gamma\n")
    os.symlink("a.txt", ctx / "app" / "link")
    (ctx / "top1.txt").write_text("top one\n")
    (ctx / "notes.md").write_text("not copied\n")
    (ctx / "ignored").mkdir()
    (ctx / "ignored" / "keep.txt").write_text("kept\n")
    (ctx / "ignored" / "junk.txt").write_text("junk\n")
    (ctx / "build").mkdir()
    (ctx / "build" / "out.o").write_text("object\n")
    (ctx / ".dockerignore").write_text("*.md\nignored\n!ignored/keep*.txt\nbuild\n")


@pytest.fixture(scope="module")
def memo_store(tmp_path_factory, base_rootfs):
    """A store with one built context per case, every memo recorded, then settled (files
    changed less than 2 s before a build are re-hashed anyway; these test the stat path)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    where = tmp_path_factory.mktemp("memo")
    cli = Cli(where / "store")
    cli("import", str(base_rootfs), "busybox:local")
    built = {}
    for name in CASES:
        ctx = where / name
        cli("tag", "busybox:local", f"memo-base-{name}:1")  # each case its own base name
        make_context(ctx, f"memo-base-{name}:1")
        built[name] = build(cli, ctx)
    time.sleep(2.2)
    return cli, where, built


# context -> the signature of pybuild's sources when its memo was last written
RECORDED: dict = {}


def build_hit(cli: Cli, ctx: Path, *args: str) -> tuple[str, bool]:
    """A rebuild that should be served from the memo. The memo key holds a signature of
    pybuild's own sources, which other work in this checkout may be editing meanwhile:
    when it moved since the memo was written, the miss records anew and we ask again."""
    for _ in range(5):
        recorded, code = RECORDED.get(ctx), _code_signature()
        digest, served = build(cli, ctx, *args)
        if served or recorded == code:
            break
    return digest, served


def build(cli: Cli, ctx: Path, *args: str, memo: bool = True) -> tuple[str, bool]:
    """(image digest, served from the memo?)"""
    code = _code_signature()
    env_before = os.environ.get("PYBUILD_NO_BUILD_MEMO")
    if not memo:
        os.environ["PYBUILD_NO_BUILD_MEMO"] = "1"
    try:
        r = cli("build", "--progress=plain", "-t", f"memo-{ctx.name}:1", *args, str(ctx))
    finally:
        if env_before is None:
            os.environ.pop("PYBUILD_NO_BUILD_MEMO", None)
        else:
            os.environ["PYBUILD_NO_BUILD_MEMO"] = env_before
    digest = [line.split()[1] for line in r.stderr.splitlines() if line.startswith("image ")]
    assert len(digest) == 1, r.stderr
    served = HIT in r.stderr
    if not served:
        RECORDED[ctx] = code if _code_signature() == code else None
    return digest[0], served


def built_once(tmp_path: Path, base_rootfs) -> tuple[Cli, Path]:
    """A store of its own with the memo's base image, and the test context built once."""
    cli = Cli(tmp_path / "store")
    cli("import", str(base_rootfs), "busybox:local")
    cli("tag", "busybox:local", "memo-base:1")
    ctx = tmp_path / "ctx"
    make_context(ctx)
    build(cli, ctx)
    return cli, ctx


def blob(cli: Cli, digest: str) -> Path:
    return Path(cli.root) / "blobs" / "sha256" / digest.split(":", 1)[1]


@needs_root
def test_warm_rebuild_is_served_and_gives_the_cold_builds_image(tmp_path, base_rootfs):
    cli = Cli(tmp_path / "store")
    cli("import", str(base_rootfs), "busybox:local")
    cli("tag", "busybox:local", "memo-base:1")
    ctx = tmp_path / "ctx"
    make_context(ctx)
    cold, served = build(cli, ctx)
    assert not served
    time.sleep(1.1)  # a build that took the clock would give another `created`
    full, served = build(cli, ctx, memo=False)
    assert (full, served) == (cold, False)  # a cached rebuild is the same image
    warm, served = build_hit(cli, ctx)
    assert (warm, served) == (cold, True)
    assert cli("inspect", f"memo-{ctx.name}:1").stdout.count(cold) >= 1
    # -q prints the digest alone, on stdout, from the memo too
    assert cli("build", "-q", str(ctx)).stdout.strip() == cold


@needs_root
@pytest.mark.parametrize("case", list(CASES))
def test_change_is_never_served_stale(memo_store, case):
    cli, where, built = memo_store
    ctx = where / case
    before = built[case][0]
    again, served = build_hit(cli, ctx)
    assert (again, served) == (before, True), "an unchanged context is served from the memo"

    args: tuple[str, ...] = ()
    image = cli("inspect", f"memo-{case}:1").stdout
    if case == "touch":
        os.utime(ctx / "app" / "a.txt")
        os.utime(ctx / "top1.txt", ns=(0, 0))
    elif case == "same-size-edit":
        (ctx / "app" / "a.txt").write_text(f"ALPHA {ctx.name}\n")
    elif case == "chmod":
        os.chmod(ctx / "app" / "sub" / "b.txt", 0o600)
    elif case == "added-file-in-copied-dir":
        (ctx / "app" / "sub" / "new.txt").write_text("new\n")
    elif case == "removed-file":
        (ctx / "app" / "other" / "c.txt").unlink()
    elif case == "added-wildcard-match":
        (ctx / "top2.txt").write_text("top two\n")
    elif case == "symlink-retargeted":
        os.unlink(ctx / "app" / "link")
        os.symlink("sub/b.txt", ctx / "app" / "link")
    elif case == "dir-replaced-by-symlink":
        shutil.rmtree(ctx / "app" / "other")
        os.symlink("sub", ctx / "app" / "other")
    elif case == "dockerignore-changed":
        (ctx / ".dockerignore").write_text("*.md\nignored\n!ignored/keep*.txt\nbuild\n"
                                           "app/other\n")
    elif case == "build-arg-changed":
        args = ("--build-arg", "GREETING=hello")
    elif case == "base-retagged":
        other = where / "other-base"
        other.mkdir()
        (other / "Dockerfile").write_text("FROM busybox:local\nRUN echo other > /other\n")
        cli("build", "-q", "-t", "memo-other:1", str(other))
        cli("tag", "memo-other:1", f"memo-base-{case}:1")
    elif case == "image-blob-deleted":
        blob(cli, before).unlink()  # the manifest
    elif case == "layer-blob-deleted":
        blob(cli, json.loads(image)["Manifest"]["layers"][-1]["digest"]).unlink()
    elif case == "unread-file-added":
        (ctx / "more-notes.md").write_text("ignored\n")
    elif case == "reincluded-file-edited":
        (ctx / "ignored" / "keep.txt").write_text("kept, edited\n")
    elif case == "reincluded-file-added":
        (ctx / "ignored" / "keep2.txt").write_text("kept too\n")
    elif case == "ignored-file-added-beside-reincluded":
        (ctx / "ignored" / "junk2.txt").write_text("junk\n")
    elif case == "file-added-in-ignored-dir":
        (ctx / "build" / "more.o").write_text("object\n")
        (ctx / "build" / "sub").mkdir()

    expected_hit = CASES[case]["hit"]
    changed, served = (build_hit if expected_hit else build)(cli, ctx, *args)
    if expected_hit is not None:
        assert served == expected_hit
    oracle, oracle_served = build(cli, ctx, *args, memo=False)
    assert not oracle_served
    assert changed == oracle, "the memo gave another image than the build"
    if expected_hit is False and case not in ("image-blob-deleted", "layer-blob-deleted"):
        assert changed != before
    if expected_hit is None or expected_hit:
        assert changed == before
    if case == "image-blob-deleted":
        assert changed == before  # rebuilt from the cache: the same image again
        assert blob(cli, before).exists()
    # and the rebuilt state is served again
    third, served = build(cli, ctx, *args)
    assert third == changed


@needs_root
def test_prune_forgets_the_memo(tmp_path, base_rootfs):
    cli, ctx = built_once(tmp_path, base_rootfs)
    assert build_hit(cli, ctx)[1]
    cli("prune", "-a")
    assert not build(cli, ctx)[1]


@needs_root
def test_outputs_and_no_cache_take_the_build(tmp_path, base_rootfs):
    cli, ctx = built_once(tmp_path, base_rootfs)
    for args in (("--no-cache",), ("-o", f"type=oci,dest={tmp_path / 'out.tar'}")):
        r = cli("build", "--progress=plain", *args, str(ctx))
        assert HIT not in r.stderr
    assert (tmp_path / "out.tar").exists()


@needs_root
def test_rebuild_after_a_cold_build_that_pulled_its_base_is_served(tmp_path, base_rootfs):
    """The oracle bench's sequence: an empty store, a cold build pulling FROM, then one
    warm rebuild (the cold build's checks ran before the pull: the memo is written once
    they say the same with the base in the store)."""
    from tests.test_registry import Registry

    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    reg = Registry(tmp_path / "registry")
    try:
        seed = Cli(tmp_path / "seed")
        seed("import", str(base_rootfs), "busybox:local")
        seed("push", "busybox:local", f"{reg.host}/memo/base:1")
        cli = Cli(tmp_path / "store")
        ctx = tmp_path / "ctx"
        make_context(ctx, f"{reg.host}/memo/base:1")
        cold, served = build(cli, ctx)
        assert not served
        warm, served = build_hit(cli, ctx)
        assert (warm, served) == (cold, True)
    finally:
        reg.stop()


def _counting(monkeypatch, module: str, name: str) -> list:
    """Count the calls of `module.name` (which keeps working)."""
    import importlib

    mod = importlib.import_module(module)
    real, calls = getattr(mod, name), []

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(mod, name, counted)
    return calls


def _edit_and_build(ctx: Path, cli: Cli, text: str):
    from pybuild import api

    (ctx / "app" / "a.txt").write_text(text)
    return api.build(str(ctx), tags=[f"memo-{ctx.name}:1"], progress="quiet",
                     root=str(cli.root))


@needs_root
def test_edit_rebuild_takes_the_plan_and_gives_the_full_builds_image(
        tmp_path, base_rootfs, monkeypatch):
    """Only the context changed: the build takes the plan the last build left (no checks,
    no compile) and shows the same warnings, and its image is the one the full build gives
    (the oracle: the same edit built with plans off)."""
    cli, ctx = built_once(tmp_path, base_rootfs)
    text = (ctx / "Dockerfile").read_text().replace("FROM memo-base:1", "FROM memo-base:1 as b")
    (ctx / "Dockerfile").write_text(text)  # FromAsCasing: a warning the plan must keep
    build(cli, ctx)  # the new request's memo and plan
    compiles = _counting(monkeypatch, "frontends.dockerfile.compile", "compile_dockerfile")
    checks = _counting(monkeypatch, "frontends.dockerfile.checks", "run_checks")
    planned = _edit_and_build(ctx, cli, "edited once\n")
    assert (compiles, checks) == ([], [])
    assert any("FromAsCasing" in w or "casing" in w for w in planned.warnings), planned.warnings
    assert planned.run_steps > 0
    monkeypatch.setenv("PYBUILD_NO_BUILD_MEMO", "1")
    full = _edit_and_build(ctx, cli, "edited once\n")
    assert len(compiles) == 1 and len(checks) == 1
    assert full.manifest_digest == planned.manifest_digest
    assert full.warnings == planned.warnings


@needs_root
def test_a_plan_is_not_taken_when_an_image_it_looked_up_moved(tmp_path, base_rootfs,
                                                              monkeypatch):
    cli, ctx = built_once(tmp_path, base_rootfs)
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM busybox:local\nRUN echo other > /other\n")
    cli("build", "-q", "-t", "memo-other:1", str(other))
    cli("tag", "memo-other:1", "memo-base:1")  # the FROM name now gives another image
    compiles = _counting(monkeypatch, "frontends.dockerfile.compile", "compile_dockerfile")
    rebuilt = _edit_and_build(ctx, cli, "edited\n")
    assert len(compiles) == 1
    files = cli("run", "--rm", f"memo-{ctx.name}:1", "cat", "/other").stdout
    assert files == "other\n"
    assert rebuilt.manifest_digest


@needs_root
def test_an_unreadable_plan_is_a_miss(tmp_path, base_rootfs, monkeypatch):
    from pybuild.buildmemo import MEMO_DIR, PLAN_SUFFIX

    cli, ctx = built_once(tmp_path, base_rootfs)
    plans = list((Path(cli.root) / MEMO_DIR).glob("*" + PLAN_SUFFIX))
    assert plans
    for p in plans:
        p.write_bytes(b"not a pickle")
    compiles = _counting(monkeypatch, "frontends.dockerfile.compile", "compile_dockerfile")
    _edit_and_build(ctx, cli, "edited\n")
    assert len(compiles) == 1


def test_checksum_records_are_encoded_as_json_dumps_would():
    """pybuild.context's record encoder is a fast json.dumps: COPY cache keys are digests
    of its output, so a different byte would miss every cache made before."""
    import random

    from pybuild.context import _encode_record

    rnd = random.Random(4)
    values = ["file", "d/f.txt", "é", "\x00\n\"\\/\t", "日本", "\udcff", "\U0001f600", "",
              0, -1, 0o100644, 2**70, True, False, None, "sha256:" + "ab" * 32]
    for _ in range(5000):
        fields = tuple(rnd.choice(values) for _ in range(rnd.randint(0, 8)))
        assert _encode_record(fields) == json.dumps(list(fields), separators=(",", ":"))
    assert _encode_record(("x", 1.5)) == json.dumps(["x", 1.5], separators=(",", ":"))
