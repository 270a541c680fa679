"""RUN --mount (cache, bind, tmpfs, secret, ssh), RUN --network, WORKDIR and USER, end to end."""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import socket
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from pybuild import graph
from pybuild.buildsecrets import BuildSecretError, load_secrets, parse_secret, parse_ssh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, overlayfs)")


def _ctx(path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def _run(cli, image: str, script: str) -> str:
    return cli("run", "--rm", image, "sh", "-c", script).stdout


# --------------------------------------------------------------------------- cache


def test_cache_mount_persists_and_stays_out_of_the_image(cli, tmp_path):
    cid = f"c-{uuid.uuid4().hex[:8]}"
    df = (f"FROM busybox:local\n"
          f"RUN --mount=type=cache,id={cid},target=/var/cache/app "
          f"sh -c 'cat /var/cache/app/log > /seen 2>/dev/null; echo run >> /var/cache/app/log'\n")
    ctx = _ctx(tmp_path / "c", df)
    cli("build", "-t", "cm:1", "--no-cache", str(ctx))
    cli("build", "-t", "cm:2", "--no-cache", str(ctx))
    assert _run(cli, "cm:1", "cat /seen") == ""
    assert _run(cli, "cm:2", "cat /seen") == "run\n"  # the second build saw the first's file
    # neither the cache's content nor its mount point (nor /var/cache) is in the image
    assert _run(cli, "cm:2", "ls -A /var; test -e /var/cache && echo STUB || true") == ""
    dirs = [d for d in (cli.root / "cachemounts").iterdir() if d.is_dir()]
    assert any((d / "log").read_text() == "run\nrun\n" for d in dirs)


def test_cache_mount_mode_owner_and_locked_steps_do_not_overlap(cli, tmp_path):
    cid = f"l-{uuid.uuid4().hex[:8]}"
    step = ("RUN --mount=type=cache,id={cid},target=/c,sharing=locked,mode=0700,uid=1000,gid=50 "
            "sh -c 'test -e /c/busy && echo overlap >> /c/overlaps; touch /c/busy; "
            "sleep 0.4; rm /c/busy; stat -c \"%a %u %g\" /c > /{name}'\n")
    df = ("FROM busybox:local AS a\n" + step.format(cid=cid, name="a") +
          "FROM busybox:local AS b\n" + step.format(cid=cid, name="b") +
          "FROM busybox:local\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
          f"RUN --mount=type=cache,id={cid},target=/c cat /c/overlaps > /o 2>/dev/null || true\n")
    cli("build", "-t", "cl:1", "--no-cache", "--jobs", "4", str(_ctx(tmp_path / "l", df)))
    out = _run(cli, "cl:1", "cat /a /b /o")
    assert out == "700 1000 50\n700 1000 50\n", out  # and no "overlap" line


def test_cache_sharing_private_gets_a_fresh_dir_when_busy(tmp_path):
    from pybuild.runmounts import cache_mount_dir, prepared_mounts

    root = SimpleNamespace(path=str(tmp_path), blobs=SimpleNamespace(tmp_dir=str(tmp_path)))
    solver = SimpleNamespace(root=root, states={}, contexts={}, secrets={}, ssh={})

    def exec_with(sharing: str) -> graph.Exec:
        return graph.Exec(args=("true",), mounts=(
            graph.Mount(target="/c", type="cache", cache_id="p", sharing=sharing),))

    final = cache_mount_dir(str(tmp_path), "p")
    with prepared_mounts(exec_with("private"), solver) as first:
        assert first.binds[0].source == final
        with prepared_mounts(exec_with("private"), solver) as second:
            fresh = second.binds[0].source
            assert fresh != final and os.path.isdir(fresh)
        assert not os.path.exists(fresh)  # the private copy is thrown away
        # a locked user waits until the private one is done
        got = threading.Event()

        def locked() -> None:
            with prepared_mounts(exec_with("locked"), solver):
                got.set()
        t = threading.Thread(target=locked)
        t.start()
        assert not got.wait(0.3)
    t.join(5)
    assert got.is_set()
    # shared users share
    with prepared_mounts(exec_with("shared"), solver) as a, \
            prepared_mounts(exec_with("shared"), solver) as b:
        assert a.binds[0].source == b.binds[0].source == final
    lock = os.open(final + ".lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # every lock was released
    finally:
        os.close(lock)


# --------------------------------------------------------------------------- bind


BIND_DF = """FROM busybox:local AS src
RUN mkdir /data && echo from-stage > /data/f
FROM busybox:local
RUN --mount=type=bind,from=src,source=/data,target=/mnt/s --mount=type=bind,target=/mnt/ctx \\
    sh -c 'cat /mnt/s/f /mnt/ctx/hello.txt > /out; ls /mnt/ctx > /ctx-ls'
RUN --mount=type=bind,from=src,source=/data,target=/mnt/s,rw \\
    sh -c 'echo changed > /mnt/s/f && echo new > /mnt/s/g && cat /mnt/s/f > /rw-out'
RUN --mount=type=bind,from=src,source=/data,target=/mnt/s sh -c 'cat /mnt/s/f; ls /mnt/s' > /after
RUN --mount=type=bind,target=/mnt/ctx,rw sh -c 'echo x > /mnt/ctx/new.txt && rm /mnt/ctx/hello.txt'
RUN --mount=type=bind,source=sub/one.txt,target=/one.txt cat /one.txt > /one
RUN --mount=type=bind,target=/mnt/ctx sh -c '(touch /mnt/ctx/y 2>/dev/null && echo writable || echo ro) > /ro'
"""


def test_bind_from_stage_and_context_rw_writes_discarded(cli, tmp_path):
    ctx = _ctx(tmp_path / "b", BIND_DF, {"hello.txt": "from-context\n", "sub/one.txt": "one\n",
                                         "secret.key": "hidden", ".dockerignore": "secret.key\n"})
    cli("build", "-t", "bind:1", str(ctx))
    out = _run(cli, "bind:1", "cat /out /ctx-ls /rw-out /after /one /ro; ls -A /mnt 2>&1 || true")
    assert out.split("\n")[:2] == ["from-stage", "from-context"]
    listing = out.split("\n")[2:6]
    assert "hello.txt" in listing and "secret.key" not in listing  # .dockerignore applies
    rest = out.split("\n")[out.split("\n").index("changed"):]
    assert rest[:5] == ["changed", "from-stage", "f", "one", "ro"]  # rw writes gone next step
    assert "No such file" in rest[5]  # no /mnt stub left in the image
    assert (ctx / "hello.txt").exists() and not (ctx / "new.txt").exists()


def test_bind_of_context_is_in_the_cache_key(store_root, tmp_path):
    from pybuild import api

    df = "FROM busybox:local\nRUN --mount=type=bind,source=a.txt,target=/a cat /a > /copy\n"
    ctx = _ctx(tmp_path / "k", df, {"a.txt": "v1\n", "other.txt": "x"})

    def run_step_cached() -> bool:
        from pybuild.storeroot import StoreRoot
        store = StoreRoot.open(str(store_root))
        try:
            res = api.build(str(ctx), root=store, progress="quiet")
        finally:
            store.index.close()  # no sqlite connection left open in the test process
        return [s for s in res.steps if "RUN" in s.name][0].cached

    run_step_cached()
    (ctx / "other.txt").write_text("not selected: no rebuild")
    assert run_step_cached()
    (ctx / "a.txt").write_text("v2\n")
    assert not run_step_cached()


# --------------------------------------------------------------------------- tmpfs


def test_tmpfs_mount(cli, tmp_path):
    df = ("FROM busybox:local\nRUN --mount=type=tmpfs,target=/scratch,size=2m "
          "sh -c 'echo x > /scratch/a && grep \" /scratch \" /proc/mounts > /m'\n")
    cli("build", "-t", "tmpfs:1", "--no-cache", str(_ctx(tmp_path / "t", df)))
    out = _run(cli, "tmpfs:1", "cat /m; ls -A / | grep -c '^scratch$' || true")
    assert out.startswith("tmpfs /scratch tmpfs") and "size=2048k" in out
    assert out.strip().endswith("0")


# --------------------------------------------------------------------------- secrets


def _all_store_bytes(root: Path):
    """Every file of the store, and every layer blob decompressed."""
    import subprocess
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            if p.name.startswith("index.db"):
                # never open() a sqlite file here: closing our fd would drop the POSIX locks
                # an in-process connection (api tests) holds on it, and corrupt the index
                data = subprocess.run(["cat", str(p)], capture_output=True).stdout
            else:
                data = p.read_bytes()
            yield p, data
            try:  # other tests put all kinds of blobs in the shared store
                if data[:2] == b"\x1f\x8b":
                    yield p, gzip.decompress(data)
                elif data[:4] == b"\x28\xb5\x2f\xfd":
                    import zstandard
                    yield p, zstandard.ZstdDecompressor().stream_reader(data).read()
            except Exception:  # not a compressed layer after all
                continue


def test_secrets_from_file_and_env_leave_no_trace(cli, tmp_path, monkeypatch):
    file_secret = f"file-s3cret-{uuid.uuid4().hex}"
    env_secret = f"env-s3cret-{uuid.uuid4().hex}"
    (tmp_path / "tok").write_text(file_secret)
    monkeypatch.setenv("MY_TOKEN_SRC", env_secret)
    df = """FROM busybox:local
RUN --mount=type=secret,id=tok sh -c 'sha256sum /run/secrets/tok | cut -d" " -f1 > /tok.sha; stat -c "%a %u" /run/secrets/tok > /tok.mode'
RUN --mount=type=secret,id=tok,target=/etc/app.key,mode=0440,uid=1000,gid=50 stat -c "%a %u %g" /etc/app.key > /key.mode
RUN --mount=type=secret,id=envtok,env=API_TOKEN sh -c 'printf %s "$API_TOKEN" | sha256sum | cut -d" " -f1 > /env.sha; test -e /run/secrets/envtok || echo nofile > /env.file'
RUN --mount=type=secret,id=absent sh -c 'test -e /run/secrets/absent && echo there || echo absent' > /optional
"""
    ctx = _ctx(tmp_path / "s", df)
    build = cli("build", "-t", "sec:1", "--progress=plain", "--no-cache",
                "--secret", f"id=tok,src={tmp_path / 'tok'}",
                "--secret", "id=envtok,env=MY_TOKEN_SRC", str(ctx))
    out = _run(cli, "sec:1", "cat /tok.sha /tok.mode /key.mode /env.sha /env.file /optional; "
                             "test -e /etc/app.key && echo STUB; ls -A / | grep -c '^run$' || true")
    lines = out.split("\n")
    assert lines[0] == hashlib.sha256(file_secret.encode()).hexdigest()
    assert lines[1:3] == ["400 0", "440 1000 50"]
    assert lines[3] == hashlib.sha256(env_secret.encode()).hexdigest()
    assert lines[4:6] == ["nofile", "absent"]
    assert lines[6] == "0"  # neither /etc/app.key nor /run/secrets left in the image
    inspect = cli("inspect", "sec:1").stdout
    for value in (file_secret, env_secret):
        raw = value.encode()
        assert value not in build.stdout + build.stderr
        assert value not in inspect
        for path, data in _all_store_bytes(cli.root):
            assert raw not in data, f"secret found in {path}"


def test_secret_stub_is_not_in_the_layer(cli, tmp_path):
    (tmp_path / "v").write_text("value")
    df = ("FROM busybox:local\nRUN --mount=type=secret,id=v,target=/etc/app.key true\n"
          "RUN --mount=type=secret,id=v true\n")
    cli("build", "-t", "sec:2", "--no-cache", "--secret", f"id=v,src={tmp_path / 'v'}",
        str(_ctx(tmp_path / "s2", df)))
    # steps that only read a secret change nothing: no layer at all
    layers = [json.loads(cli("inspect", ref).stdout)["Manifest"]["layers"]
              for ref in ("sec:2", "busybox:local")]
    assert layers[0] == layers[1]


def test_missing_required_secret_is_a_clear_error(cli, tmp_path):
    df = "FROM busybox:local\nRUN --mount=type=secret,id=npmrc,required true\n"
    r = cli("build", "--no-cache", str(_ctx(tmp_path / "m", df)), check=False)
    assert r.returncode == 1
    assert "secret 'npmrc' is required" in r.stderr and "--secret id=npmrc" in r.stderr
    assert "Traceback" not in r.stderr


def test_secret_and_ssh_specs():
    assert parse_secret("id=a,src=/x") == parse_secret("id=a,source=/x")
    assert parse_secret("id=a,env=B").type == "env"
    assert parse_secret("id=HOME", {"HOME": "/root"}).type == "env"
    assert parse_secret("id=tok", {}).source == "tok"
    assert load_secrets(["id=k,env=V"], {"V": "val"}) == {"k": b"val"}
    for bad in ("src", "id=a,src=x,env=y", "id=a,type=socket", "id=a,colour=red"):
        with pytest.raises(BuildSecretError):
            parse_secret(bad)
    with pytest.raises(BuildSecretError, match="not set"):
        load_secrets(["id=k,env=NOPE"], {})
    with pytest.raises(BuildSecretError, match="cannot read"):
        load_secrets(["id=k,src=/nonexistent/file"])
    assert parse_ssh("default", {"SSH_AUTH_SOCK": "/s"}).paths == ("/s",)
    assert parse_ssh("gh=/a,/b", {}).paths == ("/a", "/b")
    with pytest.raises(BuildSecretError, match="SSH_AUTH_SOCK"):
        parse_ssh("default", {})


# --------------------------------------------------------------------------- ssh


@pytest.fixture
def agent_socket():
    # AF_UNIX names are limited to 108 bytes: keep it short
    import tempfile
    d = tempfile.mkdtemp(prefix="pbssh-")
    path = os.path.join(d, "agent.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    yield path
    s.close()
    os.unlink(path)
    os.rmdir(d)


def test_ssh_agent_socket_is_forwarded(cli, tmp_path, agent_socket, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", agent_socket)
    df = ("FROM busybox:local\n"
          "RUN --mount=type=ssh sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\"' > /default\n"
          "RUN --mount=type=ssh,id=gh,target=/agent sh -c 'test -S /agent && echo \"$SSH_AUTH_SOCK\"' > /named\n"
          "RUN --mount=type=ssh,id=other sh -c 'echo \"[$SSH_AUTH_SOCK]\"' > /optional\n")
    ctx = _ctx(tmp_path / "ssh", df)
    cli("build", "-t", "ssh:1", "--no-cache", "--ssh", "default", "--ssh", f"gh={agent_socket}",
        str(ctx))
    assert _run(cli, "ssh:1", "cat /default /named /optional; ls -A /run 2>&1 | head -1") == \
        "/run/buildkit/ssh_agent.0\n/agent\n[]\nls: /run: No such file or directory\n"
    r = cli("build", "--no-cache", str(_ctx(tmp_path / "ssh2", "FROM busybox:local\n"
                                            "RUN --mount=type=ssh,required true\n")), check=False)
    assert r.returncode == 1 and "ssh agent 'default' is required" in r.stderr


# --------------------------------------------------------------------------- network


def _server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_run_network_per_step(cli, tmp_path):
    server, port = _server()
    probe = f"(nc -w 2 127.0.0.1 {port} </dev/null && echo reached || echo unreachable)"
    df = (f"FROM busybox:local\n"
          f"RUN {probe} > /default; ip -o link 2>/dev/null | grep -c UP > /links || true\n"
          f"RUN --network=none {probe} > /none\n"
          f"RUN --network=host {probe} > /host\n")
    try:
        cli("build", "-t", "net:1", "--no-cache", str(_ctx(tmp_path / "n", df)))
        assert _run(cli, "net:1", "cat /default /none /host").split() == \
            ["unreachable", "unreachable", "reached"]
        # the build-wide --network=host makes `default` steps share the host network
        cli("build", "-t", "net:2", "--no-cache", "--network=host", str(_ctx(tmp_path / "n", df)))
        assert _run(cli, "net:2", "cat /default /none /host").split() == \
            ["reached", "unreachable", "reached"]
    finally:
        server.close()


# --------------------------------------------------------------------------- WORKDIR / USER


def test_workdir_created_and_user_names_resolved(cli, tmp_path):
    df = ("FROM busybox:local\nUSER app\nWORKDIR /work/deep\n"
          "RUN id -un > /tmp/who && pwd > /tmp/where && touch mine && stat -c %U . > /tmp/owner\n"
          "USER app:staff\nRUN id -g > /tmp/gid\n"
          "USER nobody\nRUN id -u > /tmp/nobody\n")
    cli("build", "-t", "wu:1", "--no-cache", str(_ctx(tmp_path / "w", df)))
    assert _run(cli, "wu:1", "cat /tmp/who /tmp/where /tmp/owner /tmp/gid /tmp/nobody").split() \
        == ["app", "/work/deep", "app", "50", "65534"]
    df_bad = "FROM busybox:local\nUSER ghost\nRUN true\n"
    r = cli("build", "--no-cache", str(_ctx(tmp_path / "wb", df_bad)), check=False)
    assert r.returncode == 1 and "unable to find user ghost" in r.stderr


def test_cache_seeded_from_a_stage_and_rw_context_bind_without_dockerignore(cli, tmp_path):
    cid = f"f-{uuid.uuid4().hex[:8]}"
    df = (f"FROM busybox:local AS seed\nRUN mkdir -p /s && echo seeded > /s/v\n"
          f"FROM busybox:local\n"
          f"RUN --mount=type=cache,id={cid},from=seed,source=/s,target=/c cat /c/v > /v\n"
          f"RUN --mount=type=bind,target=/ctx,rw sh -c 'echo w > /ctx/a.txt; rm /ctx/b.txt; "
          f"cat /ctx/a.txt' > /rw\n"
          f"RUN --mount=type=bind,source=b.txt,target=/b,rw sh -c 'echo w >> /b; cat /b' > /rwfile\n"
          "RUN <<EOF\n#!/bin/sh\necho from-script > /script\nEOF\n")
    ctx = _ctx(tmp_path / "f", df, {"a.txt": "a\n", "b.txt": "b\n"})
    cli("build", "-t", "seed:1", "--no-cache", str(ctx))
    assert _run(cli, "seed:1", "cat /v /rw /rwfile /script; ls -A /dev | grep -c pipes || true") \
        == "seeded\nw\nb\nw\nfrom-script\n0\n"
    assert (ctx / "a.txt").read_text() == "a\n" and (ctx / "b.txt").read_text() == "b\n"


@pytest.mark.skipif(not all(map(__import__("shutil").which, ("ssh-keygen", "ssh-agent", "ssh-add"))),
                    reason="needs openssh-client")
def test_ssh_key_file_is_served_by_an_agent(cli, tmp_path):
    import subprocess
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    df = "FROM busybox:local\nRUN --mount=type=ssh,id=k sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo ok' > /k\n"
    cli("build", "-t", "sshk:1", "--no-cache", "--ssh", f"k={key}", str(_ctx(tmp_path / "k", df)))
    assert _run(cli, "sshk:1", "cat /k") == "ok\n"


def test_secret_env_compiles_to_a_mount_without_the_value():
    from frontends.dockerfile.compile import compile_dockerfile

    class Resolver:
        def resolve(self, ref, platform=None):
            return graph.ResolvedImage(ref, "sha256:" + "0" * 64, graph.ImageConfig())

    res = compile_dockerfile("FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN "
                             "--mount=type=secret,id=f,env=F,target=/f true\n",
                             resolver=Resolver())
    m1, m2 = res.target.root.mounts
    assert (m1.secret_id, m1.env, m1.target) == ("tok", "TOKEN", "")  # env only: no file
    assert (m2.secret_id, m2.env, m2.target) == ("f", "F", "/f")
    assert not any(e.startswith(("TOKEN=", "F=")) for e in res.target.root.env)
