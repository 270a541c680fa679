"""pybuild's own benchmarks: per-step RUN overhead and rebuild times, printed as a table.

    python3 bench/run.py [--reps N]

Each figure is a median over N repetitions, in a fresh store under /var/tmp made from
the host's static busybox (no registry needed). Nothing here is asserted: tests check
behaviour, this file measures it. The side-by-side comparison with BuildKit and buildah
lives in ../shared/oracle (bench.sh with BUILDERS="docker buildah pybuild").
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pybuild import api  # noqa: E402
from pybuild.testing import make_busybox_rootfs  # noqa: E402

STEPS_30 = "\n".join(
    ["FROM busybox:local"]
    + [line for i in range(1, 11) for line in (
        f"ENV STEP_{i:02d}=value-{i:02d}",
        f"COPY src/f{i:02d}.txt /app/f{i:02d}.txt",
        f'RUN echo "step {i:02d}: $STEP_{i:02d}" >> /app/log.txt && cat /app/f{i:02d}.txt > /dev/null',
    )]
    + ['CMD ["cat", "/app/log.txt"]']) + "\n"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _context(work: Path, name: str, dockerfile: str, files: dict[str, str]) -> Path:
    ctx = work / name
    (ctx / "src").mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, text in files.items():
        (ctx / rel).write_text(text)
    return ctx


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20, help="trivial RUN steps in the overhead bench")
    ap.add_argument("--files", type=int, default=20000, help="files in the big-COPY bench")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir="/var/tmp"))
    rows: list[tuple[str, float, str]] = []
    try:
        make_busybox_rootfs(str(work / "rootfs"))
        store = str(work / "store")
        api.import_rootfs(str(work / "rootfs"), "busybox:local", root=store)

        # 1. per-step overhead: N trivial RUNs with the cache off, minus a 0-RUN build
        many = _context(work, "runs", "FROM busybox:local\n" + "".join(
            f"RUN true # {i}\n" for i in range(args.runs)), {})
        none = _context(work, "none", "FROM busybox:local\nENV A=1\n", {})
        t_many = [_timed(lambda: api.build(str(many), progress="quiet", root=store, no_cache=True))
                  for _ in range(args.reps)]
        t_none = [_timed(lambda: api.build(str(none), progress="quiet", root=store, no_cache=True))
                  for _ in range(args.reps)]
        per_run = (statistics.median(t_many) - statistics.median(t_none)) / args.runs
        rows.append((f"trivial RUN, per step ({args.runs} steps, --no-cache)", per_run * 1000, "ms"))
        # the same for a COPY of one small file (a rootfs mount per step, like BuildKit's)
        copies = _context(work, "copies", "FROM busybox:local\n" + "".join(
            f"COPY src/c.txt /c{i}.txt\n" for i in range(args.runs)), {"src/c.txt": "c\n"})
        t_copies = [_timed(lambda: api.build(str(copies), progress="quiet", root=store,
                                             no_cache=True)) for _ in range(args.reps)]
        per_copy = (statistics.median(t_copies) - statistics.median(t_none)) / args.runs
        rows.append((f"small COPY, per step ({args.runs} steps, --no-cache)", per_copy * 1000, "ms"))

        # 1b. oracle b3's edit: COPY of a 20,000-file tree with one file changed, then a RUN
        # over it (the step time is mostly creating the files: disk-bound, so noisy)
        tree = {f"small/d{d:03d}/f{f:03d}.txt": f"dir {d} file {f}\n" + "0" * 120 + "\n"
                for d in range(1, args.files // 100 + 1) for f in range(1, 101)}
        b3 = _context(work, "b3", "FROM busybox:local\nCOPY small/ /data/small/\n"
                      "RUN find /data/small -type f | wc -l > /data/count.txt\n", {})
        for rel, text in tree.items():
            (b3 / rel).parent.mkdir(parents=True, exist_ok=True)
            (b3 / rel).write_text(text)
        api.build(str(b3), progress="quiet", root=store)
        b3_edit = []
        for rep in range(args.reps):
            (b3 / "small/d001/f050.txt").write_text(f"edited {rep}\n")
            b3_edit.append(_timed(lambda: api.build(str(b3), progress="quiet", root=store)))
        rows.append((f"{len(tree)} files: edit of one (COPY + RUN rerun)",
                     statistics.median(b3_edit), "s"))

        # 2. the 30-step Dockerfile of oracle bench b1: cold, warm, edit, touch
        files = {f"src/f{i:02d}.txt": f"file {i}\n" for i in range(1, 11)}
        b1 = _context(work, "b1", STEPS_30, files)
        cold, warm, edit, touch = [], [], [], []
        for rep in range(args.reps):
            s = str(work / f"store-b1-{rep}")
            api.import_rootfs(str(work / "rootfs"), "busybox:local", root=s)
            (b1 / "src/f05.txt").write_text("file 5\n")
            cold.append(_timed(lambda: api.build(str(b1), tags=["b1"], progress="quiet", root=s)))
            warm.append(_timed(lambda: api.build(str(b1), tags=["b1"], progress="quiet", root=s)))
            (b1 / "src/f05.txt").write_text(f"edited {rep}\n")
            edit.append(_timed(lambda: api.build(str(b1), tags=["b1"], progress="quiet", root=s)))
            os.utime(b1 / "src/f05.txt")
            touch.append(_timed(lambda: api.build(str(b1), tags=["b1"], progress="quiet", root=s)))
            shutil.rmtree(s, ignore_errors=True)
        # the same warm rebuild as a user types it: interpreter start-up and CLI included
        s = str(work / "store-b1-cli")
        api.import_rootfs(str(work / "rootfs"), "busybox:local", root=s)
        api.build(str(b1), tags=["b1"], progress="quiet", root=s)
        cmd = [sys.executable, "-m", "pybuild", "--root", s, "build", "-q", "-t", "b1", str(b1)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed pybuild has its .pyc files
        cli_warm = [_timed(lambda: subprocess.run(cmd, check=True, env=env, capture_output=True))
                    for _ in range(args.reps)]
        cli_touch = []
        for _ in range(args.reps):
            os.utime(b1 / "src/f05.txt")
            cli_touch.append(_timed(lambda: subprocess.run(cmd, check=True, env=env,
                                                           capture_output=True)))
        # the same without the whole-build memo (pybuild/buildmemo.py): the full build path
        full = dict(env, PYBUILD_NO_BUILD_MEMO="1")
        cli_full = [_timed(lambda: subprocess.run(cmd, check=True, env=full, capture_output=True))
                    for _ in range(args.reps)]
        last = api.build(str(b1), progress="quiet", root=s)
        assert last.run_steps == 0, "the warm rebuild must run nothing"
        # CLI start-up of commands that do little (oracle's export cells): the interpreter
        # alone, then `images` and `save` of the small b1 image
        tar = str(work / "b1.tar")
        for name, argv in (
                ("CLI start-up: `python3 -c pass` (the floor)", None),
                ("CLI start-up: `pybuild images`", ["images"]),
                ("CLI start-up: `pybuild save --format docker` (b1)",
                 ["save", "--format", "docker", "-o", tar, "b1"]),
                ("CLI start-up: `pybuild save --format oci` (b1)",
                 ["save", "--format", "oci", "-o", tar, "b1"])):
            small = [sys.executable, "-c", "pass"] if argv is None else \
                [sys.executable, "-m", "pybuild", "--root", s, *argv]
            subprocess.run(small, check=True, env=env, capture_output=True)  # caches warm
            xs = [_timed(lambda: subprocess.run(small, check=True, env=env, capture_output=True))
                  for _ in range(max(args.reps, 9))]
            rows.append((name, statistics.median(xs), "s"))
        rows.append(("30 steps: warm rebuild via the CLI (start-up included; build memo)",
                     statistics.median(cli_warm), "s"))
        rows.append(("30 steps: touched file, via the CLI (build memo)",
                     statistics.median(cli_touch), "s"))
        rows.append(("30 steps: warm rebuild via the CLI, memo off (full build path)",
                     statistics.median(cli_full), "s"))
        for name, xs in (("30 steps: cold build", cold), ("30 steps: warm rebuild (all cached)", warm),
                         ("30 steps: edit of the 14th step's file (17 rerun)", edit),
                         ("30 steps: touched, unchanged file", touch)):
            rows.append((name, statistics.median(xs), "s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>10}")
    print(f"{'-' * width}  {'-' * 10}")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>8.3f} {unit}" if unit == "s" else
              f"{name:<{width}}  {value:>7.1f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
