"""How fast a tree of small files is made right after another was deleted next to it.

    python3 bench/inode_bench.py [--files 20000] [--rounds 4] [--dir /var/tmp]

What a store sees when it is pruned (`rm -rf`, as the oracle bench does before every cold
build) and then filled again. Each round makes a tree of N 140-byte files in 200
directories under a fresh subdirectory of a parent, times it, and deletes it; the next
round starts at once. Two parents are compared, rounds alternating:
- plain: a directory as made by `mkdir`;
- topdir: the same with ext4's TOPDIR flag, as the store's `w/`, `t/` and `c/` get
  (pybuild/dirspread.py).
On ext4 without a journal the inode allocator skips inodes deleted in the last minute or
so, with one lookup per candidate, in the block group where the new file's directory is:
the plain parent keeps new trees among the inodes of the deleted ones. The flag is
reported as "n/a" where the filesystem refuses it (the two columns then measure the
same thing). Nothing is asserted here.
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

from pybuild.dirspread import spread_subdirectories  # noqa: E402

DIRS = 200


def make_tree(root: str, files: int) -> float:
    t0 = time.perf_counter()
    os.mkdir(root)
    per_dir = max(1, files // DIRS)
    body = b"x" * 140
    for d in range(DIRS):
        dpath = os.path.join(root, f"d{d:03d}")
        os.mkdir(dpath)
        for f in range(per_dir):
            fd = os.open(os.path.join(dpath, f"f{f:03d}.txt"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, body)
            os.close(fd)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="pybuild-inode-bench-", dir=args.dir)
    try:
        parents = {"plain": os.path.join(base, "plain"), "topdir": os.path.join(base, "top")}
        for p in parents.values():
            os.mkdir(p)
        flagged = spread_subdirectories(parents["topdir"])
        times: dict[str, list[float]] = {name: [] for name in parents}
        for rnd in range(args.rounds):
            order = list(parents) if rnd % 2 == 0 else list(reversed(parents))
            for name in order:
                tree = os.path.join(parents[name], f"tree{rnd}")
                times[name].append(make_tree(tree, args.files))
                shutil.rmtree(tree)
        print(f"{args.files} files in {DIRS} dirs under {args.dir}, {args.rounds} rounds "
              f"(TOPDIR {'set' if flagged else 'n/a'})")
        print("| parent | median s | rounds s |")
        print("|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {statistics.median(xs):.2f} | "
                  + " ".join(f"{x:.2f}" for x in xs) + " |")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
