"""End to end: Dockerfiles in examples/ become OCI images that real tools accept and that
`pybuild run` starts. Needs root (namespaces, overlayfs); skopeo/umoci where marked."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import EXAMPLES, needs_root, needs_tool

pytestmark = needs_root


def unpack_with_umoci(oci_tar: Path, tag: str, tmp: Path) -> Path:
    """skopeo copies the OCI archive to an OCI dir; umoci unpacks it to a bundle."""
    layout = tmp / "layout"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{oci_tar}", f"oci:{layout}:{tag}"],
                   check=True, capture_output=True)
    bundle = tmp / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
                   check=True, capture_output=True)
    return bundle / "rootfs"


def skopeo_inspect(oci_tar: Path) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{oci_tar}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def layer_names(oci_tar: Path) -> list[list[str]]:
    """Member names of every layer in an OCI archive, in manifest order."""
    with tarfile.open(oci_tar) as t:
        index = json.load(t.extractfile("index.json"))
        mdesc = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(t.extractfile(f"blobs/sha256/{mdesc}"))
        out = []
        for layer in manifest["layers"]:
            blob = t.extractfile(f"blobs/sha256/{layer['digest'].split(':')[1]}")
            with tarfile.open(fileobj=blob, mode="r:*") as lt:
                out.append(lt.getnames())
        return out


# --------------------------------------------------------------------------- examples


@needs_tool("skopeo")
@needs_tool("umoci")
def test_hello_builds_exports_and_runs(cli, tmp_path):
    out = tmp_path / "hello.tar"
    cli("build", "-f", str(EXAMPLES / "hello/Dockerfile"), "-t", "hello:1",
        "--output", f"type=oci,dest={out}", "--progress=plain", str(EXAMPLES / "hello"))
    config = skopeo_inspect(out)
    assert config["config"]["Cmd"][0] == "sh"
    assert config["config"]["WorkingDir"] == "/app"
    assert "GREETING=hello" in config["config"]["Env"]
    assert len(config["rootfs"]["diff_ids"]) == len([h for h in config["history"] if not h.get("empty_layer")])
    rootfs = unpack_with_umoci(out, "hello:1", tmp_path)
    assert (rootfs / "app/hello.txt").read_text() == (EXAMPLES / "hello/hello.txt").read_text()
    assert (rootfs / "app/built.txt").read_text().startswith("built in a sandbox named")
    assert (rootfs / "bin/busybox").exists()

    run = cli("run", "--rm", "hello:1")
    assert "Hello from a pybuild image!" in run.stdout
    assert "hello from pybuild" in run.stdout


@needs_tool("skopeo")
@needs_tool("umoci")
def test_multistage_copy_from(cli, tmp_path):
    out = tmp_path / "multi.tar"
    cli("build", "-t", "multi:1", "-o", f"type=oci,dest={out}", str(EXAMPLES / "multistage"))
    rootfs = unpack_with_umoci(out, "multi:1", tmp_path)
    text = (rootfs / "srv/result.txt").read_text()
    assert "artifact made by stage 'build'" in text and "sum of 1..10 = 55" in text
    assert not (rootfs / "src").exists(), "the build stage's files must not reach the final image"
    assert skopeo_inspect(out)["config"]["User"] == "app"
    run = cli("run", "--rm", "multi:1")
    assert "sum of 1..10 = 55" in run.stdout


@needs_tool("skopeo")
@needs_tool("umoci")
def test_whiteouts_delete_base_files(cli, tmp_path):
    out = tmp_path / "wh.tar"
    cli("build", "-t", "whiteout:1", "-o", f"type=oci,dest={out}", str(EXAMPLES / "whiteout"))
    names = layer_names(out)[-1]
    assert "etc/.wh.motd" in names
    assert "usr/share/doc/.wh..wh..opq" in names
    rootfs = unpack_with_umoci(out, "whiteout:1", tmp_path)
    assert not (rootfs / "etc/motd").exists()
    assert (rootfs / "etc/passwd").exists()
    assert sorted(p.name for p in (rootfs / "usr/share/doc").iterdir()) == ["README"]
    run = cli("run", "--rm", "whiteout:1")
    assert run.stdout.split() == ["motd-gone", "README"]


def test_run_from_oci_tarball_with_command(cli, tmp_path):
    out = tmp_path / "app.tar"
    cli("build", "-t", "app:1", "--output", f"type=oci,dest={out}", str(EXAMPLES / "hello"))
    run = cli("run", "--rm", str(out), "echo", "hi")
    assert run.stdout == "hi\n"


def test_run_flags_env_workdir_user_exit_code(cli):
    r = cli("run", "--rm", "-e", "FOO=bar", "-w", "/tmp", "-u", "app", "busybox:local",
            "sh", "-c", 'echo "$FOO $(pwd) $(id -un)"; exit 7', check=False)
    assert r.returncode == 7
    assert r.stdout.strip() == "bar /tmp app"


def test_run_exit_codes_for_commands_that_cannot_start(cli):
    missing = cli("run", "--rm", "busybox:local", "no-such-command", check=False)
    assert missing.returncode == 127  # as docker
    assert "no-such-command" in missing.stderr and "Traceback" not in missing.stderr
    not_exec = cli("run", "--rm", "busybox:local", "/etc/passwd", check=False)
    assert not_exec.returncode == 126


# --------------------------------------------------------------------------- cache


def _write_ctx(ctx: Path, dockerfile: str, files: dict[str, str]) -> None:
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name).write_text(text)


CACHE_DF = """FROM busybox:local
WORKDIR /w
RUN echo one > one.txt
COPY a.txt .
RUN cat a.txt > copy-of-a.txt
COPY b.txt .
"""


def _steps(build_stderr: str) -> tuple[int, int]:
    """(steps run, steps cached) from the plain progress summary line."""
    for line in build_stderr.splitlines():
        if " steps: " in line and " run, " in line:
            parts = line.split()
            return int(parts[2]), int(parts[4])
    raise AssertionError(f"no summary line in:\n{build_stderr}")


def test_cache_rebuild_edit_and_touch(fresh_cli, tmp_path):
    from pybuild import api

    ctx = tmp_path / "ctx"
    _write_ctx(ctx, CACHE_DF, {"a.txt": "a1\n", "b.txt": "b1\n"})
    root = str(fresh_cli.root)
    first = api.build(str(ctx), tags=["c:1"], progress="quiet", root=root)
    assert first.run_steps == 5  # WORKDIR, RUN, COPY, RUN, COPY

    again = api.build(str(ctx), tags=["c:1"], progress="quiet", root=root)
    assert again.run_steps == 0
    assert [s.layer_digest for s in again.steps if s.layer_digest] == \
        [s.layer_digest for s in first.steps if s.layer_digest]

    plain = fresh_cli("build", "--progress=plain", str(ctx))
    assert _steps(plain.stderr)[0] == 0
    assert plain.stderr.count("CACHED") >= 5

    (ctx / "a.txt").write_text("a2\n")  # an edit reruns COPY a.txt and what follows it
    edited = api.build(str(ctx), progress="quiet", root=root)
    rerun = sorted(s.name for s in edited.steps if not s.cached)
    assert rerun == ["COPY a.txt .", "COPY b.txt .", "RUN cat a.txt > copy-of-a.txt"]

    import os
    import time
    os.utime(ctx / "b.txt", (time.time() + 100, time.time() + 100))  # touched, not changed
    touched = api.build(str(ctx), progress="quiet", root=root)
    assert touched.run_steps == 0

    nocache = api.build(str(ctx), progress="quiet", root=root, no_cache=True)
    assert nocache.run_steps == 5


# --------------------------------------------------------------------------- isolation


def _loopback_server() -> tuple[socket.socket, int]:
    """A listener on the host's loopback that accepts and at once closes each connection,
    so that busybox `nc HOST PORT </dev/null` exits 0 when it got through."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed by the test
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_run_step_is_isolated(cli, tmp_path):
    marker = Path("/tmp") / f"pybuild-host-marker-{tmp_path.name}"
    marker.write_text("host secret")
    server, port = _loopback_server()
    try:
        ctx = tmp_path / "iso"
        _write_ctx(ctx, f"""FROM busybox:local
RUN ps -o pid,comm | tail -n +2 | wc -l > /procs && hostname > /host && \\
    (test -e {marker} && echo visible || echo hidden) > /marker && \\
    (nc -w 1 127.0.0.1 {port} </dev/null && echo reached || echo unreachable) > /net
CMD ["sh", "-c", "cat /procs /host /marker /net"]
""", {})
        cli("build", "-t", "iso:1", "--no-cache", str(ctx))
        procs, host, seen, net = cli("run", "--rm", "iso:1").stdout.split()
        # sh, ps, tail, wc and the sandbox's init: a handful, never the host's hundreds
        assert int(procs) <= 6, "a RUN must see only its own processes"
        assert host != socket.gethostname()
        assert seen == "hidden"
        assert net == "unreachable"
    finally:
        server.close()
        marker.unlink()


def test_network_host_reaches_loopback(cli, tmp_path):
    server, port = _loopback_server()
    try:
        ctx = tmp_path / "net"
        _write_ctx(ctx, f"FROM busybox:local\nRUN nc -w 2 127.0.0.1 {port} </dev/null\n", {})
        cli("build", "--network=host", "--no-cache", str(ctx))
    finally:
        server.close()


# --------------------------------------------------------------------------- errors


def test_parse_error_message(cli, tmp_path):
    ctx = tmp_path / "bad"
    _write_ctx(ctx, "FROM busybox:local\nRUNN echo hi\n", {})
    r = cli("build", str(ctx), check=False)
    assert r.returncode == 1
    assert "Dockerfile:2: unknown instruction: RUNN" in r.stderr
    assert "RUNN echo hi" in r.stderr
    assert "Traceback" not in r.stderr


def test_failing_run_reports_command_code_and_output(cli, tmp_path):
    ctx = tmp_path / "fail"
    _write_ctx(ctx, "FROM busybox:local\nRUN echo boom-before-failing && exit 3\n", {})
    r = cli("build", "--progress=plain", str(ctx), check=False)
    assert r.returncode == 1
    assert "exit code: 3" in r.stderr
    assert "echo boom-before-failing && exit 3" in r.stderr
    assert "boom-before-failing" in r.stderr.split("exit code: 3")[1]
    assert "Traceback" not in r.stderr


def test_missing_base_image_is_a_clear_error(cli, tmp_path):
    ctx = tmp_path / "nobase"
    _write_ctx(ctx, "FROM nosuch/image:1\n", {})
    r = cli("build", str(ctx), check=False)
    assert r.returncode == 1
    assert "nosuch/image:1" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- store commands


@needs_tool("skopeo")
def test_save_load_tag_images(cli, tmp_path, base_rootfs):
    from conftest import Cli

    cli("build", "-t", "saved:1", str(EXAMPLES / "hello"))
    cli("tag", "saved:1", "127.0.0.1:5000/library/saved:latest")
    archive = tmp_path / "saved-docker.tar"
    cli("save", "--format", "docker", "-o", str(archive), "saved:1")
    subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], check=True, capture_output=True)
    oci = tmp_path / "saved-oci.tar"
    cli("save", "-o", str(oci), "127.0.0.1:5000/library/saved:latest")

    other = Cli(tmp_path / "other-store")
    loaded = other("load", "-i", str(archive))
    assert "saved:1" in loaded.stdout
    other("load", "-i", str(oci))
    listing = other("images").stdout
    assert "saved:1" in listing and "127.0.0.1:5000/library/saved:latest" in listing
    assert "Hello from a pybuild image!" in other("run", "--rm", "saved:1").stdout


def test_build_from_stdin_and_default_command(cli, tmp_path):
    r = cli("-f", "-", "-t", "stdin:1", str(tmp_path), input="FROM busybox:local\nCMD [\"echo\", \"from-stdin\"]\n")
    assert r.returncode == 0
    assert cli("run", "--rm", "stdin:1").stdout == "from-stdin\n"


def test_api_returns_typed_results(store_root, tmp_path):
    from pybuild import api

    result = api.build(str(EXAMPLES / "hello"), tags=["typed:1"], progress="quiet", root=str(store_root))
    assert isinstance(result, api.BuildResult)
    assert result.manifest_digest.startswith("sha256:")
    lines = []
    run = api.run("typed:1", ["echo", "api"], root=str(store_root), on_output=lines.append)
    assert isinstance(run, api.RunResult) and run.exit_code == 0
    assert b"".join(lines) == b"api\n"
