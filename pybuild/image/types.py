"""The image format values: descriptors, manifests, indexes, config files and layers.

Frozen dataclasses that turn into the exact JSON the OCI image spec v1.1 describes
(`to_json()`: canonical, sorted, compact, so the same value is always the same bytes and
digest) and back (`from_json()`: tolerant, Docker schema 2 accepted, unknown fields
ignored). Nothing here touches the disk.

A document read from elsewhere keeps its original bytes in the blob store (its digest is
the digest of those bytes); these values are only the parsed view of it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from cache.digest import canonical_json, check_digest
from pybuild.errors import PybuildError
from pybuild.imageconfig import ImageConfig
from pybuild.image import mediatypes as mt

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import Any


class InvalidImageDocument(PybuildError):
    """A manifest, index or config is not valid JSON of the expected shape."""


def _loads(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidImageDocument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidImageDocument(f"{what} is not a JSON object")
    return doc


def _annotations(d: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


# --------------------------------------------------------------------------- platform

_MACHINE_TO_OCI = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os/architecture[/variant]."""
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """'linux/amd64', 'linux/arm64/v8', 'linux/arm/v7'."""
        parts = text.strip().lower().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise PybuildError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> "Platform":
        # os.uname() is what platform.machine() reads on Linux, without importing
        # `platform` (~2 ms of start-up)
        machine = os.uname().machine.lower()
        arch, variant = _MACHINE_TO_OCI.get(machine, (machine, ""))
        return cls("linux", arch, variant)

    def matches(self, other: "Platform") -> bool:
        """Same os and architecture, and same variant when both name one (arm64 images
        rarely say v8)."""
        return (self.os == other.os and self.architecture == other.architecture
                and (not self.variant or not other.variant or self.variant == other.variant))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Platform":
        return cls(d.get("os", ""), d.get("architecture", ""), d.get("variant", "") or "",
                   d.get("os.version", "") or "", tuple(d.get("os.features") or ()))


# --------------------------------------------------------------------------- descriptor


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: a blob's media type, digest and size."""
    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    def __post_init__(self) -> None:
        check_digest(self.digest)

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def with_annotations(self, **values: str) -> "Descriptor":
        """`values` uses the annotation names as keys (pass them with `**{...}`)."""
        merged = dict(self.annotations)
        merged.update(values)
        return Descriptor(self.media_type, self.digest, self.size, _annotations(merged),
                          self.platform, self.urls, self.artifact_type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Descriptor":
        try:
            digest = d["digest"]
            size = int(d["size"])
            check_digest(digest)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidImageDocument(f"invalid descriptor {d!r}: {e}") from None
        if size < 0:
            raise InvalidImageDocument(f"invalid descriptor {d!r}: negative size")
        plat = d.get("platform")
        return cls(d.get("mediaType", ""), digest, size, _annotations(d.get("annotations")),
                   Platform.from_dict(plat) if isinstance(plat, dict) else None,
                   tuple(d.get("urls") or ()), d.get("artifactType", "") or "")


# --------------------------------------------------------------------------- layer


@dataclass(frozen=True)
class LayerRecord:
    """A layer as stored: `digest`/`size` of the (compressed) blob, `diff_id` = sha256 of
    the uncompressed tar, `media_type` says which compression."""

    digest: str
    diff_id: str
    size: int
    media_type: str

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)

    @property
    def compression(self) -> str:
        return mt.layer_compression(self.media_type)


# --------------------------------------------------------------------------- manifest, index


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI, or Docker schema 2 by its media type)."""
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    media_type: str = mt.OCI_MANIFEST
    subject: Descriptor | None = None
    artifact_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> "Manifest":
        d = _loads(data, "image manifest")
        media_type = d.get("mediaType") or mt.OCI_MANIFEST
        if d.get("schemaVersion") != 2 or media_type not in mt.MANIFESTS:
            raise InvalidImageDocument(
                f"not an image manifest (schemaVersion {d.get('schemaVersion')!r}, "
                f"mediaType {media_type!r})")
        if not isinstance(d.get("config"), dict):
            raise InvalidImageDocument("image manifest has no config descriptor")
        subject = d.get("subject")
        return cls(Descriptor.from_dict(d["config"]),
                   tuple(Descriptor.from_dict(x) for x in d.get("layers") or ()),
                   _annotations(d.get("annotations")), media_type,
                   Descriptor.from_dict(subject) if isinstance(subject, dict) else None,
                   d.get("artifactType", "") or "")


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker)."""
    manifests: tuple[Descriptor, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    media_type: str = mt.OCI_INDEX

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [m.to_dict() for m in self.manifests]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> "Index":
        d = _loads(data, "image index")
        media_type = d.get("mediaType") or mt.OCI_INDEX
        if d.get("schemaVersion") != 2 or media_type not in mt.INDEXES:
            raise InvalidImageDocument(
                f"not an image index (schemaVersion {d.get('schemaVersion')!r}, "
                f"mediaType {media_type!r})")
        return cls(tuple(Descriptor.from_dict(x) for x in d.get("manifests") or ()),
                   _annotations(d.get("annotations")), media_type)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class History:
    """One entry of an image config's history."""
    created: str | None = None
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False
    author: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.created_by:
            out["created_by"] = self.created_by
        if self.comment:
            out["comment"] = self.comment
        if self.author:
            out["author"] = self.author
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        return cls(d.get("created") or None, d.get("created_by") or "", d.get("comment") or "",
                   bool(d.get("empty_layer")), d.get("author") or "")


@dataclass(frozen=True)
class ImageConfigFile:
    """The OCI image config document (what the manifest's config descriptor points at)."""

    architecture: str
    os: str
    config: ImageConfig = field(default_factory=ImageConfig)
    diff_ids: tuple[str, ...] = ()
    history: tuple[History, ...] = ()
    created: str | None = None
    variant: str = ""
    author: str = ""
    os_version: str = ""

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architecture": self.architecture,
            "os": self.os,
            "config": self.config.to_oci(),
            "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
        }
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        if self.history:
            out["history"] = [h.to_dict() for h in self.history]
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> "ImageConfigFile":
        d = _loads(data, "image config")
        rootfs = d.get("rootfs") or {}
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids", []), list):
            raise InvalidImageDocument("image config has an invalid rootfs")
        diff_ids = tuple(rootfs.get("diff_ids") or ())
        for x in diff_ids:
            if not isinstance(x, str):
                raise InvalidImageDocument(f"image config has an invalid diff_id {x!r}")
        cfg = d.get("config")
        return cls(
            architecture=d.get("architecture", "") or "",
            os=d.get("os", "") or "",
            config=ImageConfig.from_oci(cfg if isinstance(cfg, dict) else None),
            diff_ids=diff_ids,
            history=tuple(History.from_dict(h) for h in d.get("history") or ()
                          if isinstance(h, dict)),
            created=d.get("created") or None,
            variant=d.get("variant", "") or "",
            author=d.get("author", "") or "",
            os_version=d.get("os.version", "") or "",
        )
