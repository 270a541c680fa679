"""How fast a build context is checked: content checksums with the stat cache.

    python3 bench/context_bench.py [--files 20000] [--reps 3]

A context of N small files under /var/tmp is checksummed as `COPY . /` would be:
- cold: no stat cache, every file read and hashed;
- warm: a new BuildContext (as in the next build) with the persisted stat cache, nothing
  changed: stat() calls only;
- one touched: one file rewritten with new content: it alone is re-hashed.
Each figure is the median of --reps runs. Nothing is asserted here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pybuild.context import BuildContext  # noqa: E402


def make_context(root: Path, n: int) -> None:
    per_dir = 500
    for i in range(n):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir()
        (d / f"f{i:05d}.txt").write_text(f"file {i}\n" * 4)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pybuild-ctxbench-", dir="/var/tmp"))
    try:
        ctx_dir = work / "ctx"
        ctx_dir.mkdir()
        make_context(ctx_dir, a.files)
        # files written less than the racy window ago are never remembered (a later write
        # in the same timestamp tick could look unchanged): let them settle first
        time.sleep(2.1)
        cache = BuildContext.stat_cache_for(str(work / "contexts"), str(ctx_dir))
        colds, warms, touched = [], [], []
        hashed = {}
        for rep in range(a.reps):
            if rep:
                time.sleep(2.1)  # the last rep's touched file must settle too
            if os.path.exists(cache):
                os.unlink(cache)
            ctx = BuildContext(str(ctx_dir), stat_cache_path=cache)
            t, cold_sum = timed(lambda: ctx.checksum(["."]))
            colds.append(t)
            hashed["cold"] = ctx.stats.hashed_files
            ctx = BuildContext(str(ctx_dir), stat_cache_path=cache)
            t, warm_sum = timed(lambda: ctx.checksum(["."]))
            assert warm_sum == cold_sum
            warms.append(t)
            hashed["warm"] = ctx.stats.hashed_files
            victim = ctx_dir / "d007" / "f03600.txt"
            victim.write_text(f"touched {rep}\n")
            ctx = BuildContext(str(ctx_dir), stat_cache_path=cache)
            t, touched_sum = timed(lambda: ctx.checksum(["."]))
            assert touched_sum != warm_sum
            touched.append(t)
            hashed["touched"] = ctx.stats.hashed_files
        print(f"context checksum, {a.files} files, median of {a.reps}")
        print(f"{'case':<14} {'seconds':>9} {'files hashed':>13}")
        for name, times in (("cold", colds), ("warm", warms), ("one touched", touched)):
            key = name.split()[0] if name != "one touched" else "touched"
            print(f"{name:<14} {statistics.median(times):>9.3f} {hashed[key]:>13}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
