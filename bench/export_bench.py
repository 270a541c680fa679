"""Export speed: a ~500 MB image to an OCI tarball, gzip and zstd, printed as a table.

    python3 bench/export_bench.py [--mb 500] [--reps 3]

The image is busybox plus one RUN that writes MB of semi-compressible data (a third
random, a third base64 of random, a third repeated text). Rows, each a median of REPS:

  layer commit   tar the step's snapshot and compress it into the store (what a build
                 does once per step; BuildKit does this work when it exports)
  export cold    an OCI tarball whose layers must be (re)compressed: zstd from the
                 stored gzip layers, or gzip with force-compression; the index records
                 of earlier runs are dropped first
  export warm    the same again: the layers come from the index, nothing is compressed
  export gzip    layers as stored (a build's default): the tarball is written, no more

MB/s is uncompressed image MB per second. BuildKit's OCI export of a 500 MB image
measured 9.9 s on this kind of machine (../shared/reference/peers.md); the last column
is that time, scaled to this image's size, over ours. Nothing is asserted here.
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

from pybuild import api  # noqa: E402
from pybuild.image.convert import LAYER_BLOBS, LAYER_REWRITES  # noqa: E402
from pybuild.image.parallel_gzip import engine_name  # noqa: E402
from pybuild.storeroot import StoreRoot  # noqa: E402
from pybuild.testing import make_busybox_rootfs  # noqa: E402

BUILDKIT_SECONDS_500MB = 9.9


def dockerfile(mb: int) -> str:
    n = max(1, mb // 12)  # 12 MB per round: 4 random, 4 (as base64) random, 4 text
    return (
        "FROM busybox:local\n"
        f"RUN mkdir /data && cd /data && for i in $(seq 1 {n}); do "
        "head -c 4194304 /dev/urandom > r$i; "
        "head -c 3145728 /dev/urandom | base64 > b$i; "
        "yes \"pybuild export bench line $i\" | head -c 4194304 > t$i; done\n")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def forget_conversions(store: StoreRoot) -> None:
    for kind in (LAYER_BLOBS, LAYER_REWRITES):
        for rec in list(store.index.records(kind)):
            store.index.delete(kind, rec.key)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500, help="size of the data the RUN writes")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pybuild-export-bench-", dir="/var/tmp"))
    try:
        store = StoreRoot.open(str(work / "store"))
        make_busybox_rootfs(str(work / "rootfs"))
        api.import_rootfs(str(work / "rootfs"), "busybox:local", root=store)
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile(args.mb))
        build_s = timed(lambda: api.build(str(ctx), tags=["bench:big"], progress="quiet",
                                          root=store))
        image = store.images.lookup("bench:big")
        top = image.layers[-1]
        snapshot = store.layer_dirs([top])[0]
        from pybuild.image.compression import layer_writer
        from pybuild.snapshot.diff import write_layer_tar

        tar_bytes = 0

        def commit(compression: str):
            nonlocal tar_bytes
            with layer_writer(store.blobs, compression) as sink:
                tar_bytes = write_layer_tar(snapshot, sink).size

        rows: list[tuple[str, float]] = []

        def measure(name: str, fn, before=None) -> None:
            times = []
            for _ in range(args.reps):
                if before:
                    before()
                times.append(timed(fn))
            rows.append((name, statistics.median(times)))

        measure("layer commit: tar + gzip", lambda: commit("gzip"))
        measure("layer commit: tar + zstd", lambda: commit("zstd"))
        out = str(work / "out.tar")
        measure("export gzip, layers as stored",
                lambda: api.save(["bench:big"], out, root=store))
        zstd = api.OutputSpec.parse("type=oci,dest=x,compression=zstd").image
        measure("export zstd cold (from gzip)",
                lambda: api.save(["bench:big"], out, root=store, options=zstd),
                before=lambda: forget_conversions(store))
        measure("export zstd warm (remembered)",
                lambda: api.save(["bench:big"], out, root=store, options=zstd))
        forced = api.OutputSpec.parse("type=oci,dest=x,force-compression=true").image
        measure("export gzip cold (forced, from gzip)",
                lambda: api.save(["bench:big"], out, root=store, options=forced),
                before=lambda: forget_conversions(store))

        mb = tar_bytes / 1e6
        scaled_buildkit = BUILDKIT_SECONDS_500MB * mb / 500
        print(f"image: {mb:.0f} MB uncompressed in its data layer; build {build_s:.1f} s; "
              f"gzip engine: {engine_name()}; {os.cpu_count()} cores; median of {args.reps}")
        print(f"{'what':<40} {'seconds':>8} {'MB/s':>8} {'vs BuildKit':>12}")
        for name, secs in rows:
            print(f"{name:<40} {secs:8.2f} {mb / secs:8.0f} {scaled_buildkit / secs:11.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
