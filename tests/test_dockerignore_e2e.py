"""End to end: BuildKit's `.dockerignore` integration scenarios as real builds
(../shared/conformance/buildkit/e2e/dockerignore_cases.json), plus which ignore file a
build uses: `<Dockerfile name>.dockerignore` before `<context>/.dockerignore`, and
`-f -` (a Dockerfile from stdin has no name, so only the context's `.dockerignore`).

tests/test_context.py checks the same vectors at the BuildContext/COPY layer; here the
CLI builds them, so the ignore file is found, read and applied by a real build.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED, needs_root

pytestmark = needs_root

CASES = SHARED / "conformance" / "buildkit" / "e2e" / "dockerignore_cases.json"


def _cases() -> dict[str, dict]:
    if not CASES.is_file():
        return {}
    return {c["name"]: c for c in json.loads(CASES.read_bytes().decode("utf-8"))["cases"]}


def _needs(name: str) -> dict:
    case = _cases().get(name)
    if case is None:
        pytest.skip(f"conformance case {name} not found in {CASES}")
    return case


def write_context(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        # upstream's busybox comes from a registry; ours is made on this machine
        (root / name).write_text(data.replace("FROM busybox\n", "FROM busybox:local\n"))
    return root


def test_dockerignore_excludes_and_reincludes(cli, tmp_path):
    case = _needs("testDockerignore")
    ctx = write_context(tmp_path / "ctx", case["context"])
    out = tmp_path / "out"
    cli("build", "-o", f"type=local,dest={out}", str(ctx))
    for name, data in case["expect_files"].items():
        assert (out / name).read_text() == data
    for name in case["expect_absent"]:
        assert not (out / name).exists(), f"{name} should have been ignored"
    assert sorted(p.name for p in out.iterdir()) == sorted(case["expect_files"])


def test_dockerignore_invalid_pattern_fails_cleanly(cli, tmp_path):
    case = _needs("testDockerignoreInvalid")
    assert case["expect_ok"] is False
    ctx = write_context(tmp_path / "ctx", case["context"])
    r = cli("build", str(ctx), check=False, timeout=15)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_dockerfile_specific_ignore_file_wins(cli, tmp_path):
    case = _needs("testDockerignoreOverride")
    files = dict(case["context"])
    # a context-root .dockerignore that would break both builds if it were used
    files[".dockerignore"] = "foo\nbar\n"
    ctx = write_context(tmp_path / "ctx", files)
    for b in case["builds"]:
        r = cli("build", "--progress=plain", "-f", str(ctx / b["filename"]), str(ctx),
                check=False)
        assert (r.returncode == 0) == b["expect_ok"], f"{b['filename']}:\n{r.stderr}"


def test_dockerfile_specific_ignore_file_next_to_a_dockerfile_outside_the_context(cli, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"foo": "f", "bar": "b", ".dockerignore": "bar\n"})
    elsewhere = write_context(tmp_path / "defs", {
        "app.Dockerfile": "FROM busybox:local\nCOPY . /c/\nRUN [ ! -f /c/foo ] && [ -f /c/bar ]\n",
        "app.Dockerfile.dockerignore": "foo\n",
    })
    cli("build", "-f", str(elsewhere / "app.Dockerfile"), str(ctx))


STDIN_DF = "FROM busybox:local\nCOPY . /c/\nRUN ls /c > /listing.txt\nCMD [\"cat\", \"/listing.txt\"]\n"


def test_dockerfile_from_stdin(cli, tmp_path):
    ctx = write_context(tmp_path / "ctx", {
        # the context's own Dockerfile must not be used when -f - is given
        "Dockerfile": "FROM busybox:local\nRUN exit 9\n",
        "Dockerfile.dockerignore": "foo\n",
        ".dockerignore": "bar\nDockerfile*\n.dockerignore\n",
        "foo": "f", "bar": "b",
    })
    cli("build", "-f", "-", "-t", "ign-stdin:1", str(ctx), input=STDIN_DF)
    # stdin has no file name, so no `<name>.dockerignore` applies: only .dockerignore
    assert cli("run", "--rm", "ign-stdin:1").stdout.split() == ["foo"]


def test_dockerfile_from_stdin_errors_name_the_line(cli, tmp_path):
    ctx = write_context(tmp_path / "ctx", {"foo": "f"})
    r = cli("build", "-f", "-", str(ctx), input="FROM busybox:local\nCOPY --bogus=1 foo /\n",
            check=False)
    assert r.returncode == 1
    assert ":2:" in r.stderr and "Traceback" not in r.stderr
