"""Shared fixtures: a store with a busybox base image made on this machine, and a CLI runner."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# the conformance vectors, copied from ../shared/conformance so a bare clone has them
SHARED = REPO / "tests" / "shared"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, overlayfs)")


def needs_tool(name: str):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs `python -m pybuild --root STORE ...` as a user would."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 cwd: str | Path | None = None, timeout: float = 300) -> CliResult:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        p = subprocess.run([sys.executable, "-m", "pybuild", "--root", str(self.root), *args],
                           capture_output=True, text=True, input=input, env=env,
                           cwd=str(cwd or REPO), timeout=timeout)
        result = CliResult(p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return result


@pytest.fixture(scope="session")
def base_rootfs(tmp_path_factory) -> Path:
    from pybuild.testing import NoBusybox, make_busybox_rootfs

    path = tmp_path_factory.mktemp("rootfs") / "busybox"
    try:
        make_busybox_rootfs(str(path))
    except NoBusybox as e:
        pytest.skip(str(e))
    return path


@pytest.fixture(scope="session")
def store_root(tmp_path_factory, base_rootfs) -> Path:
    """A store with `busybox:local` imported, shared by the end-to-end tests."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path_factory.mktemp("store")
    Cli(root)("import", str(base_rootfs), "busybox:local")
    return root


@pytest.fixture
def cli(store_root) -> Cli:
    return Cli(store_root)


@pytest.fixture
def fresh_cli(tmp_path, base_rootfs) -> Cli:
    """A CLI on an empty store of its own, with busybox:local imported."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    c = Cli(tmp_path / "store")
    c("import", str(base_rootfs), "busybox:local")
    return c
