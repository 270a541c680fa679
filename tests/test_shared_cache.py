"""The shared build cache (`--cache-to`/`--cache-from`) against a real docker-registry:
a fresh store builds a warm Dockerfile running no step and fetching only the layers of
the result image; mode=min/max; local OCI layout dirs; inline caches; a changed context
file; bad specs. Base images come from the registry, so the fresh stores share nothing
with the one that exported the cache."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cache.exchange import (CACHE_CONFIG_MEDIA_TYPE, INLINE_LABEL, CacheConfig, CacheFormatError,
                            CacheLayer, make_cache_config, make_inline, parse_inline)
from pybuild import api
from pybuild.cachetransfer import CacheSpec, InvalidCacheSpec
from pybuild.errors import PybuildError
from pybuild.storeroot import StoreRoot

from conftest import Cli, needs_root
from test_registry import Registry, basic_registry, docker_config  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="docker-registry is not installed")

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}  # same config bytes in both builds

MULTI_STAGE = """\
FROM {base} AS builder
RUN mkdir /out && echo one > /out/a
RUN echo two > /out/b
FROM {base}
RUN echo base-step > /b
COPY --from=builder /out /out
COPY app.txt /app.txt
RUN cat /out/a /out/b /app.txt > /summary
ENV X=1
"""


@pytest.fixture(scope="module")
def cache_registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("cache-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def warm(cache_registry, tmp_path_factory, base_rootfs):
    """One build of MULTI_STAGE exporting mode=max and mode=min caches to the registry,
    from a store whose base image was pushed there first."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = tmp_path_factory.mktemp("warm")
    cli = Cli(d / "store")
    host = cache_registry.host
    base = f"{host}/base/busybox:1"
    cli("import", str(base_rootfs), "busybox:local")
    cli("push", "busybox:local", base)
    ctx = d / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(MULTI_STAGE.format(base=base))
    (ctx / "app.txt").write_text("hello\n")
    max_ref, min_ref = f"{host}/cache/app:max", f"{host}/cache/app:min"
    out = cli("build", "-q", "-t", "app:1", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH['SOURCE_DATE_EPOCH']}",
              "--cache-to", f"type=registry,ref={max_ref},mode=max",
              "--cache-to", f"type=registry,ref={min_ref}", str(ctx))
    digest = out.stdout.strip()
    image = StoreRoot.open(str(d / "store")).images.get(digest)
    return {"host": host, "base": base, "ctx": ctx, "digest": digest, "image": image,
            "max": max_ref, "min": min_ref, "dir": d}


def _registry_cache(host: str, ref: str) -> tuple[dict, CacheConfig]:
    """The manifest and cache config a cache ref names, read straight off the registry."""
    path, _, tag = ref[len(host) + 1:].rpartition(":")
    manifest = httpx.get(f"http://{host}/v2/{path}/manifests/{tag}",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    config = httpx.get(f"http://{host}/v2/{path}/blobs/{manifest['config']['digest']}").content
    return manifest, CacheConfig.from_json(config)


def _fresh(tmp_path: Path, name: str = "fresh") -> StoreRoot:
    return StoreRoot.open(str(tmp_path / name))


def _image_blobs(image) -> set[str]:
    return {image.manifest_digest, image.config_digest, *(l.digest for l in image.layers)}


@needs_root
def test_fresh_store_builds_warm_from_registry_cache(warm, tmp_path):
    manifest, config = _registry_cache(warm["host"], warm["max"])
    assert manifest["config"]["mediaType"] == CACHE_CONFIG_MEDIA_TYPE
    assert [l["digest"] for l in manifest["layers"]] == [l.digest for l in config.layers]
    result_layers = {l.digest for l in warm["image"].layers}
    intermediate = {l.digest for l in config.layers} - result_layers
    assert intermediate, "mode=max must carry the builder stage's layers"

    fresh = _fresh(tmp_path)
    result = api.build(str(warm["ctx"]), root=fresh, progress="quiet", build_args=EPOCH,
                       cache_from=[f"type=registry,ref={warm['max']}"])
    assert result.run_steps == 0 and result.cached_steps == 7
    assert result.manifest_digest == warm["digest"]
    image = fresh.images.get(result.manifest_digest)
    assert image.config.diff_ids == warm["image"].config.diff_ids
    fresh.images.verify(image)

    # only the result image (and its base, which FROM pulls) is in the store: no layer of
    # the builder stage was downloaded, nor the cache config kept
    base = fresh.images.lookup(warm["base"])
    assert set(fresh.blobs.digests()) == _image_blobs(image) | _image_blobs(base)
    assert not intermediate & set(fresh.blobs.digests())

    # imported records land in the local index once their blob is here: the result
    # image's steps are indexed, the builder's (never downloaded) are not
    _, small = _registry_cache(warm["host"], warm["min"])
    indexed = {k for k in config.table() if fresh.index.get("step", k) is not None}
    assert indexed == set(small.table())

    # building again the same way downloads nothing more
    before = set(fresh.blobs.digests())
    again = api.build(str(warm["ctx"]), root=fresh, progress="quiet", build_args=EPOCH,
                      cache_from=[warm["max"]])
    assert again.run_steps == 0 and again.manifest_digest == warm["digest"]
    assert set(fresh.blobs.digests()) == before


@needs_root
def test_mode_min_has_only_the_result_images_steps(warm):
    _, full = _registry_cache(warm["host"], warm["max"])
    _, small = _registry_cache(warm["host"], warm["min"])
    assert full.mode == "max" and small.mode == "min"
    result_layers = {l.digest for l in warm["image"].layers}
    assert {l.digest for l in small.layers} <= result_layers
    # 4 steps in the final stage (RUN, COPY, COPY, RUN); the builder's 2 RUNs only in max
    assert len(small.steps) == 4 and len(full.steps) == 6
    assert set(small.table()) < set(full.table())
    builder_only = set(full.table()) - set(small.table())
    assert all(full.table()[k].digest not in result_layers for k in builder_only)


@needs_root
def test_changed_context_file_runs_only_what_depends_on_it(warm, tmp_path):
    ctx = tmp_path / "ctx"
    shutil.copytree(warm["ctx"], ctx)
    (ctx / "app.txt").write_text("changed\n")
    fresh = _fresh(tmp_path)
    result = api.build(str(ctx), root=fresh, progress="quiet", tags=["app:2"],
                       cache_from=[warm["max"]])  # a bare ref means type=registry
    ran = sorted(s.name for s in result.steps if not s.cached)
    assert ran == ["COPY app.txt /app.txt", "RUN cat /out/a /out/b /app.txt > /summary"]
    assert result.cached_steps == 5
    # the steps that ran needed the imported layers under them (RUN base-step, COPY
    # --from): fetched on demand; the builder stage's own layers were never needed
    _, full = _registry_cache(warm["host"], warm["max"])
    builder = {l.digest for l in full.layers} - {l.digest for l in warm["image"].layers}
    assert builder and not builder & set(fresh.blobs.digests())
    captured: list[bytes] = []
    out = api.run("app:2", ["cat", "/summary"], root=fresh, stdio=False,
                  on_output=captured.append)
    assert out.exit_code == 0
    assert b"".join(captured).decode().split() == ["one", "two", "changed"]


@needs_root
def test_local_cache_dir_round_trip_is_an_oci_layout(warm, tmp_path):
    src = StoreRoot.open(str(warm["dir"] / "store"))
    dest = tmp_path / "cache-dir"
    api.build(str(warm["ctx"]), root=src, progress="quiet", build_args=EPOCH,
              cache_to=[f"type=local,dest={dest},mode=max"])
    index = json.loads((dest / "index.json").read_text())
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    if shutil.which("skopeo"):
        raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{dest}:latest"],
                                        check=True, capture_output=True, text=True).stdout)
        assert raw["config"]["mediaType"] == CACHE_CONFIG_MEDIA_TYPE
        # skopeo copies every blob, checking each against its digest
        subprocess.run(["skopeo", "copy", "-q", f"oci:{dest}:latest", f"dir:{tmp_path / 'copy'}"],
                       check=True, capture_output=True)

    fresh = _fresh(tmp_path)
    result = api.build(str(warm["ctx"]), root=fresh, progress="quiet", build_args=EPOCH,
                       cache_from=[CacheSpec.parse(f"type=local,src={dest}", "from")])
    assert result.run_steps == 0 and result.manifest_digest == warm["digest"]

    # a second export into the same dir under another tag keeps the first
    api.build(str(warm["ctx"]), root=src, progress="quiet", build_args=EPOCH,
              cache_to=[f"type=local,dest={dest},tag=other"])
    names = [m["annotations"]["org.opencontainers.image.ref.name"]
             for m in json.loads((dest / "index.json").read_text())["manifests"]]
    assert sorted(names) == ["latest", "other"]


@needs_root
def test_inline_cache_in_a_pushed_image(warm, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {warm['base']}\nRUN echo one > /a\nCOPY app.txt /app.txt\n"
        "RUN cat /a /app.txt > /s\nRUN true\nENV Y=2\n")
    (ctx / "app.txt").write_text("hi\n")
    ref = f"{warm['host']}/inline/app:1"
    cli = Cli(warm["dir"] / "store")
    cli("build", "-q", "-t", ref, "--push", "--cache-to", "type=inline", str(ctx))
    pushed = api.get_image(ref, StoreRoot.open(str(warm["dir"] / "store")))
    assert INLINE_LABEL in dict(pushed.config.config.labels)

    fresh = _fresh(tmp_path)
    result = api.build(str(ctx), root=fresh, progress="quiet",
                       cache_from=[f"type=registry,ref={ref}"])
    assert result.run_steps == 0 and result.cached_steps == 5
    image = fresh.images.get(result.manifest_digest)
    assert [l.digest for l in image.layers] == [l.digest for l in pushed.layers]


@needs_root
@pytest.mark.parametrize("to", ["registry-min", "inline"])
def test_linked_copies_are_in_the_shared_cache(warm, tmp_path, to):
    """COPY --link is a copy on scratch merged onto the stage: its step must be exported
    (min and inline follow the merge into it) and hit on a fresh store."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {warm['base']}\nRUN echo one > /a\nCOPY --link app.txt /linked/app.txt\n"
        "RUN cat /a /linked/app.txt > /s\n")
    (ctx / "app.txt").write_text(f"linked {to}\n")
    ref = f"{warm['host']}/linked/{to}:1"
    cli = Cli(warm["dir"] / "store")
    if to == "inline":
        cli("build", "-q", "-t", ref, "--push", "--cache-to", "type=inline", str(ctx))
    else:
        cli("build", "-q", "-t", "linked:1", "--cache-to", f"type=registry,ref={ref}", str(ctx))
    first = api.get_image(ref if to == "inline" else "linked:1",
                          StoreRoot.open(str(warm["dir"] / "store")))

    time.sleep(1.1)  # history times have one-second resolution: a later build, a later "now"
    fresh = _fresh(tmp_path)
    result = api.build(str(ctx), root=fresh, progress="quiet", cache_from=[ref])
    assert result.run_steps == 0 and result.cached_steps == 4  # FROM, RUN, COPY, RUN
    image = fresh.images.get(result.manifest_digest)
    assert [l.digest for l in image.layers] == [l.digest for l in first.layers]
    # the layers' creation times travel with the cache: the same history, so (without
    # SOURCE_DATE_EPOCH) the same image as the exporter's; inline's image has the label
    assert [h.created for h in image.config.history] == [h.created for h in first.config.history]
    if to != "inline":
        assert result.manifest_digest == first.manifest_digest


@needs_root
def test_cache_through_a_basic_auth_registry(basic_registry, docker_config, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nCOPY a.txt /b.txt\n")
    (ctx / "a.txt").write_text("a\n")
    ref = f"{basic_registry.host}/private/cache:1"
    lines: list[str] = []
    with pytest.raises(PybuildError, match="pybuild login"):
        api.build(str(ctx), root=_fresh(tmp_path, "one"), progress="quiet",
                  cache_to=[f"type=registry,ref={ref}"])
    api.login(basic_registry.host, "alice", "wonder-pw")
    first = api.build(str(ctx), root=_fresh(tmp_path, "one"), progress="quiet",
                      cache_to=[f"type=registry,ref={ref}"])
    second = api.build(str(ctx), root=_fresh(tmp_path, "two"), cache_from=[ref],
                       progress=lambda e: lines.append(e.name))
    assert second.run_steps == 0 and second.manifest_digest.startswith("sha256:")
    assert [l.digest for l in api.get_image(second.manifest_digest, str(tmp_path / "two")).layers] \
        == [l.digest for l in api.get_image(first.manifest_digest, str(tmp_path / "one")).layers]
    assert not any("wonder-pw" in line for line in lines)


def test_bad_cache_specs_are_clear_errors(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    cli = Cli(tmp_path / "store")
    for flag, value, words in (
            ("--cache-to", "type=bogus", "unsupported --cache-to type 'bogus'"),
            ("--cache-to", "type=registry", "needs ref="),
            ("--cache-to", "type=registry,ref=x/y:1,mode=huge", "mode must be min or max"),
            ("--cache-to", "type=inline,mode=max", "mode=min only"),
            ("--cache-to", "type=local,dest=/x,colour=red", "unknown --cache-to option 'colour'"),
            ("--cache-from", "type=local", "needs src=DIR"),
            ("--cache-from", "type=inline", "--cache-from IMAGE-REF"),
            ("--cache-from", "type=registry,ref=Bad/Name", "must be lowercase")):
        r = cli("build", flag, value, str(ctx), check=False)
        assert r.returncode == 1, (value, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, (value, r.stderr)


def test_unreachable_cache_source_is_a_warning_not_a_failure(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    lines: list[str] = []
    result = api.build(str(ctx), root=str(tmp_path / "store"),
                       progress=lambda e: lines.append(e.name),
                       cache_from=[f"type=local,src={tmp_path / 'missing'}"])
    assert result.manifest_digest
    assert any("importing cache from" in line and "failed" in line for line in lines)


# --------------------------------------------------------------------------- format (pure)


def test_cache_config_round_trip_and_validation():
    a = CacheLayer("sha256:" + "a" * 64, "sha256:" + "b" * 64, 10, "application/x")
    records = {"sha256:" + "1" * 64: a, "sha256:" + "2" * 64: None, "sha256:" + "3" * 64: a}
    config = make_cache_config(records, "max")
    assert len(config.layers) == 1  # one layer named by two steps is stored once
    assert CacheConfig.from_json(config.to_json()).table() == records
    assert make_cache_config(dict(reversed(list(records.items()))), "max").to_json() \
        == config.to_json()
    for bad in (b"[]", b'{"mediaType": "x"}',
                config.to_json().replace(b'"layer":0', b'"layer":5'),
                config.to_json().replace(b"sha256:1111", b"sha256:zzzz")):
        with pytest.raises(CacheFormatError):
            CacheConfig.from_json(bad)


def test_inline_entries_for_converted_layers_are_dropped():
    key1, key2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    text = make_inline({key1: 1, key2: None}, ["sha256:" + "a" * 64, "sha256:" + "b" * 64])
    assert parse_inline(text, ["sha256:" + "a" * 64, "sha256:" + "b" * 64]) == {key1: 1, key2: None}
    # the same image re-compressed: layer 1 has another digest, its record is unusable
    assert parse_inline(text, ["sha256:" + "a" * 64, "sha256:" + "c" * 64]) == {key2: None}


def test_spec_parsing():
    assert CacheSpec.parse("host:5000/app:cache", "from") == CacheSpec("registry", ref="host:5000/app:cache")
    s = CacheSpec.parse("type=local,dest=/d,mode=max,tag=t", "to")
    assert (s.type, s.path, s.mode, s.tag) == ("local", "/d", "max", "t")
    with pytest.raises(InvalidCacheSpec):
        CacheSpec.parse("type=local,dest=/d", "from")  # dest= is for --cache-to


def test_a_record_that_lies_about_its_diff_id_is_not_trusted(tmp_path):
    """Blob digests prove the bytes, not the diff_id a record claims, and the snapshot store
    and image configs go by diff_id: an imported layer is checked once. A record whose
    blob is already here and does not match is a miss (the step runs); one whose blob is
    fetched and does not match fails the build with a clear error."""
    import gzip

    from cache.digest import digest_bytes
    from pybuild.cachetransfer import ImportedCache
    from pybuild.image import mediatypes as mt
    from pybuild.image.types import LayerRecord

    store = _fresh(tmp_path)
    tar = b"a layer's tar" * 100
    blob = gzip.compress(tar, mtime=0)
    digest = store.blobs.put_bytes(blob)
    true_id, forged_id = digest_bytes(tar), "sha256:" + "9" * 64
    honest = LayerRecord(digest, true_id, len(blob), mt.OCI_LAYER_GZIP)
    lying = LayerRecord(digest, forged_id, len(blob), mt.OCI_LAYER_GZIP)
    key1, key2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64

    class Origin:  # serves the blob from elsewhere: here, from a copy of the bytes
        def fetch(self, root, layer):
            root.blobs.put_bytes(blob)

    imported = ImportedCache(store)
    imported.add({key1: honest, key2: lying}, Origin())
    assert imported.lookup(key1) == (True, honest)
    assert imported.lookup(key2) == (False, None)
    assert store.index.get("step", key2) is None

    fresh = _fresh(tmp_path, "fetching")
    imported = ImportedCache(fresh)
    imported.add({key2: lying}, Origin())
    assert imported.lookup(key2) == (True, lying)  # nothing local to check yet
    with pytest.raises(PybuildError, match="not the diff_id"):
        imported.ensure([lying])
    assert fresh.index.get("step", key2) is None


@needs_root
def test_local_cache_with_a_missing_blob_runs_that_step(warm, tmp_path):
    """A cache dir copied in part: the steps whose blob is gone run, the rest hit."""
    dest = tmp_path / "cache"
    cli = Cli(warm["dir"] / "store")
    cli("build", "-q", "--cache-to", f"type=local,dest={dest},mode=max", str(warm["ctx"]))
    _, config = _registry_cache_from_dir(dest)
    gone = config.layers[-1].digest
    (dest / "blobs" / "sha256" / gone.split(":", 1)[1]).unlink()
    result = api.build(str(warm["ctx"]), root=_fresh(tmp_path), progress="quiet",
                       cache_from=[f"type=local,src={dest}"])
    assert result.run_steps >= 1 and result.cached_steps >= 1


def _registry_cache_from_dir(dest: Path) -> tuple[dict, CacheConfig]:
    index = json.loads((dest / "index.json").read_text())
    def blob(d):
        return (dest / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    return manifest, CacheConfig.from_json(blob(manifest["config"]["digest"]))
