"""Reproducible images: with SOURCE_DATE_EPOCH and rewrite-timestamp=true, the same inputs
built in two fresh stores at different times give byte-identical images (manifest, config
and every layer, gzip and zstd alike); without SOURCE_DATE_EPOCH, `created` tells them
apart."""
from __future__ import annotations

import json
import tarfile
import time

import pytest

from tests.conftest import Cli, needs_root

EPOCH = "1700000000"
DOCKERFILE = """\
FROM busybox:local
COPY app/ /app/
RUN mkdir -p /out/sub && echo built > /out/f && ln -s f /out/link && touch /out/sub/g \\
    && chmod 0750 /out/sub && rm /etc/motd && echo x >> /etc/passwd
ENV GREETING=hi
RUN ["/bin/sh", "-c", "cp /app/a.txt /out/copied && mkdir /empty"]
"""


@pytest.fixture(scope="module")
def base_tar(tmp_path_factory, base_rootfs):
    """busybox:local saved once, so that both stores start from the same base image."""
    d = tmp_path_factory.mktemp("base")
    cli = Cli(d / "store")
    cli("import", str(base_rootfs), "busybox:local")
    cli("save", "-o", str(d / "base.tar"), "busybox:local")
    return d / "base.tar"


def _context(where):
    """A fresh copy of the build context (new files, new mtimes)."""
    ctx = where / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app" / "a.txt").write_text("context file\n")
    (ctx / "app" / "b.bin").write_bytes(bytes(range(256)) * 64)
    return ctx


def _build(where, base_tar, *args):
    cli = Cli(where / "store")
    cli("load", "-i", str(base_tar))
    ctx = _context(where)
    digest = cli("build", "-q", "--progress=plain", "-t", "repro:1",
                 "-o", f"type=oci,dest={where / 'gz.tar'},rewrite-timestamp=true",
                 "-o", f"type=oci,dest={where / 'zstd.tar'},rewrite-timestamp=true,"
                       "compression=zstd",
                 "-o", "type=image,name=repro:rw,rewrite-timestamp=true",
                 *args, str(ctx)).stdout.strip()
    return digest


def _manifest_digest(tar):
    with tarfile.open(tar) as t:
        return json.load(t.extractfile("index.json"))["manifests"][0]["digest"]


@needs_root
def test_same_inputs_same_bytes(tmp_path, base_tar, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)  # from the environment ...
    first = _build(a, base_tar)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    time.sleep(1.1)  # a different wall clock second for every timestamp the build makes
    second = _build(b, base_tar, "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")  # ... or an arg
    assert first == second and first.startswith("sha256:")
    for name in ("gz.tar", "zstd.tar"):
        assert _manifest_digest(a / name) == _manifest_digest(b / name)
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert _manifest_digest(a / "gz.tar") == first
    assert _manifest_digest(a / "zstd.tar") != first
    with tarfile.open(a / "gz.tar") as t:
        names = t.getnames()
        manifest = json.load(t.extractfile(f"blobs/sha256/{first[7:]}"))
        config = json.load(t.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))
    assert config["created"] == "2023-11-14T22:13:20Z"
    built = [h for h in config["history"] if "buildkit.dockerfile" in h.get("comment", "")]
    assert built and all(h["created"] == config["created"] for h in built)
    assert names == sorted(names)


@needs_root
def test_without_source_date_epoch_builds_differ(tmp_path, base_tar, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    cli_a, cli_b = Cli(a / "store"), Cli(b / "store")
    digests = []
    for where, cli in ((a, cli_a), (b, cli_b)):
        cli("load", "-i", str(base_tar))
        digests.append(cli("build", "-q", str(_context(where))).stdout.strip())
        time.sleep(1.1)
    assert digests[0] != digests[1]  # `created` is the wall clock
