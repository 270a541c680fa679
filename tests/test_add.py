"""ADD end to end: downloads from an HTTP server the test starts on 127.0.0.1, git
checkouts from a `git daemon` the test starts, local archives unpacked by content, and
the predefined proxy ARGs. Needs root (the builds use namespaces and overlayfs)."""
from __future__ import annotations

import bz2
import email.utils
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import socket
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import needs_root, needs_tool

pytestmark = needs_root

LAST_MODIFIED = 1_600_000_000  # 2020-09-13T12:26:40Z


# --------------------------------------------------------------------------- helpers


class FileServer:
    """A tiny HTTP server: path -> bytes, with ETag/Last-Modified and a request log."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, int]] = []  # (path, status)
        files, log = self.files, self.log

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]  # git asks info/refs?service=...
                data = files.get(path)
                if data is None:
                    log.append((path, 404))
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    log.append((path, 304))
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                log.append((path, 200))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified",
                                 email.utils.formatdate(LAST_MODIFIED, usegmt=True))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def build(cli, ctx: Path, *extra: str, check: bool = True):
    return cli("build", "--progress=plain", *extra, str(ctx), check=check)


def cached_names(stderr: str) -> dict[str, bool]:
    """Step name -> whether the plain progress said CACHED."""
    names: dict[str, str] = {}
    cached: dict[str, bool] = {}
    for line in stderr.splitlines():
        m = re.match(r"#(\d+) (.*)$", line)
        if not m:
            continue
        num, rest = m.groups()
        if num not in names:
            names[num] = rest
            cached[rest] = False
        elif rest == "CACHED":
            cached[names[num]] = True
    return cached


def export(cli, ctx: Path, dest: Path, *extra: str) -> Path:
    build(cli, ctx, "-o", f"type=local,dest={dest}", *extra)
    return dest


def context(tmp_path: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (ctx / name).write_bytes(data)
    return ctx


# --------------------------------------------------------------------------- ADD <url>


def test_add_url_to_file_and_dir_mode_mtime(cli, server, tmp_path):
    server.files["/files/hello.txt"] = b"hello over http\n"
    ctx = context(tmp_path, f"FROM scratch\nADD {server.url}/files/hello.txt /data/renamed\n"
                            f"ADD {server.url}/files/hello.txt /dl/\n"
                            f"ADD --chmod=644 {server.url}/files/hello.txt /chmod/\n")
    out = export(cli, ctx, tmp_path / "out")
    for path in ("data/renamed", "dl/hello.txt"):
        f = out / path
        assert f.read_bytes() == b"hello over http\n"
        st = f.stat()
        assert st.st_mode & 0o7777 == 0o600
        assert int(st.st_mtime) == LAST_MODIFIED
    assert (out / "chmod/hello.txt").stat().st_mode & 0o7777 == 0o644


def test_add_url_checksum_ok_and_mismatch(cli, server, tmp_path):
    data = b"pinned content\n"
    server.files["/p"] = data
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    ctx = context(tmp_path, f"FROM scratch\nADD --checksum={good} {server.url}/p /p\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "p").read_bytes() == data

    bad = "sha256:" + "0" * 64
    (ctx / "Dockerfile").write_text(f"FROM scratch\nADD --checksum={bad} {server.url}/p /p\n")
    r = build(cli, ctx, check=False)
    assert r.returncode == 1
    assert "checksum mismatch" in r.stderr and bad in r.stderr
    assert "Traceback" not in r.stderr


def test_add_url_rebuild_is_cached_until_content_changes(cli, server, tmp_path):
    server.files["/v"] = b"version 1\n"
    ctx = context(tmp_path, f"FROM scratch\nADD {server.url}/v /v\n")
    build(cli, ctx, "-t", "addurl:1")
    before = len(server.log)
    again = build(cli, ctx, "-t", "addurl:1")
    step = next(n for n in cached_names(again.stderr) if n.startswith("ADD"))
    assert cached_names(again.stderr)[step]
    # the server was asked, with the ETag of the first download, and said "unchanged"
    assert server.log[before:] == [("/v", 304)]

    server.files["/v"] = b"version 2\n"
    changed = build(cli, ctx, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert not cached_names(changed.stderr)[step]
    assert (tmp_path / "out/v").read_bytes() == b"version 2\n"


def test_add_url_errors_are_clear(cli, server, tmp_path):
    ctx = context(tmp_path, f"FROM scratch\nADD {server.url}/missing /m\n")
    r = build(cli, ctx, check=False)
    assert r.returncode == 1
    assert "HTTP 404" in r.stderr and "Traceback" not in r.stderr


def test_remote_archive_is_not_unpacked_by_default(cli, server, tmp_path):
    server.files["/a.tar.gz"] = _tar_bytes("gz")
    ctx = context(tmp_path, f"FROM scratch\nADD {server.url}/a.tar.gz /packed/\n"
                            f"ADD --unpack=true {server.url}/a.tar.gz /unpacked/\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "packed/a.tar.gz").read_bytes() == server.files["/a.tar.gz"]
    assert (out / "unpacked/top/inner.txt").read_bytes() == b"inside gz\n"


# --------------------------------------------------------------------------- local archives


def _tar_bytes(kind: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in (("top/inner.txt", f"inside {kind}\n".encode(), 0o640),
                                 ("top/sub/deep.txt", b"deep\n", 0o600)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 1234567, 7, 8
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("top/link")
        link.type, link.linkname = tarfile.SYMTYPE, "inner.txt"
        tf.addfile(link)
    data = raw.getvalue()
    if kind == "gz":
        return gzip.compress(data, mtime=0)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zst":
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    return data


KINDS = ("tar", "gz", "bz2", "xz", "zst")


def test_add_local_archives_unpack_by_content(cli, tmp_path):
    # names say nothing: detection is by content, as in Docker
    files = {f"archive-{k}.bin": _tar_bytes(k) for k in KINDS}
    files["not-a-tar.gz"] = b"\x1f\x8b but not really gzip"
    lines = ["FROM busybox:local"] + [f"ADD archive-{k}.bin /x/{k}/" for k in KINDS]
    lines += ["ADD not-a-tar.gz /plain/", "ADD --unpack=false archive-gz.bin /kept/",
              # merged like tar -x: existing files stay, same names are replaced
              "ADD archive-tar.bin /merge/", "ADD archive-gz.bin /merge/"]
    ctx = context(tmp_path, "\n".join(lines) + "\n", files)
    out = export(cli, ctx, tmp_path / "out", "-t", "archives:1")
    # owners, modes and mtimes come from the archive (a local export does not keep owners)
    stats = cli("run", "--rm", "archives:1", "stat", "-c", "%a %u %g %Y",
                *[f"/x/{k}/top/inner.txt" for k in KINDS]).stdout.split("\n")
    assert stats[:len(KINDS)] == ["640 7 8 1234567"] * len(KINDS)
    for k in KINDS:
        inner = out / f"x/{k}/top/inner.txt"
        assert inner.read_bytes() == f"inside {k}\n".encode()
        assert (out / f"x/{k}/top/sub/deep.txt").read_bytes() == b"deep\n"
        assert os.readlink(out / f"x/{k}/top/link") == "inner.txt"
    assert (out / "plain/not-a-tar.gz").read_bytes() == files["not-a-tar.gz"]
    assert (out / "kept/archive-gz.bin").read_bytes() == files["archive-gz.bin"]
    assert (out / "merge/top/inner.txt").read_bytes() == b"inside gz\n"


def test_add_local_archive_cannot_escape(cli, tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    ctx = context(tmp_path, "FROM scratch\nADD evil.tar /x/\n", {"evil.tar": raw.getvalue()})
    r = build(cli, ctx, check=False)
    assert r.returncode == 1 and "escapes" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- ADD <git>


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e", GIT_CONFIG_NOSYSTEM="1", HOME=str(cwd))
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def git_daemon(tmp_path):
    """A repository `repo.git` (branch main: two commits, tag v1 on the first) served by
    `git daemon` on 127.0.0.1; yields (base URL, {name: commit})."""
    base = tmp_path / "git"
    work = base / "work"
    work.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "sub").mkdir()
    (work / "sub/file.txt").write_text("one\n")
    (work / "README").write_text("readme\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    first = _git("rev-parse", "HEAD", cwd=work)
    _git("tag", "-a", "v1", "-m", "v1", cwd=work)
    (work / "sub/file.txt").write_text("two\n")
    _git("commit", "-q", "-am", "second", cwd=work)
    second = _git("rev-parse", "HEAD", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=base)
    port = _free_port()
    proc = subprocess.Popen(["git", "daemon", f"--base-path={base}", "--export-all",
                             "--listen=127.0.0.1", f"--port={port}", "--reuseaddr", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("git daemon did not start")
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/repo.git", {"first": first, "second": second}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_tool("git")
def test_add_git_checkout_with_and_without_git_dir(cli, git_daemon, tmp_path):
    url, commits = git_daemon
    ctx = context(tmp_path, f"FROM scratch\nADD {url}#main /plain/\n"
                            f"ADD --keep-git-dir=true {url}#main /kept/\n"
                            f"ADD {url}#v1:sub /tagged-sub/\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "plain/sub/file.txt").read_text() == "two\n"
    assert (out / "plain/README").read_text() == "readme\n"
    assert not (out / "plain/.git").exists()
    assert (out / "kept/.git").is_dir()
    head = _git("rev-parse", "HEAD", cwd=out / "kept")
    assert head == commits["second"]
    assert (out / "tagged-sub/file.txt").read_text() == "one\n"
    assert not (out / "tagged-sub/README").exists()


@needs_tool("git")
def test_add_git_checksum_and_cache(cli, git_daemon, tmp_path):
    url, commits = git_daemon
    ctx = context(tmp_path, f"FROM scratch\nADD --checksum={commits['first'][:12]} {url}#v1 /s/\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "s/sub/file.txt").read_text() == "one\n"
    again = build(cli, ctx)
    assert all(cached for name, cached in cached_names(again.stderr).items()
               if name.startswith("ADD"))

    (ctx / "Dockerfile").write_text(f"FROM scratch\nADD --checksum={commits['first'][:12]} "
                                    f"{url}#main /s/\n")
    r = build(cli, ctx, check=False)
    assert r.returncode == 1
    assert "checksum mismatch" in r.stderr and commits["second"] in r.stderr
    assert "Traceback" not in r.stderr


@needs_tool("git")
def test_add_git_by_commit_full_and_abbreviated(cli, git_daemon, tmp_path):
    url, commits = git_daemon
    ctx = context(tmp_path, f"FROM scratch\nADD {url}#{commits['first']} /full/\n"
                            f"ADD {url}#{commits['first'][:10]}:sub /short/\n"
                            f"ADD {url} /head/\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "full/sub/file.txt").read_text() == "one\n"
    assert (out / "short/file.txt").read_text() == "one\n"
    assert (out / "head/sub/file.txt").read_text() == "two\n"
    ctx.joinpath("Dockerfile").write_text(f"FROM scratch\nADD {url}#nope /x/\n")
    r = build(cli, ctx, check=False)
    assert r.returncode == 1 and "ref 'nope' not found" in r.stderr


@needs_tool("git")
def test_add_git_over_http(cli, git_daemon, server, tmp_path):
    # a `.git` URL over HTTP is a repository, not a download (git's "dumb" HTTP protocol)
    bare = tmp_path / "git/repo.git"
    _git("update-server-info", cwd=bare)
    for f in bare.rglob("*"):
        if f.is_file():
            server.files["/repo.git/" + f.relative_to(bare).as_posix()] = f.read_bytes()
    ctx = context(tmp_path, f"FROM scratch\nADD {server.url}/repo.git#main:sub /h/\n")
    out = export(cli, ctx, tmp_path / "out")
    assert (out / "h/file.txt").read_text() == "two\n"


# --------------------------------------------------------------------------- proxy args


def test_proxy_build_args_reach_run_but_not_the_cache_key(cli, tmp_path):
    ctx = context(tmp_path, "FROM busybox:local\nRUN echo \"$HTTP_PROXY $no_proxy\" > /out\n")
    build(cli, ctx, "-t", "proxy:1", "--build-arg", "HTTP_PROXY=http://p1:3128",
          "--build-arg", "NO_PROXY=internal")
    assert cli("run", "--rm", "proxy:1", "cat", "/out").stdout == "http://p1:3128 internal\n"
    again = build(cli, ctx, "-t", "proxy:2", "--build-arg", "HTTP_PROXY=http://p2:3128")
    assert cached_names(again.stderr)["RUN echo \"$HTTP_PROXY $no_proxy\" > /out"]
    assert "were not consumed" not in again.stderr
    history = json.loads(cli("inspect", "proxy:2").stdout)["Config"]["history"]
    assert not any("p2" in h.get("created_by", "") for h in history)


def test_maintainer_is_the_image_author(cli, tmp_path):
    ctx = context(tmp_path, "FROM busybox:local\nMAINTAINER Jane Doe <jane@example.com>\n")
    build(cli, ctx, "-t", "maint:1")
    assert json.loads(cli("inspect", "maint:1").stdout)["Config"]["author"] == \
        "Jane Doe <jane@example.com>"
