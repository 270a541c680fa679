"""Layer tars (writer and safe extractor) and the snapshot store."""
from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
import threading

import pytest

from pybuild.errors import PybuildError
from pybuild.snapshot.diff import TarEntry, write_layer_tar, write_tar_entries
from pybuild.snapshot.extract import LayerError, decompressing_reader, extract_layer
from pybuild.snapshot.store import SnapshotStore

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted xattrs)")


def tar_bytes(src: str, **kw) -> bytes:
    buf = io.BytesIO()
    write_layer_tar(src, buf, **kw)
    return buf.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    return list(tarfile.open(fileobj=io.BytesIO(data)))


def make_tree(d) -> None:
    (d / "etc").mkdir()
    (d / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (d / "bin").mkdir()
    (d / "bin" / "tool").write_bytes(b"\x7fELF" + b"x" * 3000)
    os.chmod(d / "bin" / "tool", 0o4755)
    os.link(d / "bin" / "tool", d / "bin" / "tool2")
    os.symlink("tool", d / "bin" / "sym")
    long_dir = d / ("a" * 60) / ("b" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "é-ü.txt").write_text("unicode")
    os.symlink("x" * 150, d / "longlink")
    os.mkfifo(d / "fifo")
    os.setxattr(d / "etc" / "passwd", "user.note", b"\x00\xffbinary")


# --- writer ----------------------------------------------------------------------

def test_writer_is_deterministic_and_readable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    a = tar_bytes(str(src), source_date_epoch=1000)
    b = tar_bytes(str(src), source_date_epoch=1000)
    assert a == b
    # a copy with other inodes and mtimes gives the same bytes once mtimes are clamped
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(src), str(copy)], check=True)
    os.unlink(copy / "bin" / "tool2")
    os.link(copy / "bin" / "tool", copy / "bin" / "tool2")
    assert tar_bytes(str(copy), source_date_epoch=1000) == a

    ms = {m.name: m for m in members(a)}
    names = [m.name for m in members(a)]
    # depth-first, bytewise-sorted siblings, each directory before its contents
    order = ["a" * 60, "bin", "bin/sym", "bin/tool", "bin/tool2", "etc", "etc/passwd", "fifo", "longlink"]
    assert [n for n in names if n in order] == order
    assert ms["bin/tool2"].islnk() and ms["bin/tool2"].linkname == "bin/tool"
    assert ms["bin/tool"].mode == 0o4755 and ms["bin/tool"].size == 3004
    assert ms["bin/sym"].issym() and ms["bin/sym"].linkname == "tool"
    assert ms["longlink"].linkname == "x" * 150
    assert ms["fifo"].isfifo()
    assert ms[f"{'a' * 60}/{'b' * 60}/é-ü.txt"].isfile()
    assert all(m.mtime == 1000 and m.uname == "" and m.gname == "" for m in ms.values())
    assert ms["etc/passwd"].pax_headers["SCHILY.xattr.user.note"].encode(
        "utf-8", "surrogateescape") == b"\x00\xffbinary"
    assert len(a) % 512 == 0 and a.endswith(b"\0" * 1024)
    # GNU tar agrees
    (tmp_path / "l.tar").write_bytes(a)
    out = subprocess.run(["tar", "tf", str(tmp_path / "l.tar")], capture_output=True, text=True, check=True)
    assert "bin/tool2\n" in out.stdout and "etc/\n" in out.stdout


def test_writer_integer_mtimes_without_epoch(tmp_path):
    (tmp_path / "f").write_text("x")
    os.utime(tmp_path / "f", (1.75, 12345.75))
    (m,) = members(tar_bytes(str(tmp_path)))
    assert m.mtime == 12345 and "mtime" not in m.pax_headers


@root_only
def test_writer_translates_overlay_whiteouts(tmp_path):
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "trusted.overlay.opaque", b"y")
    os.setxattr(tmp_path / "d", "trusted.overlay.origin", b"zzz")
    (tmp_path / "d" / "keep").write_text("k")
    os.mknod(tmp_path / "gone", stat.S_IFCHR | 0, 0)
    os.mknod(tmp_path / "realdev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    ms = members(tar_bytes(str(tmp_path)))
    names = [m.name for m in ms]
    assert names == ["d", "d/.wh..wh..opq", "d/keep", ".wh.gone", "realdev"]
    by = {m.name: m for m in ms}
    assert by[".wh.gone"].isfile() and by[".wh.gone"].size == 0
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for k in by["d"].pax_headers)
    assert by["realdev"].ischr() and (by["realdev"].devmajor, by["realdev"].devminor) == (1, 3)
    # without translation, the whiteout is kept as the device it is
    plain = {m.name: m for m in members(tar_bytes(str(tmp_path), overlay_whiteouts=False))}
    assert plain["gone"].ischr() and ".wh.gone" not in plain and "d/.wh..wh..opq" not in plain


def test_write_tar_entries(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"B" * 1000)
    entries = [TarEntry.file("index.json", b"{}"), TarEntry.directory("blobs/sha256"),
               TarEntry.host_file("blobs/sha256/abc", str(blob)), TarEntry.file("oci-layout", b"{}")]
    out1, out2 = io.BytesIO(), io.BytesIO()
    stats = write_tar_entries(entries, out1)
    write_tar_entries(list(reversed(entries)), out2)
    assert out1.getvalue() == out2.getvalue()
    assert stats.entries == 4 and stats.size == len(out1.getvalue())
    ms = members(out1.getvalue())
    assert [m.name for m in ms] == ["blobs/sha256", "blobs/sha256/abc", "index.json", "oci-layout"]
    assert tarfile.open(fileobj=io.BytesIO(out1.getvalue())).extractfile("blobs/sha256/abc").read() == b"B" * 1000


# --- extractor -------------------------------------------------------------------

def tar_of(*items) -> io.BytesIO:
    """items: (name, type, extra) → an in-memory tar written by tarfile (as an attacker would)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in items:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1000
            if kind == "file":
                data = extra.encode() if isinstance(extra, str) else extra
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            tf.addfile(ti)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("items", [
    [("../x", "file", "evil")],
    [("a/../../x", "file", "evil")],
    [("/abs", "file", "evil")],
    [("a", "sym", "/"), ("a/x", "file", "evil")],
    [("a", "sym", "../../.."), ("a/x", "file", "evil")],
    [("d", "dir", None), ("d/s", "sym", "/etc"), ("d/s/passwd", "file", "evil")],
    [("h", "link", "../outside")],
    [("h", "link", "/etc/passwd")],
    [("h", "link", "nothere")],
    [("a", "sym", "/etc"), ("h", "link", "a/passwd")],
], ids=["dotdot", "dotdot-nested", "absolute", "symlink-root", "symlink-rel", "symlink-deep",
        "hardlink-dotdot", "hardlink-abs", "hardlink-missing", "hardlink-through-symlink"])
def test_extract_rejects_escapes(tmp_path, items):
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").write_text("host")
    with pytest.raises(LayerError) as exc:
        extract_layer(tar_of(*items), str(dest))
    assert isinstance(exc.value, PybuildError)
    assert (tmp_path / "outside").read_text() == "host"
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_extract_replaces_symlink_instead_of_following(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").write_text("host")
    extract_layer(tar_of(("f", "sym", str(tmp_path / "outside")), ("f", "file", "mine")), str(dest))
    assert (tmp_path / "outside").read_text() == "host"
    assert (dest / "f").read_text() == "mine" and not (dest / "f").is_symlink()


@root_only
def test_extract_overlay_format_and_roundtrip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    (src / "opq").mkdir()
    os.setxattr(src / "opq", "trusted.overlay.opaque", b"y")
    os.mknod(src / "etc" / "gone", stat.S_IFCHR, 0)
    os.chown(src / "etc" / "passwd", 1000, 1001)
    data = tar_bytes(str(src), source_date_epoch=5000)
    assert ".wh.gone" in data.decode("latin-1")
    dest = tmp_path / "dest"
    dest.mkdir()
    extract_layer(io.BytesIO(data), str(dest))
    st = os.lstat(dest / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "opq", "trusted.overlay.opaque") == b"y"
    assert not (dest / "opq" / ".wh..wh..opq").exists()
    pst = os.stat(dest / "etc" / "passwd")
    assert (pst.st_uid, pst.st_gid, int(pst.st_mtime)) == (1000, 1001, 5000)
    assert os.stat(dest / "bin" / "tool").st_ino == os.stat(dest / "bin" / "tool2").st_ino
    assert os.stat(dest / "bin" / "tool").st_mode & 0o7777 == 0o4755
    assert os.getxattr(dest / "etc" / "passwd", "user.note") == b"\x00\xffbinary"
    assert int(os.stat(dest / "etc").st_mtime) == 5000
    # extracting and re-tarring gives the very same bytes
    assert tar_bytes(str(dest), source_date_epoch=5000) == data


def test_extract_ignores_overlay_xattrs_from_tar(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("d")
        ti.type = tarfile.DIRTYPE
        ti.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
        tf.addfile(ti)
    buf.seek(0)
    (tmp_path / "dest").mkdir()
    extract_layer(buf, str(tmp_path / "dest"))
    assert "trusted.overlay.redirect" not in os.listxattr(tmp_path / "dest" / "d")


def test_extract_rejects_garbage(tmp_path):
    with pytest.raises(LayerError):
        extract_layer(io.BytesIO(b"not a tar at all" * 100), str(tmp_path))


def test_decompressing_reader(tmp_path):
    import zstandard
    raw = tar_of(("f", "file", "hello")).getvalue()
    for blob in (raw, gzip.compress(raw, mtime=0), zstandard.ZstdCompressor().compress(raw)):
        assert decompressing_reader(io.BytesIO(blob)).read() == raw
    assert decompressing_reader(io.BytesIO(b"")).read() == b""


# --- store -----------------------------------------------------------------------

def test_store_ensure_once_and_get(tmp_path):
    store = SnapshotStore(str(tmp_path / "snap"))
    raw = tar_of(("etc", "dir", None), ("etc/os-release", "file", "busybox")).getvalue()
    calls = []

    def opener():
        calls.append(1)
        return io.BytesIO(raw)

    assert store.get("sha256:aa") is None
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.ensure("sha256:aa", opener)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    path = results[0]
    assert path == os.path.join(store.root, "s", "1")
    assert open(os.path.join(path, "etc", "os-release")).read() == "busybox"
    assert SnapshotStore(store.root).get("sha256:aa") == path  # persisted
    assert os.listdir(store.tmp_dir) == []


def test_store_failed_unpack_leaves_nothing(tmp_path):
    store = SnapshotStore(str(tmp_path / "snap"))
    with pytest.raises(LayerError):
        store.ensure("sha256:bad", lambda: tar_of(("../x", "file", "e")))
    assert store.get("sha256:bad") is None
    assert os.listdir(store.tmp_dir) == [] and os.listdir(store.snap_dir) == []


def test_store_work_adopt_discard(tmp_path):
    store = SnapshotStore(str(tmp_path / "snap"))
    upper, work = store.new_work()
    assert os.path.isdir(upper) and os.path.isdir(work)
    assert os.stat(upper).st_dev == os.stat(work).st_dev
    (open(os.path.join(upper, "new"), "w")).write("n")
    snap = store.adopt("sha256:up", upper)
    assert store.get("sha256:up") == snap and os.listdir(snap) == ["new"]
    assert os.listdir(store.work_dir) == []
    # adopting a layer that is already known keeps the first one
    upper2, _ = store.new_work()
    assert store.adopt("sha256:up", upper2) == snap and os.listdir(store.work_dir) == []
    u3, w3 = store.new_work()
    store.discard(w3)
    assert not os.path.exists(u3)
    store.discard(snap)
    assert store.get("sha256:up") is None and not os.path.exists(snap)
    with pytest.raises(PybuildError):
        store.discard(str(tmp_path))


@pytest.mark.parametrize("recorded, error", [(5, "grew"), (20, "shrank")])
def test_layer_tar_refuses_a_small_file_that_changed_size(tmp_path, recorded, error):
    # small files are read whole in one call: a size other than the lstat's is still caught
    from pybuild.snapshot.diff import _read_whole

    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    fd = os.open(f, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=error):
            _read_whole(fd, recorded, b"f")
        os.lseek(fd, 0, os.SEEK_SET)
        assert _read_whole(fd, 10, b"f") == b"0123456789"
    finally:
        os.close(fd)
