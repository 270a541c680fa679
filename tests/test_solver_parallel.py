"""The solver's scheduling: independent stages run at once on a bounded pool, identical
vertices run once, unneeded stages never run, and a failure or Ctrl-C stops the other
running steps and leaves the store usable. Times come from /proc/uptime, which every pid
namespace shares, and tests compare intervals, never wall time."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, needs_root

pytestmark = needs_root

STAMP = "cat /proc/uptime | cut -d' ' -f1"


def two_branches(token: str, seconds: float) -> str:
    """Two independent stages that record when their RUN started and ended."""
    run = (f"RUN echo {token} %s >/dev/null; {STAMP} > /start; sleep {seconds}; "
           f"{STAMP} > /end")
    return (f"FROM busybox:local AS a\n{run % 'a'}\n"
            f"FROM busybox:local AS b\n{run % 'b'}\n"
            "FROM busybox:local\n"
            "COPY --from=a /start /a.start\nCOPY --from=a /end /a.end\n"
            "COPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n")


def build_intervals(store_root, tmp_path: Path, jobs: int | None):
    from pybuild import api

    token = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(two_branches(token, 1.5))
    out = tmp_path / "out"
    api.build(str(tmp_path), progress="quiet", root=str(store_root), jobs=jobs,
              outputs=[f"type=local,dest={out}"])
    read = lambda name: float((out / name).read_text())  # noqa: E731
    return (read("a.start"), read("a.end")), (read("b.start"), read("b.end"))


def test_independent_stages_overlap(store_root, tmp_path):
    a, b = build_intervals(store_root, tmp_path, jobs=2)
    assert a[0] < b[1] and b[0] < a[1], f"runs did not overlap: a={a} b={b}"


def test_jobs_bounds_the_pool(store_root, tmp_path):
    a, b = build_intervals(store_root, tmp_path, jobs=1)
    assert a[1] <= b[0] or b[1] <= a[0], f"--jobs 1 ran two steps at once: a={a} b={b}"


def test_identical_vertices_run_once_and_unneeded_stages_never(store_root, tmp_path):
    from pybuild import api

    token = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox:local AS unused\nRUN exit 9\n"
        f"FROM busybox:local AS x\nRUN echo {token} > /f\n"
        f"FROM busybox:local AS y\nRUN echo {token} > /f\n"
        "FROM busybox:local\nCOPY --from=x /f /x\nCOPY --from=y /f /y\n")
    result = api.build(str(tmp_path), progress="quiet", root=str(store_root))
    runs = [s.name for s in result.steps if s.name.startswith("RUN")]
    assert runs == [f"RUN echo {token} > /f"]


def _processes_with(token: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            continue
    return out


def _assert_clean(store: Path, token: str) -> None:
    deadline = time.monotonic() + 10
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(token) == []
    with open("/proc/mounts") as f:
        assert str(store) not in f.read()
    work = store / "w"
    assert not work.exists() or os.listdir(work) == []


def failing_branch(token: str) -> str:
    return (f"FROM busybox:local AS slow\nRUN sleep 60; echo {token}\n"
            f"FROM busybox:local AS bad\nRUN sleep 0.5; echo {token}-bad; exit 3\n"
            "FROM busybox:local\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n")


def test_failing_step_cancels_the_other_branch(tmp_path, fresh_cli):
    from pybuild import api
    from pybuild.errors import StepFailed

    store = fresh_cli.root
    token = uuid.uuid4().hex
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(failing_branch(token))
    start = time.monotonic()
    with pytest.raises(StepFailed) as info:
        api.build(str(ctx), progress="quiet", root=str(store), jobs=2)
    assert info.value.exit_code == 3
    assert time.monotonic() - start < 30  # the 60 s sleep was killed, not waited for
    _assert_clean(store, token)
    # the store still works: the next build runs
    (ctx / "Dockerfile").write_text(f"FROM busybox:local\nRUN echo {token}-next > /n\n")
    assert api.build(str(ctx), progress="quiet", root=str(store)).run_steps == 1


def test_ctrl_c_stops_running_steps(tmp_path, fresh_cli):
    store = fresh_cli.root
    token = uuid.uuid4().hex
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM busybox:local AS a\nRUN sleep 60; echo {token}\n"
        f"FROM busybox:local AS b\nRUN sleep 61; echo {token}\n"
        "FROM busybox:local\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "pybuild", "--root", str(store), "build",
                             "--progress=plain", "--jobs", "2", str(ctx)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(_processes_with(token)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_processes_with(token)) >= 2, "the two RUN steps did not start"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out.decode(errors="replace")
    _assert_clean(store, token)
    (ctx / "Dockerfile").write_text(f"FROM busybox:local\nRUN echo {token}-next > /n\n")
    fresh_cli("build", "--progress=plain", str(ctx))
