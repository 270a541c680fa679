"""CLI start-up stays light without changing what the CLI says or does.

The parser declares only the running command's arguments: every help text must be the
same as with all of them declared. Commands that only read or write images must not
import the builder, and a build must not import what only some builds use (times are
measured in bench/run.py, never asserted here).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from pybuild import cli as C


def test_narrowed_parser_gives_the_same_help_for_every_command():
    full = C._build_parser()
    top = full.format_help()
    sub_full = full._subparsers._group_actions[0].choices  # argparse keeps them here
    for cmd in C.COMMANDS:
        narrow = C._build_parser(cmd)
        assert narrow.format_help() == top, cmd
        sub = narrow._subparsers._group_actions[0].choices
        assert list(sub) == list(sub_full)
        assert sub[cmd].format_help() == sub_full[cmd].format_help(), cmd
        assert narrow.parse_args([cmd] + _ARGS.get(cmd, [])) \
            == full.parse_args([cmd] + _ARGS.get(cmd, [])), cmd


# enough arguments for each command to parse
_ARGS = {"run": ["img"], "import": ["src"], "load": ["-i", "x"], "save": ["-o", "x", "img"],
         "tag": ["a", "b"], "rmi": ["a"], "inspect": ["a"], "pull": ["a"], "push": ["a"],
         "login": ["-u", "me"], "history": ["a"]}


def test_a_wrong_command_line_fails_as_before(capsys):
    for argv in (["bogus", "--nope"], ["save"], ["tag", "a"], ["--root"], ["images", "x"]):
        outs = []
        for parser in (C._build_parser(), C._build_parser(C._command_of(C._split_args(argv)))):
            with pytest.raises(SystemExit) as e:
                parser.parse_args(C._split_args(argv))
            outs.append((e.value.code, capsys.readouterr()))
        assert outs[0] == outs[1], argv


def test_help_and_version_need_no_command_parser(capsys):
    for argv in (["--version"], ["--help"], ["-h"], ["--root", "/r", "--help"],
                 ["--version", "save", "-o", "x", "img"], ["--root=/r", "--version"]):
        assert C._command_of(C._split_args(argv)) is None, argv
        outs = []
        for parser in (C._build_parser(), C._build_parser("")):  # "": what main() makes
            with pytest.raises(SystemExit) as e:
                parser.parse_args(C._split_args(argv))
            outs.append((e.value.code, capsys.readouterr()))
        assert outs[0] == outs[1] and outs[0][0] == 0 and outs[0][1].out, argv
    assert C.main([]) == 1  # no command: the top-level help
    assert capsys.readouterr().out == C._build_parser().format_help()


@pytest.mark.parametrize("columns", [None, "100", "33", "0", "-4", "wide"])
def test_help_width_is_argparses(monkeypatch, columns):
    """The parsers' formatter finds the width as shutil does (which argparse asks)."""
    import argparse
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert C._terminal_columns() == shutil.get_terminal_size().columns
    for cmd in (None, "build"):
        ours = C._build_parser(cmd)
        stock = C._build_parser(cmd)
        stock.formatter_class = argparse.HelpFormatter
        assert ours.format_help() == stock.format_help()
        if cmd:
            sub = ours._subparsers._group_actions[0].choices[cmd]
            text = sub.format_help()
            sub.formatter_class = argparse.HelpFormatter
            assert text == sub.format_help()


def test_help_width_of_a_terminal(monkeypatch):
    """On a terminal (COLUMNS unset) the width is the terminal's, as shutil finds it."""
    import fcntl
    import shutil
    import struct
    import termios

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
        with open(slave, "w", closefd=False) as tty:
            monkeypatch.setattr(sys, "__stdout__", tty)
            assert C._terminal_columns() == shutil.get_terminal_size().columns == 123
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("argv, command", [
    (["save", "-o", "x", "img"], "save"), (["--root", "/r", "images"], "images"),
    (["--root=/r", "tag", "a", "b"], "tag"), (["--root", "save", "images"], "images"),
    (["-f", "Dockerfile", "."], "build"), (["--help"], None), (["--version"], None),
    (["bogus"], "build"), ([], None)])
def test_command_of_follows_split_args(argv, command):
    assert C._command_of(C._split_args(argv)) == command


def _modules_after(argv: list[str], root: str, *, no_site: bool = False) -> set[str]:
    """The modules a real `pybuild ...` process has imported when it exits (`no_site`:
    without `site`, whose .pth files (an editable install's finder) import some too)."""
    code = ("import atexit, sys\n"
            "def dump(path=sys.argv[1]):\n"
            "    with open(path, 'w') as f:\n"
            "        f.write('\\n'.join(sys.modules))\n"
            "atexit.register(dump)\n"
            "from pybuild.cli import main\n"
            "sys.argv = ['pybuild'] + sys.argv[2:]\n"
            "sys.exit(main())\n")
    out = os.path.join(root, "modules.txt")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, *(["-S"] if no_site else []), "-c", code, out, "--root",
                    root, *argv], env=env, check=True, capture_output=True)
    with open(out) as f:
        return set(f.read().split())


def test_save_and_images_import_no_builder(fresh_cli, tmp_path):
    root = str(fresh_cli.root)
    for argv in (["save", "--format", "docker", "-o", str(tmp_path / "d.tar"), "busybox:local"],
                 ["save", "-o", str(tmp_path / "o.tar"), "busybox:local"], ["images"]):
        mods = _modules_after(argv, root)
        assert "pybuild.image.store" in mods or argv == ["images"]
        for heavy in ("pybuild.graph", "frontends.dockerfile.compile", "pybuild.solver",
                      "lark", "platform", "concurrent.futures", "pybuild.progress"):
            assert heavy not in mods, (argv, heavy)
    assert (tmp_path / "d.tar").stat().st_size > 0 and (tmp_path / "o.tar").stat().st_size > 0


def test_save_and_version_import_only_what_they_use(fresh_cli, tmp_path):
    """No `inspect` (dataclasses imports it for classes without a docstring only:
    pybuild/dccache.py), `typing` (annotations only), `shutil` (argparse's terminal
    width: cli._HelpFormatter; tempfile's: the first docker save stores its manifest
    with BlobStore.put_bytes, which needs no tempfile), `threading` (layers saved as
    stored need no thread), `hashlib` (an OCI save of a stored image hashes nothing; a
    docker save hashes one small manifest, with CPython's own SHA-256: cache/digest.py)."""
    root = str(fresh_cli.root)
    docker = ["save", "--format", "docker", "-o", str(tmp_path / "d.tar"), "busybox:local"]
    oci = ["save", "-o", str(tmp_path / "o.tar"), "busybox:local"]
    for argv, unused in ((docker, ("inspect", "typing", "threading", "shutil", "hashlib")),
                         (docker, ("inspect", "typing", "threading", "shutil", "hashlib")),
                         (oci, ("inspect", "typing", "threading", "shutil", "hashlib")),
                         (["--version"], ("inspect", "typing", "shutil"))):
        mods = _modules_after(argv, root, no_site=True)
        assert "pybuild.image.store" in mods or argv == ["--version"]
        for name in unused:
            assert name not in mods, (argv, name)
    assert (tmp_path / "d.tar").stat().st_size > 0 and (tmp_path / "o.tar").stat().st_size > 0


def test_build_does_not_import_the_cache_exchange(fresh_cli, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:local\nRUN --network=none echo hi > /x\n")
    mods = _modules_after(["build", "--progress=plain", "-t", "t:1", str(ctx)],
                          str(fresh_cli.root))
    assert "pybuild.solver" in mods  # it did build
    assert "lark" in mods  # the instruction-line grammar (frontends/dockerfile/parser.py)
    for unused in ("pybuild.cachetransfer", "cache.exchange", "platform"):
        assert unused not in mods, unused


def test_an_edit_rebuild_imports_no_frontend(fresh_cli, tmp_path):
    """Only the context changed: the build takes the plan its last build left
    (pybuild/buildmemo.py), so neither the Dockerfile frontend nor lark (nor `inspect`,
    which lark imports) is loaded; its layers are small, so neither is OpenSSL's SHA-256
    (cache/digest.py) nor the gzip thread pool, whose concurrent.futures imports logging
    (pybuild/image/parallel_gzip.py; the solver has pybuild/workers.py)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:local\nCOPY f /f\nRUN cat /f > /g\n")
    (ctx / "f").write_text("one\n")
    argv = ["build", "--progress=plain", "-t", "t:1", str(ctx)]
    first = _modules_after(argv, str(fresh_cli.root))
    assert "frontends.dockerfile.compile" in first
    (ctx / "f").write_text("two\n")
    mods = _modules_after(argv, str(fresh_cli.root))
    assert "pybuild.solver" in mods  # it did build
    for unused in ("frontends.dockerfile.compile", "frontends.dockerfile.checks", "lark",
                   "inspect", "hashlib", "concurrent.futures", "logging"):
        assert unused not in mods, unused
    assert fresh_cli("run", "--rm", "t:1", "cat", "/g").stdout == "two\n"
