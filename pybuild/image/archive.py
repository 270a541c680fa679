"""docker-archive: the `docker save` / `docker load` tarball, both ways.

Written: `manifest.json` (Config, RepoTags, Layers), `repositories`, and the config and
layer blobs under `blobs/sha256/` (the paths Docker 25 uses; older `docker load` follows
whatever paths manifest.json gives). Layers go in as they are in the store: `docker load`
decompresses gzip and zstd layers itself. Like Docker 25's `docker save` (and BuildKit's
docker exporter) the tar is an OCI layout too: `oci-layout`, `index.json` and the image
manifests, so a load keeps manifest digests (and their Docker media types).

Read (through `layout.read_image_tar`): each image becomes one of our OCI manifests.
Plain-tar layers (what `docker save` writes) are kept as they are, media type
`application/vnd.oci.image.layer.v1.tar`: their digest is their diff_id, nothing is lost
or recompressed, and an exporter can still compress them on the way out. Every layer is
checked against the diff_id its config lists.
"""
from __future__ import annotations

import json

from pybuild.image import mediatypes as mt
from pybuild.image.compression import diff_id_of, sniff_compression
from pybuild.image.layout import (INDEX_FILE, OCI_LAYOUT_FILE, ImageArchiveError, Source,
                                  blob_entries, export_names, layout_file, oci_index)
from pybuild.image.store import (ImageStore, InvalidReference, StoredImage, familiar_name,
                                 parse_ref)
from pybuild.image.types import Descriptor, ImageConfigFile, InvalidImageDocument, Manifest
from pybuild.snapshot.diff import TarEntry, write_tar_entries

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import BinaryIO

MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def write_docker_archive(store: ImageStore, images: list[tuple[StoredImage, list[str]]],
                         out: BinaryIO) -> None:
    manifest: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    digests: list[str] = []
    for image, tags in images:
        repo_tags = []
        for ref in export_names(tags):
            repo_tags.append(familiar_name(str(ref)))
            if image.layers:
                repo = familiar_name(ref.repository)
                repositories.setdefault(repo, {})[ref.tag] = \
                    image.layers[-1].digest.split(":", 1)[1]
        manifest.append({"Config": _blob_name(image.config_digest),
                         "RepoTags": repo_tags or None,
                         "Layers": [_blob_name(layer.digest) for layer in image.layers]})
        digests.extend((image.manifest_digest, image.config_digest))
        digests.extend(layer.digest for layer in image.layers)
    entries: list[TarEntry] = blob_entries(store, digests)
    entries.append(TarEntry.file(INDEX_FILE, oci_index(store, images).to_json()))
    entries.append(TarEntry.file(OCI_LAYOUT_FILE, layout_file()))
    entries.append(TarEntry.file(MANIFEST_FILE,
                                 json.dumps(manifest, separators=(",", ":")).encode()))
    if repositories:
        entries.append(TarEntry.file(REPOSITORIES_FILE, json.dumps(
            repositories, sort_keys=True, separators=(",", ":")).encode()))
    write_tar_entries(entries, out)  # sorted by name


def read_docker_archive(src: Source, store: ImageStore) -> list[tuple[StoredImage, list[str]]]:
    try:
        entries = json.loads(src.read(MANIFEST_FILE))
    except ValueError as e:
        raise ImageArchiveError(f"docker-archive: invalid manifest.json: {e}") from None
    if not isinstance(entries, list):
        raise ImageArchiveError("docker-archive: manifest.json is not a list")
    out: list[tuple[StoredImage, list[str]]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageArchiveError(f"docker-archive: bad manifest.json entry {entry!r}")
        image = _import_one(src, store, entry)
        names = []
        for t in entry.get("RepoTags") or ():
            try:
                names.append(str(parse_ref(t)))
            except InvalidReference:
                continue  # a name Docker would not load either
        out.append((image, names))
    return out


def _import_one(src: Source, store: ImageStore, entry: dict) -> StoredImage:
    config_bytes = src.read(entry["Config"])
    try:
        config = ImageConfigFile.from_json(config_bytes)
    except InvalidImageDocument as e:
        raise ImageArchiveError(f"docker-archive: {entry['Config']}: {e}") from None
    layer_paths = entry.get("Layers") or []
    if len(layer_paths) != len(config.diff_ids):
        raise ImageArchiveError(
            f"docker-archive: {len(layer_paths)} layers but the config lists "
            f"{len(config.diff_ids)} diff_ids")
    config_digest = store.blobs.put_bytes(config_bytes)
    layers: list[Descriptor] = []
    for path, diff_id in zip(layer_paths, config.diff_ids):
        layers.append(_import_layer(src, store, path, diff_id))
    manifest = Manifest(Descriptor(mt.OCI_CONFIG, config_digest, len(config_bytes)),
                        tuple(layers))
    return store.register(manifest.to_json())


def _import_layer(src: Source, store: ImageStore, path: str, diff_id: str) -> Descriptor:
    with src.open(path) as f:
        head = f.read(4)
        compression = sniff_compression(head)
        digest = store.blobs.put_stream(_Prepend(head, f))
    if compression == "uncompressed":
        actual = digest
    else:
        with store.blobs.open(digest) as blob:
            actual = diff_id_of(blob)
    if actual != diff_id:
        raise ImageArchiveError(
            f"docker-archive: layer {path} does not match its config (diff_id {actual}, "
            f"config says {diff_id})")
    return Descriptor(mt.LAYER_BY_COMPRESSION[compression], digest, store.blobs.size(digest))


class _Prepend:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._rest.read(n)

