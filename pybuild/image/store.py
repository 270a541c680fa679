"""The local image store: images as manifests in the blob store, names as tags in the index.

An image is its manifest blob; its config and layers are blobs the manifest points at.
`commit` writes the config and manifest for layers already in the store; `register` adopts
a manifest someone else wrote (an importer, a registry pull) once its blobs are present.
Tags live in the cache index under their normalized name (`docker.io/library/busybox:latest`),
and an "image" record per manifest remembers what `images()` lists, tagged or not.

Reference normalization follows Docker's (distribution/reference) so `busybox`,
`docker.io/library/busybox:latest` and `index.docker.io/library/busybox` are one name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from cache.digest import digest_bytes, is_digest
from cache.index import CacheIndex
from cache.store import BlobNotFound, BlobStore
from pybuild.errors import ImageNotFound, PybuildError
from pybuild.image import mediatypes as mt
from pybuild.image.types import (Descriptor, ImageConfigFile, InvalidImageDocument, LayerRecord,
                                 Manifest)

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
IMAGE_RECORD = "image"  # cache index kind: manifest digest -> {config, created, size}
_NAME_MAX = 255

# distribution/reference grammar
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
# an image ID prefix: any length after "sha256:", at least 4 digits bare (Docker's rule of
# thumb; shorter hex strings are more likely names)
_HEX_PREFIX = re.compile(r"^(?:sha256:[a-f0-9]{1,64}|[a-f0-9]{4,64})$")


class InvalidReference(PybuildError):
    """An image reference that Docker would refuse too."""

    def __init__(self, ref: str, reason: str = ""):
        self.ref = ref
        msg = f"invalid reference format: {ref!r}"
        super().__init__(msg + (f": {reason}" if reason else ""))


class AmbiguousReference(PybuildError):
    pass


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    @property
    def familiar(self) -> str:
        """The short form `docker images` shows: `busybox:latest`, `me/app:1`."""
        return familiar_name(str(self))


def parse_ref(ref: str, default_tag: bool = True) -> Reference:
    """Parse and normalize a reference; adds `:latest` when it has neither tag nor digest
    (unless `default_tag` is false)."""
    if not ref or ref != ref.strip():
        raise InvalidReference(ref, "empty or surrounded by spaces")
    name, digest = ref, ""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        if not _DIGEST.match(digest):
            raise InvalidReference(ref, f"bad digest {digest!r}")
        if not digest.startswith("sha256:") or not _HEX64.match(digest[7:]):
            raise InvalidReference(ref, "only sha256 digests with 64 hex digits are supported")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidReference(ref, f"bad tag {tag!r}")
    if not name:
        raise InvalidReference(ref, "no repository name")
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"
                   and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    if not _DOMAIN.match(domain):
        raise InvalidReference(ref, f"bad registry host {domain!r}")
    components = path.split("/")
    for c in components:
        if not _PATH_COMPONENT.match(c):
            if _PATH_COMPONENT.match(c.lower()):
                raise InvalidReference(ref, f"repository name ({path}) must be lowercase")
            raise InvalidReference(ref, f"bad repository name component {c!r}")
    if domain == DEFAULT_DOMAIN and path.startswith(OFFICIAL_REPO_PREFIX) \
            and _HEX64.match(path[len(OFFICIAL_REPO_PREFIX):]):
        raise InvalidReference(ref, "cannot use a 64-character hexadecimal string as a name")
    if len(domain) + 1 + len(path) > _NAME_MAX:
        raise InvalidReference(ref, f"repository name longer than {_NAME_MAX} characters")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize_ref(ref: str) -> str:
    """Docker's normalization: `busybox` -> `docker.io/library/busybox:latest`."""
    return str(parse_ref(ref))


def familiar_name(ref: str) -> str:
    """Strip what Docker hides: `docker.io/library/` and `docker.io/`."""
    prefix = DEFAULT_DOMAIN + "/"
    if ref.startswith(prefix + OFFICIAL_REPO_PREFIX):
        rest = ref[len(prefix + OFFICIAL_REPO_PREFIX):]
        if "/" not in rest.split("@")[0].split(":")[0]:
            return rest
    if ref.startswith(prefix):
        return ref[len(prefix):]
    return ref


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredImage:
    """An image of the store: its manifest and config, parsed, and its layers."""
    manifest_digest: str
    manifest: Manifest
    config_digest: str
    config: ImageConfigFile
    layers: tuple[LayerRecord, ...]

    @property
    def size(self) -> int:
        """Bytes in the store: config plus compressed layers (what `images()` shows)."""
        return self.manifest.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class ImageSummary:
    """A row of `images()`."""
    name: str
    manifest_digest: str
    size: int
    created: str


class ImageStore:
    def __init__(self, blobs: BlobStore, index: CacheIndex):
        self.blobs = blobs
        self.index = index

    # writing -------------------------------------------------------------
    def commit(self, config: ImageConfigFile, layers: list[LayerRecord]) -> StoredImage:
        """Write the config and an OCI manifest for `layers` (already in the blob store).

        The config's diff_ids come from the layers; a config that names others is a bug
        of the caller."""
        diff_ids = tuple(layer.diff_id for layer in layers)
        if config.diff_ids and config.diff_ids != diff_ids:
            raise ValueError("config diff_ids do not match the layers given to commit()")
        config = replace(config, diff_ids=diff_ids)
        for layer in layers:
            if not self.blobs.has(layer.digest):
                raise BlobNotFound(layer.digest)
        config_bytes = config.to_json()
        config_digest = self.blobs.put_bytes(config_bytes)
        manifest = Manifest(Descriptor(mt.OCI_CONFIG, config_digest, len(config_bytes)),
                            tuple(layer.descriptor() for layer in layers))
        return self.register(manifest.to_json())

    def register(self, manifest_bytes: bytes) -> StoredImage:
        """Adopt a manifest (exact bytes) whose config and layer blobs are in the store."""
        image = self._parse(digest_bytes(manifest_bytes), manifest_bytes)
        for d in (image.manifest.config, *image.manifest.layers):
            if not self.blobs.has(d.digest):
                raise BlobNotFound(d.digest)
        digest = self.blobs.put_bytes(manifest_bytes)
        self.index.put(IMAGE_RECORD, digest, {"config": image.config_digest,
                                              "created": image.config.created or "",
                                              "size": image.size})
        return image

    # reading -------------------------------------------------------------
    def get(self, manifest_digest: str) -> StoredImage:
        try:
            data = self.blobs.read(manifest_digest)
        except (BlobNotFound, ValueError):
            raise ImageNotFound(f"no image with manifest {manifest_digest} in the store") from None
        return self._parse(manifest_digest, data)

    def _parse(self, manifest_digest: str, data: bytes) -> StoredImage:
        manifest = Manifest.from_json(data)
        try:
            config_bytes = self.blobs.read(manifest.config.digest)
        except BlobNotFound:
            raise ImageNotFound(
                f"image {manifest_digest}: its config {manifest.config.digest} is not in the "
                "store") from None
        config = ImageConfigFile.from_json(config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidImageDocument(
                f"image {manifest_digest}: manifest has {len(manifest.layers)} layers but "
                f"its config lists {len(config.diff_ids)} diff_ids")
        layers = tuple(LayerRecord(d.digest, diff_id, d.size, d.media_type)
                       for d, diff_id in zip(manifest.layers, config.diff_ids))
        return StoredImage(manifest_digest, manifest, manifest.config.digest, config, layers)

    def lookup(self, ref: str) -> StoredImage | None:
        """By tag (`busybox`, `me/app:1`), by `name@sha256:...`, by a manifest digest or
        an unambiguous prefix of one (`sha256:ab12`, `ab12`). None when nothing matches."""
        if is_digest(ref):
            return self._get_or_none(ref)
        try:
            parsed = parse_ref(ref)
        except InvalidReference:
            parsed = None
            if not _HEX_PREFIX.match(ref):
                raise
        if parsed is not None:
            if parsed.digest:
                return self._get_or_none(parsed.digest)
            digest = self.index.get_tag(str(parsed))
            if digest is not None:
                return self._get_or_none(digest)
        if _HEX_PREFIX.match(ref):
            return self._by_prefix(ref if ref.startswith("sha256:") else "sha256:" + ref)
        return None

    def _get_or_none(self, digest: str) -> StoredImage | None:
        try:
            return self.get(digest)
        except (ImageNotFound, InvalidImageDocument):
            return None

    def _by_prefix(self, prefix: str) -> StoredImage | None:
        known = {r.key for r in self.index.records(IMAGE_RECORD)}
        known.update(t.digest for t in self.index.tags())
        hits = sorted(d for d in known if d.startswith(prefix))
        if len(hits) > 1:
            raise AmbiguousReference(
                f"{prefix!r} matches {len(hits)} images; give more digits of the digest")
        return self._get_or_none(hits[0]) if hits else None

    def verify(self, image: StoredImage) -> None:
        """Re-hash every blob of `image` and every layer's uncompressed tar; raise
        InvalidImageDocument on the first mismatch (`validate(image)` for tests and fsck)."""
        from cache.digest import digest_stream
        from pybuild.image.compression import open_uncompressed

        for d in (image.manifest_digest, image.config_digest,
                  *(layer.digest for layer in image.layers)):
            with self.blobs.open(d) as f:
                actual, _ = digest_stream(f)
            if actual != d:
                raise InvalidImageDocument(f"blob {d} is corrupt (its content hashes to {actual})")
        for layer in image.layers:
            if self.blobs.size(layer.digest) != layer.size:
                raise InvalidImageDocument(f"layer {layer.digest} has the wrong size")
            with open_uncompressed(self.blobs, layer) as f:
                actual, _ = digest_stream(f)
            if actual != layer.diff_id:
                raise InvalidImageDocument(
                    f"layer {layer.digest} unpacks to {actual}, not its diff_id {layer.diff_id}")

    # names ---------------------------------------------------------------
    def tag(self, ref: str, manifest_digest: str) -> None:
        parsed = parse_ref(ref)
        if parsed.digest:
            raise InvalidReference(ref, "a tag cannot contain a digest")
        if not self.blobs.has(manifest_digest):
            raise ImageNotFound(f"no image with manifest {manifest_digest} in the store")
        self.index.set_tag(str(parsed), manifest_digest)

    def untag(self, ref: str) -> bool:
        return self.index.delete_tag(normalize_ref(ref))

    def tags_of(self, manifest_digest: str) -> list[str]:
        return [t.name for t in self.index.tags() if t.digest == manifest_digest]

    def images(self) -> list[ImageSummary]:
        """Like `docker images`: one row per tag, then one per untagged image."""
        records = {r.key: r.value for r in self.index.records(IMAGE_RECORD)}
        rows: list[ImageSummary] = []
        tagged: set[str] = set()
        for t in self.index.tags():
            rec = records.get(t.digest)
            if rec is None:
                image = self._get_or_none(t.digest)
                if image is None:
                    continue  # a tag left over from a deleted image
                rec = {"created": image.config.created or "", "size": image.size}
            tagged.add(t.digest)
            rows.append(ImageSummary(familiar_name(t.name), t.digest, int(rec.get("size", 0)),
                                     rec.get("created", "")))
        for digest, rec in sorted(records.items()):
            if digest not in tagged and self.blobs.has(digest):
                rows.append(ImageSummary("<none>:<none>", digest, int(rec.get("size", 0)),
                                         rec.get("created", "")))
        return rows
