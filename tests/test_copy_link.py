"""COPY/ADD --link: the copy lands on an empty filesystem and its layer is stacked on the
stage (graph.Merge), so earlier steps and the base image do not enter its cache key or
its bytes. End to end on the busybox test image; umoci/skopeo judge the exported images.

What BuildKit does and these tests pin (docs/frontend.md, "COPY --link"):
- the linked step stays cached, with the very same layer blob, when an earlier step or
  the base image changes; a plain COPY re-runs;
- the destination is not resolved against the stage: a symlink on the way is replaced by
  a real directory (never followed, so never out of the rootfs), and the parent
  directories the layer carries (0755) override the stage's (e.g. /tmp's 1777);
- --chmod turns --link off (BuildKit links only without --chmod);
- --chown by name: BuildKit fails ("invalid user index: -1"); pybuild looks the names up
  in the stage and keys the step on the ids they resolve to.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import Cli, needs_root, needs_tool
from frontends.dockerfile.compile import compile_dockerfile
from pybuild import graph

STAT = "stat -c '%n %u:%g %a %F'"


def _ctx(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    (ctx / "d" / "sub").mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("hello\n")
    (ctx / "exe.sh").write_text("#!/bin/sh\necho exe\n")
    os.chmod(ctx / "exe.sh", 0o700)
    (ctx / "d" / "a.txt").write_text("a\n")
    (ctx / "d" / "sub" / "b.log").write_text("b\n")
    (ctx / "d" / "sub" / "c.txt").write_text("c\n")
    return ctx


def _build(cli: Cli, ctx: Path, **kw):
    from pybuild import api

    return api.build(str(ctx), progress="quiet", root=str(cli.root), **kw)


def _step(result, prefix: str):
    found = [s for s in result.steps if s.name.startswith(prefix)]
    assert len(found) == 1, [s.name for s in result.steps]
    return found[0]


def _run(cli: Cli, image: str, script: str) -> list[str]:
    return cli("run", "--rm", image, "sh", "-c", script).stdout.splitlines()


# --------------------------------------------------------------------------- compile


class _Resolver:
    def resolve(self, ref, platform=None):
        return graph.ResolvedImage(ref, "sha256:" + "ab" * 32, graph.ImageConfig(),
                                   platform or "linux/amd64")


def _root(text: str) -> graph.Op:
    return compile_dockerfile(text, resolver=_Resolver()).target.root


def test_compile_link_is_a_merge_of_a_copy_on_scratch():
    root = _root("FROM busybox\nRUN true\nCOPY --link --chown=1000 a /a\n")
    assert isinstance(root, graph.Merge) and isinstance(root.root, graph.Exec)
    (copy,) = root.upper
    assert isinstance(copy, graph.FileOp) and isinstance(copy.root, graph.Scratch)
    assert copy.users_from is None  # numbers need no /etc/passwd: no edge to the stage
    named = _root("FROM busybox\nRUN true\nCOPY --link --chown=app:staff a /a\n")
    assert named.upper[0].users_from is named.root  # names are looked up in the stage
    # BuildKit links only without --chmod: a plain copy on the stage
    plain = _root("FROM busybox\nRUN true\nCOPY --link --chmod=755 a /a\n")
    assert isinstance(plain, graph.FileOp) and isinstance(plain.root, graph.Exec)
    # the linked copy is the same vertex whatever it is stacked on
    other = _root("FROM busybox\nRUN false\nCOPY --link --chown=1000 a /a\n")
    assert other.upper[0].digest == copy.digest and other.digest != root.digest


# --------------------------------------------------------------------------- end to end

CACHE_DF = """FROM {base}
RUN echo {word} > /word
COPY {link}f.txt /x/f.txt
RUN cat /word /x/f.txt > /both
"""


@needs_root
def test_link_step_survives_an_earlier_change_with_the_same_layer(fresh_cli, tmp_path):
    ctx = _ctx(tmp_path, CACHE_DF.format(base="busybox:local", word="one", link="--link "))
    first = _build(fresh_cli, ctx, tags=["lk:1"])
    copy1 = _step(first, "COPY --link")
    assert not copy1.cached and copy1.layer_digest

    (ctx / "Dockerfile").write_text(CACHE_DF.format(base="busybox:local", word="two",
                                                    link="--link "))
    second = _build(fresh_cli, ctx, tags=["lk:2"])
    copy2 = _step(second, "COPY --link")
    assert copy2.cached and copy2.layer_digest == copy1.layer_digest
    assert not _step(second, "RUN echo").cached and not _step(second, "RUN cat").cached
    assert _run(fresh_cli, "lk:2", "cat /both") == ["two", "hello"]

    # the image is the new RUN's layer with the old copy layer on it, in that order
    from pybuild import api
    img1, img2 = (api.get_image(t, str(fresh_cli.root)) for t in ("lk:1", "lk:2"))
    assert img2.layers[2].digest == img1.layers[2].digest == copy1.layer_digest
    assert img2.layers[1].digest != img1.layers[1].digest

    # --no-cache-filter on the stage runs the linked copy too
    forced = _build(fresh_cli, ctx, no_cache_filter=["0"])
    assert not _step(forced, "COPY --link").cached

    # the control: without --link the same edit re-runs the copy
    (ctx / "Dockerfile").write_text(CACHE_DF.format(base="busybox:local", word="one", link=""))
    _build(fresh_cli, ctx)
    (ctx / "Dockerfile").write_text(CACHE_DF.format(base="busybox:local", word="three", link=""))
    assert not _step(_build(fresh_cli, ctx), "COPY f.txt").cached


@needs_root
def test_link_step_is_rebased_onto_another_base_image(fresh_cli, base_rootfs, tmp_path):
    other = tmp_path / "other-rootfs"
    shutil.copytree(base_rootfs, other, symlinks=True)
    (other / "etc" / "motd").write_text("another base\n")
    fresh_cli("import", str(other), "busybox:other")

    ctx = _ctx(tmp_path, "ARG BASE\nFROM $BASE\nCOPY --link d /d/\nRUN cat /etc/motd /d/a.txt\n")
    on_local = _build(fresh_cli, ctx, build_args={"BASE": "busybox:local"}, tags=["rb:1"])
    on_other = _build(fresh_cli, ctx, build_args={"BASE": "busybox:other"}, tags=["rb:2"])
    a, b = _step(on_local, "COPY --link"), _step(on_other, "COPY --link")
    assert b.cached and a.layer_digest == b.layer_digest
    assert _run(fresh_cli, "rb:2", "cat /etc/motd /d/a.txt") == ["another base", "a"]

    from pybuild import api
    base = api.get_image("busybox:other", str(fresh_cli.root))
    img = api.get_image("rb:2", str(fresh_cli.root))
    assert [x.digest for x in img.layers[:len(base.layers) + 1]] == \
        [x.digest for x in base.layers] + [a.layer_digest]


@needs_root
@needs_tool("skopeo")
@needs_tool("umoci")
def test_link_contents_modes_and_owners(fresh_cli, tmp_path):
    from test_e2e import skopeo_inspect, unpack_with_umoci

    ctx = _ctx(tmp_path, """FROM busybox:local
COPY --link --chown=1000:50 f.txt /n/f.txt
COPY --link --chown=app d /named/
COPY --link --chown=app:staff exe.sh /named2/
COPY --link --chmod=751 exe.sh /m/exe.sh
COPY --link exe.sh /plain/
ADD --link --chown=daemon f.txt /added/
""")
    out = tmp_path / "img.tar"
    result = _build(fresh_cli, ctx, tags=["own:1"], outputs=[f"type=oci,dest={out}"])
    paths = ("/n /n/f.txt /named /named/a.txt /named/sub /named/sub/b.log /named2/exe.sh "
             "/m/exe.sh /plain/exe.sh /added/f.txt")
    expected = [
        "/n 1000:50 755 directory", "/n/f.txt 1000:50 644 regular file",
        "/named 1000:1000 755 directory", "/named/a.txt 1000:1000 644 regular file",
        "/named/sub 1000:1000 755 directory", "/named/sub/b.log 1000:1000 644 regular file",
        "/named2/exe.sh 1000:50 700 regular file", "/m/exe.sh 0:0 751 regular file",
        "/plain/exe.sh 0:0 700 regular file", "/added/f.txt 1:1 644 regular file",
    ]
    assert _run(fresh_cli, "own:1", f"{STAT} {paths}") == expected
    assert _run(fresh_cli, "own:1", "/plain/exe.sh; cat /named/sub/c.txt") == ["exe", "c"]

    # the exported image: skopeo reads it, umoci unpacks it to the same tree
    config = skopeo_inspect(out)
    assert len(config["rootfs"]["diff_ids"]) == 1 + 6
    rootfs = unpack_with_umoci(out, "own:1", tmp_path)
    for line in expected:
        path, ids, mode, _ = line.split(" ", 3)
        st = os.lstat(rootfs / path.lstrip("/"))
        assert (f"{st.st_uid}:{st.st_gid}", oct(st.st_mode & 0o7777)[2:]) == (ids, mode), path
    assert (rootfs / "named/sub/c.txt").read_text() == "c\n"
    assert len([s for s in result.steps if s.layer_digest]) == 6


@needs_root
def test_link_chown_names_key_on_the_ids_they_resolve_to(fresh_cli, tmp_path):
    df = """FROM busybox:local
RUN {edit}
COPY --link --chown=app f.txt /by-name/
COPY --link --chown=1000 f.txt /by-number/
"""
    ctx = _ctx(tmp_path, df.format(edit="echo first"))
    first = _build(fresh_cli, ctx)
    assert not _step(first, "COPY --link --chown=app").cached

    # an unrelated change below: both linked steps stay cached
    (ctx / "Dockerfile").write_text(df.format(edit="echo second"))
    second = _build(fresh_cli, ctx)
    assert _step(second, "COPY --link --chown=app").cached
    assert _step(second, "COPY --link --chown=1000").cached

    # app becomes uid 1001: the named step re-runs with the new ids, the numeric one not
    (ctx / "Dockerfile").write_text(df.format(
        edit="sed -i s/app:x:1000:1000/app:x:1001:1001/ /etc/passwd"))
    third = _build(fresh_cli, ctx, tags=["names:3"])
    named = _step(third, "COPY --link --chown=app")
    assert not named.cached
    assert named.layer_digest != _step(first, "COPY --link --chown=app").layer_digest
    assert _step(third, "COPY --link --chown=1000").cached
    assert _run(fresh_cli, "names:3", f"{STAT} /by-name/f.txt /by-number/f.txt") == [
        "/by-name/f.txt 1001:1001 644 regular file", "/by-number/f.txt 1000:1000 644 regular file"]

    (ctx / "Dockerfile").write_text("FROM busybox:local\nCOPY --link --chown=nosuch f.txt /f\n")
    r = fresh_cli("build", "--progress=plain", str(ctx), check=False)
    assert r.returncode == 1 and "unable to find user nosuch" in r.stderr
    assert "Traceback" not in r.stderr


@needs_root
def test_link_chmod_is_a_plain_copy_as_in_buildkit(fresh_cli, tmp_path):
    df = "FROM busybox:local\nRUN echo {w} > /w\nCOPY --link --chmod=640 f.txt /c/f.txt\n"
    ctx = _ctx(tmp_path, df.format(w="1"))
    _build(fresh_cli, ctx)
    (ctx / "Dockerfile").write_text(df.format(w="2"))
    again = _build(fresh_cli, ctx, tags=["chmod:1"])
    assert not _step(again, "COPY --link --chmod").cached
    assert _run(fresh_cli, "chmod:1", f"{STAT} /c/f.txt") == ["/c/f.txt 0:0 640 regular file"]


@needs_root
@needs_tool("skopeo")
@needs_tool("umoci")
def test_link_dest_symlinks_are_replaced_not_followed(fresh_cli, tmp_path):
    from test_e2e import unpack_with_umoci

    outside = tmp_path / "outside"
    outside.mkdir()
    ctx = _ctx(tmp_path, f"""FROM busybox:local
RUN mkdir /real && echo keep > /real/old && ln -s /real /lnk && ln -s /real /plainlnk \\
 && ln -s / /esc && ln -s {outside} /host && ln -s ../../../../../../.. /up
COPY --link f.txt /lnk/f.txt
COPY f.txt /plainlnk/plain.txt
COPY --link f.txt /esc/etc/
COPY --link f.txt /host/
COPY --link f.txt /up/deep/
COPY --link f.txt /tmp/
""")
    out = tmp_path / "sym.tar"
    _build(fresh_cli, ctx, tags=["sym:1"], outputs=[f"type=oci,dest={out}"])
    script = ("for p in /lnk /esc /host /up /plainlnk; do"
              " [ -L $p ] && echo $p link || echo $p dir; done;"
              " ls /lnk /real /esc/etc /host /up/deep; ls /etc/f.txt 2>&1 || true;"
              f" {STAT} /tmp")
    lines = _run(fresh_cli, "sym:1", script)
    assert lines[:5] == ["/lnk dir", "/esc dir", "/host dir", "/up dir", "/plainlnk link"]
    listed = "\n".join(lines[5:])
    # /lnk holds only the copy; the symlink's target /real is untouched (no f.txt); a
    # plain COPY follows its symlink into /real
    assert "/lnk:\nf.txt\n" in listed and "/real:\nold\nplain.txt\n" in listed
    assert "/esc/etc:\nf.txt\n" in listed and "/host:\nf.txt\n" in listed
    assert "/up/deep:\nf.txt\n" in listed
    assert "No such file" in listed  # /etc/f.txt: /esc -> / was not followed
    # the directories the layer carries override the stage's: /tmp loses its 1777
    assert lines[-1] == "/tmp 0:0 755 directory"
    assert list(outside.iterdir()) == []  # nothing left the rootfs on the host

    # umoci applies the layers the same way: symlinks replaced by the layer's directories
    rootfs = unpack_with_umoci(out, "sym:1", tmp_path)
    for name in ("lnk", "esc", "host", "up"):
        assert (rootfs / name).is_dir() and not (rootfs / name).is_symlink(), name
    assert sorted(os.listdir(rootfs / "lnk")) == ["f.txt"]
    assert sorted(os.listdir(rootfs / "real")) == ["old", "plain.txt"]
    assert not (rootfs / "etc/f.txt").exists() and (rootfs / "esc/etc/f.txt").exists()
    assert list(outside.iterdir()) == []


@needs_root
def test_link_from_stage_exclude_parents_and_workdir(fresh_cli, tmp_path):
    df = """FROM busybox:local AS build
RUN mkdir -p /out/bin && echo tool > /out/bin/tool && chmod 750 /out/bin/tool \\
 && chown 1000:50 /out/bin/tool
FROM busybox:local
RUN echo {w} > /w
WORKDIR /srv
COPY --link --from=build /out/ /opt/
COPY --link --exclude=**/*.log d ex/
COPY --link --parents d/sub/b.log d/./a.txt /p/
COPY --link <<EOF inline.txt
inline {w}
EOF
"""
    ctx = _ctx(tmp_path, df.format(w="1"))
    first = _build(fresh_cli, ctx, tags=["mix:1"])
    script = (f"{STAT} /opt/bin/tool; cat /opt/bin/tool; find /srv/ex /p | sort;"
              " cat /srv/inline.txt")
    assert _run(fresh_cli, "mix:1", script) == [
        "/opt/bin/tool 1000:50 750 regular file", "tool",
        "/p", "/p/a.txt", "/p/d", "/p/d/sub", "/p/d/sub/b.log",
        "/srv/ex", "/srv/ex/a.txt", "/srv/ex/sub", "/srv/ex/sub/c.txt",
        "inline 1"]

    (ctx / "Dockerfile").write_text(df.format(w="2"))
    second = _build(fresh_cli, ctx, tags=["mix:2"])
    for prefix in ("COPY --link --from", "COPY --link --exclude", "COPY --link --parents"):
        a, b = _step(first, prefix), _step(second, prefix)
        assert b.cached and a.layer_digest == b.layer_digest, prefix
    assert not _step(second, "COPY --link <<EOF").cached  # its text changed
    assert _run(fresh_cli, "mix:2", "cat /w /srv/inline.txt") == ["2", "inline 2"]


@needs_root
def test_add_link_url_and_archive_and_a_linked_scratch_stage(fresh_cli, tmp_path):
    import io
    import tarfile

    from test_add import FileServer

    server = FileServer()
    try:
        server.files["/files/hello.txt"] = b"hello over http\n"
        df = f"""FROM scratch AS art
COPY --link f.txt /art/f.txt
FROM busybox:local
RUN echo {{w}} > /w
ADD --link {server.url}/files/hello.txt /dl/
ADD --link arch.tar.gz /unpacked/
COPY --from=art /art /from-art
"""
        ctx = _ctx(tmp_path, df.format(w="1"))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("inner/x.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"x\n"))
        (ctx / "arch.tar.gz").write_bytes(buf.getvalue())
        first = _build(fresh_cli, ctx)
        (ctx / "Dockerfile").write_text(df.format(w="2"))
        second = _build(fresh_cli, ctx, tags=["addlink:1"])
    finally:
        server.close()
    for prefix in ("ADD --link http", "ADD --link arch"):
        a, b = _step(first, prefix), _step(second, prefix)
        assert b.cached and a.layer_digest == b.layer_digest, prefix
    script = "cat /w /dl/hello.txt /unpacked/inner/x.txt /from-art/f.txt"
    assert _run(fresh_cli, "addlink:1", script) == ["2", "hello over http", "x", "hello"]
