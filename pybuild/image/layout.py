"""OCI image layout: writing one as a tarball, and reading any image tarball back.

`write_oci_layout_tar` writes `oci-layout`, `index.json` and `blobs/sha256/*` as a
deterministic tar (sorted names, mtime 0, root-owned): the same images give the same
bytes. Each tag is one index entry annotated with `org.opencontainers.image.ref.name` (the
tag, as the OCI layout convention and skopeo's `oci-archive:FILE:TAG` expect) and
`io.containerd.image.name` (the full name, which `docker load` and containerd use).

`read_image_tar` takes an OCI layout (tar, compressed tar or directory) or a
docker-archive (`docker save` output) and imports every blob into the store, each checked
against its digest, then registers the images and returns their names (applied as tags
only with `apply_tags=True`: `pybuild run x.tar` loads without naming). When a tar holds
both formats (Docker 25+ `docker save`), the OCI layout wins: it keeps manifest digests.
"""
from __future__ import annotations

import json
import os
import posixpath

from cache.digest import CHUNK, check_digest, digest_bytes
from pybuild.errors import PybuildError
from pybuild.image import mediatypes as mt
from pybuild.image.store import ImageStore, InvalidReference, Reference, StoredImage, parse_ref
from pybuild.image.types import Descriptor, Index, InvalidImageDocument, Manifest, Platform
from pybuild.snapshot.diff import TarEntry, write_tar_entries

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import BinaryIO, Iterable

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"


class ImageArchiveError(PybuildError):
    """An image tarball or layout directory that cannot be read."""


# --------------------------------------------------------------------------- tar writing


def blob_entries(store: ImageStore, digests: Iterable[str]) -> list[TarEntry]:
    """`blobs/`, `blobs/sha256/` and one entry per blob (mtime 0, root-owned, 0644)."""
    out = [TarEntry.directory("blobs/"), TarEntry.directory("blobs/sha256/")]
    for d in sorted(set(digests)):
        out.append(TarEntry.host_file(blob_name(d), store.blobs.path(d)))
    return out


def image_blobs(image: StoredImage) -> list[str]:
    return [image.manifest_digest, image.config_digest, *(layer.digest for layer in image.layers)]


# --------------------------------------------------------------------------- OCI layout out


def export_names(tags: Iterable[str]) -> list[Reference]:
    """The names to write for an image: normalized, `name:tag` only. A reference by
    digest (`busybox@sha256:...`) names no tag, so it exports unnamed, as `docker save`
    does; `name:tag@digest` keeps its tag."""
    out: list[Reference] = []
    for t in tags:
        ref = parse_ref(t)
        if ref.tag:
            ref = Reference(ref.domain, ref.path, ref.tag)
            if ref not in out:
                out.append(ref)
    return out


def oci_index(store: ImageStore, images: list[tuple[StoredImage, list[str]]]) -> Index:
    """The layout's index.json: one entry per (image, tag), or one bare entry for an
    untagged image."""
    entries: list[Descriptor] = []
    seen: set[tuple] = set()
    for image, tags in images:
        base = Descriptor(image.manifest.media_type, image.manifest_digest,
                          store.blobs.size(image.manifest_digest))
        names = export_names(tags) or [None]
        for ref in names:
            desc = base
            if ref is not None:
                desc = base.with_annotations(**{mt.ANNOTATION_CONTAINERD_NAME: str(ref),
                                                mt.ANNOTATION_REF_NAME: ref.tag})
            key = (desc.digest, desc.annotations)
            if key not in seen:
                seen.add(key)
                entries.append(desc)
    return Index(tuple(entries))


def write_oci_layout_tar(store: ImageStore, images: list[tuple[StoredImage, list[str]]],
                         out: BinaryIO) -> None:
    index = oci_index(store, images)
    entries = blob_entries(store, (d for image, _ in images for d in image_blobs(image)))
    entries.append(TarEntry.file(INDEX_FILE, index.to_json()))
    entries.append(TarEntry.file(OCI_LAYOUT_FILE, layout_file()))
    write_tar_entries(entries, out)  # sorted by name: the same images, the same bytes


def layout_file() -> bytes:
    return json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}).encode()


def write_oci_layout_dir(store: ImageStore, images: list[tuple[StoredImage, list[str]]],
                         dest: str) -> None:
    """The same layout as a directory (`skopeo ... oci:DIR`, `umoci --image DIR:TAG`).
    Blobs already there are kept; index.json is replaced last, atomically, so a reader
    never sees an index naming a blob that is not yet written."""
    import shutil

    from cache.atomicfile import write_atomically

    blob_dir = os.path.join(dest, "blobs", "sha256")
    os.makedirs(blob_dir, exist_ok=True)
    for entry in blob_entries(store, (d for image, _ in images for d in image_blobs(image))):
        if entry.path is None:
            continue
        target = os.path.join(dest, entry.name)
        if not os.path.exists(target):
            tmp = target + ".tmp"
            shutil.copyfile(entry.path, tmp)
            os.replace(tmp, target)
    for name, data in ((OCI_LAYOUT_FILE, layout_file()),
                       (INDEX_FILE, oci_index(store, images).to_json())):
        write_atomically(os.path.join(dest, name), data)


# --------------------------------------------------------------------------- sources


class Source:
    """Files of an image tarball or directory, by relative name."""

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageArchiveError(f"{name} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        pass


def _clean(name: str) -> str:
    name = posixpath.normpath("/" + name).lstrip("/")
    return name


class TarSource(Source):
    """A tar, plain or compressed (gzip, bzip2, xz by tarfile; zstd unpacked to a temp
    file first, since members are read out of order)."""

    def __init__(self, path: str):
        import tarfile  # lazily: writing a layout (save) needs none of it

        self._spool = None
        with open(path, "rb") as f:
            zstd = f.read(4) == b"\x28\xb5\x2f\xfd"
        try:
            if zstd:
                import shutil
                import tempfile

                import zstandard

                self._spool = tempfile.TemporaryFile()
                with open(path, "rb") as f:
                    reader = zstandard.ZstdDecompressor().stream_reader(
                        f, read_across_frames=True)
                    shutil.copyfileobj(reader, self._spool, CHUNK)
                self._spool.seek(0)
                self._tar = tarfile.open(fileobj=self._spool, mode="r:")
            else:
                self._tar = tarfile.open(path, "r:*")
            self._members = {_clean(m.name): m for m in self._tar.getmembers()}
        except Exception as e:  # tarfile, gzip, lzma and zstandard each have their own
            if self._spool is not None:
                self._spool.close()
            raise ImageArchiveError(f"{path} is not a readable tar archive: {e}") from None

    def has(self, name: str) -> bool:
        return _clean(name) in self._members

    def open(self, name: str) -> BinaryIO:
        member = self._members.get(_clean(name))
        f = self._tar.extractfile(member) if member is not None else None
        if f is None:
            raise ImageArchiveError(f"the archive has no file {name!r}")
        return f  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()
        if self._spool is not None:
            self._spool.close()


class DirSource(Source):
    def __init__(self, root: str):
        self._root = os.path.realpath(root)

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self._root, _clean(name)))
        if path != self._root and not path.startswith(self._root + os.sep):
            raise ImageArchiveError(f"{name!r} points outside of {self._root}")
        return path

    def has(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except OSError as e:
            raise ImageArchiveError(f"cannot read {name!r} in {self._root}: {e}") from None


def open_source(path: str) -> Source:
    if os.path.isdir(path):
        return DirSource(path)
    if not os.path.exists(path):
        raise ImageArchiveError(f"{path}: no such file or directory")
    return TarSource(path)


# --------------------------------------------------------------------------- reading


def read_image_tar(path: str, store: ImageStore, *, platform: Platform | None = None,
                   apply_tags: bool = False) -> list[tuple[StoredImage, list[str]]]:
    """Import every image of an OCI layout or docker-archive; returns each image with
    its normalized names (tagged in the store too when `apply_tags` is true)."""
    from pybuild.image import archive

    src = open_source(path)
    try:
        if src.has(OCI_LAYOUT_FILE) and src.has(INDEX_FILE):
            images = _read_oci(src, store, platform or Platform.host())
        elif src.has(archive.MANIFEST_FILE):
            images = archive.read_docker_archive(src, store)
        else:
            raise ImageArchiveError(
                f"{path} is neither an OCI image layout (no oci-layout/index.json) nor a "
                "docker-archive (no manifest.json)")
    finally:
        src.close()
    if apply_tags:
        for image, tags in images:
            for t in tags:
                store.tag(t, image.manifest_digest)
    return images


def blob_name(digest: str) -> str:
    """Where a layout keeps a blob: `blobs/<alg>/<hex>`."""
    return "blobs/" + digest.replace(":", "/", 1)


def import_blob(src: Source, store: ImageStore, desc: Descriptor) -> None:
    """Copy one `blobs/<alg>/<hex>` file into the store, verified by digest and size."""
    check_digest(desc.digest)
    if store.blobs.has(desc.digest):
        return
    name = blob_name(desc.digest)
    if not src.has(name):
        raise ImageArchiveError(f"blob {desc.digest} is missing from the image layout")
    from cache.store import DigestMismatch

    with src.open(name) as f:
        try:
            store.blobs.put_stream(_Limited(f, desc.size), desc.digest)
        except DigestMismatch as e:
            raise ImageArchiveError(f"blob {desc.digest} is corrupt: {e}") from None
    if store.blobs.size(desc.digest) != desc.size:
        store.blobs.delete(desc.digest)
        raise ImageArchiveError(f"blob {desc.digest} has the wrong size (want {desc.size})")


class _Limited:
    """Read at most `limit` (+1, so an oversize blob fails its digest) bytes."""

    def __init__(self, f: BinaryIO, limit: int):
        self._f = f
        self._left = limit + 1

    def read(self, n: int = CHUNK) -> bytes:
        if self._left <= 0:
            return b""
        data = self._f.read(min(n if n > 0 else CHUNK, self._left))
        self._left -= len(data)
        return data


def _read_verified(src: Source, desc: Descriptor) -> bytes:
    data = src.read(blob_name(check_digest(desc.digest)))
    if digest_bytes(data) != desc.digest:
        raise ImageArchiveError(f"blob {desc.digest} is corrupt: digest mismatch")
    return data


def _names_of(desc: Descriptor) -> list[str]:
    """The names an index entry gives its image. A bare tag in ref.name (`latest`) names
    no repository, so only the containerd annotation or a full reference counts."""
    full = desc.annotation(mt.ANNOTATION_CONTAINERD_NAME)
    ref_name = desc.annotation(mt.ANNOTATION_REF_NAME)
    for candidate in (full, ref_name):
        if candidate and ("/" in candidate or ":" in candidate):
            try:
                parsed = parse_ref(candidate)
            except InvalidReference:
                continue
            if parsed.tag and not parsed.digest:
                return [str(parsed)]
    return []


def _pick_manifest(src: Source, desc: Descriptor, platform: Platform) -> tuple[Descriptor, bytes]:
    """Follow nested indexes down to the one manifest for `platform`."""
    for _ in range(8):
        data = _read_verified(src, desc)
        if desc.media_type in mt.MANIFESTS:
            return desc, data
        if desc.media_type not in mt.INDEXES:
            # some writers leave mediaType out of the descriptor: look inside
            doc = json.loads(data)
            if doc.get("mediaType") in mt.MANIFESTS or "config" in doc:
                return desc, data
        index = Index.from_json(data)
        candidates = [m for m in index.manifests if m.media_type in mt.MANIFESTS | mt.INDEXES]
        chosen = [m for m in candidates if m.platform is not None and platform.matches(m.platform)]
        if not chosen:
            chosen = [m for m in candidates if m.platform is None]
        if not chosen:
            have = ", ".join(str(m.platform) for m in candidates if m.platform) or "none"
            raise ImageArchiveError(f"no image for platform {platform} in the layout "
                                    f"(it has: {have})")
        desc = chosen[0]
    raise ImageArchiveError("image indexes nested too deeply")


def _read_oci(src: Source, store: ImageStore,
              platform: Platform) -> list[tuple[StoredImage, list[str]]]:
    try:
        layout = json.loads(src.read(OCI_LAYOUT_FILE))
        index = Index.from_json(src.read(INDEX_FILE))
    except (ValueError, InvalidImageDocument) as e:
        raise ImageArchiveError(f"invalid OCI image layout: {e}") from None
    if not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise ImageArchiveError(
            f"unsupported OCI layout version {layout.get('imageLayoutVersion')!r}")
    found: dict[str, tuple[StoredImage, list[str]]] = {}
    for entry in index.manifests:
        if entry.media_type and entry.media_type not in mt.MANIFESTS | mt.INDEXES:
            continue  # artifacts and the like: not images
        manifest_desc, manifest_bytes = _pick_manifest(src, entry, platform)
        if manifest_desc.digest not in found:
            try:
                manifest = Manifest.from_json(manifest_bytes)
            except InvalidImageDocument as e:
                raise ImageArchiveError(f"manifest {manifest_desc.digest}: {e}") from None
            for blob in (manifest.config, *manifest.layers):
                import_blob(src, store, blob)
            image = store.register(manifest_bytes)
            found[manifest_desc.digest] = (image, [])
        names = found[manifest_desc.digest][1]
        names.extend(n for n in _names_of(entry) if n not in names)
    return list(found.values())
