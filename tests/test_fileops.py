"""COPY/ADD-style file actions on plain directories, and the one path resolver."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pybuild.fileops import (FileOpError, ModeSpec, SourceNotFound, apply_copy, apply_mkdir,
                             apply_mkfile, parse_chmod, parse_chown)
from pybuild.graph import Copy, ImageSource, LocalSource, Mkdir, Mkfile
from pybuild.pathres import PathResolveError, rel_to_root, resolve_in_root, resolve_rel

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="chown needs root")


def ctx_copy(src, dest, **kw) -> Copy:
    return Copy(source=LocalSource(), src=tuple(src), dest=dest, **kw)


def stage_copy(src, dest, **kw) -> Copy:
    return Copy(source=ImageSource(manifest_digest="sha256:" + "0" * 64), src=tuple(src),
                dest=dest, **kw)


def write(path: Path, data: str = "x", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    if mode is not None:
        path.chmod(mode)
    return path


def tree(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


@pytest.fixture
def roots(tmp_path):
    src = tmp_path / "ctx"
    dst = tmp_path / "rootfs"
    src.mkdir()
    dst.mkdir()
    return src, dst


# ------------------------------------------------------------------ pathres


def test_resolve_plain_and_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert resolve_in_root(str(tmp_path), "/a/b") == str(tmp_path / "a" / "b")
    assert resolve_in_root(str(tmp_path), "a/missing/x") == str(tmp_path / "a/missing/x")
    assert resolve_in_root(str(tmp_path), "/") == str(tmp_path)
    assert resolve_rel(str(tmp_path), "../../..") == ""


@pytest.mark.parametrize("link,path,expect", [
    ("/", "etc/passwd", "passwd"),                # /etc -> / stays in the root
    ("../../../..", "etc/passwd", "passwd"),      # .. clamps at the root
    ("/usr/lib", "etc/x", "usr/lib/x"),           # absolute targets are re-rooted
    ("sub", "etc/x", "sub/x"),                    # relative targets from the link's dir
])
def test_resolve_symlink_escapes(tmp_path, link, path, expect):
    os.symlink(link, tmp_path / "etc")
    assert resolve_in_root(str(tmp_path), path) == str(tmp_path / expect)


def test_resolve_final_and_loops(tmp_path):
    os.symlink("/target", tmp_path / "link")
    assert resolve_in_root(str(tmp_path), "link") == str(tmp_path / "target")
    assert resolve_in_root(str(tmp_path), "link", follow_final=False) == str(tmp_path / "link")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    with pytest.raises(PathResolveError):
        resolve_in_root(str(tmp_path), "loop1/x")


def test_resolve_dotdot_after_symlink_uses_real_parent(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink("a/b", tmp_path / "l")
    os.symlink("../c", tmp_path / "a" / "b" / "up")  # -> a/c, not l/../c
    assert resolve_in_root(str(tmp_path), "l/up") == str(tmp_path / "a" / "c")


def test_rel_to_root(tmp_path):
    assert rel_to_root(str(tmp_path), str(tmp_path / "x" / "y")) == "x/y"
    assert rel_to_root(str(tmp_path), str(tmp_path)) == ""
    with pytest.raises(PathResolveError):
        rel_to_root(str(tmp_path / "x"), str(tmp_path / "xy"))


# ------------------------------------------------------------------ COPY: selection


def test_dir_source_copies_contents(roots):
    src, dst = roots
    write(src / "app" / "main.py", "print()")
    write(src / "app" / "pkg" / "mod.py", "m")
    apply_copy(ctx_copy(["app"], "/srv"), str(src), str(dst))
    assert tree(dst) == ["srv", "srv/main.py", "srv/pkg", "srv/pkg/mod.py"]
    assert (dst / "srv/pkg/mod.py").read_text() == "m"


def test_file_to_dir_and_to_name(roots):
    src, dst = roots
    write(src / "a.txt", "A")
    apply_copy(ctx_copy(["a.txt"], "/d/"), str(src), str(dst))
    apply_copy(ctx_copy(["a.txt"], "/renamed"), str(src), str(dst))
    (dst / "existing").mkdir()
    apply_copy(ctx_copy(["a.txt"], "/existing"), str(src), str(dst))
    assert (dst / "d/a.txt").read_text() == "A"
    assert (dst / "renamed").read_text() == "A"
    assert (dst / "existing/a.txt").read_text() == "A"


def test_relative_dest_uses_workdir(roots):
    src, dst = roots
    write(src / "a.txt")
    apply_copy(ctx_copy(["a.txt"], "sub/", dest_cwd="/work"), str(src), str(dst))
    apply_copy(ctx_copy(["a.txt"], ".", dest_cwd="/work2"), str(src), str(dst))
    assert (dst / "work/sub/a.txt").is_file()
    assert (dst / "work2/a.txt").is_file()


def test_wildcards(roots):
    src, dst = roots
    for n in ("a.txt", "b.txt", "c.md", "sub/d.txt", "dir1/x", "dir2/y"):
        write(src / n, n)
    apply_copy(ctx_copy(["*.txt"], "/t/"), str(src), str(dst))
    assert tree(dst / "t") == ["a.txt", "b.txt"]
    apply_copy(ctx_copy(["*/d.txt", "dir?"], "/u/"), str(src), str(dst))
    assert tree(dst / "u") == ["d.txt", "x", "y"]  # matched dirs copy their contents
    apply_copy(ctx_copy(["[ab].txt"], "/v/"), str(src), str(dst))
    assert tree(dst / "v") == ["a.txt", "b.txt"]


def test_empty_wildcard(roots):
    src, dst = roots
    apply_copy(ctx_copy(["*.none"], "/x/", allow_empty_wildcard=True), str(src), str(dst))
    assert tree(dst) == []
    with pytest.raises(SourceNotFound):
        apply_copy(ctx_copy(["*.none"], "/x/"), str(src), str(dst))


def test_missing_source_message(roots):
    src, dst = roots
    with pytest.raises(SourceNotFound) as exc:
        apply_copy(ctx_copy(["missing"], "/x"), str(src), str(dst))
    assert str(exc.value) == 'failed to compute cache key: "/missing": not found'


def test_multiple_sources_need_dir_dest(roots):
    src, dst = roots
    write(src / "a")
    write(src / "b")
    with pytest.raises(FileOpError) as exc:
        apply_copy(ctx_copy(["a", "b"], "/dest"), str(src), str(dst))
    assert "must be a directory and end with a /" in str(exc.value)
    apply_copy(ctx_copy(["a", "b"], "/dest/"), str(src), str(dst))
    assert tree(dst / "dest") == ["a", "b"]


def test_file_over_directory_fails(roots):
    src, dst = roots
    write(src / "x" / "f")
    (dst / "d" / "f" / "inner").mkdir(parents=True)
    with pytest.raises(FileOpError, match="cannot replace to directory /d/f with file"):
        apply_copy(ctx_copy(["x"], "/d"), str(src), str(dst))


def test_source_paths_cannot_climb(roots):
    src, dst = roots
    write(src / "a.txt", "in")
    write(src.parent / "outside.txt", "secret")
    apply_copy(ctx_copy(["../../a.txt"], "/"), str(src), str(dst))
    assert (dst / "a.txt").read_text() == "in"
    with pytest.raises(SourceNotFound):
        apply_copy(ctx_copy(["../outside.txt"], "/"), str(src), str(dst))


def test_context_symlink_to_host_file_is_not_followed_out(roots):
    src, dst = roots
    os.symlink("/etc/passwd", src / "passwd")
    with pytest.raises(SourceNotFound):
        apply_copy(ctx_copy(["passwd"], "/x"), str(src), str(dst))
    write(src / "etc" / "passwd", "ours")  # re-rooted: /etc/passwd inside the context
    apply_copy(ctx_copy(["passwd"], "/x"), str(src), str(dst))
    assert (dst / "x").read_text() == "ours"


def test_symlinks_kept_inside_dirs_and_followed_at_top(roots):
    src, dst = roots
    write(src / "real.txt", "R")
    os.symlink("real.txt", src / "link.txt")
    write(src / "d" / "f", "F")
    os.symlink("/etc/shadow", src / "d" / "abs")
    os.symlink("d", src / "dlink")
    apply_copy(ctx_copy(["link.txt"], "/top"), str(src), str(dst))
    assert (dst / "top").read_text() == "R" and not (dst / "top").is_symlink()
    apply_copy(ctx_copy(["dlink"], "/viadir"), str(src), str(dst))  # contents of d
    assert os.readlink(dst / "viadir" / "abs") == "/etc/shadow"
    assert (dst / "viadir/f").read_text() == "F"
    apply_copy(ctx_copy(["link.txt"], "/nofollow", follow_symlinks=False), str(src), str(dst))
    assert os.readlink(dst / "nofollow") == "real.txt"


def test_dest_symlink_cannot_redirect_outside(roots, tmp_path):
    src, dst = roots
    write(src / "x", "payload")
    os.symlink("/", dst / "etc")  # /etc -> / in the image
    outside = tmp_path / "victim"
    outside.mkdir()
    os.symlink(str(outside), dst / "escape")  # absolute host path: re-rooted, not followed
    apply_copy(ctx_copy(["x"], "/etc/x"), str(src), str(dst))
    assert (dst / "x").read_text() == "payload"
    apply_copy(ctx_copy(["x"], "/escape/"), str(src), str(dst))
    assert list(outside.iterdir()) == []
    assert (dst / outside.relative_to("/") / "x").read_text() == "payload"


def test_dest_dir_symlink_is_merged_like_usrmerge(roots):
    src, dst = roots
    write(src / "lib" / "libfoo.so", "so")
    (dst / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", dst / "lib")
    apply_copy(ctx_copy(["."], "/"), str(src), str(dst))
    assert (dst / "usr/lib/libfoo.so").read_text() == "so"
    assert (dst / "lib").is_symlink()


def test_file_replaces_dest_symlink_not_its_target(roots, tmp_path):
    src, dst = roots
    write(src / "d" / "f", "new")
    (dst / "d").mkdir()
    write(tmp_path / "host.txt", "host")
    os.symlink(str(tmp_path / "host.txt"), dst / "d" / "f")
    apply_copy(ctx_copy(["d"], "/d"), str(src), str(dst))
    assert (tmp_path / "host.txt").read_text() == "host"
    assert not (dst / "d/f").is_symlink() and (dst / "d/f").read_text() == "new"


def test_modes_mtimes_hardlinks(roots):
    src, dst = roots
    f = write(src / "d" / "run.sh", "#!/bin/sh", 0o750)
    os.link(f, src / "d" / "hard.sh")
    (src / "d" / "sub").mkdir(mode=0o711)
    os.utime(f, ns=(1_000_000_000, 1_234_567_890_123))
    os.utime(src / "d" / "sub", ns=(1, 2_000_000_000))
    apply_copy(ctx_copy(["d"], "/d"), str(src), str(dst))
    st = os.stat(dst / "d/run.sh")
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime_ns == 1_234_567_890_123
    assert st.st_ino == os.stat(dst / "d/hard.sh").st_ino
    sub = os.stat(dst / "d/sub")
    assert stat.S_IMODE(sub.st_mode) == 0o711 and sub.st_mtime_ns == 2_000_000_000


def test_exclude(roots):
    src, dst = roots
    for n in ("dir1/a.png", "dir1/b.txt", "dir2/c.pdf", "dir2/keep.png", "top.txt"):
        write(src / n, n)
    apply_copy(ctx_copy(["."], "/1", exclude=("*/*.png", "!dir2/keep.png")), str(src), str(dst))
    assert tree(dst / "1") == ["dir1", "dir1/b.txt", "dir2", "dir2/c.pdf", "dir2/keep.png",
                               "top.txt"]
    # relative to each source: dir* matches dir1 and dir2, `*.txt` applies inside them
    apply_copy(ctx_copy(["dir*"], "/2/", exclude=("*.txt", "*.pdf")), str(src), str(dst))
    assert tree(dst / "2") == ["a.png", "keep.png"]
    # a file picked by a wildcard is excluded by its name (Docker's documented example)
    apply_copy(ctx_copy(["t*"], "/3/", exclude=("*.txt",)), str(src), str(dst))
    assert not (dst / "3").exists() or tree(dst / "3") == []
    apply_copy(ctx_copy(["dir*"], "/4", exclude=("*",)), str(src), str(dst))
    assert tree(dst / "4") == []


def test_parents(roots):
    src, dst = roots
    for n in ("x/a.txt", "y/a.txt", "x/deep/b.txt", "x/deep/c.md", "p/q/r.txt"):
        write(src / n, n)
    apply_copy(ctx_copy(["x/a.txt", "y/a.txt"], "/out/", parents=True), str(src), str(dst))
    assert tree(dst / "out") == ["x", "x/a.txt", "y", "y/a.txt"]
    apply_copy(ctx_copy(["x/**/*.txt"], "/two/", parents=True), str(src), str(dst))
    assert tree(dst / "two") == ["x", "x/a.txt", "x/deep", "x/deep/b.txt"]
    apply_copy(ctx_copy(["p/./q/*.txt"], "/pivot/", parents=True), str(src), str(dst))
    assert tree(dst / "pivot") == ["q", "q/r.txt"]
    with pytest.raises(SourceNotFound):
        apply_copy(ctx_copy(["x/nope.txt"], "/out/", parents=True), str(src), str(dst))


def test_dockerignore_view(roots):
    src, dst = roots
    for n in ("keep.txt", "skip.log", "node_modules/m/index.js", "docs/a.md", "docs/README.md"):
        write(src / n, n)
    ignored = {"skip.log", "node_modules", "docs"}

    def ignore(rel: str) -> bool:
        top = rel.split("/")[0]
        return (top in ignored or rel in ignored) and rel != "docs/README.md"

    apply_copy(ctx_copy(["."], "/app"), str(src), str(dst), ignore=ignore)
    assert tree(dst / "app") == ["docs", "docs/README.md", "keep.txt"]
    with pytest.raises(SourceNotFound):
        apply_copy(ctx_copy(["skip.log"], "/x"), str(src), str(dst), ignore=ignore)


# ------------------------------------------------------------------ owners and modes


def _passwd(dst: Path):
    write(dst / "etc" / "passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    write(dst / "etc" / "group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n")


def test_parse_chown(tmp_path):
    _passwd(tmp_path)
    r = str(tmp_path)
    assert parse_chown("", r) is None
    assert (parse_chown("app", r).uid, parse_chown("app", r).gid) == (1000, 1001)
    assert (parse_chown("app:staff", r).uid, parse_chown("app:staff", r).gid) == (1000, 50)
    assert (parse_chown("42", r).uid, parse_chown("42", r).gid) == (42, 42)
    assert (parse_chown("42:7", r).uid, parse_chown("42:7", r).gid) == (42, 7)
    with pytest.raises(FileOpError, match="unable to find user nobody"):
        parse_chown("nobody", r)
    with pytest.raises(FileOpError, match="unable to find group wheel"):
        parse_chown("app:wheel", r)


@needs_root
def test_chown_by_name_and_default_owners(roots):
    src, dst = roots
    _passwd(dst)
    f = write(src / "d" / "f")
    os.chown(f, 123, 456)
    apply_copy(ctx_copy(["d"], "/owned", chown="app:staff"), str(src), str(dst))
    st = os.stat(dst / "owned/f")
    assert (st.st_uid, st.st_gid) == (1000, 50)
    apply_copy(ctx_copy(["d"], "/ctx"), str(src), str(dst))  # from the context: 0:0
    st = os.stat(dst / "ctx/f")
    assert (st.st_uid, st.st_gid) == (0, 0)
    apply_copy(stage_copy(["d"], "/stage"), str(src), str(dst))  # from a stage: kept
    st = os.stat(dst / "stage/f")
    assert (st.st_uid, st.st_gid) == (123, 456)


@pytest.mark.parametrize("spec,mode,is_dir,expect", [
    ("755", 0o600, False, 0o755),
    ("0644", 0o4755, False, 0o4644),  # octal replaces the permission bits only
    ("u+x", 0o644, False, 0o744),
    ("g-w,o-rwx", 0o775, False, 0o750),
    ("a=r", 0o777, False, 0o444),
    ("+X", 0o644, True, 0o755),
    ("+X", 0o644, False, 0o644),
    ("u=rwX,go=rX", 0o700, False, 0o755),
    ("go=u", 0o640, False, 0o666),
    ("u+s", 0o755, False, 0o4755),
])
def test_chmod_modes(spec, mode, is_dir, expect):
    assert parse_chmod(spec).apply(mode, is_dir) == expect


@pytest.mark.parametrize("bad", ["u+q", "rwx", "99", "u", "1777777"])
def test_chmod_invalid(bad):
    with pytest.raises(FileOpError):
        parse_chmod(bad)


def test_chmod_applies_to_files_and_dirs(roots):
    src, dst = roots
    write(src / "d" / "f", mode=0o600)
    (src / "d" / "sub").mkdir(mode=0o700)
    apply_copy(ctx_copy(["d"], "/m", chmod="go+rX"), str(src), str(dst))
    assert stat.S_IMODE(os.stat(dst / "m/f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(dst / "m/sub").st_mode) == 0o755
    assert isinstance(parse_chmod("755"), ModeSpec)


# ------------------------------------------------------------------ mkdir / mkfile


def test_mkdir_and_mkfile(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    os.symlink("/", root / "etc")
    apply_mkdir(Mkdir("/etc/app/conf", mode=0o750), str(root))
    assert stat.S_IMODE(os.stat(root / "app/conf").st_mode) == 0o750
    apply_mkdir(Mkdir("/app/conf"), str(root))  # existing: fine
    with pytest.raises(FileOpError):
        apply_mkdir(Mkdir("/no/parents", make_parents=False), str(root))
    apply_mkfile(Mkfile("/etc/app/conf/f", b"data", mode=0o640), str(root))
    assert (root / "app/conf/f").read_bytes() == b"data"
    assert stat.S_IMODE(os.stat(root / "app/conf/f").st_mode) == 0o640
    with pytest.raises(FileOpError):
        apply_mkfile(Mkfile("/app", b"x"), str(root))


# ------------------------------------------------------------------ ADD: local archives


def _make_tar(path: Path, entries, compression: str = "") -> Path:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.uid = info.gid = 7
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tf.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data.encode()))
    raw = buf.getvalue()
    if compression == "gz":
        import gzip
        raw = gzip.compress(raw)
    elif compression == "zstd":
        import zstandard
        raw = zstandard.ZstdCompressor().compress(raw)
    elif compression == "xz":
        import lzma
        raw = lzma.compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("compression", ["", "gz", "xz", "zstd"])
def test_add_unpacks_local_archives(roots, compression):
    src, dst = roots
    _make_tar(src / "a.tar", [("d", "dir", ""), ("d/f.txt", "file", "hello"),
                              ("d/link", "sym", "f.txt"), ("d/hard", "hard", "d/f.txt")],
              compression)
    apply_copy(ctx_copy(["a.tar"], "/opt", unpack_archives=True), str(src), str(dst))
    assert (dst / "opt/d/f.txt").read_text() == "hello"
    assert os.readlink(dst / "opt/d/link") == "f.txt"
    assert os.stat(dst / "opt/d/hard").st_ino == os.stat(dst / "opt/d/f.txt").st_ino
    st = os.stat(dst / "opt/d")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == 1_600_000_000


def test_add_non_archive_is_copied(roots):
    src, dst = roots
    write(src / "plain.txt", "just text" * 100)
    apply_copy(ctx_copy(["plain.txt"], "/x/", unpack_archives=True), str(src), str(dst))
    assert (dst / "x/plain.txt").read_text() == "just text" * 100


def test_add_archive_cannot_escape(roots, tmp_path):
    src, dst = roots
    _make_tar(src / "evil.tar", [("../../evil", "file", "x")])
    with pytest.raises(FileOpError, match="escapes"):
        apply_copy(ctx_copy(["evil.tar"], "/x/", unpack_archives=True), str(src), str(dst))
    # a symlink in the archive pointing out, then a file written "through" it
    _make_tar(src / "sneaky.tar", [("out", "sym", str(tmp_path)), ("out/pwned", "file", "x")])
    apply_copy(ctx_copy(["sneaky.tar"], "/y/", unpack_archives=True), str(src), str(dst))
    assert not (tmp_path / "pwned").exists()
    assert (dst / tmp_path.relative_to("/") / "pwned").exists()  # re-rooted in the rootfs


def test_chown_names_from_user_root(tmp_path):
    """COPY --link copies into an empty directory; names come from the stage's rootfs."""
    src, dst, stage = tmp_path / "s", tmp_path / "d", tmp_path / "stage"
    write(src / "f")
    dst.mkdir()
    _passwd(stage)
    with pytest.raises(FileOpError):
        apply_copy(ctx_copy(["f"], "/f", chown="app"), str(src), str(dst))
    apply_copy(ctx_copy(["f"], "/f", chown="app"), str(src), str(dst), user_root=str(stage))
    if ROOT:
        assert os.stat(dst / "f").st_uid == 1000
