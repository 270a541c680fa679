"""Build outputs: `--output` parsing, layer compression (parallel gzip, zstd), conversion
of images on export (never compressing a layer twice), docker/OCI media types,
rewrite-timestamp, `pybuild save/load/history`. skopeo judges the tarballs."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zlib

import pytest

from pybuild.image import mediatypes as mt
from pybuild.image.convert import LAYER_BLOBS, convert_image
from pybuild.image.outputs import ImageOptions, InvalidOutput, OutputSpec
from pybuild.image.parallel_gzip import ParallelGzipWriter
from pybuild.snapshot.diff import TarEntry, rewrite_layer_tar, write_tar_entries
from tests.conftest import needs_root
from tests.test_image import commit_image, new_store

SKOPEO = shutil.which("skopeo")
UMOCI = shutil.which("umoci")
EPOCH = 1_700_000_000


# --------------------------------------------------------------------------- parsing


def test_output_full_syntax():
    spec = OutputSpec.parse("type=oci,dest=out.tar,compression=zstd,compression-level=19,"
                            "force-compression=true,oci-mediatypes=true,rewrite-timestamp=true,"
                            "name=app:1")
    assert (spec.type, spec.dest, spec.names) == ("oci", "out.tar", ("app:1",))
    assert spec.image == ImageOptions("zstd", 19, True, True, True)


def test_output_defaults_and_shorthands():
    assert OutputSpec.parse("some/dir") == OutputSpec("local", "some/dir")
    assert OutputSpec.parse("type=oci,dest=x").image == ImageOptions()
    # a docker-archive has Docker media types unless told otherwise
    assert OutputSpec.parse("type=docker,dest=x").image.oci_mediatypes is False
    assert OutputSpec.parse("type=docker,dest=x,oci-mediatypes=true").image.oci_mediatypes
    assert OutputSpec.parse("type=image,oci-mediatypes=false").image.oci_mediatypes is False
    # BuildKit's CSV quoting: several names in one value
    assert OutputSpec.parse('type=image,"name=a:1,b:2",push=true').names == ("a:1", "b:2")
    assert OutputSpec.parse('type=image,"name=a:1,b:2",push=true').push
    assert OutputSpec.parse("type=registry,name=r:5000/a:1").push
    assert not OutputSpec.parse("type=image,name=a").push


@pytest.mark.parametrize("text,message", [
    ("type=oci", "needs dest"),
    ("type=zip,dest=x", "unsupported output type"),
    ("type=oci,dest=x,compresion=zstd", "unknown output option 'compresion'"),
    ("type=oci,dest=x,compression=lz4", "unsupported compression"),
    ("type=oci,dest=x,compression=gzip,compression-level=12", "level must be 0-9"),
    ("type=oci,dest=x,compression=zstd,compression-level=x", "must be an integer"),
    ("type=oci,dest=x,compression=uncompressed,compression-level=1", "gzip or zstd"),
    ("type=oci,dest=x,compression=zstd,oci-mediatypes=false", "needs OCI media types"),
    ("type=oci,dest=x,rewrite-timestamp=maybe", "true or false"),
    ("type=local,dest=x,compression=zstd", "apply to image outputs"),
    ("type=registry", "needs name"),
    ("type=oci,dest=x,dest=y", "given twice"),
    ("type=oci,dest", "not key=value"),
])
def test_output_errors(text, message):
    with pytest.raises(InvalidOutput, match=message):
        OutputSpec.parse(text)


def test_api_reexports_output_spec():
    from pybuild import api

    assert api.OutputSpec is OutputSpec


# --------------------------------------------------------------------------- parallel gzip


def _sample(n: int = 5 << 20) -> bytes:
    rnd = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB of "random" bytes
    out = bytearray()
    i = 0
    while len(out) < n:
        out += rnd if i % 3 == 0 else (b"layer %d " % i) * 2000
        i += 1
    return bytes(out[:n])


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_parallel_gzip_is_gzip_and_independent_of_write_sizes(level):
    data = _sample()
    outs = set()
    for step in (1000, 65536, 1 << 20, 3 << 20 | 17, len(data)):
        buf = io.BytesIO()
        w = ParallelGzipWriter(buf, level)
        for i in range(0, len(data), step):
            w.write(data[i:i + step])
        w.close()
        assert gzip.decompress(buf.getvalue()) == data
        outs.add(buf.getvalue())
    assert len(outs) == 1
    blob = outs.pop()
    # header: deflate, no flags (no name), mtime 0
    assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == b"\0\0\0\0"


def test_parallel_gzip_empty_and_small():
    for data in (b"", b"x", b"hello" * 10):
        buf = io.BytesIO()
        with ParallelGzipWriter(buf) as w:
            w.write(data)
        assert gzip.decompress(buf.getvalue()) == data
        assert zlib.decompress(buf.getvalue(), 31) == data


def test_zstd_bytes_do_not_depend_on_the_number_of_threads(tmp_path):
    """Why compression.py may use every core for zstd and stay reproducible: the
    multi-threaded mode gives the same frames for 1 or N workers."""
    import zstandard

    from cache.store import BlobStore
    from pybuild.image.compression import compress_layer

    data = _sample(9 << 20)
    outs = set()
    for threads in (1, 2, 4):
        cctx = zstandard.ZstdCompressor(level=3, threads=threads, write_checksum=False,
                                        write_content_size=False)
        buf = io.BytesIO()
        with cctx.stream_writer(buf, closefd=False) as w:
            w.write(data)
        outs.add(buf.getvalue())
    assert len(outs) == 1
    rec = compress_layer(io.BytesIO(data), BlobStore(str(tmp_path)), "zstd")
    assert rec.digest == "sha256:" + hashlib.sha256(outs.pop()).hexdigest()


# --------------------------------------------------------------------------- rewrite tar


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    write_tar_entries(entries, buf)
    return buf.getvalue()


def test_rewrite_layer_tar_clamps_only_later_mtimes():
    src = _tar([TarEntry.directory("d", mtime=EPOCH + 500),
                TarEntry.file("d/old", b"old", mtime=EPOCH - 10),
                TarEntry.file("d/new", b"new" * 1000, mtime=EPOCH + 99),
                TarEntry("d/link", "symlink", linkname="new", mtime=EPOCH + 1),
                TarEntry("d/x", "file", data=b"x", xattrs=(("user.k", b"\xff\x00"),),
                         mtime=EPOCH + 7)])
    out = io.BytesIO()
    rewrite_layer_tar(io.BytesIO(src), out, clamp_mtime=EPOCH)
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))}
    assert {n: m.mtime for n, m in members.items()} == {
        "d": EPOCH, "d/old": EPOCH - 10, "d/new": EPOCH, "d/link": EPOCH, "d/x": EPOCH}
    t = tarfile.open(fileobj=io.BytesIO(out.getvalue()))
    assert t.extractfile("d/new").read() == b"new" * 1000
    assert members["d/x"].pax_headers["SCHILY.xattr.user.k"].encode(
        "utf-8", "surrogateescape") == b"\xff\x00"
    # nothing to clamp: the very same bytes
    same = io.BytesIO()
    rewrite_layer_tar(io.BytesIO(src), same, clamp_mtime=EPOCH + 10_000)
    assert same.getvalue() == src


# --------------------------------------------------------------------------- conversion


def _layer_media_types(image):
    return [d.media_type for d in image.manifest.layers]


def test_convert_nothing_to_do_is_the_same_image(tmp_path):
    store = new_store(tmp_path)
    image = commit_image(store, {"a": b"a" * 1000})
    out, stats = convert_image(store, image, ImageOptions())
    assert out is image and stats.compressed == 0


def test_convert_to_zstd_once_then_from_the_index(tmp_path):
    store = new_store(tmp_path)
    image = commit_image(store, {"a": b"a" * 100_000, "b": b"b"})
    zstd, stats = convert_image(store, image, ImageOptions("zstd"))
    assert stats.compressed == 1 and _layer_media_types(zstd) == [mt.OCI_LAYER_ZSTD]
    assert zstd.config.diff_ids == image.config.diff_ids
    store.verify(zstd)
    rec = store.index.get(LAYER_BLOBS, image.layers[0].diff_id)
    assert rec.value["zstd"]["digest"] == zstd.layers[0].digest
    again, stats2 = convert_image(store, image, ImageOptions("zstd"))
    assert (stats2.compressed, stats2.reused) == (0, 1)
    assert again.manifest_digest == zstd.manifest_digest
    # back to gzip from the zstd image: gzip again (not remembered as ours: the build's
    # blob is not in the index), then the same bytes as a fresh gzip of the same tar
    back, _ = convert_image(store, zstd, ImageOptions("gzip"))
    assert _layer_media_types(back) == [mt.OCI_LAYER_GZIP]
    store.verify(back)
    # levels are variants of their own
    z19, s19 = convert_image(store, image, ImageOptions("zstd", 19))
    assert s19.compressed == 1 and z19.layers[0].digest != zstd.layers[0].digest


def test_convert_force_compression_recompresses_same_type(tmp_path):
    store = new_store(tmp_path)
    image = commit_image(store, {"a": b"abc" * 50_000})
    unchanged, _ = convert_image(store, image, ImageOptions("gzip", 0))
    assert unchanged is image  # same type, no force: layers kept as they are
    forced, stats = convert_image(store, image, ImageOptions("gzip", 0, force_compression=True))
    assert stats.compressed == 1 and forced.layers[0].digest != image.layers[0].digest
    store.verify(forced)


def test_convert_docker_media_types(tmp_path):
    store = new_store(tmp_path)
    image = commit_image(store, {"a": b"a"})
    docker, _ = convert_image(store, image, ImageOptions(oci_mediatypes=False))
    m = docker.manifest
    assert m.media_type == mt.DOCKER_MANIFEST and m.config.media_type == mt.DOCKER_CONFIG
    assert _layer_media_types(docker) == [mt.DOCKER_LAYER_GZIP]
    assert docker.layers[0].digest == image.layers[0].digest  # no recompression
    raw, _ = convert_image(store, image, ImageOptions("uncompressed", oci_mediatypes=False))
    assert _layer_media_types(raw) == [mt.DOCKER_LAYER]
    assert raw.layers[0].digest == raw.layers[0].diff_id


def test_convert_rewrite_timestamp_keeps_base_layers(tmp_path):
    store = new_store(tmp_path)
    base = commit_image(store, {"base": b"b"})
    image = commit_image(store, {"top": b"t"})  # mtimes EPOCH (make_tar default)
    two = store.commit(image.config.__class__(
        "amd64", "linux", diff_ids=(), history=()), [base.layers[0], image.layers[0]])
    out, stats = convert_image(store, two, ImageOptions(rewrite_timestamp=True),
                               source_date_epoch=EPOCH - 100, keep_layers=1)
    assert out.layers[0] == base.layers[0]  # the base is left alone
    assert out.layers[1].diff_id != image.layers[0].diff_id
    assert out.config.diff_ids == (base.layers[0].diff_id, out.layers[1].diff_id)
    with store.blobs.open(out.layers[1].digest) as f:
        members = tarfile.open(fileobj=io.BytesIO(gzip.decompress(f.read()))).getmembers()
    assert [m.mtime for m in members] == [EPOCH - 100]
    again, stats2 = convert_image(store, two, ImageOptions(rewrite_timestamp=True),
                                  source_date_epoch=EPOCH - 100, keep_layers=1)
    assert (stats.compressed, stats2.compressed, stats2.reused) == (1, 0, 1)
    assert again.manifest_digest == out.manifest_digest


def test_convert_rewrite_timestamp_needs_an_epoch(tmp_path):
    from pybuild.errors import PybuildError

    store = new_store(tmp_path)
    image = commit_image(store, {"a": b"a"})
    with pytest.raises(PybuildError, match="SOURCE_DATE_EPOCH"):
        convert_image(store, image, ImageOptions(rewrite_timestamp=True))


# --------------------------------------------------------------------------- end to end

DOCKERFILE = """\
FROM busybox:local
COPY a.txt /a.txt
RUN mkdir /data && echo hello > /data/h && rm /etc/motd
CMD ["cat", "/a.txt"]
"""


@pytest.fixture
def ctx(tmp_path):
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    (d / "a.txt").write_text("from the context\n")
    return d


def _oci_manifest(layout_dir):
    index = json.loads((layout_dir / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    return digest, json.loads((layout_dir / "blobs/sha256" / digest[7:]).read_text())


def _untar(path, dest):
    dest.mkdir()
    with tarfile.open(path) as t:
        t.extractall(dest)
    return dest


@needs_root
@pytest.mark.skipif(not SKOPEO, reason="skopeo not installed")
def test_build_outputs_zstd_docker_and_image(cli, ctx, tmp_path):
    z, d = tmp_path / "z.tar", tmp_path / "d.tar"
    out = cli("build", "-q", "-t", "outs:1", "-o", f"type=oci,dest={z},compression=zstd",
              "-o", f"type=docker,dest={d}", "-o", "type=image,name=outs:zstd,compression=zstd",
              str(ctx))
    # zstd layout: skopeo reads it and sees zstd layers
    raw = json.loads(subprocess.run([SKOPEO, "inspect", "--raw", f"oci-archive:{z}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert {x["mediaType"] for x in raw["layers"]} == {mt.OCI_LAYER_ZSTD}
    # umoci 0.4 cannot unpack zstd layers: unpack them ourselves, compare with the gzip image
    zdir = _untar(z, tmp_path / "zl")
    _, zman = _oci_manifest(zdir)
    import zstandard
    gz_image = json.loads(cli("inspect", "outs:1").stdout)
    for layer, gz_layer, diff_id in zip(zman["layers"], gz_image["Manifest"]["layers"],
                                        gz_image["Config"]["rootfs"]["diff_ids"]):
        blob = (zdir / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
        assert layer["digest"] != gz_layer["digest"]
    # the type=image output is the zstd image, and the build reports its digest
    img = json.loads(cli("inspect", "outs:zstd").stdout)
    assert img["Digest"] == out.stdout.strip()
    assert {x["mediaType"] for x in img["Manifest"]["layers"]} == {mt.OCI_LAYER_ZSTD}
    # docker-archive: Docker media types in its manifest, skopeo copies it
    ddir = _untar(d, tmp_path / "dl")
    _, dman = _oci_manifest(ddir)
    assert dman["mediaType"] == mt.DOCKER_MANIFEST
    assert dman["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert {x["mediaType"] for x in dman["layers"]} == {mt.DOCKER_LAYER_GZIP}
    assert json.loads((ddir / "manifest.json").read_text())[0]["RepoTags"] == ["outs:1"]
    subprocess.run([SKOPEO, "copy", "-q", f"docker-archive:{d}", f"oci:{tmp_path / 'copy'}:x"],
                   check=True, capture_output=True)
    assert (tmp_path / "copy" / "index.json").exists()


@needs_root
def test_build_zstd_twice_compresses_once(cli, ctx, tmp_path):
    from pybuild.storeroot import StoreRoot

    def layers(tar):
        with tarfile.open(tar) as t:
            index = json.load(t.extractfile("index.json"))
            digest = index["manifests"][0]["digest"]
            return [x["digest"] for x in
                    json.load(t.extractfile(f"blobs/sha256/{digest[7:]}"))["layers"]]

    cli("build", "-t", "once:1", "-o", f"type=oci,dest={tmp_path}/o0.tar,compression=zstd",
        str(ctx))
    store = StoreRoot.open(str(cli.root))
    image = store.images.lookup("once:1")
    first = layers(tmp_path / "o0.tar")
    for layer, zstd_digest in zip(image.layers, first):
        assert store.index.get(LAYER_BLOBS, layer.diff_id).value["zstd"]["digest"] == zstd_digest
    # point the top layer's remembered zstd blob elsewhere: a second export that takes it
    # (instead of compressing again) shows it looked the layer up
    top = image.layers[-1]
    rec = store.index.get(LAYER_BLOBS, top.diff_id).value
    rec["zstd"] = {"digest": image.layers[0].digest, "size": image.layers[0].size}
    store.index.put(LAYER_BLOBS, top.diff_id, rec)
    cli("build", "-t", "once:1", "-o", f"type=oci,dest={tmp_path}/o1.tar,compression=zstd",
        str(ctx))
    assert layers(tmp_path / "o1.tar") == first[:-1] + [image.layers[0].digest]


@needs_root
def test_rewrite_timestamp_clamps_build_layers(cli, ctx, tmp_path):
    o = tmp_path / "rw.tar"
    cli("build", "-t", "rw:1", "-o", f"type=oci,dest={o},rewrite-timestamp=true",
        "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", str(ctx))
    layout = _untar(o, tmp_path / "rw")
    if UMOCI:  # the rewritten layers unpack (umoci 0.4 knows no zstd, so gzip only here)
        bundle = tmp_path / "bundle"
        subprocess.run([UMOCI, "unpack", "--image", f"{layout}:1", str(bundle)], check=True,
                       capture_output=True)
        assert (bundle / "rootfs" / "data" / "h").read_text() == "hello\n"
        assert not (bundle / "rootfs" / "etc" / "motd").exists()  # the whiteout held
        assert os.stat(bundle / "rootfs" / "data" / "h").st_mtime == EPOCH
    _, man = _oci_manifest(layout)
    mtimes = []
    for layer in man["layers"]:
        blob = (layout / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
            mtimes.append([m.mtime for m in t.getmembers()])
    base, *built = mtimes
    assert max(base) > EPOCH  # the busybox base was made today: left as it is
    assert built and all(max(m) <= EPOCH for m in built)
    assert any(EPOCH in m for m in built)  # files made during the build were clamped
    cfg = json.loads((layout / "blobs/sha256" / man["config"]["digest"][7:]).read_text())
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    r = cli("build", "-o", f"type=oci,dest={o},rewrite-timestamp=true", str(ctx), check=False,
            )
    if "SOURCE_DATE_EPOCH" not in os.environ:
        assert r.returncode == 1 and "SOURCE_DATE_EPOCH" in r.stderr


@needs_root
@pytest.mark.skipif(not SKOPEO, reason="skopeo not installed")
def test_save_load_history(cli, ctx, tmp_path):
    cli("build", "-t", "hist:1", str(ctx))
    digest = json.loads(cli("inspect", "hist:1").stdout)["Digest"]
    # by name: saved under it; by bare ID prefix: resolved like docker, saved unnamed
    named, unnamed = tmp_path / "n.tar", tmp_path / "u.tar"
    cli("save", "--format", "docker", "-o", str(named), "hist:1")
    cli("save", "--format", "docker", "-o", str(unnamed), digest[7:19])
    with tarfile.open(named) as t:
        assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] == ["hist:1"]
    with tarfile.open(unnamed) as t:
        assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] is None
    subprocess.run([SKOPEO, "copy", "-q", f"docker-archive:{named}", f"oci:{tmp_path / 'c'}:x"],
                   check=True, capture_output=True)
    # save as zstd OCI, inspect with skopeo, load into a fresh store: same digest
    z = tmp_path / "z.tar"
    cli("save", "--compression", "zstd", "-o", str(z), "hist:1")
    info = json.loads(subprocess.run([SKOPEO, "inspect", f"oci-archive:{z}"], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["Created"] and len(info["Layers"]) == 3
    zdigest = info["Digest"]
    from tests.conftest import Cli
    other = Cli(tmp_path / "other")
    assert zdigest in other("load", "-i", str(z)).stdout
    assert json.loads(other("inspect", "hist:1").stdout)["Digest"] == zdigest
    # docker-archive load keeps the (docker media type) manifest digest
    loaded = other("load", "-i", str(named)).stdout
    with tarfile.open(named) as t:
        index = json.load(t.extractfile("index.json"))
    assert index["manifests"][0]["digest"] in loaded
    # history: newest first, the layers where they belong
    h = cli("history", "hist:1").stdout.splitlines()
    assert h[0].split()[:2] == ["LAYER", "CREATED"]
    assert "CMD" in h[1] and "<missing>" in h[1]
    assert "RUN" in h[2] and "COPY a.txt" in h[3]
    q = cli("history", "-q", "hist:1").stdout.split()
    image = json.loads(cli("inspect", "hist:1").stdout)
    assert [x for x in q if x != "<missing>"] == \
        [x["digest"] for x in reversed(image["Manifest"]["layers"])]
