"""`pybuild build --check` and build checks in a normal build, through the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import needs_root


def _context(tmp_path: Path, dockerfile: str, ignore: str | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("hello\n")
    if ignore is not None:
        (ctx / ".dockerignore").write_text(ignore)
    return ctx


@pytest.fixture
def check_cli(tmp_path):
    from tests.conftest import Cli
    return Cli(tmp_path / "store")


def test_check_clean_exits_0(tmp_path, check_cli):
    ctx = _context(tmp_path, 'FROM scratch AS base\nCOPY a.txt /a.txt\nCMD ["/a"]\n')
    r = check_cli("build", "--check", str(ctx))
    assert r.returncode == 0
    assert "no warnings found" in r.stdout
    assert not (tmp_path / "store" / "index.db").exists()  # a check builds nothing


def test_check_violations_exit_1_with_short_format(tmp_path, check_cli):
    ctx = _context(tmp_path, "FROM scratch as base\ncopy a.txt /a.txt\nCOPY a.txt /b\nCMD run\n",
                   ignore="a.txt\n")
    r = check_cli("build", "--check", str(ctx), check=False)
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "Check complete, 5 warnings have been found!" in out
    assert "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)" in out
    assert ("ConsistentInstructionCasing: Command 'copy' should match the case of the "
            "command majority (uppercase) (line 2)") in out
    assert ('CopyIgnoredFile: Attempting to Copy file "a.txt" that is excluded by '
            ".dockerignore (line 3)") in out
    assert "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/" in out
    assert "The 'as' keyword should match the case of the 'from' keyword" in out


def test_check_build_arg_overrides_directive(tmp_path, check_cli):
    ctx = _context(tmp_path, "#check=skip=all\nFROM scratch as base\n")
    assert check_cli("build", "--check", str(ctx)).returncode == 0
    r = check_cli("build", "--check", "--build-arg",
                  "BUILDKIT_DOCKERFILE_CHECK=skip=ConsistentInstructionCasing", str(ctx),
                  check=False)
    assert r.returncode == 1 and "FromAsCasing" in r.stdout


def test_check_reports_warnings_before_a_dockerfile_error(tmp_path, check_cli):
    ctx = _context(tmp_path, "FROM scratch AS Bad\nBADCMD\n")
    r = check_cli("build", "--check", str(ctx), check=False)
    assert r.returncode == 1
    assert "StageNameCasing: Stage name 'Bad' should be lowercase (line 1)" in r.stdout
    assert "unknown instruction: BADCMD" in r.stderr


@needs_root
def test_build_prints_warnings_and_error_true_fails(tmp_path, check_cli):
    ctx = _context(tmp_path, "FROM scratch as base\nCOPY a.txt /a.txt\n")
    r = check_cli("build", "--progress", "plain", str(ctx))
    assert "WARNING: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)" \
        in r.stderr
    (ctx / "Dockerfile").write_text("# check=error=true\nFROM scratch as base\nCOPY a.txt /a\n")
    r = check_cli("build", "--progress", "plain", str(ctx), check=False)
    assert r.returncode == 1
    assert "lint violation found for rules: FromAsCasing" in r.stderr
    assert "COPY" not in r.stderr.split("lint violation")[0]  # failed before building
