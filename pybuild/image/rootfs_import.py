"""`pybuild import`: a root filesystem (a directory or a tarball) becomes a one-layer image,
as `docker import` does.

A directory is tarred by the project's layer tar writer (no overlay whiteout handling:
a plain tree has none). A tarball (plain, gzip, bzip2, xz or zstd) is re-emitted entry by
entry, never extracted: names are made relative (`/etc/x` and `./etc/x` become `etc/x`),
the root entry is dropped, and any name or hard link with a `..` component is refused, so
the layer cannot write outside the rootfs it is unpacked into. Mtimes, owners, modes,
devices, links and xattrs are kept.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
from typing import BinaryIO

from cache.store import BlobStore
from pybuild.assemble import created_timestamp
from pybuild.errors import PybuildError
from pybuild.graph import ImageConfig
from pybuild.image.compression import ZSTD_MAGIC, layer_writer
from pybuild.image.store import ImageStore, StoredImage, parse_ref
from pybuild.image.types import History, ImageConfigFile, Platform

CREATED_BY = "pybuild import"
# PAX records that describe the entry itself: we rewrite those fields, and tarfile would
# let a stale record override the value we set.
_KEPT_PAX_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl.")


class RootfsImportError(PybuildError):
    """A rootfs that cannot be imported."""


def import_rootfs(source: str, store: ImageStore, blobs: BlobStore | None = None, *,
                  tag: str | None = None, changes: ImageConfig | None = None,
                  compression: str = "gzip", created: str | None = None,
                  platform: Platform | None = None) -> StoredImage:
    """Import `source` (a directory or a tar file) as a single-layer image; tag it when
    `tag` is given. `created` (RFC 3339) defaults to now; pass it for reproducible output."""
    blobs = blobs or store.blobs
    if tag:
        parse_ref(tag)  # a bad name fails before any work is done
    if not os.path.exists(source):
        raise RootfsImportError(f"{source}: no such file or directory")
    # the tar streams straight into the compressor: no temp copy of the rootfs
    with layer_writer(blobs, compression) as sink:
        if os.path.isdir(source):
            from pybuild.snapshot.diff import write_layer_tar

            write_layer_tar(source, sink, overlay_whiteouts=False)  # type: ignore[arg-type]
        else:
            normalize_tar(source, sink)  # type: ignore[arg-type]
    layer = sink.record
    assert layer is not None
    plat = platform or Platform.host()
    when = created or created_timestamp()
    config = ImageConfigFile(
        architecture=plat.architecture, os=plat.os, variant=plat.variant,
        config=changes or ImageConfig(), created=when,
        history=(History(created=when, created_by=CREATED_BY,
                         comment=f"Imported from {os.path.basename(source.rstrip('/')) or '/'}"),))
    image = store.commit(config, [layer])
    if tag:
        store.tag(tag, image.manifest_digest)
    return image


def _open_tar_stream(path: str) -> tuple[BinaryIO, tarfile.TarFile]:
    raw = open(path, "rb")
    try:
        if raw.peek(4)[:4] == ZSTD_MAGIC:
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            return raw, tarfile.open(fileobj=stream, mode="r|")
        return raw, tarfile.open(fileobj=raw, mode="r|*")
    except Exception as e:  # tarfile, gzip, lzma and zstandard each raise their own
        raw.close()
        raise RootfsImportError(f"{path} is not a tar archive: {e}") from None


def _relative(name: str, source: str, what: str = "entry") -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RootfsImportError(
            f"{source}: tar {what} {name!r} has a '..' component; refusing to import it")
    return posixpath.join(*parts) if parts else ""


def normalize_tar(path: str, out: BinaryIO) -> None:
    """Copy the tar at `path` to `out` with safe relative names (see the module doc)."""
    raw, tin = _open_tar_stream(path)
    try:
        with tin, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout:
            for m in tin:
                name = _relative(m.name, path)
                if not name:
                    continue  # the root itself: its mode is the runtime's business
                info = tarfile.TarInfo(name)
                info.type = m.type
                info.mode = m.mode
                info.uid, info.gid = m.uid, m.gid
                info.uname, info.gname = m.uname, m.gname
                info.mtime = int(m.mtime)  # a float would add a PAX mtime record
                info.devmajor, info.devminor = m.devmajor, m.devminor
                info.pax_headers = {k: v for k, v in m.pax_headers.items()
                                    if k.startswith(_KEPT_PAX_PREFIXES)}
                if m.islnk():
                    info.linkname = _relative(m.linkname, path, "hard link target")
                elif m.issym():
                    info.linkname = m.linkname
                if m.isreg():
                    info.size = m.size
                    tout.addfile(info, tin.extractfile(m))
                elif m.isdir() or m.issym() or m.islnk() or m.ischr() or m.isblk() \
                        or m.isfifo():
                    tout.addfile(info)
                # other types (GNU volume headers, ...) carry no file: dropped
    except RootfsImportError:
        raise
    except Exception as e:  # tarfile, gzip, lzma and zstandard each raise their own
        raise RootfsImportError(f"{path}: cannot read it as a tar archive: {e}") from None
    finally:
        raw.close()
